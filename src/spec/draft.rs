//! A draft model proposes: a smaller model of the same family, or the same
//! model at a lower quantization. Its KV cache follows the target's: each
//! proposal first feeds the accepted history, and [`Session::feed`] keeps the
//! common prefix, so rejected guesses are rolled back by that same call.
//!
//! Where the text repeats a long passage from earlier (prompt lookup finds
//! [`LOOKUP_CONTEXT`] or more tokens of shared context), the continuation is
//! guessed by lookup instead, at no cost, and the draft reads the accepted
//! tokens in one pass when it next guesses. Lookup rounds are their own
//! outlook classes, so the governor weighs their cost and acceptance apart
//! from the draft's.

use super::ngram::{outlook_of, NgramProposer};
use super::{Proposal, Proposer};
use crate::backend::{Backend, Readout};
use crate::engine::{EngineError, Result, Session};
use crate::model::LoadedModel;
use crate::sampler::{Sampler, SamplingParams};

/// Shared context (tokens) from which a lookup guess replaces the draft's.
pub const LOOKUP_CONTEXT: usize = 4;

pub struct DraftProposer<'m, B: Backend> {
    draft: &'m LoadedModel<B>,
    /// Positions the draft's KV cache holds.
    ctx: usize,
    /// Made at the first guess or prefill: a request the governor keeps
    /// plain never allocates the draft's KV cache (on a GPU that and its
    /// release cost as much as a few steps of a 7B model).
    session: Option<Session<'m, B>>,
    /// Tokens of the history the session is known to hold: all it was fed
    /// at its last proposal or prefill (histories only grow).
    read: usize,
    lookup: NgramProposer,
    /// The coming round guesses by lookup ([`Proposer::outlook`] decided).
    by_lookup: bool,
    sampler: Sampler,
    greedy: bool,
    /// Weight bytes per token of the draft over the target's.
    cost_hint: f64,
    /// Rows of the draft's embedding table and of the target's, which may
    /// differ from the shared vocabulary (Qwen2.5-7B pads it to 152,064
    /// rows, the 0.5B to 151,936): an id past either reads nothing there.
    draft_rows: usize,
    target_rows: usize,
}

impl<'m, B: Backend + 'static> DraftProposer<'m, B> {
    /// A proposer running `draft` with room for `ctx` positions. Guesses are
    /// drawn with the target's sampling settings (argmax when greedy); the
    /// vocabularies must be the same, token for token.
    pub fn new(
        draft: &'m LoadedModel<B>,
        target: &LoadedModel<B>,
        ctx: usize,
        sampling: &SamplingParams,
    ) -> Result<Self> {
        let (a, b) = (&draft.tokenizer, &target.tokenizer);
        if a.vocab_size() != b.vocab_size() {
            return Err(EngineError::Invalid(format!(
                "the draft's vocabulary has {} tokens, the target's {}",
                a.vocab_size(),
                b.vocab_size()
            )));
        }
        if let Some(id) = a.first_difference(b) {
            return Err(EngineError::Invalid(format!(
                "the draft's and the target's vocabularies differ at token {id}"
            )));
        }
        let mut params = sampling.clone();
        // The draft's own stream of random numbers, apart from the verifier's.
        params.seed = params.seed.wrapping_add(0x5eed);
        let bytes = |m: &LoadedModel<B>| {
            crate::bench::model::bytes_per_token_with_head(&m.file, m.head_rows).max(1) as f64
        };
        Ok(Self {
            cost_hint: bytes(draft) / bytes(target),
            draft_rows: draft.hparams().vocab_size,
            target_rows: target.hparams().vocab_size,
            draft,
            ctx: ctx.min(draft.hparams().ctx_len).max(1),
            session: None,
            read: 0,
            lookup: NgramProposer::default(),
            by_lookup: false,
            greedy: sampling.temperature <= 0.0,
            sampler: Sampler::new(params),
        })
    }
}

impl<'m, B: Backend + 'static> DraftProposer<'m, B> {
    fn session(&mut self) -> &mut Session<'m, B> {
        let (draft, ctx) = (self.draft, self.ctx);
        self.session.get_or_insert_with(|| Session::new(draft, ctx))
    }
}

impl<B: Backend + 'static> Proposer for DraftProposer<'_, B> {
    /// 0 for the draft's own guesses; a lookup's outlook (never 0) where it
    /// shares enough context.
    fn outlook(&mut self, history: &[u32]) -> Option<usize> {
        let lookup = self.lookup.outlook(history);
        self.by_lookup = lookup.is_some_and(|o| o >= outlook_of(LOOKUP_CONTEXT));
        Some(if self.by_lookup { lookup? } else { 0 })
    }

