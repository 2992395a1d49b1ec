//! `tandem perplexity`: llama-perplexity's method and output format.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;
use tandem::engine::perplexity::perplexity;
use tandem::engine::Session;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// Scored chunks at most (default: all).
    #[arg(long)]
    chunks: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let model = a.model.load()?;
    let ctx = a.model.ctx;
    let tokens = model.tokenizer.encode(&text, true)?;
    let mut session = Session::new(&model, ctx);
    let total = a
        .chunks
        .map_or(tokens.len() / ctx, |c| c.min(tokens.len() / ctx));
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {pos}/{len} chunks {msg}")?
            .progress_chars("=> "),
    );
    let mut line = String::new();
    let t0 = std::time::Instant::now();
    let r = perplexity(&mut session, &tokens, ctx, a.chunks, |c, ppl| {
        line.push_str(&format!("[{}]{ppl:.4},", c + 1));
        bar.set_message(format!("ppl {ppl:.4}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = serde_json::json!(secs);
        v["tokens_per_second"] = serde_json::json!((r.chunks * ctx) as f64 / secs);
        println!("{v}");
    } else {
        println!("{line}");
        println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_err);
        eprintln!(
            "[{} chunks of {ctx}, {} tokens scored, {:.1} s, {:.1} tok/s]",
            r.chunks,
            r.scored_tokens,
            secs,
            (r.chunks * ctx) as f64 / secs
        );
    }
    Ok(())
}
