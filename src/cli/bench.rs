//! `tandem bench …`: benchmark commands. `tandem bench -m M` measures one
//! model (llama-bench style), `--roofline` the machine's read bandwidth,
//! `--compare A.json B.json` two earlier runs; `tandem bench serve` loads a
//! server.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tandem::backend::Backend as _;
use tandem::bench::model::Bandwidth;

use tandem::bench::serve::{plot, run_level, table, LoadConfig};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    model: super::ModelArgs,
    /// Prompt tokens per prompt-processing run.
    #[arg(short = 'p', default_value_t = 128)]
    p: usize,
    /// Tokens per generation run.
    #[arg(short = 'n', default_value_t = 64)]
    n: usize,
    /// Repetitions (after one warm-up).
    #[arg(short = 'r', default_value_t = 5)]
    r: usize,
    /// Tokens in the cache before generating (llama-bench's -d): deep in a
    /// conversation every step's attention reads them all.
    #[arg(short = 'd', long, default_value_t = 0)]
    depth: usize,
    /// Print the result as JSON (the input of --compare).
    #[arg(long)]
    json: bool,
    /// Measure this machine's read bandwidth and remember it.
    #[arg(long)]
    roofline: bool,
    /// Compare two JSON results: ratio, Welch's t-test, Cohen's d.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<std::path::PathBuf>>,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Load an OpenAI-compatible server at several concurrency levels.
    Serve(ServeBenchArgs),
    /// Speculative decoding against plain decoding, per prompt class and k.
    Spec(SpecBenchArgs),
}

#[derive(Args)]
struct SpecBenchArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    proposer: super::speculate::ProposerArgs,
    /// Comma-separated k values; `auto` is the governor, 0 plain decoding.
    #[arg(long = "k", default_value = "0,2,4,8,auto")]
    k: String,
    /// Largest k the governor may choose.
    #[arg(long = "k-max", default_value_t = 8)]
    k_max: usize,
    /// Comma-separated prompt classes (`code`, `prose`) or a file of prompts
    /// separated by blank lines.
    #[arg(long, default_value = "code,prose")]
    prompts: String,
    /// Tokens generated per prompt.
    #[arg(short = 'n', default_value_t = 128)]
    n: usize,
    /// Repetitions of every prompt at every k (the order of k reversed on
    /// every other one).
    #[arg(short = 'r', long = "reps", default_value_t = 1)]
    reps: usize,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeBenchArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,2,4,8,16")]
    concurrency: String,
    /// Requests per level.
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// Prompt length in words (about one token each).
    #[arg(long = "prompt-len", default_value_t = 128)]
    prompt_len: usize,
    /// Tokens generated per request.
    #[arg(long = "gen-len", default_value_t = 64)]
    gen_len: usize,
    /// Words shared at the start of every prompt.
    #[arg(long = "shared-prefix", default_value_t = 0)]
    shared_prefix: usize,
    /// Sampling temperature of the requests (0: greedy). Above 0 the
    /// requests set nothing else: the OpenAI defaults, a draw from the
    /// whole vocabulary.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Draw throughput and latency against concurrency as SVG.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.cmd {
        Some(BenchCmd::Serve(s)) => serve(s),
        Some(BenchCmd::Spec(s)) => spec(s),
        None if a.roofline => roofline(&a),
        None => match &a.compare {
            Some(files) => compare(&files[0], &files[1]),
            None => model(&a),
        },
    }
}

fn roofline(a: &BenchArgs) -> Result<()> {
    let threads = a.model.init_threads();
    eprintln!("reading a 1 GiB buffer with {threads} threads, best of 5 passes…");
    let r = tandem::bench::roofline::measure(1 << 30, 5);
    println!(
        "read bandwidth: {:.1} GB/s ({threads} threads)",
        r.read_gb_s
    );
    Ok(())
}

fn model(a: &BenchArgs) -> Result<()> {
    let m = a.model.load()?;
    let bar = ProgressBar::new(a.r as u64);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {pos}/{len} repetitions")?
            .progress_chars("=> "),
    );
    // A GPU's roofline is its copy bandwidth, measured now; the CPU's is
    // measured next to each repetition (256 MiB: eight times this host's
    // L3).
    let bandwidth = match m.backend.device_bandwidth() {
        Some(bw) => Bandwidth::Known(bw),
        None => Bandwidth::Paired(256 << 20),
    };
    let plan = tandem::bench::model::Plan {
        p: a.p,
        n: a.n,
        depth: a.depth,
        reps: a.r.max(1),
    };
    let r = tandem::bench::model::run(&m, &a.model.model, plan, bandwidth, || bar.inc(1))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!("| model | backend | test | tok/s mean ± sd | median |");
    println!("|---|---|---|---|---|");
    for (test, s) in [
        (format!("pp{}", r.pp_tokens), &r.pp),
        (
            match r.depth {
                0 => format!("tg{}", r.tg_tokens),
                d => format!("tg{} @ d{d}", r.tg_tokens),
            },
            &r.tg,
        ),
    ] {
        println!(
            "| {} | {} | {test} | {:.2} ± {:.2} | {:.2} |",
            r.model, r.backend, s.mean, s.sd, s.median
        );
    }
    println!(
        "weights read per token {:.3} GiB{} → {:.1} GB/s{}; peak RSS {} (file {:.2} GiB)",
        gib(r.bytes_per_token),
        if r.depth > 0 {
            " (the KV cache's reads not counted)"
        } else {
            ""
        },
        r.tg_gb_s,
        match (r.roofline_share, r.read_gb_s.is_empty()) {
            (Some(s), false) => {
                let bw = tandem::bench::model::Samples::new(r.read_gb_s.clone());
                format!(
                    " = {:.0}% of the read bandwidth measured before each run ({:.1} ± {:.1} GB/s)",
                    s * 100.0,
                    bw.mean,
                    bw.sd
                )
            }
            (Some(s), true) => format!(" = {:.0}% of the measured bandwidth", s * 100.0),
            (None, _) => " (no bandwidth figure for the roofline share)".into(),
        },
        r.peak_rss_bytes
            .map_or("unknown".into(), |b| format!("{:.2} GiB", gib(b))),
        gib(r.model_file_bytes)
    );
    let profile = m.backend.profile_report();
    if !profile.is_empty() {
        println!("| kernel | launches | device ms | µs per launch |");
        println!("|---|---|---|---|");
        for (name, n, ms) in profile.iter().take(24) {
            println!(
                "| {name} | {n} | {ms:.2} | {:.2} |",
                ms * 1000.0 / *n as f64
            );
        }
    }
    Ok(())
}

