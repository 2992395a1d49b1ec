//! The pre-norm decoder block shared by the architectures here: attention
//! (optional QKV biases, optional per-head QK-norm, RoPE, GQA, optional
//! sliding window) and a gated MLP, each optionally followed by a post-norm
//! (Gemma) before its residual add.

use std::sync::Arc;

use super::{HParams, ModelError, Result};
use crate::backend::{Activation, AttnParams, Backend, KvWrite, Logits, Rope, RopeStyle};
use crate::gguf::{GgufError, GgufFile};

/// Which optional tensors an architecture requires.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockKind {
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub post_norms: bool,
}

/// Per-layer settings that may differ between layers (Gemma's local and
/// global layers).
#[derive(Debug, Clone, Copy)]
pub struct LayerSpec {
    pub attn: AttnParams,
    pub rope: Rope,
    pub act: Activation,
    pub eps: f32,
}

pub struct Block<B: Backend> {
    attn_norm: B::Vector,
    wq: B::Weight,
    wk: B::Weight,
    wv: B::Weight,
    wo: B::Weight,
    bias: Option<[B::Vector; 3]>,
    qk_norm: Option<[B::Vector; 2]>,
    post_attn_norm: Option<B::Vector>,
    ffn_norm: B::Vector,
    gate: B::Weight,
    up: B::Weight,
    down: B::Weight,
    post_ffn_norm: Option<B::Vector>,
}

/// Tensor loading with shape checks, so a file whose metadata and tensors
/// disagree fails at load time with the tensor's name.
pub struct Loader<'a, B: Backend> {
    pub be: &'a B,
    pub file: &'a Arc<GgufFile>,
}

impl<B: Backend> Loader<'_, B> {
    pub fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<B::Weight> {
        let w = self.be.load_weight(&self.file.tensor(name)?, self.file)?;
        self.check_shape(name, w, rows, cols)
    }

    /// A weight read a row at a time ([`Backend::load_table`]).
    pub fn table(&self, name: &str, rows: usize, cols: usize) -> Result<B::Weight> {
        let w = self.be.load_table(&self.file.tensor(name)?, self.file)?;
        self.check_shape(name, w, rows, cols)
    }

    fn check_shape(&self, name: &str, w: B::Weight, rows: usize, cols: usize) -> Result<B::Weight> {
        let got = self.be.weight_shape(&w);
        if got != (rows, cols) {
            return Err(ModelError::BadShape {
                name: name.into(),
                got,
                want: (rows, cols),
            });
        }
        Ok(w)
    }

    pub fn vector(&self, name: &str, len: usize) -> Result<B::Vector> {
        let t = self.file.tensor(name)?;
        if t.info.n_elements() != len as u64 {
            return Err(ModelError::BadShape {
                name: name.into(),
                got: (1, t.info.n_elements() as usize),
                want: (1, len),
            });
        }
        Ok(self.be.load_vector(&t)?)
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor_info(name).is_some()
    }

    /// The output projection's tensor: `output.weight`, or the embedding
    /// table when tied.
    fn output_name(&self) -> &'static str {
        if self.has("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        }
    }

    /// The output projection.
    pub fn output(&self, h: &HParams, vocab: usize) -> Result<B::Weight> {
        self.weight(self.output_name(), vocab, h.d_model)
    }

    /// The first `rows` rows of the output projection: the scores of the
    /// vocabulary's first `rows` tokens only.
    pub fn output_prefix(&self, h: &HParams, rows: usize) -> Result<B::Weight> {
        let t = self.file.tensor(self.output_name())?;
        let row_bytes = t.info.ty.row_bytes(t.info.row_len());
        let mut info = t.info.clone();
        info.dims = vec![h.d_model as u64, rows as u64];
        info.n_bytes = (rows * row_bytes) as u64;
        let prefix = crate::gguf::Tensor {
            info: &info,
            data: &t.data[..rows * row_bytes],
        };
        let w = self.be.load_weight(&prefix, self.file)?;
        debug_assert_eq!(self.be.weight_shape(&w), (rows, h.d_model));
        Ok(w)
    }

    /// Rows of the embedding table = the model's vocabulary size.
    pub fn vocab_rows(&self) -> Result<usize> {
        let t = self
            .file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| GgufError::MissingTensor("token_embd.weight".into()))?;
        Ok(t.n_rows())
    }
}

