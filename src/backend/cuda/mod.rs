//! The CUDA backend: f32 activations in device memory, weights repacked for
//! our kernels ([`weights`]), an f16 paged KV cache, kernels compiled at
//! start-up ([`gpu`]). Decode steps (up to 8 rows) are recorded once per
//! layout as a CUDA graph and replayed ([`step`]); prefill runs eagerly, with
//! weights dequantized to f16 tiles and multiplied by cuBLAS.

mod compile;
mod decode_attention;
mod folded_norm;
pub mod gpu;
mod kv_cache;
mod prefill_attention;
mod products;
mod programs;
mod readout;
mod rope_store;
mod step;
mod timeline;
mod weights;

use std::sync::{Arc, Mutex};

use super::{
    qkv_then_rope_store, Activation, AttnParams, AttnSeq, Backend, BackendError, KvWrite, Logits,
    Readout, Result, Rope, RopeStyle, StepLayout,
};
use crate::gguf::{GgufFile, Tensor};
use folded_norm::FoldedNorm;
use gpu::{DevBuf, Gpu, GpuResult, KArgs, OwnedBuf};
pub use kv_cache::CudaKv;
use step::{Mode, OutShape, StepState};
use weights::DevType;

/// Rows up to which a linear layer runs as matrix-vector kernels (and a
/// forward pass may be captured as a graph).
pub const MAX_DECODE_ROWS: usize = 16;

/// Query heads up to which decode attention merges its splits in-kernel.
const MAX_HEADS: usize = 256;

pub struct CudaAct {
    pub rows: usize,
    pub cols: usize,
    /// None only for an empty activation.
    buf: Option<DevBuf>,
    /// The same values quantized to int8 blocks (values, (scale, scale·Σq)),
    /// when the op that wrote them also quantized them for a decode product.
    q8: Option<(DevBuf, DevBuf)>,
    /// Set when a residual product wrote this as the next norm's output
    /// with the norm folded into its epilogue (`linear_add_norm`): `q8`
    /// then holds x ⊙ g unnormalised and the products scale by 1/rms(x)
    /// themselves; `buf` holds nothing until a float reader asks for it.
    norm: Option<FoldedNorm>,
}

impl CudaAct {
    fn ptr(&self) -> u64 {
        assert!(
            self.norm.is_none(),
            "a folded norm's output read as floats (CudaBackend::float_input computes them)"
        );
        self.buf
            .as_ref()
            .map(|b| b.ptr)
            .expect("activation has no device memory")
    }
    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

pub struct CudaWeight {
    ty: DevType,
    rows: usize,
    cols: usize,
    buf: OwnedBuf,
}

pub struct CudaVector {
    len: usize,
    buf: OwnedBuf,
}

pub struct CudaBackend {
    gpu: Arc<Gpu>,
    state: Mutex<StepState>,
    /// KV caches kept for the next session, and ids of freed ones.
    kv_spares: Arc<Mutex<kv_cache::Spares>>,
    /// Per (row, head) split counters of fused decode attention; zero
    /// between launches (each merge resets its own).
    counters: OwnedBuf,
    /// TANDEM_CUDA_FUSED_ATTENTION=0 keeps the separate merge launch (A/B).
    fused_attention: bool,
    /// TANDEM_CUDA_FUSED_ROPE=0 keeps the rope_store launch after the Q/K/V
    /// products (A/B).
    fused_rope: bool,
    /// TANDEM_CUDA_FOLD_NORMS=0 keeps the rms_norm launches that
    /// `linear_add_norm` folds into the residual products (A/B).
    fold_norms: bool,
    /// FOLD_MIN_WIDTH, or TANDEM_CUDA_FOLD_MIN_WIDTH (tests: the 0.5B's 896).
    fold_min_width: usize,
}

/// Widths from which `linear_add_norm` folds the norm into the product: its
/// kernel takes a block of 32 rows per group of 32 outputs, so narrower
/// rows would leave most SMs idle (the 0.5B's 896: 28 blocks).
const FOLD_MIN_WIDTH: usize = 2048;

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // A decode step launched ahead may still run: let it finish before
        // its graph, buffers and pinned result slots are freed.
        let _ = self.gpu.stream.synchronize();
    }
}

impl CudaBackend {
    /// Open `cuda:N`. Graph capture is on unless TANDEM_CUDA_GRAPHS=0.
    pub fn new(ordinal: usize) -> GpuResult<Self> {
        Self::on(Gpu::open(ordinal)?)
    }

