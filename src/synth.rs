//! Synthetic models: GGUF files with random weights in the exact shape of a
//! real model (its tensor names, metadata and the quantization mixture
//! llama.cpp would choose), with a real tokenizer copied from another GGUF.
//! Decode and prefill time do not depend on the weights' values, so these
//! stand in for models too large to fetch here (a 7B on the GPU machine).

use std::io::Write;

use rayon::prelude::*;

use crate::gguf::{GgufFile, GgufWriter, MetaValue, TensorDesc};
use crate::quant::quantize::quantize_row;
use crate::quant::GgmlType;

/// The shape of a real model family member.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub d_model: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    /// The real file stores `output.weight` (untied, or tied but written out).
    pub output: bool,
}

/// Qwen2.5 shapes, from the models' config files.
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "qwen2.5-0.5b",
        d_model: 896,
        ffn: 4864,
        layers: 24,
        heads: 14,
        kv_heads: 2,
        vocab: 151_936,
        output: true,
    },
    Shape {
        name: "qwen2.5-1.5b",
        d_model: 1536,
        ffn: 8960,
        layers: 28,
        heads: 12,
        kv_heads: 2,
        vocab: 151_936,
        output: true,
    },
    Shape {
        name: "qwen2.5-7b",
        d_model: 3584,
        ffn: 18944,
        layers: 28,
        heads: 28,
        kv_heads: 4,
        vocab: 152_064,
        output: true,
    },
];

/// The whole-file quantization choice, named as llama.cpp names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixture {
    Q4KM,
    Q8_0,
    Q4_0,
    Q4_1,
    F16,
}

impl Mixture {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(Self::Q4KM),
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            "q4_1" => Some(Self::Q4_1),
            "f16" => Some(Self::F16),
            _ => None,
        }
    }

    /// GGUF `general.file_type` (llama_ftype).
    fn file_type(self) -> u32 {
        match self {
            Self::Q4KM => 15,
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::F16 => 1,
        }
    }

    /// The type of a 2-D tensor, following llama.cpp's choices for the
    /// mixture: Q4_K_M gives `output` Q6_K and `attn_v`/`ffn_down` Q6_K in
    /// the layers `use_more_bits` picks; a k-quant that does not fit the row
    /// width falls back as llama.cpp does (Q4_K→Q5_0, Q6_K→Q8_0).
    fn tensor_type(self, name: &str, layer: Option<usize>, layers: usize, cols: usize) -> GgmlType {
        let ty = match self {
            Self::F16 => return GgmlType::F16,
            Self::Q8_0 => return GgmlType::Q8_0,
            Self::Q4_0 => return GgmlType::Q4_0,
            Self::Q4_1 => return GgmlType::Q4_1,
            Self::Q4KM => {
                let more_bits =
                    |i: usize| i < layers / 8 || i >= 7 * layers / 8 || (i - layers / 8) % 3 == 2;
                let sensitive =
                    name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight");
                if name == "output.weight" || (sensitive && layer.is_some_and(more_bits)) {
                    GgmlType::Q6_K
                } else {
                    GgmlType::Q4_K
                }
            }
        };
        if cols.is_multiple_of(256) {
            ty
        } else if ty == GgmlType::Q6_K {
            GgmlType::Q8_0
        } else {
            GgmlType::Q5_0
        }
    }
}

/// One tensor to write: name, [rows, cols] (rows = 1 for vectors), type, and
/// what its values look like.
struct Planned {
    desc: TensorDesc,
    rows: usize,
    cols: usize,
    fill: Fill,
}

#[derive(Clone, Copy)]
enum Fill {
    /// Uniform with this standard deviation.
    Random(f32),
    /// RMSNorm weights: 1 + small noise.
    Norm,
}

fn plan(shape: &Shape, mix: Mixture) -> Vec<Planned> {
    let (d, ff) = (shape.d_model, shape.ffn);
    let head_dim = d / shape.heads;
    let kv = shape.kv_heads * head_dim;
    let mut out = Vec::new();
    let mut add = |name: String, rows: usize, cols: usize, layer: Option<usize>, fill: Fill| {
        let ty = if rows == 1 {
            GgmlType::F32
        } else {
            mix.tensor_type(&name, layer, shape.layers, cols)
        };
        let dims = if rows == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        out.push(Planned {
            desc: TensorDesc {
                name,
                dims,
                ty,
                n_bytes: (rows * ty.row_bytes(cols)) as u64,
            },
            rows,
            cols,
            fill,
        });
    };
    let w = Fill::Random(0.02);
    add("token_embd.weight".into(), shape.vocab, d, None, w);
    for i in 0..shape.layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let l = Some(i);
        add(n("attn_norm.weight"), 1, d, l, Fill::Norm);
        add(n("attn_q.weight"), d, d, l, w);
        add(n("attn_q.bias"), 1, d, l, w);
        add(n("attn_k.weight"), kv, d, l, w);
        add(n("attn_k.bias"), 1, kv, l, w);
        add(n("attn_v.weight"), kv, d, l, w);
        add(n("attn_v.bias"), 1, kv, l, w);
        add(n("attn_output.weight"), d, d, l, w);
        add(n("ffn_norm.weight"), 1, d, l, Fill::Norm);
        add(n("ffn_gate.weight"), ff, d, l, w);
        add(n("ffn_up.weight"), ff, d, l, w);
        add(n("ffn_down.weight"), d, ff, l, w);
    }
    add("output_norm.weight".into(), 1, d, None, Fill::Norm);
    if shape.output {
        add("output.weight".into(), shape.vocab, d, None, w);
    }
    out
}

