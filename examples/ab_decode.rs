//! In-process A/B of a CPU decode variant. Greedy single-token steps on a
//! real model, in blocks of a few tokens; before each block the variant
//! switch (`tandem::backend::cpu::variant`) is set to A (0) or B (1) in the
//! order ABBA BAAB …, so a drift of the host's speed (its neighbours come
//! and go within seconds) falls on both alike. Prints each variant's
//! tokens/s and B/A with a paired t statistic over the block pairs.
//!
//! `cargo run --release --example ab_decode -- MODEL [BLOCKS] [TOKENS]`
//! (defaults 64 blocks of 8 tokens). What B means is whatever the code
//! under test reads from the switch: a kernel-notes experiment, not a
//! speed claim (that is `tandem bench`).

use std::path::Path;
use std::time::Instant;

use tandem::backend::cpu::{variant, CpuBackend};
use tandem::backend::Readout;
use tandem::engine::Session;
use tandem::model::LoadedModel;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: ab_decode MODEL [BLOCKS] [TOKENS]");
    let blocks: usize = args.get(2).map_or(64, |a| a.parse().expect("blocks"));
    let per: usize = args.get(3).map_or(8, |a| a.parse().expect("tokens"));
    let threads = num_cpus::get_physical();
    tandem::backend::cpu::pool::init(threads);
    // `AB_LOADS=2`: the model loaded twice, with the switch at 0 and at 1
    // (for variants of how weights are laid out at load), each variant
    // decoding with its own copy.
    let loads = std::env::var("AB_LOADS").map_or(1, |v| v.parse().expect("AB_LOADS"));
    let models: Vec<LoadedModel<CpuBackend>> = (0..loads)
        .map(|v| {
            variant::set(v);
            LoadedModel::load(Path::new(path), CpuBackend).expect("loading the model")
        })
        .collect();
    // `AB_DEPTH=D`: decode after a prompt of D tokens (attention's share
    // grows with it); the context wraps back to it.
    let depth: usize = std::env::var("AB_DEPTH").map_or(1, |v| v.parse().expect("AB_DEPTH"));
    let ctx = (depth + 512).min(models[0].hparams().ctx_len);
    let mut sessions: Vec<Session<'_, CpuBackend>> =
        models.iter().map(|m| Session::new(m, ctx)).collect();
    let mut toks: Vec<u32> = sessions
        .iter_mut()
        .map(|s| {
            let prompt: Vec<u32> = (0..depth as u32).map(|i| 100 + i % 1000).collect();
            s.extend_as(&prompt, depth - 1, Readout::Top(1))
                .unwrap()
                .row(0)
                .best()
        })
        .collect();
    let step = |session: &mut Session<'_, CpuBackend>, tok: &mut u32| {
        if session.tokens().len() + 1 >= ctx {
            session.truncate(depth);
        }
        *tok = session
            .extend_as(&[*tok], 0, Readout::Top(1))
            .unwrap()
            .row(0)
            .best();
    };
    // Warm-up in both variants.
    for v in [0, 1, 0] {
        variant::set(v);
        let m = v % loads;
        for _ in 0..per {
            step(&mut sessions[m], &mut toks[m]);
        }
    }
    let mut secs = [Vec::new(), Vec::new()];
    for b in 0..blocks {
        // ABBA BAAB: the Thue–Morse sequence.
        let v = (b.count_ones() % 2) as usize;
        variant::set(v);
        let m = v % loads;
        let t = Instant::now();
        for _ in 0..per {
            step(&mut sessions[m], &mut toks[m]);
        }
        secs[v].push(t.elapsed().as_secs_f64());
    }
    let rate = |s: &[f64]| (per * s.len()) as f64 / s.iter().sum::<f64>();
    let (a, b) = (rate(&secs[0]), rate(&secs[1]));
    // Paired over blocks in order: log-ratio of each B block's speed to its
    // A partner's.
    let d: Vec<f64> = secs[0]
        .iter()
        .zip(&secs[1])
        .map(|(sa, sb)| (sa / sb).ln())
        .collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    println!(
        "A {a:.2} tok/s, B {b:.2} tok/s, B/A {:.4} (paired: ×{:.4} ± {:.4} se, t = {:.2}, {} pairs)",
        b / a,
        mean.exp(),
        sd / n.sqrt(),
        mean / (sd / n.sqrt()),
        d.len()
    );
}
