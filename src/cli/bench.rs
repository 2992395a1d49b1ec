//! `tandem bench …`: benchmark commands.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use tandem::bench::serve::{plot, run_level, table, LoadConfig};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Load an OpenAI-compatible server at several concurrency levels.
    Serve(ServeBenchArgs),
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
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Draw throughput and latency against concurrency as SVG.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let BenchCmd::Serve(a) = a.cmd;
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
