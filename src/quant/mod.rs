//! Tensor element types (ggml's block formats) and the one dispatch point for
//! turning their bytes into numbers.
//!
//! Every quantized type *decodes* a block into small integers plus a scale and
//! a min per 16 elements (`w = scale * q - min`); dequantization and the integer
//! dot product ([`act`]) are both built on that decoded form, so a new block
//! type needs only its decoder. SIMD decoders plug in per type in
//! `decode_row_avx2` beside the portable table in `decode_row`, and
//! [`act::dot_decoded`] picks its kernel at run time; both are tested against
//! the portable path.

pub mod act;
mod act_avx2;
mod fused_avx2;
pub mod gemm_avx2;
pub mod grouped;
mod grouped_avx2;
mod kquants;
mod kquants_avx2;
mod legacy;
mod legacy_avx2;
pub mod quantize;
mod rows_avx2;
mod values_avx2;

use half::{bf16, f16};

/// The block types tandem reads. Ids are ggml's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Elements per decoded scale group.
pub const GROUP: usize = 16;

impl GgmlType {
    /// ggml's numeric id of each type, as stored in GGUF files.
    const IDS: [(GgmlType, u32); 13] = [
        (GgmlType::F32, 0),
        (GgmlType::F16, 1),
        (GgmlType::Q4_0, 2),
        (GgmlType::Q4_1, 3),
        (GgmlType::Q5_0, 6),
        (GgmlType::Q5_1, 7),
        (GgmlType::Q8_0, 8),
        (GgmlType::Q2_K, 10),
        (GgmlType::Q3_K, 11),
        (GgmlType::Q4_K, 12),
        (GgmlType::Q5_K, 13),
        (GgmlType::Q6_K, 14),
        (GgmlType::BF16, 30),
    ];

    pub fn from_id(id: u32) -> Option<Self> {
        Self::IDS.iter().find(|(_, i)| *i == id).map(|(t, _)| *t)
    }

    pub fn id(self) -> u32 {
        Self::IDS
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, i)| *i)
            .expect("every type has an id")
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
        }
    }

    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// Whether decoded blocks carry a non-zero min (`w = scale·q − min`).
    pub fn has_min(self) -> bool {
        use GgmlType::*;
        matches!(self, Q4_1 | Q5_1 | Q2_K | Q4_K | Q5_K)
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// A row decoded into integers and per-16 scales/mins (reused scratch).
#[derive(Default, Clone)]
pub struct DecodedRow {
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub min: Vec<f32>,
    /// Whether the type has mins (symmetric types skip the min term).
    pub has_min: bool,
}

impl DecodedRow {
    pub fn decode(&mut self, ty: GgmlType, row: &[u8], n: usize) {
        self.q.resize(n, 0);
        self.scale.resize(n / GROUP, 0.0);
        self.min.resize(n / GROUP, 0.0);
        #[cfg(target_arch = "x86_64")]
        if act::has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time).
            unsafe { decode_row_avx2(ty, row, &mut self.q, &mut self.scale, &mut self.min) };
        } else {
            decode_row(ty, row, &mut self.q, &mut self.scale, &mut self.min);
        }
        #[cfg(not(target_arch = "x86_64"))]
        decode_row(ty, row, &mut self.q, &mut self.scale, &mut self.min);
        self.has_min = ty.has_min();
    }
}

/// Decode a row with one type dispatch; the per-block decoder is called
/// directly in the loop so it is inlined (and vectorised) into it.
macro_rules! decode_blocks {
    ($dec:path, $bs:expr, $bb:expr, $row:expr, $q:expr, $scale:expr, $min:expr) => {{
        let gpb = $bs / GROUP;
        let blocks = $row.chunks_exact($bb).zip($q.chunks_exact_mut($bs));
        let groups = $scale.chunks_exact_mut(gpb).zip($min.chunks_exact_mut(gpb));
        for ((b, qb), (sb, mb)) in blocks.zip(groups) {
            $dec(b, qb, sb, mb);
        }
    }};
}

