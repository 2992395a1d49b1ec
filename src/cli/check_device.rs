//! `tandem check-device`: the same model on the CPU and on another device,
//! compared. Logits of a prompt (the prefill path) and of teacher-forced
//! decode steps (the decode path, recorded graphs included) must agree
//! within a relative L2 tolerance; free-running greedy generations are
//! compared token by token. The device's own summaries of its logit rows
//! (top-k and log-sum-exp, computed where the logits are) must equal what
//! the host computes from the same rows; ops no model reaches on the device
//! (RoPE alone, the KV store) agree on random data. Exits non-zero when they
//! disagree.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use tandem::backend::device::{AnyBackend, Device};
use tandem::backend::logits::gumbel_argmax;
use tandem::backend::{DrawKey, Logits, Readout, Row};
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
    /// Rows whose device-side top-k readout differs from the host's
    /// selection over the same full row (ids, values, or lse by > 1e-5).
    readout_rows: usize,
    readout_mismatches: usize,
    /// op_errors: RoPE, KV store and attention alone, device vs CPU.
    ops_max_rel_err: f64,
}

/// Candidate counts the readout check cycles through: one stage, the
/// default top-k, and the most a backend is asked for.
const READOUT_KS: [usize; 3] = [1, 40, tandem::backend::logits::MAX_TOP_K];

/// The device's readout of rows it did not compute, at the model's width
/// and at widths that take one, two and three stages (SmolLM2's 49,152,
/// Gemma 3's 262,144): coarse values (ties everywhere, ranked by id), fine
/// random values, and a constant row. Returns (rows checked, rows that
/// differ).
fn synthetic_readout(be: &AnyBackend, vocab: usize) -> (usize, usize) {
    let (mut rows, mut bad) = (0, 0);
    for width in [vocab, 1000, 2048, 49_152, 262_144] {
        let (r, b) = synthetic_readout_at(be, width);
        rows += r;
        bad += b;
    }
    (rows, bad)
}

fn synthetic_readout_at(be: &AnyBackend, vocab: usize) -> (usize, usize) {
    use tandem::backend::Backend;
    let values: Vec<f32> = noise(2 * vocab, 1).into_iter().map(|v| v * 8.0).collect();
    let (coarse, fine) = values.split_at(vocab);
    let mut data: Vec<f32> = coarse.iter().map(|v| (v * 16.0).round() / 16.0).collect();
    data.extend_from_slice(fine);
    data.extend(std::iter::repeat_n(0.5, vocab));
    let (mut rows, mut bad) = (0, 0);
    for k in READOUT_KS.into_iter().filter(|&k| k <= vocab) {
        let act = be.act_from_host(3, vocab, data.clone());
        let readout = match k {
            40 => Readout::Draw(k, draw_keys(3, vocab as u64)),
            _ => Readout::Top(k),
        };
        let top = be.read_logits(&act, vocab, &readout);
        bad += readout_mismatches(&data, &top, vocab, &readout);
        rows += 3;
    }
    (rows, bad)
}

/// `n` values in [-1, 1) from `seed` (xorshift).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    tandem::rng::XorShift::new(seed)
        .take(n)
        .map(|x| (x >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0)
        .collect()
}

/// Ops no model of the check may reach on the device, on random data,
/// against the CPU: RoPE alone (both layouts, full and partial rotation)
/// and the KV-cache store read back through decode attention (head widths
/// 64 and 128, grouped queries, two sequences of scattered slots, several
/// key splits, with and without a window). The largest relative L2 error.
fn op_errors(cpu: &AnyBackend, dev: &AnyBackend) -> f64 {
    use tandem::backend::{AttnParams, AttnSeq, Backend, Rope, RopeStyle};
    let mut worst = 0f64;
    let (hd, heads) = (64, 4);
    let positions = [0u32, 7, 300];
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        for dims in [hd, hd / 2] {
            let rope = Rope {
                style,
                base: 10000.0,
                freq_scale: 0.5,
                dims,
            };
            let data = noise(3 * hd * heads, dims as u64);
            let (mut c, mut d) = (
                cpu.act_from_host(3, hd * heads, data.clone()),
                dev.act_from_host(3, hd * heads, data),
            );
            cpu.rope(&mut c, hd, &positions, &rope);
            dev.rope(&mut d, hd, &positions, &rope);
            worst = worst.max(rel_err(&cpu.to_host(&c), &dev.to_host(&d)));
        }
    }
    let (n_heads, n_kv) = (8, 2);
    // Sequence A: 300 positions in every other slot from 1000 down; B: 40
    // positions in slots 0..40. Query rows: A at 299, B at 38 and 39.
    let slots_a: Vec<u32> = (0..300).map(|i| 1000 - 2 * i).collect();
    let slots_b: Vec<u32> = (0..40).collect();
    let all: Vec<u32> = slots_a.iter().chain(&slots_b).copied().collect();
    for hd in [64, 128] {
        let kv_dim = n_kv * hd;
        let (mut kc, mut kd) = (cpu.alloc_kv(1, 1024, kv_dim), dev.alloc_kv(1, 1024, kv_dim));
        let (k, v) = (noise(all.len() * kv_dim, 1), noise(all.len() * kv_dim, 2));
        for (be, kv) in [(cpu, &mut kc), (dev, &mut kd)] {
            let ka = be.act_from_host(all.len(), kv_dim, k.clone());
            let va = be.act_from_host(all.len(), kv_dim, v.clone());
            be.kv_store(kv, 0, &ka, &va, &all);
        }
        let q = noise(3 * n_heads * hd, 3);
        let (pos_a, pos_b) = ([299u32], [38u32, 39]);
        let seqs = [
            AttnSeq {
                rows: 0..1,
                slots: &slots_a,
                positions: &pos_a,
            },
            AttnSeq {
                rows: 1..3,
                slots: &slots_b,
                positions: &pos_b,
            },
        ];
        for window in [None, Some(100)] {
            let p = AttnParams {
                n_heads,
                n_kv_heads: n_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window,
            };
            let (qc, qd) = (
                cpu.act_from_host(3, n_heads * hd, q.clone()),
                dev.act_from_host(3, n_heads * hd, q.clone()),
            );
            let (mut oc, mut od) = (cpu.act(0, 0), dev.act(0, 0));
            cpu.attention(&qc, &kc, 0, &seqs, &p, &mut oc);
            dev.attention(&qd, &kd, 0, &seqs, &p, &mut od);
            worst = worst.max(rel_err(&cpu.to_host(&oc), &dev.to_host(&od)));
        }
    }
    worst
}

