//! Perplexity the way llama.cpp's `llama-perplexity` measures it: the text is
//! cut into `ctx`-token chunks; each chunk starts with BOS when the model adds
//! one; only the second half of each chunk is scored (every scored token has
//! at least ctx/2 tokens of context). The error is the standard error of the
//! mean log-likelihood, carried through exp().

use serde::Serialize;

use super::{EngineError, Result, Session};
use crate::backend::Backend;
use crate::sampler::log_softmax;

#[derive(Debug, Clone, Serialize)]
pub struct PerplexityResult {
    pub ctx: usize,
    pub chunks: usize,
    pub scored_tokens: usize,
    pub ppl: f64,
    pub ppl_err: f64,
    /// Running perplexity after each chunk.
    pub running: Vec<f64>,
}

/// Score `tokens` (the whole text, tokenized with BOS if the model adds one).
pub fn perplexity<B: Backend + 'static>(
    s: &mut Session<'_, B>,
    tokens: &[u32],
    ctx: usize,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityResult> {
    if ctx < 8 || ctx > s.ctx() {
        return Err(EngineError::Invalid(format!(
            "context {ctx} must be between 8 and the session's {}",
            s.ctx()
        )));
    }
    let available = tokens.len() / ctx;
    if available < 1 {
        return Err(EngineError::Invalid(format!(
            "the text has {} tokens, fewer than one {ctx}-token chunk",
            tokens.len()
        )));
    }
    let n_chunks = max_chunks.map_or(available, |m| m.min(available));
    let tok = &s.model.tokenizer;
    let bos = if tok.add_bos { tok.bos } else { None };
    let vocab = s.model.hparams().vocab_size;
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::new();
    for c in 0..n_chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        s.truncate(0);
        let logits = s.extend(&chunk, first)?;
        // Row i (of the returned rows) holds logits at position first + i,
        // which predict token first + i + 1.
        for i in 0..ctx - 1 - first {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let lp = log_softmax(row)[chunk[first + i + 1] as usize] as f64;
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(c, ppl);
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityResult {
        ctx,
        chunks: n_chunks,
        scored_tokens: count,
        ppl,
        ppl_err: err,
        running,
    })
}