    /// A second backend on this one's GPU, for a draft model: the same
    /// stream, memory pool and compiled kernels (loaded once, not compiled
    /// or loaded again for the draft), its own graphs and KV caches. The two
    /// take turns on the stream, as a speculative round does.
    pub fn beside(&self) -> GpuResult<Self> {
        Self::on(self.gpu.clone())
    }

    fn on(gpu: Arc<Gpu>) -> GpuResult<Self> {
        let graphs =
            std::env::var("TANDEM_CUDA_GRAPHS").map_or(true, |v| v != "0") && !gpu.profiling();
        let bytes = MAX_DECODE_ROWS * MAX_HEADS * 4;
        let counters = gpu.alloc_owned(bytes)?;
        gpu.zero(counters.ptr, bytes);
        Ok(Self {
            state: Mutex::new(StepState::new(graphs)),
            kv_spares: kv_cache::Spares::new(),
            gpu,
            counters,
            fused_attention: std::env::var("TANDEM_CUDA_FUSED_ATTENTION")
                .map_or(true, |v| v != "0"),
            fused_rope: std::env::var("TANDEM_CUDA_FUSED_ROPE").map_or(true, |v| v != "0"),
            fold_norms: std::env::var("TANDEM_CUDA_FOLD_NORMS").map_or(true, |v| v != "0"),
            fold_min_width: std::env::var("TANDEM_CUDA_FOLD_MIN_WIDTH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(FOLD_MIN_WIDTH),
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn state(&self) -> std::sync::MutexGuard<'_, StepState> {
        self.state.lock().expect("CUDA backend state lock")
    }

    /// An output activation of the given shape (uninitialised device memory).
    fn out(&self, a: &mut CudaAct, rows: usize, cols: usize) {
        let bytes = rows * cols * 4;
        let fits = a.buf.is_some() && a.rows * a.cols == rows * cols;
        a.rows = rows;
        a.cols = cols;
        a.q8 = None;
        a.norm = None;
        if !fits {
            a.buf = Some(self.gpu.alloc(bytes));
        }
    }

    /// out = rms_norm(x) · w over `rows` rows of n, one block per row (the
    /// `rms_norm` kernel: prompt rows, per-head norms, a folded norm's floats).
    fn rms_norm_rows(&self, x: u64, w: u64, out: u64, rows: usize, n: usize, eps: f32) {
        self.gpu.launch(
            "rms_norm",
            (rows as u32, 1, 1),
            n.next_multiple_of(32).min(1024) as u32,
            &KArgs::new().ptr(x).ptr(w).ptr(out).i32(n).f32(eps),
        );
    }

    /// Shape each product's output for x · wᵀ.
    fn shape_products(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>)],
        outs: &mut [&mut CudaAct],
    ) {
        for ((w, _), out) in ws.iter().zip(outs.iter_mut()) {
            assert_eq!(
                x.cols, w.cols,
                "linear: input width {} vs weight width {}",
                x.cols, w.cols
            );
            self.out(out, x.rows, w.rows);
        }
    }

    /// Device copy of a u32 array: the step's upload when `data` is one of
    /// its slices, else a fresh upload held in `keep`.
    fn u32s(&self, data: &[u32], keep: &mut Vec<DevBuf>) -> u64 {
        let found = self.state().device_copy(data);
        if let Some(p) = found {
            return p;
        }
        self.assert_not_capturing("an array outside the step layout");
        let b = self.gpu.alloc(data.len() * 4);
        self.gpu.upload(b.ptr, data);
        let p = b.ptr;
        keep.push(b);
        p
    }

    fn assert_not_capturing(&self, what: &str) {
        assert!(
            !matches!(self.state().mode, Mode::Capture(_)),
            "a recorded CUDA step cannot upload {what}"
        );
    }

    fn elementwise(&self, name: &str, n: usize, args: KArgs) {
        let blocks = n.div_ceil(256) as u32;
        self.gpu.launch(name, (blocks.max(1), 1, 1), 256, &args);
    }

    fn upload_owned(&self, bytes: &[u8]) -> GpuResult<OwnedBuf> {
        let buf = self.gpu.alloc_owned(bytes.len())?;
        self.gpu.upload(buf.ptr, bytes);
        Ok(buf)
    }
}

impl Backend for CudaBackend {
    type Act = CudaAct;
    type Weight = CudaWeight;
    type Vector = CudaVector;
    type KvCache = CudaKv;

