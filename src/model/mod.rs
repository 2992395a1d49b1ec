//! Transformer architectures, one file each, written against the backend op
//! set. A model knows its architecture, not how requests are batched: the
//! engine hands it a [`ForwardBatch`] (tokens of several sequences at explicit
//! positions, each with its KV block table) and gets logits back.

mod batch;
mod block;
mod gemma3;
mod hparams;
mod llama;
mod qwen2;

use std::path::Path;
use std::sync::Arc;

pub use batch::{ForwardBatch, SeqInput};
pub use hparams::HParams;

use crate::backend::{Backend, BackendError, Logits};
use crate::gguf::{GgufError, GgufFile};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma3)")]
    UnsupportedArch(String),
    #[error("invalid hyper-parameters: {0}")]
    BadHParams(String),
    #[error("tensor {name:?} has shape {got:?}, expected {want:?}")]
    BadShape {
        name: String,
        got: (usize, usize),
        want: (usize, usize),
    },
    #[error("token id {0} is outside the vocabulary")]
    BadToken(u32),
    #[error("position {pos} is beyond the context length {ctx}")]
    ContextOverflow { pos: usize, ctx: usize },
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// One architecture's forward pass.
pub trait Model<B: Backend>: Send + Sync {
    fn hparams(&self) -> &HParams;
    /// Run the batch; returns the logits of the rows wanted, in batch order,
    /// as the batch's readout asks.
    fn forward(&self, be: &B, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Logits>;
    /// Score only the vocabulary's first `rows` tokens (see
    /// [`LoadedModel::limit_head`]); returns the rows kept.
    fn limit_head(&mut self, be: &B, file: &Arc<GgufFile>, rows: usize) -> Result<usize>;
}

/// A model file opened for inference: weights, tokenizer, architecture.
pub struct LoadedModel<B: Backend> {
    pub file: Arc<GgufFile>,
    pub tokenizer: Tokenizer,
    pub model: Box<dyn Model<B>>,
    pub backend: B,
    /// Tokens the output layer scores: the vocabulary, unless
    /// [`LoadedModel::limit_head`] cut it.
    pub head_rows: usize,
}

/// Hand the heap's free pages back to the system: the vocabulary's
/// metadata and the tokenizer's scratch were hundreds of thousands of small
/// allocations, freed in the middle of the heap, where the allocator keeps
/// them resident (Gemma 3-270M's peak: 295.0 MB without this, 280.4 with).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<B: Backend + 'static> LoadedModel<B> {
    pub fn load(path: &Path, backend: B) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        // The vocabulary's arrays are read: only the tokenizer needs them.
        file.release_metadata(4096);
        release_freed_heap();
        let file = Arc::new(file);
        let arch = file.architecture()?.to_string();
        let model: Box<dyn Model<B>> = match arch.as_str() {
            "llama" => Box::new(llama::Llama::load(&backend, &file)?),
            "qwen2" => Box::new(qwen2::Qwen2::load(&backend, &file)?),
            "gemma3" => Box::new(gemma3::Gemma3::load(&backend, &file)?),
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
        backend.ready()?;
        file.release_again();
        if model.hparams().vocab_size < tokenizer.vocab_size() {
            return Err(ModelError::BadHParams(format!(
                "the output layer has {} rows but the vocabulary has {} tokens",
                model.hparams().vocab_size,
                tokenizer.vocab_size()
            )));
        }
        let head_rows = model.hparams().vocab_size;
        Ok(Self {
            file,
            tokenizer,
            model,
            backend,
            head_rows,
        })
    }

    pub fn hparams(&self) -> &HParams {
        self.model.hparams()
    }

    /// Score only the vocabulary's first `rows` tokens: logit rows come back
    /// `rows` long, and the output projection reads that share of its
    /// weights. For a draft model, whose guesses the target verifies: BPE
    /// vocabularies are ordered by merge rank, roughly by frequency, so the
    /// tokens cut are rare, and a guess never drawn from them costs at most
    /// a rejection, never a wrong output. Returns the rows kept.
    pub fn limit_head(&mut self, rows: usize) -> Result<usize> {
        self.head_rows = self.model.limit_head(&self.backend, &self.file, rows)?;
        Ok(self.head_rows)
    }

    pub fn alloc_kv(&self, n_slots: usize) -> B::KvCache {
        let h = self.hparams();
        self.backend.alloc_kv(h.n_layers, n_slots, h.kv_dim())
    }

    pub fn forward(&self, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Logits> {
        self.model.forward(&self.backend, batch, kv)
    }
}
