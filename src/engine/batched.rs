//! The batched engine: one thread that owns the model and the KV memory and
//! serves many requests at once (continuous batching). Each step it asks the
//! [`Scheduler`] what to run, makes one forward pass over all of it, samples
//! every sequence that reached its end with that sequence's own parameters,
//! and streams the tokens out. Finished and cancelled sequences leave at
//! once, freeing their blocks; waiting ones join in the next step.
//! With speculation on ([`EngineSpec`]), a decoding sequence may bring
//! guesses that the same step scores (`batched_spec`).
//! It knows nothing of HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc as tmpsc;

use super::batched_spec::SeqSpec;
pub use super::batched_spec::{EngineSpec, SpecCounters};
use super::generate::StopReason;
use super::request::{Event, Inbound, Request, RequestHandle, Usage};
use super::scheduler::{HasTokens, Scheduler, SchedulerConfig};
use super::stop::{StopCheck, StopMatcher};
use super::EngineError;
use crate::backend::{Backend, DrawKey, Logits, Readout};
use crate::kv::{BlockPool, DEFAULT_BLOCK_SIZE};
use crate::model::{ForwardBatch, LoadedModel, SeqInput};
use crate::sampler::{Sampled, Sampler};
use crate::spec::verify::verify_row;
use crate::tokenizer::Utf8Stream;

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub max_seqs: usize,
    pub step_tokens: usize,
    /// KV cache size in blocks of `DEFAULT_BLOCK_SIZE` positions.
    pub kv_blocks: usize,
    /// Longest sequence (prompt + generated) accepted.
    pub ctx: usize,
    /// Reuse the KV of identical prompt prefixes across requests.
    pub prefix_cache: bool,
}

/// Live counters, read by the server's /metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub kv_blocks_free: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    pub preemptions: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose KV came from the prefix cache.
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub spec: SpecCounters,
}

struct Seq<'m> {
    tokens: Vec<u32>,
    n_prompt: usize,
    max_tokens: usize,
    generated: usize,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopMatcher,
    events: tmpsc::UnboundedSender<Event>,
    cancel: Arc<AtomicBool>,
    ignore_eos: bool,
    /// Prompt positions found in the prefix cache (set once, on admission).
    cached: Option<usize>,
    spec: Option<SeqSpec<'m>>,
}

impl HasTokens for Seq<'_> {
    fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    fn drafts_wanted(&self) -> usize {
        self.spec.as_ref().map_or(0, |s| s.wanted)
    }
}

pub struct BatchEngine {
    tx: Option<mpsc::Sender<Inbound>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<EngineStats>,
    cfg: EngineConfig,
    vocab: usize,
}

impl BatchEngine {
    pub fn start<B: Backend + 'static>(model: Arc<LoadedModel<B>>, cfg: EngineConfig) -> Self {
        Self::start_with(model, cfg, None)
    }

    /// [`BatchEngine::start`], speculating as `spec` says.
    pub fn start_with<B: Backend + 'static>(
        model: Arc<LoadedModel<B>>,
        cfg: EngineConfig,
        spec: Option<EngineSpec<B>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let vocab = model.hparams().vocab_size;
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-engine".into())
            .spawn(move || run_loop(model, cfg, spec, rx, st))
            .expect("spawn engine thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
            stats,
            cfg,
            vocab,
        }
    }

    pub fn config(&self) -> EngineConfig {
        self.cfg
    }

    /// Queue a request. Invalid requests are refused here, before they wait.
    pub fn submit(&self, req: Request) -> Result<RequestHandle, EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if req.prompt.len() + req.max_tokens > self.cfg.ctx {
            return Err(EngineError::Invalid(format!(
                "the prompt ({} tokens) plus max_tokens ({}) exceeds the context ({})",
                req.prompt.len(),
                req.max_tokens,
                self.cfg.ctx
            )));
        }
        if let Some(bad) = req.prompt.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(EngineError::Invalid(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        req.sampling.validate().map_err(EngineError::Invalid)?;
        let (etx, erx) = tmpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let inbound = Inbound {
            req,
            events: etx,
            cancel: cancel.clone(),
        };
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(inbound).ok())
            .ok_or_else(|| EngineError::Invalid("the engine has stopped".into()))?;
        Ok(RequestHandle::new(erx, cancel))
    }
}

