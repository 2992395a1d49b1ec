//! Products of grouped rows ([`super::grouped`]) with a batch of tokens,
//! four at a time, and the groups turned back into rows for the GEMM.
//! Q4_K and Q6_K, and the 32-element formats Q4_0, Q4_1, Q5_0 and Q5_1.
//!
//! With eight rows side by side in each load (row r in bytes 4r..4r+4),
//! four values of every row multiply the four activations they stand for,
//! broadcast, in one `maddubs`; a sub-block's products add up in 16-bit
//! lanes while they fit (Q4_K: 16 · 15 · 128 = 30720, so a whole 32-value
//! sub-block) and take the eight rows' scales in one `madd`. The file-layout
//! kernel (`rows_avx2`) needs two multiplies per 32 values of each row, a
//! scale splat per sub-block and sums across lanes; here the lanes are the
//! rows from start to end.
//!
//! The integer sums are exact and the float step per block is
//! `rows_avx2`'s in the same order, so a token's results are the same bits
//! as the file-layout kernels and the GEMM give (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::QuantizedActs;
use super::grouped::{
    gather_fifth_bits, group_block_bytes, has_fifth_bits, head_bytes, place, spread_fifth_bits,
    GROUP_ROWS,
};
use super::rows_avx2::halves;
use super::values_avx2::{Legacy, Q40, Q41, Q50, Q51};
use super::GgmlType;

/// Tokens multiplied together: each group's values are unpacked once for
/// this many (a group's block stays in L1 while all of a batch's tokens
/// pass, so a prompt reads its weights once, as the GEMM does).
const TOKENS: usize = 4;

/// The types with a grouped kernel.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_K | Q6_K | Q4_0 | Q4_1 | Q5_0 | Q5_1)
}

/// `out[t * n_rows + r] = row_r · xs[t]` for the `n_rows` grouped rows in
/// `groups` (a multiple of [`GROUP_ROWS`]) and every token in `xs`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; [`supports`]`(ty)`; every `xs[t]` was
/// quantized (in `ActFormat::for_weight(ty)`) from as many values as a row
/// holds.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec(
    ty: GgmlType,
    groups: &[u8],
    n_rows: usize,
    xs: &[&QuantizedActs],
    out: &mut [f32],
) {
    assert!(supports(ty));
    assert!(n_rows > 0 && n_rows.is_multiple_of(GROUP_ROWS));
    assert!(out.len() == n_rows * xs.len());
    let n_groups = n_rows / GROUP_ROWS;
    let group_bytes = groups.len() / n_groups;
    assert!(group_bytes * n_groups == groups.len());
    assert!(
        group_bytes.is_multiple_of(group_block_bytes(ty)),
        "partial block"
    );
    let blocks = group_bytes / group_block_bytes(ty);
    let n = blocks * ty.block_size();
    for x in xs {
        assert!(x.q.len() == n && x.d.len() == n / 16);
        assert!(x.sum.len() == n / 16 && x.dsum.len() == n / 16);
    }
    for g in 0..n_groups {
        let group = groups.as_ptr().add(g * group_bytes);
        for (c, toks) in xs.chunks(TOKENS).enumerate() {
            let at = out.as_mut_ptr().add(c * TOKENS * n_rows + g * GROUP_ROWS);
            match toks.len() {
                1 => one_group::<1>(ty, group, blocks, toks, n_rows, at),
                2 => one_group::<2>(ty, group, blocks, toks, n_rows, at),
                3 => one_group::<3>(ty, group, blocks, toks, n_rows, at),
                _ => one_group::<4>(ty, group, blocks, toks, n_rows, at),
            }
        }
    }
}

