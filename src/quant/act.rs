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
    /// Sum of `q` over each 16-group (at most 16·127, so i16 as `madd` wants).
    pub sum: Vec<i16>,
    /// `d * sum` per 16-group: what a weight min multiplies.
    pub dsum: Vec<f32>,
}

/// How activations are quantized for a weight type, matching llama.cpp's
/// `vec_dot_type`: legacy 32-blocks pair with Q8_0/Q8_1 (one f16 scale per
/// 32), k-quants with Q8_K (one f32 scale per 256). The choice matters for
/// agreeing with llama.cpp: small models amplify these rounding differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ActFormat {
    Q8_0,
    Q8_K,
}

impl ActFormat {
    pub fn for_weight(ty: super::GgmlType) -> Self {
        if ty.block_size() == 256 {
            ActFormat::Q8_K
        } else {
            ActFormat::Q8_0
        }
    }
}

impl QuantizedActs {
    pub fn quantize(&mut self, x: &[f32], format: ActFormat) {
        let n = x.len();
        assert!(
            n.is_multiple_of(format.block()),
            "activation length {n} not a multiple of {}",
            format.block()
        );
        self.q.resize(n, 0);
        self.d.resize(n / GROUP, 0.0);
        self.sum.resize(n / GROUP, 0);
        self.dsum.resize(n / GROUP, 0.0);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA; the buffers were sized above.
            unsafe { super::act_avx2::quantize(self, x, format) };
            return;
        }
        self.quantize_portable(x, format);
    }

    /// The reference the SIMD quantizer is tested against, bit for bit.
    pub fn quantize_portable(&mut self, x: &[f32], format: ActFormat) {
        let block = format.block();
        let groups = block / GROUP;
        for (b, xb) in x.chunks_exact(block).enumerate() {
            let qb = &mut self.q[b * block..(b + 1) * block];
            let (d, d_exact) = match format {
                ActFormat::Q8_0 => quantize_block_q8_0(xb, qb),
                ActFormat::Q8_K => quantize_block_q8_k(xb, qb),
            };
            for h in 0..groups {
                let g = b * groups + h;
                self.d[g] = d;
                self.sum[g] = qb[h * GROUP..(h + 1) * GROUP]
                    .iter()
                    .map(|&v| v as i16)
                    .sum();
            }
            self.finish_block(b, format, d_exact);
        }
    }

    /// The weight-min terms of block `b`, once its values and sums are set.
    #[inline(always)]
    pub(super) fn finish_block(&mut self, b: usize, format: ActFormat, d_exact: f32) {
        match format {
            ActFormat::Q8_0 => {
                // Q8_1's block sum, f16(d · Σq), carried on the block's first
                // group (legacy weights share one min across the block).
                let sum = self.sum[2 * b] as i32 + self.sum[2 * b + 1] as i32;
                self.dsum[2 * b] = half::f16::from_f32(d_exact * sum as f32).to_f32();
                self.dsum[2 * b + 1] = 0.0;
            }
            ActFormat::Q8_K => {
                for g in 16 * b..16 * (b + 1) {
                    self.dsum[g] = self.d[g] * self.sum[g] as f32;
                }
            }
        }
    }
}

impl ActFormat {
    /// Values per scale.
    pub fn block(self) -> usize {
        match self {
            ActFormat::Q8_0 => ACT_BLOCK,
            ActFormat::Q8_K => 256,
        }
    }
}

/// Q8_0: scale amax/127 stored as f16 (the dot uses the rounded scale).
/// Returns (rounded scale, exact scale).
fn quantize_block_q8_0(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    (half::f16::from_f32(d).to_f32(), d)
}

/// Q8_K: the value of largest magnitude maps to -127 exactly; f32 scale.
fn quantize_block_q8_k(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return (0.0, 0.0);
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    (1.0 / iscale, 1.0 / iscale)
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
        let isum = dot16(
            &w.q[g * GROUP..(g + 1) * GROUP],
            &x.q[g * GROUP..(g + 1) * GROUP],
        );
        acc += x.d[g] * w.scale[g] * isum as f32 - w.min[g] * x.dsum[g];
    }
    acc
}

/// AVX2: 32 products per step with `maddubs` (|w| as unsigned times a with
/// w's sign), pairs summed to i32 with `madd`, scaled in float by the
/// pre-expanded weight and activation scales. Integer sums are exact; only the
/// float summation order differs from the portable path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_decoded_avx2(w: &DecodedRow, x: &QuantizedActs) -> f32 {
    use std::arch::x86_64::*;
    let n = w.q.len();
    debug_assert!(n.is_multiple_of(32) && x.q.len() == n);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let (wq, aq) = (w.q.as_ptr(), x.q.as_ptr());
    let (ws, ad) = (w.scale.as_ptr(), x.d.as_ptr());
    for c in 0..n / 32 {
        let wv = _mm256_loadu_si256(wq.add(c * 32) as *const __m256i);
        let av = _mm256_loadu_si256(aq.add(c * 32) as *const __m256i);
        let p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv));
        let p32 = _mm256_madd_epi16(p16, ones);
        // Lanes 0-3 hold the first 16-group's sums, lanes 4-7 the second's.
        let lo = _mm_set1_ps(*ws.add(2 * c) * *ad.add(2 * c));
        let hi = _mm_set1_ps(*ws.add(2 * c + 1) * *ad.add(2 * c + 1));
        let sc = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), sc, acc);
    }
    let mut total = hsum256(acc);
    if w.has_min {
        total -= dot_f32_avx2(&w.min, &x.dsum);
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
        a1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            a1,
        );
        i += 16;
    }
    if i + 8 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), a0);
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(a0, a1));
    while i < n {
        s += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    s
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

/// AVX2 with FMA and F16C: the x86 level the fast paths are compiled for.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

#[inline(always)]
fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
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
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_f32_avx2(y: &mut [f32], w: f32, x: &[f32]) {
    use std::arch::x86_64::*;
    let n = y.len().min(x.len());
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(wv, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    while i < n {
        *py.add(i) = w.mul_add(*px.add(i), *py.add(i));
        i += 1;
    }
}

/// `y += w · x` (attention's weighted sum of values), fused multiply-adds
/// where the CPU has them (as ggml's `vec_mad` does).
pub fn axpy_f32(y: &mut [f32], w: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: feature checked at run time.
        return unsafe { axpy_f32_avx2(y, w, x) };
    }
    y.iter_mut().zip(x).for_each(|(a, b)| *a += w * b);
}

/// f32 dot product (float weights, attention), vectorised where the CPU allows.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: feature checked at run time.
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_impl(a, b)
}
