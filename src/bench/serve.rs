//! `tandem bench serve`: load an OpenAI-compatible server at several
//! concurrency levels and report what vLLM's serving benchmark reports:
//! requests/s, output tokens/s, and time to first token (TTFT), time per
//! output token (TPOT: after the first, per request) and inter-token latency
//! (ITL: every gap between streamed tokens), each as mean/median/p90/p99.
//! Requests stream (`/v1/completions`, `ignore_eos` so every request
//! produces exactly `gen_len` tokens).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::Summary;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `host:port` of the server.
    pub addr: String,
    pub api_key: Option<String>,
    pub concurrency: Vec<usize>,
    pub requests: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub shared_prefix: usize,
    pub temperature: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub failed: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub output_tokens_per_second: f64,
    pub mean_prompt_tokens: f64,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
}

/// What one streamed request saw.
struct Trace {
    ttft: f64,
    gaps: Vec<f64>,
    total: f64,
    tokens: usize,
    prompt_tokens: usize,
}

/// Words cycled to build prompts of a known length (each is one token in
/// the BPE vocabularies here, give or take).
const WORDS: [&str; 16] = [
    "apple", "river", "stone", "cloud", "green", "music", "table", "light", "house", "paper",
    "water", "north", "bread", "glass", "chair", "story",
];

fn prompt(i: usize, cfg: &LoadConfig) -> String {
    let mut words: Vec<&str> = (0..cfg.shared_prefix)
        .map(|k| WORDS[k % WORDS.len()])
        .collect();
    // A distinct tail per request so only the declared prefix is shared.
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in cfg.shared_prefix..cfg.prompt_len.max(cfg.shared_prefix + 1) {
        x ^= x >> 13;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        words.push(WORDS[(x >> 60) as usize]);
    }
    words.join(" ")
}

fn one_request(cfg: &LoadConfig, i: usize) -> Result<Trace, String> {
    let body = json!({
        "prompt": prompt(i, cfg),
        "max_tokens": cfg.gen_len,
        "temperature": cfg.temperature,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let mut c = TcpStream::connect(&cfg.addr).map_err(|e| format!("connect {}: {e}", cfg.addr))?;
    c.set_read_timeout(Some(Duration::from_secs(600))).ok();
    let auth = cfg
        .api_key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let t0 = Instant::now();
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cfg.addr,
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| e.to_string())?;
    if !status.contains(" 200 ") {
        return Err(format!("server answered {}", status.trim()));
    }
    let (mut first, mut last) = (None::<f64>, 0.0);
    let mut gaps = Vec::new();
    let (mut tokens, mut prompt_tokens) = (0, 0);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let Some(data) = line.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
            prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0) as usize;
            continue;
        }
        if v["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
            || v["choices"][0]["finish_reason"].is_null()
        {
            let now = t0.elapsed().as_secs_f64();
            match first {
                None => first = Some(now),
                Some(_) => gaps.push(now - last),
            }
            last = now;
        }
    }
    let ttft = first.ok_or("no token arrived")?;
    Ok(Trace {
        ttft,
        gaps,
        total: t0.elapsed().as_secs_f64(),
        tokens,
        prompt_tokens,
    })
}

pub fn run_level(
    cfg: &LoadConfig,
    concurrency: usize,
    progress: &(dyn Fn() + Sync),
) -> LevelResult {
    let next = AtomicUsize::new(0);
    let traces = Mutex::new(Vec::new());
    let failed = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= cfg.requests {
                    break;
                }
                match one_request(cfg, i) {
                    Ok(t) => traces.lock().unwrap_or_else(|p| p.into_inner()).push(t),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        tracing::warn!("request {i}: {e}");
                    }
                }
                progress();
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let traces = traces.into_inner().unwrap_or_else(|p| p.into_inner());
    let ms = |v: Vec<f64>| Summary::of(&v.iter().map(|x| x * 1e3).collect::<Vec<_>>());
    let out_tokens: usize = traces.iter().map(|t| t.tokens).sum();
    LevelResult {
        concurrency,
        requests: traces.len(),
        failed: failed.load(Ordering::SeqCst),
        seconds: secs,
        requests_per_second: traces.len() as f64 / secs,
        output_tokens_per_second: out_tokens as f64 / secs,
        mean_prompt_tokens: traces.iter().map(|t| t.prompt_tokens as f64).sum::<f64>()
            / traces.len().max(1) as f64,
        ttft_ms: ms(traces.iter().map(|t| t.ttft).collect()),
        tpot_ms: ms(traces
            .iter()
            .filter(|t| t.tokens > 1)
            .map(|t| (t.total - t.ttft) / (t.tokens - 1) as f64)
            .collect()),
        itl_ms: ms(traces.iter().flat_map(|t| t.gaps.iter().copied()).collect()),
    }
}

