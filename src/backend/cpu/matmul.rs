//! Matrix multiplication against weights in their file format. Activations
//! are quantized once per row; each task decodes a weight row once and
//! multiplies it with every token of the batch, so prompt processing reads each
//! weight once per batch rather than once per token.

use rayon::prelude::*;

use super::{CpuAct, CpuWeight};
use crate::quant::act::{dot_decoded, dot_f32, ActFormat, QuantizedActs};
use crate::quant::{dequantize_row, fused_matmul, has_fused_kernel, DecodedRow};

/// Raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint set of (token, row) cells.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Write `v` at `i`.
    ///
    /// # Safety
    /// `i` is in bounds and no other task writes it.
    unsafe fn write(&self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }
}

/// out[t, r] = Σ_k x[t, k] · w[r, k], out laid out [x.rows, w.rows].
pub fn matmul(x: &CpuAct, w: &CpuWeight, out: &mut [f32]) {
    let (n_tok, n_out) = (x.rows, w.rows);
    assert_eq!(out.len(), n_tok * n_out);
    let threads = rayon::current_num_threads().max(1);
    // Enough tasks to balance the pool, each big enough to amortise the
    // hand-off.
    let chunk = n_out.div_ceil(threads * 4).max(16);
    let ptr = OutPtr(out.as_mut_ptr());

    if w.ty.is_quantized() {
        let format = ActFormat::for_weight(w.ty);
        let xq: Vec<QuantizedActs> = x
            .data
            .par_chunks(x.cols)
            .map(|row| {
                let mut q = QuantizedActs::default();
                q.quantize(row, format);
                q
            })
            .collect();
        if has_fused_kernel(w.ty) {
            let xs: Vec<&QuantizedActs> = xq.iter().collect();
            let rb = w.row_bytes();
            (0..n_out.div_ceil(chunk)).into_par_iter().for_each_init(
                || vec![0f32; n_tok * chunk],
                |tile, c| {
                    let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(n_out));
                    let tile = &mut tile[..n_tok * (r1 - r0)];
                    fused_matmul(w.ty, &w.bytes()[r0 * rb..r1 * rb], r1 - r0, &xs, tile);
                    for (t, vals) in tile.chunks_exact(r1 - r0).enumerate() {
                        for (k, v) in vals.iter().enumerate() {
                            // SAFETY: as below.
                            unsafe { ptr.write(t * n_out + r0 + k, *v) };
                        }
                    }
                },
            );
            return;
        }
        (0..n_out.div_ceil(chunk))
            .into_par_iter()
            .for_each_init(DecodedRow::default, |dec, c| {
                for r in c * chunk..((c + 1) * chunk).min(n_out) {
                    dec.decode(w.ty, w.row(r), w.cols);
                    for (t, xt) in xq.iter().enumerate() {
                        // SAFETY: (t, r) is written by this task only; in bounds by the assert above.
                        unsafe { ptr.write(t * n_out + r, dot_decoded(dec, xt)) };
                    }
                }
            });
    } else {
        (0..n_out.div_ceil(chunk)).into_par_iter().for_each_init(
            || vec![0f32; w.cols],
            |wrow, c| {
                for r in c * chunk..((c + 1) * chunk).min(n_out) {
                    dequantize_row(w.ty, w.row(r), wrow);
                    for t in 0..n_tok {
                        // SAFETY: as above.
                        unsafe { ptr.write(t * n_out + r, dot_f32(wrow, x.row(t))) };
                    }
                }
            },
        );
    }
}
