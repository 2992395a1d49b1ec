//! Products for one to four tokens, for the types the GEMM covers, computed
//! with the GEMM's arithmetic so that a token's result is the same bits
//! whichever kernel computes it: per block, one exact integer dot (and one
//! exact integer offset or min term), then one float step in the same order
//! (`acc = fma(d·dx, x, acc)`, then the min's). The GEMM lays tokens in
//! lanes; here eight weight rows share the lanes. Phase one streams the
//! eight rows one after another (as the weights lie in memory), each row's
//! values unpacked once for all the tokens, and keeps each (row, block)
//! integer sum in scratch as a few lanes of partial sums; phase two folds
//! the eight rows' partial sums of a block into one vector (the k-quants'
//! min terms are computed there too, eight rows a `madd`) and runs the
//! float step once per block for all eight (horizontal sums per row and
//! block in phase one had cost 10–30%: kernel note #91).
//!
//! This is what lets the backend pick a kernel by batch size alone: a few
//! tokens here, more through the GEMM, with no logit depending on the
//! choice (tested bit for bit).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::QuantizedActs;
use super::fused_avx2::{k4_scales, lane16};
use super::values_avx2::{q6_k_values, Legacy, K4, Q40, Q41, Q4K, Q50, Q51, Q5K};
use super::GgmlType;

/// Rows per kernel call (one per lane).
const ROWS: usize = 8;

/// Most tokens per call.
pub const MAX_TOKENS: usize = 4;

/// Most tokens for which this beats the GEMM on rows of `cols` values
/// (`examples/kernels`, 1536 columns, L2-resident, ns/row): k-quants share
/// their unpacking well (Q4_K 4 tokens 137, the GEMM's one panel ~180); the
/// 32-element formats two blocks a step (Q5_0 4 tokens 244 against 314,
/// Q4_0 231 against 280, Q4_1 240 against 239), one block a step only up to
/// three (Q4_0 4 tokens ~350 against 280).
pub fn tokens_before_gemm(ty: GgmlType, cols: usize) -> usize {
    if ty.block_size() == 256 || (cols / ty.block_size()).is_multiple_of(2) {
        4
    } else {
        3
    }
}

/// `out[t * n_rows + r] = row_r · xs[t]` for the `n_rows` weight rows laid
/// end to end in `rows` and up to [`MAX_TOKENS`] tokens (each row's values
/// unpacked once for all of them).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `gemm_avx2::supports(ty)`; every `xs[t]`
/// was quantized (in `ActFormat::for_weight(ty)`) from as many values as a
/// row encodes.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    xs: &[&QuantizedActs],
    out: &mut [f32],
) {
    assert!(!xs.is_empty() && xs.len() <= MAX_TOKENS);
    assert!(n_rows > 0 && rows.len().is_multiple_of(n_rows) && out.len() == n_rows * xs.len());
    let row_bytes = rows.len() / n_rows;
    assert!(row_bytes.is_multiple_of(ty.block_bytes()), "partial block");
    let blocks = row_bytes / ty.block_bytes();
    let n = blocks * ty.block_size();
    for x in xs {
        assert!(x.q.len() == n && x.d.len() == n / 16 && x.sum.len() == n / 16);
        assert!(x.dsum.len() == n / 16);
    }
    match xs.len() {
        1 => by_rows::<1>(ty, rows, n_rows, row_bytes, blocks, xs, out),
        2 => by_rows::<2>(ty, rows, n_rows, row_bytes, blocks, xs, out),
        3 => by_rows::<3>(ty, rows, n_rows, row_bytes, blocks, xs, out),
        _ => by_rows::<4>(ty, rows, n_rows, row_bytes, blocks, xs, out),
    }
}