impl<B: Backend> Block<B> {
    pub fn load(l: &Loader<'_, B>, h: &HParams, i: usize, kind: BlockKind) -> Result<Self> {
        let n = |s: &str| format!("blk.{i}.{s}");
        let (d, q, kv, ff) = (h.d_model, h.q_dim(), h.kv_dim(), h.ffn_dim);
        Ok(Self {
            attn_norm: l.vector(&n("attn_norm.weight"), d)?,
            wq: l.weight(&n("attn_q.weight"), q, d)?,
            wk: l.weight(&n("attn_k.weight"), kv, d)?,
            wv: l.weight(&n("attn_v.weight"), kv, d)?,
            wo: l.weight(&n("attn_output.weight"), d, q)?,
            bias: if kind.qkv_bias {
                Some([
                    l.vector(&n("attn_q.bias"), q)?,
                    l.vector(&n("attn_k.bias"), kv)?,
                    l.vector(&n("attn_v.bias"), kv)?,
                ])
            } else {
                None
            },
            qk_norm: if kind.qk_norm {
                Some([
                    l.vector(&n("attn_q_norm.weight"), h.head_dim)?,
                    l.vector(&n("attn_k_norm.weight"), h.head_dim)?,
                ])
            } else {
                None
            },
            post_attn_norm: if kind.post_norms {
                Some(l.vector(&n("post_attention_norm.weight"), d)?)
            } else {
                None
            },
            ffn_norm: l.vector(&n("ffn_norm.weight"), d)?,
            gate: l.weight(&n("ffn_gate.weight"), ff, d)?,
            up: l.weight(&n("ffn_up.weight"), ff, d)?,
            down: l.weight(&n("ffn_down.weight"), d, ff)?,
            post_ffn_norm: if kind.post_norms {
                Some(l.vector(&n("post_ffw_norm.weight"), d)?)
            } else {
                None
            },
        })
    }

    /// The norm of this block's input.
    pub fn input_norm(&self) -> &B::Vector {
        &self.attn_norm
    }

    /// x ← x + attn(h); x ← x + mlp(norm(x)), where h = norm(x) on entry
    /// (the caller's, or the block before's), and on return h = next(x)
    /// when a next norm is given (the next block's input norm).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        be: &B,
        x: &mut B::Act,
        h: &mut B::Act,
        next: Option<&B::Vector>,
        layer: usize,
        spec: &LayerSpec,
        ctx: &super::batch::FlatBatch,
        seqs: &[crate::backend::AttnSeq<'_>],
        kv: &mut B::KvCache,
    ) {
        let _span = tracing::trace_span!("block", layer).entered();
        let (mut q, mut k, mut v) = (be.act(0, 0), be.act(0, 0), be.act(0, 0));
        let b = self.bias.as_ref();
        let ws = [
            (&self.wq, b.map(|b| &b[0])),
            (&self.wk, b.map(|b| &b[1])),
            (&self.wv, b.map(|b| &b[2])),
        ];
        let at = KvWrite {
            layer,
            head_dim: spec.attn.head_dim,
            positions: &ctx.positions,
            slots: &ctx.write_slots,
            rope: &spec.rope,
        };
        if let Some([qn, kn]) = &self.qk_norm {
            be.linear_many(h, &ws, &mut [&mut q, &mut k, &mut v]);
            let mut t = be.act(0, 0);
            be.rms_norm(&q, qn, spec.eps, &mut t);
            std::mem::swap(&mut q, &mut t);
            be.rms_norm(&k, kn, spec.eps, &mut t);
            std::mem::swap(&mut k, &mut t);
            be.rope_store(&mut q, &mut k, &v, kv, &at);
        } else {
            be.qkv_rope_store(h, &ws, [&mut q, &mut k, &mut v], kv, &at);
        }
        let mut a = be.act(0, 0);
        be.attention(&q, kv, layer, seqs, &spec.attn, &mut a);
        let post = self.post_attn_norm.as_ref();
        Self::residual(be, x, &a, &self.wo, post, Some(&self.ffn_norm), spec.eps, h);

        let mut g = be.act(0, 0);
        be.gated_ffn(h, &self.gate, &self.up, spec.act, &mut g);
        let post = self.post_ffn_norm.as_ref();
        Self::residual(be, x, &g, &self.down, post, next, spec.eps, h);
    }

    /// x += (post_norm of) y · wᵀ, then h = next_norm(x) if given.
    #[allow(clippy::too_many_arguments)]
    fn residual(
        be: &B,
        x: &mut B::Act,
        y: &B::Act,
        w: &B::Weight,
        post_norm: Option<&B::Vector>,
        next_norm: Option<&B::Vector>,
        eps: f32,
        h: &mut B::Act,
    ) {
        match (post_norm, next_norm) {
            (None, Some(next)) => be.linear_add_norm(y, w, x, next, eps, h),
            (None, None) => be.linear_add(y, w, x),
            (Some(n), _) => {
                let (mut o, mut t) = (be.act(0, 0), be.act(0, 0));
                be.linear(y, w, None, &mut o);
                be.rms_norm(&o, n, eps, &mut t);
                be.add(x, &t);
                if let Some(next) = next_norm {
                    be.rms_norm(x, next, eps, h);
                }
            }
        }
    }
}

