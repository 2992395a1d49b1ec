//! Choosing the next token from logits: penalties (repetition, presence,
//! frequency), then top-k, top-p, min-p and temperature, then a draw from a
//! seeded ChaCha RNG (reproducible across runs and platforms), or the argmax
//! at temperature 0. A draw with nothing truncating is the Gumbel-max draw
//! under a key from that RNG, which a GPU makes where the logits are
//! ([`crate::backend::logits`]); a row may arrive summarised (its best
//! candidates) when that is all the settings need ([`Sampler::readout`]).
//! Log-probabilities are reported from the penalised logits before
//! truncation and temperature, as llama.cpp reports them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::backend::logits::gumbel_argmax;
use crate::backend::logits::MAX_TOP_K;
use crate::backend::{DrawKey, Readout, Row, TopRow};
pub use crate::vecmath::{exp_neg, max_f32};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u64,
    /// How many top candidates to report with their log-probabilities.
    pub n_probs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
            n_probs: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Self::default()
        }
    }

    /// Whether a penalty moves any logit.
    pub fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("{what} is out of range"));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature (must be ≥ 0)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p (must be in (0, 1])");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p (must be in [0, 1])");
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad("repeat_penalty (must be > 0)");
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence/frequency penalty");
        }
        Ok(())
    }
}

/// The chosen token and what was reported about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sampled {
    pub id: u32,
    pub logprob: f32,
    /// The `n_probs` most likely candidates, best first.
    pub top: Vec<(u32, f32)>,
}