#[inline(always)]
unsafe fn by_rows<const N: usize>(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    row_bytes: usize,
    blocks: usize,
    xs: &[&QuantizedActs],
    out: &mut [f32],
) {
    let xs: [&QuantizedActs; N] = std::array::from_fn(|t| xs[t]);
    use GgmlType::*;
    let legacy_type = matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1);
    let qs = if legacy_type && blocks.is_multiple_of(2) {
        paired_acts(&xs)
    } else {
        xs.map(|x| x.q.as_ptr())
    };
    for r0 in (0..n_rows).step_by(ROWS) {
        let live = (n_rows - r0).min(ROWS);
        // Missing rows repeat the last one; their lanes are dropped.
        let ptrs: [*const u8; ROWS] =
            std::array::from_fn(|r| rows.as_ptr().add((r0 + r.min(live - 1)) * row_bytes));
        let v: [__m256; N] = match ty {
            Q4_0 => legacy::<Q40, N>(&ptrs, blocks, &xs, &qs),
            Q4_1 => legacy::<Q41, N>(&ptrs, blocks, &xs, &qs),
            Q5_0 => legacy::<Q50, N>(&ptrs, blocks, &xs, &qs),
            Q5_1 => legacy::<Q51, N>(&ptrs, blocks, &xs, &qs),
            Q4_K => k4::<Q4K, N>(&ptrs, blocks, &xs),
            Q5_K => k4::<Q5K, N>(&ptrs, blocks, &xs),
            Q6_K => q6_k::<N>(&ptrs, blocks, &xs),
            _ => panic!("no row kernel for {ty:?}"),
        };
        // The legacy kernels' lanes are in row order; the k-quants' in
        // `slot` order (see `fold_pairs`).
        for (t, v) in v.iter().enumerate() {
            let mut lanes = [0f32; ROWS];
            _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
            let o = &mut out[t * n_rows + r0..t * n_rows + r0 + live];
            for (r, o) in o.iter_mut().enumerate() {
                *o = lanes[if legacy_type { r } else { slot(r) }];
            }
        }
    }
}

thread_local! {
    static PAIRED: std::cell::RefCell<Vec<i8>> = std::cell::RefCell::default();
}

/// Each token's activations with the halves of every two 32-blocks swapped
/// into the order of [`Legacy::pair_values`]: [first 0..16, second 0..16,
/// first 16..32, second 16..32]. Made once per call, for all its rows.
///
/// # Safety
/// The pointers are valid until the next call on this thread.
#[inline(always)]
unsafe fn paired_acts<const N: usize>(xs: &[&QuantizedActs; N]) -> [*const i8; N] {
    let n = xs[0].q.len();
    let base = PAIRED.with_borrow_mut(|v| {
        v.resize(N * n, 0);
        v.as_mut_ptr()
    });
    for (t, x) in xs.iter().enumerate() {
        let dst = base.add(t * n);
        for i in (0..n).step_by(64) {
            let a0 = _mm256_loadu_si256(x.q.as_ptr().add(i) as *const __m256i);
            let a1 = _mm256_loadu_si256(x.q.as_ptr().add(i + 32) as *const __m256i);
            let lo = _mm256_permute2x128_si256(a0, a1, 0x20);
            let hi = _mm256_permute2x128_si256(a0, a1, 0x31);
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, lo);
            _mm256_storeu_si256(dst.add(i + 32) as *mut __m256i, hi);
        }
    }
    std::array::from_fn(|t| base.add(t * n) as *const i8)
}

/// How far ahead in a row its cache lines are requested. Measured on
/// Qwen2.5-Coder-1.5B decode (tok/s): 1 KiB 26.6, 2 KiB 24.5, 3 KiB 27.6,
/// 4 KiB 27.4–27.6, 8 KiB 27.0; the row kernels of `fused_avx2` use 2 KiB.
const AHEAD: usize = 4096;

/// Ask for the cache lines [`AHEAD`] bytes past `bytes` bytes at `b` (a
/// hint only: past the end of the weights is harmless).
#[inline(always)]
unsafe fn prefetch(b: *const u8, bytes: usize, on: bool) {
    if on {
        for off in (0..bytes).step_by(64) {
            _mm_prefetch(b.wrapping_add(AHEAD + off) as *const i8, _MM_HINT_T0);
        }
    }
}

