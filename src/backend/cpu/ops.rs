//! Element-wise and per-row ops: RMSNorm, RoPE, gated activations.
//!
//! Rounding follows ggml's CPU backend where it changes results measurably
//! (sum of squares in f64, RoPE angles by repeated f32 multiplication, GELU
//! through f16): the models here amplify tiny differences through 8-bit
//! activation quantization, and llama.cpp's outputs are our correctness bar.

use super::pool;
use crate::backend::{Activation, Rope, RopeStyle};

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    pool::global().chunks_mut(out, n, &|r, o| {
        let x = &x[r * n..(r + 1) * n];
        let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
            *o = x * inv * w;
        }
    });
}

/// sin and cos of each pair's angle at `pos`; the angle is built by repeated
/// multiplication as ggml does (`theta *= base^(-2/dims)`).
fn angles(rope: &Rope, pos: u32) -> (Vec<f32>, Vec<f32>) {
    let step = rope.angle_step();
    let mut theta = pos as f32;
    (0..rope.dims / 2)
        .map(|_| {
            let sc = (rope.freq_scale * theta).sin_cos();
            theta *= step;
            sc
        })
        .unzip()
}

pub fn rope(x: &mut [f32], cols: usize, head_dim: usize, positions: &[u32], rope: &Rope) {
    let half = rope.dims / 2;
    pool::global().chunks_mut(x, cols, &|r, row| {
        let (sin, cos) = angles(rope, positions[r]);
        for head in row.chunks_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match rope.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Halves => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    });
}

pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// GELU as ggml evaluates it: through a table indexed by the f16 input,
/// holding f16 outputs; identity/zero beyond ±10. The table (128 KiB, built
/// on first use) replaces a `tanh` per element, which was 9% of Gemma's
/// prompt processing.
pub fn gelu_f16(x: f32) -> f32 {
    use half::f16;
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let table = TABLE.get_or_init(|| {
            (0..=u16::MAX)
                .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
                .collect()
        });
        table[f16::from_f32(x).to_bits() as usize].to_f32()
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gated_act(gate: &mut [f32], up: &[f32], act: Activation) {
    // A share per thread: a token's 8,960 activations of a 1.5B model cost
    // ~45 µs a layer in one thread (kernel notes, twenty-first session).
    let threads = pool::global().threads();
    let chunk = gate
        .len()
        .div_ceil(threads)
        .next_multiple_of(64)
        .clamp(1024, 16384);
    pool::global().chunks_mut(gate, chunk, &|i, g| {
        let u = &up[i * chunk..];
        for (g, u) in g.iter_mut().zip(u) {
            *g = match act {
                Activation::Silu => silu(*g),
                Activation::GeluTanh => gelu_f16(*g),
            } * u;
        }
    });
}
