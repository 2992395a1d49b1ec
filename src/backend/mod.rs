//! The op set a transformer step needs, and nothing more. Model files are
//! written once against [`Backend`]; the CPU backend implements it today,
//! CUDA later. Nothing outside a backend knows how its tensors are stored.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod logits;

pub use logits::{DrawKey, Logits, Readout, Row, TopRow};

use crate::gguf::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("tensor {name:?}: {problem}")]
    BadWeight { name: String, problem: String },
    #[error("{0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// How RoPE pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): ggml's "normal" mode, used by llama GGUFs.
    Interleaved,
    /// Halves (i, i + d/2): ggml's NEOX mode (Qwen2, Gemma).
    Halves,
}

#[derive(Debug, Clone, Copy)]
pub struct Rope {
    pub style: RopeStyle,
    pub base: f32,
    /// Linear position scaling (1 / factor); 1.0 for none.
    pub freq_scale: f32,
    /// Dimensions rotated at the start of each head.
    pub dims: usize,
}

impl Rope {
    /// The ratio between consecutive pairs' angles, base^(−2/dims): the
    /// angles are built by repeated multiplication, as ggml does.
    pub fn angle_step(&self) -> f32 {
        self.base.powf(-2.0 / self.dims as f32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation (as ggml_gelu).
    GeluTanh,
}

/// [`Backend::qkv_rope_store`] as separate steps: the products, then
/// [`Backend::rope_store`] (the default, and a backend's fallback).
pub fn qkv_then_rope_store<B: Backend + ?Sized>(
    be: &B,
    x: &B::Act,
    ws: &[(&B::Weight, Option<&B::Vector>); 3],
    [q, k, v]: [&mut B::Act; 3],
    kv: &mut B::KvCache,
    at: &KvWrite<'_>,
) {
    be.linear_many(x, ws, &mut [&mut *q, &mut *k, &mut *v]);
    be.rope_store(q, k, v, kv, at);
}

/// Where a step's keys and values go: the layer, its head size, the rows'
/// positions and cache slots, and the rotation.
#[derive(Debug, Clone, Copy)]
pub struct KvWrite<'a> {
    pub layer: usize,
    pub head_dim: usize,
    pub positions: &'a [u32],
    pub slots: &'a [u32],
    pub rope: &'a Rope,
}

/// Attention geometry of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Keys further back than this many positions are masked (sliding window).
    pub window: Option<usize>,
}

/// Where each query token sits: its sequence's block table (as flat slots for
/// every cached position) and its own position.
#[derive(Debug, Clone)]
pub struct AttnSeq<'a> {
    /// Query rows `rows.start..rows.end` of the batch belong to this sequence.
    pub rows: std::ops::Range<usize>,
    /// KV slot of every position 0..context_len of the sequence.
    pub slots: &'a [u32],
    /// Position of each query row (len == rows.len()).
    pub positions: &'a [u32],
}

/// The layout of one forward pass, announced before its ops: a backend may
/// upload it once for all layers, or replay a step it recorded earlier. The
/// ops that follow receive these same slices.
pub struct StepLayout<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [u32],
    pub write_slots: &'a [u32],
    pub seqs: &'a [AttnSeq<'a>],
    pub logit_rows: &'a [usize],
    pub readout: &'a Readout,
}

pub trait Backend: Send + Sync {
    /// A [rows, cols] activation matrix.
    type Act: Send;
    /// A weight matrix [out, in] in its file format.
    type Weight: Send + Sync;
    /// A small f32 vector (norm weights, biases).
    type Vector: Send + Sync;
    /// Key/value memory for all layers, indexed by flat slot.
    type KvCache: Send;

