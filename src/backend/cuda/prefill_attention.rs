//! Attention for prompt processing: per sequence, its keys and values are
//! gathered from the paged f16 cache into contiguous rows, then S = Q·Kᵀ and
//! O = P·V run as batched tensor-core GEMMs (one batch per KV head over its
//! group of query heads), with the mask and softmax in between. The split
//! kernel scores one (row, head) per block on CUDA cores; for a 512-token
//! prompt of a 7B model this took 15 of the pass's 38 ms.

use cudarc::cublas::sys as blas;

use super::gpu::{Gpu, KArgs};
use super::step::AttnMeta;
use crate::backend::{AttnParams, AttnSeq};

/// Longest context the GEMM path takes (S is heads × rows × context f32).
pub const MAX_CONTEXT: usize = 8192;

/// Whether every sequence's rows are its last positions in order (a prompt
/// or its continuation), so keys 0..t are positions 0..t.
pub fn applies(seqs: &[AttnSeq<'_>]) -> bool {
    seqs.iter().all(|s| {
        let t = s.slots.len();
        let n = s.rows.len();
        t <= MAX_CONTEXT
            && n <= t
            && s.positions
                .iter()
                .enumerate()
                .all(|(i, &p)| p as usize == t - n + i)
    })
}

/// Device pointers of one call: q [rows, heads·hd] f32, the layer's caches,
/// out [rows, heads·hd] f32.
pub struct Io {
    pub q: u64,
    pub kc: u64,
    pub vc: u64,
    pub out: u64,
    pub kv_dim: usize,
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    gpu: &Gpu,
    trans_a: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: u64,
    lda: usize,
    stride_a: usize,
    b: u64,
    ldb: usize,
    stride_b: usize,
    c: u64,
    c_f16: bool,
    ldc: usize,
    stride_c: usize,
    batch: usize,
) {
    let beta = 0.0f32;
    let op = |t| {
        if t {
            blas::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let f16 = blas::cudaDataType_t::CUDA_R_16F;
    cudarc::cublas::result::gemm_strided_batched_ex(
        *gpu.blas.handle(),
        op(trans_a),
        op(false),
        m as i32,
        n as i32,
        k as i32,
        &alpha as *const f32 as *const _,
        a as *const _,
        f16,
        lda as i32,
        stride_a as i64,
        b as *const _,
        f16,
        ldb as i32,
        stride_b as i64,
        &beta as *const f32 as *const _,
        c as *mut _,
        if c_f16 {
            f16
        } else {
            blas::cudaDataType_t::CUDA_R_32F
        },
        ldc as i32,
        stride_c as i64,
        batch as i32,
        blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
    )
    .expect("cuBLAS batched GEMM");
}

pub fn run(gpu: &Gpu, io: &Io, rows: usize, seqs: &[AttnSeq<'_>], meta: &AttnMeta, p: &AttnParams) {
    let (h, hd, kvd) = (p.n_heads, p.head_dim, io.kv_dim);
    let group = p.n_heads / p.n_kv_heads;
    let qw = h * hd;
    let q16 = gpu.alloc(rows * qw * 2);
    let n = rows * qw;
    gpu.launch(
        "f32_to_f16",
        (n.div_ceil(256) as u32, 1, 1),
        256,
        &KArgs::new().ptr(io.q).ptr(q16.ptr).u64(n),
    );
    let mut slot_off = 0usize;
    for s in seqs {
        let (t, nq, r0) = (s.slots.len(), s.rows.len(), s.rows.start);
        let sl = meta.slots + 4 * slot_off as u64;
        slot_off += t;
        if nq == 0 {
            continue;
        }
        let kb = gpu.alloc(t * kvd * 2);
        let vb = gpu.alloc(t * kvd * 2);
        gpu.launch(
            "gather_kv",
            (t as u32, 1, 1),
            128,
            &KArgs::new()
                .ptr(io.kc)
                .ptr(io.vc)
                .ptr(sl)
                .ptr(kb.ptr)
                .ptr(vb.ptr)
                .i32(kvd),
        );
        let sbuf = gpu.alloc(h * nq * t * 4);
        let pbuf = gpu.alloc(h * nq * t * 2);
        for kvh in 0..p.n_kv_heads {
            let h0 = kvh * group;
            // Column-major: Sᵀ[t, nq] = K[t, hd] · Qᵀ[hd, nq] for each head of the group.
            // SAFETY: all pointers are live device buffers of the sizes used.
            unsafe {
                gemm(
                    gpu,
                    true,
                    t,
                    nq,
                    hd,
                    p.scale,
                    kb.ptr + 2 * (kvh * hd) as u64,
                    kvd,
                    0,
                    q16.ptr + 2 * (r0 * qw + h0 * hd) as u64,
                    qw,
                    hd,
                    sbuf.ptr + 4 * (h0 * nq * t) as u64,
                    false,
                    t,
                    nq * t,
                    group,
                );
            }
        }
        gpu.launch(
            "masked_softmax",
            (nq as u32, h as u32, 1),
            256,
            &KArgs::new()
                .ptr(sbuf.ptr)
                .ptr(pbuf.ptr)
                .i32(nq)
                .i32(t)
                .i32(t - nq)
                .i32(p.window.unwrap_or(0)),
        );
        for kvh in 0..p.n_kv_heads {
            let h0 = kvh * group;
            // Column-major: Oᵀ[hd, nq] = Vᵀ[hd, t] · Pᵀ[t, nq].
            // SAFETY: as above; out rows r0.. of the query heads of this group.
            unsafe {
                gemm(
                    gpu,
                    false,
                    hd,
                    nq,
                    t,
                    1.0,
                    vb.ptr + 2 * (kvh * hd) as u64,
                    kvd,
                    0,
                    pbuf.ptr + 2 * (h0 * nq * t) as u64,
                    t,
                    nq * t,
                    io.out + 4 * (r0 * qw + h0 * hd) as u64,
                    false,
                    qw,
                    hd,
                    group,
                );
            }
        }
    }
}
