//! Prompt GEMM for AVX2: many tokens against a few weight rows at a time.
//!
//! The row kernels in `fused_avx2` lay one weight row's values across a
//! vector and load every token's activations once per row, so a prompt reads
//! its activations from L2 once per weight row and spends two multiplies per
//! 32 products. Here the layout is turned around: activations of eight tokens
//! are interleaved four values at a time ([`ActPanel`]: one 32-byte load is
//! "tokens 0–7 × k..k+4"), and four weight bytes of one row are broadcast
//! across it. Every 16-bit lane of a `maddubs` then belongs to one (row,
//! token) pair, so products of several steps add up in 16 bits before one
//! `madd` applies the sub-block scale and widens (up to eight steps for 4-bit
//! values: 8·2·15·127 < 2¹⁵). Each weight row is unpacked once into bytes for
//! all the panels of a prompt; four rows share each activation load.
//!
//! Every token's result comes from the same lane-wise instructions whatever
//! the other lanes hold, so it does not depend on how tokens are batched;
//! and `rows_avx2` computes a single token with the same arithmetic (one
//! exact integer sum per block, then the same float steps), so the backend
//! picks between the two by batch size alone without changing a logit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::act::{ActFormat, QuantizedActs};
use super::fused_avx2::{f16_pair, k4_scales};
use super::values_avx2::{q6_k_values, Legacy, K4, Q40, Q41, Q4K, Q50, Q51, Q5K};
use super::{f16_at, GgmlType};

/// Tokens per panel (lanes of a 256-bit vector of i32).
pub const LANES: usize = 8;
/// Weight rows per kernel call.
const ROWS: usize = 4;

/// Whether `ty` has a GEMM kernel. Q8_0 has none: its signed bytes cannot be
/// summed in 16 bits after `maddubs`, and in the models we run it holds only
/// embeddings, read once per generated token.
pub fn supports(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4_K | Q5_K | Q6_K)
}

/// Up to [`LANES`] tokens' quantized activations, interleaved.
#[derive(Default)]
pub struct ActPanel {
    /// `[k / 4][lane][4]`.
    q: Vec<i8>,
    /// Sums of each pair of 16-groups: `[k / 32][lane][2]`.
    sums: Vec<i16>,
    /// Sums of each pair of 32-groups: `[k / 64][lane][2]` (Q4_K/Q5_K mins,
    /// one `madd` per two sub-blocks).
    sums64: Vec<i16>,
    /// Activation scale per float block of the weight format: `[block][lane]`.
    d: Vec<f32>,
    /// Q8_1's `f16(d·Σq)` per 32-block (Q4_1/Q5_1 mins): `[k / 32][lane]`.
    dsum: Vec<f32>,
    /// Tokens present (the other lanes hold zeros).
    pub live: usize,
}

impl ActPanel {
    /// Interleave `xs` (at most [`LANES`], quantized in `format`).
    pub fn new(xs: &[&QuantizedActs], format: ActFormat) -> Self {
        assert!(!xs.is_empty() && xs.len() <= LANES);
        let n = xs[0].q.len();
        assert!(xs.iter().all(|x| x.q.len() == n) && n.is_multiple_of(256.min(format.block())));
        let block = format.block();
        let mut p = ActPanel {
            q: vec![0; n * LANES],
            sums: vec![0; n / 32 * LANES * 2],
            sums64: vec![0; n / 64 * LANES * 2],
            d: vec![0.0; n / block * LANES],
            dsum: vec![0.0; n / 32 * LANES],
            live: xs.len(),
        };
        for (t, x) in xs.iter().enumerate() {
            for (kq, four) in x.q.chunks_exact(4).enumerate() {
                p.q[(kq * LANES + t) * 4..][..4].copy_from_slice(four);
            }
            for b in 0..n / 32 {
                p.sums[(b * LANES + t) * 2] = x.sum[2 * b];
                p.sums[(b * LANES + t) * 2 + 1] = x.sum[2 * b + 1];
                p.dsum[b * LANES + t] = x.dsum[2 * b];
            }
            for b in 0..n / 64 {
                for h in 0..2 {
                    let g = 4 * b + 2 * h;
                    p.sums64[(b * LANES + t) * 2 + h] = x.sum[g] + x.sum[g + 1];
                }
            }
            for b in 0..n / block {
                p.d[b * LANES + t] = x.d[b * block / 16];
            }
        }
        p
    }

    fn cols(&self) -> usize {
        self.q.len() / LANES
    }
}

