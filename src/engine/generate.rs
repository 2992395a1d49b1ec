//! The generation loop for one sequence: read the prompt, then sample one
//! token at a time until the token budget, an end-of-generation token, a stop
//! string, the context's end, or the caller says stop. Text is streamed
//! through a callback as it becomes final.

use std::time::Instant;

use serde::Serialize;

use super::request::Request;
use super::stop::{StopCheck, StopMatcher};
use super::{Result, Session};
use crate::backend::Backend;
use crate::sampler::{Sampled, Sampler};
use crate::spec::verify::verify_row;
use crate::spec::{Governor, Proposal, Proposer, SpecStats, SpecTally};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The token budget or the context ran out.
    Length,
    /// The model produced an end-of-generation token.
    Eog,
    /// A stop string appeared.
    StopString,
    /// The caller stopped it (Ctrl-C, a client that left).
    Cancelled,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub prompt_n: usize,
    /// Prompt tokens whose KV was already cached.
    pub cached_n: usize,
    pub prompt_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    pub predicted_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOutput {
    pub tokens: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<Sampled>,
    pub stop_reason: StopReason,
    pub timings: Timings,
    /// Present when the generation speculated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speculation: Option<SpecStats>,
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// A proposer and the governor that decides how far to trust it.
pub struct Speculation<'a> {
    pub proposer: &'a mut dyn Proposer,
    pub governor: &'a mut Governor,
}

/// Where chosen tokens go: end-of-generation and stop strings, the token
/// budget, streamed text, and the history that penalties look at.
struct Output<'t, F: FnMut(&str) -> bool> {
    tok: &'t crate::tokenizer::Tokenizer,
    stream: crate::tokenizer::StreamDecoder<'t>,
    stops: StopMatcher,
    history: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<Sampled>,
    text: String,
    reason: Option<StopReason>,
    max_tokens: usize,
    ignore_eos: bool,
    on_text: F,
}

impl<F: FnMut(&str) -> bool> Output<'_, F> {
    /// Take one chosen token; false once generation is over.
    fn push(&mut self, s: Sampled) -> bool {
        let id = s.id;
        if !self.ignore_eos && self.tok.is_eog(id) {
            self.reason = Some(StopReason::Eog);
            return false;
        }
        self.tokens.push(id);
        self.logprobs.push(s);
        self.history.push(id);
        let piece = self.stream.push(id);
        match self.stops.push(&piece) {
            StopCheck::Emit(t) => {
                self.text.push_str(&t);
                if !t.is_empty() && !(self.on_text)(&t) {
                    self.reason = Some(StopReason::Cancelled);
                    return false;
                }
            }
            StopCheck::Stopped { before, .. } => {
                self.text.push_str(&before);
                if !before.is_empty() {
                    (self.on_text)(&before);
                }
                self.reason = Some(StopReason::StopString);
                return false;
            }
        }
        if self.tokens.len() >= self.max_tokens {
            self.reason = Some(StopReason::Length);
            return false;
        }
        true
    }
}