    fn propose(&mut self, history: &[u32], k: usize) -> Result<Proposal> {
        if self.by_lookup {
            return self.lookup.propose(history, k);
        }
        let mut out = Proposal {
            tokens: Vec::with_capacity(k),
            dists: Vec::with_capacity(k),
            setup_secs: 0.0,
            setup_tokens: 0,
        };
        if k == 0 || history.is_empty() || history.len() + k > self.ctx {
            return Ok(out);
        }
        let t = std::time::Instant::now();
        // In step with the target, a round feeds at most two new tokens (the
        // last guess and the target's correction or bonus token): that is the
        // round's cost. More is catch-up after plain steps.
        // Guesses carry the distribution they were drawn from: a token drawn
        // on the device does not give it.
        let readout = match self.sampler.readout() {
            Readout::Draw(..) => Readout::Full,
            r => r,
        };
        let readable = readable(history, self.draft_rows);
        let (mut logits, reused) =
            self.session()
                .feed_as(&readable, history.len() - 1, readout.clone())?;
        self.read = history.len();
        let fed = history.len() - reused;
        out.setup_tokens = fed.saturating_sub(2);
        out.setup_secs = t.elapsed().as_secs_f64() * out.setup_tokens as f64 / fed as f64;
        let mut seen = history.to_vec();
        for i in 0..k {
            let scored = self.sampler.score(logits.last(), &seen);
            let (id, dist) = if self.greedy {
                (self.sampler.choose(&scored), None)
            } else {
                // Drawn among the ids the target has, from q renormalised
                // over them: verification is exact only for a q whose
                // support the target's distribution covers.
                let d = within(self.sampler.distribution(&scored), self.target_rows);
                if d.is_empty() {
                    break;
                }
                (self.sampler.draw_from(&d), Some(d))
            };
            if id as usize >= self.target_rows {
                // The target could not read it (a padding row of the draft).
                break;
            }
            out.tokens.push(id);
            out.dists.push(dist);
            seen.push(id);
            if i + 1 < k {
                logits = self.session().extend_as(&[id], 0, readout.clone())?;
            }
        }
        Ok(out)
    }

    fn behind(&self, history: &[u32]) -> usize {
        // Past what it was fed, the session holds its last guesses: those
        // the target kept need no reading. Called every round, so only that
        // tail is compared, not the whole history.
        let have = self.session.as_ref().map_or(&[][..], |s| s.tokens());
        let mut common = self.read.min(have.len()).min(history.len());
        while common < have.len().min(history.len())
            && have[common] == read_as(history[common], self.draft_rows)
        {
            common += 1;
        }
        history.len() - common
    }

    fn prefill(&mut self, prompt: &[u32]) -> Result<()> {
        if !prompt.is_empty() && prompt.len() < self.ctx {
            let prompt = readable(prompt, self.draft_rows);
            self.session()
                .feed_as(&prompt, prompt.len() - 1, Readout::Top(1))?;
            self.read = prompt.len();
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "draft"
    }

    /// Decoding is bound by reading weights, so their ratio predicts the
    /// cost ratio (Qwen2.5-Coder 0.5B/1.5B with the draft's output layer cut
    /// to 32768 rows: 0.29 predicted; 0.35–0.45 measured per pass, more
    /// where the first pass of a round reads two tokens).
    fn cost_hint(&self) -> f64 {
        self.cost_hint
    }
}

/// `history` as the draft can read it: ids past its embedding table (the
/// target's padding rows, which a random or badly trained target may emit)
/// become id 0. Only the draft's context changes; every guess is still
/// verified by the target.
fn readable(history: &[u32], rows: usize) -> std::borrow::Cow<'_, [u32]> {
    if history.iter().all(|&t| (t as usize) < rows) {
        return std::borrow::Cow::Borrowed(history);
    }
    std::borrow::Cow::Owned(history.iter().map(|&t| read_as(t, rows)).collect())
}

/// Token `t` as a draft with `rows` embedding rows reads it.
fn read_as(t: u32, rows: usize) -> u32 {
    if (t as usize) < rows {
        t
    } else {
        0
    }
}

/// `dist` over the ids below `rows` only, renormalised (empty if none has
/// mass).
fn within(mut dist: Vec<(u32, f32)>, rows: usize) -> Vec<(u32, f32)> {
    if dist.iter().all(|&(t, _)| (t as usize) < rows) {
        return dist;
    }
    dist.retain(|&(t, _)| (t as usize) < rows);
    let sum: f32 = dist.iter().map(|&(_, p)| p).sum();
    if sum <= 0.0 {
        return Vec::new();
    }
    for (_, p) in &mut dist {
        *p /= sum;
    }
    dist
}

#[cfg(test)]
mod tests {
    use super::{readable, within};

    #[test]
    fn a_guess_is_drawn_among_the_targets_ids_only() {
        let q = vec![(1, 0.25), (5, 0.5), (2, 0.25)];
        assert_eq!(within(q.clone(), 10), q);
        assert_eq!(within(q, 5), vec![(1, 0.5), (2, 0.5)]);
        assert!(within(vec![(7, 1.0)], 5).is_empty());
    }

    #[test]
    fn ids_past_the_drafts_table_are_read_as_a_stand_in() {
        assert!(matches!(
            readable(&[1, 2, 3], 4),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(&*readable(&[1, 152_031, 3], 151_936), &[1, 0, 3]);
    }
}
