//! Products of weights and activations: matrix-vector kernels for decode
//! (up to MAX_DECODE_ROWS input rows, weights unpacked in registers, the
//! input quantized to int8 once), and for more rows f16 tiles through cuBLAS.

use cudarc::cublas::sys as blas;

use super::gpu::{DevBuf, KArgs};
use super::weights::DevType;
use super::{CudaAct, CudaBackend, CudaVector, CudaWeight, MAX_DECODE_ROWS};
use crate::backend::Activation;

/// The activation's code in the kernels (`act_fn`, `gated_act`).
pub fn act_code(act: Activation) -> usize {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
    }
}

/// Pairs of formats with a two-format product kernel (`mv_<a>_<b>_tN`):
/// Q/K in the first and V in the second, as Q4_K_M mixtures give the V of
/// some layers more bits (Q6_K; Q8_0 where rows are not a multiple of 256,
/// beside Q5_0). One launch instead of two for those layers.
pub const MIXED_QKV: [(DevType, DevType); 2] =
    [(DevType::Q4K, DevType::Q6K), (DevType::Q5_0, DevType::Q8_0)];

/// The RoPE and cache-store arguments of a Q/K/V launch (struct RopeArgs in
/// kernels/matvec.cu: four pointers, two floats, three ints).
pub(super) struct RopeLaunch {
    pub positions: u64,
    pub slots: u64,
    pub kc: u64,
    pub vc: u64,
    pub step: f32,
    pub freq_scale: f32,
    pub head_dim: usize,
    pub halves: bool,
}

impl RopeLaunch {
    fn words(&self, roles: u64) -> [u64; 7] {
        let pair = |a: u32, b: u32| a as u64 | (b as u64) << 32;
        [
            self.positions,
            self.slots,
            self.kc,
            self.vc,
            pair(self.step.to_bits(), self.freq_scale.to_bits()),
            pair(self.head_dim as u32, self.halves as u32),
            roles,
        ]
    }
}