/// Lane r = the sum of the eight lanes of `p[r]` (exact): the two halves
/// [`fold_block_pair`] sums separately, added.
#[inline(always)]
unsafe fn fold8(p: &[__m256i; ROWS]) -> __m256i {
    let (low, high) = fold_block_pair(p);
    _mm256_add_epi32(low, high)
}

/// The eight lanes of `v` summed to four (exact): what phase one keeps of
/// a k-quant block's integer sum for phase two to fold.
#[inline(always)]
unsafe fn half_sum(v: __m256i) -> __m128i {
    _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
}

/// The lane of row `r` in [`fold_pairs`]'s result.
#[inline(always)]
fn slot(r: usize) -> usize {
    if r.is_multiple_of(2) {
        r / 2
    } else {
        4 + r / 2
    }
}

/// Eight rows' four-lane sums, two rows a vector (`v[p]` = rows 2p | 2p+1),
/// each summed to one lane (exact): rows 0, 2, 4, 6 in the low half and 1,
/// 3, 5, 7 in the high one ([`slot`]), an order the kernels keep to the end
/// rather than pay a lane permute per block.
#[inline(always)]
unsafe fn fold_pairs(v: [__m256i; 4]) -> __m256i {
    let s0 = _mm256_add_epi32(
        _mm256_unpacklo_epi32(v[0], v[1]),
        _mm256_unpackhi_epi32(v[0], v[1]),
    );
    let s1 = _mm256_add_epi32(
        _mm256_unpacklo_epi32(v[2], v[3]),
        _mm256_unpackhi_epi32(v[2], v[3]),
    );
    _mm256_add_epi32(_mm256_unpacklo_epi64(s0, s1), _mm256_unpackhi_epi64(s0, s1))
}

/// Rows 2p and 2p+1 of eight four-lane vectors saved in row order from `at`.
#[inline(always)]
unsafe fn row_pairs(v: &[__m128i], at: usize) -> [__m256i; 4] {
    std::array::from_fn(|p| _mm256_loadu_si256(v.as_ptr().add(at + 2 * p) as *const __m256i))
}

/// The low (`HIGH` = false) or high f16 of each 32-bit lane, as f32.
#[inline(always)]
pub(super) unsafe fn halves<const HIGH: bool>(v: __m256i) -> __m256 {
    // In each 128-bit half, bytes 0,1,4,5,8,9,12,13 (the low f16 of every
    // lane) or 2,3,6,7,10,11,14,15 (the high) to the front; the rest zeroed.
    let shift = if HIGH { 0x0202_0202 } else { 0 };
    let (a, b) = (0x0504_0100 + shift, 0x0d0c_0908 + shift);
    let pick = _mm256_setr_epi32(a, b, -1, -1, a, b, -1, -1);
    let packed = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0b00_00_10_00);
    _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
}