#[inline(always)]
fn decode_row(ty: GgmlType, row: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    use GgmlType::*;
    match ty {
        Q4_0 => decode_blocks!(legacy::decode_q4_0, 32, 18, row, q, scale, min),
        Q4_1 => decode_blocks!(legacy::decode_q4_1, 32, 20, row, q, scale, min),
        Q5_0 => decode_blocks!(legacy::decode_q5_0, 32, 22, row, q, scale, min),
        Q5_1 => decode_blocks!(legacy::decode_q5_1, 32, 24, row, q, scale, min),
        Q8_0 => decode_blocks!(legacy::decode_q8_0, 32, 34, row, q, scale, min),
        Q2_K => decode_blocks!(kquants::decode_q2_k, 256, 84, row, q, scale, min),
        Q3_K => decode_blocks!(kquants::decode_q3_k, 256, 110, row, q, scale, min),
        Q4_K => decode_blocks!(kquants::decode_q4_k, 256, 144, row, q, scale, min),
        Q5_K => decode_blocks!(kquants::decode_q5_k, 256, 176, row, q, scale, min),
        Q6_K => decode_blocks!(kquants::decode_q6_k, 256, 210, row, q, scale, min),
        F32 | F16 | BF16 => unreachable!("float types have no decoded form"),
    }
}

/// The same with hand-written AVX2 decoders (the 32-element formats, Q4_K,
/// Q5_K, Q6_K) and the other decoders compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_row_avx2(
    ty: GgmlType,
    row: &[u8],
    q: &mut [i8],
    scale: &mut [f32],
    min: &mut [f32],
) {
    use GgmlType::*;
    match ty {
        Q4_0 => decode_blocks!(legacy_avx2::decode_q4_0, 32, 18, row, q, scale, min),
        Q4_1 => decode_blocks!(legacy_avx2::decode_q4_1, 32, 20, row, q, scale, min),
        Q5_0 => decode_blocks!(legacy_avx2::decode_q5_0, 32, 22, row, q, scale, min),
        Q5_1 => decode_blocks!(legacy_avx2::decode_q5_1, 32, 24, row, q, scale, min),
        Q8_0 => decode_blocks!(legacy_avx2::decode_q8_0, 32, 34, row, q, scale, min),
        Q4_K => decode_blocks!(kquants_avx2::decode_q4_k, 256, 144, row, q, scale, min),
        Q5_K => decode_blocks!(kquants_avx2::decode_q5_k, 256, 176, row, q, scale, min),
        Q6_K => decode_blocks!(kquants_avx2::decode_q6_k, 256, 210, row, q, scale, min),
        _ => decode_row(ty, row, q, scale, min),
    }
}

