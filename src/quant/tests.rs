//! Block formats checked against ggml-style reference loops (written in the
//! shape of ggml's `dequantize_row_*`, independently of the decoders), and the
//! integer dot product checked against an f64 dot of dequantized values.

use super::act::{dot_decoded, dot_decoded_portable, ActFormat, QuantizedActs};
use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ALL_QUANT: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Byte offsets of f16 fields in each block, overwritten with sane values.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

fn random_row(ty: GgmlType, n: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut row = vec![0u8; ty.row_bytes(n)];
    rng.fill(&mut row[..]);
    for b in row.chunks_mut(ty.block_bytes()) {
        for &off in f16_fields(ty) {
            let v = half::f16::from_f32(rng.random_range(-0.05f32..0.05));
            b[off..off + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    row
}

/// `count` tokens of `n` random activations quantized in `format`; in
/// token `outlier.0`, value `outlier.1` set to `outlier.2`, as real
/// activations have.
fn random_acts(
    format: ActFormat,
    n: usize,
    count: usize,
    outlier: (usize, usize, f32),
    rng: &mut ChaCha8Rng,
) -> Vec<QuantizedActs> {
    (0..count)
        .map(|k| {
            let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            if k == outlier.0 {
                x[outlier.1] = outlier.2;
            }
            let mut q = QuantizedActs::default();
            q.quantize(&x, format);
            q
        })
        .collect()
}

fn h(b: &[u8], i: usize) -> f32 {
    f16_at(b, i)
}

/// ggml-shaped reference dequantization of one block.
fn reference_block(ty: GgmlType, b: &[u8]) -> Vec<f32> {
    use GgmlType::*;
    let mut y = vec![0f32; ty.block_size()];
    match ty {
        Q4_0 => {
            for j in 0..16 {
                y[j] = ((b[2 + j] & 0xf) as i32 - 8) as f32 * h(b, 0);
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * h(b, 0);
            }
        }
        Q4_1 => {
            for j in 0..16 {
                y[j] = (b[4 + j] & 0xf) as f32 * h(b, 0) + h(b, 2);
                y[j + 16] = (b[4 + j] >> 4) as f32 * h(b, 0) + h(b, 2);
            }
        }
        Q5_0 | Q5_1 => {
            let o = if ty == Q5_0 { 2 } else { 4 };
            let qh = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            for j in 0..16 {
                let xh0 = ((qh >> j) << 4) & 0x10;
                let xh1 = (qh >> (j + 12)) & 0x10;
                let x0 = ((b[o + 4 + j] & 0xf) as u32 | xh0) as i32;
                let x1 = ((b[o + 4 + j] >> 4) as u32 | xh1) as i32;
                if ty == Q5_0 {
                    y[j] = (x0 - 16) as f32 * h(b, 0);
                    y[j + 16] = (x1 - 16) as f32 * h(b, 0);
                } else {
                    y[j] = x0 as f32 * h(b, 0) + h(b, 2);
                    y[j + 16] = x1 as f32 * h(b, 0) + h(b, 2);
                }
            }
        }
        Q8_0 => {
            for j in 0..32 {
                y[j] = (b[2 + j] as i8) as f32 * h(b, 0);
            }
        }
        Q2_K => {
            let (d, min) = (h(b, 80), h(b, 82));
            let mut qi = 16;
            let mut is = 0;
            let mut yi = 0;
            for _n in 0..2 {
                let mut shift = 0;
                for _j in 0..4 {
                    for part in 0..2 {
                        let sc = b[is];
                        is += 1;
                        let (dl, ml) = (d * (sc & 0xf) as f32, min * (sc >> 4) as f32);
                        for l in 0..16 {
                            y[yi] = dl * ((b[qi + l + 16 * part] >> shift) & 3) as f32 - ml;
                            yi += 1;
                        }
                    }
                    shift += 2;
                }
                qi += 32;
            }
        }
        Q3_K => {
            let d = h(b, 108);
            let mut aux = [0u32; 4];
            for i in 0..3 {
                aux[i] = u32::from_le_bytes(b[96 + 4 * i..100 + 4 * i].try_into().unwrap());
            }
            let (k1, k2) = (0x03030303u32, 0x0f0f0f0fu32);
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
            aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
            aux[0] = (aux[0] & k2) | ((tmp & k1) << 4);
            aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
            let scales: Vec<i8> = aux
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .map(|v| v as i8)
                .collect();
            let (mut qi, mut is, mut yi, mut m) = (32usize, 0usize, 0usize, 1u8);
            for _n in 0..2 {
                let mut shift = 0;
                for _j in 0..4 {
                    for part in 0..2 {
                        let dl = d * (scales[is] as i32 - 32) as f32;
                        is += 1;
                        for l in 0..16 {
                            let i = l + 16 * part;
                            let low = ((b[qi + i] >> shift) & 3) as i32;
                            let hsub = if b[i] & m != 0 { 0 } else { 4 };
                            y[yi] = dl * (low - hsub) as f32;
                            yi += 1;
                        }
                    }
                    shift += 2;
                    m <<= 1;
                }
                qi += 32;
            }
        }
        Q4_K | Q5_K => {
            let (d, min) = (h(b, 0), h(b, 2));
            let sc = &b[4..16];
            let get = |j: usize| -> (f32, f32) {
                if j < 4 {
                    ((sc[j] & 63) as f32, (sc[j + 4] & 63) as f32)
                } else {
                    (
                        ((sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4)) as f32,
                        ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as f32,
                    )
                }
            };
            let (qh, ql0) = if ty == Q5_K {
                (&b[16..48], 48)
            } else {
                (&b[0..0], 16)
            };
            let (mut yi, mut is, mut u1, mut u2) = (0, 0, 1u8, 2u8);
            for j in 0..4 {
                let ql = &b[ql0 + 32 * j..ql0 + 32 * j + 32];
                let (s1, m1) = get(is);
                let (s2, m2) = get(is + 1);
                for l in 0..32 {
                    let hb = if ty == Q5_K && qh[l] & u1 != 0 {
                        16.0
                    } else {
                        0.0
                    };
                    y[yi] = d * s1 * ((ql[l] & 0xf) as f32 + hb) - min * m1;
                    yi += 1;
                }
                for l in 0..32 {
                    let hb = if ty == Q5_K && qh[l] & u2 != 0 {
                        16.0
                    } else {
                        0.0
                    };
                    y[yi] = d * s2 * ((ql[l] >> 4) as f32 + hb) - min * m2;
                    yi += 1;
                }
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
        }
        Q6_K => {
            let d = h(b, 208);
            for n in 0..2 {
                let (ql, qh, sc) = (&b[64 * n..], &b[128 + 32 * n..], &b[192 + 8 * n..]);
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let base = 128 * n;
                    y[base + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[base + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[base + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[base + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        _ => unreachable!(),
    }
    y
}

#[test]
fn dequantization_matches_ggml_reference_loops() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for ty in ALL_QUANT {
        let n = ty.block_size() * 3;
        let row = random_row(ty, n, &mut rng);
        let mut got = vec![0f32; n];
        dequantize_row(ty, &row, &mut got);
        for (bi, block) in row.chunks(ty.block_bytes()).enumerate() {
            let want = reference_block(ty, block);
            for (i, w) in want.iter().enumerate() {
                let g = got[bi * ty.block_size() + i];
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{ty:?} block {bi} elem {i}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn float_types_dequantize() {
    let vals = [1.5f32, -2.25, 0.0, 3.0e-3];
    let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16b: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16b: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    for (ty, bytes, tol) in [
        (GgmlType::F32, f32b, 0.0),
        (GgmlType::F16, f16b, 1e-3),
        (GgmlType::BF16, bf16b, 1e-2),
    ] {
        let mut out = [0f32; 4];
        dequantize_row(ty, &bytes, &mut out);
        for (o, v) in out.iter().zip(vals) {
            assert!(
                (o - v).abs() <= tol * v.abs().max(1e-3),
                "{ty:?}: {o} vs {v}"
            );
        }
    }
}

#[test]
fn integer_dot_matches_f64_reference_for_every_type_and_width() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for ty in ALL_QUANT {
        for blocks in [1, 2, 5] {
            let n = ty.block_size() * blocks;
            let row = random_row(ty, n, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let mut w = vec![0f32; n];
            dequantize_row(ty, &row, &mut w);
            let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let mag: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let mut dec = DecodedRow::default();
            dec.decode(ty, &row, n);
            let mut xq = QuantizedActs::default();
            xq.quantize(&x, ActFormat::for_weight(ty));
            let got = dot_decoded(&dec, &xq) as f64;
            // 8-bit activations: relative error per product ~ 1/254.
            assert!(
                (got - exact).abs() <= 0.01 * mag + 1e-6,
                "{ty:?} n={n}: {got} vs {exact} (mag {mag})"
            );
            let portable = dot_decoded_portable(&dec, &xq) as f64;
            assert!(
                (got - portable).abs() <= 1e-5 * mag + 1e-6,
                "{ty:?}: SIMD {got} vs portable {portable}"
            );
        }
    }
}

#[test]
fn activation_quantization_round_trips_within_half_step() {
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 37) % 19) as f32 - 9.0 + i as f32 * 0.01)
        .collect();
    for format in [ActFormat::Q8_0, ActFormat::Q8_K] {
        let mut q = QuantizedActs::default();
        q.quantize(&x, format);
        for (i, v) in x.iter().enumerate() {
            let back = q.q[i] as f32 * q.d[i / GROUP];
            // Half a step, plus the f16 rounding of the Q8_0 scale.
            assert!(
                (back - v).abs() <= q.d[i / GROUP].abs() * 0.5 + v.abs() * 1e-3,
                "{format:?} {i}: {back} vs {v}"
            );
        }
        assert_eq!(
            q.sum[0] as i32,
            q.q[..16].iter().map(|&v| v as i32).sum::<i32>()
        );
    }
}

#[test]
fn simd_decoding_is_bit_identical_to_portable() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for ty in ALL_QUANT {
        let n = ty.block_size() * 4;
        let row = random_row(ty, n, &mut rng);
        let mut fast = DecodedRow::default();
        fast.decode(ty, &row, n);
        let slow = decode_row_portable(ty, &row, n);
        assert_eq!(fast.q, slow.q, "{ty:?} values");
        assert_eq!(fast.scale, slow.scale, "{ty:?} scales");
        assert_eq!(fast.min, slow.min, "{ty:?} mins");
    }
}

#[test]
fn fused_kernels_match_the_decoded_path_and_ignore_batch_size() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for ty in ALL_QUANT.into_iter().filter(|t| has_fused_kernel(*t)) {
        for blocks in [1, 2, 7] {
            let n = ty.block_size() * blocks;
            let row = random_row(ty, n, &mut rng);
            let mut dec = DecodedRow::default();
            dec.decode(ty, &row, n);
            let xs = random_acts(ActFormat::for_weight(ty), n, 6, (2, n / 3, 40.0), &mut rng);
            let refs: Vec<&QuantizedActs> = xs.iter().collect();
            let mut all = vec![0f32; xs.len()];
            fused_matmul(ty, &row, 1, &refs, &mut all);
            // The same row three times over: a tile of rows × tokens.
            let rows3 = row.repeat(3);
            let mut tile = vec![0f32; 3 * xs.len()];
            fused_matmul(ty, &rows3, 3, &refs, &mut tile);
            for (t, v) in all.iter().enumerate() {
                assert_eq!(&tile[3 * t..3 * t + 3], &[*v; 3], "{ty:?}: tile layout");
            }
            for (t, x) in xs.iter().enumerate() {
                let want = dot_decoded_portable(&dec, x);
                let mag: f32 = dec
                    .q
                    .iter()
                    .zip(&x.q)
                    .enumerate()
                    .map(|(i, (w, a))| {
                        let g = i / GROUP;
                        ((dec.scale[g] * *w as f32 - dec.min[g]) * x.d[g] * *a as f32).abs()
                    })
                    .sum();
                assert!(
                    (all[t] - want).abs() <= 1e-5 * mag + 1e-6,
                    "{ty:?} n={n} row {t}: fused {} vs decoded {want} (mag {mag})",
                    all[t]
                );
                let mut alone = [0f32];
                fused_matmul(ty, &row, 1, &[x], &mut alone);
                assert_eq!(
                    alone[0].to_bits(),
                    all[t].to_bits(),
                    "{ty:?}: batch changed row {t}"
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn gemm_matches_the_decoded_path_and_the_row_kernel_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for ty in ALL_QUANT.into_iter().filter(|t| has_gemm_kernel(*t)) {
        for blocks in [1, 3, 8] {
            let n = ty.block_size() * blocks;
            let format = ActFormat::for_weight(ty);
            // 11 rows (GEMM: tiles of 4 and a padded one; row kernel: 8 and
            // a padded 3), 11 tokens (a full panel and a partial one), one
            // with an outlier.
            let n_rows = 11;
            let rows: Vec<Vec<u8>> = (0..n_rows).map(|_| random_row(ty, n, &mut rng)).collect();
            let xs = random_acts(format, n, 11, (3, n / 2, -50.0), &mut rng);
            let refs: Vec<&QuantizedActs> = xs.iter().collect();
            let panels: Vec<ActPanel> = refs
                .chunks(gemm_avx2::LANES)
                .map(|c| ActPanel::new(c, format))
                .collect();
            let mut scratch = GemmScratch::default();
            let mut out = vec![0f32; xs.len() * n_rows];
            gemm(ty, &rows.concat(), n_rows, &panels, &mut scratch, &mut out);
            // The row kernel gives the same bits, one to three tokens a call.
            for k in 1..=MATVEC_MAX_TOKENS {
                for (c, group) in refs.chunks(k).enumerate() {
                    let mut got = vec![0f32; n_rows * group.len()];
                    matvec(ty, &rows.concat(), n_rows, group, &mut got);
                    for (j, v) in got.iter().enumerate() {
                        let (t, r) = (c * k + j / n_rows, j % n_rows);
                        let g = out[t * n_rows + r];
                        assert_eq!(
                            v.to_bits(),
                            g.to_bits(),
                            "{ty:?} n={n} row {r} token {t} ({k} a call): row kernel {v} vs gemm {g}"
                        );
                    }
                }
            }
            for (r, row) in rows.iter().enumerate() {
                let mut dec = DecodedRow::default();
                dec.decode(ty, row, n);
                for (t, x) in xs.iter().enumerate() {
                    let want = dot_decoded_portable(&dec, x);
                    let mag: f32 = (0..n)
                        .map(|i| {
                            let g = i / GROUP;
                            ((dec.scale[g] * dec.q[i] as f32 - dec.min[g]) * x.d[g] * x.q[i] as f32)
                                .abs()
                        })
                        .sum();
                    let got = out[t * n_rows + r];
                    assert!(
                        (got - want).abs() <= 1e-5 * mag + 1e-6,
                        "{ty:?} n={n} row {r} token {t}: gemm {got} vs decoded {want} (mag {mag})"
                    );
                    // Alone in its panel, with one row: the same bits.
                    let mut alone = [0f32];
                    let panel = [ActPanel::new(&[x], format)];
                    gemm(ty, row, 1, &panel, &mut scratch, &mut alone);
                    assert_eq!(
                        alone[0].to_bits(),
                        got.to_bits(),
                        "{ty:?}: neighbours changed token {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn simd_activation_quantization_is_bit_identical_to_portable() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for format in [ActFormat::Q8_0, ActFormat::Q8_K] {
        for blocks in [1, 3, 8] {
            let n = format.block() * blocks;
            for case in 0..4 {
                let mut x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect();
                match case {
                    1 => x[..format.block()].fill(0.0),
                    2 => x[n / 2] = -250.0,
                    // Ties: several values of the largest magnitude, both signs.
                    3 => {
                        x[5] = 7.0;
                        x[9] = -7.0;
                    }
                    _ => {}
                }
                let (mut fast, mut slow) = (QuantizedActs::default(), QuantizedActs::default());
                fast.quantize(&x, format);
                slow.q.resize(n, 0);
                slow.d.resize(n / GROUP, 0.0);
                slow.sum.resize(n / GROUP, 0);
                slow.dsum.resize(n / GROUP, 0.0);
                slow.quantize_portable(&x, format);
                assert_eq!(fast.q, slow.q, "{format:?} case {case}: values");
                assert_eq!(fast.sum, slow.sum, "{format:?} case {case}: sums");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fast.d),
                    bits(&slow.d),
                    "{format:?} case {case}: scales"
                );
                assert_eq!(
                    bits(&fast.dsum),
                    bits(&slow.dsum),
                    "{format:?} case {case}: dsum"
                );
            }
        }
    }
}

#[test]
fn grouped_rows_come_back_as_the_file_had_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for ty in ALL_QUANT {
        for blocks in [1, 3] {
            let n = ty.block_size() * blocks;
            let n_rows = 2 * grouped::GROUP_ROWS;
            let rows: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_row(ty, n, &mut rng))
                .collect();
            let groups = grouped::group_rows_portable(ty, &rows, n_rows);
            assert_ne!(groups, rows, "{ty:?}: grouping moved nothing");
            let mut fast = vec![0u8; rows.len()];
            group_rows(ty, &rows, n_rows, &mut fast);
            assert_eq!(fast, groups, "{ty:?} n={n}: group_rows");
            let mut back = vec![0u8; rows.len()];
            ungroup_rows(ty, &groups, ty.row_bytes(n), &mut back);
            assert_eq!(back, rows, "{ty:?} n={n}: ungroup_rows");
            let rb = ty.row_bytes(n);
            for r in 0..n_rows {
                let g = &groups[r / 8 * 8 * rb..][..8 * rb];
                let mut row = vec![0u8; rb];
                grouped::ungroup_row(ty, g, r % 8, &mut row);
                assert_eq!(row, rows[r * rb..][..rb], "{ty:?} n={n}: ungroup_row {r}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn grouped_kernels_match_the_row_kernel_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for ty in ALL_QUANT.into_iter().filter(|t| has_grouped_kernel(*t)) {
        for blocks in [1, 3, 6] {
            let n = ty.block_size() * blocks;
            let n_rows = 3 * grouped::GROUP_ROWS;
            let rows: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_row(ty, n, &mut rng))
                .collect();
            let mut groups = vec![0u8; rows.len()];
            group_rows(ty, &rows, n_rows, &mut groups);
            // Up to 11 tokens: whole fours and a part, one with an outlier.
            let xs = random_acts(ActFormat::for_weight(ty), n, 11, (1, n / 3, 40.0), &mut rng);
            let refs: Vec<&QuantizedActs> = xs.iter().collect();
            let mut want = vec![0f32; xs.len() * n_rows];
            for (c, toks) in refs.chunks(MATVEC_MAX_TOKENS).enumerate() {
                let at = c * MATVEC_MAX_TOKENS * n_rows;
                matvec(
                    ty,
                    &rows,
                    n_rows,
                    toks,
                    &mut want[at..at + toks.len() * n_rows],
                );
            }
            for k in [1, 2, 3, 4, 5, 11] {
                let mut got = vec![0f32; k * n_rows];
                matvec_grouped(ty, &groups, n_rows, &refs[..k], &mut got);
                for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{ty:?} blocks {blocks}, {k} tokens, token {} row {}: grouped {g} vs rows {w}",
                        j / n_rows,
                        j % n_rows
                    );
                }
            }
        }
    }
}

#[test]
fn axpy_matches_the_plain_loop_at_every_width() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for n in [1, 7, 8, 9, 64, 127, 128] {
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let y0: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let w = rng.random_range(-1.0..1.0f32);
        let mut y = y0.clone();
        super::act::axpy_f32(&mut y, w, &x);
        for i in 0..n {
            // Fused or not, within one rounding of the product.
            let want = y0[i] + w * x[i];
            assert!(
                (y[i] - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1.0),
                "n {n} i {i}"
            );
        }
    }
}
