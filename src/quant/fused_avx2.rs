//! Fused AVX2 dot kernels: each weight block is unpacked in registers and
//! multiplied with up to [`MAX_ROWS`] activation rows before the next block is
//! read, so no decoded row goes through memory and a prompt's tokens share
//! every unpacked block. k-quant sub-block scales are applied in integer
//! (`madd` by the 6- or 8-bit scale) and converted to float once per 256
//! values; their mins and Q6_K's offset come from the activations' per-16 sums.
//!
//! Each token's result is computed by the same instruction sequence whatever
//! the number of rows beside it, so batching never changes a logit (tested
//! bit-for-bit). Checked against the decoded-form path within float rounding.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::QuantizedActs;
use super::legacy_avx2::{bit_mask, fifth_bits, nibbles};
use super::GgmlType;

/// Activation rows one call of a kernel multiplies at once.
pub const MAX_ROWS: usize = 4;

/// Whether `ty` has a fused kernel (the others use the decoded-row path).
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
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
    use GgmlType::*;
    match ty {
        Q4_0 => legacy::<N, Q40>(row, &xs, pf),
        Q4_1 => legacy::<N, Q41>(row, &xs, pf),
        Q5_0 => legacy::<N, Q50>(row, &xs, pf),
        Q5_1 => legacy::<N, Q51>(row, &xs, pf),
        Q8_0 => legacy::<N, Q80>(row, &xs, pf),
        Q4_K => q4_k::<N>(row, &xs, pf),
        Q5_K => q5_k::<N>(row, &xs, pf),
        Q6_K => q6_k::<N>(row, &xs, pf),
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
unsafe fn prefetch(b: *const u8, bytes: usize, pf: bool) {
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

struct Q40;
struct Q41;
struct Q50;
struct Q51;
struct Q80;

impl LegacyBlock for Q40 {
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(b: *const u8) -> __m256i {
        _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8))
    }
}

impl LegacyBlock for Q41 {
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(b: *const u8) -> __m256i {
        nibbles(b.add(4))
    }
}

impl LegacyBlock for Q50 {
    const BYTES: usize = 22;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn unpack(b: *const u8) -> __m256i {
        // q − 16 is the nibble with 0xf0 or-ed in where the fifth bit is clear.
        let clear = _mm256_andnot_si256(bit_mask(b.add(2)), _mm256_set1_epi8(-16));
        _mm256_or_si256(nibbles(b.add(6)), clear)
    }
}

impl LegacyBlock for Q51 {
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn unpack(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4)))
    }
}

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
unsafe fn lane16(j: usize) -> __m256i {
    _mm256_set1_epi16((((2 * j + 1) << 8) | (2 * j)) as i16)
}

/// Shared by Q4_K and Q5_K: `values(block, c)` gives the 64 unsigned values of
/// chunk c (sub-blocks 2c and 2c+1) as two vectors.
#[inline(always)]
unsafe fn k4_family<const N: usize>(
    row: &[u8],
    bytes: usize,
    xs: &[&QuantizedActs; N],
    pf: bool,
    values: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm_setzero_ps(); N];
    for i in 0..row.len() / bytes {
        let b = row.as_ptr().add(i * bytes);
        prefetch(b, bytes, pf);
        let (d, dmin) = f16_pair(b);
        let sm = _mm256_cvtepu8_epi16(k4_scales(b.add(4)));
        let scales = _mm256_permute2x128_si256(sm, sm, 0x00);
        let mins = _mm256_extracti128_si256(sm, 1);
        let mut isum = [_mm256_setzero_si256(); N];
        for c in 0..4 {
            let (lo, hi) = values(b, c);
            let (s_lo, s_hi) = (
                _mm256_shuffle_epi8(scales, lane16(2 * c)),
                _mm256_shuffle_epi8(scales, lane16(2 * c + 1)),
            );
            for t in 0..N {
                let a = xs[t].q.as_ptr().add(256 * i + 64 * c);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load_i8(a)), s_lo);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load_i8(a.add(32))), s_hi);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p0, p1));
            }
        }
        for t in 0..N {
            let dx = *xs[t].d.get_unchecked(16 * i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            let bs = _mm256_loadu_si256(xs[t].sum.as_ptr().add(16 * i) as *const __m256i);
            let bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            let m = _mm_cvtepi32_ps(_mm_madd_epi16(mins, bs32));
            acc_min[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * dx), m, acc_min[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]) - hsum_ps128(acc_min[t]))
}

#[inline(always)]
unsafe fn q4_k<const N: usize>(row: &[u8], xs: &[&QuantizedActs; N], pf: bool) -> [f32; N] {
    let m4 = _mm256_set1_epi8(0x0f);
    k4_family(row, 144, xs, pf, |b, c| {
        let v = load(b.add(16 + 32 * c));
        (
            _mm256_and_si256(v, m4),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
        )
    })
}

#[inline(always)]
unsafe fn q5_k<const N: usize>(row: &[u8], xs: &[&QuantizedActs; N], pf: bool) -> [f32; N] {
    let (m4, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
    k4_family(row, 176, xs, pf, |b, c| {
        let qh = load(b.add(16));
        // Bit s of each qh byte is the fifth bit of sub-block s.
        let bit = |s: i32| {
            let h = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), one);
            _mm256_slli_epi16(h, 4)
        };
        let v = load(b.add(48 + 32 * c));
        let lo = _mm256_or_si256(_mm256_and_si256(v, m4), bit(2 * c as i32));
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        (lo, _mm256_or_si256(hi, bit(2 * c as i32 + 1)))
    })
}

/// Q6_K: values taken unsigned (0..63) and the offset of 32 removed through
/// the activations' per-16 sums, once per super-block.
#[inline(always)]
unsafe fn q6_k<const N: usize>(row: &[u8], xs: &[&QuantizedActs; N], pf: bool) -> [f32; N] {
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..row.len() / 210 {
        let b = row.as_ptr().add(i * 210);
        prefetch(b, 210, pf);
        let d = f16(b.add(208));
        let sc = _mm_loadu_si128(b.add(192) as *const __m128i);
        let sc16 = _mm256_cvtepi8_epi16(sc);
        let mut isum = [_mm256_setzero_si256(); N];
        for t in 0..N {
            let bs = _mm256_loadu_si256(xs[t].sum.as_ptr().add(16 * i) as *const __m256i);
            isum[t] = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bs), 5);
            isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), isum[t]);
        }
        for half in 0..2 {
            let ql0 = load(b.add(64 * half));
            let ql1 = load(b.add(64 * half + 32));
            let qh = load(b.add(128 + 32 * half));
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ),
            ];
            for (j, qj) in q.iter().enumerate() {
                let k = 4 * half + j;
                // Groups 2k and 2k+1: their scales in lanes 0-7 and 8-15.
                let pick = _mm_set_epi64x(
                    (0x0101_0101_0101_0101u64 * (2 * k as u64 + 1)) as i64,
                    (0x0101_0101_0101_0101u64 * (2 * k as u64)) as i64,
                );
                let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick));
                for t in 0..N {
                    let a = load_i8(xs[t].q.as_ptr().add(256 * i + 128 * half + 32 * j));
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*qj, a), s);
                    isum[t] = _mm256_add_epi32(isum[t], p);
                }
            }
        }
        for t in 0..N {
            let dx = *xs[t].d.get_unchecked(16 * i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(isum[t]), acc[t]);
        }
    }
    std::array::from_fn(|t| hsum_ps(acc[t]))
}