impl CudaBackend {
    /// outs[i] = x · ws[i]ᵀ (+ bias), or `accum`: outs[i] += x · ws[i]ᵀ; the
    /// outputs are already shaped.
    pub(super) fn project(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>)],
        outs: &mut [&mut CudaAct],
        accum: bool,
    ) {
        if x.rows == 0 {
            return;
        }
        if x.rows <= MAX_DECODE_ROWS {
            self.matvec(x, ws, outs, accum, None);
        } else {
            self.gemm(x, ws, outs, if accum { 1.0 } else { 0.0 });
        }
    }

    /// out = act(x · gateᵀ) * (x · upᵀ) in one kernel (decode rows, gate and
    /// up of one type and shape); `out` is already shaped.
    pub(super) fn gated_matvec(
        &self,
        x: &CudaAct,
        gate: &CudaWeight,
        up: &CudaWeight,
        act: Activation,
        out: &mut CudaAct,
    ) {
        if x.rows == 0 {
            return;
        }
        let mut keep = Vec::new();
        let (xq, xd) = self.q8_input(x, gate.ty.wants_q8_input(), &mut keep);
        let xf = self.float_input(x, !gate.ty.wants_q8_input());
        let norm = Self::norm_words(x, gate.ty);
        let kernel = if norm.is_some() { "mvgn" } else { "mvg" };
        let mut args = KArgs::new()
            .ptr(gate.buf.ptr)
            .ptr(up.buf.ptr)
            .ptr(out.ptr())
            .i32(gate.rows)
            .i32(gate.cols)
            .ptr(xq)
            .ptr(xd)
            .ptr(xf)
            .i32(act_code(act));
        if let Some(n) = norm {
            args = args.words(n);
        }
        self.gpu.launch(
            &format!("{kernel}_{}_t{}", gate.ty.stem(), x.rows),
            (gate.rows.div_ceil(4) as u32, 1, 1),
            128,
            &args,
        );
    }

    /// The int8 form of x for the decode products: the one its producer
    /// wrote, else quantized now (into `keep`). (0, 0) when no weight wants it.
    pub(super) fn q8_input(&self, x: &CudaAct, wanted: bool, keep: &mut Vec<DevBuf>) -> (u64, u64) {
        if !wanted {
            return (0, 0);
        }
        if let Some((q, d)) = &x.q8 {
            return (q.ptr, d.ptr);
        }
        let nb = x.len() / 32;
        let xq = self.gpu.alloc(x.len());
        let xd = self.gpu.alloc(nb * 8);
        self.gpu.launch(
            "quantize_q8",
            (nb.div_ceil(4) as u32, 1, 1),
            128,
            &KArgs::new().ptr(x.ptr()).ptr(xq.ptr).ptr(xd.ptr).i32(nb),
        );
        let p = (xq.ptr, xd.ptr);
        keep.push(xq);
        keep.push(xd);
        p
    }

    /// x · wᵀ (+ bias) for up to MAX_DECODE_ROWS rows: matrix-vector kernels,
    /// one launch for up to three weights of one type. `accum` adds into the
    /// outputs. With `rope`, ws are q, k, v: rotated and stored into the KV
    /// cache by the kernels' epilogue.
    pub(super) fn matvec(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>)],
        outs: &mut [&mut CudaAct],
        accum: bool,
        rope: Option<&RopeLaunch>,
    ) {
        let mut keep = Vec::new();
        let wants = ws.iter().any(|(w, _)| w.ty.wants_q8_input());
        let (xq, xd) = self.q8_input(x, wants, &mut keep);
        let xf = self.float_input(x, ws.iter().any(|(w, _)| !w.ty.wants_q8_input()));
        let mut jobs: Vec<(usize, DevType)> =
            ws.iter().enumerate().map(|(i, (w, _))| (i, w.ty)).collect();
        // Up to three weights of two formats with a two-format kernel: one
        // launch, those of the pair's first format first.
        let mixed = (jobs.len() <= 3)
            .then(|| {
                MIXED_QKV.into_iter().find(|&(a, b)| {
                    jobs.iter().all(|j| j.1 == a || j.1 == b)
                        && jobs.iter().any(|j| j.1 == a)
                        && jobs.iter().any(|j| j.1 == b)
                })
            })
            .flatten();
        if let Some((a, _)) = mixed {
            jobs.sort_by_key(|j| j.1 != a);
        }
        while !jobs.is_empty() {
            let ty = jobs[0].1;
            let group: Vec<usize> = match mixed {
                Some(_) => jobs.iter().map(|j| j.0).collect(),
                None => jobs
                    .iter()
                    .filter(|j| j.1 == ty)
                    .map(|j| j.0)
                    .take(3)
                    .collect(),
            };
            jobs.retain(|j| !group.contains(&j.0));
            // struct Mats { w[3], bias[3], out[3], int rows[3] } (kernels/matvec.cu)
            let mut words = vec![0u64; 11];
            let mut blocks = 0;
            let mut roles = 0u64;
            for (slot, &i) in group.iter().enumerate() {
                if rope.is_some() {
                    // q, k, v: roles 1, 2, 3 (kernels/matvec.cu, RopeArgs)
                    roles |= (i as u64 + 1) << (2 * slot);
                }
                let (w, bias) = ws[i];
                words[slot] = w.buf.ptr;
                words[3 + slot] = bias.map_or(0, |b| b.buf.ptr);
                words[6 + slot] = outs[i].ptr();
                let rows = w.rows as u64;
                match slot {
                    0 => words[9] |= rows,
                    1 => words[9] |= rows << 32,
                    _ => words[10] = rows,
                }
                blocks += w.rows.div_ceil(4);
            }
            let mut args = KArgs::new()
                .words(words)
                .i32(group.len())
                .i32(x.cols)
                .ptr(xq)
                .ptr(xd)
                .ptr(xf)
                .i32(accum as usize)
                .words(rope.map_or([0; 7], |r| r.words(roles)));
            let norm = Self::norm_words(x, ty);
            let kernel = if norm.is_some() { "mvn" } else { "mv" };
            if let Some(n) = norm {
                args = args.words(n);
            }
            let name = match mixed {
                Some((a, b)) => {
                    let n_a = group.iter().filter(|&&i| ws[i].0.ty == a).count();
                    args = args.i32(n_a);
                    format!("{kernel}_{}_{}_t{}", a.stem(), b.stem(), x.rows)
                }
                None => format!("{kernel}_{}_t{}", ty.stem(), x.rows),
            };
            self.gpu.launch(&name, (blocks as u32, 1, 1), 128, &args);
        }
    }

    /// x · wᵀ for many rows: dequantize each weight to f16 and use cuBLAS.
    fn gemm(
        &self,
        x: &CudaAct,
        ws: &[(&CudaWeight, Option<&CudaVector>)],
        outs: &mut [&mut CudaAct],
        beta: f32,
    ) {
        let n = x.len();
        let x16 = self.gpu.alloc(n * 2);
        self.elementwise(
            "f32_to_f16",
            n,
            KArgs::new().ptr(x.ptr()).ptr(x16.ptr).u64(n),
        );
        for ((w, bias), out) in ws.iter().zip(outs.iter_mut()) {
            let w16 = self.gpu.alloc(w.rows * w.cols * 2);
            let groups = w.rows * w.cols / 8;
            self.gpu.launch(
                &format!("dequant_{}", w.ty.stem()),
                (groups.div_ceil(256) as u32, 1, 1),
                256,
                &KArgs::new()
                    .ptr(w.buf.ptr)
                    .ptr(w16.ptr)
                    .i32(w.rows)
                    .i32(w.cols),
            );
            let alpha = 1.0f32;
            // Row-major out[n, rows] = x[n, cols] · W[rows, cols]ᵀ is, in
            // cuBLAS's column-major terms, out' = W'ᵀ · x' with W' = [cols, rows].
            // SAFETY: all pointers are live device buffers of the sizes given.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *self.gpu.blas.handle(),
                    blas::cublasOperation_t::CUBLAS_OP_T,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    w.rows as i32,
                    x.rows as i32,
                    w.cols as i32,
                    &alpha as *const f32 as *const _,
                    w16.ptr as *const _,
                    blas::cudaDataType_t::CUDA_R_16F,
                    w.cols as i32,
                    x16.ptr as *const _,
                    blas::cudaDataType_t::CUDA_R_16F,
                    w.cols as i32,
                    &beta as *const f32 as *const _,
                    out.ptr() as *mut _,
                    blas::cudaDataType_t::CUDA_R_32F,
                    w.rows as i32,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
                .expect("cuBLAS GEMM");
            }
            if let Some(b) = bias {
                let total = x.rows * w.rows;
                self.elementwise(
                    "add_bias",
                    total,
                    KArgs::new()
                        .ptr(out.ptr())
                        .ptr(b.buf.ptr)
                        .i32(w.rows)
                        .u64(total),
                );
            }
        }
    }
}
