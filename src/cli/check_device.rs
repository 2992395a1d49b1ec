//! `tandem check-device`: the same model on the CPU and on another device,
//! compared. Logits of a prompt (the prefill path) and of teacher-forced
//! decode steps (the decode path, recorded graphs included) must agree
//! within a relative L2 tolerance; free-running greedy generations are
//! compared token by token. Exits non-zero when they disagree.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use tandem::backend::device::{AnyBackend, Device};
use tandem::engine::Session;
use tandem::model::LoadedModel;

#[derive(Args)]
pub struct CheckDeviceArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    #[arg(
        short = 'p',
        long = "prompt",
        default_value = "The capital of France is Paris. The capital of Germany is"
    )]
    prompt: String,
    /// Decode steps compared (teacher-forced, then free-running).
    #[arg(short = 'n', default_value_t = 32)]
    n: usize,
    /// Largest relative L2 error of a logits row (‖gpu − cpu‖ / ‖cpu‖).
    #[arg(long = "tol", default_value_t = 0.03)]
    tol: f64,
    /// Also require identical free-running greedy tokens.
    #[arg(long = "same-tokens")]
    same_tokens: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    device: String,
    prompt_tokens: usize,
    prefill_max_rel_err: f64,
    decode_max_rel_err: f64,
    /// Largest KL(p_cpu ‖ p_device) of a row's next-token distribution, nats.
    max_kl: f64,
    argmax_agree: usize,
    argmax_rows: usize,
    greedy_cpu: Vec<u32>,
    greedy_dev: Vec<u32>,
    greedy_same_prefix: usize,
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += ((x - y) as f64).powi(2);
        den += (*x as f64).powi(2);
    }
    if a.iter().chain(b).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// KL(softmax(a) ‖ softmax(b)) in nats.
fn kl(a: &[f32], b: &[f32]) -> f64 {
    let log_softmax = |x: &[f32]| -> Vec<f64> {
        let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
        x.iter().map(|&v| v as f64 - lse).collect()
    };
    let (la, lb) = (log_softmax(a), log_softmax(b));
    la.iter()
        .zip(&lb)
        .map(|(p, q)| p.exp() * (p - q))
        .sum::<f64>()
        .max(0.0)
}

fn argmax(x: &[f32]) -> u32 {
    tandem::sampler::argmax(x)
}

fn greedy(m: &LoadedModel<AnyBackend>, prompt: &[u32], n: usize, ctx: usize) -> Result<Vec<u32>> {
    let mut s = Session::new(m, ctx);
    let vocab = m.hparams().vocab_size;
    let (mut logits, _) = s.feed(prompt, prompt.len() - 1)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits[logits.len() - vocab..]);
        out.push(t);
        logits = s.extend(&[t], 0)?;
    }
    Ok(out)
}

pub fn run(a: CheckDeviceArgs) -> Result<()> {
    if a.model.device == Device::Cpu {
        bail!("--device names the device to check against the CPU (cuda or cuda:N)");
    }
    let dev = a.model.load()?;
    let mut cpu_args = a.model.clone();
    cpu_args.device = Device::Cpu;
    let cpu = cpu_args.load()?;
    let vocab = cpu.hparams().vocab_size;
    let ctx = a.model.ctx.min(cpu.hparams().ctx_len);
    let prompt = cpu.tokenizer.encode(&a.prompt, true)?;
    if prompt.is_empty() {
        bail!("the prompt has no tokens");
    }

    let (mut sc, mut sd) = (Session::new(&cpu, ctx), Session::new(&dev, ctx));
    let (lc, _) = sc.feed(&prompt, 0)?;
    let (ld, _) = sd.feed(&prompt, 0)?;
    let mut prefill_err = 0f64;
    let mut max_kl = 0f64;
    let (mut agree, mut rows) = (0, 0);
    for (c, d) in lc.chunks(vocab).zip(ld.chunks(vocab)) {
        prefill_err = prefill_err.max(rel_err(c, d));
        max_kl = max_kl.max(kl(c, d));
        agree += (argmax(c) == argmax(d)) as usize;
        rows += 1;
    }
    let mut decode_err = 0f64;
    let mut next = argmax(&lc[lc.len() - vocab..]);
    for _ in 0..a.n {
        let c = sc.extend(&[next], 0)?;
        let d = sd.extend(&[next], 0)?;
        decode_err = decode_err.max(rel_err(&c, &d));
        max_kl = max_kl.max(kl(&c, &d));
        agree += (argmax(&c) == argmax(&d)) as usize;
        rows += 1;
        next = argmax(&c);
    }
    let greedy_cpu = greedy(&cpu, &prompt, a.n, ctx)?;
    let greedy_dev = greedy(&dev, &prompt, a.n, ctx)?;
    let same = greedy_cpu
        .iter()
        .zip(&greedy_dev)
        .take_while(|(x, y)| x == y)
        .count();
    let r = Report {
        device: tandem::backend::Backend::name(&dev.backend),
        prompt_tokens: prompt.len(),
        prefill_max_rel_err: prefill_err,
        decode_max_rel_err: decode_err,
        max_kl,
        argmax_agree: agree,
        argmax_rows: rows,
        greedy_same_prefix: same,
        greedy_cpu,
        greedy_dev,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("device: {}", r.device);
        println!(
            "prefill ({} rows): max relative L2 error {:.2e}",
            r.prompt_tokens, r.prefill_max_rel_err
        );
        println!(
            "decode ({} steps): max relative L2 error {:.2e}",
            a.n, r.decode_max_rel_err
        );
        println!(
            "argmax agrees on {}/{} rows; largest KL(cpu ‖ device) {:.2e} nats",
            r.argmax_agree, r.argmax_rows, r.max_kl
        );
        println!(
            "free-running greedy: first {}/{} tokens identical",
            r.greedy_same_prefix, a.n
        );
    }
    let mut fails = Vec::new();
    if prefill_err > a.tol {
        fails.push(format!("prefill error {prefill_err:.2e} > {}", a.tol));
    }
    if decode_err > a.tol {
        fails.push(format!("decode error {decode_err:.2e} > {}", a.tol));
    }
    if a.same_tokens && r.greedy_same_prefix < a.n {
        fails.push(format!(
            "greedy tokens differ after {}",
            r.greedy_same_prefix
        ));
    }
    if !fails.is_empty() {
        bail!("check failed: {}", fails.join("; "));
    }
    println!("ok");
    Ok(())
}