    fn name(&self) -> String {
        match self.gpu.ready() {
            Ok((secs, cached)) => format!(
                "cuda ({}, kernels {} in {secs:.2} s)",
                self.gpu.name,
                if cached { "loaded" } else { "compiled" },
            ),
            Err(e) => format!("cuda ({}, kernels failed: {e})", self.gpu.name),
        }
    }

    fn ready(&self) -> Result<()> {
        self.gpu
            .ready()
            .map(|_| ())
            .map_err(|e| BackendError::Device(e.to_string()))
    }

    fn ready_all(&self) -> Result<()> {
        self.gpu
            .ready_all()
            .map_err(|e| BackendError::Device(e.to_string()))
    }

    fn load_weight(&self, t: &Tensor<'_>, _file: &Arc<GgufFile>) -> Result<CudaWeight> {
        self.gpu.bind();
        let info = t.info;
        let bad = |problem: String| BackendError::BadWeight {
            name: info.name.clone(),
            problem,
        };
        if info.dims.len() > 2 {
            return Err(bad(format!("expected a matrix, got dims {:?}", info.dims)));
        }
        let (rows, cols) = (info.n_rows(), info.row_len());
        if !cols.is_multiple_of(32) {
            return Err(bad(format!("row length {cols} is not a multiple of 32")));
        }
        let (ty, bytes) = weights::repack(info.ty, rows, cols, t.data);
        let buf = self.upload_owned(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(CudaWeight {
            ty,
            rows,
            cols,
            buf,
        })
    }

    fn load_vector(&self, t: &Tensor<'_>) -> Result<CudaVector> {
        self.gpu.bind();
        let v = t.to_f32();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let buf = self
            .upload_owned(&bytes)
            .map_err(|e| BackendError::BadWeight {
                name: t.info.name.clone(),
                problem: e.to_string(),
            })?;
        Ok(CudaVector { len: v.len(), buf })
    }

    fn weight_shape(&self, w: &CudaWeight) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn alloc_kv(&self, n_layers: usize, n_slots: usize, kv_dim: usize) -> CudaKv {
        self.gpu.bind();
        kv_cache::alloc(&self.gpu, &self.kv_spares, n_layers, n_slots, kv_dim)
            .unwrap_or_else(|e| panic!("allocating the KV cache: {e}"))
    }

    fn act(&self, rows: usize, cols: usize) -> CudaAct {
        self.gpu.bind();
        let mut a = CudaAct {
            rows: 0,
            cols: 0,
            buf: None,
            q8: None,
            norm: None,
        };
        if rows * cols > 0 {
            self.out(&mut a, rows, cols);
            if let Some(b) = &a.buf {
                self.gpu.zero(b.ptr, rows * cols * 4);
            }
        }
        a
    }

    fn act_from_host(&self, rows: usize, cols: usize, data: Vec<f32>) -> CudaAct {
        assert_eq!(data.len(), rows * cols);
        self.assert_not_capturing("host activations");
        self.gpu.bind();
        let b = self.gpu.alloc(data.len() * 4);
        self.gpu.upload(b.ptr, &data);
        CudaAct {
            rows,
            cols,
            buf: Some(b),
            q8: None,
            norm: None,
        }
    }

    fn to_host(&self, x: &CudaAct) -> Vec<f32> {
        self.gpu.bind();
        let mut out = vec![0f32; x.len()];
        let ptr = x.buf.as_ref().map(|_| self.float_input(x, true));
        let shape = OutShape::Full {
            rows: x.rows,
            cols: x.cols,
        };
        let src = self.state().finish_step(&self.gpu, ptr, shape);
        self.gpu.download(src, &mut out);
        out
    }

    fn read_logits(&self, x: &CudaAct, vocab: usize, readout: &Readout) -> Logits {
        let k = match readout.k() {
            Some(k) if x.rows > 0 && x.cols == vocab => k.clamp(1, vocab),
            _ => {
                return Logits::Full {
                    vocab,
                    data: self.to_host(x),
                }
            }
        };
        self.gpu.bind();
        // A draw's keys: the step's upload, or (outside a step) a fresh one.
        let mut keep = Vec::new();
        let keys = match readout {
            Readout::Draw(_, keys) => {
                assert_eq!(keys.len(), x.rows, "a draw readout needs one key per row");
                let found = self.state().draw_keys_copy();
                Some(found.unwrap_or_else(|| {
                    let words: Vec<u32> = keys.iter().flat_map(|d| d.words()).collect();
                    self.u32s(&words, &mut keep)
                }))
            }
            _ => None,
        };
        let (out, shape) = self.top_k(x, k, keys);
        let src = self.state().finish_step(&self.gpu, Some(out.ptr), shape);
        shape.download(&self.gpu, src)
    }

    fn embed(&self, table: &CudaWeight, ids: &[u32], scale: f32, out: &mut CudaAct) {
        self.gpu.bind();
        self.out(out, ids.len(), table.cols);
        if ids.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        let ids_dev = self.u32s(ids, &mut keep);
        let groups = table.cols / 32;
        self.gpu.launch(
            &format!("embed_{}", table.ty.stem()),
            (groups.div_ceil(64) as u32, ids.len() as u32, 1),
            64,
            &KArgs::new()
                .ptr(table.buf.ptr)
                .ptr(ids_dev)
                .ptr(out.ptr())
                .i32(table.rows)
                .i32(table.cols)
                .f32(scale),
        );
    }

    fn rms_norm(&self, x: &CudaAct, w: &CudaVector, eps: f32, out: &mut CudaAct) {
        self.gpu.bind();
        self.out(out, x.rows, x.cols);
        let n = w.len;
        assert_eq!(
            x.len() % n,
            0,
            "rms_norm: width {n} does not divide the activation"
        );
        let rows = x.len() / n;
        // A whole-row norm feeding decode products also writes its int8 form,
        // spread over blocks of 256 outputs (kernels/ops.cu, rms_norm_q8).
        let q8 = n == x.cols && x.rows <= MAX_DECODE_ROWS && n.is_multiple_of(32);
        if q8 {
            let (xq, xd) = (self.gpu.alloc(x.len()), self.gpu.alloc(x.len() / 32 * 8));
            self.gpu.launch(
                "rms_norm_q8",
                (n.div_ceil(256) as u32, rows as u32, 1),
                256,
                &KArgs::new()
                    .ptr(x.ptr())
                    .ptr(w.buf.ptr)
                    .ptr(out.ptr())
                    .i32(n)
                    .f32(eps)
                    .ptr(xq.ptr)
                    .ptr(xd.ptr),
            );
            out.q8 = Some((xq, xd));
            return;
        }
        self.rms_norm_rows(x.ptr(), w.buf.ptr, out.ptr(), rows, n, eps);
    }

    fn linear(&self, x: &CudaAct, w: &CudaWeight, bias: Option<&CudaVector>, out: &mut CudaAct) {
        self.linear_many(x, &[(w, bias)], &mut [out]);
    }

    fn linear_many(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>)],
        outs: &mut [&mut CudaAct],
    ) {
        self.gpu.bind();
        self.shape_products(x, ws, outs);
        self.project(x, ws, outs, false);
    }