/// How a format's offset or min enters a float block's result.
#[derive(PartialEq, Eq)]
enum Correction {
    /// An integer multiple of the activations' group sums is subtracted
    /// before the block scale (Q4_0's −8, Q5_0's −16, Q6_K's −32).
    Subtract,
    /// A second integer sum (mins times group sums) scaled by −dmin (Q4_K, Q5_K).
    IntMin,
    /// A float min times Q8_1's block sum (Q4_1, Q5_1).
    FloatMin,
}

/// A block format as the GEMM sees it: unsigned byte values, an i16 scale
/// per `SUB` values, an i16 pair per 32 values for the correction, and two
/// floats per block.
trait Format {
    /// Values per block (one float step).
    const BLOCK: usize;
    const BYTES: usize;
    /// Values per integer scale.
    const SUB: usize;
    /// Steps of four values summed in 16 bits before a `madd`.
    const DEPTH: usize;
    const CORRECTION: Correction;
    /// Values each correction pair covers: 32 (two 16-groups) or 64 (two
    /// 32-groups).
    const CORR_SPAN: usize = 32;
    /// Write the block's values to `vals[..BLOCK]`, its scales (each i16
    /// duplicated into an i32, ready to broadcast) to `scales[..BLOCK/SUB]`,
    /// its correction pairs to `corr[..BLOCK/32]`, and return (d, second).
    unsafe fn unpack(b: *const u8, vals: *mut u8, scales: *mut i32, corr: *mut i32) -> (f32, f32);
}

#[inline(always)]
fn pair(lo: i32, hi: i32) -> i32 {
    (lo & 0xffff) | (hi << 16)
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m256i) {
    _mm256_storeu_si256(p as *mut __m256i, v)
}

/// The 32-element formats: their values, and the offset or min each has.
/// Depth from the largest value: 4 bits, 8 steps; 5 bits, 4.
macro_rules! legacy_format {
    ($t:ty, $depth:expr) => {
        impl Format for $t {
            const BLOCK: usize = 32;
            const BYTES: usize = <$t as Legacy>::BYTES;
            const SUB: usize = 32;
            const DEPTH: usize = $depth;
            const CORRECTION: Correction = if <$t as Legacy>::OFFSET != 0 {
                Correction::Subtract
            } else {
                Correction::FloatMin
            };
            #[inline(always)]
            unsafe fn unpack(
                b: *const u8,
                vals: *mut u8,
                scales: *mut i32,
                corr: *mut i32,
            ) -> (f32, f32) {
                store(vals, <$t as Legacy>::values(b));
                *scales = pair(1, 1);
                let offset = <$t as Legacy>::OFFSET;
                *corr = pair(offset, offset);
                if Self::CORRECTION == Correction::FloatMin {
                    f16_pair(b)
                } else {
                    (f16_at(std::slice::from_raw_parts(b, 2), 0), 0.0)
                }
            }
        }
    };
}

legacy_format!(Q40, 8);
legacy_format!(Q41, 8);
legacy_format!(Q50, 4);
legacy_format!(Q51, 4);

/// Q4_K/Q5_K's eight 6-bit scales and mins, as broadcastable pairs.
#[inline(always)]
unsafe fn k4_scales_mins(b: *const u8, scales: *mut i32, corr: *mut i32) {
    let mut sm = [0u8; 16];
    _mm_storeu_si128(sm.as_mut_ptr() as *mut __m128i, k4_scales(b.add(4)));
    for (j, &sc) in sm[..8].iter().enumerate() {
        *scales.add(j) = pair(sc as i32, sc as i32);
    }
    for p in 0..4 {
        *corr.add(p) = pair(sm[8 + 2 * p] as i32, sm[9 + 2 * p] as i32);
    }
}

/// Q4_K and Q5_K: eight sub-blocks of 32 with 6-bit scales and mins.
/// Depth from the largest value: 4 bits, 8 steps; 5 bits, 4.
macro_rules! k4_format {
    ($t:ty, $depth:expr) => {
        impl Format for $t {
            const BLOCK: usize = 256;
            const BYTES: usize = <$t as K4>::BYTES;
            const SUB: usize = 32;
            const DEPTH: usize = $depth;
            const CORRECTION: Correction = Correction::IntMin;
            const CORR_SPAN: usize = 64;
            #[inline(always)]
            unsafe fn unpack(
                b: *const u8,
                vals: *mut u8,
                scales: *mut i32,
                corr: *mut i32,
            ) -> (f32, f32) {
                for c in 0..4 {
                    let (lo, hi) = <$t as K4>::values(b, c);
                    store(vals.add(64 * c), lo);
                    store(vals.add(64 * c + 32), hi);
                }
                k4_scales_mins(b, scales, corr);
                f16_pair(b)
            }
        }
    };
}

