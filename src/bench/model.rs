//! `tandem bench -m M`: prompt processing and generation speed of one model,
//! measured the way llama-bench measures them. Each repetition reads `p`
//! random tokens into a fresh cache (pp) and generates `n` tokens greedily
//! after a one-token prompt (tg: each step's best candidate is the next
//! step's token, as in `generate --temp 0`), after one warm-up of each.
//! The device is idle when each clock starts. Reported:
//! mean ± sd and median tokens/s, weight bytes read per generated token,
//! the bandwidth that implies and its share of the machine's measured read
//! bandwidth, and peak resident memory.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Readout};
use crate::engine::Session;
use crate::model::LoadedModel;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Samples {
    /// Tokens per second of each repetition.
    pub tok_s: Vec<f64>,
    pub mean: f64,
    pub sd: f64,
    pub median: f64,
}

impl Samples {
    pub fn new(tok_s: Vec<f64>) -> Self {
        let n = tok_s.len() as f64;
        let mean = tok_s.iter().sum::<f64>() / n;
        let sd = if tok_s.len() > 1 {
            (tok_s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let mut s = tok_s.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        let median = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Self {
            tok_s,
            mean,
            sd,
            median,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub model: String,
    pub backend: String,
    pub threads: usize,
    pub pp_tokens: usize,
    pub tg_tokens: usize,
    /// Tokens in the cache before each tg run (llama-bench's `-d`).
    #[serde(default)]
    pub depth: usize,
    pub repetitions: usize,
    pub pp: Samples,
    pub tg: Samples,
    /// Weight bytes read to generate one token.
    pub bytes_per_token: u64,
    /// bytes_per_token × mean tg tok/s.
    pub tg_gb_s: f64,
    /// tg_gb_s over the read bandwidth: the mean of each repetition's
    /// share where it was measured next to each ([`Bandwidth::Paired`]),
    /// else over the one figure known (a GPU's); `None` in results written
    /// before the share was always taken.
    pub roofline_share: Option<f64>,
    /// The read bandwidth in GB/s measured just before each tg repetition
    /// ([`Bandwidth::Paired`]; empty otherwise).
    #[serde(default)]
    pub read_gb_s: Vec<f64>,
    pub peak_rss_bytes: Option<u64>,
    pub model_file_bytes: u64,
}

/// Weight bytes one generated token reads: every matrix of every layer,
/// the output matrix, and one embedding row.
pub fn bytes_per_token(m: &crate::gguf::GgufFile) -> u64 {
    bytes_per_token_with_head(m, usize::MAX)
}

/// As [`bytes_per_token`], the output matrix read for its first
/// `head_rows` rows only (a draft's cut head, `LoadedModel::limit_head`).
pub fn bytes_per_token_with_head(m: &crate::gguf::GgufFile, head_rows: usize) -> u64 {
    let tied = m.tensor_info("output.weight").is_none();
    let mut total = 0;
    for t in &m.header.tensors {
        let row = t.n_bytes / t.n_rows().max(1) as u64;
        let head = |t: &crate::gguf::TensorInfo| row * head_rows.min(t.n_rows()) as u64;
        total += match t.name.as_str() {
            // The embedding row read is (nearly always) among the head's.
            "token_embd.weight" if tied => head(t),
            "token_embd.weight" => row,
            "output.weight" => head(t),
            _ => t.n_bytes,
        };
    }
    total
}

/// Peak resident set size of this process (Linux), from /proc.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What a run's bandwidth share is taken against.
pub enum Bandwidth {
    /// One figure (a GPU's copy bandwidth).
    Known(f64),
    /// Measured next to each tg repetition, with this many bytes read.
    Paired(usize),
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    crate::rng::XorShift::new(seed)
        .take(n)
        .map(|x| (x % vocab as u64) as u32)
        .collect()
}

/// What a run measures: `p` prompt tokens, `n` generated after `depth`
/// tokens of context, `reps` times each.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub p: usize,
    pub n: usize,
    pub depth: usize,
    pub reps: usize,
}

pub fn run<B: Backend + 'static>(
    model: &LoadedModel<B>,
    name: &str,
    plan: Plan,
    bandwidth: Bandwidth,
    mut progress: impl FnMut(),
) -> crate::engine::Result<BenchResult> {
    let Plan { p, n, depth, reps } = plan;
    let vocab = model.tokenizer.vocab_size().min(model.hparams().vocab_size);
    let ctx = (p.max(depth + n + 1) + 16).min(model.hparams().ctx_len);
    if p == 0 || n == 0 || p > ctx || depth + n + 1 > ctx {
        return Err(crate::engine::EngineError::Invalid(format!(
            "-p {p} and -d {depth} + -n {n} must be at least 1 and fit the model's context ({ctx})"
        )));
    }
    let mut session = Session::new(model, ctx);
    let pp_run = |seed: u64, session: &mut Session<'_, B>| -> crate::engine::Result<f64> {
        let toks = random_tokens(p, vocab, seed);
        session.truncate(0);
        session.model.backend.wait_idle();
        let t = Instant::now();
        session.extend(&toks, p - 1)?;
        Ok(p as f64 / t.elapsed().as_secs_f64())
    };
    // An untimed prompt of depth + 1 tokens, then n timed single-token steps, each read
    // out as greedy decoding reads it (the best candidate; a device computes
    // it where the logits are) and fed the best candidate of the step before.
    let tg_run = |seed: u64, session: &mut Session<'_, B>| -> crate::engine::Result<f64> {
        let prompt = random_tokens(depth + 1, vocab, seed);
        session.truncate(0);
        let mut tok = session
            .extend_as(&prompt, depth, Readout::Top(1))?
            .row(0)
            .best();
        session.model.backend.wait_idle();
        let t = Instant::now();
        for _ in 0..n {
            tok = session.extend_as(&[tok], 0, Readout::Top(1))?.row(0).best();
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    // Warm-up: page the weights in, size the buffers. The run's peak
    // memory is reached here, before a bandwidth probe adds its buffer.
    pp_run(0, &mut session)?;
    tg_run(0, &mut session)?;
    let peak_rss_bytes = peak_rss();
    let probe = match bandwidth {
        Bandwidth::Paired(bytes) => Some(crate::bench::roofline::Probe::new(bytes)),
        _ => None,
    };
    let (mut pp, mut tg, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..reps {
        pp.push(pp_run(r as u64 + 1, &mut session)?);
        if let Some(probe) = &probe {
            read.push(probe.read_gb_s(3));
        }
        tg.push(tg_run(r as u64 + 1, &mut session)?);
        progress();
    }
    let bytes = bytes_per_token(&model.file);
    let gb_s = |tok_s: f64| bytes as f64 * tok_s / 1e9;
    let roofline_share = match bandwidth {
        Bandwidth::Known(bw) => Some(gb_s(Samples::new(tg.clone()).mean) / bw),
        Bandwidth::Paired(_) => {
            let shares = tg.iter().zip(&read).map(|(&t, &bw)| gb_s(t) / bw);
            Some(shares.sum::<f64>() / reps as f64)
        }
    };
    let tg = Samples::new(tg);
    let tg_gb_s = gb_s(tg.mean);
    Ok(BenchResult {
        model: name.to_string(),
        backend: model.backend.name(),
        threads: crate::backend::cpu::pool::global().threads(),
        pp_tokens: p,
        tg_tokens: n,
        depth,
        repetitions: reps,
        pp: Samples::new(pp),
        tg,
        bytes_per_token: bytes,
        tg_gb_s,
        roofline_share,
        read_gb_s: read,
        peak_rss_bytes,
        model_file_bytes: model.file.file_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn mean_sd_median() {
        let s = Samples::new(vec![2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.mean, 5.0);
        assert!((s.sd - 2.138).abs() < 1e-3);
        assert_eq!(s.median, 4.5);
    }
}
