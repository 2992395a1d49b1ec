//! What a client hands the batched engine and what it gets back: a request
//! (prompt ids, limits, sampling, stops) and a stream of events, ending in
//! exactly one `Done` or `Error`. Dropping the handle cancels the request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::generate::StopReason;
use crate::sampler::{Sampled, SamplingParams};
use crate::spec::SpecStats;

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// One generated token and the text it completed (possibly empty: held
    /// back for UTF-8 or a possible stop string).
    Token {
        sampled: Sampled,
        text: String,
    },
    Done {
        reason: StopReason,
        usage: Usage,
        text_tail: String,
        /// What speculation did, when the engine speculates.
        speculation: Option<SpecStats>,
    },
    Error(String),
}

/// The client's side of a running request.
pub struct RequestHandle {
    pub events: mpsc::UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
}

impl RequestHandle {
    pub(crate) fn new(events: mpsc::UnboundedReceiver<Event>, cancel: Arc<AtomicBool>) -> Self {
        Self { events, cancel }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Block until the request ends; returns its tokens, text and end event.
    pub fn wait(mut self) -> Completion {
        let mut c = Completion::default();
        while let Some(ev) = self.events.blocking_recv() {
            c.absorb(ev);
        }
        c
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A finished request, collected.
#[derive(Debug, Default, Clone)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<Sampled>,
    pub text: String,
    pub reason: Option<StopReason>,
    pub usage: Usage,
    pub speculation: Option<SpecStats>,
    pub error: Option<String>,
}

impl Completion {
    /// Add one event of the request's stream.
    pub fn absorb(&mut self, ev: Event) {
        match ev {
            Event::Token { sampled, text } => {
                self.tokens.push(sampled.id);
                self.logprobs.push(sampled);
                self.text.push_str(&text);
            }
            Event::Done {
                reason,
                usage,
                text_tail,
                speculation,
            } => {
                self.text.push_str(&text_tail);
                self.reason = Some(reason);
                self.usage = usage;
                self.speculation = speculation;
            }
            Event::Error(e) => self.error = Some(e),
        }
    }
}

/// The engine's side of a request.
pub(crate) struct Inbound {
    pub req: Request,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
}
