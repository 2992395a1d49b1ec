//! AVX2 activation quantization: the same arithmetic as
//! [`QuantizedActs::quantize_portable`] (same divisions, ties-to-even
//! rounding, saturation), eight values per instruction. Bit-identical to it
//! (tested).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::{ActFormat, QuantizedActs};
use super::GROUP;

/// # Safety
/// The CPU has AVX2 and FMA; `out`'s buffers are sized for `x` (as
/// [`QuantizedActs::quantize`] does).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize(out: &mut QuantizedActs, x: &[f32], format: ActFormat) {
    let block = format.block();
    let groups = block / GROUP;
    for (b, xb) in x.chunks_exact(block).enumerate() {
        let p = xb.as_ptr();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut vmax = _mm256_setzero_ps();
        for i in (0..block).step_by(8) {
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(p.add(i)), abs_mask));
        }
        let amax = hmax(vmax);
        let (mul, d, d_exact) = match format {
            ActFormat::Q8_0 => {
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                (id, half::f16::from_f32(d).to_f32(), d)
            }
            ActFormat::Q8_K => {
                if amax == 0.0 {
                    (0.0, 0.0, 0.0)
                } else {
                    // The first value of largest magnitude, with its sign.
                    let max = *xb
                        .iter()
                        .find(|v| v.abs() == amax)
                        .expect("amax is one of them");
                    let iscale = -127.0 / max;
                    (iscale, 1.0 / iscale, 1.0 / iscale)
                }
            }
        };
        let vmul = _mm256_set1_ps(mul);
        let q = out.q.as_mut_ptr().add(b * block);
        for h in 0..groups {
            let i = h * GROUP;
            let r = |k: usize| {
                let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(i + k)), vmul);
                _mm256_cvtps_epi32(_mm256_round_ps(
                    v,
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                ))
            };
            let (a, c) = (r(0), r(8));
            // Saturating packs keep the portable path's clamps (`as i8`,
            // `min(127)`); the lane interleave is undone by the permute.
            let w16 = _mm256_packs_epi32(a, c);
            let w16 = _mm256_permute4x64_epi64(w16, 0b11_01_10_00);
            let w8 = _mm_packs_epi16(
                _mm256_castsi256_si128(w16),
                _mm256_extracti128_si256(w16, 1),
            );
            _mm_storeu_si128(q.add(i) as *mut __m128i, w8);
            let g = b * groups + h;
            out.d[g] = d;
            // Sum of the saturated bytes, as the portable path sums them.
            let s16 = _mm256_cvtepi8_epi16(w8);
            let s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            out.sum[g] = hsum_i32(s32) as i16;
        }
        out.finish_block(b, format, d_exact);
    }
}

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)))
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01)))
}