/// Whether this CPU has a fused kernel for `ty` ([`fused_matmul`]);
/// the other types go through [`DecodedRow`] and [`act::dot_decoded`].
pub fn has_fused_kernel(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    return act::has_avx2() && fused_avx2::supports(ty);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[t * n_rows + r] = row_r · xs[t]` for `n_rows` weight rows laid end to
/// end in `rows`: each weight block is unpacked in registers once for up to
/// four activation rows. Panics unless [`has_fused_kernel`].
pub fn fused_matmul(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    xs: &[&act::QuantizedActs],
    out: &mut [f32],
) {
    assert!(
        has_fused_kernel(ty),
        "no fused kernel for {ty:?} on this CPU"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU features and the type were checked above;
    // `matmul_rows` asserts the shapes itself.
    unsafe {
        fused_avx2::matmul_rows(ty, rows, n_rows, xs, out)
    }
}

/// Whether this CPU has a prompt GEMM kernel for `ty` ([`gemm`]).
pub fn has_gemm_kernel(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    return act::has_avx2() && gemm_avx2::supports(ty);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Activations interleaved for [`gemm`] (up to [`gemm_avx2::LANES`] tokens each).
#[cfg(target_arch = "x86_64")]
pub use gemm_avx2::{ActPanel, Unpacked as GemmScratch};

/// `out[t * n_rows + r] = row_r · token t`, tokens taken in order from the
/// panels: many tokens against a few weight rows at a time, for prompts.
/// Panics unless [`has_gemm_kernel`].
#[cfg(target_arch = "x86_64")]
pub fn gemm(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    panels: &[ActPanel],
    scratch: &mut GemmScratch,
    out: &mut [f32],
) {
    assert!(has_gemm_kernel(ty), "no GEMM kernel for {ty:?} on this CPU");
    // SAFETY: the CPU features and the type were checked above; `gemm`
    // asserts the shapes itself.
    unsafe { gemm_avx2::gemm(ty, rows, n_rows, panels, scratch, out) }
}

/// Whether this CPU has a kernel for rows of `ty` grouped eight at a time
/// ([`grouped`]), which beats [`matvec`] on the same rows.
pub fn has_grouped_kernel(ty: GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    return act::has_avx2() && grouped_avx2::supports(ty);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[t * n_rows + r] = row_r · xs[t]` for rows grouped by [`group_rows`]
/// (`n_rows` a multiple of [`grouped::GROUP_ROWS`]) and any number of
/// tokens: the bits [`matvec`] and [`gemm`] give.
#[cfg(target_arch = "x86_64")]
pub fn matvec_grouped(
    ty: GgmlType,
    groups: &[u8],
    n_rows: usize,
    xs: &[&act::QuantizedActs],
    out: &mut [f32],
) {
    assert!(
        has_grouped_kernel(ty),
        "no grouped kernel for {ty:?} on this CPU"
    );
    // SAFETY: the CPU features and the type were checked above; `matvec`
    // asserts the shapes itself.
    unsafe { grouped_avx2::matvec(ty, groups, n_rows, xs, out) }
}

/// `n_rows` rows of `ty` (a multiple of [`grouped::GROUP_ROWS`]), laid end
/// to end in `rows`, grouped eight at a time ([`grouped`]) into `out`.
pub fn group_rows(ty: GgmlType, rows: &[u8], n_rows: usize, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if act::has_avx2() {
        assert!(n_rows > 0 && rows.len().is_multiple_of(n_rows));
        // SAFETY: AVX2 checked; `regroup` asserts the lengths.
        return unsafe { grouped_avx2::regroup::<false>(ty, rows, rows.len() / n_rows, out) };
    }
    out.copy_from_slice(&grouped::group_rows_portable(ty, rows, n_rows));
}

/// Whole groups (rows of `row_bytes`) back in the file's layout, end to end
/// in `out`.
pub fn ungroup_rows(ty: GgmlType, groups: &[u8], row_bytes: usize, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if act::has_avx2() {
        // SAFETY: AVX2 checked; `regroup` asserts the lengths.
        return unsafe { grouped_avx2::regroup::<true>(ty, groups, row_bytes, out) };
    }
    let group_bytes = grouped::GROUP_ROWS * row_bytes;
    assert!(groups.len() == out.len() && groups.len().is_multiple_of(group_bytes));
    for (g, o) in groups
        .chunks_exact(group_bytes)
        .zip(out.chunks_exact_mut(group_bytes))
    {
        for (r, row) in o.chunks_exact_mut(row_bytes).enumerate() {
            grouped::ungroup_row(ty, g, r, row);
        }
    }
}

/// Most tokens one [`matvec`] call takes.
#[cfg(target_arch = "x86_64")]
pub const MATVEC_MAX_TOKENS: usize = rows_avx2::MAX_TOKENS;

/// Most tokens for which [`matvec`] beats [`gemm`] on rows of `ty` with
/// `cols` values.
#[cfg(target_arch = "x86_64")]
pub fn matvec_beats_gemm_up_to(ty: GgmlType, cols: usize) -> usize {
    rows_avx2::tokens_before_gemm(ty, cols)
}

/// `out[t * n_rows + r] = row_r · xs[t]` for up to [`MATVEC_MAX_TOKENS`]
/// tokens, with the GEMM's arithmetic (bit-identical to what [`gemm`] gives
/// the same token), for the types [`has_gemm_kernel`] covers.
#[cfg(target_arch = "x86_64")]
pub fn matvec(
    ty: GgmlType,
    rows: &[u8],
    n_rows: usize,
    xs: &[&act::QuantizedActs],
    out: &mut [f32],
) {
    assert!(
        has_gemm_kernel(ty),
        "no GEMM-exact row kernel for {ty:?} on this CPU"
    );
    // SAFETY: the CPU features and the type were checked above; `matvec`
    // asserts the shapes itself.
    unsafe { rows_avx2::matvec(ty, rows, n_rows, xs, out) }
}

/// Portable decoding, for tests of the SIMD paths.
pub fn decode_row_portable(ty: GgmlType, row: &[u8], n: usize) -> DecodedRow {
    let mut d = DecodedRow {
        q: vec![0; n],
        scale: vec![0.0; n / GROUP],
        min: vec![0.0; n / GROUP],
        ..Default::default()
    };
    decode_row(ty, row, &mut d.q, &mut d.scale, &mut d.min);
    d
}

/// Dequantize one row of `out.len()` elements.
pub fn dequantize_row(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            let mut d = DecodedRow::default();
            d.decode(ty, row, out.len());
            for (g, chunk) in out.chunks_mut(GROUP).enumerate() {
                let (s, m) = (d.scale[g], d.min[g]);
                for (o, &q) in chunk.iter_mut().zip(&d.q[g * GROUP..]) {
                    *o = s * q as f32 - m;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