/// xorshift64*: fast, seedable, and good enough for weights whose values
/// nobody reads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn tensor_bytes(p: &Planned, seed: u64) -> Vec<u8> {
    let row_bytes = p.desc.ty.row_bytes(p.cols);
    let mut out = vec![0u8; p.rows * row_bytes];
    // Rows in chunks, each chunk seeded by its index: the same bytes whatever
    // the thread count.
    const CHUNK: usize = 64;
    out.par_chunks_mut(row_bytes * CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let mut rng = Rng::new(seed ^ ((c as u64) << 20));
            let mut x = vec![0f32; p.cols];
            let mut enc = Vec::with_capacity(row_bytes);
            for row in dst.chunks_mut(row_bytes) {
                for v in x.iter_mut() {
                    *v = match p.fill {
                        // Uniform on [-a, a] has sd a/√3.
                        Fill::Random(sd) => rng.next() * sd * 3f32.sqrt(),
                        Fill::Norm => 1.0 + 0.1 * rng.next(),
                    };
                }
                enc.clear();
                quantize_row(p.desc.ty, &x, &mut enc);
                row.copy_from_slice(&enc);
            }
        });
    out
}

/// What `synth` wrote.
pub struct SynthReport {
    pub tensors: usize,
    pub bytes: u64,
    pub type_counts: Vec<(GgmlType, usize, u64)>,
}

/// Write a random model of `shape` quantized as `mix` to `out`, with the
/// tokenizer (every `tokenizer.*` key) of `tokenizer_src`. `progress` is told
/// each tensor's bytes as they are written.
pub fn write_model(
    shape: &Shape,
    mix: Mixture,
    tokenizer_src: &GgufFile,
    seed: u64,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> std::io::Result<SynthReport> {
    let planned = plan(shape, mix);
    let mut w = GgufWriter::new();
    let arch = "qwen2";
    let k = |s: &str| format!("{arch}.{s}");
    w.meta("general.architecture", MetaValue::String(arch.into()))
        .meta("general.type", MetaValue::String("model".into()))
        .meta(
            "general.name",
            MetaValue::String(format!("synthetic {} {mix:?} (random weights)", shape.name)),
        )
        .meta(&k("block_count"), MetaValue::U32(shape.layers as u32))
        .meta(&k("context_length"), MetaValue::U32(32768))
        .meta(&k("embedding_length"), MetaValue::U32(shape.d_model as u32))
        .meta(&k("feed_forward_length"), MetaValue::U32(shape.ffn as u32))
        .meta(
            &k("attention.head_count"),
            MetaValue::U32(shape.heads as u32),
        )
        .meta(
            &k("attention.head_count_kv"),
            MetaValue::U32(shape.kv_heads as u32),
        )
        .meta(&k("rope.freq_base"), MetaValue::F32(1_000_000.0))
        .meta(&k("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-6))
        .meta("general.file_type", MetaValue::U32(mix.file_type()))
        .meta("general.quantization_version", MetaValue::U32(2));
    copy_tokenizer(tokenizer_src, &mut w);
    let descs: Vec<TensorDesc> = planned.iter().map(|p| p.desc.clone()).collect();
    w.write_streaming(out, &descs, |i| {
        let bytes = tensor_bytes(&planned[i], seed.wrapping_add(i as u64));
        progress(bytes.len() as u64);
        bytes
    })?;
    let mut type_counts: Vec<(GgmlType, usize, u64)> = Vec::new();
    for d in &descs {
        match type_counts.iter_mut().find(|(t, _, _)| *t == d.ty) {
            Some(e) => {
                e.1 += 1;
                e.2 += d.n_bytes;
            }
            None => type_counts.push((d.ty, 1, d.n_bytes)),
        }
    }
    Ok(SynthReport {
        tensors: descs.len(),
        bytes: descs.iter().map(|d| d.n_bytes).sum(),
        type_counts,
    })
}

/// Copy every `tokenizer.*` key of `src` into `w`.
pub fn copy_tokenizer(src: &GgufFile, w: &mut GgufWriter) -> usize {
    let mut n = 0;
    for (key, v) in &src.header.metadata {
        if key.starts_with("tokenizer.") {
            w.meta(key, v.clone());
            n += 1;
        }
    }
    n
}

/// Total bytes `write_model` will produce for the tensors (for a progress bar).
pub fn planned_bytes(shape: &Shape, mix: Mixture) -> u64 {
    plan(shape, mix).iter().map(|p| p.desc.n_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(shape: &Shape, mix: Mixture, ty: GgmlType) -> usize {
        plan(shape, mix).iter().filter(|p| p.desc.ty == ty).count()
    }

    #[test]
    fn q4_k_m_mixture_matches_the_real_qwen_0_5b_file() {
        // llama.cpp's Qwen2.5-Coder-0.5B Q4_K_M: 121 F32, 12 Q4_K, 133 Q5_0,
        // 12 Q6_K, 13 Q8_0 tensors (read from the fetched file with `tandem info`).
        let s = &SHAPES[0];
        let m = Mixture::Q4KM;
        assert_eq!(count(s, m, GgmlType::F32), 121);
        assert_eq!(count(s, m, GgmlType::Q4_K), 12);
        assert_eq!(count(s, m, GgmlType::Q5_0), 133);
        assert_eq!(count(s, m, GgmlType::Q6_K), 12);
        assert_eq!(count(s, m, GgmlType::Q8_0), 13);
    }

    #[test]
    fn chunks_are_seeded_by_index_not_by_thread() {
        let p = &plan(&SHAPES[0], Mixture::Q8_0)[2];
        assert_eq!(tensor_bytes(p, 5), tensor_bytes(p, 5));
        assert_ne!(tensor_bytes(p, 5), tensor_bytes(p, 6));
    }
}