fn compare(a: &std::path::Path, b: &std::path::Path) -> Result<()> {
    let load = |p: &std::path::Path| -> Result<tandem::bench::model::BenchResult> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a `tandem bench --json` result", p.display()))
    };
    let (ra, rb) = (load(a)?, load(b)?);
    println!("| test | A tok/s | B tok/s | B/A | Welch p | Cohen's d |");
    println!("|---|---|---|---|---|---|");
    for (test, sa, sb) in [("pp", &ra.pp, &rb.pp), ("tg", &ra.tg, &rb.tg)] {
        let c = tandem::bench::compare::compare(&sa.tok_s, &sb.tok_s);
        println!(
            "| {test} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.3} | {} | {} |",
            sa.mean,
            sa.sd,
            sb.mean,
            sb.sd,
            c.ratio,
            c.p_value.map_or("n/a".into(), |p| format!("{p:.2e}")),
            c.cohens_d.map_or("n/a".into(), |d| format!("{d:.2}"))
        );
    }
    Ok(())
}

fn serve(a: ServeBenchArgs) -> Result<()> {
    let addr = a
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    if a.url.starts_with("https://") {
        bail!("https is not supported; give the server's http:// address");
    }
    let concurrency: Vec<usize> = a
        .concurrency
        .split(',')
        .map(|c| c.trim().parse::<usize>().ok().filter(|&c| c > 0))
        .collect::<Option<_>>()
        .context("--concurrency wants positive integers like 1,2,4")?;
    if a.shared_prefix > a.prompt_len {
        bail!("--shared-prefix cannot exceed --prompt-len");
    }
    let cfg = LoadConfig {
        addr,
        api_key: a.api_key,
        concurrency: concurrency.clone(),
        requests: a.requests.max(1),
        prompt_len: a.prompt_len.max(1),
        gen_len: a.gen_len.max(1),
        shared_prefix: a.shared_prefix,
        temperature: a.temperature,
    };
    let bar = ProgressBar::new((concurrency.len() * cfg.requests) as u64);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {pos}/{len} requests {msg}")?
            .progress_chars("=> "),
    );
    let mut results = Vec::new();
    for &c in &concurrency {
        bar.set_message(format!("concurrency {c}"));
        results.push(run_level(&cfg, c, &|| bar.inc(1)));
    }
    bar.finish_and_clear();
    println!("{}", table(&results));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = a.plot {
        std::fs::write(&p, plot(&results)).with_context(|| format!("writing {}", p.display()))?;
    }
    if results.iter().any(|r| r.failed > 0) {
        bail!("some requests failed (run with TANDEM_LOG=warn for details)");
    }
    Ok(())
}

fn spec(a: SpecBenchArgs) -> Result<()> {
    use tandem::bench::spec::{builtin_prompts, run, table};
    let ks =
        a.k.split(',')
            .map(|k| match k.trim() {
                "auto" => Ok(None),
                n => n
                    .parse()
                    .map(Some)
                    .with_context(|| format!("--k: {n:?} is not a number or `auto`")),
            })
            .collect::<Result<Vec<_>>>()?;
    let mut classes = Vec::new();
    for c in a.prompts.split(',') {
        let c = c.trim();
        match builtin_prompts(c) {
            Some(p) => classes.push((c.to_string(), p)),
            None => {
                let text = std::fs::read_to_string(c).with_context(|| {
                    format!("--prompts {c:?}: not `code`, `prose` or a readable file")
                })?;
                let p: Vec<String> = text
                    .split("\n\n")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if p.is_empty() {
                    bail!("{c}: no prompts (separate them by blank lines)");
                }
                classes.push((c.to_string(), p));
            }
        }
    }
    let target = a.model.load()?;
    let draft = a.proposer.load_draft(&target.backend)?;
    let kind = a.proposer.kind(draft.as_ref())?;
    target.backend.prepare_for_speculation();
    let rows = run(
        &target,
        &kind,
        &ks,
        a.k_max,
        &classes,
        (a.n, a.reps.max(1)),
        a.model.ctx,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}