    fn linear_add(&self, x: &CudaAct, w: &CudaWeight, acc: &mut CudaAct) {
        self.gpu.bind();
        assert_eq!(
            x.cols, w.cols,
            "linear: input width {} vs weight width {}",
            x.cols, w.cols
        );
        assert_eq!(
            (acc.rows, acc.cols),
            (x.rows, w.rows),
            "linear_add: accumulator shape"
        );
        acc.q8 = None;
        self.project(x, &[(w, None)], &mut [acc], true);
    }

    fn linear_add_norm(
        &self,
        x: &CudaAct,
        w: &CudaWeight,
        acc: &mut CudaAct,
        g: &CudaVector,
        eps: f32,
        out: &mut CudaAct,
    ) {
        if self.folds_norm(x, w, acc, g) {
            self.residual_product_with_norm(x, w, acc, g, eps, out);
        } else {
            self.linear_add(x, w, acc);
            self.rms_norm(acc, g, eps, out);
        }
    }

    fn gated_ffn(
        &self,
        x: &CudaAct,
        gate: &CudaWeight,
        up: &CudaWeight,
        act: Activation,
        out: &mut CudaAct,
    ) {
        self.gpu.bind();
        let fused = x.rows <= MAX_DECODE_ROWS
            && gate.ty == up.ty
            && (gate.rows, gate.cols) == (up.rows, up.cols);
        if !fused {
            let mut u = self.act(0, 0);
            self.linear_many(x, &[(gate, None), (up, None)], &mut [&mut *out, &mut u]);
            self.gated_act(out, &u, act);
            return;
        }
        assert_eq!(
            x.cols, gate.cols,
            "gated_ffn: input width {} vs weight width {}",
            x.cols, gate.cols
        );
        self.out(out, x.rows, gate.rows);
        self.gated_matvec(x, gate, up, act, out);
    }

