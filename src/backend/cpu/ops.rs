//! Element-wise and per-row ops: RMSNorm, RoPE, gated activations.

use rayon::prelude::*;

use crate::backend::{Activation, Rope, RopeStyle};

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    out.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(o, x)| {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
            *o = x * inv * w;
        }
    });
}

/// The rotation angles' inverse frequencies for one head.
fn inv_freqs(rope: &Rope) -> Vec<f32> {
    (0..rope.dims / 2)
        .map(|i| rope.freq_scale * rope.base.powf(-2.0 * i as f32 / rope.dims as f32))
        .collect()
}

pub fn rope(x: &mut [f32], cols: usize, head_dim: usize, positions: &[u32], rope: &Rope) {
    let freqs = inv_freqs(rope);
    let half = rope.dims / 2;
    x.par_chunks_mut(cols).zip(positions.par_iter()).for_each(|(row, &pos)| {
        let (sin, cos): (Vec<f32>, Vec<f32>) = freqs.iter().map(|f| (pos as f32 * f).sin_cos()).unzip();
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

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gated_act(gate: &mut [f32], up: &[f32], act: Activation) {
    gate.par_chunks_mut(4096).zip(up.par_chunks(4096)).for_each(|(g, u)| {
        for (g, u) in g.iter_mut().zip(u) {
            *g = match act {
                Activation::Silu => silu(*g),
                Activation::GeluTanh => gelu_tanh(*g),
            } * u;
        }
    });
}