pub fn table(results: &[LevelResult]) -> String {
    let mut s = String::from(
        "| conc | req/s | out tok/s | TTFT ms mean / p50 / p90 / p99 | TPOT ms mean / p50 / p90 / p99 | ITL ms mean / p50 / p90 / p99 | failed |\n|---|---|---|---|---|---|---|\n",
    );
    let f = |x: &Summary| {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            x.mean, x.median, x.p90, x.p99
        )
    };
    for r in results {
        s.push_str(&format!(
            "| {} | {:.2} | {:.1} | {} | {} | {} | {} |\n",
            r.concurrency,
            r.requests_per_second,
            r.output_tokens_per_second,
            f(&r.ttft_ms),
            f(&r.tpot_ms),
            f(&r.itl_ms),
            r.failed
        ));
    }
    s
}

/// Throughput and latency against concurrency, as one SVG.
pub fn plot(results: &[LevelResult]) -> String {
    use super::svg::{panel, Rect, Series};
    let pts = |f: &dyn Fn(&LevelResult) -> f64| {
        results
            .iter()
            .map(|r| (r.concurrency as f64, f(r)))
            .collect()
    };
    let mut out = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="360" font-family="sans-serif">"#,
    );
    out.push_str(r#"<rect width="900" height="360" fill="white"/>"#);
    panel(
        &mut out,
        Rect {
            x: 0.0,
            y: 0.0,
            w: 450.0,
            h: 360.0,
        },
        "Throughput",
        "tokens/s",
        &[Series {
            name: "output tok/s",
            points: pts(&|r| r.output_tokens_per_second),
        }],
    );
    panel(
        &mut out,
        Rect {
            x: 450.0,
            y: 0.0,
            w: 450.0,
            h: 360.0,
        },
        "Latency",
        "ms",
        &[
            Series {
                name: "TTFT p50",
                points: pts(&|r| r.ttft_ms.median),
            },
            Series {
                name: "TPOT p50",
                points: pts(&|r| r.tpot_ms.median),
            },
            Series {
                name: "ITL p99",
                points: pts(&|r| r.itl_ms.p99),
            },
        ],
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_share_exactly_the_declared_prefix() {
        let cfg = LoadConfig {
            addr: String::new(),
            api_key: None,
            concurrency: vec![1],
            requests: 2,
            prompt_len: 40,
            gen_len: 1,
            shared_prefix: 10,
            temperature: 0.0,
        };
        let (a, b) = (prompt(0, &cfg), prompt(1, &cfg));
        let (wa, wb): (Vec<_>, Vec<_>) = (a.split(' ').collect(), b.split(' ').collect());
        assert_eq!(wa.len(), 40);
        assert_eq!(wa[..10], wb[..10]);
        assert_ne!(wa[10..], wb[10..]);
    }

    #[test]
    fn plot_is_an_svg_with_both_panels() {
        let r = LevelResult {
            concurrency: 4,
            requests: 1,
            failed: 0,
            seconds: 1.0,
            requests_per_second: 1.0,
            output_tokens_per_second: 10.0,
            mean_prompt_tokens: 5.0,
            ttft_ms: Summary::of(&[5.0]),
            tpot_ms: Summary::of(&[2.0]),
            itl_ms: Summary::of(&[2.0]),
        };
        let svg = plot(&[r]);
        assert!(svg.starts_with("<svg") && svg.contains("Throughput") && svg.contains("Latency"));
    }
}
