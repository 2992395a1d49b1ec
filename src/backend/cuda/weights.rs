//! Weights on the device: each file block format repacked into the layout
//! its kernel reads (the same bytes, split into planes so every load is 16
//! bytes and aligned; see kernels/matvec.cu). Types without a kernel of
//! their own are widened to f16 at load, which costs memory, not correctness.

use rayon::prelude::*;

use crate::quant::{dequantize_row, GgmlType};

/// The layouts the device kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Q4K,
    Q6K,
    Q5_0,
    Q8_0,
    Q4_0,
    Q4_1,
    F16,
}

impl DevType {
    pub const ALL: [DevType; 7] = [
        DevType::Q4K,
        DevType::Q6K,
        DevType::Q5_0,
        DevType::Q8_0,
        DevType::Q4_0,
        DevType::Q4_1,
        DevType::F16,
    ];

    /// Kernel name stem (`mv_<stem>_tN`, `dequant_<stem>`, `embed_<stem>`).
    pub fn stem(self) -> &'static str {
        match self {
            DevType::Q4K => "q4_k",
            DevType::Q6K => "q6_k",
            DevType::Q5_0 => "q5_0",
            DevType::Q8_0 => "q8_0",
            DevType::Q4_0 => "q4_0",
            DevType::Q4_1 => "q4_1",
            DevType::F16 => "f16",
        }
    }

    /// Whether the decode kernel reads the int8-quantized input.
    pub fn wants_q8_input(self) -> bool {
        self != DevType::F16
    }
}

/// Split every `block`-byte block into planes: `fields` lists (offset, len)
/// of each field within a block, in plane order.
fn planes(bytes: &[u8], block: usize, fields: &[(usize, usize)]) -> Vec<u8> {
    let n = bytes.len() / block;
    let mut out = vec![0u8; bytes.len()];
    let mut plane_start = 0;
    for &(off, len) in fields {
        let plane = &mut out[plane_start..plane_start + n * len];
        plane
            .par_chunks_mut(len * 4096)
            .enumerate()
            .for_each(|(c, dst)| {
                for (i, d) in dst.chunks_mut(len).enumerate() {
                    let b = c * 4096 + i;
                    d.copy_from_slice(&bytes[b * block + off..b * block + off + len]);
                }
            });
        plane_start += n * len;
    }
    out
}

/// The device layout and bytes of a [rows, cols] tensor stored as `ty`.
pub fn repack(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> (DevType, Vec<u8>) {
    match ty {
        GgmlType::Q4_K => (DevType::Q4K, planes(bytes, 144, &[(16, 128), (0, 16)])),
        GgmlType::Q6_K => (
            DevType::Q6K,
            planes(bytes, 210, &[(0, 128), (128, 64), (192, 16), (208, 2)]),
        ),
        GgmlType::Q5_0 => (DevType::Q5_0, planes(bytes, 22, &[(6, 16), (2, 4), (0, 2)])),
        GgmlType::Q8_0 => (DevType::Q8_0, planes(bytes, 34, &[(2, 32), (0, 2)])),
        GgmlType::Q4_0 => (DevType::Q4_0, planes(bytes, 18, &[(2, 16), (0, 2)])),
        GgmlType::Q4_1 => (DevType::Q4_1, planes(bytes, 20, &[(4, 16), (0, 2), (2, 2)])),
        GgmlType::F16 => (DevType::F16, bytes.to_vec()),
        other => {
            let row_bytes = other.row_bytes(cols);
            let mut out = vec![0u8; rows * cols * 2];
            out.par_chunks_mut(cols * 2)
                .zip(bytes.par_chunks(row_bytes))
                .for_each(|(dst, src)| {
                    let mut f = vec![0f32; cols];
                    dequantize_row(other, src, &mut f);
                    for (d, v) in dst.chunks_mut(2).zip(&f) {
                        d.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                    }
                });
            (DevType::F16, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_gather_each_field_of_every_block() {
        // Two 4-byte blocks [a0 a1 b0 c0]: planes a | b | c.
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        let p = planes(&bytes, 4, &[(0, 2), (2, 1), (3, 1)]);
        assert_eq!(p, vec![1, 2, 5, 6, 3, 7, 4, 8]);
    }

    #[test]
    fn q4_k_goes_to_quant_and_head_planes() {
        // Two 144-byte blocks [head 16 | qs 128] → qs0 qs1 | head0 head1, so
        // four lanes of a block read 64 contiguous quant bytes (matvec.cu).
        let bytes: Vec<u8> = (0..288).map(|i| (i % 251) as u8).collect();
        let (ty, out) = repack(GgmlType::Q4_K, 1, 512, &bytes);
        assert_eq!(ty, DevType::Q4K);
        assert_eq!(out.len(), bytes.len());
        assert_eq!(&out[..128], &bytes[16..144]);
        assert_eq!(&out[128..256], &bytes[160..288]);
        assert_eq!(&out[256..272], &bytes[..16]);
        assert_eq!(&out[272..], &bytes[144..160]);
    }

    #[test]
    fn types_without_a_kernel_widen_to_f16() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
        let mut bytes = Vec::new();
        for v in &x {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let (ty, out) = repack(GgmlType::F32, 2, 32, &bytes);
        assert_eq!(ty, DevType::F16);
        let back: Vec<f32> = out
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(back, x);
    }
}
