//! Speculative decoding: a proposer guesses the next k tokens cheaply, the
//! target model scores the pending token and the k guesses in one forward
//! pass, and verification keeps the longest prefix the target agrees with
//! (greedy) or accepts each guess with probability min(1, p/q) and resamples
//! from the residual (sampling), so the output is the target's own, token for
//! token or in distribution. The [`Governor`] measures what a round costs and
//! how often guesses are accepted, and picks k (0 = plain decoding) so that
//! speculation is used only where it pays.
//!
//! Proposers: [`NgramProposer`] (continuations found earlier in the text, no
//! model) and [`DraftProposer`] (a smaller model with the same vocabulary, or
//! the same model at a lower quantization).

mod draft;
mod governor;
mod ngram;
pub mod verify;

pub use draft::DraftProposer;
pub use governor::{Governor, GovernorConfig};
pub use ngram::NgramProposer;

use serde::Serialize;

use crate::backend::Backend;
use crate::model::LoadedModel;
use crate::sampler::SamplingParams;

/// Classes of guesses the governor tells apart ([`Proposer::outlook`]).
pub const OUTLOOKS: usize = 6;

/// Up to `k` guessed continuations of `history`, with the distribution each
/// was drawn from (`None`: a deterministic guess, q = 1 on the token).
#[derive(Debug, Default)]
pub struct Proposal {
    pub tokens: Vec<u32>,
    pub dists: Vec<Option<Vec<(u32, f32)>>>,
    /// Seconds spent catching up with the history before guessing (a draft
    /// model reading the tokens accepted since its last proposal). Not part
    /// of the per-guess cost the governor weighs.
    pub setup_secs: f64,
    /// Tokens read while catching up (those `setup_secs` paid for).
    pub setup_tokens: usize,
}

pub trait Proposer {
    /// Guess up to `k` tokens that follow `history` (prompt and output so far).
    /// May return fewer, or none.
    fn propose(&mut self, history: &[u32], k: usize) -> crate::engine::Result<Proposal>;

    /// Tokens of `history` the proposer would read before its next guess:
    /// a draft model's catch-up after plain steps (and the prompt, for a
    /// draft that skipped it), which a probe pays for.
    fn behind(&self, _history: &[u32]) -> usize {
        0
    }

    /// Read the prompt ahead of the first guess, while the target reads it:
    /// prompt processing, not part of any round (a draft model's prefill).
    fn prefill(&mut self, _prompt: &[u32]) -> crate::engine::Result<()> {
        Ok(())
    }

    /// Before k is chosen: the class of the guesses `history` would get (one
    /// of [`OUTLOOKS`]; n-gram lookup: how much context its match shares), so
    /// the governor can keep an acceptance rate per class; `None` when there
    /// would be no guess at all. A draft model's guesses are all one class.
    fn outlook(&mut self, _history: &[u32]) -> Option<usize> {
        Some(0)
    }

    /// A short name for telemetry ("ngram", "draft").
    fn name(&self) -> &'static str;

    /// Expected cost of one proposing pass over one plain step of the target,
    /// before anything is measured (the governor's prior).
    fn cost_hint(&self) -> f64 {
        0.0
    }
}

/// Which proposer to use: built afresh per request, since a draft keeps a
/// KV cache of its own.
pub enum ProposerKind<'m, B: Backend> {
    Ngram,
    Draft(&'m LoadedModel<B>),
}

impl<'m, B: Backend + 'static> ProposerKind<'m, B> {
    /// A proposer for `target`, with room for `ctx` positions, guessing with
    /// `sampling`'s settings.
    pub fn build(
        &self,
        target: &LoadedModel<B>,
        ctx: usize,
        sampling: &SamplingParams,
    ) -> crate::engine::Result<Box<dyn Proposer + 'm>> {
        Ok(match self {
            ProposerKind::Ngram => Box::new(NgramProposer::default()),
            ProposerKind::Draft(d) => Box::new(DraftProposer::new(d, target, ctx, sampling)?),
        })
    }
}

/// What speculation did during one generation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpecStats {
    pub proposer: String,
    /// Verification rounds (forward passes of the target with drafts).
    pub rounds: usize,
    /// Plain single-token steps (k = 0 chosen, or nothing proposed).
    pub plain_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// accepted / drafted.
    pub acceptance: f64,
    /// Output tokens per target forward pass.
    pub tokens_per_pass: f64,
    /// The k the governor chose last, and how often each k was chosen.
    pub last_k: usize,
    pub k_histogram: Vec<usize>,
    /// Measured cost of one draft token over one plain target step.
    pub draft_to_target_cost: f64,
    /// The target's measured milliseconds per forward pass, by rows scored
    /// (index = rows; null where never measured).
    pub verify_ms_by_rows: Vec<Option<f64>>,
    /// Milliseconds the draft spent reading the prompt (part of the
    /// request's prompt time).
    pub draft_prefill_ms: f64,
}

/// Running counts of one sequence's rounds, turned into [`SpecStats`] at
/// the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecTally {
    pub rounds: usize,
    pub plain_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
}

impl SpecTally {
    /// Count one target pass that scored `drafted` guesses and kept `accepted`.
    pub fn count(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            self.plain_steps += 1;
        } else {
            self.rounds += 1;
            self.drafted += drafted;
            self.accepted += accepted;
        }
    }

    /// The report for a sequence that produced `tokens_out` tokens.
    pub fn report(&self, proposer: &str, governor: &Governor, tokens_out: usize) -> SpecStats {
        let passes = self.rounds + self.plain_steps;
        SpecStats {
            proposer: proposer.to_string(),
            rounds: self.rounds,
            plain_steps: self.plain_steps,
            drafted: self.drafted,
            accepted: self.accepted,
            acceptance: self.accepted as f64 / self.drafted.max(1) as f64,
            tokens_per_pass: tokens_out as f64 / passes.max(1) as f64,
            last_k: governor.last_k,
            k_histogram: governor.histogram.clone(),
            draft_to_target_cost: governor.cost_ratio().unwrap_or(0.0),
            verify_ms_by_rows: governor
                .verify_costs()
                .iter()
                .map(|c| c.map(|s| s * 1e3))
                .collect(),
            draft_prefill_ms: 0.0,
        }
    }
}

impl SpecStats {
    /// Several sequences' reports as one (the choices of one request):
    /// counts add up, rates are recomputed, costs are averaged.
    pub fn merge(all: &[SpecStats]) -> Option<SpecStats> {
        let first = all.first()?;
        let mut m = SpecStats {
            proposer: first.proposer.clone(),
            last_k: all.last().map_or(0, |s| s.last_k),
            ..Default::default()
        };
        let mut passes = 0;
        let mut tokens = 0.0;
        for s in all {
            m.rounds += s.rounds;
            m.plain_steps += s.plain_steps;
            m.drafted += s.drafted;
            m.accepted += s.accepted;
            let p = s.rounds + s.plain_steps;
            passes += p;
            tokens += s.tokens_per_pass * p as f64;
            if m.k_histogram.len() < s.k_histogram.len() {
                m.k_histogram.resize(s.k_histogram.len(), 0);
            }
            for (a, b) in m.k_histogram.iter_mut().zip(&s.k_histogram) {
                *a += b;
            }
            m.draft_to_target_cost += s.draft_to_target_cost / all.len() as f64;
        }
        m.acceptance = m.accepted as f64 / m.drafted.max(1) as f64;
        m.tokens_per_pass = tokens / passes.max(1) as f64;
        m.verify_ms_by_rows = first.verify_ms_by_rows.clone();
        Some(m)
    }
}
