//! Shared helpers for end-to-end tests on real models.
#![allow(dead_code)]

use std::path::PathBuf;

pub const MODELS: [(&str, &str); 4] = [
    ("smollm2-135m", "smollm2-135m-instruct-q4_1"),
    ("gemma3-270m", "gemma3-270m-q4_k_m"),
    ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct"),
    ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct"),
];

/// `../shared/refs` next to the repository.
pub fn refs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/refs")
}

pub fn load_ref(kind: &str, file_stem: &str) -> serde_json::Value {
    let p = refs_dir().join(format!("{kind}_{file_stem}.json"));
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

/// The catalog model's path, fetched into the cache if absent.
pub fn model_path(name: &str) -> PathBuf {
    tandem::catalog::resolve(name).unwrap_or_else(|e| panic!("{e}"))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Two-sample chi-square test of homogeneity over the categories both
/// samples share enough of (the rest pooled).
pub fn homogeneity_p(a: &[u32], b: &[u32]) -> f64 {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    use std::collections::HashMap;
    let mut counts: HashMap<u32, (f64, f64)> = HashMap::new();
    for &t in a {
        counts.entry(t).or_default().0 += 1.0;
    }
    for &t in b {
        counts.entry(t).or_default().1 += 1.0;
    }
    let (mut cells, mut other) = (Vec::new(), (0.0, 0.0));
    for (_, c) in counts {
        if c.0 + c.1 >= 10.0 {
            cells.push(c);
        } else {
            other.0 += c.0;
            other.1 += c.1;
        }
    }
    if other.0 + other.1 > 0.0 {
        cells.push(other);
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let stat: f64 = cells
        .iter()
        .map(|&(x, y)| {
            let tot = x + y;
            let (ea, eb) = (tot * na / (na + nb), tot * nb / (na + nb));
            (x - ea).powi(2) / ea + (y - eb).powi(2) / eb
        })
        .sum();
    1.0 - ChiSquared::new((cells.len() - 1) as f64).unwrap().cdf(stat)
}
