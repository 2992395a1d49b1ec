//! ggml's original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! In every one, element j < 16 comes from the low nibble of byte j and element
//! j + 16 from its high nibble (Q8_0: one signed byte per element).

use super::f16_at;

pub fn decode_q4_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        q[j] = (b[2 + j] & 0x0f) as i8 - 8;
        q[j + 16] = (b[2 + j] >> 4) as i8 - 8;
    }
    scale[..2].fill(d);
    min[..2].fill(0.0);
}

pub fn decode_q4_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        q[j] = (b[4 + j] & 0x0f) as i8;
        q[j + 16] = (b[4 + j] >> 4) as i8;
    }
    scale[..2].fill(d);
    min[..2].fill(-m);
}

fn fifth_bits(qh: u32, j: usize) -> (u8, u8) {
    let lo = (((qh >> j) << 4) & 0x10) as u8;
    let hi = ((qh >> (j + 12)) & 0x10) as u8;
    (lo, hi)
}

pub fn decode_q5_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        q[j] = ((b[6 + j] & 0x0f) | lo) as i8 - 16;
        q[j + 16] = ((b[6 + j] >> 4) | hi) as i8 - 16;
    }
    scale[..2].fill(d);
    min[..2].fill(0.0);
}

pub fn decode_q5_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let (lo, hi) = fifth_bits(qh, j);
        q[j] = ((b[8 + j] & 0x0f) | lo) as i8;
        q[j + 16] = ((b[8 + j] >> 4) | hi) as i8;
    }
    scale[..2].fill(d);
    min[..2].fill(-m);
}

pub fn decode_q8_0(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        q[j] = b[2 + j] as i8;
    }
    scale[..2].fill(d);
    min[..2].fill(0.0);
}
