//! Quantizing f32 rows into ggml block formats: ggml's reference algorithms
//! for Q8_0, Q5_0, Q4_K and Q6_K (the types the `_M` mixtures of the models
//! here use), Q4_0 and Q4_1 (SmolLM2's), plus F16. `synth` writes random models with these; a GGUF
//! requantizer will use them too. Each is tested by decoding with the readers
//! in this module's siblings.

use half::f16;

use super::GgmlType;

/// Whether [`quantize_row`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | Q8_0 | Q5_0 | Q4_0 | Q4_1 | Q4_K | Q6_K)
}

/// Append the encoding of `x` (a whole number of blocks) to `out`.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    assert!(can_quantize(ty), "no quantizer for {ty:?}");
    assert_eq!(x.len() % ty.block_size(), 0, "row is not whole blocks");
    match ty {
        GgmlType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => x.chunks(32).for_each(|b| q8_0_block(b, out)),
        GgmlType::Q5_0 => x.chunks(32).for_each(|b| q5_0_block(b, out)),
        GgmlType::Q4_0 => x.chunks(32).for_each(|b| q4_0_block(b, out)),
        GgmlType::Q4_1 => x.chunks(32).for_each(|b| q4_1_block(b, out)),
        GgmlType::Q4_K => x.chunks(256).for_each(|b| q4_k_block(b, out)),
        GgmlType::Q6_K => x.chunks(256).for_each(|b| q6_k_block(b, out)),
        _ => unreachable!(),
    }
}

fn put_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// ggml's rounding (half to even, through the float adder): the same
/// levels as ggml's quantizers, and no libm call (|v| < 2^22).
fn nearest_int(v: f32) -> i32 {
    let f = v + 12_582_912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, d);
    out.extend(x.iter().map(|v| nearest_int(v * id) as i8 as u8));
}

/// The element of largest magnitude, with its sign.
fn signed_max(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

fn q5_0_block(x: &[f32], out: &mut Vec<u8>) {
    let max = signed_max(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| ((v * id + 16.5) as i32).clamp(0, 31) as u32;
    let mut qh = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let (a, b) = (q(x[j]), q(x[j + 16]));
        qs[j] = ((a & 15) | ((b & 15) << 4)) as u8;
        qh |= ((a >> 4) & 1) << j;
        qh |= ((b >> 4) & 1) << (j + 16);
    }
    put_f16(out, d);
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend_from_slice(&qs);
}

/// Nibbles of a 32-value block: value j in the low half of byte j, value
/// j + 16 in the high half.
fn put_nibbles(out: &mut Vec<u8>, q: impl Fn(f32) -> u8, x: &[f32]) {
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    let max = signed_max(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, d);
    put_nibbles(out, |v| ((v * id + 8.5) as i32).min(15) as u8, x);
}

fn q4_1_block(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, d);
    put_f16(out, min);
    put_nibbles(out, |v| (((v - min) * id + 0.5) as i32).min(15) as u8, x);
}

/// ggml's `make_qkx2_quants`: an asymmetric `scale·l − min` fit of `x` with
/// levels 0..=nmax, searching scales around the range's for the least
/// weighted squared error. Returns (scale, min) with min ≥ 0 meaning
/// `x ≈ scale·l − min`.
fn make_qkx2_quants(x: &[f32], w: &[f32], nmax: i32, l: &mut [u8]) -> (f32, f32) {
    let (rmin, rdelta, nstep) = (-1.0f32, 0.1f32, 20);
    let mut min = x.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum_w: f32 = w.iter().sum();
    let sum_x: f32 = w.iter().zip(x).map(|(w, x)| w * x).sum();
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let quant = |v: f32, min: f32, iscale: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let err = |scale: f32, min: f32, l: &[u8]| -> f32 {
        x.iter()
            .zip(w)
            .zip(l)
            .map(|((x, w), &l)| {
                let diff = scale * l as f32 + min - x;
                w * diff * diff
            })
            .sum()
    };
    for (li, &v) in l.iter_mut().zip(x) {
        *li = quant(v, min, iscale) as u8;
    }
    let mut best = err(scale, min, l);
    let sum_x2: f32 = w.iter().zip(x).map(|(w, x)| w * x * x).sum();
    let mut aux = [0u8; 256];
    let laux = &mut aux[..x.len()];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((la, &v), &wi) in laux.iter_mut().zip(x).zip(w) {
            let q = quant(v, min, iscale);
            *la = q as u8;
            sum_l += wi * q as f32;
            sum_l2 += wi * (q * q) as f32;
            sum_xl += wi * q as f32 * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            // Σw(s·l + m − x)² expanded over the sums above: O(1) per step.
            let (s_, m_) = (this_scale, this_min);
            let e = s_ * s_ * sum_l2 + 2.0 * s_ * m_ * sum_l - 2.0 * s_ * sum_xl + m_ * m_ * sum_w
                - 2.0 * m_ * sum_x
                + sum_x2;
            if e < best {
                l.copy_from_slice(laux);
                best = e;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

fn q4_k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(xs, &w, 15, &mut l[32 * j..32 * (j + 1)]);
    }
    let max_scale = scales.iter().cloned().fold(0f32, f32::max);
    let max_min = mins.iter().cloned().fold(0f32, f32::max);
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    let mut ls_all = [0u8; 8];
    let mut lm_all = [0u8; 8];
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
        let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
        (ls_all[j], lm_all[j]) = (ls, lm);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0).to_f32();
    let dmin = f16::from_f32(max_min / 63.0).to_f32();
    for j in 0..8 {
        let ds = d * ls_all[j] as f32;
        if ds == 0.0 {
            continue;
        }
        let dm = dmin * lm_all[j] as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / ds).clamp(0, 15) as u8;
        }
    }
    put_f16(out, max_scale / 63.0);
    put_f16(out, max_min / 63.0);
    out.extend_from_slice(&sc);
    for chunk in 0..4 {
        for i in 0..32 {
            out.push(l[64 * chunk + i] | (l[64 * chunk + 32 + i] << 4));
        }
    }
}

