//! Matrix multiplication against weights in their file format. Activations
//! are quantized once per row; each task takes a range of weight rows and
//! multiplies every row with every token of the batch, so prompt processing
//! reads each weight once per batch rather than once per token.

use std::cell::RefCell;

use super::pool::{self, SendPtr};
use super::{CpuAct, CpuWeight};
use crate::quant::act::{dot_decoded, dot_f32, ActFormat, QuantizedActs};
use crate::quant::{dequantize_row, fused_matmul, has_fused_kernel, DecodedRow};

thread_local! {
    /// Per-thread scratch: a task's [tokens × rows] results, a decoded row.
    static SCRATCH: RefCell<(Vec<f32>, DecodedRow)> = RefCell::default();
}

/// out[t, r] = Σ_k x[t, k] · w[r, k], out laid out [x.rows, w.rows].
pub fn matmul(x: &CpuAct, w: &CpuWeight, out: &mut [f32]) {
    let (n_tok, n_out) = (x.rows, w.rows);
    assert_eq!(out.len(), n_tok * n_out);
    let pool = pool::global();
    // Enough tasks to balance the pool, each big enough to amortise the
    // hand-off.
    let chunk = n_out.div_ceil(pool.threads() * 4).max(16);
    let tasks = n_out.div_ceil(chunk);
    let ptr = SendPtr(out.as_mut_ptr());
    // SAFETY (for every write below): task c writes only columns
    // c·chunk..(c+1)·chunk of each token's output row, in bounds by the
    // assert above.
    let write = |t: usize, r: usize, v: f32| unsafe { *ptr.get().add(t * n_out + r) = v };

    if !w.ty.is_quantized() {
        pool.run(tasks, &|c| {
            let mut wrow = vec![0f32; w.cols];
            for r in c * chunk..((c + 1) * chunk).min(n_out) {
                dequantize_row(w.ty, w.row(r), &mut wrow);
                for t in 0..n_tok {
                    write(t, r, dot_f32(&wrow, x.row(t)));
                }
            }
        });
        return;
    }

    let format = ActFormat::for_weight(w.ty);
    let mut xq = vec![QuantizedActs::default(); n_tok];
    pool.chunks_mut(&mut xq, 1, &|t, q| q[0].quantize(x.row(t), format));
    let xs: Vec<&QuantizedActs> = xq.iter().collect();
    let fused = has_fused_kernel(w.ty);
    let rb = w.row_bytes();
    pool.run(tasks, &|c| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(n_out));
        SCRATCH.with_borrow_mut(|(tile, dec)| {
            if fused {
                tile.resize(n_tok * (r1 - r0), 0.0);
                fused_matmul(w.ty, &w.bytes()[r0 * rb..r1 * rb], r1 - r0, &xs, tile);
                for (t, vals) in tile.chunks_exact(r1 - r0).enumerate() {
                    for (k, v) in vals.iter().enumerate() {
                        write(t, r0 + k, *v);
                    }
                }
            } else {
                for r in r0..r1 {
                    dec.decode(w.ty, w.row(r), w.cols);
                    for (t, xt) in xs.iter().enumerate() {
                        write(t, r, dot_decoded(dec, xt));
                    }
                }
            }
        });
    });
}
