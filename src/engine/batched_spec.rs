//! Speculation inside the batched engine, per sequence: each decoding
//! sequence has its own proposer and governor. Before a step the governor
//! picks k; the scheduler grants the guesses room if the step has it; the
//! proposer fills them in; the one batched forward pass scores every
//! sequence's pending token and guesses together; verification then keeps
//! what the target agrees with and the KV is cut back to it.
//!
//! The governor's cost of a pass is the whole step's time (the step is what
//! this sequence waits for), recorded only for steps made of decodes alone:
//! a step that also reads another request's prompt says nothing about the
//! price of a guess.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Result;
use crate::backend::Backend;
use crate::model::LoadedModel;
use crate::sampler::SamplingParams;
use crate::spec::{
    Governor, GovernorConfig, Proposal, Proposer, ProposerKind, SpecStats, SpecTally,
};

/// A sparse distribution over token ids.
type Dist = [(u32, f32)];

/// How the engine speculates: with a draft model, or by n-gram lookup when
/// `draft` is `None`.
pub struct EngineSpec<B: Backend> {
    pub draft: Option<Arc<LoadedModel<B>>>,
    pub governor: GovernorConfig,
}

impl<B: Backend + 'static> EngineSpec<B> {
    pub fn kind(&self) -> ProposerKind<'_, B> {
        match &self.draft {
            Some(d) => ProposerKind::Draft(d),
            None => ProposerKind::Ngram,
        }
    }

    /// Build one proposer now, so a draft that cannot serve this target
    /// (another vocabulary) is refused at start-up, not per request.
    pub fn check(&self, target: &LoadedModel<B>) -> Result<()> {
        self.kind()
            .build(target, 8, &SamplingParams::greedy())
            .map(|_| ())
    }
}

/// Engine-wide speculation counters, for /metrics.
#[derive(Debug, Default)]
pub struct SpecCounters {
    pub rounds: AtomicU64,
    pub plain_steps: AtomicU64,
    pub drafted: AtomicU64,
    pub accepted: AtomicU64,
    /// How often each k was used.
    pub k_used: Mutex<Vec<u64>>,
    /// The latest measured draft/target cost ratio (f64 bits; 0 = unknown).
    pub cost_ratio_bits: AtomicU64,
}

impl SpecCounters {
    fn count(&self, k: usize, accepted: usize) {
        let add = |a: &AtomicU64, n: usize| a.fetch_add(n as u64, Ordering::Relaxed);
        if k == 0 {
            add(&self.plain_steps, 1);
        } else {
            add(&self.rounds, 1);
            add(&self.drafted, k);
            add(&self.accepted, accepted);
        }
        let mut h = self.k_used.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() <= k {
            h.resize(k + 1, 0);
        }
        h[k] += 1;
    }

    pub fn cost_ratio(&self) -> f64 {
        f64::from_bits(self.cost_ratio_bits.load(Ordering::Relaxed))
    }
}

/// One sequence's proposer, governor and the guesses of the coming step.
pub(super) struct SeqSpec<'m> {
    proposer: Box<dyn Proposer + 'm>,
    governor: Governor,
    tally: SpecTally,
    /// Guesses the governor asked for this step.
    pub wanted: usize,
    proposal: Proposal,
    draft_secs: f64,
    /// A decode step with this sequence is under way (its prompt's last
    /// step is not one: that token was never the governor's to speculate on).
    in_step: bool,
}

impl<'m> SeqSpec<'m> {
    /// `learned`: the governor of a request that finished, whose
    /// measurements this one starts from.
    pub fn new<B: Backend + 'static>(
        spec: &'m EngineSpec<B>,
        target: &LoadedModel<B>,
        ctx: usize,
        sampling: &SamplingParams,
        learned: Option<&Governor>,
    ) -> Result<Self> {
        let proposer = spec.kind().build(target, ctx, sampling)?;
        let governor = match learned {
            Some(g) => g.successor(),
            None => {
                let mut g = Governor::new(spec.governor.clone());
                g.set_draft_prior(proposer.cost_hint());
                g
            }
        };
        Ok(Self {
            proposer,
            governor,
            tally: SpecTally::default(),
            wanted: 0,
            proposal: Proposal::default(),
            draft_secs: 0.0,
            in_step: false,
        })
    }

    /// Decide k for the coming step after `history`; `room` bounds it
    /// (tokens still wanted, context left).
    pub fn choose(&mut self, history: &[u32], room: usize) {
        let outlook = self.proposer.outlook(history);
        self.governor.note_behind(self.proposer.behind(history));
        self.wanted = self.governor.choose(room, outlook);
    }

    /// Guess up to `granted` tokens after `history` (the scheduler may have
    /// granted fewer than wanted). A proposer that fails guesses nothing: the
    /// sequence decodes plainly this step.
    pub fn propose(&mut self, history: &[u32], granted: usize) -> &[u32] {
        self.wanted = 0;
        self.in_step = true;
        let t = Instant::now();
        self.proposal = if granted == 0 {
            Proposal::default()
        } else {
            self.proposer.propose(history, granted).unwrap_or_else(|e| {
                tracing::warn!("proposer failed, decoding plainly: {e}");
                Proposal::default()
            })
        };
        self.proposal.tokens.truncate(granted);
        self.draft_secs = t.elapsed().as_secs_f64() - self.proposal.setup_secs;
        self.governor
            .observe_catch_up(self.proposal.setup_tokens, self.proposal.setup_secs);
        self.governor.settle(self.proposal.tokens.len());
        &self.proposal.tokens
    }

    /// This step's `i`-th guess and the distribution it was drawn from.
    pub fn guess(&self, i: usize) -> (Option<u32>, Option<&Dist>) {
        let q = self.proposal.dists.get(i).and_then(|q| q.as_deref());
        (self.proposal.tokens.get(i).copied(), q)
    }

    /// Record the step: `kept` guesses accepted; `pass` is (rows scored,
    /// seconds) when the step's time can be charged to it.
    pub fn finish_step(
        &mut self,
        kept: usize,
        pass: Option<(usize, f64)>,
        counters: &SpecCounters,
    ) {
        if !std::mem::take(&mut self.in_step) {
            return;
        }
        let k = self.proposal.tokens.len();
        self.governor.observe(k, kept, self.draft_secs, pass);
        self.tally.count(k, kept);
        counters.count(k, kept);
        if let Some(r) = self.governor.cost_ratio() {
            counters
                .cost_ratio_bits
                .store(r.to_bits(), Ordering::Relaxed);
        }
        self.proposal = Proposal::default();
    }

    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    pub fn report(&self, tokens_out: usize) -> SpecStats {
        self.tally
            .report(self.proposer.name(), &self.governor, tokens_out)
    }
}