impl Drop for BatchEngine {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_loop<B: Backend + 'static>(
    model: Arc<LoadedModel<B>>,
    cfg: EngineConfig,
    spec: Option<EngineSpec<B>>,
    rx: mpsc::Receiver<Inbound>,
    stats: Arc<EngineStats>,
) {
    let pool = BlockPool::with_caching(cfg.kv_blocks, DEFAULT_BLOCK_SIZE, cfg.prefix_cache);
    let mut kv = model.alloc_kv(cfg.kv_blocks * DEFAULT_BLOCK_SIZE);
    let mut sched: Scheduler<Seq> = Scheduler::new(
        SchedulerConfig {
            max_seqs: cfg.max_seqs,
            step_tokens: cfg.step_tokens,
        },
        pool.clone(),
    );
    stats
        .kv_blocks_total
        .store(cfg.kv_blocks, Ordering::Relaxed);
    let tok = &model.tokenizer;
    // The governor of the last request to finish: where new ones start.
    let mut learned: Option<crate::spec::Governor> = None;
    loop {
        // Take new requests; block only when there is nothing to do.
        let mut incoming: Vec<Inbound> = rx.try_iter().collect();
        if sched.is_idle() && incoming.is_empty() {
            match rx.recv() {
                Ok(i) => incoming.push(i),
                Err(_) => return, // every sender gone: shut down
            }
        }
        for i in incoming {
            let need = i.req.prompt.len() + i.req.max_tokens;
            if !sched.fits(need) {
                let _ = i.events.send(Event::Error(format!(
                    "the request needs {need} positions but the KV cache holds {}",
                    cfg.kv_blocks * DEFAULT_BLOCK_SIZE
                )));
                continue;
            }
            let seq_spec = match &spec {
                Some(sp) => {
                    let room = need + sp.governor.k_max + 1;
                    match SeqSpec::new(sp, &model, room, &i.req.sampling, learned.as_ref()) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            let _ = i.events.send(Event::Error(e.to_string()));
                            continue;
                        }
                    }
                }
                None => None,
            };
            stats
                .prompt_tokens
                .fetch_add(i.req.prompt.len() as u64, Ordering::Relaxed);
            sched.add(Seq {
                n_prompt: i.req.prompt.len(),
                tokens: i.req.prompt,
                max_tokens: i.req.max_tokens,
                generated: 0,
                sampler: Sampler::new(i.req.sampling),
                utf8: Utf8Stream::default(),
                stops: StopMatcher::new(&i.req.stop),
                ignore_eos: i.req.ignore_eos,
                events: i.events,
                cancel: i.cancel,
                cached: None,
                spec: seq_spec,
            });
        }
        // Cancelled or abandoned requests leave before any work is planned.
        let gone: Vec<u64> = sched
            .running
            .iter()
            .chain(sched.waiting.iter())
            .filter(|e| e.seq.cancel.load(Ordering::Relaxed) || e.seq.events.is_closed())
            .map(|e| e.id)
            .collect();
        for id in gone {
            sched.remove(id);
        }
        publish(&stats, &sched);

        // Decoding sequences say how many guesses they want scored.
        for e in sched.running.iter_mut() {
            let decoding = e.is_decoding();
            let s = &mut e.seq;
            if let (Some(sp), true) = (s.spec.as_mut(), decoding) {
                let room = (cfg.ctx.saturating_sub(s.tokens.len() + 1))
                    .min(s.max_tokens.saturating_sub(s.generated + 1));
                sp.choose(&s.tokens, room);
            }
        }
        let mut plan = sched.schedule();
        if plan.is_empty() {
            continue;
        }
        let t_step = Instant::now();
        // Fill in the granted guesses: they join the token list for the
        // pass and leave it again before verification.
        for w in plan.iter_mut() {
            let e = sched.get_mut(w.id).expect("planned seq runs");
            let decoding = e.is_decoding();
            if let (Some(sp), true) = (e.seq.spec.as_mut(), decoding) {
                let guesses = sp.propose(&e.seq.tokens, w.drafts);
                w.len = w.len - w.drafts + guesses.len();
                w.drafts = guesses.len();
                e.seq.tokens.extend_from_slice(guesses);
            }
        }
        // Only a step of decodes alone prices a guess (see batched_spec).
        let all_decodes = plan.iter().all(|w| w.len - w.drafts == 1);
        let readout = step_readout(&plan, &mut sched);
        let logits = {
            let seqs = plan
                .iter()
                .map(|w| {
                    let e = sched
                        .running
                        .iter()
                        .find(|e| e.id == w.id)
                        .expect("planned seq runs");
                    let end = w.start + w.len;
                    SeqInput {
                        tokens: &e.seq.tokens[w.start..end],
                        start_pos: w.start,
                        kv: e.kv.as_ref().expect("planned seq has blocks"),
                        // Logits only for a sequence whose known tokens are
                        // all read: its last one and every guess.
                        logits_from: if end == e.seq.tokens.len() {
                            w.len - 1 - w.drafts
                        } else {
                            w.len
                        },
                    }
                })
                .collect();
            model.forward(&ForwardBatch { seqs, readout }, &mut kv)
        };
        stats.steps.fetch_add(1, Ordering::Relaxed);
        for w in &plan {
            if let Some(e) = sched.get_mut(w.id) {
                let known = e.seq.tokens.len() - w.drafts;
                e.seq.tokens.truncate(known);
            }
        }
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // A failed step fails the sequences in it, not the engine.
                for w in &plan {
                    if let Some(s) = sched.remove(w.id) {
                        let _ = s.events.send(Event::Error(e.to_string()));
                    }
                }
                continue;
            }
        };
        let step_secs = t_step.elapsed().as_secs_f64();
        let mut row = 0;
        for w in plan {
            let Some(e) = sched.get_mut(w.id) else {
                continue;
            };
            e.n_computed += w.len - w.drafts;
            if let (None, Some(c)) = (e.seq.cached, e.cached_at_admission) {
                e.seq.cached = Some(c);
                stats
                    .prompt_tokens_cached
                    .fetch_add(c as u64, Ordering::Relaxed);
            }
            if e.n_computed < e.seq.tokens.len() {
                if let Some(kv) = e.kv.as_mut() {
                    kv.register_full_blocks(&e.seq.tokens, e.n_computed);
                }
                continue;
            }
            let rows = row..row + 1 + w.drafts;
            row += 1 + w.drafts;
            let (kept, end) = verify_step(&mut e.seq, &logits, rows, tok, cfg.ctx, &stats);
            // The accepted guesses' K/V stay; the rejected ones' go.
            e.n_computed += kept;
            if let Some(kv) = e.kv.as_mut() {
                kv.truncate(e.n_computed);
                kv.register_full_blocks(&e.seq.tokens, e.n_computed);
            }
            if let Some(sp) = e.seq.spec.as_mut() {
                let pass = all_decodes.then_some((1 + w.drafts, step_secs));
                sp.finish_step(kept, pass, &stats.spec);
            }
            if let Some(reason) = end {
                let s = sched.remove(w.id).expect("present");
                if let Some(sp) = &s.spec {
                    learned = Some(sp.governor().clone());
                }
                finish(s, reason);
            }
        }
        publish(&stats, &sched);
    }
}