    fn name(&self) -> String;
    /// Wait for what the backend prepares in the background at start-up
    /// (CUDA: its kernels' compile, overlapped with loading the weights);
    /// an error here is a start-up failure. Model loading calls it last.
    fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// Wait also for what is prepared for later (CUDA: the kernels for
    /// batches of several rows, compiled on a thread of their own): a
    /// server calls it before it listens, so that its first batch does not
    /// wait for them.
    fn ready_all(&self) -> Result<()> {
        self.ready()
    }
    fn load_weight(
        &self,
        t: &Tensor<'_>,
        file: &std::sync::Arc<crate::gguf::GgufFile>,
    ) -> Result<Self::Weight>;
    /// A weight only ever read a row at a time (the embedding table): the
    /// CPU leaves it in the file's layout.
    fn load_table(
        &self,
        t: &Tensor<'_>,
        file: &std::sync::Arc<crate::gguf::GgufFile>,
    ) -> Result<Self::Weight> {
        self.load_weight(t, file)
    }
    fn load_vector(&self, t: &Tensor<'_>) -> Result<Self::Vector>;
    fn weight_shape(&self, w: &Self::Weight) -> (usize, usize);
    fn alloc_kv(&self, n_layers: usize, n_slots: usize, kv_dim: usize) -> Self::KvCache;

    fn act(&self, rows: usize, cols: usize) -> Self::Act;
    fn act_from_host(&self, rows: usize, cols: usize, data: Vec<f32>) -> Self::Act;
    fn to_host(&self, x: &Self::Act) -> Vec<f32>;
    /// The pass's logits ([rows, vocab]) as `readout` asks. Summarising is
    /// a backend's choice: the default hands back every logit.
    fn read_logits(&self, x: &Self::Act, vocab: usize, readout: &Readout) -> Logits {
        let _ = readout;
        Logits::Full {
            vocab,
            data: self.to_host(x),
        }
    }

    /// out[i] = table[ids[i]] * scale.
    fn embed(&self, table: &Self::Weight, ids: &[u32], scale: f32, out: &mut Self::Act);
    /// RMS-normalise every consecutive `w.len()` elements of `x` and multiply by `w`.
    fn rms_norm(&self, x: &Self::Act, w: &Self::Vector, eps: f32, out: &mut Self::Act);
    /// out = x · wᵀ (+ bias).
    fn linear(
        &self,
        x: &Self::Act,
        w: &Self::Weight,
        bias: Option<&Self::Vector>,
        out: &mut Self::Act,
    );
    /// Several projections of the same input (Q, K and V; gate and up):
    /// `outs[i] = x · ws[i]ᵀ (+ bias)`. A backend may share work between
    /// them (the CPU quantizes `x` once and runs all rows as one job).
    fn linear_many(
        &self,
        x: &Self::Act,
        ws: &[(&Self::Weight, Option<&Self::Vector>)],
        outs: &mut [&mut Self::Act],
    ) {
        for ((w, b), out) in ws.iter().zip(outs.iter_mut()) {
            self.linear(x, w, *b, out);
        }
    }
    /// Rotate each `head_dim` chunk of every row, row r at `positions[r]`.
    fn rope(&self, x: &mut Self::Act, head_dim: usize, positions: &[u32], rope: &Rope);
    /// Write rows of k and v into the cache of `layer` at `slots`.
    fn kv_store(
        &self,
        kv: &mut Self::KvCache,
        layer: usize,
        k: &Self::Act,
        v: &Self::Act,
        slots: &[u32],
    );
    /// Causal attention of q's rows over the cached keys/values of their sequence.
    fn attention(
        &self,
        q: &Self::Act,
        kv: &Self::KvCache,
        layer: usize,
        seqs: &[AttnSeq<'_>],
        p: &AttnParams,
        out: &mut Self::Act,
    );
    /// gate = act(gate) * up.
    fn gated_act(&self, gate: &mut Self::Act, up: &Self::Act, act: Activation);
    /// x += y.
    fn add(&self, x: &mut Self::Act, y: &Self::Act);
    /// out = the given rows of x.
    fn gather_rows(&self, x: &Self::Act, rows: &[usize], out: &mut Self::Act);

    /// acc += x · wᵀ: a projection straight into the residual stream (a
    /// backend may add in the product's epilogue).
    fn linear_add(&self, x: &Self::Act, w: &Self::Weight, acc: &mut Self::Act) {
        let mut o = self.act(0, 0);
        self.linear(x, w, None, &mut o);
        self.add(acc, &o);
    }
    /// acc += x · wᵀ, then out = rms_norm(acc) with weight `g`: a residual
    /// projection and the norm of the next sublayer's input in one call, so
    /// that a backend may fold the norm into the product's epilogue. `out`
    /// then feeds products only (linear, linear_many, gated_ffn,
    /// qkv_rope_store).
    #[allow(clippy::too_many_arguments)]
    fn linear_add_norm(
        &self,
        x: &Self::Act,
        w: &Self::Weight,
        acc: &mut Self::Act,
        g: &Self::Vector,
        eps: f32,
        out: &mut Self::Act,
    ) {
        self.linear_add(x, w, acc);
        self.rms_norm(acc, g, eps, out);
    }
    /// out = act(x · gateᵀ) * (x · upᵀ): a gated MLP's first half.
    fn gated_ffn(
        &self,
        x: &Self::Act,
        gate: &Self::Weight,
        up: &Self::Weight,
        act: Activation,
        out: &mut Self::Act,
    ) {
        let mut u = self.act(0, 0);
        self.linear_many(x, &[(gate, None), (up, None)], &mut [out, &mut u]);
        self.gated_act(out, &u, act);
    }
    /// q, k, v = x · [wq, wk, wv]ᵀ (+ bias), then [`Backend::rope_store`]:
    /// one call, so that a backend may rotate and store the keys and values
    /// as the products write them (CUDA: no rope_store launch per layer).
    fn qkv_rope_store(
        &self,
        x: &Self::Act,
        ws: &[(&Self::Weight, Option<&Self::Vector>); 3],
        [q, k, v]: [&mut Self::Act; 3],
        kv: &mut Self::KvCache,
        at: &KvWrite<'_>,
    ) {
        qkv_then_rope_store(self, x, ws, [q, k, v], kv, at);
    }

    /// RoPE on q and k, then k and v into the cache at `at.slots`.
    fn rope_store(
        &self,
        q: &mut Self::Act,
        k: &mut Self::Act,
        v: &Self::Act,
        kv: &mut Self::KvCache,
        at: &KvWrite<'_>,
    ) {
        self.rope(q, at.head_dim, at.positions, at.rope);
        self.rope(k, at.head_dim, at.positions, at.rope);
        self.kv_store(kv, at.layer, k, v, at.slots);
    }

    /// A forward pass over `step` begins; its last op is `read_logits`, then
    /// [`Backend::end_forward`]. A backend that has recorded this step before
    /// may run it whole here and return the logits: the model then skips its
    /// ops (and still calls `end_forward`).
    fn begin_forward(&self, _step: &StepLayout<'_>, _kv: &Self::KvCache) -> Option<Logits> {
        None
    }
    fn end_forward(&self) {}

    /// Wait until the work launched so far has finished (a decode step a
    /// backend launched ahead of the host included): a benchmark calls it
    /// before it starts a clock.
    fn wait_idle(&self) {}

    /// This backend's model will take part in speculation (a target that
    /// verifies guesses, or a draft), before its first forward pass: a pass
    /// over k + 1 rows must give each row the bits a one-row pass gives,
    /// and the host changes course every round. A backend whose one-row
    /// path is other arithmetic, or that runs steps ahead of the host,
    /// turns that off here.
    fn prepare_for_speculation(&self) {}

    /// For a target that speculates, before each pass: whether plain steps
    /// are likely to follow one another for a while (the governor has
    /// turned speculation off), so that a backend may again run steps ahead
    /// of the host, as [`Backend::prepare_for_speculation`] stopped it
    /// doing. A step run ahead and not taken costs one step.
    fn allow_lookahead(&self, _allowed: bool) {}
}
