//! Command-line interface: one file per subcommand, sharing model loading
//! and sampling flags from here.

mod bench;
mod chat;
mod check_device;
mod generate;
mod perplexity;
mod serve;
mod speculate;
mod synth;
mod tokenize;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use tandem::backend::device::{AnyBackend, Device};
use tandem::catalog;
use tandem::model::LoadedModel;
use tandem::sampler::SamplingParams;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Fast LLM inference on your own hardware"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download catalog models into the cache (all of them when none is named).
    Fetch { names: Vec<String> },
    /// Generate text after a prompt, streaming it to the terminal.
    Generate(generate::GenerateArgs),
    /// Interactive chat using the model's chat template.
    Chat(chat::ChatArgs),
    /// Show the token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Perplexity of a text file, measured as llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Benchmarks (`bench serve`: load a server).
    Bench(bench::BenchArgs),
    /// OpenAI-compatible HTTP server with continuous batching.
    Serve(serve::ServeArgs),
    /// Compare a device's logits and greedy tokens with the CPU's.
    CheckDevice(check_device::CheckDeviceArgs),
    /// Write a random-weight model in a real model's shape (for benchmarks).
    Synth(synth::SynthArgs),
    /// Print a model file's metadata and tensor summary.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Flags every command that runs a model shares.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model: a GGUF file path or a catalog name (fetched on first use).
    #[arg(short = 'm', long = "model", default_value = catalog::DEFAULT_MODEL)]
    pub model: String,
    /// Worker threads (default: physical cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Context length in tokens (capped at the model's).
    #[arg(short = 'c', long = "ctx", default_value_t = 4096)]
    pub ctx: usize,
    /// Where to run: cpu, cuda or cuda:N.
    #[arg(long = "device", default_value = "cpu")]
    pub device: Device,
}

impl ModelArgs {
    pub fn path(&self) -> Result<PathBuf> {
        Ok(catalog::resolve(&self.model)?)
    }

    /// Size the worker pool (`-t`, default physical cores); returns the count.
    pub fn init_threads(&self) -> usize {
        let threads = self.threads.unwrap_or_else(num_cpus::get_physical).max(1);
        // The global pools can be built once; a second call (tests) keeps the first.
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .ok();
        tandem::backend::cpu::pool::init(threads)
    }

    pub fn load(&self) -> Result<LoadedModel<AnyBackend>> {
        self.init_threads();
        let path = self.path()?;
        let backend = AnyBackend::open(self.device).map_err(anyhow::Error::msg)?;
        let model = LoadedModel::load(&path, backend)
            .with_context(|| format!("loading {}", path.display()))?;
        let h = model.hparams();
        tracing::info!(
            "model {} ({}, {} layers, d_model {}, vocab {}), backend {}, ctx {}",
            path.display(),
            h.arch,
            h.n_layers,
            h.d_model,
            h.vocab_size,
            tandem::backend::Backend::name(&model.backend),
            self.ctx.min(h.ctx_len)
        );
        if let Some(note) = model.tokenizer.chat_template.fallback_note() {
            tracing::debug!("{note}");
        }
        Ok(model)
    }
}

/// Sampling flags (llama.cpp's names and defaults).
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// RNG seed (default: random, and reported so a run can be repeated).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self, n_probs: usize) -> Result<SamplingParams> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let p = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed,
            n_probs,
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

/// A bar for reading long prompts (shown only when there is one to read).
pub fn prefill_bar() -> impl FnMut(usize, usize) {
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("reading prompt [{bar:30}] {pos}/{len} tokens")
            .expect("static template")
            .progress_chars("=> "),
    );
    move |done, total| {
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(total as u64);
        }
        bar.set_position(done as u64);
        if done >= total {
            bar.finish_and_clear();
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
    }
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Fetch { names } => {
            let models: Vec<&catalog::CatalogModel> = if names.is_empty() {
                catalog::CATALOG.iter().collect()
            } else {
                names
                    .iter()
                    .map(|n| {
                        catalog::find(n).ok_or_else(|| {
                            anyhow::anyhow!(
                                "unknown model {n:?} (known: {})",
                                catalog::known_names()
                            )
                        })
                    })
                    .collect::<Result<_>>()?
            };
            catalog::fetch(&models)?;
            Ok(())
        }
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Synth(a) => synth::run(a),
        Command::CheckDevice(a) => check_device::run(a),
        Command::Info { model } => info(&model),
    }
}

fn info(m: &ModelArgs) -> Result<()> {
    let path = m.path()?;
    let f = tandem::gguf::GgufFile::open(&path)?;
    println!(
        "file: {} ({} bytes, GGUF v{})",
        path.display(),
        f.file_size(),
        f.header.version
    );
    for (k, v) in &f.header.metadata {
        println!("  {k} = {v}");
    }
    let mut by_type = std::collections::BTreeMap::new();
    for t in &f.header.tensors {
        let e = by_type
            .entry(format!("{:?}", t.ty))
            .or_insert((0usize, 0u64));
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    println!("tensors: {}", f.header.tensors.len());
    for (ty, (n, bytes)) in by_type {
        println!(
            "  {ty:>5}: {n} tensors, {:.1} MiB",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
