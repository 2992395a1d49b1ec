//! The batched engine on a real model (SmolLM2): many sequences at once give
//! the same tokens as one at a time, preemption under a small KV budget loses
//! nothing, cancellation frees blocks at once, bad requests are refused.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::backend::cpu::CpuBackend;
use tandem::engine::batched::{BatchEngine, EngineConfig, EngineSpec};
use tandem::engine::generate::StopReason;
use tandem::engine::request::Request;
use tandem::engine::Session;
use tandem::model::LoadedModel;
use tandem::sampler::SamplingParams;
use tandem::spec::GovernorConfig;

const PROMPTS: [&str; 16] = [
    "The capital of France is",
    "def quicksort(arr):\n",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "import numpy as np\n",
    "My favourite recipe for pancakes",
    "The largest planet in the solar system",
    "To be or not to be,",
    "SELECT name FROM users WHERE",
    "The quick brown fox",
    "In 1969, humans first",
    "Water boils at",
    "fn main() {\n",
    "The best way to learn a language is",
    "Photosynthesis is the process",
    "Dear hiring manager,",
];

fn model() -> Arc<LoadedModel<CpuBackend>> {
    Arc::new(LoadedModel::load(&common::model_path("smollm2-135m"), CpuBackend).unwrap())
}

/// The engine publishes its counters after each step; give it a moment.
fn wait_for_free_blocks(engine: &BatchEngine, n: usize) {
    let t = Instant::now();
    while engine.stats.kv_blocks_free.load(Ordering::Relaxed) != n {
        assert!(t.elapsed() < Duration::from_secs(10), "blocks not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Engine settings for a test, prefix caching off.
fn config(max_seqs: usize, step_tokens: usize, kv_blocks: usize, ctx: usize) -> EngineConfig {
    EngineConfig {
        max_seqs,
        step_tokens,
        kv_blocks,
        ctx,
        prefix_cache: false,
    }
}

fn request(m: &LoadedModel<CpuBackend>, prompt: &str, n: usize) -> Request {
    Request {
        prompt: m.tokenizer.encode(prompt, true).unwrap(),
        max_tokens: n,
        sampling: SamplingParams::greedy(),
        stop: vec![],
        ignore_eos: false,
    }
}

fn one_at_a_time(m: &LoadedModel<CpuBackend>, prompt: &str, n: usize) -> Vec<u32> {
    let mut s = Session::new(m, 512);
    s.generate(&request(m, prompt, n), |_| true).unwrap().tokens
}

#[test]
fn sixteen_concurrent_requests_equal_sequential_runs() {
    let m = model();
    let engine = BatchEngine::start(m.clone(), config(16, 256, 1024, 512));
    let handles: Vec<_> = PROMPTS
        .iter()
        .map(|p| engine.submit(request(&m, p, 12)).unwrap())
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.wait()).collect();
    assert!(
        engine.stats.steps.load(Ordering::Relaxed) < 16 * 12,
        "requests were batched"
    );
    for (p, c) in PROMPTS.iter().zip(&got) {
        assert_eq!(c.error, None);
        let want = one_at_a_time(&m, p, 12);
        // Rows are computed independently of their batch, so results are
        // identical, not merely close.
        assert_eq!(c.tokens, want, "{p:?}");
        assert_eq!(c.usage.completion_tokens, c.tokens.len());
        assert_eq!(c.text, m.tokenizer.decode(&c.tokens));
    }
}

#[test]
fn preemption_under_a_small_kv_budget_still_completes_every_request() {
    let m = model();
    // 10 blocks × 16 = 160 positions for 6 requests of 6–10 + 24 tokens (two
    // blocks each, end-of-generation ignored so that none leaves early).
    let engine = BatchEngine::start(m.clone(), config(6, 64, 10, 160));
    let long_request = |p: &str| Request {
        ignore_eos: true,
        ..request(&m, p, 24)
    };
    let handles: Vec<_> = PROMPTS[..6]
        .iter()
        .map(|p| engine.submit(long_request(p)).unwrap())
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.wait()).collect();
    assert!(
        engine.stats.preemptions.load(Ordering::Relaxed) > 0,
        "the budget forced preemption"
    );
    for (p, c) in PROMPTS[..6].iter().zip(&got) {
        let mut s = Session::new(&m, 512);
        let want = s.generate(&long_request(p), |_| true).unwrap().tokens;
        assert_eq!(c.tokens, want, "{p:?}");
        assert_eq!(c.reason, Some(StopReason::Length));
    }
    wait_for_free_blocks(&engine, 10);
    assert_eq!(engine.stats.kv_blocks_free.load(Ordering::Relaxed), 10);
}

#[test]
fn cancelling_frees_blocks_at_once() {
    let m = model();
    let engine = BatchEngine::start(m.clone(), config(4, 64, 64, 1024));
    let mut h = engine.submit(request(&m, PROMPTS[0], 1000)).unwrap();
    // Wait for a few tokens, then hang up.
    for _ in 0..3 {
        h.events.blocking_recv().unwrap();
    }
    assert!(engine.stats.kv_blocks_free.load(Ordering::Relaxed) < 64);
    drop(h);
    wait_for_free_blocks(&engine, 64);
    assert_eq!(engine.stats.running.load(Ordering::Relaxed), 0);
}

#[test]
fn bad_requests_are_refused_and_the_engine_keeps_serving() {
    let m = model();
    let engine = BatchEngine::start(m.clone(), config(4, 64, 64, 64));
    let mut r = request(&m, PROMPTS[0], 100);
    assert!(engine
        .submit(r.clone())
        .err()
        .unwrap()
        .to_string()
        .contains("exceeds the context"));
    r.max_tokens = 4;
    r.prompt = vec![];
    assert!(engine.submit(r.clone()).is_err());
    r.prompt = vec![10_000_000];
    assert!(engine
        .submit(r.clone())
        .err()
        .unwrap()
        .to_string()
        .contains("outside the vocabulary"));
    let ok = engine.submit(request(&m, PROMPTS[0], 4)).unwrap().wait();
    assert_eq!(ok.tokens.len(), 4);
}

#[test]
fn stop_strings_and_per_request_sampling() {
    let m = model();
    let engine = BatchEngine::start(m.clone(), config(4, 64, 64, 256));
    let mut r = request(&m, PROMPTS[0], 40);
    r.stop = vec!["United".into()];
    let c = engine.submit(r).unwrap().wait();
    assert_eq!(c.reason, Some(StopReason::StopString));
    assert!(
        c.text.starts_with(" Paris.") && !c.text.contains("United"),
        "{:?}",
        c.text
    );
    let sample = |seed| {
        let mut r = request(&m, PROMPTS[2], 16);
        r.sampling = SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        engine.submit(r).unwrap()
    };
    let (a, b, c) = (sample(1), sample(1), sample(2));
    let (a, b, c) = (a.wait(), b.wait(), c.wait());
    assert_eq!(a.tokens, b.tokens, "same seed in the same batch");
    assert_ne!(a.tokens, c.tokens);
}

#[test]
fn prefix_cache_reuses_blocks_and_changes_no_token() {
    let m = model();
    let cfg = |prefix_cache| EngineConfig {
        prefix_cache,
        ..config(4, 256, 256, 1024)
    };
    let long = "The history of the city begins in the Roman era, when a small settlement grew on the river bank. ".repeat(8);
    let first = format!("{long}Question one: who founded it?");
    let second = format!("{long}Question two: what is it known for today?");
    let cached = BatchEngine::start(m.clone(), cfg(true));
    let plain = BatchEngine::start(m.clone(), cfg(false));
    let a = cached.submit(request(&m, &first, 8)).unwrap().wait();
    assert_eq!(a.usage.cached_tokens, 0);
    let b = cached.submit(request(&m, &second, 8)).unwrap().wait();
    let prompt_len = m.tokenizer.encode(&second, true).unwrap().len();
    assert!(
        b.usage.cached_tokens >= 160 && b.usage.cached_tokens < prompt_len,
        "{:?}",
        b.usage
    );
    assert_eq!(b.usage.cached_tokens % 16, 0, "whole blocks");
    let b_plain = plain.submit(request(&m, &second, 8)).unwrap().wait();
    assert_eq!(b.tokens, b_plain.tokens, "reused KV gives the same tokens");
    assert!(cached.stats.prompt_tokens_cached.load(Ordering::Relaxed) >= 160);
}

fn speculating(
    m: &Arc<LoadedModel<CpuBackend>>,
    draft: Option<Arc<LoadedModel<CpuBackend>>>,
    fixed_k: Option<usize>,
    cfg: EngineConfig,
) -> BatchEngine {
    let spec = EngineSpec {
        draft,
        governor: GovernorConfig { k_max: 8, fixed_k },
    };
    BatchEngine::start_with(m.clone(), cfg, Some(spec))
}

#[test]
fn speculation_inside_the_batch_changes_no_token() {
    let m = model();
    // Guesses forced at every step (k = 4), by n-gram lookup and by the same
    // model as its own draft, for 16 sequences decoded together, and with a
    // small KV budget so that guesses meet full caches and preemption.
    let draft = Some(model());
    let cases = [
        ("ngram", None, config(16, 256, 1024, 512)),
        ("draft", draft.clone(), config(16, 256, 1024, 512)),
        ("ngram, small cache", None, config(6, 64, 10, 160)),
    ];
    for (name, draft, cfg) in cases {
        let is_draft = draft.is_some();
        let n = if cfg.kv_blocks == 10 { 24 } else { 32 };
        let prompts = if cfg.kv_blocks == 10 {
            &PROMPTS[..6]
        } else {
            &PROMPTS[..]
        };
        let engine = speculating(&m, draft, Some(4), cfg);
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| engine.submit(request(&m, p, n)).unwrap())
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.wait()).collect();
        for (p, c) in prompts.iter().zip(&got) {
            assert_eq!(c.error, None, "{name}");
            assert_eq!(c.tokens, one_at_a_time(&m, p, n), "{name}: {p:?}");
            assert_eq!(c.text, m.tokenizer.decode(&c.tokens), "{name}");
            assert_eq!(c.usage.completion_tokens, c.tokens.len());
            let s = c.speculation.as_ref().expect("a speculation report");
            if is_draft {
                // Rows are computed the same in any batch, so a draft that is
                // the target guesses exactly what the target picks; only the
                // guesses after the end of the text go unjudged.
                assert!(s.drafted - s.accepted <= 4, "{name}: {p:?} {s:?}");
            }
        }
        let st = &engine.stats.spec;
        let (drafted, accepted) = (
            st.drafted.load(Ordering::Relaxed),
            st.accepted.load(Ordering::Relaxed),
        );
        eprintln!("{name}: accepted {accepted} of {drafted}");
        assert!(drafted > 0 && accepted > 0, "{name}");
        let steps = engine.stats.steps.load(Ordering::Relaxed);
        let tokens = engine.stats.generated_tokens.load(Ordering::Relaxed);
        if is_draft {
            assert!(
                steps * 3 < tokens,
                "{name}: {steps} steps for {tokens} tokens"
            );
        }
        wait_for_free_blocks(&engine, cfg.kv_blocks);
    }
}