#[inline(always)]
unsafe fn legacy<F: Legacy, const N: usize>(
    rows: &[*const u8; ROWS],
    blocks: usize,
    xs: &[&QuantizedActs; N],
    paired_qs: &[*const i8; N],
) -> [__m256; N] {
    let ones = _mm256_set1_epi16(1);
    let (dots, _, _, heads) = scratch(blocks * N);
    // Rows of an even number of blocks take two blocks a step: one load
    // and one split for both blocks' nibbles, one `madd` and one vector of
    // sums for both (the first block's in the low half), against the
    // activations in the same order (`paired_qs`).
    let paired = blocks.is_multiple_of(2);
    // Phase one: each row streamed on its own (eight rows interleaved ran
    // 1.5× slower from DRAM), its per-block integer sums to scratch.
    for (r, &row) in rows.iter().enumerate() {
        if paired {
            for i in (0..blocks).step_by(2) {
                let b = row.add(i * F::BYTES);
                prefetch(b, 1, (i * F::BYTES) % 64 < 2 * F::BYTES);
                let (lo, hi) = F::pair_values(b);
                for (t, q) in paired_qs.iter().enumerate() {
                    let a_lo = _mm256_loadu_si256(q.add(32 * i) as *const __m256i);
                    let a_hi = _mm256_loadu_si256(q.add(32 * i + 32) as *const __m256i);
                    // Each 16-bit lane: four products of ≤ 31 · 127, exact.
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, a_lo),
                        _mm256_maddubs_epi16(hi, a_hi),
                    );
                    dots[((t * blocks) + i) * ROWS + r] = _mm256_madd_epi16(p, ones);
                }
                heads[i * ROWS + r] = head(b, 0);
                heads[(i + 1) * ROWS + r] = head(b.add(F::BYTES), 0);
            }
        } else {
            for i in 0..blocks {
                let b = row.add(i * F::BYTES);
                // One hint per cache line, at the block that starts in it.
                prefetch(b, 1, (i * F::BYTES) % 64 < F::BYTES);
                let w = F::values(b);
                for (t, x) in xs.iter().enumerate() {
                    let a = _mm256_loadu_si256(x.q.as_ptr().add(32 * i) as *const __m256i);
                    dots[((t * blocks) + i) * ROWS + r] =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), ones);
                }
                heads[i * ROWS + r] = head(b, 0);
            }
        }
    }
    // Phase two: per block, eight rows' sums folded and scaled together.
    let mut acc = [_mm256_setzero_ps(); N];
    for (t, x) in xs.iter().enumerate() {
        let sums =
            |i: usize| &*(dots.as_ptr().add(((t * blocks) + i) * ROWS) as *const [__m256i; ROWS]);
        if paired {
            for i in (0..blocks).step_by(2) {
                let (d0, d1) = fold_block_pair(sums(i));
                acc[t] = legacy_step::<F>(acc[t], x, lanes_of(heads, i), i, d0);
                acc[t] = legacy_step::<F>(acc[t], x, lanes_of(heads, i + 1), i + 1, d1);
            }
        } else {
            for i in 0..blocks {
                acc[t] = legacy_step::<F>(acc[t], x, lanes_of(heads, i), i, fold8(sums(i)));
            }
        }
    }
    acc
}

/// Eight rows' vectors, each lane half summed on its own (exact): (lane r
/// = the sum of `v[r]`'s lanes 0–3, the sum of its lanes 4–7). For the
/// paired legacy kernel, whose vectors hold `[block 2p | block 2p+1]`, the
/// two blocks' sums.
#[inline(always)]
unsafe fn fold_block_pair(v: &[__m256i; ROWS]) -> (__m256i, __m256i) {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // [rows 0–3 of the first block | rows 0–3 of the second], then 4–7.
    let q0 = _mm256_hadd_epi32(h01, h23);
    let q1 = _mm256_hadd_epi32(h45, h67);
    (
        _mm256_permute2x128_si256(q0, q1, 0x20),
        _mm256_permute2x128_si256(q0, q1, 0x31),
    )
}

/// One 32-element block's float step for eight rows (`dot`: their exact
/// integer sums; `head`: their blocks' first four bytes).
#[inline(always)]
unsafe fn legacy_step<F: Legacy>(
    acc: __m256,
    x: &QuantizedActs,
    head: __m256i,
    i: usize,
    mut dot: __m256i,
) -> __m256 {
    let scale = _mm256_mul_ps(
        halves::<false>(head),
        _mm256_set1_ps(*x.d.get_unchecked(2 * i)),
    );
    if F::OFFSET != 0 {
        let sum = *x.sum.get_unchecked(2 * i) as i32 + *x.sum.get_unchecked(2 * i + 1) as i32;
        dot = _mm256_sub_epi32(dot, _mm256_set1_epi32(F::OFFSET * sum));
        _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc)
    } else {
        let acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc);
        let dsum = _mm256_set1_ps(*x.dsum.get_unchecked(2 * i));
        _mm256_fmadd_ps(halves::<true>(head), dsum, acc)
    }
}