/// ggml's `make_qx_quants` with rmse_type 1: a symmetric fit with levels
/// −nmax..nmax−1, weighted by x², searching nearby scales. Stores l + nmax.
fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [u8]) -> f32 {
    let max = signed_max(x);
    if max.abs() < 1e-30 {
        l.fill(nmax as u8);
        return 0.0;
    }
    let fit = |iscale: f32, l: &mut [u8]| -> (f32, f32) {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for (li, &v) in l.iter_mut().zip(x) {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            *li = (q + nmax) as u8;
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * (q * q) as f32;
        }
        (sumlx, suml2)
    };
    let (mut sumlx, mut suml2) = fit(-(nmax as f32) / max, l);
    let mut scale = if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    let mut aux = [0u8; 256];
    let laux = &mut aux[..x.len()];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sx, s2) = fit(iscale, laux);
        if s2 > 0.0 && sx * sx > best * s2 {
            l.copy_from_slice(laux);
            (sumlx, suml2) = (sx, s2);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn q6_k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 16];
    for ib in 0..16 {
        scales[ib] = make_qx_quants(
            &x[16 * ib..16 * (ib + 1)],
            32,
            &mut l[16 * ib..16 * (ib + 1)],
        );
    }
    let max_scale = signed_max(&scales);
    let mut sc = [0i8; 16];
    let mut d = 0f32;
    if max_scale.abs() >= 1e-30 {
        let iscale = -128.0 / max_scale;
        d = f16::from_f32(1.0 / iscale).to_f32();
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            let ds = d * sc[ib] as f32;
            if ds == 0.0 {
                continue;
            }
            for i in 0..16 {
                let q = nearest_int(x[16 * ib + i] / ds).clamp(-32, 31);
                l[16 * ib + i] = (q + 32) as u8;
            }
        }
    } else {
        l.fill(32);
    }
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for half in 0..2 {
        let (j, lo, ho) = (128 * half, 64 * half, 32 * half);
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k];
            ql[lo + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            ql[lo + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            qh[ho + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    put_f16(out, d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;

    fn random_row(n: usize, seed: u64) -> Vec<f32> {
        crate::rng::XorShift::new(seed)
            .take(n)
            .map(|s| ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0)
            .collect()
    }

    /// Relative RMS error of a round trip through `ty`.
    fn round_trip_error(ty: GgmlType, x: &[f32]) -> f32 {
        let mut bytes = Vec::new();
        quantize_row(ty, x, &mut bytes);
        assert_eq!(bytes.len(), ty.row_bytes(x.len()));
        let mut y = vec![0f32; x.len()];
        dequantize_row(ty, &bytes, &mut y);
        let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let norm: f32 = x.iter().map(|a| a * a).sum();
        (err / norm).sqrt()
    }

    #[test]
    fn round_trips_stay_within_each_formats_precision() {
        // Uniform data: the expected relative RMS error of a b-bit grid over
        // the block's range is about 2^-b; the bounds leave a margin of ~1.5x
        // and fail if a level, scale or nibble is misplaced.
        let x = random_row(4096, 7);
        for (ty, bound) in [
            (GgmlType::F16, 1e-3),
            (GgmlType::Q8_0, 0.01),
            (GgmlType::Q6_K, 0.03),
            (GgmlType::Q5_0, 0.05),
            (GgmlType::Q4_0, 0.12),
            (GgmlType::Q4_1, 0.09),
            (GgmlType::Q4_K, 0.09),
        ] {
            let e = round_trip_error(ty, &x);
            assert!(e < bound, "{ty:?}: relative error {e} ≥ {bound}");
        }
    }

    #[test]
    fn zero_and_constant_blocks_decode_exactly() {
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let mut bytes = Vec::new();
            quantize_row(ty, &[0.0; 512], &mut bytes);
            let mut y = vec![1f32; 512];
            dequantize_row(ty, &bytes, &mut y);
            assert!(
                y.iter().all(|&v| v == 0.0),
                "{ty:?}: zeros do not decode to zeros"
            );
            let c = vec![0.25f32; 512];
            assert!(round_trip_error(ty, &c) < 0.01, "{ty:?}");
        }
    }
}
