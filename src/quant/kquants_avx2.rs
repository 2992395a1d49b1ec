//! AVX2 decoders for Q4_K, Q5_K and Q6_K values (scales stay scalar): 32
//! bytes of packed values become 64 values per pair of shifts and masks.
//! Bit-identical to [`super::kquants`] (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::f16_at;
use super::kquants::q45_scales;

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn store(q: *mut i8, v: __m256i) {
    _mm256_storeu_si256(q as *mut __m256i, v);
}

#[inline(always)]
pub unsafe fn decode_q4_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 144 && q.len() >= 256);
    q45_scales(b, scale, min);
    let m = _mm256_set1_epi8(0x0f);
    for c in 0..4 {
        let v = load(b.as_ptr().add(16 + 32 * c));
        store(q.as_mut_ptr().add(64 * c), _mm256_and_si256(v, m));
        store(
            q.as_mut_ptr().add(64 * c + 32),
            _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
        );
    }
}

#[inline(always)]
pub unsafe fn decode_q5_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 176 && q.len() >= 256);
    q45_scales(b, scale, min);
    let m = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(0x10);
    let qh = load(b.as_ptr().add(16));
    let bit = |s: usize| {
        let sel = _mm256_set1_epi8(1 << s);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, sel), sel), sixteen)
    };
    for c in 0..4 {
        let v = load(b.as_ptr().add(48 + 32 * c));
        store(
            q.as_mut_ptr().add(64 * c),
            _mm256_or_si256(_mm256_and_si256(v, m), bit(2 * c)),
        );
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        store(
            q.as_mut_ptr().add(64 * c + 32),
            _mm256_or_si256(hi, bit(2 * c + 1)),
        );
    }
}

#[inline(always)]
pub unsafe fn decode_q6_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 210 && q.len() >= 256);
    let (m4, m30, off) = (
        _mm256_set1_epi8(0x0f),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(32),
    );
    for half in 0..2 {
        let ql0 = load(b.as_ptr().add(64 * half));
        let ql1 = load(b.as_ptr().add(64 * half + 32));
        let qh = load(b.as_ptr().add(128 + 32 * half));
        // Bits 0-1, 2-3, 4-5, 6-7 of qh, each moved to bits 4-5.
        let h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30);
        let h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30);
        let h2 = _mm256_and_si256(qh, m30);
        let h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30);
        let base = q.as_mut_ptr().add(128 * half);
        let lo0 = _mm256_and_si256(ql0, m4);
        let lo1 = _mm256_and_si256(ql1, m4);
        let hi0 = _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4);
        let hi1 = _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4);
        store(base, _mm256_sub_epi8(_mm256_or_si256(lo0, h0), off));
        store(base.add(32), _mm256_sub_epi8(_mm256_or_si256(lo1, h1), off));
        store(base.add(64), _mm256_sub_epi8(_mm256_or_si256(hi0, h2), off));
        store(base.add(96), _mm256_sub_epi8(_mm256_or_si256(hi1, h3), off));
    }
    let d = f16_at(b, 208);
    for g in 0..16 {
        scale[g] = d * (b[192 + g] as i8) as f32;
        min[g] = 0.0;
    }
}
