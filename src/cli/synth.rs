//! `tandem synth`: a random-weight GGUF in a real model's shape, for
//! benchmarks of models too large to fetch (time does not depend on weights).

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use tandem::gguf::{GgufFile, GgufWriter};
use tandem::synth::{self, Mixture, SHAPES};

#[derive(Args)]
pub struct SynthArgs {
    /// The shape to copy: qwen2.5-0.5b, qwen2.5-1.5b or qwen2.5-7b.
    #[arg(long = "like")]
    like: Option<String>,
    /// Quantization mixture: q4_k_m, q8_0, q4_0, q4_1 or f16.
    #[arg(long = "type", default_value = "q4_k_m")]
    ty: String,
    /// Where the tokenizer comes from: a GGUF path or catalog name.
    #[arg(long = "tokenizer", default_value = "qwen2.5-coder-0.5b")]
    tokenizer: String,
    /// Write only the tokenizer's metadata (a small file to carry elsewhere
    /// and pass as `--tokenizer`).
    #[arg(long = "tokenizer-only")]
    tokenizer_only: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let tok_path = tandem::catalog::resolve(&a.tokenizer)?;
    let tok = GgufFile::open(&tok_path)
        .with_context(|| format!("reading the tokenizer from {}", tok_path.display()))?;
    let file = std::fs::File::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    if a.tokenizer_only {
        let mut w = GgufWriter::new();
        if synth::copy_tokenizer(&tok, &mut w) == 0 {
            bail!("{} has no tokenizer.* metadata", tok_path.display());
        }
        w.write_streaming(&mut out, &[], |_| Vec::new())?;
        return Ok(());
    }
    let Some(like) = a.like.as_deref() else {
        bail!("--like is required (one of: {})", shape_names());
    };
    let shape = SHAPES
        .iter()
        .find(|s| s.name == like)
        .with_context(|| format!("unknown shape {like:?} (known: {})", shape_names()))?;
    let mix = Mixture::parse(&a.ty).with_context(|| {
        format!(
            "unknown --type {:?} (known: q4_k_m, q8_0, q4_0, q4_1, f16)",
            a.ty
        )
    })?;
    // Check the tokenizer before the long write.
    tandem::tokenizer::Tokenizer::from_gguf(&tok)
        .with_context(|| format!("the tokenizer of {} does not load", tok_path.display()))?;
    let bar = indicatif::ProgressBar::new(synth::planned_bytes(shape, mix));
    bar.set_style(
        indicatif::ProgressStyle::with_template("synth [{bar:30}] {bytes}/{total_bytes} {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let t0 = std::time::Instant::now();
    let report = synth::write_model(shape, mix, &tok, a.seed, &mut out, |n| bar.inc(n))?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} tensors, {:.2} GB) in {:.1}s",
        a.output.display(),
        report.tensors,
        report.bytes as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    for (ty, n, bytes) in report.type_counts {
        eprintln!(
            "  {ty:?}: {n} tensors, {:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn shape_names() -> String {
    SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}
