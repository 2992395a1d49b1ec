//! Hyper-parameters common to the decoder-only architectures, read from the
//! `{arch}.*` metadata keys and checked for sense before any tensor is used.

use super::{ModelError, Result};
use crate::gguf::GgufFile;

#[derive(Debug, Clone)]
pub struct HParams {
    pub arch: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub ctx_len: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// 1 / linear scaling factor (1.0 when unscaled).
    pub rope_freq_scale: f32,
    pub vocab_size: usize,
}

const MAX_REASONABLE: u64 = 1 << 24;

impl HParams {
    pub fn read(f: &GgufFile) -> Result<Self> {
        let arch = f.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<usize> {
            let v = f.req_u64(&key(k))?;
            if v == 0 || v > MAX_REASONABLE {
                return Err(ModelError::BadHParams(format!("{} = {v}", key(k))));
            }
            Ok(v as usize)
        };
        let n_layers = req("block_count")?;
        let d_model = req("embedding_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = match f.get_u64(&key("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_heads,
        };
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::BadHParams(format!(
                "{n_heads} attention heads cannot share {n_kv_heads} KV heads"
            )));
        }
        let head_dim = match f.get_u64(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None => d_model / n_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 1024 {
            return Err(ModelError::BadHParams(format!("head dimension {head_dim}")));
        }
        let rope_dims = match f.get_u64(&key("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::BadHParams(format!(
                "rope dimension count {rope_dims} for head dimension {head_dim}"
            )));
        }
        let rope_freq_scale = match (
            f.get_str(&key("rope.scaling.type"))?,
            f.get_f64(&key("rope.scaling.factor"))?,
        ) {
            (Some("linear"), Some(factor)) if factor > 0.0 => (1.0 / factor) as f32,
            (None | Some("none"), _) | (Some("linear"), None) => 1.0,
            (Some(other), _) => {
                return Err(ModelError::BadHParams(format!(
                    "unsupported rope scaling {other:?}"
                )))
            }
        };
        Ok(Self {
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: req("feed_forward_length")?,
            ctx_len: req("context_length")?,
            rms_eps: f
                .get_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6) as f32,
            rope_base: f.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0) as f32,
            rope_dims,
            rope_freq_scale,
            vocab_size: 0,
            arch,
        })
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
}
