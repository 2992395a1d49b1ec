//! The fused AVX2 kernel for Q8_0 weights: each block is unpacked in
//! registers and multiplied with up to [`MAX_ROWS`] activation rows before
//! the next block is read. Q8_0's signed bytes take `maddubs` through the
//! `abs`/`sign` pair and cannot be summed in 16 bits, so it stays out of the
//! GEMM (`gemm_avx2`); in the models we run it holds only embeddings. The
//! other types' kernels live in `gemm_avx2` and `rows_avx2`, which also use
//! the helpers here (scales, prefetch).
//!
//! Each token's result is computed by the same instruction sequence whatever
//! the number of rows beside it, so batching never changes a logit (tested
//! bit-for-bit). Checked against the decoded-form path within float rounding.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::QuantizedActs;
use super::GgmlType;

/// Activation rows one call of a kernel multiplies at once.
pub const MAX_ROWS: usize = 4;

/// Whether `ty` has a fused kernel (the others use the decoded-row path).
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q8_0)
}

/// `out[t * n_rows + r] = row_r · xs[t]` for the `n_rows` weight rows laid
/// end to end in `rows`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `supports(ty)`; every `xs[t]` was
/// quantized (in `ActFormat::for_weight(ty)`) from as many values as a row
/// encodes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_rows(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    xs: &[&QuantizedActs],
    out: &mut [f32],
) {
    assert_eq!(out.len(), xs.len() * n_rows);
    assert!(n_rows > 0 && rows.len().is_multiple_of(n_rows));
    let row_bytes = rows.len() / n_rows;
    let n = row_bytes / ty.block_bytes() * ty.block_size();
    assert_eq!(row_bytes, ty.row_bytes(n), "partial block");
    for x in xs {
        assert!(x.q.len() == n && x.d.len() == n / 16 && x.sum.len() == n / 16);
        assert!(x.dsum.len() == n / 16);
    }
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (g, xs) in xs.chunks(MAX_ROWS).enumerate() {
            let mut put = |vals: &[f32]| {
                for (k, v) in vals.iter().enumerate() {
                    out[(g * MAX_ROWS + k) * n_rows + r] = *v;
                }
            };
            match xs.len() {
                1 => put(&dispatch::<1>(ty, row, xs, g == 0)),
                2 => put(&dispatch::<2>(ty, row, xs, g == 0)),
                3 => put(&dispatch::<3>(ty, row, xs, g == 0)),
                _ => put(&dispatch::<4>(ty, row, xs, g == 0)),
            }
        }
    }
}

#[inline(always)]
unsafe fn dispatch<const N: usize>(
    ty: GgmlType,
    row: &[u8],
    xs: &[&QuantizedActs],
    pf: bool,
) -> [f32; N] {
    let xs: [&QuantizedActs; N] = std::array::from_fn(|t| xs[t]);
    match ty {
        GgmlType::Q8_0 => legacy::<N, Q80>(row, &xs, pf),
        _ => unreachable!("no fused kernel for {ty:?}"),
    }
}