/// The largest relative L2 error op_errors may show: the device keeps K
/// and V in f16 (a relative rounding of 2^-11 per value).
const OPS_TOL: f64 = 2e-3;

/// Keys for `n` draws at temperatures from 0.5 to 2.
fn draw_keys(n: usize, seed: u64) -> Vec<DrawKey> {
    (0..n as u64)
        .map(|i| DrawKey {
            key: (seed ^ i).wrapping_mul(0x2545_f491_4f6c_dd1d),
            inv_temp: [2.0, 1.0, 0.5][i as usize % 3],
        })
        .collect()
}

/// Rows of `top` that differ from the host's summary of `full` under
/// `readout` (and, for a draw, from the host's Gumbel-max draw).
fn readout_mismatches(full: &[f32], top: &Logits, vocab: usize, readout: &Readout) -> usize {
    let mut bad = 0;
    for (i, row) in full.chunks(vocab).enumerate() {
        let Row::Top(t) = top.row(i) else {
            // A backend may answer in full; then it must be the same row.
            bad += matches!(top.row(i), Row::Full(r) if r != row) as usize;
            continue;
        };
        let want = tandem::sampler::top_by_logit(row, t.ids.len());
        let lse = tandem::sampler::log_sum_exp(row);
        let drawn = match readout {
            Readout::Draw(_, keys) => {
                let id = gumbel_argmax(row, keys[i]);
                Some((id, row[id as usize]))
            }
            _ => None,
        };
        let same = want.iter().copied().eq(t.candidates())
            && ((t.lse - lse) / lse.abs().max(1.0)).abs() <= 1e-5
            && t.drawn == drawn;
        if !same {
            eprintln!(
                "readout row {i}: device {:?}… lse {} drawn {:?} / host {:?}… lse {lse} drawn {drawn:?}",
                &t.ids[..t.ids.len().min(4)],
                t.lse,
                t.drawn,
                &want[..want.len().min(4)]
            );
        }
        bad += !same as usize;
    }
    bad
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
    let (mut readout_rows, mut readout_bad) = synthetic_readout(&dev.backend, vocab);
    // A third session reads the same rows as device-side summaries.
    let mut st = Session::new(&dev, ctx);
    let prompt_readout = Readout::Top(READOUT_KS[1]);
    let (top, _) = st.feed_as(&prompt, 0, prompt_readout.clone())?;
    readout_bad += readout_mismatches(&ld, &top, vocab, &prompt_readout);
    readout_rows += top.rows();
    let mut decode_err = 0f64;
    let mut next = argmax(&lc[lc.len() - vocab..]);
    for i in 0..a.n {
        let c = sc.extend(&[next], 0)?;
        let d = sd.extend(&[next], 0)?;
        // Every k, and a draw with each, in turn (recorded steps included).
        let k = READOUT_KS[i % READOUT_KS.len()];
        let readout = match (i / READOUT_KS.len()) % 2 {
            0 => Readout::Top(k),
            _ => Readout::Draw(k, draw_keys(1, i as u64)),
        };
        let t = st.extend_as(&[next], 0, readout.clone())?;
        readout_bad += readout_mismatches(&d, &t, vocab, &readout);
        readout_rows += t.rows();
        decode_err = decode_err.max(rel_err(&c, &d));
        max_kl = max_kl.max(kl(&c, &d));
        agree += (argmax(&c) == argmax(&d)) as usize;
        rows += 1;
        next = argmax(&c);
    }
    let ops_err = op_errors(&cpu.backend, &dev.backend);
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
        readout_rows,
        readout_mismatches: readout_bad,
        ops_max_rel_err: ops_err,
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
        println!(
            "device-side top-k readout (k = {READOUT_KS:?}, with and without a draw): {}/{} rows equal to the host's",
            r.readout_rows - r.readout_mismatches,
            r.readout_rows
        );
        println!(
            "ops alone (rope, kv_store + attention): max relative L2 error {:.2e}",
            r.ops_max_rel_err
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
    if r.readout_mismatches > 0 {
        fails.push(format!(
            "{} of {} top-k readout rows differ from the host's",
            r.readout_mismatches, r.readout_rows
        ));
    }
    if r.ops_max_rel_err > OPS_TOL || r.ops_max_rel_err.is_nan() {
        fails.push(format!(
            "ops alone: error {:.2e} > {OPS_TOL:.0e}",
            r.ops_max_rel_err
        ));
    }
    if !fails.is_empty() {
        bail!("check failed: {}", fails.join("; "));
    }
    println!("ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem::backend::cpu::CpuBackend;

    #[test]
    fn op_check_runs_and_a_backend_agrees_with_itself() {
        let cpu = AnyBackend::Cpu(CpuBackend);
        assert_eq!(op_errors(&cpu, &cpu), 0.0);
    }
}