/// One readout for a step's logit rows: summaries when every sequence's
/// sampler can use them (k enough for the most demanding), with a drawn
/// token per row when any sampler draws from the whole vocabulary (the
/// other rows get unused keys), else full rows.
fn step_readout(plan: &[super::scheduler::Work], sched: &mut Scheduler<Seq>) -> Readout {
    let unused = DrawKey {
        key: 0,
        inv_temp: 0.0,
    };
    let (mut k, mut keys, mut draws) = (1, Vec::new(), false);
    for w in plan {
        let e = sched.get_mut(w.id).expect("planned seq runs");
        // Logits only for a sequence whose known tokens are all read.
        if w.start + w.len != e.seq.tokens.len() {
            continue;
        }
        let rows = 1 + w.drafts;
        match e.seq.sampler.readout_for(rows) {
            Readout::Full => return Readout::Full,
            Readout::Top(n) => {
                k = k.max(n);
                keys.extend(std::iter::repeat_n(unused, rows));
            }
            Readout::Draw(n, mine) => {
                k = k.max(n);
                keys.extend(mine);
                draws = true;
            }
        }
    }
    match draws {
        true => Readout::Draw(k, keys),
        false => Readout::Top(k),
    }
}

/// Choose a sequence's tokens from its rows of logits: one row for a plain
/// decode, or the pending token's row and one per guess, kept while the
/// target agrees. Returns the guesses kept and, if the sequence is
/// finished, why.
fn verify_step(
    s: &mut Seq,
    logits: &Logits,
    rows: std::ops::Range<usize>,
    tok: &crate::tokenizer::Tokenizer,
    ctx: usize,
    stats: &EngineStats,
) -> (usize, Option<StopReason>) {
    let mut kept = 0;
    for (i, r) in rows.enumerate() {
        let (guess, q) = s.spec.as_ref().map_or((None, None), |sp| sp.guess(i));
        let row = logits.row(r);
        let (sampled, accepted) = verify_row(&mut s.sampler, row, &s.tokens, guess, q);
        if let Some(reason) = emit(s, sampled, tok, ctx, stats) {
            return (kept + accepted as usize, Some(reason));
        }
        if !accepted {
            break;
        }
        kept += 1;
    }
    (kept, None)
}

