//! Tensor element types (ggml's block formats) and the one dispatch point for
//! turning their bytes into numbers.
//!
//! Every quantized type *decodes* a block into small integers plus a scale and
//! a min per 16 elements (`w = scale * q - min`); dequantization and the integer
//! dot product ([`act`]) are both built on that decoded form, so a new block
//! type needs only its decoder. Fast SIMD kernels (a later issue) plug in per
//! type behind [`decode_block`]/[`act::dot_decoded`] and are tested against this
//! portable path.

pub mod act;
mod kquants;
mod legacy;

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
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            30 => BF16,
            _ => return None,
        })
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

    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// Average bits per weight (block bytes over block elements).
    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_size() as f64
    }
}

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decode one block of a quantized type into `q` (block_size values),
/// `scale` and `min` (block_size / 16 values each); `w[i] = scale[i/16] * q[i] - min[i/16]`.
pub fn decode_block(ty: GgmlType, block: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    use GgmlType::*;
    match ty {
        Q4_0 => legacy::decode_q4_0(block, q, scale, min),
        Q4_1 => legacy::decode_q4_1(block, q, scale, min),
        Q5_0 => legacy::decode_q5_0(block, q, scale, min),
        Q5_1 => legacy::decode_q5_1(block, q, scale, min),
        Q8_0 => legacy::decode_q8_0(block, q, scale, min),
        Q2_K => kquants::decode_q2_k(block, q, scale, min),
        Q3_K => kquants::decode_q3_k(block, q, scale, min),
        Q4_K => kquants::decode_q4_k(block, q, scale, min),
        Q5_K => kquants::decode_q5_k(block, q, scale, min),
        Q6_K => kquants::decode_q6_k(block, q, scale, min),
        F32 | F16 | BF16 => unreachable!("float types have no decoded form"),
    }
}

/// A row decoded into integers and per-16 scales/mins (reused scratch).
#[derive(Default, Clone)]
pub struct DecodedRow {
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub min: Vec<f32>,
    /// `scale` laid out for 8-lane vectors: per 32 elements, the first
    /// group's scale four times, then the second's.
    pub scale_lanes: Vec<f32>,
    /// Whether any min is non-zero (symmetric types skip the min term).
    pub has_min: bool,
}

impl DecodedRow {
    pub fn decode(&mut self, ty: GgmlType, row: &[u8], n: usize) {
        self.q.resize(n, 0);
        self.scale.resize(n / GROUP, 0.0);
        self.min.resize(n / GROUP, 0.0);
        let (bs, bb) = (ty.block_size(), ty.block_bytes());
        let gpb = bs / GROUP;
        for b in 0..n / bs {
            decode_block(
                ty,
                &row[b * bb..(b + 1) * bb],
                &mut self.q[b * bs..(b + 1) * bs],
                &mut self.scale[b * gpb..(b + 1) * gpb],
                &mut self.min[b * gpb..(b + 1) * gpb],
            );
        }
        self.scale_lanes.clear();
        for pair in self.scale.chunks_exact(2) {
            self.scale_lanes.extend_from_slice(&[pair[0]; 4]);
            self.scale_lanes.extend_from_slice(&[pair[1]; 4]);
        }
        self.has_min = self.min.iter().any(|&m| m != 0.0);
    }
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