    fn qkv_rope_store(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>); 3],
        [q, k, v]: [&mut CudaAct; 3],
        kv: &mut CudaKv,
        at: &KvWrite<'_>,
    ) {
        // Decode rows with full-width rotation of pairs (i, i + head_dim/2)
        // (Qwen2; Gemma 3 normalises q and k first and takes the other path):
        // the products rotate and store (kernels/matvec.cu,
        // rope_rows); otherwise products, then rope_store. Adjacent pairs
        // (Llama) are written in the kernel but not yet checked on a GPU.
        let fused = self.fused_rope
            && at.rope.style == RopeStyle::Halves
            && x.rows > 0
            && x.rows <= MAX_DECODE_ROWS
            && at.rope.dims == at.head_dim
            && at.head_dim.is_multiple_of(4)
            && ws[0].0.rows.is_multiple_of(at.head_dim)
            && ws[1].0.rows == kv.kv_dim
            && ws[2].0.rows == kv.kv_dim;
        if !fused {
            qkv_then_rope_store(self, x, ws, [q, k, v], kv, at);
            return;
        }
        self.gpu.bind();
        assert_eq!(at.slots.len(), x.rows);
        assert_eq!(at.positions.len(), x.rows);
        kv.check_slots(at.slots);
        let mut outs = [q, k, v];
        self.shape_products(x, ws, &mut outs);
        let mut keep = Vec::new();
        let rope = products::RopeLaunch {
            positions: self.u32s(at.positions, &mut keep),
            slots: self.u32s(at.slots, &mut keep),
            kc: kv.k[at.layer].ptr,
            vc: kv.v[at.layer].ptr,
            step: at.rope.angle_step(),
            freq_scale: at.rope.freq_scale,
            head_dim: at.head_dim,
            halves: at.rope.style == RopeStyle::Halves,
        };
        self.matvec(x, ws, &mut outs, false, Some(&rope));
    }

    fn rope_store(
        &self,
        q: &mut CudaAct,
        k: &mut CudaAct,
        v: &CudaAct,
        kv: &mut CudaKv,
        at: &KvWrite<'_>,
    ) {
        let KvWrite {
            layer,
            head_dim,
            positions,
            slots,
            rope,
        } = *at;
        self.gpu.bind();
        q.q8 = None;
        k.q8 = None;
        if q.rows == 0 {
            return;
        }
        assert_eq!(k.cols, kv.kv_dim);
        assert_eq!(slots.len(), q.rows);
        kv.check_slots(slots);
        let mut keep = Vec::new();
        let pos = self.u32s(positions, &mut keep);
        let sl = self.u32s(slots, &mut keep);
        let heads = (q.cols + k.cols) / head_dim;
        let ptrs = [
            q.ptr(),
            k.ptr(),
            v.ptr(),
            pos,
            sl,
            kv.k[layer].ptr,
            kv.v[layer].ptr,
        ];
        self.launch_rope_store(
            q.rows,
            heads,
            ptrs,
            [q.cols, kv.kv_dim, head_dim],
            Some(rope),
        );
    }

    fn rope(&self, x: &mut CudaAct, head_dim: usize, positions: &[u32], rope: &Rope) {
        self.gpu.bind();
        x.q8 = None;
        if x.rows == 0 {
            return;
        }
        let mut keep = Vec::new();
        let pos = self.u32s(positions, &mut keep);
        // Only "q" heads: nothing is stored (the kernel reads a slot per row
        // but uses it only for KV heads, so the positions stand in).
        let ptrs = [x.ptr(), 0, 0, pos, pos, 0, 0];
        self.launch_rope_store(
            x.rows,
            x.cols / head_dim,
            ptrs,
            [x.cols, 0, head_dim],
            Some(rope),
        );
    }

    fn kv_store(&self, kv: &mut CudaKv, layer: usize, k: &CudaAct, v: &CudaAct, slots: &[u32]) {
        self.gpu.bind();
        if slots.is_empty() {
            return;
        }
        assert_eq!(k.cols, kv.kv_dim);
        kv.check_slots(slots);
        let mut keep = Vec::new();
        let s = self.u32s(slots, &mut keep);
        // One "KV head" as wide as the row and no rotation: rope_store only
        // stores k and v (it reads a position per row but uses it only to
        // rotate, so the slots stand in).
        let ptrs = [0, k.ptr(), v.ptr(), s, s, kv.k[layer].ptr, kv.v[layer].ptr];
        self.launch_rope_store(slots.len(), 1, ptrs, [0, kv.kv_dim, kv.kv_dim], None);
    }

    fn attention(
        &self,
        q: &CudaAct,
        kv: &CudaKv,
        layer: usize,
        seqs: &[AttnSeq<'_>],
        p: &AttnParams,
        out: &mut CudaAct,
    ) {
        self.gpu.bind();
        self.out(out, q.rows, p.n_heads * p.head_dim);
        if q.rows == 0 {
            return;
        }
        assert!(
            p.head_dim <= 256 && p.head_dim.is_multiple_of(8),
            "head_dim {}",
            p.head_dim
        );
        let mut keep = Vec::new();
        let found = self.state().attention_meta(seqs);
        let meta = match found {
            Some(m) => m,
            None => {
                self.assert_not_capturing("attention metadata");
                step::upload_attention_meta(&self.gpu, seqs, &mut keep)
            }
        };
        // Prompts take the GEMM path; a batch of decoding sequences (each a
        // row or a few) stays on the split kernel, one launch for all.
        let prompt = seqs.iter().any(|s| s.rows.len() > MAX_DECODE_ROWS);
        if q.rows > MAX_DECODE_ROWS && prompt && prefill_attention::applies(seqs) {
            let io = prefill_attention::Io {
                q: q.ptr(),
                kc: kv.k[layer].ptr,
                vc: kv.v[layer].ptr,
                out: out.ptr(),
                kv_dim: kv.kv_dim,
            };
            prefill_attention::run(&self.gpu, &io, q.rows, seqs, &meta, p);
            return;
        }
        self.split_attention(q, kv, layer, p, &meta, out);
    }

    fn gated_act(&self, gate: &mut CudaAct, up: &CudaAct, act: Activation) {
        self.gpu.bind();
        gate.q8 = None;
        let n = gate.len();
        assert_eq!(n, up.len());
        self.elementwise(
            "gated_act",
            n,
            KArgs::new()
                .ptr(gate.ptr())
                .ptr(up.ptr())
                .u64(n)
                .i32(products::act_code(act)),
        );
    }

    fn add(&self, x: &mut CudaAct, y: &CudaAct) {
        self.gpu.bind();
        x.q8 = None;
        let n = x.len();
        assert_eq!(n, y.len());
        self.elementwise("add", n, KArgs::new().ptr(x.ptr()).ptr(y.ptr()).u64(n));
    }

    fn gather_rows(&self, x: &CudaAct, rows: &[usize], out: &mut CudaAct) {
        self.gpu.bind();
        self.out(out, rows.len(), x.cols);
        if rows.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        let found = self.state().logit_rows_copy(rows);
        let dev = match found {
            Some(p) => p,
            None => {
                let r32: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                self.u32s(&r32, &mut keep)
            }
        };
        self.gpu.launch(
            "gather_rows",
            (rows.len() as u32, 1, 1),
            256,
            &KArgs::new()
                .ptr(x.ptr())
                .ptr(dev)
                .ptr(out.ptr())
                .i32(x.cols),
        );
    }

    fn begin_forward(&self, step: &StepLayout<'_>, kv: &CudaKv) -> Option<Logits> {
        self.gpu.bind();
        let freed = self.kv_spares.lock().expect("KV spares lock").take_freed();
        let mut state = self.state();
        state.forget_kv(&freed);
        state.begin(&self.gpu, step, kv.id)
    }

    fn end_forward(&self) {
        self.state().end(&self.gpu);
    }

    fn wait_idle(&self) {
        self.gpu.sync();
    }

    /// Steps are no longer launched ahead either, until the engine allows it
    /// again ([`Backend::allow_lookahead`]; a draft never is): after a
    /// plain step, the host's next pass may be a round of k + 1 rows, and
    /// the step launched ahead is then a whole step wasted.
    ///
    /// The kernels for several rows are loaded now, at start-up, rather
    /// than inside the first verify pass, where the time counts against
    /// the request's generation speed.
    fn prepare_for_speculation(&self) {
        self.state().allow_lookahead(false);
        if let Err(e) = self.gpu.ready_all() {
            tracing::warn!("loading the kernels for several rows: {e}");
        }
    }

    fn allow_lookahead(&self, allowed: bool) {
        self.state().allow_lookahead(allowed);
    }
}