/// Phase one's results for eight rows, `[block][row]`: vectors of sums
/// (32-element formats: eight lanes, folded in phase two); k-quant sums
/// halved to four lanes (eight rows' full vectors for a whole wide row
/// crowded L1) and Q4_K/Q5_K's mins as eight i16; each block's head (its f16
/// scales), in [`slot`] order for the k-quants.
#[derive(Default)]
struct Scratch {
    dots: Vec<__m256i>,
    quads: Vec<__m128i>,
    mins: Vec<__m128i>,
    heads: Vec<i32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The scratch sized for `blocks`, as slices built from raw pointers: the
/// kernels use them inline (in a closure they would not be inlined, and the
/// intrinsics, outside the kernels' target features, would become calls).
///
/// # Safety
/// Valid until the next call on this thread; the kernels do not nest.
#[allow(clippy::type_complexity)]
unsafe fn scratch(
    blocks: usize,
) -> (
    &'static mut [__m256i],
    &'static mut [__m128i],
    &'static mut [__m128i],
    &'static mut [i32],
) {
    let n = blocks * ROWS;
    let (d, q, m, h) = SCRATCH.with_borrow_mut(|s| {
        s.dots.resize(n, _mm256_setzero_si256());
        s.quads.resize(n, _mm_setzero_si128());
        s.mins.resize(n, _mm_setzero_si128());
        s.heads.resize(n, 0);
        (
            s.dots.as_mut_ptr(),
            s.quads.as_mut_ptr(),
            s.mins.as_mut_ptr(),
            s.heads.as_mut_ptr(),
        )
    });
    (
        std::slice::from_raw_parts_mut(d, n),
        std::slice::from_raw_parts_mut(q, n),
        std::slice::from_raw_parts_mut(m, n),
        std::slice::from_raw_parts_mut(h, n),
    )
}

/// Eight rows' integers saved in phase one (`[block][row]`), one row per lane.
#[inline(always)]
unsafe fn lanes_of(v: &[i32], i: usize) -> __m256i {
    _mm256_loadu_si256(v.as_ptr().add(i * ROWS) as *const __m256i)
}

/// The u32 at `b + offset`, kept for the float step (the block's f16
/// scales: read again then, eight rows later, they had left L1).
#[inline(always)]
unsafe fn head(b: *const u8, offset: usize) -> i32 {
    (b.add(offset) as *const i32).read_unaligned()
}

#[inline(always)]
unsafe fn k4<F: K4, const N: usize>(
    rows: &[*const u8; ROWS],
    blocks: usize,
    xs: &[&QuantizedActs; N],
) -> [__m256; N] {
    let (_, quads, mins, heads) = scratch(blocks * N);
    for (r, &row) in rows.iter().enumerate() {
        for i in 0..blocks {
            let b = row.add(i * F::BYTES);
            prefetch(b, F::BYTES, true);
            let sm = _mm256_cvtepu8_epi16(k4_scales(b.add(4)));
            let scales = _mm256_permute2x128_si256(sm, sm, 0x00);
            let mut dot = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let (lo, hi) = F::values(b, c);
                let s0 = _mm256_shuffle_epi8(scales, lane16(2 * c));
                let s1 = _mm256_shuffle_epi8(scales, lane16(2 * c + 1));
                for (t, x) in xs.iter().enumerate() {
                    let a = x.q.as_ptr().add(256 * i + 64 * c);
                    let a0 = _mm256_loadu_si256(a as *const __m256i);
                    let a1 = _mm256_loadu_si256(a.add(32) as *const __m256i);
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s1);
                    dot[t] = _mm256_add_epi32(dot[t], _mm256_add_epi32(p0, p1));
                }
            }
            for (t, d) in dot.iter().enumerate() {
                quads[((t * blocks) + i) * ROWS + r] = half_sum(*d);
            }
            // The mins are multiplied by the activations' sums in phase
            // two, eight rows at once.
            mins[i * ROWS + r] = _mm256_extracti128_si256(sm, 1);
            heads[i * ROWS + slot(r)] = head(b, 0);
        }
    }
    let mut acc = [_mm256_setzero_ps(); N];
    for (t, x) in xs.iter().enumerate() {
        for i in 0..blocks {
            let dot = fold_pairs(row_pairs(quads, ((t * blocks) + i) * ROWS));
            // The sums of the eight 32-groups, in both halves.
            let bs = _mm256_loadu_si256(x.sum.as_ptr().add(16 * i) as *const __m256i);
            let bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let bs32 = _mm256_set_m128i(bs32, bs32);
            let min = fold_pairs(row_pairs(mins, i * ROWS).map(|m| _mm256_madd_epi16(m, bs32)));
            let head = lanes_of(heads, i);
            let dx = _mm256_set1_ps(*x.d.get_unchecked(16 * i));
            let scale = _mm256_mul_ps(halves::<false>(head), dx);
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc[t]);
            let neg_dmin = _mm256_xor_ps(halves::<true>(head), _mm256_set1_ps(-0.0));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(neg_dmin, dx), _mm256_cvtepi32_ps(min), acc[t]);
        }
    }
    acc
}

