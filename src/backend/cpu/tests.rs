//! Each CPU op against a straightforward f64 reference.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::backend::{AttnParams, AttnSeq, RopeStyle};
use crate::gguf::{GgufFile, GgufWriter};

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn close(a: &[f32], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (*x as f64 - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn rms_norm_per_row_and_per_head() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let be = CpuBackend;
    for group in [8, 32] {
        let x = be.act_from_host(3, 32, rand_vec(&mut rng, 96));
        let w = rand_vec(&mut rng, group);
        let mut out = be.act(0, 0);
        be.rms_norm(&x, &w, 1e-6, &mut out);
        let want: Vec<f64> = x
            .data
            .chunks(group)
            .flat_map(|c| {
                let ms = c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / group as f64;
                let inv = 1.0 / (ms + 1e-6).sqrt();
                c.iter()
                    .zip(&w)
                    .map(move |(v, w)| *v as f64 * inv * *w as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        close(&out.data, &want, 1e-5, "rms_norm");
    }
}

#[test]
fn rope_matches_complex_rotation_in_both_layouts() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let be = CpuBackend;
    let (hd, heads) = (16, 2);
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        let rope = Rope {
            style,
            base: 10000.0,
            freq_scale: 0.5,
            dims: hd,
        };
        let data = rand_vec(&mut rng, 3 * hd * heads);
        let mut x = be.act_from_host(3, hd * heads, data.clone());
        let positions = [0u32, 7, 123];
        be.rope(&mut x, hd, &positions, &rope);
        let mut want = vec![0f64; data.len()];
        for (r, &pos) in positions.iter().enumerate() {
            for h in 0..heads {
                let base = r * hd * heads + h * hd;
                for i in 0..hd / 2 {
                    let (a, b) = match style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + hd / 2),
                    };
                    let theta = 0.5 * pos as f64 * 10000f64.powf(-2.0 * i as f64 / hd as f64);
                    let (x0, x1) = (data[base + a] as f64, data[base + b] as f64);
                    want[base + a] = x0 * theta.cos() - x1 * theta.sin();
                    want[base + b] = x0 * theta.sin() + x1 * theta.cos();
                }
            }
        }
        close(&x.data, &want, 1e-4, &format!("rope {style:?}"));
    }
}

#[test]
fn gated_activations() {
    let be = CpuBackend;
    let g = vec![-2.0f32, -0.5, 0.0, 0.7, 3.0];
    let u = vec![1.0f32, 2.0, 3.0, -1.0, 0.5];
    for act in [Activation::Silu, Activation::GeluTanh] {
        let mut gate = be.act_from_host(1, 5, g.clone());
        be.gated_act(&mut gate, &be.act_from_host(1, 5, u.clone()), act);
        let want: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&x, &u)| {
                let x = x as f64;
                let a = match act {
                    Activation::Silu => x / (1.0 + (-x).exp()),
                    Activation::GeluTanh => {
                        0.5 * x
                            * (1.0
                                + ((2.0 / std::f64::consts::PI).sqrt()
                                    * (x + 0.044715 * x.powi(3)))
                                .tanh())
                    }
                };
                a * u as f64
            })
            .collect();
        // GELU goes through f16 as in ggml (relative step 2^-11).
        let tol = if act == Activation::GeluTanh {
            2e-3
        } else {
            1e-5
        };
        close(&gate.data, &want, tol, &format!("{act:?}"));
    }
}