/// Take one chosen token; `Some(reason)` when the sequence is finished.
fn emit(
    s: &mut Seq,
    sampled: Sampled,
    tok: &crate::tokenizer::Tokenizer,
    ctx: usize,
    stats: &EngineStats,
) -> Option<StopReason> {
    if !s.ignore_eos && tok.is_eog(sampled.id) {
        return Some(StopReason::Eog);
    }
    s.tokens.push(sampled.id);
    s.generated += 1;
    stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
    let piece = s.utf8.push(tok.piece(sampled.id));
    let (text, stopped) = match s.stops.push(&piece) {
        StopCheck::Emit(t) => (t, false),
        StopCheck::Stopped { before, .. } => (before, true),
    };
    if s.events.send(Event::Token { sampled, text }).is_err() {
        return Some(StopReason::Cancelled);
    }
    if stopped {
        return Some(StopReason::StopString);
    }
    if s.generated >= s.max_tokens || s.tokens.len() >= ctx {
        return Some(StopReason::Length);
    }
    None
}

fn finish(mut s: Seq, reason: StopReason) {
    let text_tail = if reason == StopReason::StopString {
        String::new()
    } else {
        s.stops.flush() + &s.utf8.finish()
    };
    let usage = Usage {
        prompt_tokens: s.n_prompt,
        completion_tokens: s.generated,
        cached_tokens: s.cached.unwrap_or(0),
    };
    let speculation = s.spec.as_ref().map(|sp| sp.report(s.generated));
    let _ = s.events.send(Event::Done {
        reason,
        usage,
        text_tail,
        speculation,
    });
}

fn publish(stats: &EngineStats, sched: &Scheduler<Seq>) {
    stats.running.store(sched.running.len(), Ordering::Relaxed);
    stats.waiting.store(sched.waiting.len(), Ordering::Relaxed);
    stats
        .kv_blocks_free
        .store(sched.pool().n_free(), Ordering::Relaxed);
    stats
        .preemptions
        .store(sched.preemptions, Ordering::Relaxed);
}