/// One group times up to [`TOKENS`] tokens, token t's eight results at
/// `out + t * stride`.
#[inline(always)]
unsafe fn one_group<const N: usize>(
    ty: GgmlType,
    group: *const u8,
    blocks: usize,
    xs: &[&QuantizedActs],
    stride: usize,
    out: *mut f32,
) {
    let xs: [&QuantizedActs; N] = std::array::from_fn(|t| xs[t]);
    let acc = match ty {
        GgmlType::Q4_K => q4_k::<N>(group, blocks, &xs),
        GgmlType::Q6_K => q6_k::<N>(group, blocks, &xs),
        GgmlType::Q4_0 => legacy::<Q40, N>(group, blocks, &xs),
        GgmlType::Q4_1 => legacy::<Q41, N>(group, blocks, &xs),
        GgmlType::Q5_0 => legacy::<Q50, N>(group, blocks, &xs),
        _ => legacy::<Q51, N>(group, blocks, &xs),
    };
    for (t, v) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add(t * stride), *v);
    }
}

/// How far ahead of the block being read its cache lines are requested.
const AHEAD: usize = 4096;

/// Ask for part `part` of `parts` of the cache lines of the block
/// [`AHEAD`] bytes past the `bytes` bytes at `b` (a hint only: past the end
/// of the weights is harmless). Spread over the block's work, not asked
/// all at once: a burst of requests fills the core's miss buffers and holds
/// up the loads behind it.
#[inline(always)]
unsafe fn prefetch(b: *const u8, bytes: usize, part: usize, parts: usize) {
    let lines = bytes.div_ceil(64);
    for line in lines * part / parts..lines * (part + 1) / parts {
        _mm_prefetch(b.wrapping_add(AHEAD + 64 * line) as *const i8, _MM_HINT_T0);
    }
}

/// An in-lane shuffle that gives row r (bytes 4r..4r+4 of each half, its
/// 16-bit lanes 2r and 2r+1) the bytes `pattern` names of its own word; a
/// negative entry zeroes its byte.
#[inline(always)]
unsafe fn per_row(pattern: [i8; 4]) -> __m256i {
    let mut half = [0i8; 16];
    for (rr, bytes) in half.chunks_exact_mut(4).enumerate() {
        for (b, p) in bytes.iter_mut().zip(pattern) {
            *b = if p < 0 { p } else { 4 * rr as i8 + p };
        }
    }
    let v = _mm_loadu_si128(half.as_ptr() as *const __m128i);
    _mm256_set_m128i(v, v)
}

/// Word `w` of a group's block at `b`: the same four bytes of all eight
/// rows.
#[inline(always)]
unsafe fn word(b: *const u8, w: usize) -> __m256i {
    _mm256_loadu_si256(b.add(32 * w) as *const __m256i)
}

/// Row r's lanes 2r and 2r+1 = bytes `j` and `k` of its word, zero-extended.
#[inline(always)]
unsafe fn spread(j: i8, k: i8) -> __m256i {
    per_row([j, -128, k, -128])
}

