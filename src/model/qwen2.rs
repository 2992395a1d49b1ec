//! Qwen2 / Qwen2.5 (Qwen team, 2024): the Llama block with biases on the Q,
//! K and V projections and RoPE over half-split dimensions (NEOX layout).

use std::sync::Arc;

use super::block::{run_decoder, Block, BlockKind, LayerSpec, Loader};
use super::{ForwardBatch, HParams, Model, Result};
use crate::backend::{Activation, AttnParams, Backend, Rope, RopeStyle};
use crate::gguf::GgufFile;

pub struct Qwen2<B: Backend> {
    h: HParams,
    embd: B::Weight,
    blocks: Vec<Block<B>>,
    out_norm: B::Vector,
    output: B::Weight,
}

impl<B: Backend> Qwen2<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>) -> Result<Self> {
        let mut h = HParams::read(file)?;
        let l = Loader { be, file };
        h.vocab_size = l.vocab_rows()?;
        let kind = BlockKind {
            qkv_bias: true,
            ..Default::default()
        };
        let blocks = (0..h.n_layers)
            .map(|i| Block::load(&l, &h, i, kind))
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
                style: RopeStyle::Halves,
                base: h.rope_base,
                freq_scale: h.rope_freq_scale,
                dims: h.rope_dims,
            },
            act: Activation::Silu,
            eps: h.rms_eps,
        }
    }
}

impl<B: Backend> Model<B> for Qwen2<B> {
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
