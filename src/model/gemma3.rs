//! Gemma 3 (Gemma Team, 2025), text decoder:
//! - embeddings scaled by sqrt(d_model), output tied to the embedding table;
//! - RMSNorm with (1 + w) — llama.cpp's converter stores 1 + w in the file, so
//!   the weights are used as they are;
//! - per-head RMSNorm on Q and K (QK-norm), post-norms after attention and MLP;
//! - GeGLU MLP (tanh GELU);
//! - five sliding-window (local) layers per global one: local layers attend to
//!   the last `sliding_window` positions with RoPE base 10 000, global layers
//!   to everything with `rope.freq_base` (and its linear scaling, if any);
//! - attention scale 1/sqrt(head_dim).

use std::sync::Arc;

use super::block::{BlockKind, Decoder, LayerSpec};
use super::{ForwardBatch, HParams, Model, ModelError, Result};
use crate::backend::{Activation, Backend, Logits, RopeStyle};
use crate::gguf::GgufFile;

/// Every sixth layer is global.
const SWA_PATTERN: usize = 6;
const LOCAL_ROPE_BASE: f32 = 10_000.0;

pub struct Gemma3<B: Backend> {
    dec: Decoder<B>,
    window: usize,
    local_rope_base: f32,
}

impl<B: Backend> Gemma3<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>) -> Result<Self> {
        let window = file
            .get_u64("gemma3.attention.sliding_window")?
            .ok_or_else(|| {
                ModelError::BadHParams("gemma3.attention.sliding_window is missing".into())
            })? as usize;
        if window == 0 {
            return Err(ModelError::BadHParams("sliding window of 0".into()));
        }
        let local_rope_base = file
            .get_f64("gemma3.rope.freq_base_swa")?
            .map(|v| v as f32)
            .unwrap_or(LOCAL_ROPE_BASE);
        let kind = BlockKind {
            qk_norm: true,
            post_norms: true,
            ..Default::default()
        };
        Ok(Self {
            dec: Decoder::load(be, file, kind)?,
            window,
            local_rope_base,
        })
    }

    fn is_local(layer: usize) -> bool {
        layer % SWA_PATTERN < SWA_PATTERN - 1
    }

    fn spec(&self, layer: usize) -> LayerSpec {
        let mut spec = self.dec.plain_spec(RopeStyle::Halves, Activation::GeluTanh);
        if Self::is_local(layer) {
            spec.attn.window = Some(self.window);
            spec.rope.base = self.local_rope_base;
            spec.rope.freq_scale = 1.0;
        }
        spec
    }
}

impl<B: Backend> Model<B> for Gemma3<B> {
    fn hparams(&self) -> &HParams {
        &self.dec.h
    }

    fn limit_head(&mut self, be: &B, file: &Arc<GgufFile>, rows: usize) -> Result<usize> {
        self.dec.limit_head(be, file, rows)
    }

    fn forward(&self, be: &B, batch: &ForwardBatch<'_>, kv: &mut B::KvCache) -> Result<Logits> {
        let scale = (self.dec.h.d_model as f32).sqrt();
        self.dec.forward(be, scale, |i| self.spec(i), batch, kv)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sixth_layer_is_global() {
        let global: Vec<usize> = (0..18)
            .filter(|&i| !super::Gemma3::<crate::backend::cpu::CpuBackend>::is_local(i))
            .collect();
        assert_eq!(global, [5, 11, 17]);
    }
}
