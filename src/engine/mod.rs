//! Running a model for one sequence: a [`Session`] owns the KV memory and
//! the tokens it holds (reusing the longest common prefix when the next
//! prompt extends the last — a chat turn costs only its new tokens), and the
//! tools built on it: generation with stop conditions ([`generate`]) and
//! perplexity ([`perplexity`]). The batched, many-sequence engine builds on
//! the same model call.

pub mod batched;
mod batched_spec;
pub mod generate;
pub mod perplexity;
pub mod request;
pub mod scheduler;
pub mod stop;

use crate::backend::{Backend, Logits, Readout};
use crate::kv::{BlockPool, KvError, SeqBlocks, DEFAULT_BLOCK_SIZE};
use crate::model::{ForwardBatch, LoadedModel, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("the prompt has {prompt} tokens but the context holds {ctx}")]
    PromptTooLong { prompt: usize, ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Tokens per forward call while reading a prompt.
pub const PREFILL_CHUNK: usize = 512;

pub struct Session<'m, B: Backend> {
    pub model: &'m LoadedModel<B>,
    kv: B::KvCache,
    seq: SeqBlocks,
    /// Tokens whose K/V are in `seq`, in order.
    cached: Vec<u32>,
    ctx: usize,
    /// Called after each chunk of a multi-chunk read with (done, total).
    progress: Option<Box<dyn FnMut(usize, usize) + 'm>>,
}

impl<'m, B: Backend + 'static> Session<'m, B> {
    /// A session with room for `ctx` positions (capped at the model's context).
    pub fn new(model: &'m LoadedModel<B>, ctx: usize) -> Self {
        let ctx = ctx.min(model.hparams().ctx_len).max(1);
        let n_blocks = ctx.div_ceil(DEFAULT_BLOCK_SIZE);
        let pool = BlockPool::new(n_blocks, DEFAULT_BLOCK_SIZE);
        Self {
            model,
            kv: model.alloc_kv(n_blocks * DEFAULT_BLOCK_SIZE),
            seq: SeqBlocks::new(pool),
            cached: Vec::new(),
            ctx,
            progress: None,
        }
    }

    /// Report progress while reading inputs longer than one chunk (a
    /// progress bar for long prompts).
    pub fn on_progress(&mut self, f: impl FnMut(usize, usize) + 'm) {
        self.progress = Some(Box::new(f));
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    pub fn tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forget everything after the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.cached.truncate(n);
        self.seq.truncate(n);
    }

    /// Make the cache hold `tokens` (reusing the common prefix) and return the
    /// logits of rows `logits_from..` of the tokens that had to be computed,
    /// plus how many tokens were reused. At least the last token is always
    /// recomputed so its logits exist.
    pub fn feed(&mut self, tokens: &[u32], logits_from: usize) -> Result<(Vec<f32>, usize)> {
        let (logits, reused) = self.feed_as(tokens, logits_from, Readout::Full)?;
        Ok((full(logits), reused))
    }

    /// [`Session::feed`] with the logits read out as `readout` asks.
    pub fn feed_as(
        &mut self,
        tokens: &[u32],
        logits_from: usize,
        readout: Readout,
    ) -> Result<(Logits, usize)> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens.len() > self.ctx {
            return Err(EngineError::PromptTooLong {
                prompt: tokens.len(),
                ctx: self.ctx,
            });
        }
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        let reuse = common.min(tokens.len() - 1).min(logits_from);
        self.truncate(reuse);
        let logits = self.extend_as(&tokens[reuse..], logits_from - reuse, readout)?;
        Ok((logits, reuse))
    }

    /// Append tokens after what is cached; returns logits for new rows
    /// `logits_from..`.
    pub fn extend(&mut self, new: &[u32], logits_from: usize) -> Result<Vec<f32>> {
        Ok(full(self.extend_as(new, logits_from, Readout::Full)?))
    }

    /// [`Session::extend`] with the logits read out as `readout` asks (a
    /// `Draw` readout has one key per logit row).
    pub fn extend_as(
        &mut self,
        new: &[u32],
        logits_from: usize,
        readout: Readout,
    ) -> Result<Logits> {
        let start = self.cached.len();
        if start + new.len() > self.ctx {
            return Err(EngineError::PromptTooLong {
                prompt: start + new.len(),
                ctx: self.ctx,
            });
        }
        self.seq.grow_to(start + new.len())?;
        let mut out = Logits::empty();
        let mut logit_rows = 0;
        for (c, chunk) in new.chunks(PREFILL_CHUNK).enumerate() {
            let chunk_start = c * PREFILL_CHUNK;
            let from = logits_from.saturating_sub(chunk_start).min(chunk.len());
            let pos = start + chunk_start;
            let wanted = logit_rows..logit_rows + chunk.len() - from;
            logit_rows = wanted.end;
            let batch = ForwardBatch::single(chunk, pos, &self.seq, from, readout.rows(wanted));
            match self.model.forward(&batch, &mut self.kv) {
                Ok(l) => out.append(l),
                Err(e) => {
                    self.truncate(pos);
                    return Err(e.into());
                }
            }
            self.cached.extend_from_slice(chunk);
            if new.len() > PREFILL_CHUNK {
                if let Some(p) = self.progress.as_mut() {
                    p((chunk_start + chunk.len()).min(new.len()), new.len());
                }
            }
        }
        Ok(out)
    }
}

/// Logits a backend was asked for in full.
fn full(l: Logits) -> Vec<f32> {
    l.into_full()
        .expect("a backend answers a full readout with full rows")
}
