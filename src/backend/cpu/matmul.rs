//! Matrix multiplication against weights in their file format, or grouped
//! eight rows at a time (Q4_K, Q6_K and the 32-element formats but Q8_0:
//! `quant::grouped`). Activations
//! are quantized once per row (once for all the projections of one input);
//! each task takes a range of one weight's rows and multiplies every row with
//! every token of the batch, so prompt processing reads each weight once per
//! batch rather than once per token, and Q, K and V (or gate and up) are one
//! pool job.

use std::cell::RefCell;

use super::pool::{self, SendPtr};
use super::{CpuAct, CpuWeight};
use crate::quant::act::{dot_decoded, dot_f32, ActFormat, QuantizedActs};
use crate::quant::grouped::GROUP_ROWS;
use crate::quant::{dequantize_row, fused_matmul, has_fused_kernel, has_gemm_kernel, DecodedRow};
#[cfg(target_arch = "x86_64")]
use crate::quant::{
    gemm, matvec, matvec_beats_gemm_up_to, matvec_grouped, ungroup_rows, ActPanel, GemmScratch,
    MATVEC_MAX_TOKENS,
};

thread_local! {
    /// Per-thread scratch: a task's [tokens × rows] results, a decoded row,
    /// a dequantized row, unpacked rows for the GEMM.
    static SCRATCH: RefCell<(Vec<f32>, DecodedRow, Vec<f32>, Scratch)> = RefCell::default();
    /// Grouped rows turned back into the file's layout for the GEMM.
    static UNGROUPED: RefCell<Vec<u8>> = RefCell::default();
}

#[cfg(target_arch = "x86_64")]
type Scratch = GemmScratch;
#[cfg(not(target_arch = "x86_64"))]
type Scratch = ();

/// `TANDEM_GEMM=0` sends every token through the single-token kernels (for
/// side-by-side measurements of the GEMM; the results are the same bits).
fn gemm_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TANDEM_GEMM").map_or(true, |v| v != "0"))
}

/// Most tokens for which grouped rows go through their own kernel; more go
/// through the GEMM, a group at a time turned back into rows. Measured on
/// Qwen2.5-Coder-1.5B (pp tok/s, grouped kernel against the GEMM): 8 tokens
/// 2.4×, 16 1.25×, 32 1.14×, 64 1.11×, 128 0.94–0.96×.
const GROUPED_MAX_TOKENS: usize = 64;

/// How one weight's products are computed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Dequantized rows against f32 activations (float weights).
    Float,
    /// The prompt GEMM, many tokens per weight row.
    Gemm,
    /// The GEMM's arithmetic, a few tokens at a time (bit-identical to `Gemm`).
    Exact,
    /// Rows grouped eight at a time (`quant::grouped`), up to
    /// [`GROUPED_MAX_TOKENS`] (bit-identical to `Gemm`); rows past the last
    /// group as `Exact`.
    Grouped,
    /// The fused row kernels, up to four tokens per row (Q8_0).
    Fused,
    /// Rows decoded to integers, then dotted (Q2_K, Q3_K; CPUs without AVX2).
    Decoded,
}

