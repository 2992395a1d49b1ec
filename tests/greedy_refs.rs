//! Agreement with llama.cpp's greedy runs (`../shared/refs/greedy_<model>.json`).
//!
//! Both engines quantize activations to 8 bits before every matrix product.
//! On these small models one rounding that lands differently (float
//! summation order is enough) cascades through the layers, so bit-identical
//! results would need ggml's exact kernels. Measured (docs/perf.md, "Agreement
//! with llama.cpp"): with the reference's own tokens fed in (teacher forcing),
//! our log-probabilities of its top-3 candidates differ by 0.04–0.17 on
//! average, randomly, not growing with position; the top token differs only
//! where the reference's margin is small. How small: two summation orders of
//! our own (the earlier row kernels and the prompt GEMM, equal per product
//! to float rounding) moved the margin between Gemma 3's two best candidates
//! at one position of the quicksort prompt by 0.61, where the reference's
//! margin is 0.92; `NEAR_TIE` is set from that. The test asserts:
//! - prompt tokens identical;
//! - teacher forced: the logits of the reference's tokens read as one prompt
//!   (the GEMM) and decoded one at a time (the single-token kernels) are the
//!   same bits;
//! - mean |Δ logprob| over the reference top-3 ≤ `MEAN_TOL`, and wherever our
//!   best token differs from the reference's, the reference ranks ours
//!   within `NEAR_TIE` of its own;
//! - free running: tokens identical up to the first such near-tie (printed).
//!
//! A real bug (RoPE layout, a norm, the tokenizer) breaks these by far.
//! llama.cpp itself, rebuilt for this CPU, leaves the same references on 4 of
//! the 9 prompts at reference margins of 0.05–0.36 (`scripts/llama_cpp_greedy.py`,
//! docs/perf.md), so "token for token" holds only on the reference's host.

mod common;

use tandem::backend::cpu::CpuBackend;
use tandem::engine::request::Request;
use tandem::engine::Session;
use tandem::model::LoadedModel;
use tandem::sampler::{argmax, log_softmax, SamplingParams};

const MEAN_TOL: f64 = 0.2;
const NEAR_TIE: f64 = 1.0;

/// The reference's log-probability margin between its choice and `ours`
/// (infinite if `ours` is not in its top-5).
fn ref_margin(top: &[serde_json::Value], ours: u32) -> f64 {
    let best = top[0][1].as_f64().unwrap();
    top.iter()
        .find(|c| c[0].as_u64() == Some(ours as u64))
        .map_or(f64::INFINITY, |c| best - c[1].as_f64().unwrap())
}

fn check(name: &str, stem: &str) {
    let model = LoadedModel::load(&common::model_path(name), CpuBackend).unwrap();
    let vocab = model.hparams().vocab_size;
    let r = common::load_ref("greedy", stem);
    for res in r["results"].as_array().unwrap() {
        let prompt = res["prompt"].as_str().unwrap();
        let want_prompt: Vec<u32> = res["prompt_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap() as u32)
            .collect();
        let prompt_ids = model.tokenizer.encode(prompt, true).unwrap();
        assert_eq!(
            prompt_ids, want_prompt,
            "{name}: prompt tokens of {prompt:?}"
        );
        let want = common::ids(&res["generated_token_ids"]);
        let per_token = res["per_token"].as_array().unwrap();

        // Teacher forcing: prompt + reference tokens in one batch, and the
        // reference tokens decoded one at a time after the prompt.
        let mut all = prompt_ids.clone();
        all.extend(&want);
        let mut session = Session::new(&model, 1024);
        let (as_prompt, _) = session.feed(&all, prompt_ids.len() - 1).unwrap();
        session.truncate(0);
        let (mut decoded, _) = session.feed(&prompt_ids, prompt_ids.len() - 1).unwrap();
        for &t in &want[..want.len() - 1] {
            decoded.extend(session.extend(&[t], 0).unwrap());
        }
        // (The prompt read includes one row more: after the last token.)
        assert_eq!(as_prompt.len(), decoded.len() + vocab);
        for (i, (a, b)) in as_prompt.iter().zip(&decoded).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name} {prompt:?}: logit {i} read as prompt {a} vs decoded {b}"
            );
        }
        let (mut sum, mut n, mut flips) = (0f64, 0usize, 0usize);
        for (i, pt) in per_token.iter().enumerate() {
            let lp = log_softmax(&as_prompt[i * vocab..(i + 1) * vocab]);
            let top = pt["top5"].as_array().unwrap();
            for c in top.iter().take(3) {
                sum += (lp[c[0].as_u64().unwrap() as usize] as f64 - c[1].as_f64().unwrap()).abs();
                n += 1;
            }
            let ours = argmax(&lp);
            if ours != want[i] {
                flips += 1;
                let m = ref_margin(top, ours);
                assert!(
                    m <= NEAR_TIE,
                    "{name} {prompt:?}: at token {i} we prefer {ours}, the reference ranks it {m:.3} below {}",
                    want[i]
                );
            }
        }
        let mean = sum / n as f64;
        eprintln!("{name} {prompt:?}: teacher-forced mean |Δlogprob| {mean:.4}, best token differs at {flips}/{} (near-ties)", want.len());
        assert!(
            mean <= MEAN_TOL,
            "{name} {prompt:?}: mean |Δlogprob| {mean:.4}"
        );

        // Free running.
        session.truncate(0);
        let req = Request {
            prompt: prompt_ids,
            max_tokens: want.len(),
            sampling: SamplingParams::greedy(),
            stop: vec![],
            ignore_eos: false,
        };
        let out = session.generate(&req, |_| true).unwrap();
        let same = out
            .tokens
            .iter()
            .zip(&want)
            .take_while(|(a, b)| a == b)
            .count();
        if same < want.len() {
            let m = ref_margin(
                per_token[same]["top5"].as_array().unwrap(),
                out.tokens[same],
            );
            assert!(
                m <= NEAR_TIE,
                "{name} {prompt:?}: free-running token {same} differs with reference margin {m:.3}"
            );
            eprintln!("{name} {prompt:?}: free running, {same}/{} identical, then a near-tie (margin {m:.4})", want.len());
        } else {
            eprintln!(
                "{name} {prompt:?}: free running, all {} tokens identical",
                want.len()
            );
        }
    }
}

#[test]
fn smollm2_agrees_with_llama_cpp() {
    check("smollm2-135m", "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_agrees_with_llama_cpp() {
    check("gemma3-270m", "gemma3-270m-q4_k_m");
}

#[test]
fn qwen_0_5b_agrees_with_llama_cpp() {
    check("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct");
}

/// The 1.5B model has no greedy reference; it must load and write code.
#[test]
fn qwen_1_5b_loads_and_generates() {
    let model = LoadedModel::load(&common::model_path("qwen2.5-coder-1.5b"), CpuBackend).unwrap();
    let prompt = model.tokenizer.encode("def fibonacci(n):", true).unwrap();
    let mut session = Session::new(&model, 256);
    let req = Request {
        prompt,
        max_tokens: 16,
        sampling: SamplingParams::greedy(),
        stop: vec![],
        ignore_eos: false,
    };
    let out = session.generate(&req, |_| true).unwrap();
    assert_eq!(out.tokens.len(), 16);
    assert!(
        out.text.contains("fibonacci") || out.text.contains("return") || out.text.contains("if"),
        "{:?}",
        out.text
    );
}
