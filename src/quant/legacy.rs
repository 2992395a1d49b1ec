//! ggml's original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! In every one, element j < 16 comes from the low nibble of byte j and element
//! j + 16 from its high nibble (Q8_0: one signed byte per element).
//!
//! Written over fixed-size arrays (no bounds checks in the loops) so the
//! compiler vectorises them; the fifth bits of Q5 come from a byte table.

use super::f16_at;

/// BIT4[v]: byte i is 0x10 where bit i of v is set.
static BIT4: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut v = 0;
    while v < 256 {
        let mut i = 0;
        while i < 8 {
            if v & (1 << i) != 0 {
                t[v] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        v += 1;
    }
    t
};

/// The 32 fifth bits of a Q5 block, each as 0x10 or 0, in element order.
#[inline(always)]
fn fifth_bits(qh: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (k, &byte) in qh[..4].iter().enumerate() {
        out[k * 8..k * 8 + 8].copy_from_slice(&BIT4[byte as usize].to_le_bytes());
    }
    out
}

#[inline(always)]
fn split_q(q: &mut [i8]) -> (&mut [i8; 16], &mut [i8; 16]) {
    let (lo, hi) = q[..32].split_at_mut(16);
    (lo.try_into().expect("16"), hi.try_into().expect("16"))
}

#[inline(always)]
fn nibbles(b: &[u8], at: usize) -> &[u8; 16] {
    b[at..at + 16].try_into().expect("block size")
}

#[inline(always)]
fn set_scale(scale: &mut [f32], min: &mut [f32], d: f32, m: f32) {
    scale[..2].fill(d);
    min[..2].fill(m);
}

#[inline(always)]
pub fn decode_q4_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let qs = nibbles(b, 2);
    let (lo, hi) = split_q(q);
    for j in 0..16 {
        lo[j] = (qs[j] & 0x0f) as i8 - 8;
        hi[j] = (qs[j] >> 4) as i8 - 8;
    }
    set_scale(scale, min, f16_at(b, 0), 0.0);
}

#[inline(always)]
pub fn decode_q4_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let qs = nibbles(b, 4);
    let (lo, hi) = split_q(q);
    for j in 0..16 {
        lo[j] = (qs[j] & 0x0f) as i8;
        hi[j] = (qs[j] >> 4) as i8;
    }
    set_scale(scale, min, f16_at(b, 0), -f16_at(b, 2));
}

#[inline(always)]
pub fn decode_q5_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let h = fifth_bits(&b[2..6]);
    let qs = nibbles(b, 6);
    let (lo, hi) = split_q(q);
    for j in 0..16 {
        lo[j] = ((qs[j] & 0x0f) | h[j]) as i8 - 16;
        hi[j] = ((qs[j] >> 4) | h[16 + j]) as i8 - 16;
    }
    set_scale(scale, min, f16_at(b, 0), 0.0);
}

#[inline(always)]
pub fn decode_q5_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let h = fifth_bits(&b[4..8]);
    let qs = nibbles(b, 8);
    let (lo, hi) = split_q(q);
    for j in 0..16 {
        lo[j] = ((qs[j] & 0x0f) | h[j]) as i8;
        hi[j] = ((qs[j] >> 4) | h[16 + j]) as i8;
    }
    set_scale(scale, min, f16_at(b, 0), -f16_at(b, 2));
}

#[inline(always)]
pub fn decode_q8_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let src: &[u8; 32] = b[2..34].try_into().expect("block size");
    let dst: &mut [i8; 32] = (&mut q[..32]).try_into().expect("32");
    for j in 0..32 {
        dst[j] = src[j] as i8;
    }
    set_scale(scale, min, f16_at(b, 0), 0.0);
}
