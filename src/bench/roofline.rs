//! The machine's read bandwidth (`tandem bench --roofline`, and next to each
//! repetition of `tandem bench`): every thread sums its share of a buffer
//! much larger than the caches; the best of several passes counts.
//! Generation is memory-bound, so this is its roofline.

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roofline {
    pub read_gb_s: f64,
    pub threads: usize,
    pub buffer_bytes: usize,
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
    Roofline {
        read_gb_s: Probe::new(buffer_bytes).read_gb_s(passes),
        threads: rayon::current_num_threads(),
        buffer_bytes,
    }
}

/// A buffer kept for measuring the read bandwidth again and again: next to
/// each repetition of a benchmark, so that its share of the bandwidth is
/// taken against what the machine gave at that moment (a shared host's
/// neighbours move it by a fifth within minutes).
pub struct Probe {
    buf: Vec<u64>,
}

impl Probe {
    pub fn new(buffer_bytes: usize) -> Probe {
        Probe {
            buf: (0..(buffer_bytes / 8) as u64).collect(),
        }
    }

    /// GB/s of the fastest of `passes` reads of the whole buffer, all
    /// threads of the global pool reading.
    pub fn read_gb_s(&self, passes: usize) -> f64 {
        let bytes = (self.buf.len() * 8) as f64;
        let mut best = 0.0f64;
        for _ in 0..passes {
            let t = Instant::now();
            let sum: u64 = self
                .buf
                .par_chunks(1 << 16)
                .map(chunk_sum)
                .reduce(|| 0, u64::wrapping_add);
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(sum);
            best = best.max(bytes / secs / 1e9);
        }
        best
    }
}