/// A logit row with the penalties applied, ready to choose from.
pub enum Scored<'a> {
    Full(Cow<'a, [f32]>),
    Top(TopRow<'a>),
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: ChaCha8Rng,
    /// The key handed out for the next untruncated draw ([`Sampler::draw_key`]).
    pending: Option<DrawKey>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            pending: None,
        }
    }

    /// What this sampler needs of a logit row: the k best candidates decide
    /// a greedy choice, or a draw with top-k set, when no penalty moves
    /// logits (a penalty can lift a token from anywhere in the vocabulary).
    /// A draw from the whole vocabulary (top-k, top-p and min-p off) needs
    /// no candidates but one drawn token: `Draw`, whose keys the caller
    /// fills in from [`Sampler::draw_key`].
    pub fn readout(&self) -> Readout {
        let p = &self.params;
        let k = if p.has_penalties() {
            return Readout::Full;
        } else if p.temperature <= 0.0 {
            1
        } else if p.top_k > 0 {
            p.top_k
        } else if self.untruncated() {
            return match p.n_probs.max(1) {
                k if k > MAX_TOP_K => Readout::Full,
                k => Readout::Draw(k, Vec::new()),
            };
        } else {
            return Readout::Full;
        };
        let k = k.max(p.n_probs);
        if k > MAX_TOP_K {
            Readout::Full
        } else {
            Readout::Top(k)
        }
    }

    /// The readout of a pass that gives this sampler `rows` rows to choose
    /// from, a draw's key included: rows that verify guesses need the whole
    /// distribution, which a drawn token does not give.
    pub fn readout_for(&mut self, rows: usize) -> Readout {
        match self.readout() {
            Readout::Draw(k, _) if rows == 1 => Readout::Draw(k, vec![self.draw_key()]),
            Readout::Draw(..) => Readout::Full,
            r => r,
        }
    }

    /// The key of the next untruncated draw, for a `Draw` readout: the row
    /// it is given to must be the next one this sampler chooses from.
    pub fn draw_key(&mut self) -> DrawKey {
        let d = self.new_key();
        self.pending = Some(d);
        d
    }

    fn new_key(&mut self) -> DrawKey {
        DrawKey {
            key: self.rng.random(),
            inv_temp: 1.0 / self.params.temperature.max(f32::MIN_POSITIVE),
        }
    }

    /// Choose from one row of logits, given the tokens generated or read so
    /// far (for the penalties).
    pub fn sample(&mut self, row: Row<'_>, history: &[u32]) -> Sampled {
        let scored = self.score(row, history);
        let id = self.choose(&scored);
        self.describe(&scored, id)
    }

    /// The row with penalties applied. A summarised row must have come from
    /// this sampler's [`Sampler::readout`], which asks for full rows whenever
    /// penalties are on.
    pub fn score<'a>(&self, row: Row<'a>, history: &[u32]) -> Scored<'a> {
        match row {
            Row::Full(l) if self.params.has_penalties() => {
                let mut l = l.to_vec();
                apply_penalties(&mut l, history, &self.params);
                Scored::Full(Cow::Owned(l))
            }
            Row::Full(l) => Scored::Full(Cow::Borrowed(l)),
            Row::Top(t) => {
                debug_assert!(
                    self.readout().k().is_some(),
                    "a summarised row for a sampler that needs full rows"
                );
                Scored::Top(t)
            }
        }
    }

    /// The argmax at temperature 0, else a draw from [`Sampler::distribution`].
    pub fn choose(&mut self, s: &Scored<'_>) -> u32 {
        if self.params.temperature > 0.0 && self.untruncated() {
            // The Gumbel-max draw, here or (a summarised row) on the device,
            // with the same key and noise.
            let pending = self.pending.take();
            match s {
                Scored::Top(TopRow {
                    drawn: Some((id, _)),
                    ..
                }) => return *id,
                Scored::Full(l) => {
                    return gumbel_argmax(l, pending.unwrap_or_else(|| self.new_key()))
                }
                Scored::Top(_) => {}
            }
        }
        if self.params.temperature > 0.0 {
            let dist = self.distribution(s);
            return self.draw_from(&dist);
        }
        match s {
            Scored::Full(l) => argmax(l),
            Scored::Top(t) => t.ids[0],
        }
    }

    /// What `sample` reports for choosing `id`: its log-probability and the
    /// top candidates.
    pub fn describe(&self, s: &Scored<'_>, id: u32) -> Sampled {
        let n = self.params.n_probs;
        match s {
            Scored::Full(logits) => {
                // log-softmax is the logits shifted by one constant: rank the
                // logits, shift only what is reported (a full log-softmax
                // vector of a 152k vocabulary cost more per token than a GPU
                // decode step).
                let lse = log_sum_exp(logits);
                Sampled {
                    id,
                    logprob: logits[id as usize] - lse,
                    top: top_by_logit(logits, n)
                        .into_iter()
                        .map(|(i, l)| (i, l - lse))
                        .collect(),
                }
            }
            Scored::Top(t) => Sampled {
                id,
                // Every token this sampler can choose is a candidate (its
                // readout asks for enough of them).
                logprob: t.logit(id).unwrap_or(f32::NEG_INFINITY) - t.lse,
                top: t
                    .candidates()
                    .take(n)
                    .map(|(i, l)| (i, l - t.lse))
                    .collect(),
            },
        }
    }

    /// The distribution a draw at temperature > 0 samples from, after top-k,
    /// top-p, min-p and temperature (penalties are already in `s`): the
    /// surviving candidates, most likely first (in id order when nothing
    /// truncates), with probabilities summing to 1. Speculative decoding
    /// verifies drafts against exactly this.
    pub fn distribution(&self, s: &Scored<'_>) -> Vec<(u32, f32)> {
        let p = &self.params;
        let top_k = p.top_k;
        if let (Scored::Full(l), true) = (s, self.untruncated()) {
            // Nothing truncates by rank: the whole vocabulary in id order,
            // with no sort (one of 152k logits cost 4.5 ms a token).
            return softmax_at(l, p.temperature)
                .into_iter()
                .enumerate()
                .map(|(i, pr)| (i as u32, pr))
                .collect();
        }
        let cand = match s {
            Scored::Full(l) => top_by_logit(l, if top_k > 0 { top_k } else { l.len() }),
            Scored::Top(t) => t
                .candidates()
                .take(if top_k > 0 { top_k } else { t.ids.len() })
                .collect(),
        };
        self.truncate_and_scale(cand)
    }

    /// Whether a draw keeps every token (no top-k, top-p or min-p).
    fn untruncated(&self) -> bool {
        let p = &self.params;
        p.top_k == 0 && p.top_p >= 1.0 && p.min_p <= 0.0
    }

    /// Top-p, min-p and temperature over candidates ranked best first.
    fn truncate_and_scale(&self, mut cand: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
        let p = &self.params;
        // Softmax over the survivors at temperature 1 for top-p/min-p.
        let probs = softmax(&cand.iter().map(|c| c.1).collect::<Vec<_>>());
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = cand.len();
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        if p.min_p > 0.0 {
            let thresh = probs[0] * p.min_p;
            let keep = probs
                .iter()
                .take(cand.len())
                .take_while(|&&pr| pr >= thresh)
                .count()
                .max(1);
            cand.truncate(keep);
        }
        let temp = p.temperature.max(f32::MIN_POSITIVE);
        let scaled: Vec<f32> = cand.iter().map(|c| c.1 / temp).collect();
        cand.iter()
            .zip(softmax(&scaled))
            .map(|(c, pr)| (c.0, pr))
            .collect()
    }

    /// One draw from `dist` with this sampler's RNG.
    pub fn draw_from(&mut self, dist: &[(u32, f32)]) -> u32 {
        pick(dist, self.rng.random())
    }

    /// A uniform number in [0, 1) from this sampler's RNG.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random()
    }
}

