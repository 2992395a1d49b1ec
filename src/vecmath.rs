//! f32 vector math that the sampler and the CPU backend share: the largest
//! value, e^x for x ≤ 0, and a sum, written so that loops over them
//! vectorize (their plain forms, a fold through `f32::max`, `f32::exp` and
//! a running sum, stay scalar).

/// The largest value, in 16 lanes the compiler turns into `vmaxps` (a fold
/// through `f32::max`, which orders NaN, stays scalar: ~0.2 ms over a 152k
/// vocabulary, twice a token). −∞ for an empty slice.
pub fn max_f32(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    for &v in rest {
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// The sum, in 16 lanes (a running sum is one dependent add per value).
pub fn sum_f32(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// e^x for x ≤ 0 (0 below −87), relative error < 3e-7: 2^(x·log2 e) split
/// into an integer power, set in the exponent bits, and a degree-6
/// polynomial of the fraction. Branch-free so loops over it vectorize.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    // n = round(x·log2 e) through the float adder (no libm call); f = x − n·ln 2
    // with ln 2 split in two (Cody–Waite) so f keeps its precision.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let f = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    // e^f for |f| ≤ ln2/2: Taylor to degree 6.
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_give_the_plain_max_and_sum() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for n in [0, 1, 15, 16, 17, 33, 100, 4001] {
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 20_000) as f32 / 1000.0 - 10.0
                })
                .collect();
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_f32(&x), max, "n = {n}");
            let sum: f64 = x.iter().map(|&v| v as f64).sum();
            let got = sum_f32(&x) as f64;
            assert!(
                (got - sum).abs() <= 1e-5 * (n as f64) * 10.0,
                "n = {n}: {got} vs {sum}"
            );
        }
    }
}
