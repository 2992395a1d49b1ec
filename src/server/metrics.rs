//! Prometheus text exposition of the server's and the engine's counters,
//! with fixed-bucket histograms for time-to-first-token and inter-token
//! latency.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::batched::{EngineStats, SpecCounters};

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

#[derive(Default)]
pub struct ServerMetrics {
    pub requests: Mutex<std::collections::BTreeMap<u16, u64>>,
    pub ttft: Histogram,
    pub itl: Histogram,
}

impl ServerMetrics {
    pub fn count_status(&self, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_insert(0) += 1;
    }

    pub fn render(&self, e: &EngineStats) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP tandem_requests_total Requests by HTTP status.\n# TYPE tandem_requests_total counter");
        for (status, n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "tandem_requests_total{{status=\"{status}\"}} {n}");
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            (
                "tandem_prompt_tokens_total",
                "Prompt tokens received.",
                load(&e.prompt_tokens),
            ),
            (
                "tandem_generated_tokens_total",
                "Tokens generated.",
                load(&e.generated_tokens),
            ),
            (
                "tandem_preemptions_total",
                "Sequences preempted for KV space.",
                load(&e.preemptions),
            ),
            (
                "tandem_engine_steps_total",
                "Forward passes run.",
                load(&e.steps),
            ),
            (
                "tandem_prompt_tokens_cached_total",
                "Prompt tokens served from the prefix cache.",
                load(&e.prompt_tokens_cached),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let used =
            e.kv_blocks_total.load(Ordering::Relaxed) - e.kv_blocks_free.load(Ordering::Relaxed);
        let gauges = [
            (
                "tandem_running_sequences",
                "Sequences running.",
                e.running.load(Ordering::Relaxed),
            ),
            (
                "tandem_waiting_sequences",
                "Sequences waiting.",
                e.waiting.load(Ordering::Relaxed),
            ),
            ("tandem_kv_blocks_used", "KV cache blocks in use.", used),
            (
                "tandem_kv_blocks_free",
                "KV cache blocks free.",
                e.kv_blocks_free.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        render_spec(&mut out, &e.spec);
        let (p, c) = (load(&e.prompt_tokens), load(&e.prompt_tokens_cached));
        let rate = if p > 0 { c as f64 / p as f64 } else { 0.0 };
        let _ = writeln!(out, "# HELP tandem_prefix_cache_hit_rate Share of prompt tokens served from the prefix cache.\n# TYPE tandem_prefix_cache_hit_rate gauge\ntandem_prefix_cache_hit_rate {rate}");
        self.ttft.render(
            &mut out,
            "tandem_time_to_first_token_seconds",
            "Time from request to first token.",
        );
        self.itl.render(
            &mut out,
            "tandem_inter_token_latency_seconds",
            "Time between consecutive tokens.",
        );
        out
    }
}

/// Speculative decoding: rounds, guesses and acceptance, the k used, the
/// draft/target cost ratio and output tokens per target pass.
fn render_spec(out: &mut String, c: &SpecCounters) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (rounds, plain) = (load(&c.rounds), load(&c.plain_steps));
    let (drafted, accepted) = (load(&c.drafted), load(&c.accepted));
    let counters = [
        (
            "tandem_spec_rounds_total",
            "Decode steps that scored guesses.",
            rounds,
        ),
        (
            "tandem_spec_plain_steps_total",
            "Decode steps of speculating sequences without guesses (k = 0).",
            plain,
        ),
        (
            "tandem_spec_draft_tokens_total",
            "Guessed tokens scored by the target.",
            drafted,
        ),
        (
            "tandem_spec_accepted_tokens_total",
            "Guessed tokens the target accepted.",
            accepted,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let name = "tandem_spec_k_total";
    let _ = writeln!(out, "# HELP {name} Decode steps by the number of guesses k the governor used.\n# TYPE {name} counter");
    for (k, n) in c
        .k_used
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .enumerate()
    {
        let _ = writeln!(out, "{name}{{k=\"{k}\"}} {n}");
    }
    let acceptance = accepted as f64 / drafted.max(1) as f64;
    let per_pass = (rounds + plain + accepted) as f64 / (rounds + plain).max(1) as f64;
    let gauges = [
        (
            "tandem_spec_acceptance_rate",
            "Accepted over guessed tokens since start.",
            acceptance,
        ),
        (
            "tandem_spec_tokens_per_pass",
            "Output tokens per target pass of speculating sequences.",
            per_pass,
        ),
        (
            "tandem_spec_draft_target_cost_ratio",
            "Measured cost of a draft pass over a plain target step (latest; 0 = not measured).",
            c.cost_ratio(),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
}