/// Q6_K: values taken unsigned (0..63); 32 times each group's scaled
/// activation sum subtracted in integer before the block scale.
#[inline(always)]
unsafe fn q6_k<const N: usize>(
    rows: &[*const u8; ROWS],
    blocks: usize,
    xs: &[&QuantizedActs; N],
) -> [__m256; N] {
    let (_, quads, _, heads) = scratch(blocks * N);
    for (r, &row) in rows.iter().enumerate() {
        for i in 0..blocks {
            let b = row.add(i * 210);
            prefetch(b, 210, true);
            let sc = _mm_loadu_si128(b.add(192) as *const __m128i);
            let sc16 = _mm256_cvtepi8_epi16(sc);
            let mut dot = [_mm256_setzero_si256(); N];
            for (t, x) in xs.iter().enumerate() {
                let bs = _mm256_loadu_si256(x.sum.as_ptr().add(16 * i) as *const __m256i);
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
                dot[t] = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
            }
            for half in 0..2 {
                let q = q6_k_values(b, half);
                for (j, qj) in q.iter().enumerate() {
                    let k = 4 * half + j;
                    // Groups 2k and 2k+1: their scales in lanes 0-7 and 8-15.
                    let pick = _mm_set_epi64x(
                        (0x0101_0101_0101_0101u64 * (2 * k as u64 + 1)) as i64,
                        (0x0101_0101_0101_0101u64 * (2 * k as u64)) as i64,
                    );
                    let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick));
                    for (t, x) in xs.iter().enumerate() {
                        let av = x.q.as_ptr().add(256 * i + 128 * half + 32 * j);
                        let av = _mm256_loadu_si256(av as *const __m256i);
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*qj, av), s);
                        dot[t] = _mm256_add_epi32(dot[t], p);
                    }
                }
            }
            for (t, d) in dot.iter().enumerate() {
                quads[((t * blocks) + i) * ROWS + r] = half_sum(*d);
            }
            // d is the block's last two bytes: the u32 ending there.
            heads[i * ROWS + slot(r)] = head(b, 206);
        }
    }
    let mut acc = [_mm256_setzero_ps(); N];
    for (t, x) in xs.iter().enumerate() {
        for i in 0..blocks {
            let dot = fold_pairs(row_pairs(quads, ((t * blocks) + i) * ROWS));
            let d = halves::<true>(lanes_of(heads, i));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(16 * i)));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc[t]);
        }
    }
    acc
}
