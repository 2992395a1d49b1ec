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
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

impl<B: Backend + 'static> Session<'_, B> {
    /// Generate after `req.prompt`. `on_text` receives final text as it is
    /// produced and returns false to stop.
    pub fn generate(
        &mut self,
        req: &Request,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenerateOutput> {
        req.sampling
            .validate()
            .map_err(super::EngineError::Invalid)?;
        let tok = &self.model.tokenizer;
        let t0 = Instant::now();
        let n = req.prompt.len();
        let (mut logits, cached_n) = self.feed(&req.prompt, n.saturating_sub(1))?;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;

        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stream = tok.stream();
        let mut stops = StopMatcher::new(&req.stop);
        let mut history = req.prompt.clone();
        let (mut tokens, mut logprobs, mut text) = (Vec::new(), Vec::new(), String::new());
        let mut reason = StopReason::Length;
        let t1 = Instant::now();
        while tokens.len() < req.max_tokens {
            let s = sampler.sample(&mut logits, &history);
            let id = s.id;
            if !req.ignore_eos && tok.is_eog(id) {
                reason = StopReason::Eog;
                break;
            }
            tokens.push(id);
            logprobs.push(s);
            history.push(id);
            let piece = stream.push(id);
            match stops.push(&piece) {
                StopCheck::Emit(t) => {
                    text.push_str(&t);
                    if !t.is_empty() && !on_text(&t) {
                        reason = StopReason::Cancelled;
                        break;
                    }
                }
                StopCheck::Stopped { before, .. } => {
                    text.push_str(&before);
                    if !before.is_empty() {
                        on_text(&before);
                    }
                    reason = StopReason::StopString;
                    break;
                }
            }
            if tokens.len() == req.max_tokens || self.tokens().len() + 1 > self.ctx() {
                break;
            }
            logits = self.extend(&[id], 0)?;
        }
        if reason != StopReason::StopString {
            let rest = stops.flush() + &stream.finish();
            if !rest.is_empty() {
                text.push_str(&rest);
                on_text(&rest);
            }
        }
        let predicted_ms = t1.elapsed().as_secs_f64() * 1e3;
        let computed = n - cached_n;
        Ok(GenerateOutput {
            timings: Timings {
                prompt_n: n,
                cached_n,
                prompt_ms,
                prompt_per_second: per_second(computed, prompt_ms),
                predicted_n: tokens.len(),
                predicted_ms,
                predicted_per_second: per_second(tokens.len(), predicted_ms),
            },
            tokens,
            text,
            logprobs,
            stop_reason: reason,
        })
    }
}
