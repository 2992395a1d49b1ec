//! ggml's k-quant formats: 256-element super-blocks with 6- or 8-bit sub-block
//! scales (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K). Layouts follow ggml's `block_qN_K`.

use super::f16_at;

/// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
#[inline(always)]
pub fn decode_q2_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let (sc, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let qh = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let s = sc[is];
                scale[is] = d * (s & 0x0f) as f32;
                min[is] = dmin * (s >> 4) as f32;
                for l in 0..16 {
                    q[out + l] = ((qh[part * 16 + l] >> shift) & 3) as i8;
                }
                out += 16;
                is += 1;
            }
        }
    }
}

/// Q3_K: hmask[32], qs[64], scales[12] (sixteen 6-bit signed scales), d.
#[inline(always)]
pub fn decode_q3_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let (hm, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let scales = unpack_q3_scales(sc);
    let mut out = 0;
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let qh = &qs[half * 32..half * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                scale[is] = d * (scales[is] as i32 - 32) as f32;
                min[is] = 0.0;
                for l in 0..16 {
                    let i = part * 16 + l;
                    let low = ((qh[i] >> shift) & 3) as i8;
                    q[out + l] = low - if hm[i] & m != 0 { 0 } else { 4 };
                }
                out += 16;
                is += 1;
            }
            m <<= 1;
        }
    }
}

#[inline(always)]
fn unpack_q3_scales(sc: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0x0f } else { sc[j - 8] >> 4 };
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = low | (high << 4);
    }
    out
}

/// 6-bit scale and min `j` (0..8) of Q4_K/Q5_K's packed 12-byte scales.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: d, dmin, scales[12], qs[128]; eight 32-element sub-blocks.
#[inline(always)]
pub fn decode_q4_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    q45_scales(b, scale, min);
    let qs: &[u8; 128] = b[16..144].try_into().expect("block size");
    let q: &mut [i8; 256] = (&mut q[..256]).try_into().expect("256");
    for chunk in 0..4 {
        for l in 0..32 {
            let v = qs[chunk * 32 + l];
            q[chunk * 64 + l] = (v & 0x0f) as i8;
            q[chunk * 64 + 32 + l] = (v >> 4) as i8;
        }
    }
}

/// Q5_K: d, dmin, scales[12], qh[32], qs[128]; the fifth bit of sub-block s
/// is bit s of qh.
#[inline(always)]
pub fn decode_q5_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    q45_scales(b, scale, min);
    let qh: &[u8; 32] = b[16..48].try_into().expect("block size");
    let qs: &[u8; 128] = b[48..176].try_into().expect("block size");
    let q: &mut [i8; 256] = (&mut q[..256]).try_into().expect("256");
    for chunk in 0..4 {
        let (s0, s1) = (2 * chunk, 2 * chunk + 1);
        for l in 0..32 {
            let v = qs[chunk * 32 + l];
            q[chunk * 64 + l] = ((v & 0x0f) | (((qh[l] >> s0) & 1) << 4)) as i8;
            q[chunk * 64 + 32 + l] = ((v >> 4) | (((qh[l] >> s1) & 1) << 4)) as i8;
        }
    }
}

#[inline(always)]
pub(super) fn q45_scales(b: &[u8], scale: &mut [f32], min: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let sc = &b[4..16];
    for sub in 0..8 {
        let (s, m) = scale_min_k4(sub, sc);
        scale[sub * 2..sub * 2 + 2].fill(d * s as f32);
        min[sub * 2..sub * 2 + 2].fill(dmin * m as f32);
    }
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d.
#[inline(always)]
pub fn decode_q6_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let ql: &[u8; 128] = b[0..128].try_into().expect("block size");
    let qh: &[u8; 64] = b[128..192].try_into().expect("block size");
    let sc = &b[192..208];
    let d = f16_at(b, 208);
    let q: &mut [i8; 256] = (&mut q[..256]).try_into().expect("256");
    for half in 0..2 {
        let (l0, h0, base) = (half * 64, half * 32, half * 128);
        for l in 0..32 {
            let h = qh[h0 + l];
            q[base + l] = ((ql[l0 + l] & 0x0f) | ((h & 3) << 4)) as i8 - 32;
            q[base + l + 32] = ((ql[l0 + l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i8 - 32;
            q[base + l + 64] = ((ql[l0 + l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            q[base + l + 96] = ((ql[l0 + l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    for g in 0..16 {
        scale[g] = d * (sc[g] as i8) as f32;
        min[g] = 0.0;
    }
}
