//! Activations quantized once per row to 8 bits (32-element blocks, one f32
//! scale each, plus per-16 integer sums for the weight mins), and the integer
//! dot product of a decoded weight row with them. This mirrors how llama.cpp's
//! CPU backend multiplies quantized weights: integer products, scaled per block.

use super::{DecodedRow, GROUP};

pub const ACT_BLOCK: usize = 32;

/// One activation row quantized to int8.
#[derive(Default, Clone)]
pub struct QuantizedActs {
    pub q: Vec<i8>,
    /// Scale of each 16-group (the 32-block's scale, repeated), so the dot loop
    /// needs no division.
    pub d: Vec<f32>,
    /// Sum of `q` over each 16-group.
    pub sum: Vec<i32>,
}

impl QuantizedActs {
    pub fn quantize(&mut self, x: &[f32]) {
        let n = x.len();
        assert!(n % ACT_BLOCK == 0, "activation length {n} not a multiple of {ACT_BLOCK}");
        self.q.resize(n, 0);
        self.d.resize(n / GROUP, 0.0);
        self.sum.resize(n / GROUP, 0);
        for (b, xb) in x.chunks_exact(ACT_BLOCK).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let qb = &mut self.q[b * ACT_BLOCK..(b + 1) * ACT_BLOCK];
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
            for h in 0..2 {
                let g = b * 2 + h;
                self.d[g] = d;
                self.sum[g] = qb[h * GROUP..(h + 1) * GROUP].iter().map(|&v| v as i32).sum();
            }
        }
    }
}

#[inline(always)]
fn dot16(a: &[i8], b: &[i8]) -> i32 {
    let mut s = 0i32;
    for i in 0..GROUP {
        s += a[i] as i32 * b[i] as i32;
    }
    s
}

#[inline(always)]
fn dot_decoded_impl(w: &DecodedRow, x: &QuantizedActs) -> f32 {
    let mut acc = 0.0f32;
    let groups = w.scale.len();
    for g in 0..groups {
        let isum = dot16(&w.q[g * GROUP..(g + 1) * GROUP], &x.q[g * GROUP..(g + 1) * GROUP]);
        acc += x.d[g] * (w.scale[g] * isum as f32 - w.min[g] * x.sum[g] as f32);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_decoded_avx2(w: &DecodedRow, x: &QuantizedActs) -> f32 {
    dot_decoded_impl(w, x)
}

/// Portable dot product of a decoded weight row with a quantized activation row.
pub fn dot_decoded_portable(w: &DecodedRow, x: &QuantizedActs) -> f32 {
    dot_decoded_impl(w, x)
}

/// Dot product of a decoded weight row with a quantized activation row, using
/// the widest vector unit this CPU has.
pub fn dot_decoded(w: &DecodedRow, x: &QuantizedActs) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { dot_decoded_avx2(w, x) };
    }
    dot_decoded_impl(w, x)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// f32 dot product (for float weight types), vectorised where the CPU allows.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[inline(always)]
    fn imp(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let chunks = a.len() / 16;
        for c in 0..chunks {
            for i in 0..16 {
                acc[i] += a[c * 16 + i] * b[c * 16 + i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for i in chunks * 16..a.len() {
            s += a[i] * b[i];
        }
        s
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(a: &[f32], b: &[f32]) -> f32 {
            imp(a, b)
        }
        if has_avx2() {
            // SAFETY: feature checked at run time.
            return unsafe { avx2(a, b) };
        }
    }
    imp(a, b)
}