/// The f16 at `p` as f32.
#[inline(always)]
unsafe fn f16(p: *const u8) -> f32 {
    let mut bits = (p as *const u16).read_unaligned() as u32;
    // Keep the value in a general register: loaded straight into a vector
    // register, LLVM emits `vpinsrw` into a live one, which chained every
    // block to the previous block's accumulator (3× slower on the 32-element
    // formats).
    std::arch::asm!("/* {0:e} */", inout(reg) bits, options(pure, nomem, nostack, preserves_flags));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The two f16 values at `p` and `p + 2`, as f32 (one 32-bit load, which
/// has no such false dependency).
#[inline(always)]
pub(super) unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// How far ahead of the block being multiplied its successors are fetched.
const PREFETCH_AHEAD: usize = 2048;

/// Ask for the cache lines of the block `PREFETCH_AHEAD` bytes on, when `pf`
/// (the first pass over a row: later token groups find it in L1). Single-token
/// decode streams weights from DRAM and is 13% faster with it (Qwen-1.5B);
/// a hint only, so running past the end of the weights is harmless.
#[inline(always)]
pub(super) unsafe fn prefetch(b: *const u8, bytes: usize, pf: bool) {
    if pf {
        for off in (0..bytes).step_by(64) {
            _mm_prefetch(
                b.wrapping_add(PREFETCH_AHEAD + off) as *const i8,
                _MM_HINT_T0,
            );
        }
    }
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load_i8(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    hsum_ps128(s4)
}

#[inline(always)]
unsafe fn hsum_ps128(s4: __m128) -> f32 {
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

/// A 32-element block format, unpacked to 32 integers in element order.
trait LegacyBlock {
    const BYTES: usize;
    /// Values are signed (w = d·q); otherwise unsigned with a min (w = d·q + m).
    const SIGNED: bool;
    unsafe fn unpack(b: *const u8) -> __m256i;
}

struct Q80;

impl LegacyBlock for Q80 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(b: *const u8) -> __m256i {
        load(b.add(2))
    }
}

/// Legacy weights against Q8_0/Q8_1 activations: per block, an integer dot
/// (signed values through the `abs`/`sign` pair `maddubs` needs) scaled by
/// both f16 scales; the min times the activations' block sum.
#[inline(always)]
unsafe fn legacy<const N: usize, B: LegacyBlock>(
    row: &[u8],
    xs: &[&QuantizedActs; N],
    pf: bool,
) -> [f32; N] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [0f32; N];
    for i in 0..row.len() / B::BYTES {
        let b = row.as_ptr().add(i * B::BYTES);
        // One hint per cache line, at the block that starts in it.
        prefetch(b, 1, pf && (i * B::BYTES) % 64 < B::BYTES);
        let (d, m) = if B::SIGNED {
            (f16(b), 0.0)
        } else {
            f16_pair(b)
        };
        let w = B::unpack(b);
        let wu = if B::SIGNED { _mm256_abs_epi8(w) } else { w };
        for t in 0..N {
            let a = load_i8(xs[t].q.as_ptr().add(32 * i));
            let a = if B::SIGNED { _mm256_sign_epi8(a, w) } else { a };
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, a), ones);
            let scale = _mm256_set1_ps(d * *xs[t].d.get_unchecked(2 * i));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc[t]);
            if !B::SIGNED {
                acc_min[t] += m * *xs[t].dsum.get_unchecked(2 * i);
            }
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) + acc_min[t])
}

/// Q4_K/Q5_K's twelve scale bytes as sixteen bytes: eight 6-bit scales, then
/// eight 6-bit mins. In vector registers: the scalar version (three loads, a
/// dozen shifts and masks, four inserts) was an eighth of the kernel.
///
/// # Safety
/// `p` has 16 readable bytes (the scales are followed by the values).
#[inline(always)]
pub(super) unsafe fn k4_scales(p: *const u8) -> __m128i {
    // Words s0, s1, s2; the result's words are
    // [s0 & 3f, (s2 & 0f) | (s0 >> 6) << 4, s1 & 3f, (s2 >> 4 & 0f) | (s1 >> 6) << 4]
    // per byte.
    let v = _mm_loadu_si128(p as *const __m128i);
    let a = _mm_shuffle_epi32(v, 0b10_01_10_00); // s0 s2 s1 s2
    let b = _mm_shuffle_epi32(v, 0b01_01_00_00); // s0 s0 s1 s1
    let low = _mm_and_si128(
        _mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    let high = _mm_and_si128(
        _mm_srli_epi32(b, 2),
        _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030),
    );
    _mm_or_si128(low, high)
}

/// Shuffle mask that repeats 16-bit lane `j` of each 128-bit half.
#[inline(always)]
pub(super) unsafe fn lane16(j: usize) -> __m256i {
    _mm256_set1_epi16((((2 * j + 1) << 8) | (2 * j)) as i16)
}
