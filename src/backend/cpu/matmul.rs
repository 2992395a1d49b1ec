//! Matrix multiplication against weights in their file format. Activations
//! are quantized once per row (once for all the projections of one input);
//! each task takes a range of one weight's rows and multiplies every row with
//! every token of the batch, so prompt processing reads each weight once per
//! batch rather than once per token, and Q, K and V (or gate and up) are one
//! pool job.

use std::cell::RefCell;

use super::pool::{self, SendPtr};
use super::{CpuAct, CpuWeight};
use crate::quant::act::{dot_decoded, dot_f32, ActFormat, QuantizedActs};
use crate::quant::{dequantize_row, fused_matmul, has_fused_kernel, DecodedRow};

thread_local! {
    /// Per-thread scratch: a task's [tokens × rows] results, a decoded row,
    /// a dequantized row.
    static SCRATCH: RefCell<(Vec<f32>, DecodedRow, Vec<f32>)> = RefCell::default();
}

/// outs[i][t, r] = Σ_k x[t, k] · ws[i][r, k], each out laid out
/// [x.rows, ws[i].rows]: several weights applied to the same input.
pub fn matmul_many(x: &CpuAct, ws: &[&CpuWeight], outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len());
    let n_tok = x.rows;
    let pool = pool::global();
    // Activations quantized once per format the weights need.
    let formats: Vec<Option<ActFormat>> = ws
        .iter()
        .map(|w| w.ty.is_quantized().then(|| ActFormat::for_weight(w.ty)))
        .collect();
    let quantized = |format: ActFormat| -> Vec<QuantizedActs> {
        let mut xq = vec![QuantizedActs::default(); n_tok];
        pool.chunks_mut(&mut xq, 1, &|t, q| q[0].quantize(x.row(t), format));
        xq
    };
    let q8_0 = formats
        .contains(&Some(ActFormat::Q8_0))
        .then(|| quantized(ActFormat::Q8_0));
    let q8_k = formats
        .contains(&Some(ActFormat::Q8_K))
        .then(|| quantized(ActFormat::Q8_K));
    let xs_0: Option<Vec<&QuantizedActs>> = q8_0.as_ref().map(|v| v.iter().collect());
    let xs_k: Option<Vec<&QuantizedActs>> = q8_k.as_ref().map(|v| v.iter().collect());

    // Tasks: (weight, first row, end row). Enough per weight to balance the
    // pool, each big enough to amortise the hand-off.
    let mut tasks = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(outs[i].len(), n_tok * w.rows);
        let chunk = w.rows.div_ceil(pool.threads() * 4).max(16);
        tasks.extend(
            (0..w.rows.div_ceil(chunk)).map(|c| (i, c * chunk, ((c + 1) * chunk).min(w.rows))),
        );
    }
    let ptrs: Vec<SendPtr<f32>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();

    pool.run(tasks.len(), &|ti| {
        let (i, r0, r1) = tasks[ti];
        let w = ws[i];
        let n_out = w.rows;
        let ptr = ptrs[i];
        // SAFETY: tasks write disjoint row ranges of each token's output row,
        // in bounds by the assert above.
        let write = |t: usize, r: usize, v: f32| unsafe { *ptr.get().add(t * n_out + r) = v };
        SCRATCH.with_borrow_mut(|(tile, dec, wrow)| {
            let xs = match formats[i] {
                None => {
                    wrow.resize(w.cols, 0.0);
                    for r in r0..r1 {
                        dequantize_row(w.ty, w.row(r), wrow);
                        for t in 0..n_tok {
                            write(t, r, dot_f32(wrow, x.row(t)));
                        }
                    }
                    return;
                }
                Some(ActFormat::Q8_0) => xs_0.as_ref(),
                Some(ActFormat::Q8_K) => xs_k.as_ref(),
            }
            .expect("quantized above");
            if has_fused_kernel(w.ty) {
                let rb = w.row_bytes();
                tile.resize(n_tok * (r1 - r0), 0.0);
                fused_matmul(w.ty, &w.bytes()[r0 * rb..r1 * rb], r1 - r0, xs, tile);
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