k4_format!(Q4K, 8);
k4_format!(Q5K, 4);

/// Q6_K: sixteen sub-blocks of 16 with signed 8-bit scales, values offset
/// by 32.
struct Q6K;

impl Format for Q6K {
    const BLOCK: usize = 256;
    const BYTES: usize = 210;
    const SUB: usize = 16;
    const DEPTH: usize = 2;
    const CORRECTION: Correction = Correction::Subtract;
    #[inline(always)]
    unsafe fn unpack(b: *const u8, vals: *mut u8, scales: *mut i32, corr: *mut i32) -> (f32, f32) {
        for half in 0..2 {
            for (j, v) in q6_k_values(b, half).into_iter().enumerate() {
                store(vals.add(128 * half + 32 * j), v);
            }
        }
        let sc = b.add(192) as *const i8;
        for g in 0..16 {
            let s = *sc.add(g) as i32;
            *scales.add(g) = pair(s, s);
        }
        for p in 0..8 {
            *corr.add(p) = pair(32 * *sc.add(2 * p) as i32, 32 * *sc.add(2 * p + 1) as i32);
        }
        (f16_at(std::slice::from_raw_parts(b.add(208), 2), 0), 0.0)
    }
}

/// Weight rows unpacked for the kernel (per-thread scratch, reused).
#[derive(Default)]
pub struct Unpacked {
    vals: Vec<u8>,
    scales: Vec<i32>,
    corr: Vec<i32>,
    /// (d, second) per block.
    fl: Vec<(f32, f32)>,
}

/// `out[t * n_rows + r] = row_r · token t` for the `n_rows` weight rows laid
/// end to end in `rows`, tokens taken in order from `panels`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `supports(ty)`; the panels were built in
/// `ActFormat::for_weight(ty)` from rows as long as a weight row.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    panels: &[ActPanel],
    scratch: &mut Unpacked,
    out: &mut [f32],
) {
    use GgmlType::*;
    match ty {
        Q4_0 => run::<Q40>(rows, n_rows, panels, scratch, out),
        Q4_1 => run::<Q41>(rows, n_rows, panels, scratch, out),
        Q5_0 => run::<Q50>(rows, n_rows, panels, scratch, out),
        Q5_1 => run::<Q51>(rows, n_rows, panels, scratch, out),
        Q4_K => run::<Q4K>(rows, n_rows, panels, scratch, out),
        Q5_K => run::<Q5K>(rows, n_rows, panels, scratch, out),
        Q6_K => run::<Q6K>(rows, n_rows, panels, scratch, out),
        _ => panic!("no GEMM kernel for {ty:?}"),
    }
}

#[inline(always)]
unsafe fn run<F: Format>(
    rows: &[u8],
    n_rows: usize,
    panels: &[ActPanel],
    s: &mut Unpacked,
    out: &mut [f32],
) {
    assert!(n_rows > 0 && rows.len().is_multiple_of(n_rows));
    let row_bytes = rows.len() / n_rows;
    assert!(row_bytes.is_multiple_of(F::BYTES), "partial block");
    let blocks = row_bytes / F::BYTES;
    let n = blocks * F::BLOCK;
    let n_tok: usize = panels.iter().map(|p| p.live).sum();
    assert_eq!(out.len(), n_tok * n_rows);
    assert!(panels
        .iter()
        .all(|p| p.cols() == n && p.d.len() == blocks * LANES));
    s.vals.resize(ROWS * n, 0);
    s.scales.resize(ROWS * n / F::SUB, 0);
    s.corr.resize(ROWS * n / 32, 0);
    s.fl.resize(ROWS * blocks, (0.0, 0.0));
    for r0 in (0..n_rows).step_by(ROWS) {
        let live_rows = (n_rows - r0).min(ROWS);
        for r in 0..ROWS {
            if r >= live_rows {
                // Padding rows: zero values and scales give zero results.
                s.vals[r * n..(r + 1) * n].fill(0);
                s.scales[r * n / F::SUB..(r + 1) * n / F::SUB].fill(0);
                s.corr[r * n / 32..(r + 1) * n / 32].fill(0);
                s.fl[r * blocks..(r + 1) * blocks].fill((0.0, 0.0));
                continue;
            }
            let row = rows.as_ptr().add((r0 + r) * row_bytes);
            for i in 0..blocks {
                s.fl[r * blocks + i] = F::unpack(
                    row.add(i * F::BYTES),
                    s.vals.as_mut_ptr().add(r * n + i * F::BLOCK),
                    s.scales.as_mut_ptr().add((r * n + i * F::BLOCK) / F::SUB),
                    s.corr
                        .as_mut_ptr()
                        .add((r * n + i * F::BLOCK) / F::CORR_SPAN),
                );
            }
        }
        let mut t0 = 0;
        for p in panels {
            let res = tile::<F>(s, n, blocks, p);
            for (r, lanes) in res.iter().enumerate().take(live_rows) {
                for (t, v) in lanes.iter().enumerate().take(p.live) {
                    out[(t0 + t) * n_rows + r0 + r] = *v;
                }
            }
            t0 += p.live;
        }
    }
}

