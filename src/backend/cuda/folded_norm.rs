//! Norms folded into the residual products (decode products: up to
//! `MAX_DECODE_ROWS` rows, hidden widths of at least `fold_min_width`): the
//! product that adds into the residual stream also writes the next norm's
//! output as int8 blocks of x ⊙ g with Σx² per 32-value group
//! (kernels/matvec.cu, `mvr_body`), and the products that read it scale by
//! 1/rms themselves (`NormIn`). Floats are computed only if a float reader
//! comes (`float_input`). Kernel notes #86–87.
//!
//! Every row count folds, with the same bits per row: a speculative pass
//! over k + 1 rows must compute what k + 1 one-row steps would, or greedy
//! speculation leaves plain decoding's tokens (kernel notes #118).

use super::gpu::{DevBuf, KArgs};
use super::weights::DevType;
use super::{CudaAct, CudaBackend, CudaVector, CudaWeight};
use crate::backend::Backend;

/// A norm folded into the product that wrote its input.
pub(super) struct FoldedNorm {
    /// Σx² per 32-value group, `groups` per row.
    parts: DevBuf,
    groups: usize,
    eps: f32,
    /// The residual stream it normalises and the norm's weight: the float
    /// values are computed from them if a float reader comes.
    src: u64,
    weight: u64,
}

impl FoldedNorm {
    /// struct NormIn { const float* parts; int n; float eps; }
    fn words(&self) -> [u64; 2] {
        [
            self.parts.ptr,
            self.groups as u64 | (self.eps.to_bits() as u64) << 32,
        ]
    }
}

impl CudaBackend {
    /// Whether `linear_add_norm` folds the norm into the product: rows the
    /// decode products take, a quantized weight, a plain input, shapes that
    /// agree, and a width the 32-row groups fill the GPU with
    /// (`fold_min_width`).
    pub(super) fn folds_norm(
        &self,
        x: &CudaAct,
        w: &CudaWeight,
        acc: &CudaAct,
        g: &CudaVector,
    ) -> bool {
        let n = acc.cols;
        self.fold_norms
            && (1..=super::MAX_DECODE_ROWS).contains(&x.rows)
            && w.ty.wants_q8_input()
            && x.norm.is_none()
            && (x.rows, x.cols, n) == (acc.rows, w.cols, w.rows)
            && g.len == n
            && n >= self.fold_min_width
            && n.is_multiple_of(32)
    }

    /// acc += x·Wᵀ, then out = rms_norm(acc) folded: out holds the int8
    /// blocks of acc ⊙ g and the sums of squares per 32-value group, not
    /// floats. One row: in the product's epilogue (`mvr_<ty>_t1`). More:
    /// the plain product, then `fold_norm_rows` computing the same per row
    /// (a T-row `mvr` ran 32 warps of T accumulators in blocks of 1,024
    /// threads: a 5-row pass 15% slower, kernel notes #118–119). The caller
    /// (`linear_add_norm`) has checked that the fold applies (`folds_norm`).
    pub(super) fn residual_product_with_norm(
        &self,
        x: &CudaAct,
        w: &CudaWeight,
        acc: &mut CudaAct,
        g: &CudaVector,
        eps: f32,
        out: &mut CudaAct,
    ) {
        let n = acc.cols;
        self.gpu.bind();
        self.out(out, acc.rows, n);
        let groups = n / 32;
        let (oq, od) = (
            self.gpu.alloc(acc.len()),
            self.gpu.alloc(acc.len() / 32 * 8),
        );
        let parts = self.gpu.alloc(acc.rows * groups * 4);
        if x.rows > 1 {
            self.linear_add(x, w, acc);
            self.gpu.launch(
                "fold_norm_rows",
                (groups as u32, acc.rows as u32, 1),
                32,
                &KArgs::new()
                    .ptr(acc.ptr())
                    .ptr(g.buf.ptr)
                    .i32(n)
                    .ptr(oq.ptr)
                    .ptr(od.ptr)
                    .ptr(parts.ptr),
            );
        } else {
            acc.q8 = None;
            let mut keep = Vec::new();
            let (xq, xd) = self.q8_input(x, true, &mut keep);
            self.gpu.launch(
                &format!("mvr_{}_t1", w.ty.stem()),
                (groups as u32, 1, 1),
                1024,
                &KArgs::new()
                    .ptr(w.buf.ptr)
                    .ptr(acc.ptr())
                    .i32(n)
                    .i32(x.cols)
                    .ptr(xq)
                    .ptr(xd)
                    .ptr(x.ptr())
                    .ptr(g.buf.ptr)
                    .ptr(oq.ptr)
                    .ptr(od.ptr)
                    .ptr(parts.ptr),
            );
        }
        out.norm = Some(FoldedNorm {
            parts,
            groups,
            eps,
            src: acc.ptr(),
            weight: g.buf.ptr,
        });
        out.q8 = Some((oq, od));
    }

    /// x's float values for a kernel that reads them (`needed`), computed
    /// now if x is a folded norm's output; else its buffer (unread).
    pub(super) fn float_input(&self, x: &CudaAct, needed: bool) -> u64 {
        let buf = x.buf.as_ref().expect("activation has no device memory").ptr;
        if let (Some(n), true) = (&x.norm, needed) {
            self.rms_norm_rows(n.src, n.weight, buf, x.rows, x.cols, n.eps);
        }
        buf
    }

    /// The NormIn argument of a product of format `ty` reading x, when x is
    /// a folded norm's output: the product is then the `mvn`/`mvgn` kernel.
    pub(super) fn norm_words(x: &CudaAct, ty: DevType) -> Option<[u64; 2]> {
        match &x.norm {
            Some(n) if ty.wants_q8_input() => Some(n.words()),
            _ => None,
        }
    }
}
