//! Verifying one guessed token against the target's distribution.
//!
//! Greedy decoding needs no arithmetic: the guess is kept when it is the
//! token the target would have chosen. At temperature > 0 the standard
//! rejection step (Leviathan et al. 2023; Chen et al. 2023) keeps a guess d
//! drawn from q with probability min(1, p(d)/q(d)) and otherwise draws from
//! the normalised residual max(0, p − q); the token that comes out is
//! distributed exactly as p. `p` is the sampler's final distribution (after
//! penalties, top-k/top-p/min-p and temperature), so those are honoured too.

use crate::backend::Row;
use crate::sampler::{Sampled, Sampler};

/// Choose the token for one scored row of a round: `draft` is the guess
/// this row's logits judge (`None` for the round's last row, which only
/// samples), `q` the distribution it was drawn from. Returns the token and
/// whether it is the guess. `history` is the text before this row (for
/// penalties).
pub fn verify_row(
    sampler: &mut Sampler,
    row: Row<'_>,
    history: &[u32],
    draft: Option<u32>,
    q: Option<&[(u32, f32)]>,
) -> (Sampled, bool) {
    match draft {
        Some(d) if sampler.params.temperature > 0.0 => {
            let scored = sampler.score(row, history);
            let p = sampler.distribution(&scored);
            let (u, u2) = (sampler.uniform(), sampler.uniform());
            match accept_or_resample(&p, q, d, u, u2) {
                Ok(t) => (sampler.describe(&scored, t), true),
                Err(t) => (sampler.describe(&scored, t), false),
            }
        }
        _ => {
            let s = sampler.sample(row, history);
            let accepted = draft == Some(s.id);
            (s, accepted)
        }
    }
}

/// Probability of `id` in a sparse distribution.
pub fn prob(dist: &[(u32, f32)], id: u32) -> f32 {
    dist.iter().find(|(t, _)| *t == id).map_or(0.0, |(_, p)| *p)
}

/// The outcome of one rejection step: `Ok(d)` keeps the guess, `Err(t)`
/// replaces it with `t` (and ends the round).
///
/// `q` is the distribution `d` was drawn from; `None` means a deterministic
/// guess (q = 1 on `d`). `u` and `u2` are independent uniforms in [0, 1).
pub fn accept_or_resample(
    p: &[(u32, f32)],
    q: Option<&[(u32, f32)]>,
    d: u32,
    u: f32,
    u2: f32,
) -> Result<u32, u32> {
    let q_of = |id: u32| match q {
        Some(q) => prob(q, id),
        None => {
            if id == d {
                1.0
            } else {
                0.0
            }
        }
    };
    let (pd, qd) = (prob(p, d), q_of(d));
    if qd > 0.0 && u < (pd / qd).min(1.0) {
        return Ok(d);
    }
    let residual: Vec<(u32, f32)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - q_of(t)).max(0.0)))
        .filter(|(_, r)| *r > 0.0)
        .collect();
    let total: f32 = residual.iter().map(|(_, r)| r).sum();
    // p ≤ q everywhere only when p = q up to rounding: then p itself.
    let (dist, total) = if total > 0.0 {
        (residual, total)
    } else {
        (p.to_vec(), p.iter().map(|(_, x)| x).sum())
    };
    Err(crate::sampler::pick(&dist, u2 * total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    /// Chi-square goodness-of-fit p-value of `counts` against `p`.
    fn chi_square_p(counts: &[usize], p: &[f32]) -> f64 {
        let n: usize = counts.iter().sum();
        let stat: f64 = counts
            .iter()
            .zip(p)
            .map(|(&c, &pi)| {
                let e = n as f64 * pi as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        1.0 - ChiSquared::new((p.len() - 1) as f64).unwrap().cdf(stat)
    }

    fn draw(dist: &[(u32, f32)], rng: &mut ChaCha8Rng) -> u32 {
        crate::sampler::pick(dist, rng.random())
    }

    /// Output distribution of draw-from-q-then-verify, over `n` trials.
    fn run(
        p: &[(u32, f32)],
        q: Option<&[(u32, f32)]>,
        fixed: u32,
        wrong: bool,
        n: usize,
    ) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = vec![0usize; p.len()];
        for _ in 0..n {
            let d = match q {
                Some(q) => draw(q, &mut rng),
                None => fixed,
            };
            let (u, u2) = (rng.random(), rng.random());
            let t = if wrong {
                // A broken verifier: accepts every guess the target allows.
                if prob(p, d) > 0.0 {
                    d
                } else {
                    draw(p, &mut rng)
                }
            } else {
                accept_or_resample(p, q, d, u, u2).unwrap_or_else(|t| t)
            };
            counts[t as usize] += 1;
        }
        counts
    }

    #[test]
    fn output_follows_the_target_distribution_and_a_wrong_verifier_does_not() {
        let p: Vec<(u32, f32)> = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        let q: Vec<(u32, f32)> = [0.1, 0.1, 0.3, 0.3, 0.1, 0.1]
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        let probs: Vec<f32> = p.iter().map(|x| x.1).collect();
        let n = 20_000;
        let good = chi_square_p(&run(&p, Some(&q), 0, false, n), &probs);
        assert!(good > 0.01, "draft-model verification: p = {good}");
        // A deterministic guess (n-gram lookup), of a likely and an unlikely token.
        for fixed in [0, 5] {
            let g = chi_square_p(&run(&p, None, fixed, false, n), &probs);
            assert!(g > 0.01, "deterministic guess {fixed}: p = {g}");
        }
        let bad = chi_square_p(&run(&p, Some(&q), 0, true, n), &probs);
        assert!(bad < 1e-6, "the wrong verifier must fail: p = {bad}");
    }

    #[test]
    fn tokens_outside_the_target_support_are_never_kept() {
        let p = [(3u32, 1.0f32)];
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(accept_or_resample(&p, None, 7, u, 0.3), Err(3));
        }
        assert_eq!(accept_or_resample(&p, None, 3, 0.999, 0.3), Ok(3));
    }
}
