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
use crate::quant::{dequantize_row, fused_matmul, has_fused_kernel, has_gemm_kernel, DecodedRow};
#[cfg(target_arch = "x86_64")]
use crate::quant::{gemm, ActPanel, GemmScratch};

thread_local! {
    /// Per-thread scratch: a task's [tokens × rows] results, a decoded row,
    /// a dequantized row, unpacked rows for the GEMM.
    static SCRATCH: RefCell<(Vec<f32>, DecodedRow, Vec<f32>, Scratch)> = RefCell::default();
    /// Which rows of the current forward pass are prompt tokens (set by
    /// the backend's `begin_forward`, on the thread that runs the pass).
    static PROMPT_ROWS: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
type Scratch = GemmScratch;
#[cfg(not(target_arch = "x86_64"))]
type Scratch = ();

#[cfg(not(target_arch = "x86_64"))]
struct ActPanel;

/// Mark the rows of the forward pass about to run that are prompt tokens
/// (`model::SeqInput::prefill`); an empty slice marks none.
pub fn set_prompt_rows(rows: &[bool]) {
    PROMPT_ROWS.with_borrow_mut(|p| {
        p.clear();
        p.extend_from_slice(rows);
    });
}

/// `TANDEM_GEMM=0` sends prompt rows through the row kernels too (for
/// side-by-side measurements of the GEMM).
fn gemm_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TANDEM_GEMM").map_or(true, |v| v != "0"))
}

/// outs[i][t, r] = Σ_k x[t, k] · ws[i][r, k], each out laid out
/// [x.rows, ws[i].rows]: several weights applied to the same input.
///
/// Prompt rows (when the marks cover exactly `x`'s rows) go through the
/// GEMM for the weight types that have one; the other rows through the row
/// kernels, whose result for a token does not depend on its neighbours.
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

    // Prompt rows for the GEMM; the rest for the row kernels.
    let prompt: Vec<bool> = PROMPT_ROWS.with_borrow(|p| {
        if p.len() == n_tok {
            p.clone()
        } else {
            vec![false; n_tok]
        }
    });
    let gemm_for = |i: usize| gemm_enabled() && has_gemm_kernel(ws[i].ty) && prompt.contains(&true);
    let gemm_tokens: Vec<usize> = (0..n_tok).filter(|&t| prompt[t]).collect();
    let row_tokens: Vec<usize> = (0..n_tok).filter(|&t| !prompt[t]).collect();
    let panels = |acts: &Option<Vec<QuantizedActs>>, format: ActFormat| -> Vec<ActPanel> {
        let wanted = (0..ws.len()).any(|i| gemm_for(i) && formats[i] == Some(format));
        match acts {
            #[cfg(target_arch = "x86_64")]
            Some(acts) if wanted => {
                let refs: Vec<&QuantizedActs> = gemm_tokens.iter().map(|&t| &acts[t]).collect();
                refs.chunks(crate::quant::gemm_avx2::LANES)
                    .map(|c| ActPanel::new(c, format))
                    .collect()
            }
            _ => Vec::new(),
        }
    };
    let panels_0 = panels(&q8_0, ActFormat::Q8_0);
    let panels_k = panels(&q8_k, ActFormat::Q8_K);
    fn refs<'a>(
        acts: &'a Option<Vec<QuantizedActs>>,
        tokens: &[usize],
    ) -> Option<Vec<&'a QuantizedActs>> {
        acts.as_ref()
            .map(|v| tokens.iter().map(|&t| &v[t]).collect())
    }
    let all_tokens: Vec<usize> = (0..n_tok).collect();
    let (all_0, all_k) = (refs(&q8_0, &all_tokens), refs(&q8_k, &all_tokens));
    let (rest_0, rest_k) = (refs(&q8_0, &row_tokens), refs(&q8_k, &row_tokens));

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
        SCRATCH.with_borrow_mut(|(tile, dec, wrow, _unpacked)| {
            let Some(format) = formats[i] else {
                wrow.resize(w.cols, 0.0);
                for r in r0..r1 {
                    dequantize_row(w.ty, w.row(r), wrow);
                    for t in 0..n_tok {
                        write(t, r, dot_f32(wrow, x.row(t)));
                    }
                }
                return;
            };
            let rb = w.row_bytes();
            let rows = &w.bytes()[r0 * rb..r1 * rb];
            // Which tokens the row kernels take, and their indices in `x`.
            let (xs, tokens): (&Vec<&QuantizedActs>, &[usize]) = if gemm_for(i) {
                #[cfg(target_arch = "x86_64")]
                {
                    let panels = match format {
                        ActFormat::Q8_0 => &panels_0,
                        ActFormat::Q8_K => &panels_k,
                    };
                    tile.resize(gemm_tokens.len() * (r1 - r0), 0.0);
                    gemm(w.ty, rows, r1 - r0, panels, _unpacked, tile);
                    for (j, vals) in tile.chunks_exact(r1 - r0).enumerate() {
                        for (k, v) in vals.iter().enumerate() {
                            write(gemm_tokens[j], r0 + k, *v);
                        }
                    }
                }
                let rest = match format {
                    ActFormat::Q8_0 => rest_0.as_ref(),
                    ActFormat::Q8_K => rest_k.as_ref(),
                };
                (rest.expect("quantized above"), &row_tokens)
            } else {
                let all = match format {
                    ActFormat::Q8_0 => all_0.as_ref(),
                    ActFormat::Q8_K => all_k.as_ref(),
                };
                (all.expect("quantized above"), &all_tokens)
            };
            if xs.is_empty() {
                return;
            }
            if has_fused_kernel(w.ty) {
                tile.resize(xs.len() * (r1 - r0), 0.0);
                fused_matmul(w.ty, rows, r1 - r0, xs, tile);
                for (j, vals) in tile.chunks_exact(r1 - r0).enumerate() {
                    for (k, v) in vals.iter().enumerate() {
                        write(tokens[j], r0 + k, *v);
                    }
                }
            } else {
                for r in r0..r1 {
                    dec.decode(w.ty, w.row(r), w.cols);
                    for (j, xt) in xs.iter().enumerate() {
                        write(tokens[j], r, dot_decoded(dec, xt));
                    }
                }
            }
        });
    });
}