/// Q4_K: word 0 of each row's block is `d | dmin`, words 1–3 its packed
/// 6-bit scales and mins, words 4–35 its values (word 8c + m: values
/// 64c + 4m.. in low nibbles, 64c + 32 + 4m.. in high). Lane r = row r.
#[inline(always)]
unsafe fn q4_k<const N: usize>(
    group: *const u8,
    blocks: usize,
    xs: &[&QuantizedActs; N],
) -> [__m256; N] {
    let m0f = _mm256_set1_epi8(0x0f);
    let m3f = _mm256_set1_epi8(0x3f);
    let m30 = _mm256_set1_epi8(0x30);
    // Sub-block j's scale is byte j % 4 of its decoded word; the mins go
    // two sub-blocks (j, j + 1) a vector.
    let spreads: [__m256i; 4] = std::array::from_fn(|j| spread(j as i8, j as i8));
    let min_pairs = [spread(0, 1), spread(2, 3)];
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..blocks {
        let b = group.add(i * 8 * 144);
        let (a, bb, c) = (word(b, 1), word(b, 2), word(b, 3));
        // Scales and mins of sub-blocks 0–3 and 4–7, a byte each, as
        // ggml's get_scale_min_k4 decodes them.
        let s03 = _mm256_and_si256(a, m3f);
        let m03 = _mm256_and_si256(bb, m3f);
        let s47 = _mm256_or_si256(
            _mm256_and_si256(c, m0f),
            _mm256_and_si256(_mm256_srli_epi16(a, 2), m30),
        );
        let m47 = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(c, 4), m0f),
            _mm256_and_si256(_mm256_srli_epi16(bb, 2), m30),
        );
        let mut dot = [_mm256_setzero_si256(); N];
        for ch in 0..4 {
            prefetch(b, 8 * 144, ch, 4);
            let mut lo_sum = [_mm256_setzero_si256(); N];
            let mut hi_sum = [_mm256_setzero_si256(); N];
            for m in 0..8 {
                let v = word(b, 4 + 8 * ch + m);
                let lo = _mm256_and_si256(v, m0f);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
                for (t, x) in xs.iter().enumerate() {
                    let at = x.q.as_ptr().add(256 * i + 64 * ch + 4 * m);
                    let a_lo = _mm256_set1_epi32((at as *const i32).read_unaligned());
                    let a_hi = _mm256_set1_epi32((at.add(32) as *const i32).read_unaligned());
                    lo_sum[t] = _mm256_add_epi16(lo_sum[t], _mm256_maddubs_epi16(lo, a_lo));
                    hi_sum[t] = _mm256_add_epi16(hi_sum[t], _mm256_maddubs_epi16(hi, a_hi));
                }
            }
            // Sub-blocks 2ch (low nibbles) and 2ch + 1 (high).
            let scales = if ch < 2 { s03 } else { s47 };
            let s_lo = _mm256_shuffle_epi8(scales, spreads[(2 * ch) % 4]);
            let s_hi = _mm256_shuffle_epi8(scales, spreads[(2 * ch + 1) % 4]);
            for t in 0..N {
                let p = _mm256_add_epi32(
                    _mm256_madd_epi16(lo_sum[t], s_lo),
                    _mm256_madd_epi16(hi_sum[t], s_hi),
                );
                dot[t] = _mm256_add_epi32(dot[t], p);
            }
        }
        let mins = [
            _mm256_shuffle_epi8(m03, min_pairs[0]),
            _mm256_shuffle_epi8(m03, min_pairs[1]),
            _mm256_shuffle_epi8(m47, min_pairs[0]),
            _mm256_shuffle_epi8(m47, min_pairs[1]),
        ];
        let head = word(b, 0);
        let d = halves::<false>(head);
        let neg_dmin = _mm256_xor_ps(halves::<true>(head), _mm256_set1_ps(-0.0));
        for (t, x) in xs.iter().enumerate() {
            // The activations' eight 32-group sums, as pairs (j, j + 1).
            let bs = _mm256_loadu_si256(x.sum.as_ptr().add(16 * i) as *const __m256i);
            let bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let pairs = [
                _mm256_broadcastd_epi32(bs32),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32(bs32, 0x55)),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32(bs32, 0xaa)),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32(bs32, 0xff)),
            ];
            let mut min = _mm256_setzero_si256();
            for (m, pair) in mins.iter().zip(pairs) {
                min = _mm256_add_epi32(min, _mm256_madd_epi16(*m, pair));
            }
            let dx = _mm256_set1_ps(*x.d.get_unchecked(16 * i));
            let scale = _mm256_mul_ps(d, dx);
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot[t]), acc[t]);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(neg_dmin, dx), _mm256_cvtepi32_ps(min), acc[t]);
        }
    }
    acc
}

/// Row r's lanes 2r and 2r+1 = bytes `j` and `k` of its word in both
/// halves (`srai` by 8 then sign-extends them).
#[inline(always)]
unsafe fn spread_signed(j: i8, k: i8) -> __m256i {
    per_row([j, j, k, k])
}