impl<B: Backend + 'static> Session<'_, B> {
    /// Generate after `req.prompt`. `on_text` receives final text as it is
    /// produced and returns false to stop.
    pub fn generate(
        &mut self,
        req: &Request,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenerateOutput> {
        self.generate_with(req, None, on_text)
    }

    /// [`Session::generate`], speculating with `spec` where its governor
    /// says it pays. Each round scores the pending token and k guesses in one
    /// forward pass and keeps what verification accepts; the cache is then
    /// cut back to the kept tokens.
    pub fn generate_with(
        &mut self,
        req: &Request,
        mut spec: Option<Speculation<'_>>,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenerateOutput> {
        req.sampling
            .validate()
            .map_err(super::EngineError::Invalid)?;
        let tok = &self.model.tokenizer;
        let mut sampler = Sampler::new(req.sampling.clone());
        let t0 = Instant::now();
        let n = req.prompt.len();
        // Only what the sampler needs crosses from the device.
        let readout = sampler.readout_for(1);
        let (logits, cached_n) = self.feed_as(&req.prompt, n.saturating_sub(1), readout)?;
        let t_draft = Instant::now();
        if let Some(sp) = spec
            .as_mut()
            .filter(|sp| sp.governor.expects_to_speculate())
        {
            sp.proposer.prefill(&req.prompt)?;
        }
        let draft_prefill_ms = t_draft.elapsed().as_secs_f64() * 1e3;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;

        let mut out = Output {
            tok,
            stream: tok.stream(),
            stops: StopMatcher::new(&req.stop),
            history: req.prompt.clone(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            reason: None,
            max_tokens: req.max_tokens,
            ignore_eos: req.ignore_eos,
            on_text,
        };
        let mut tally = SpecTally::default();
        if let Some(sp) = spec.as_mut() {
            sp.governor.set_draft_prior(sp.proposer.cost_hint());
        }
        let t1 = Instant::now();
        let mut going = req.max_tokens > 0 && {
            let first = sampler.sample(logits.last(), &out.history);
            out.push(first)
        };
        while going {
            let cached = self.tokens().len();
            if cached + 1 > self.ctx() {
                out.reason = Some(StopReason::Length);
                break;
            }
            let pending = *out.history.last().expect("a token was chosen");
            let room = (self.ctx() - cached - 1).min(req.max_tokens - out.tokens.len() - 1);
            let t_draft = Instant::now();
            let mut outlook = None;
            let proposal = match spec.as_mut() {
                Some(sp) => {
                    outlook = sp.proposer.outlook(&out.history);
                    sp.governor.note_behind(sp.proposer.behind(&out.history));
                    let k = sp.governor.choose(room, outlook);
                    // The step after this one is launched ahead only
                    // while rounds are unlikely.
                    self.model
                        .backend
                        .allow_lookahead(sp.governor.settled_off());
                    if k > 0 {
                        sp.proposer.propose(&out.history, k)?
                    } else {
                        Proposal::default()
                    }
                }
                None => Proposal::default(),
            };
            let draft_secs = t_draft.elapsed().as_secs_f64() - proposal.setup_secs;
            let drafts = &proposal.tokens[..proposal.tokens.len().min(room)];
            let mut rows = Vec::with_capacity(1 + drafts.len());
            rows.push(pending);
            rows.extend_from_slice(drafts);
            let t_verify = Instant::now();
            let readout = sampler.readout_for(rows.len());
            let all = self.extend_as(&rows, 0, readout)?;
            let verify_secs = t_verify.elapsed().as_secs_f64();

            let mut kept = 0;
            for i in 0..rows.len() {
                let q = proposal.dists.get(i).and_then(|q| q.as_deref());
                let draft = drafts.get(i).copied();
                let (s, accepted) = verify_row(&mut sampler, all.row(i), &out.history, draft, q);
                going = out.push(s);
                if accepted {
                    kept += 1;
                }
                if !going || !accepted {
                    break;
                }
            }
            // Keep the pending token and the accepted guesses; the last token
            // chosen becomes the next round's pending one.
            self.truncate(cached + 1 + kept);
            if let Some(sp) = spec.as_mut() {
                tracing::debug!(
                    ?outlook,
                    k = drafts.len(),
                    kept,
                    draft_ms = draft_secs * 1e3,
                    setup_ms = proposal.setup_secs * 1e3,
                    verify_ms = verify_secs * 1e3,
                    alpha = sp.governor.acceptance(),
                    rates = ?(0..4).map(|k| sp.governor.rate(k)).collect::<Vec<_>>(),
                    "round"
                );
                sp.governor
                    .observe_catch_up(proposal.setup_tokens, proposal.setup_secs);
                sp.governor.observe(
                    drafts.len(),
                    kept,
                    draft_secs,
                    Some((rows.len(), verify_secs)),
                );
            }
            tally.count(drafts.len(), kept);
        }
        let reason = out.reason.unwrap_or(StopReason::Length);
        if reason != StopReason::StopString {
            let rest = out.stops.flush() + &out.stream.finish();
            if !rest.is_empty() {
                out.text.push_str(&rest);
                (out.on_text)(&rest);
            }
        }
        let predicted_ms = t1.elapsed().as_secs_f64() * 1e3;
        let computed = n - cached_n;
        let speculation = spec.map(|sp| SpecStats {
            draft_prefill_ms,
            ..tally.report(sp.proposer.name(), sp.governor, out.tokens.len())
        });
        Ok(GenerateOutput {
            timings: Timings {
                prompt_n: n,
                cached_n,
                prompt_ms,
                prompt_per_second: per_second(computed, prompt_ms),
                predicted_n: out.tokens.len(),
                predicted_ms,
                predicted_per_second: per_second(out.tokens.len(), predicted_ms),
            },
            tokens: out.tokens,
            text: out.text,
            logprobs: out.logprobs,
            stop_reason: reason,
            speculation,
        })
    }
}
