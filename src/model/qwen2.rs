//! Qwen2 / Qwen2.5 (Qwen team, 2024): the Llama block with biases on the Q,
//! K and V projections and RoPE over half-split dimensions (NEOX layout).

use std::sync::Arc;

use super::block::{BlockKind, Decoder};
use super::{ForwardBatch, HParams, Model, Result};
use crate::backend::{Activation, Backend, Logits, RopeStyle};
use crate::gguf::GgufFile;

pub struct Qwen2<B: Backend> {
    dec: Decoder<B>,
}

impl<B: Backend> Qwen2<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>) -> Result<Self> {
        let kind = BlockKind {
            qkv_bias: true,
            ..Default::default()
        };
        Ok(Self {
            dec: Decoder::load(be, file, kind)?,
        })
    }
}

impl<B: Backend> Model<B> for Qwen2<B> {
    fn hparams(&self) -> &HParams {
        &self.dec.h
    }

    fn limit_head(&mut self, be: &B, file: &Arc<GgufFile>, rows: usize) -> Result<usize> {
        self.dec.limit_head(be, file, rows)
    }

    fn forward(&self, be: &B, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Logits> {
        let spec = self.dec.plain_spec(RopeStyle::Halves, Activation::Silu);
        self.dec.forward(be, 1.0, |_| spec, batch, kv)
    }
}