/// Q6_K: words 0–31 of each row's block are its low nibbles (`ql`), 32–47
/// its high bits (`qh`), 48–51 its sixteen signed scales, and its `d` the
/// two bytes after. Values are taken unsigned (0..63): 32 times each
/// sub-block's scaled activation sum is taken off in integers, as
/// `rows_avx2` does. Two steps' products (2 · 2 · 63 · 128 = 32256) add up
/// in 16 bits before each `madd`. Lane r = row r.
#[inline(always)]
unsafe fn q6_k<const N: usize>(
    group: *const u8,
    blocks: usize,
    xs: &[&QuantizedActs; N],
) -> [__m256; N] {
    // Sub-block 4p + j's scale is byte j of scale word p; the offsets go
    // two sub-blocks (j, j + 1) a vector.
    let spreads: [__m256i; 4] = std::array::from_fn(|j| spread_signed(j as i8, j as i8));
    let pairs = [spread_signed(0, 1), spread_signed(2, 3)];
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..blocks {
        let b = group.add(i * 8 * 210);
        let scales: [__m256i; 4] = std::array::from_fn(|p| word(b, 48 + p));
        let scale_of =
            |g: usize| _mm256_srai_epi16(_mm256_shuffle_epi8(scales[g / 4], spreads[g % 4]), 8);
        // dot = Σ_g scale_g · (Σ q·a − 32 · Σ a): the offsets first.
        let mut dot = [_mm256_setzero_si256(); N];
        for p in 0..8 {
            let sc = _mm256_srai_epi16(_mm256_shuffle_epi8(scales[p / 2], pairs[p % 2]), 8);
            for (t, x) in xs.iter().enumerate() {
                let sums = x.sum.as_ptr().add(16 * i + 2 * p) as *const i32;
                let bs = _mm256_set1_epi32(sums.read_unaligned());
                dot[t] = _mm256_sub_epi32(dot[t], _mm256_slli_epi32(_mm256_madd_epi16(sc, bs), 5));
            }
        }
        for h in 0..2 {
            // Spelled out so that each value's unpacking is fixed code.
            q6_k_quarter::<N, 0>(b, i, h, xs, &scale_of, &mut dot);
            q6_k_quarter::<N, 1>(b, i, h, xs, &scale_of, &mut dot);
            q6_k_quarter::<N, 2>(b, i, h, xs, &scale_of, &mut dot);
            q6_k_quarter::<N, 3>(b, i, h, xs, &scale_of, &mut dot);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.add(32 * 52) as *const __m128i));
        for (t, x) in xs.iter().enumerate() {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(16 * i)));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot[t]), acc[t]);
        }
    }
    acc
}

/// Sub-blocks 8h + 2S and 8h + 2S + 1 of a Q6_K block (values 128h + 32S
/// ..+32: low nibbles of words 16h.. (S even) or 16h + 8.. (S odd), high
/// nibbles for S ≥ 2; bits 2S, 2S + 1 of words 32 + 8h..) into `dot`.
#[inline(always)]
unsafe fn q6_k_quarter<const N: usize, const S: usize>(
    b: *const u8,
    i: usize,
    h: usize,
    xs: &[&QuantizedActs; N],
    scale_of: &impl Fn(usize) -> __m256i,
    dot: &mut [__m256i; N],
) {
    let (m0f, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    for mq in 0..2 {
        prefetch(b, 8 * 210, 8 * h + 2 * S + mq, 16);
        let mut sums = [[_mm256_setzero_si256(); 2]; N];
        for mm in 0..4 {
            let m = 4 * mq + mm;
            let (l, qh) = (word(b, 16 * h + 8 * (S % 2) + m), word(b, 32 + 8 * h + m));
            let low = if S < 2 {
                _mm256_and_si256(l, m0f)
            } else {
                _mm256_and_si256(_mm256_srli_epi16(l, 4), m0f)
            };
            let high = match S {
                0 => _mm256_slli_epi16(qh, 4),
                1 => _mm256_slli_epi16(qh, 2),
                2 => qh,
                _ => _mm256_srli_epi16(qh, 2),
            };
            let v = _mm256_or_si256(low, _mm256_and_si256(high, m30));
            for (t, x) in xs.iter().enumerate() {
                let at = x.q.as_ptr().add(256 * i + 128 * h + 32 * S + 4 * m);
                let a = _mm256_set1_epi32((at as *const i32).read_unaligned());
                let pair = &mut sums[t][mm / 2];
                *pair = _mm256_add_epi16(*pair, _mm256_maddubs_epi16(v, a));
            }
        }
        let sc = scale_of(8 * h + 2 * S + mq);
        for t in 0..N {
            let p = _mm256_add_epi32(
                _mm256_madd_epi16(sums[t][0], sc),
                _mm256_madd_epi16(sums[t][1], sc),
            );
            dot[t] = _mm256_add_epi32(dot[t], p);
        }
    }
}

// The 32-element formats as grouped: words 0.. of each row's block its
// nibbles (word m: values 4m.. in low nibbles, 16 + 4m.. in high), after one
// word of fifth bits (`Legacy::FIFTH`), then its f16 `d` as the tail (formats
// with an offset) or `d | m` as a last word (formats with a min).

/// Bit 4 of each byte of the fifth-bit word shifted for nibble word `m`
/// (low nibbles left by 4 − m, high right by m: [`super::grouped`]'s order).
#[inline(always)]
unsafe fn fifth<const HIGH: bool>(qh: __m256i, m: usize) -> __m256i {
    let v = match (HIGH, m) {
        (false, 0) => _mm256_slli_epi32(qh, 4),
        (false, 1) => _mm256_slli_epi32(qh, 3),
        (false, 2) => _mm256_slli_epi32(qh, 2),
        (false, _) => _mm256_slli_epi32(qh, 1),
        (true, 0) => qh,
        (true, 1) => _mm256_srli_epi32(qh, 1),
        (true, 2) => _mm256_srli_epi32(qh, 2),
        (true, _) => _mm256_srli_epi32(qh, 3),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x10))
}

