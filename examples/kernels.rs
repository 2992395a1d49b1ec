//! Kernel micro-benchmark: one weight matrix of each quantized type (random
//! blocks, sane scales, 6 MiB, or `KERNELS_MIB` / `KERNELS_KIB`) times 1, 4, 8 and 128
//! activation rows, single thread: the single-token kernel and the GEMM
//! (`rows_avx2`, `gemm_avx2`), the kernel for rows grouped eight at a time
//! (`grouped_avx2`), or the fused kernel (Q8_0).
//! `cargo run --release --example kernels` prints GB/s of weights read and
//! ns per row (the fastest of 20 runs, or of 2 beyond 8 tokens: the
//! host's neighbours slow some runs); use it for kernel experiments (docs/kernel-notes.md), not as a
//! speed claim (that is `tandem bench`).

use std::time::Instant;

use tandem::quant::act::{ActFormat, QuantizedActs};
use tandem::quant::grouped::GROUP_ROWS;
use tandem::quant::{
    fused_matmul, gemm, gemm_avx2, group_rows, has_fused_kernel, has_gemm_kernel,
    has_grouped_kernel, matvec, matvec_grouped, GgmlType, MATVEC_MAX_TOKENS,
};

fn main() {
    let cols: usize = std::env::args()
        .nth(1)
        .map_or(1536, |a| a.parse().expect("columns"));
    // `KERNELS_KIB` for a matrix that stays in L2 (the host's neighbours
    // cannot evict it), with more runs to take the fastest of.
    let kib: usize = std::env::var("KERNELS_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            std::env::var("KERNELS_MIB")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .map(|m| m << 10)
        })
        .unwrap_or(6 << 10);
    let rows = ((kib << 10) >> cols.ilog2()).max(8);
    let runs = |n: usize| (if n > 8 { 2 } else { 20 }) * (6144 / kib).max(1);
    let mut rng = tandem::rng::XorShift::from_state(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next().expect("endless");
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
        if !has_fused_kernel(ty) && !has_gemm_kernel(ty) {
            continue;
        }
        // `KERNELS_TYPES=Q4_K,Q6_K` times only those.
        if let Ok(only) = std::env::var("KERNELS_TYPES") {
            if !only.split(',').any(|t| t == format!("{ty:?}")) {
                continue;
            }
        }
        let mut w: Vec<u8> = (0..ty.row_bytes(cols) * rows)
            .map(|_| next() as u8)
            .collect();
        // Every f16 scale field set to a small normal value: 0x2000 ≈ 0.0078.
        for b in w.chunks_mut(ty.block_bytes()) {
            let fields: &[usize] = match ty {
                Q4_0 | Q5_0 | Q8_0 => &[0],
                Q6_K => &[208],
                _ => &[0, 2],
            };
            for &f in fields {
                b[f..f + 2].copy_from_slice(&0x2000u16.to_le_bytes());
            }
        }
        let xs: Vec<QuantizedActs> = (0..128)
            .map(|_| {
                let x: Vec<f32> = (0..cols)
                    .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
                    .collect();
                let mut q = QuantizedActs::default();
                q.quantize(&x, ActFormat::for_weight(ty));
                q
            })
            .collect();
        if has_grouped_kernel(ty) {
            // The same rows grouped eight at a time (`quant::grouped`).
            let n_rows = rows / GROUP_ROWS * GROUP_ROWS;
            let mut groups = vec![0u8; n_rows * ty.row_bytes(cols)];
            group_rows(ty, &w[..groups.len()], n_rows, &mut groups);
            for n in 1..=MATVEC_MAX_TOKENS {
                let refs: Vec<&QuantizedActs> = xs.iter().take(n).collect();
                let mut out = vec![0f32; n * n_rows];
                let s = fastest(runs(n), &mut || {
                    matvec_grouped(ty, &groups, n_rows, &refs, &mut out)
                });
                println!(
                    "{ty:?} grouped x{n}: {:7.1} ns/row, {:5.1} GB/s of weights  ({:.0})",
                    s * 1e9 / n_rows as f64,
                    groups.len() as f64 / s / 1e9,
                    out[0]
                );
            }
        }
        let mut scratch = gemm_avx2::Unpacked::default();
        for n in [1usize, 2, 3, 4, 8, 128] {
            let refs: Vec<&QuantizedActs> = xs.iter().take(n).collect();
            let mut out = vec![0f32; n * rows];
            let reps = runs(n);
            let (name, s) = if has_gemm_kernel(ty) {
                let name = if n <= MATVEC_MAX_TOKENS {
                    "row"
                } else {
                    "gemm"
                };
                let s = fastest(reps, &mut || {
                    if n <= MATVEC_MAX_TOKENS {
                        matvec(ty, &w, rows, &refs, &mut out);
                    } else {
                        let panels: Vec<gemm_avx2::ActPanel> = refs
                            .chunks(gemm_avx2::LANES)
                            .map(|c| gemm_avx2::ActPanel::new(c, ActFormat::for_weight(ty)))
                            .collect();
                        gemm(ty, &w, rows, &panels, &mut scratch, &mut out);
                    }
                });
                (name, s)
            } else if has_fused_kernel(ty) {
                let s = fastest(reps, &mut || fused_matmul(ty, &w, rows, &refs, &mut out));
                ("fused", s)
            } else {
                continue;
            };
            println!(
                "{ty:?} {name} x{n}: {:7.1} ns/row, {:5.1} GB/s of weights, {:6.2} G products/s  ({:.0})",
                s * 1e9 / rows as f64,
                w.len() as f64 / s / 1e9,
                (rows * cols * n) as f64 / s / 1e9,
                out[0]
            );
        }
    }
}

/// Seconds of the fastest of `reps` runs of `f`.
fn fastest(reps: usize, f: &mut dyn FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
