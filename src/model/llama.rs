//! Llama (Touvron et al., 2023) as stored by llama.cpp: pre-RMSNorm blocks,
//! SwiGLU MLP, RoPE on adjacent pairs (the converter permutes Q/K rows so
//! ggml's "normal" rotation applies), grouped-query attention, optionally
//! tied embeddings. SmolLM2 is this architecture.

use std::sync::Arc;

use super::block::{BlockKind, Decoder};
use super::{ForwardBatch, HParams, Model, Result};
use crate::backend::{Activation, Backend, Logits, RopeStyle};
use crate::gguf::GgufFile;

pub struct Llama<B: Backend> {
    dec: Decoder<B>,
}

impl<B: Backend> Llama<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>) -> Result<Self> {
        Ok(Self {
            dec: Decoder::load(be, file, BlockKind::default())?,
        })
    }
}

impl<B: Backend> Model<B> for Llama<B> {
    fn hparams(&self) -> &HParams {
        &self.dec.h
    }

    fn limit_head(&mut self, be: &B, file: &Arc<GgufFile>, rows: usize) -> Result<usize> {
        self.dec.limit_head(be, file, rows)
    }

    fn forward(&self, be: &B, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Logits> {
        let spec = self
            .dec
            .plain_spec(RopeStyle::Interleaved, Activation::Silu);
        self.dec.forward(be, 1.0, |_| spec, batch, kv)
    }
}