#[test]
fn sampled_speculation_inside_the_batch_keeps_the_target_distribution() {
    let m = model();
    // As tests/speculative.rs does for one sequence: the second generated
    // token (the first round's verdict on an n-gram guess) has the same
    // distribution with and without speculation, here with 16 requests at once.
    // Long enough for whole KV blocks, which the prefix cache shares: each
    // request then reads only its last few prompt tokens.
    let prompt =
        "red blue red green red blue red green red blue red green red blue red green red blue red";
    let cfg = EngineConfig {
        prefix_cache: true,
        ..config(16, 256, 512, 64)
    };
    let plain = BatchEngine::start(m.clone(), cfg);
    let spec = speculating(&m, None, Some(2), cfg);
    let n = 600;
    let run = |engine: &BatchEngine, seed0: u64| -> Vec<u32> {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let mut r = request(&m, prompt, 3);
                r.ignore_eos = true;
                r.sampling = SamplingParams {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 0.9,
                    min_p: 0.0,
                    seed: seed0 + i as u64,
                    ..SamplingParams::default()
                };
                engine.submit(r).unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.wait().tokens[1]).collect()
    };
    let (a, b) = (run(&plain, 0), run(&spec, 1_000_000));
    let p = common::homogeneity_p(&a, &b);
    let st = &spec.stats.spec;
    let (drafted, accepted) = (
        st.drafted.load(Ordering::Relaxed),
        st.accepted.load(Ordering::Relaxed),
    );
    eprintln!("acceptance {accepted}/{drafted}; homogeneity p = {p:.3}");
    assert!(
        p > 0.01,
        "speculation in the batch changed the distribution: p = {p}"
    );
    assert!(
        drafted as usize > n / 5 && accepted > 0 && accepted < drafted,
        "drafted {drafted}, accepted {accepted}"
    );
}
