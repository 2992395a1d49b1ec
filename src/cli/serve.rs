//! `tandem serve`: the OpenAI-compatible server.

use std::net::SocketAddr;
use std::sync::Arc;
use tandem::backend::Backend as _;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::speculate::SpecArgs;
use super::ModelArgs;
use tandem::engine::batched::{BatchEngine, EngineConfig, EngineSpec};
use tandem::kv::DEFAULT_BLOCK_SIZE;
use tandem::server::{AppState, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Sequences decoded together.
    #[arg(long = "max-seqs", default_value_t = 16)]
    max_seqs: usize,
    /// KV cache budget: a size (`2GiB`, `512MiB`) or a number of blocks.
    #[arg(long = "kv-mem", default_value = "1GiB")]
    kv_mem: String,
    /// Tokens per forward pass (chunked prefill budget).
    #[arg(long = "step-tokens", default_value_t = 512)]
    step_tokens: usize,
    /// Do not reuse the KV of shared prompt prefixes.
    #[arg(long = "no-prefix-cache")]
    no_prefix_cache: bool,
    /// Requests allowed to wait before new ones get 503.
    #[arg(long = "max-waiting", default_value_t = 256)]
    max_waiting: usize,
    #[command(flatten)]
    spec: SpecArgs,
}

/// Bytes (`2GiB`, `300MB`, `4096`) → number of KV blocks for this model.
fn kv_blocks(spec: &str, bytes_per_block: usize) -> Result<usize> {
    let s = spec.trim();
    let units: [(&str, usize); 6] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
    ];
    for (suffix, mult) in units {
        if let Some(num) = s.strip_suffix(suffix) {
            let v: f64 = num
                .trim()
                .parse()
                .with_context(|| format!("bad size {spec:?}"))?;
            return Ok((v * mult as f64) as usize / bytes_per_block);
        }
    }
    s.parse()
        .with_context(|| format!("--kv-mem {spec:?}: give a size like 2GiB or a block count"))
}

pub fn run(a: ServeArgs) -> Result<()> {
    let model = Arc::new(a.model.load()?);
    let h = model.hparams().clone();
    let ctx = a.model.ctx.min(h.ctx_len);
    // f32 keys and values.
    let bytes_per_block = DEFAULT_BLOCK_SIZE * h.n_layers * h.kv_dim() * 2 * 4;
    let blocks = kv_blocks(&a.kv_mem, bytes_per_block)?;
    if blocks * DEFAULT_BLOCK_SIZE < ctx.min(256) {
        bail!(
            "--kv-mem {} gives only {} positions; the cache needs at least one context's worth",
            a.kv_mem,
            blocks * DEFAULT_BLOCK_SIZE
        );
    }
    if a.max_seqs == 0 || a.step_tokens == 0 {
        bail!("--max-seqs and --step-tokens must be at least 1");
    }
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .with_context(|| format!("bad address {}:{}", a.host, a.port))?;
    let cfg = EngineConfig {
        max_seqs: a.max_seqs,
        step_tokens: a.step_tokens,
        kv_blocks: blocks,
        ctx,
        prefix_cache: !a.no_prefix_cache,
    };
    eprintln!(
        "model {} ({}), ctx {ctx}, max-seqs {}, step-tokens {}, KV cache {} blocks × {DEFAULT_BLOCK_SIZE} positions = {:.1} MiB, prefix cache {}, api key {}",
        a.model.model,
        h.arch,
        a.max_seqs,
        a.step_tokens,
        blocks,
        (blocks * bytes_per_block) as f64 / (1 << 20) as f64,
        if a.no_prefix_cache { "off" } else { "on" },
        if a.api_key.is_some() { "required" } else { "off" }
    );
    let spec = if a.spec.proposer.enabled() {
        let draft = a.spec.proposer.load_draft(&model.backend)?.map(Arc::new);
        // Only the flag combination is checked here; the proposer is built per request.
        a.spec.proposer.kind(draft.as_deref())?;
        model.backend.prepare_for_speculation();
        let spec = EngineSpec {
            draft,
            governor: a.spec.governor()?,
        };
        spec.check(&model)?;
        eprintln!(
            "speculation: {}, k {}",
            a.spec.proposer.spec.as_deref().unwrap_or("draft model"),
            a.spec.k
        );
        Some(spec)
    } else {
        None
    };
    // Batches of several rows use kernels compiled after start-up: wait for
    // them here, not in the first batch's time to first token.
    model.backend.ready_all()?;
    if let Some(d) = spec.as_ref().and_then(|s| s.draft.as_ref()) {
        d.backend.ready_all()?;
    }
    let state = Arc::new(AppState {
        engine: BatchEngine::start_with(model.clone(), cfg, spec),
        model,
        cfg: ServerConfig {
            model_name: a.model.model.clone(),
            api_key: a.api_key,
            max_waiting: a.max_waiting,
            max_body_bytes: 4 << 20,
        },
        metrics: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(tandem::server::serve(state, addr))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn kv_sizes_parse() {
        assert_eq!(super::kv_blocks("1MiB", 1024).unwrap(), 1024);
        assert_eq!(super::kv_blocks("2GiB", 1 << 20).unwrap(), 2048);
        assert_eq!(super::kv_blocks("77", 999).unwrap(), 77);
        assert!(super::kv_blocks("lots", 1).is_err());
    }
}