/// The 32-element formats, a block (32 values of each of the eight rows)
/// a step, its float step `rows_avx2`'s. Lane r = row r.
#[inline(always)]
unsafe fn legacy<F: Legacy, const N: usize>(
    group: *const u8,
    blocks: usize,
    xs: &[&QuantizedActs; N],
) -> [__m256; N] {
    let m0f = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let first = F::FIFTH as usize;
    let words = F::BYTES / 4;
    // Words whose products add up in 16 bits before a `madd`: each
    // `maddubs` lane is at most 2 · 15 · 127 (Q4) or 2 · 31 · 127 (Q5), and
    // a word takes two.
    let per_sum = if F::FIFTH { 2 } else { 4 };
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..blocks {
        let b = group.add(i * 8 * F::BYTES);
        prefetch(b, 8 * F::BYTES, 0, 1);
        let qh = if F::FIFTH {
            word(b, 0)
        } else {
            _mm256_setzero_si256()
        };
        let mut dot = [_mm256_setzero_si256(); N];
        for m0 in (0..4).step_by(per_sum) {
            let mut sums = [_mm256_setzero_si256(); N];
            for m in m0..m0 + per_sum {
                let v = word(b, first + m);
                let mut lo = _mm256_and_si256(v, m0f);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
                if F::FIFTH {
                    lo = _mm256_or_si256(lo, fifth::<false>(qh, m));
                    hi = _mm256_or_si256(hi, fifth::<true>(qh, m));
                }
                for (t, x) in xs.iter().enumerate() {
                    let at = x.q.as_ptr().add(32 * i + 4 * m);
                    let a_lo = _mm256_set1_epi32((at as *const i32).read_unaligned());
                    let a_hi = _mm256_set1_epi32((at.add(16) as *const i32).read_unaligned());
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, a_lo),
                        _mm256_maddubs_epi16(hi, a_hi),
                    );
                    sums[t] = _mm256_add_epi16(sums[t], p);
                }
            }
            for t in 0..N {
                dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(sums[t], ones));
            }
        }
        if F::OFFSET != 0 {
            let d = _mm256_cvtph_ps(_mm_loadu_si128(b.add(32 * words) as *const __m128i));
            for (t, x) in xs.iter().enumerate() {
                let sum =
                    *x.sum.get_unchecked(2 * i) as i32 + *x.sum.get_unchecked(2 * i + 1) as i32;
                let dot = _mm256_sub_epi32(dot[t], _mm256_set1_epi32(F::OFFSET * sum));
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(2 * i)));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc[t]);
            }
        } else {
            let head = word(b, words - 1);
            let (d, min) = (halves::<false>(head), halves::<true>(head));
            for (t, x) in xs.iter().enumerate() {
                let scale = _mm256_mul_ps(d, _mm256_set1_ps(*x.d.get_unchecked(2 * i)));
                acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot[t]), acc[t]);
                let dsum = _mm256_set1_ps(*x.dsum.get_unchecked(2 * i));
                acc[t] = _mm256_fmadd_ps(min, dsum, acc[t]);
            }
        }
    }
    acc
}

