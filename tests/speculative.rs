//! Speculative decoding on a real model (SmolLM2): greedy output is token for
//! token the same as plain greedy decoding with every proposer and k, and at
//! temperature 1 with top-p the distribution of verified tokens matches plain
//! sampling (two-sample chi-square). The broken-verifier counterpart of the
//! distribution test, on exact distributions, is in `spec::verify`'s tests.

mod common;

use tandem::backend::cpu::CpuBackend;
use tandem::engine::generate::Speculation;
use tandem::engine::request::Request;
use tandem::engine::Session;
use tandem::model::LoadedModel;
use tandem::sampler::SamplingParams;
use tandem::spec::{DraftProposer, Governor, GovernorConfig, NgramProposer, Proposer};

fn load(name: &str) -> LoadedModel<CpuBackend> {
    LoadedModel::load(&common::model_path(name), CpuBackend).unwrap()
}

fn request(
    model: &LoadedModel<CpuBackend>,
    prompt: &str,
    n: usize,
    sampling: SamplingParams,
) -> Request {
    Request {
        prompt: model.tokenizer.encode(prompt, true).unwrap(),
        max_tokens: n,
        sampling,
        stop: vec![],
        ignore_eos: true,
    }
}

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "def quicksort(arr):\n",
    "Once upon a time, in a small village,",
];

#[test]
fn greedy_speculation_is_token_identical_with_every_proposer() {
    let model = load("smollm2-135m");
    // Self-speculation: the same file as its own draft (acceptance near 1,
    // so long rounds and many rollbacks are exercised).
    let draft = load("smollm2-135m");
    for prompt in PROMPTS {
        let req = request(&model, prompt, 64, SamplingParams::greedy());
        let plain = Session::new(&model, 512).generate(&req, |_| true).unwrap();
        for k in [None, Some(1), Some(4), Some(8)] {
            let cfg = GovernorConfig {
                k_max: 8,
                fixed_k: k,
            };
            let mut proposers: Vec<Box<dyn Proposer + '_>> = vec![
                Box::new(NgramProposer::default()),
                Box::new(DraftProposer::new(&draft, &model, 512, &req.sampling).unwrap()),
            ];
            for p in proposers.iter_mut() {
                let mut gov = Governor::new(cfg.clone());
                let name = p.name();
                let spec = Speculation {
                    proposer: p.as_mut(),
                    governor: &mut gov,
                };
                let out = Session::new(&model, 512)
                    .generate_with(&req, Some(spec), |_| true)
                    .unwrap();
                assert_eq!(out.tokens, plain.tokens, "{name} k={k:?} on {prompt:?}");
                assert_eq!(out.text, plain.text);
                let s = out.speculation.unwrap();
                if k.is_some() && name == "draft" {
                    assert!(s.rounds > 0 && s.accepted > 0, "{name} k={k:?}: {s:?}");
                }
            }
        }
    }
}

#[test]
fn sampled_speculation_keeps_the_target_distribution() {
    let model = load("smollm2-135m");
    // Repetitive text, so that the n-gram proposer guesses at every step,
    // right only some of the time: both acceptance and residual draws happen.
    let prompt = "red blue red green red blue red green red blue red";
    let sampling = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.9,
        min_p: 0.0,
        seed,
        ..SamplingParams::default()
    };
    let n = 1000;
    // The second generated token: the first comes from the prompt's logits;
    // the second is the first round's verdict on the n-gram guess (the
    // guess itself, or a draw from the residual), or a plain draw where the
    // lookup found nothing.
    let (mut plain, mut spec) = (Vec::new(), Vec::new());
    let mut session = Session::new(&model, 256);
    let (mut drafted, mut accepted) = (0, 0);
    for i in 0..n {
        let req = request(&model, prompt, 3, sampling(i as u64));
        plain.push(session.generate(&req, |_| true).unwrap().tokens[1]);
        let req = request(&model, prompt, 3, sampling(1_000_000 + i as u64));
        let mut ngram = NgramProposer::default();
        let mut gov = Governor::new(GovernorConfig {
            k_max: 2,
            fixed_k: Some(2),
        });
        let s = Speculation {
            proposer: &mut ngram,
            governor: &mut gov,
        };
        let out = session.generate_with(&req, Some(s), |_| true).unwrap();
        let st = out.speculation.unwrap();
        drafted += st.drafted;
        accepted += st.accepted;
        spec.push(out.tokens[1]);
    }
    let p = common::homogeneity_p(&plain, &spec);
    eprintln!("acceptance {accepted}/{drafted}; homogeneity p = {p:.3}");
    assert!(
        p > 0.01,
        "speculative sampling changed the distribution: p = {p}"
    );
    // Both paths of the rejection step were exercised.
    assert!(
        drafted > n / 5 && accepted > 0 && accepted < drafted,
        "drafted {drafted}, accepted {accepted}"
    );
}
