//! `tandem bench spec`: speculative decoding against plain decoding, per
//! prompt class and k (the table the studies of speculative decoding print),
//! plus the governor's row. Greedy, so every k must produce the same tokens;
//! the bench checks that too.

use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::engine::generate::Speculation;
use crate::engine::request::Request;
use crate::engine::{Result, Session};
use crate::model::LoadedModel;
use crate::sampler::SamplingParams;
use crate::spec::{Governor, GovernorConfig, ProposerKind};

/// Built-in prompts. Code prompts ask for text that repeats its context
/// (where guesses pay); prose prompts do not.
pub fn builtin_prompts(class: &str) -> Option<Vec<String>> {
    let v: &[&str] = match class {
        "code" => &[
            "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n    pivot = arr[len(arr) // 2]\n    left = [x for x in arr if x < pivot]\n    middle = [x for x in arr if x == pivot]\n    right = [x for x in arr if x > pivot]\n    return quicksort(left) + middle + quicksort(right)\n\n# The same function with type hints and a docstring:\n",
            "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n    def __repr__(self):\n        return f\"Point({self.x}, {self.y})\"\n\n\nclass Point3D:\n    def __init__(self, x, y, z):\n",
            "import unittest\n\n\nclass TestAdd(unittest.TestCase):\n    def test_small(self):\n        self.assertEqual(add(1, 2), 3)\n\n    def test_zero(self):\n        self.assertEqual(add(0, 0), 0)\n\n    def test_negative(self):\n",
        ],
        "prose" => &[
            "Once upon a time, in a small village at the edge of a great forest,",
            "The history of the printing press begins in",
            "Write a short letter to a friend about your summer holiday.\n\nDear",
        ],
        _ => return None,
    };
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct SpecRow {
    pub class: String,
    /// "0" (plain decoding), a fixed k, or "auto".
    pub k: String,
    pub tokens: usize,
    pub seconds: f64,
    pub tok_s: f64,
    /// tok/s over plain decoding's, same prompts.
    pub vs_plain: f64,
    pub drafted: usize,
    pub accepted: usize,
    pub acceptance: f64,
    pub tokens_per_pass: f64,
    /// Draft cost per pass over a plain target step (0 for n-gram).
    pub draft_to_target_cost: f64,
    /// Every prompt produced the same tokens as plain decoding.
    pub identical: bool,
}

/// Run every k (None = the governor) on every prompt of every class.
pub fn run<B: Backend + 'static>(
    target: &LoadedModel<B>,
    kind: &ProposerKind<'_, B>,
    ks: &[Option<usize>],
    k_max: usize,
    classes: &[(String, Vec<String>)],
    (n, reps): (usize, usize),
    ctx: usize,
) -> Result<Vec<SpecRow>> {
    let sampling = SamplingParams::greedy();
    let mut rows = Vec::new();
    for (class, prompts) in classes {
        let reqs: Vec<Request> = prompts
            .iter()
            .map(|p| -> Result<Request> {
                Ok(Request {
                    prompt: target
                        .tokenizer
                        .encode(p, true)
                        .map_err(|e| crate::engine::EngineError::Invalid(e.to_string()))?,
                    max_tokens: n,
                    sampling: sampling.clone(),
                    stop: vec![],
                    ignore_eos: true,
                })
            })
            .collect::<Result<_>>()?;
        // Warm-up, and the reference tokens.
        let plain_tokens: Vec<Vec<u32>> = reqs
            .iter()
            .map(|r| Ok(Session::new(target, ctx).generate(r, |_| true)?.tokens))
            .collect::<Result<_>>()?;
        // Plain decoding first, so every ratio has its reference.
        let order: Vec<Option<usize>> = std::iter::once(Some(0))
            .chain(ks.iter().copied().filter(|k| *k != Some(0)))
            .collect();
        // Warm-up of the speculative path (the draft's first passes, graph
        // recording for k + 1 rows on a GPU), with a governor of its own, as
        // the reference runs above warmed plain decoding: a server pays
        // these once, not per request.
        if let Some(req) = reqs.first() {
            for k in order.iter().skip(1) {
                let mut proposer = kind.build(target, ctx, &sampling)?;
                let mut governor = Governor::new(GovernorConfig {
                    k_max,
                    fixed_k: Some(k.unwrap_or(2).min(k_max)),
                });
                let spec = Speculation {
                    proposer: proposer.as_mut(),
                    governor: &mut governor,
                };
                Session::new(target, ctx).generate_with(req, Some(spec), |_| true)?;
            }
        }
        let mut class_rows: Vec<SpecRow> = order
            .iter()
            .map(|k| SpecRow {
                class: class.clone(),
                k: k.map_or("auto".to_string(), |k| k.to_string()),
                tokens: 0,
                seconds: 0.0,
                tok_s: 0.0,
                vs_plain: 0.0,
                drafted: 0,
                accepted: 0,
                acceptance: 0.0,
                tokens_per_pass: 0.0,
                draft_to_target_cost: 0.0,
                identical: true,
            })
            .collect();
        let mut passes = vec![0usize; order.len()];
        // One governor per row, as an engine keeps one across requests:
        // what it learned on one prompt carries to the next.
        let mut govs: Vec<Governor> = order
            .iter()
            .map(|&k| Governor::new(GovernorConfig { k_max, fixed_k: k }))
            .collect();
        // Every k in turn on each prompt, in reverse order on every other
        // repetition: a machine that drifts over the minutes a class takes
        // slows all rows alike, not the last ones.
        let n_k = order.len();
        let mut turns = Vec::with_capacity(reps * reqs.len() * n_k);
        for rep in 0..reps {
            for (req, want) in reqs.iter().zip(&plain_tokens) {
                for j in 0..n_k {
                    let i = if rep % 2 == 0 { j } else { n_k - 1 - j };
                    turns.push((req, want, i));
                }
            }
        }
        for (req, want, i) in turns {
            let k = order[i];
            let row = &mut class_rows[i];
            let mut session = Session::new(target, ctx);
            let t = Instant::now();
            let out = if k == Some(0) {
                let out = session.generate(req, |_| true)?;
                tracing::debug!(
                    generate_ms = t.elapsed().as_secs_f64() * 1e3,
                    "plain request"
                );
                out
            } else {
                let mut proposer = kind.build(target, ctx, &sampling)?;
                let built = t.elapsed();
                let spec = Speculation {
                    proposer: proposer.as_mut(),
                    governor: &mut govs[i],
                };
                let out = session.generate_with(req, Some(spec), |_| true)?;
                let generated = t.elapsed();
                drop(proposer);
                tracing::debug!(
                    build_ms = built.as_secs_f64() * 1e3,
                    generate_ms = (generated - built).as_secs_f64() * 1e3,
                    drop_ms = (t.elapsed() - generated).as_secs_f64() * 1e3,
                    "speculative request"
                );
                out
            };
            // Generation time, and the draft's reading of the prompt: the
            // target reads the prompt the same way in every row, the draft
            // only in speculative ones.
            let draft_prefill_ms = out.speculation.as_ref().map_or(0.0, |s| s.draft_prefill_ms);
            let secs = t.elapsed().as_secs_f64() - (out.timings.prompt_ms - draft_prefill_ms) / 1e3;
            row.identical &= &out.tokens == want;
            row.tokens += out.tokens.len();
            row.seconds += secs;
            match &out.speculation {
                Some(s) => {
                    row.drafted += s.drafted;
                    row.accepted += s.accepted;
                    passes[i] += s.rounds + s.plain_steps;
                    row.draft_to_target_cost = s.draft_to_target_cost;
                }
                None => passes[i] += out.tokens.len().saturating_sub(1),
            }
        }
        let plain_rate = class_rows[0].tokens as f64 / class_rows[0].seconds;
        for (row, passes) in class_rows.iter_mut().zip(passes) {
            row.tok_s = row.tokens as f64 / row.seconds;
            row.vs_plain = row.tok_s / plain_rate;
            row.acceptance = row.accepted as f64 / row.drafted.max(1) as f64;
            row.tokens_per_pass = row.tokens as f64 / (passes.max(1)) as f64;
        }
        rows.extend(class_rows);
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[SpecRow]) -> String {
    let mut s = String::from(
        "| prompts | k | tok/s | vs k=0 | acceptance | tokens/pass | draft/target cost | same tokens |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {:.2} | {:.2}× | {:.0}% | {:.2} | {:.2} | {} |\n",
            r.class,
            r.k,
            r.tok_s,
            r.vs_plain,
            100.0 * r.acceptance,
            r.tokens_per_pass,
            r.draft_to_target_cost,
            if r.identical { "yes" } else { "NO" }
        );
    }
    s
}
