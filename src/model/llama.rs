//! Llama (Touvron et al., 2023) as stored by llama.cpp: pre-RMSNorm blocks,
//! SwiGLU MLP, RoPE on adjacent pairs (the converter permutes Q/K rows so
//! ggml's "normal" rotation applies), grouped-query attention, optionally
//! tied embeddings. SmolLM2 is this architecture.

use std::sync::Arc;

use super::block::{run_decoder, Block, BlockKind, LayerSpec, Loader};
use super::{ForwardBatch, HParams, Model, Result};
use crate::backend::{Activation, AttnParams, Backend, Rope, RopeStyle};
use crate::gguf::GgufFile;

pub struct Llama<B: Backend> {
    h: HParams,
    embd: B::Weight,
    blocks: Vec<Block<B>>,
    out_norm: B::Vector,
    output: B::Weight,
}

impl<B: Backend> Llama<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>) -> Result<Self> {
        let mut h = HParams::read(file)?;
        let l = Loader { be, file };
        h.vocab_size = l.vocab_rows()?;
        let blocks = (0..h.n_layers)
            .map(|i| Block::load(&l, &h, i, BlockKind::default()))
            .collect::<Result<_>>()?;
        Ok(Self {
            embd: l.weight("token_embd.weight", h.vocab_size, h.d_model)?,
            out_norm: l.vector("output_norm.weight", h.d_model)?,
            output: l.output(&h, h.vocab_size)?,
            blocks,
            h,
        })
    }

    fn spec(&self) -> LayerSpec {
        let h = &self.h;
        LayerSpec {
            attn: AttnParams {
                n_heads: h.n_heads,
                n_kv_heads: h.n_kv_heads,
                head_dim: h.head_dim,
                scale: 1.0 / (h.head_dim as f32).sqrt(),
                window: None,
            },
            rope: Rope {
                style: RopeStyle::Interleaved,
                base: h.rope_base,
                freq_scale: h.rope_freq_scale,
                dims: h.rope_dims,
            },
            act: Activation::Silu,
            eps: h.rms_eps,
        }
    }
}

impl<B: Backend> Model<B> for Llama<B> {
    fn hparams(&self) -> &HParams {
        &self.h
    }

    fn forward(&self, be: &B, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Vec<f32>> {
        let spec = self.spec();
        run_decoder(
            be,
            &self.h,
            &self.embd,
            1.0,
            &self.blocks,
            |_| spec,
            &self.out_norm,
            &self.output,
            batch,
            kv,
        )
    }
}