/// outs[i][t, r] = Σ_k x[t, k] · ws[i][r, k], each out laid out
/// [x.rows, ws[i].rows]: several weights applied to the same input.
///
/// Every kernel computes a token's result independently of the other
/// tokens in the batch, and the GEMM and the single-token kernels of a type
/// give the same bits, so the choice between them (by batch size) never
/// changes a logit.
pub fn matmul_many(x: &CpuAct, ws: &[&CpuWeight], outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len());
    let n_tok = x.rows;
    let pool = pool::global();
    let kernels: Vec<Kernel> = ws
        .iter()
        .map(|w| match w.ty {
            _ if w.groups().is_some() && n_tok <= GROUPED_MAX_TOKENS => Kernel::Grouped,
            t if !t.is_quantized() => Kernel::Float,
            t if has_gemm_kernel(t) => {
                if n_tok > matvec_beats_gemm_up_to(t, w.cols) && gemm_enabled() {
                    Kernel::Gemm
                } else {
                    Kernel::Exact
                }
            }
            t if has_fused_kernel(t) => Kernel::Fused,
            _ => Kernel::Decoded,
        })
        .collect();
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
    // The kernels take the token rows as a slice of references: made once
    // here, not in every task.
    let refs_0: Option<Vec<&QuantizedActs>> = q8_0.as_ref().map(|v| v.iter().collect());
    let refs_k: Option<Vec<&QuantizedActs>> = q8_k.as_ref().map(|v| v.iter().collect());
    let acts = |format: ActFormat| match format {
        ActFormat::Q8_0 => refs_0.as_deref(),
        ActFormat::Q8_K => refs_k.as_deref(),
    };
    #[cfg(target_arch = "x86_64")]
    let panels = |format: ActFormat| -> Vec<ActPanel> {
        let wanted =
            (0..ws.len()).any(|i| kernels[i] == Kernel::Gemm && formats[i] == Some(format));
        match acts(format) {
            Some(xs) if wanted => xs
                .chunks(crate::quant::gemm_avx2::LANES)
                .map(|c| ActPanel::new(c, format))
                .collect(),
            _ => Vec::new(),
        }
    };
    #[cfg(target_arch = "x86_64")]
    let (panels_0, panels_k) = (panels(ActFormat::Q8_0), panels(ActFormat::Q8_K));

    // Tasks: (weight, first row, end row). Enough per weight to balance the
    // pool, each big enough to amortise the hand-off.
    let mut tasks = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(outs[i].len(), n_tok * w.rows);
        // Whole groups of rows (`quant::grouped`) per task.
        let chunk = w
            .rows
            .div_ceil(pool.threads() * 4)
            .max(16)
            .next_multiple_of(GROUP_ROWS);
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
            let rb = w.row_bytes();
            let rows = &w.bytes()[r0 * rb..r1 * rb];
            let nr = r1 - r0;
            // Rows r0..grouped_end are grouped (whole groups: tasks start
            // at multiples of GROUP_ROWS), the rest in the file's layout.
            let grouped_end = w.grouped_rows().clamp(r0, r1);
            // A tile holds [tokens × rows] results for rows from `first`,
            // tokens from `t0` on.
            let put_rows = |tile: &[f32], t0: usize, first: usize, n: usize| {
                for (t, vals) in tile.chunks_exact(n).enumerate() {
                    // SAFETY: as `write`, a run of n outputs in one row.
                    unsafe {
                        let at = ptr.get().add((t0 + t) * n_out + first);
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), at, n);
                    }
                }
            };
            let put_tile = |tile: &[f32], t0: usize| put_rows(tile, t0, r0, nr);
            let xs = formats[i].and_then(acts);
            match kernels[i] {
                Kernel::Float => {
                    wrow.resize(w.cols, 0.0);
                    for r in r0..r1 {
                        dequantize_row(w.ty, w.row(r), wrow);
                        for t in 0..n_tok {
                            write(t, r, dot_f32(wrow, x.row(t)));
                        }
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Gemm => {
                    let panels = match formats[i] {
                        Some(ActFormat::Q8_0) => &panels_0,
                        _ => &panels_k,
                    };
                    // Grouped rows go back to the file's layout a group at
                    // a time, in a buffer that stays in L1.
                    let group_bytes = GROUP_ROWS * rb;
                    for g0 in (r0..grouped_end).step_by(GROUP_ROWS) {
                        let groups = &w.groups().expect("grouped")[g0 * rb..][..group_bytes];
                        UNGROUPED.with_borrow_mut(|buf| {
                            buf.resize(group_bytes, 0);
                            ungroup_rows(w.ty, groups, rb, buf);
                            tile.resize(n_tok * GROUP_ROWS, 0.0);
                            gemm(w.ty, buf, GROUP_ROWS, panels, _unpacked, tile);
                        });
                        put_rows(tile, 0, g0, GROUP_ROWS);
                    }
                    if r1 > grouped_end {
                        let n = r1 - grouped_end;
                        tile.resize(n_tok * n, 0.0);
                        gemm(
                            w.ty,
                            &rows[(grouped_end - r0) * rb..],
                            n,
                            panels,
                            _unpacked,
                            tile,
                        );
                        put_rows(tile, 0, grouped_end, n);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Exact | Kernel::Grouped => {
                    let xs = xs.expect("quantized above");
                    let n_grouped = grouped_end - r0;
                    if n_grouped > 0 {
                        tile.resize(n_tok * n_grouped, 0.0);
                        let groups = &w.groups().expect("grouped")[r0 * rb..grouped_end * rb];
                        matvec_grouped(w.ty, groups, n_grouped, xs, tile);
                        put_rows(tile, 0, r0, n_grouped);
                    }
                    if r1 > grouped_end {
                        let n = r1 - grouped_end;
                        for (c, toks) in xs.chunks(MATVEC_MAX_TOKENS).enumerate() {
                            tile.resize(toks.len() * n, 0.0);
                            matvec(w.ty, &rows[n_grouped * rb..], n, toks, tile);
                            put_rows(tile, c * MATVEC_MAX_TOKENS, grouped_end, n);
                        }
                    }
                }
                Kernel::Fused => {
                    tile.resize(n_tok * nr, 0.0);
                    fused_matmul(w.ty, rows, nr, xs.expect("quantized above"), tile);
                    put_tile(tile, 0);
                }
                _ => {
                    let xs = xs.expect("quantized above");
                    for r in r0..r1 {
                        dec.decode(w.ty, w.row(r), w.cols);
                        for (t, xt) in xs.iter().enumerate() {
                            write(t, r, dot_decoded(dec, xt));
                        }
                    }
                }
            }
        });
    });
}
