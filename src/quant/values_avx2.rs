//! Block values as unsigned bytes in vector registers, in element order:
//! what the GEMM (`gemm_avx2`) unpacks once and stores for all its panels,
//! and what the row kernels (`rows_avx2`) multiply at once. Offsets (Q4_0's
//! 8, Q5_0's 16, Q6_K's 32) and mins are left to the callers, which take
//! them from the activations' sums; both must do so the same way.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::legacy_avx2::{fifth_bit_pair, fifth_bits, nibble_pair, nibbles};

/// A 32-element format: unsigned values, and an offset (Q4_0, Q5_0) or a
/// float min (Q4_1, Q5_1).
pub trait Legacy {
    const BYTES: usize;
    /// Subtracted times the activations' block sum; 0 for the min formats.
    const OFFSET: i32;
    /// Whether the values have a fifth bit (Q5_0, Q5_1).
    const FIFTH: bool;
    unsafe fn values(b: *const u8) -> __m256i;
    /// The blocks at `b` and `b + BYTES`: elements 0..16 of both (the first
    /// block's in the low half), then 16..32 of both.
    unsafe fn pair_values(b: *const u8) -> (__m256i, __m256i);
}

/// Two blocks of `bytes` each, with their 16 bytes of nibbles at `qs` and
/// fifth bits (if any) at `qh` in each.
#[inline(always)]
unsafe fn pair_of(b: *const u8, bytes: usize, qs: usize, qh: Option<usize>) -> (__m256i, __m256i) {
    let (lo, hi) = nibble_pair(b.add(qs), b.add(bytes + qs));
    match qh {
        None => (lo, hi),
        Some(h) => {
            let (blo, bhi) = fifth_bit_pair(b.add(h), b.add(bytes + h));
            (_mm256_or_si256(lo, blo), _mm256_or_si256(hi, bhi))
        }
    }
}

pub struct Q40;
pub struct Q41;
pub struct Q50;
pub struct Q51;

impl Legacy for Q40 {
    const BYTES: usize = 18;
    const OFFSET: i32 = 8;
    const FIFTH: bool = false;
    #[inline(always)]
    unsafe fn values(b: *const u8) -> __m256i {
        nibbles(b.add(2))
    }
    #[inline(always)]
    unsafe fn pair_values(b: *const u8) -> (__m256i, __m256i) {
        pair_of(b, Self::BYTES, 2, None)
    }
}

impl Legacy for Q41 {
    const BYTES: usize = 20;
    const OFFSET: i32 = 0;
    const FIFTH: bool = false;
    #[inline(always)]
    unsafe fn values(b: *const u8) -> __m256i {
        nibbles(b.add(4))
    }
    #[inline(always)]
    unsafe fn pair_values(b: *const u8) -> (__m256i, __m256i) {
        pair_of(b, Self::BYTES, 4, None)
    }
}

impl Legacy for Q50 {
    const BYTES: usize = 22;
    const OFFSET: i32 = 16;
    const FIFTH: bool = true;
    #[inline(always)]
    unsafe fn values(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(b.add(6)), fifth_bits(b.add(2)))
    }
    #[inline(always)]
    unsafe fn pair_values(b: *const u8) -> (__m256i, __m256i) {
        pair_of(b, Self::BYTES, 6, Some(2))
    }
}

impl Legacy for Q51 {
    const BYTES: usize = 24;
    const OFFSET: i32 = 0;
    const FIFTH: bool = true;
    #[inline(always)]
    unsafe fn values(b: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(b.add(8)), fifth_bits(b.add(4)))
    }
    #[inline(always)]
    unsafe fn pair_values(b: *const u8) -> (__m256i, __m256i) {
        pair_of(b, Self::BYTES, 8, Some(4))
    }
}

/// Q4_K/Q5_K: the 64 unsigned values of chunk c (sub-blocks 2c, 2c+1).
pub trait K4 {
    const BYTES: usize;
    unsafe fn values(b: *const u8, c: usize) -> (__m256i, __m256i);
}

pub struct Q4K;
pub struct Q5K;

impl K4 for Q4K {
    const BYTES: usize = 144;
    #[inline(always)]
    unsafe fn values(b: *const u8, c: usize) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0x0f);
        let v = _mm256_loadu_si256(b.add(16 + 32 * c) as *const __m256i);
        (
            _mm256_and_si256(v, m4),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
        )
    }
}

impl K4 for Q5K {
    const BYTES: usize = 176;
    #[inline(always)]
    unsafe fn values(b: *const u8, c: usize) -> (__m256i, __m256i) {
        let (m4, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
        let qh = _mm256_loadu_si256(b.add(16) as *const __m256i);
        // Bit s of each qh byte is the fifth bit of sub-block s.
        let bit = |s: i32| {
            let h = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), one);
            _mm256_slli_epi16(h, 4)
        };
        let v = _mm256_loadu_si256(b.add(48 + 32 * c) as *const __m256i);
        let lo = _mm256_or_si256(_mm256_and_si256(v, m4), bit(2 * c as i32));
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        (lo, _mm256_or_si256(hi, bit(2 * c as i32 + 1)))
    }
}

/// Q6_K's values 0..63 of half `half` (elements 128·half + 32·j + 0..32 in
/// vector j).
#[inline(always)]
pub unsafe fn q6_k_values(b: *const u8, half: usize) -> [__m256i; 4] {
    let (m4, m30) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    let ql0 = _mm256_loadu_si256(b.add(64 * half) as *const __m256i);
    let ql1 = _mm256_loadu_si256(b.add(64 * half + 32) as *const __m256i);
    let qh = _mm256_loadu_si256(b.add(128 + 32 * half) as *const __m256i);
    let low = |v: __m256i| _mm256_and_si256(v, m4);
    let high = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    let bits = |v: __m256i| _mm256_and_si256(v, m30);
    [
        _mm256_or_si256(low(ql0), bits(_mm256_slli_epi16(qh, 4))),
        _mm256_or_si256(low(ql1), bits(_mm256_slli_epi16(qh, 2))),
        _mm256_or_si256(high(ql0), bits(qh)),
        _mm256_or_si256(high(ql1), bits(_mm256_srli_epi16(qh, 2))),
    ]
}
