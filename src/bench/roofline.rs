//! The machine's read bandwidth, measured once (`tandem bench --roofline`)
//! and remembered in `$TANDEM_HOME/roofline.json`: every thread sums its
//! share of a buffer much larger than the caches; the best of several passes
//! counts. Generation is memory-bound, so this is its roofline.

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roofline {
    pub read_gb_s: f64,
    pub threads: usize,
    pub buffer_bytes: usize,
}

fn path() -> std::path::PathBuf {
    crate::catalog::tandem_home().join("roofline.json")
}

#[inline(always)]
fn sum(c: &[u64]) -> u64 {
    // Eight independent accumulators so the loop is bound by loads, not adds.
    let mut acc = [0u64; 8];
    for ch in c.chunks_exact(8) {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(ch[i]);
        }
    }
    acc.iter().fold(0, |a, &x| a.wrapping_add(x))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(c: &[u64]) -> u64 {
    sum(c)
}

fn chunk_sum(c: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: feature checked at run time.
        return unsafe { sum_avx2(c) };
    }
    sum(c)
}

pub fn measure(buffer_bytes: usize, passes: usize) -> Roofline {
    let words = buffer_bytes / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0.0f64;
    for _ in 0..passes {
        let t = Instant::now();
        let sum: u64 = buf
            .par_chunks(1 << 16)
            .map(chunk_sum)
            .reduce(|| 0, u64::wrapping_add);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max(buffer_bytes as f64 / secs / 1e9);
    }
    Roofline {
        read_gb_s: best,
        threads: rayon::current_num_threads(),
        buffer_bytes,
    }
}

pub fn save(r: &Roofline) -> std::io::Result<std::path::PathBuf> {
    let p = path();
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&p, serde_json::to_string_pretty(r)?)?;
    Ok(p)
}

/// The remembered read bandwidth in GB/s, if measured.
pub fn load() -> Option<f64> {
    let text = std::fs::read_to_string(path()).ok()?;
    serde_json::from_str::<Roofline>(&text)
        .ok()
        .map(|r| r.read_gb_s)
}