/// A one-tensor GGUF file on disk, opened.
fn weight_file(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Arc<GgufFile> {
    let mut bytes = vec![0u8; ty.row_bytes(cols) * rows];
    match ty {
        GgmlType::F32 => {
            bytes = rand_vec(rng, rows * cols)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_mut(34) {
                b[0..2].copy_from_slice(
                    &half::f16::from_f32(rng.random_range(0.001f32..0.02)).to_le_bytes(),
                );
                rng.fill(&mut b[2..]);
            }
        }
        GgmlType::Q4_K => {
            for b in bytes.chunks_mut(144) {
                rng.fill(&mut b[4..]);
                b[0..2].copy_from_slice(&half::f16::from_f32(0.002).to_le_bytes());
                b[2..4].copy_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
            }
        }
        GgmlType::Q6_K => {
            for b in bytes.chunks_mut(210) {
                rng.fill(&mut b[..208]);
                b[208..210].copy_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
            }
        }
        _ => unimplemented!("test helper"),
    }
    let mut w = GgufWriter::new();
    w.tensor("w", &[cols as u64, rows as u64], ty, bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    let f = Arc::new(GgufFile::open(&path).unwrap());
    std::mem::forget(dir); // the mapping outlives the test body
    f
}

#[test]
fn linear_matches_f64_reference_for_float_and_quantized_weights() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let be = CpuBackend;
    for (ty, cols, tol) in [
        (GgmlType::F32, 48, 1e-5),
        (GgmlType::Q8_0, 96, 0.02),
        (GgmlType::Q4_K, 512, 0.02),
    ] {
        let rows = 37;
        let f = weight_file(ty, rows, cols, &mut rng);
        let w = be.load_weight(&f.tensor("w").unwrap(), &f).unwrap();
        let x = be.act_from_host(5, cols, rand_vec(&mut rng, 5 * cols));
        let bias = rand_vec(&mut rng, rows);
        let mut out = be.act(0, 0);
        be.linear(&x, &w, Some(&bias), &mut out);
        let mut wrow = vec![0f32; cols];
        for t in 0..5 {
            for (r, b) in bias.iter().enumerate() {
                dequantize_row(ty, w.row(r), &mut wrow);
                let exact: f64 = wrow
                    .iter()
                    .zip(x.row(t))
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    + *b as f64;
                let mag: f64 = wrow
                    .iter()
                    .zip(x.row(t))
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let got = out.data[t * rows + r] as f64;
                assert!(
                    (got - exact).abs() <= tol * mag + 1e-5,
                    "{ty:?} t={t} r={r}: {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn attention_matches_dense_reference_with_gqa_window_and_two_sequences() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let be = CpuBackend;
    let (n_heads, n_kv, hd) = (4, 2, 8);
    let kv_dim = n_kv * hd;
    let n_slots = 32;
    let mut kv = be.alloc_kv(1, n_slots, kv_dim);
    // Sequence A holds 6 positions in slots 10..16, B holds 3 in slots 0..3.
    let slots_a: Vec<u32> = (10..16).collect();
    let slots_b: Vec<u32> = (0..3).collect();
    let all_slots: Vec<u32> = slots_a.iter().chain(&slots_b).copied().collect();
    let k = be.act_from_host(9, kv_dim, rand_vec(&mut rng, 9 * kv_dim));
    let v = be.act_from_host(9, kv_dim, rand_vec(&mut rng, 9 * kv_dim));
    be.kv_store(&mut kv, 0, &k, &v, &all_slots);
    // Queries: last 2 positions of A, all 3 of B.
    let q = be.act_from_host(5, n_heads * hd, rand_vec(&mut rng, 5 * n_heads * hd));
    let pos_a = [4u32, 5];
    let pos_b = [0u32, 1, 2];
    let seqs = [
        AttnSeq {
            rows: 0..2,
            slots: &slots_a,
            positions: &pos_a,
        },
        AttnSeq {
            rows: 2..5,
            slots: &slots_b,
            positions: &pos_b,
        },
    ];
    for window in [None, Some(3)] {
        let p = AttnParams {
            n_heads,
            n_kv_heads: n_kv,
            head_dim: hd,
            scale: 0.3,
            window,
        };
        let mut out = be.act(0, 0);
        be.attention(&q, &kv, 0, &seqs, &p, &mut out);
        let mut want = vec![0f64; 5 * n_heads * hd];
        for (row, (kv_rows, pos)) in [(0..6, 4), (0..6, 5), (6..9, 0), (6..9, 1), (6..9, 2)]
            .iter()
            .enumerate()
        {
            for h in 0..n_heads {
                let kvh = h / (n_heads / n_kv);
                let lo = window
                    .map(|w| (pos + 1usize).saturating_sub(w))
                    .unwrap_or(0);
                let keys: Vec<usize> = (kv_rows.start + lo..=kv_rows.start + pos).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&kr| {
                        (0..hd)
                            .map(|d| q.row(row)[h * hd + d] as f64 * k.row(kr)[kvh * hd + d] as f64)
                            .sum::<f64>()
                            * 0.3
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    want[row * n_heads * hd + h * hd + d] = keys
                        .iter()
                        .zip(&e)
                        .map(|(&kr, w)| w / sum * v.row(kr)[kvh * hd + d] as f64)
                        .sum();
                }
            }
        }
        close(
            &out.data,
            &want,
            1e-5,
            &format!("attention window {window:?}"),
        );
    }
}

#[test]
fn embed_scales_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let be = CpuBackend;
    let f = weight_file(GgmlType::F32, 10, 32, &mut rng);
    let w = be.load_weight(&f.tensor("w").unwrap(), &f).unwrap();
    let mut out = be.act(0, 0);
    be.embed(&w, &[3, 7], 2.0, &mut out);
    let mut row = vec![0f32; 32];
    dequantize_row(GgmlType::F32, w.row(7), &mut row);
    let want: Vec<f64> = row.iter().map(|v| *v as f64 * 2.0).collect();
    close(out.row(1), &want, 0.0, "embed");
}

#[test]
fn gelu_table_follows_the_exact_function_within_f16_rounding() {
    let exact = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    for i in -12_000..=12_000 {
        let x = i as f32 * 1e-3;
        let got = super::ops::gelu_f16(x) as f64;
        let want = if x >= 10.0 {
            x as f64
        } else if x <= -10.0 {
            0.0
        } else {
            exact(x as f64)
        };
        // f16 rounding of the input (slope ≤ 1.13) and of the output.
        assert!(
            (got - want).abs() <= 2e-3 * (1.0 + x.abs() as f64),
            "gelu({x}) = {got}, want {want}"
        );
    }
}

#[test]
fn linear_many_equals_separate_linears_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let be = CpuBackend;
    let cols = 512;
    // A float, a legacy and two k-quant weights: three activation formats.
    let files: Vec<_> = [
        (GgmlType::F32, 20),
        (GgmlType::Q8_0, 37),
        (GgmlType::Q4_K, 64),
        (GgmlType::Q6_K, 16),
    ]
    .into_iter()
    .map(|(ty, rows)| weight_file(ty, rows, cols, &mut rng))
    .collect();
    let ws: Vec<CpuWeight> = files
        .iter()
        .map(|f| be.load_weight(&f.tensor("w").unwrap(), f).unwrap())
        .collect();
    let biases: Vec<Vec<f32>> = ws.iter().map(|w| rand_vec(&mut rng, w.rows)).collect();
    let x = be.act_from_host(6, cols, rand_vec(&mut rng, 6 * cols));
    let pairs: Vec<(&CpuWeight, Option<&Vec<f32>>)> = ws
        .iter()
        .zip(&biases)
        .enumerate()
        .map(|(i, (w, b))| (w, (i % 2 == 1).then_some(b)))
        .collect();
    let mut many: Vec<CpuAct> = (0..ws.len()).map(|_| be.act(0, 0)).collect();
    let mut refs: Vec<&mut CpuAct> = many.iter_mut().collect();
    be.linear_many(&x, &pairs, &mut refs);
    for ((w, b), got) in pairs.iter().zip(&many) {
        let mut one = be.act(0, 0);
        be.linear(&x, w, *b, &mut one);
        assert_eq!((got.rows, got.cols), (one.rows, one.cols));
        let bits = |a: &CpuAct| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(&one), "{:?}", w.ty);
    }
}
