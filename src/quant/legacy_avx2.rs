//! AVX2 decoders for the 32-element block formats: the nibbles of a block
//! split in two instructions, Q5's fifth bits expanded from their u32 by a
//! byte shuffle and compare. Bit-identical to [`super::legacy`] (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::f16_at;

/// 32 nibbles of a block in element order (low nibbles, then high).
#[inline(always)]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let qs = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(qs, m);
    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), m);
    _mm256_set_m128i(hi, lo)
}

/// Shuffle lanes that repeat byte 0, 1, 2 or 3 eight times.
const BYTE: [i64; 4] = [
    0,
    0x0101_0101_0101_0101,
    0x0202_0202_0202_0202,
    0x0303_0303_0303_0303,
];

/// 0xff in byte i where bit i of the little-endian u32 at `p` is set.
#[inline(always)]
pub(super) unsafe fn bit_mask(p: *const u8) -> __m256i {
    let qh = (p as *const u32).read_unaligned() as i32;
    let [b0, b1, b2, b3] = BYTE;
    spread_bits(_mm256_set1_epi32(qh), _mm256_setr_epi64x(b0, b1, b2, b3))
}

/// 0xff in each byte whose bit (its index mod 8) is set in the byte of
/// `qh` that `shuf` picks for it.
#[inline(always)]
unsafe fn spread_bits(qh: __m256i, shuf: __m256i) -> __m256i {
    let bytes = _mm256_shuffle_epi8(qh, shuf);
    let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// 0x10 in byte i where bit i of the little-endian u32 at `p` is set.
#[inline(always)]
pub(super) unsafe fn fifth_bits(p: *const u8) -> __m256i {
    _mm256_and_si256(bit_mask(p), _mm256_set1_epi8(0x10))
}

/// Two blocks' nibbles at once (`p0`, `p1`: their 16 bytes): elements
/// 0..16 of both (the first block's in the low half), then 16..32 of both.
#[inline(always)]
pub(super) unsafe fn nibble_pair(p0: *const u8, p1: *const u8) -> (__m256i, __m256i) {
    let qs = _mm256_loadu2_m128i(p1 as *const __m128i, p0 as *const __m128i);
    let m = _mm256_set1_epi8(0x0f);
    (
        _mm256_and_si256(qs, m),
        _mm256_and_si256(_mm256_srli_epi16(qs, 4), m),
    )
}

/// [`fifth_bits`] of two blocks (`p0`, `p1`: their u32s) in
/// [`nibble_pair`]'s layout.
#[inline(always)]
pub(super) unsafe fn fifth_bit_pair(p0: *const u8, p1: *const u8) -> (__m256i, __m256i) {
    let h0 = (p0 as *const u32).read_unaligned() as i32;
    let h1 = (p1 as *const u32).read_unaligned() as i32;
    let qh = _mm256_set_m128i(_mm_set1_epi32(h1), _mm_set1_epi32(h0));
    // Each half: bytes 0..8 from qh's byte 0, 8..16 from byte 1 (elements
    // 0..16), or from bytes 2 and 3 (elements 16..32).
    let [b0, b1, b2, b3] = BYTE;
    let bit = _mm256_set1_epi8(0x10);
    (
        _mm256_and_si256(spread_bits(qh, _mm256_setr_epi64x(b0, b1, b0, b1)), bit),
        _mm256_and_si256(spread_bits(qh, _mm256_setr_epi64x(b2, b3, b2, b3)), bit),
    )
}

#[inline(always)]
unsafe fn store(q: &mut [i8], v: __m256i) {
    assert!(q.len() >= 32);
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v);
}

#[inline(always)]
fn set_scale(scale: &mut [f32], min: &mut [f32], d: f32, m: f32) {
    scale[..2].fill(d);
    min[..2].fill(m);
}

#[inline(always)]
pub unsafe fn decode_q4_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 18);
    store(
        q,
        _mm256_sub_epi8(nibbles(b.as_ptr().add(2)), _mm256_set1_epi8(8)),
    );
    set_scale(scale, min, f16_at(b, 0), 0.0);
}

#[inline(always)]
pub unsafe fn decode_q4_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 20);
    store(q, nibbles(b.as_ptr().add(4)));
    set_scale(scale, min, f16_at(b, 0), -f16_at(b, 2));
}

#[inline(always)]
pub unsafe fn decode_q5_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 22);
    let v = _mm256_or_si256(nibbles(b.as_ptr().add(6)), fifth_bits(b.as_ptr().add(2)));
    store(q, _mm256_sub_epi8(v, _mm256_set1_epi8(16)));
    set_scale(scale, min, f16_at(b, 0), 0.0);
}

#[inline(always)]
pub unsafe fn decode_q5_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 24);
    store(
        q,
        _mm256_or_si256(nibbles(b.as_ptr().add(8)), fifth_bits(b.as_ptr().add(4))),
    );
    set_scale(scale, min, f16_at(b, 0), -f16_at(b, 2));
}

#[inline(always)]
pub unsafe fn decode_q8_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    assert!(b.len() >= 34);
    store(q, _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i));
    set_scale(scale, min, f16_at(b, 0), 0.0);
}