/// [`ROWS`] unpacked rows times one panel.
#[inline(always)]
unsafe fn tile<F: Format>(
    s: &Unpacked,
    n: usize,
    blocks: usize,
    p: &ActPanel,
) -> [[f32; LANES]; ROWS] {
    let vals: [*const u8; ROWS] = std::array::from_fn(|r| s.vals.as_ptr().add(r * n));
    let scales: [*const i32; ROWS] = std::array::from_fn(|r| s.scales.as_ptr().add(r * n / F::SUB));
    let corr: [*const i32; ROWS] =
        std::array::from_fn(|r| s.corr.as_ptr().add(r * n / F::CORR_SPAN));
    let bcast = |q: *const i32| _mm256_set1_epi32(q.read_unaligned());
    let quads = F::BLOCK / 4;
    let mut acc = [_mm256_setzero_ps(); ROWS];
    for i in 0..blocks {
        let mut x32 = [_mm256_setzero_si256(); ROWS];
        for g in 0..quads / F::DEPTH {
            let mut x16 = [_mm256_setzero_si256(); ROWS];
            for q in 0..F::DEPTH {
                let kq = i * quads + g * F::DEPTH + q;
                let a = _mm256_loadu_si256(p.q.as_ptr().add(32 * kq) as *const __m256i);
                for r in 0..ROWS {
                    let w = bcast(vals[r].add(4 * kq) as *const i32);
                    x16[r] = _mm256_add_epi16(x16[r], _mm256_maddubs_epi16(w, a));
                }
            }
            let sub = (i * F::BLOCK + 4 * g * F::DEPTH) / F::SUB;
            for r in 0..ROWS {
                x32[r] =
                    _mm256_add_epi32(x32[r], _mm256_madd_epi16(x16[r], bcast(scales[r].add(sub))));
            }
        }
        let dx = _mm256_loadu_ps(p.d.as_ptr().add(LANES * i));
        let pairs = F::BLOCK / F::CORR_SPAN;
        let group_sums = if F::CORR_SPAN == 64 {
            &p.sums64
        } else {
            &p.sums
        };
        for r in 0..ROWS {
            let (d, second) = s.fl[r * blocks + i];
            let mut c = _mm256_setzero_si256();
            if F::CORRECTION != Correction::FloatMin {
                for j in 0..pairs {
                    let sums = _mm256_loadu_si256(
                        group_sums.as_ptr().add(2 * LANES * (i * pairs + j)) as *const __m256i,
                    );
                    c = _mm256_add_epi32(
                        c,
                        _mm256_madd_epi16(sums, bcast(corr[r].add(i * pairs + j))),
                    );
                }
            }
            let scale = _mm256_mul_ps(_mm256_set1_ps(d), dx);
            match F::CORRECTION {
                Correction::Subtract => {
                    let x = _mm256_cvtepi32_ps(_mm256_sub_epi32(x32[r], c));
                    acc[r] = _mm256_fmadd_ps(scale, x, acc[r]);
                }
                Correction::IntMin => {
                    acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(x32[r]), acc[r]);
                    let min_scale = _mm256_mul_ps(_mm256_set1_ps(-second), dx);
                    acc[r] = _mm256_fmadd_ps(min_scale, _mm256_cvtepi32_ps(c), acc[r]);
                }
                Correction::FloatMin => {
                    acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(x32[r]), acc[r]);
                    let dsum = _mm256_loadu_ps(p.dsum.as_ptr().add(LANES * i));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(second), dsum, acc[r]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        let mut lanes = [0f32; LANES];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]);
        lanes
    })
}