/// The candidate at `r` along the cumulative weights of `dist`; `r` in
/// [0, Σ weights) (weights need not be normalised). Rounding that leaves `r`
/// past the last sum picks the last candidate.
pub fn pick(dist: &[(u32, f32)], r: f32) -> u32 {
    let mut cum = 0.0;
    for &(id, w) in dist {
        cum += w;
        if r < cum {
            return id;
        }
    }
    dist.last().expect("at least one candidate").0
}

pub fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    if !p.has_penalties() {
        return;
    }
    let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
    let mut counts = std::collections::HashMap::new();
    for &t in recent {
        *counts.entry(t).or_insert(0u32) += 1;
    }
    for (&t, &n) in &counts {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        if *l > 0.0 {
            *l /= p.repeat_penalty;
        } else {
            *l *= p.repeat_penalty;
        }
        *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// The first index of the largest value (NaN never wins unless all are).
pub fn argmax(x: &[f32]) -> u32 {
    let max = max_f32(x);
    x.iter().position(|&v| v == max).unwrap_or(0) as u32
}

pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = max_f32(x);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// softmax(x / t) through [`exp_neg`] (the vectorized exponential: `f32::exp`
/// per element took ~1.5 ms over 152k logits).
pub fn softmax_at(x: &[f32], t: f32) -> Vec<f32> {
    let inv = 1.0 / t.max(f32::MIN_POSITIVE);
    let max = max_f32(x);
    let e: Vec<f32> = x.iter().map(|&v| exp_neg((v - max) * inv)).collect();
    let s: f64 = e.chunks(8).map(|c| c.iter().sum::<f32>() as f64).sum();
    let inv_s = (1.0 / s) as f32;
    e.into_iter().map(|v| v * inv_s).collect()
}

pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(x);
    x.iter().map(|v| v - lse).collect()
}

/// ln Σ exp(x), through [`exp_neg`] on x − max in blocks of 8 that the
/// compiler vectorizes (f64 `exp` per element took ~1.4 ms on 152k logits).
pub fn log_sum_exp(x: &[f32]) -> f32 {
    let max = max_f32(x);
    if !max.is_finite() {
        return max;
    }
    let mut total = 0f64;
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let mut acc = 0f32;
        for &v in c {
            acc += exp_neg(v - max);
        }
        total += acc as f64;
    }
    total += rest.iter().map(|&v| exp_neg(v - max) as f64).sum::<f64>();
    max + total.ln() as f32
}

/// The `n` largest logits as (id, logit), most likely first, ties to the
/// lower id. That order is total, so selecting the first `n` and sorting only
/// them gives exactly a full sort's first `n` (a full sort of a 152k
/// vocabulary took 4.5 ms a token).
pub fn top_by_logit(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if n <= FEW {
        return top_few(logits, n, order);
    }
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    if n < cand.len() {
        cand.select_nth_unstable_by(n - 1, order);
        cand.truncate(n);
    }
    cand.sort_unstable_by(order);
    cand
}

/// Up to this many candidates, [`top_by_logit`] keeps them in a sorted list
/// while it scans: the selection's copy of a 152k vocabulary as pairs
/// (1.2 MB, zeroed by the kernel each token) took ~1.5 ms a token on the CPU.
const FEW: usize = 64;

/// The `n` best in one pass: a logit enters the list only if it beats the
/// worst kept. Ids come in ascending order, so an equal logit never does.
fn top_few(
    logits: &[f32],
    n: usize,
    order: impl Fn(&(u32, f32), &(u32, f32)) -> std::cmp::Ordering,
) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (i, &l) in logits.iter().enumerate() {
        let c = (i as u32, l);
        if top.len() == n && order(&c, &top[n - 1]).is_ge() {
            continue;
        }
        let at = top.partition_point(|t| order(t, &c).is_lt());
        top.insert(at, c);
        top.truncate(n);
    }
    top
}

#[cfg(test)]
mod tests;