/// The weights every decoder-only model here has, and its forward pass:
/// embed → blocks → final norm → logits of the wanted rows. Architecture
/// files choose the block kind, the embedding scale and each layer's spec.
pub struct Decoder<B: Backend> {
    pub h: HParams,
    embd: B::Weight,
    blocks: Vec<Block<B>>,
    out_norm: B::Vector,
    output: B::Weight,
    /// Tokens the output projection scores: the first `head_rows` of the
    /// vocabulary (all of it unless [`Decoder::limit_head`] cut it).
    head_rows: usize,
}

impl<B: Backend> Decoder<B> {
    pub fn load(be: &B, file: &Arc<GgufFile>, kind: BlockKind) -> Result<Self> {
        let mut h = HParams::read(file)?;
        let l = Loader { be, file };
        h.vocab_size = l.vocab_rows()?;
        let blocks = (0..h.n_layers)
            .map(|i| Block::load(&l, &h, i, kind))
            .collect::<Result<_>>()?;
        Ok(Self {
            embd: l.table("token_embd.weight", h.vocab_size, h.d_model)?,
            out_norm: l.vector("output_norm.weight", h.d_model)?,
            output: l.output(&h, h.vocab_size)?,
            head_rows: h.vocab_size,
            blocks,
            h,
        })
    }

    /// Score only the vocabulary's first `rows` tokens from now on (a draft
    /// model's cheaper head: logit rows come back `rows` long). Returns the
    /// rows kept, at most the vocabulary.
    pub fn limit_head(&mut self, be: &B, file: &Arc<GgufFile>, rows: usize) -> Result<usize> {
        let rows = rows.clamp(1, self.h.vocab_size);
        if rows != self.head_rows {
            let l = Loader { be, file };
            self.output = if rows == self.h.vocab_size {
                l.output(&self.h, rows)?
            } else {
                l.output_prefix(&self.h, rows)?
            };
            self.head_rows = rows;
        }
        Ok(rows)
    }

    /// The spec of a layer with full causal attention and 1/sqrt(head_dim)
    /// scaling, the common case.
    pub fn plain_spec(&self, style: RopeStyle, act: Activation) -> LayerSpec {
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
                style,
                base: h.rope_base,
                freq_scale: h.rope_freq_scale,
                dims: h.rope_dims,
            },
            act,
            eps: h.rms_eps,
        }
    }

    pub fn forward(
        &self,
        be: &B,
        embd_scale: f32,
        spec: impl Fn(usize) -> LayerSpec,
        batch: &super::ForwardBatch<'_>,
        kv: &mut B::KvCache,
    ) -> Result<Logits> {
        let h = &self.h;
        let flat = super::batch::FlatBatch::new(batch, h.vocab_size, h.ctx_len)?;
        if flat.tokens.is_empty() {
            return Ok(Logits::empty());
        }
        let seqs = flat.attn_seqs();
        let replayed = be.begin_forward(
            &crate::backend::StepLayout {
                tokens: &flat.tokens,
                positions: &flat.positions,
                write_slots: &flat.write_slots,
                seqs: &seqs,
                logit_rows: &flat.logit_rows,
                readout: &batch.readout,
            },
            kv,
        );
        if let Some(logits) = replayed {
            be.end_forward();
            return Ok(logits);
        }
        let mut x = be.act(0, 0);
        be.embed(&self.embd, &flat.tokens, embd_scale, &mut x);
        // Each block's normed input, written by the block before.
        let mut x_normed = be.act(0, 0);
        if let Some(first) = self.blocks.first() {
            be.rms_norm(&x, first.input_norm(), spec(0).eps, &mut x_normed);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let next = self.blocks.get(i + 1).map(|n| n.input_norm());
            b.forward(
                be,
                &mut x,
                &mut x_normed,
                next,
                i,
                &spec(i),
                &flat,
                &seqs,
                kv,
            );
        }
        let mut last = be.act(0, 0);
        be.gather_rows(&x, &flat.logit_rows, &mut last);
        let mut normed = be.act(0, 0);
        be.rms_norm(&last, &self.out_norm, h.rms_eps, &mut normed);
        let mut logits = be.act(0, 0);
        be.linear(&normed, &self.output, None, &mut logits);
        let out = be.read_logits(&logits, self.head_rows, &batch.readout);
        be.end_forward();
        Ok(out)
    }
}