/// Rows of `row_bytes` (a multiple of eight rows) grouped, or (`UNGROUP`)
/// groups turned back into rows: eight words of the eight rows at a time
/// transposed in registers, the words past the last eight a word at a
/// time, the tail a byte at a time.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn regroup<const UNGROUP: bool>(
    ty: GgmlType,
    from: &[u8],
    row_bytes: usize,
    to: &mut [u8],
) {
    let bb = ty.block_bytes();
    let gbb = group_block_bytes(ty);
    assert!(row_bytes.is_multiple_of(bb) && row_bytes > 0);
    assert!(from.len() == to.len() && from.len().is_multiple_of(GROUP_ROWS * row_bytes));
    let (words, head) = (bb / 4, head_bytes(ty));
    let whole = words / 8 * 8;
    let group_bytes = GROUP_ROWS * row_bytes;
    for g in 0..from.len() / group_bytes {
        for i in 0..row_bytes / bb {
            // Offsets of block i of row r (in the file layout) and of the
            // group's block i.
            let row_at = |r: usize| g * group_bytes + r * row_bytes + i * bb;
            let group_at = g * group_bytes + i * gbb;
            for w0 in (0..whole).step_by(8) {
                let v: [__m256i; 8] = std::array::from_fn(|k| {
                    let at = if UNGROUP {
                        group_at + 32 * (w0 + k)
                    } else {
                        row_at(k) + head + 4 * w0
                    };
                    _mm256_loadu_si256(from.as_ptr().add(at) as *const __m256i)
                });
                for (k, v) in transpose8(v).into_iter().enumerate() {
                    let at = if UNGROUP {
                        row_at(k) + head + 4 * w0
                    } else {
                        group_at + 32 * (w0 + k)
                    };
                    _mm256_storeu_si256(to.as_mut_ptr().add(at) as *mut __m256i, v);
                }
            }
            for r in 0..GROUP_ROWS {
                // The words past the last eight a word at a time (the fifth
                // bits reordered on the way), then the tail.
                for w in whole..words {
                    let file = row_at(r) + (head + 4 * w) % bb;
                    let grouped = group_at + 32 * w + 4 * r;
                    let (src, dst) = if UNGROUP {
                        (grouped, file)
                    } else {
                        (file, grouped)
                    };
                    let mut word = (from.as_ptr().add(src) as *const u32).read_unaligned();
                    if w == 0 && has_fifth_bits(ty) {
                        word = if UNGROUP {
                            gather_fifth_bits(word)
                        } else {
                            spread_fifth_bits(word)
                        };
                    }
                    (to.as_mut_ptr().add(dst) as *mut u32).write_unaligned(word);
                }
                for j in 4 * words..bb {
                    let k = (j + head) % bb;
                    let grouped = group_at + place(ty, r, k);
                    if UNGROUP {
                        to[row_at(r) + k] = from[grouped];
                    } else {
                        to[grouped] = from[row_at(r) + k];
                    }
                }
            }
        }
    }
}

/// `out[r]` = lane r of `v[0]`, …, lane r of `v[7]` (32-bit lanes).
#[inline(always)]
unsafe fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[k / 2 * 2], v[k / 2 * 2 + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // t[2p]: lanes 0, 1 (and 4, 5) of v[2p], v[2p+1] interleaved; t[2p+1]:
    // lanes 2, 3 (6, 7).
    let u: [__m256i; 8] = std::array::from_fn(|k| {
        let quad = k / 4; // v[0..4] or v[4..8]
        let (a, b) = (t[4 * quad + (k % 4) / 2], t[4 * quad + 2 + (k % 4) / 2]);
        if k % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    // u[4q + l] (l = 0..4): lane l (and l + 4) of v[4q..4q+4].
    std::array::from_fn(|r| {
        let (a, b) = (u[r % 4], u[4 + r % 4]);
        if r < 4 {
            _mm256_permute2x128_si256(a, b, 0x20)
        } else {
            _mm256_permute2x128_si256(a, b, 0x31)
        }
    })
}
