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
    // And with its output layer cut to the first 3000 tokens: guesses from
    // those only, often wrong.
    let mut cut = load("smollm2-135m");
    cut.limit_head(3000).unwrap();
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
                Box::new(DraftProposer::new(&cut, &model, 512, &req.sampling).unwrap()),
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

/// Temperature 1 with top-p: the second generated token of `n` plain runs
/// against `n` speculative ones (`proposer` built per run, k = 2) must
/// follow one distribution (two-sample chi-square, p > 0.01), with both
/// outcomes of the rejection step seen.
fn assert_same_distribution<'m>(
    model: &LoadedModel<CpuBackend>,
    n: usize,
    mut proposer: impl FnMut(&SamplingParams) -> Box<dyn Proposer + 'm>,
) {
    // Repetitive text, so that the guesses are right only some of the time:
    // both acceptance and residual draws happen.
    let prompt = "red blue red green red blue red green red blue red";
    let sampling = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.9,
        min_p: 0.0,
        seed,
        ..SamplingParams::default()
    };
    // The second generated token: the first comes from the prompt's logits;
    // the second is the first round's verdict on the first guess (the
    // guess itself, or a draw from the residual), or a plain draw where the
    // proposer found nothing.
    let (mut plain, mut spec) = (Vec::new(), Vec::new());
    let mut session = Session::new(model, 256);
    let (mut drafted, mut accepted) = (0, 0);
    let mut name = "";
    for i in 0..n {
        let req = request(model, prompt, 3, sampling(i as u64));
        plain.push(session.generate(&req, |_| true).unwrap().tokens[1]);
        let req = request(model, prompt, 3, sampling(1_000_000 + i as u64));
        let mut p = proposer(&req.sampling);
        name = p.name();
        let mut gov = Governor::new(GovernorConfig {
            k_max: 2,
            fixed_k: Some(2),
        });
        let s = Speculation {
            proposer: p.as_mut(),
            governor: &mut gov,
        };
        let out = session.generate_with(&req, Some(s), |_| true).unwrap();
        let st = out.speculation.unwrap();
        drafted += st.drafted;
        accepted += st.accepted;
        spec.push(out.tokens[1]);
    }
    let p = common::homogeneity_p(&plain, &spec);
    eprintln!("{name}: acceptance {accepted}/{drafted}; homogeneity p = {p:.3}");
    assert!(
        p > 0.01,
        "speculative sampling with {name} changed the distribution: p = {p}"
    );
    // Both paths of the rejection step were exercised.
    assert!(
        drafted > n / 5 && accepted > 0 && accepted < drafted,
        "{name}: drafted {drafted}, accepted {accepted}"
    );
}

#[test]
fn sampled_speculation_keeps_the_target_distribution() {
    let model = load("smollm2-135m");
    assert_same_distribution(&model, 1000, |_| Box::new(NgramProposer::default()));
}

/// A draft whose output layer scores only the vocabulary's first rows draws
/// its guesses from them alone (q = 0 elsewhere): the target's tokens beyond
/// the cut must still come out as often as without speculation, by the
/// residual draw. The cut here drops " blue" (4461), a likely next token,
/// and keeps " red" (2382) and " green" (2654).
#[test]
fn a_draft_with_a_cut_vocabulary_keeps_the_target_distribution() {
    let model = load("smollm2-135m");
    let mut draft = load("smollm2-135m");
    assert_eq!(draft.limit_head(3000).unwrap(), 3000);
    let draft = &draft;
    // Fewer runs (a draft run costs more): a token the draft cannot guess
    // going missing would still show at once.
    assert_same_distribution(&model, 500, |sampling| {
        Box::new(DraftProposer::new(draft, &model, 256, sampling).unwrap())
    });
}

/// The cut head's logits are the full head's first rows, bit for bit.
#[test]
fn a_cut_head_scores_the_first_rows_exactly() {
    let full = load("smollm2-135m");
    let mut cut = load("smollm2-135m");
    let vocab = cut.head_rows;
    assert_eq!(cut.limit_head(1000).unwrap(), 1000);
    assert_eq!(cut.head_rows, 1000);
    let prompt = full.tokenizer.encode("def quicksort(arr):", true).unwrap();
    let last = prompt.len() - 1;
    let a = Session::new(&full, 64).feed(&prompt, last).unwrap().0;
    let b = Session::new(&cut, 64).feed(&prompt, last).unwrap().0;
    assert_eq!(a.len(), vocab);
    assert_eq!(b.len(), 1000);
    assert!(a[..1000]
        .iter()
        .zip(&b)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    // Back to the whole vocabulary; asking for more than it clamps.
    assert_eq!(cut.limit_head(usize::MAX).unwrap(), vocab);
    assert_eq!(Session::new(&cut, 64).feed(&prompt, last).unwrap().0, a);
}

#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let target = load("smollm2-135m");
    let same = load("smollm2-135m");
    let other = load("gemma3-270m");
    let greedy = SamplingParams::greedy();
    assert!(DraftProposer::new(&same, &target, 64, &greedy).is_ok());
    let err = DraftProposer::new(&other, &target, 64, &greedy)
        .err()
        .expect("Gemma's vocabulary is not SmolLM2's")
        .to_string();
    assert!(err.contains("vocabular"), "{err}");
}

#[test]
fn a_draft_knows_how_far_behind_the_text_it_is() {
    let model = load("smollm2-135m");
    let greedy = SamplingParams::greedy();
    let mut draft = DraftProposer::new(&model, &model, 256, &greedy).unwrap();
    let prompt = model.tokenizer.encode(PROMPTS[0], true).unwrap();
    assert_eq!(draft.behind(&prompt), prompt.len());
    draft.prefill(&prompt).unwrap();
    assert_eq!(draft.behind(&prompt), 0);
    // Two guesses: the session reads the first; a history that kept it and
    // added a correction is one token ahead of the session.
    let guesses = draft.propose(&prompt, 2).unwrap().tokens;
    let mut kept = prompt.clone();
    kept.extend([guesses[0], guesses[1] + 1]);
    assert_eq!(draft.behind(&kept), 1);
    // One that kept nothing: two ahead of what the session agrees with.
    let mut rejected = prompt.clone();
    rejected.extend([guesses[0] + 1, 7]);
    assert_eq!(draft.behind(&rejected), 2);
}
