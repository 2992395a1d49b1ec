//! Attention for decoding rows (and any batch the prompt path does not
//! take): the split kernel over the paged f16 cache (kernels/attention.cu),
//! one block per (head, row, split of the keys), the splits merged by the
//! last of them to finish, or by attn_merge.

use super::gpu::KArgs;
use super::step::AttnMeta;
use super::{CudaAct, CudaBackend, CudaKv, MAX_DECODE_ROWS, MAX_HEADS};
use crate::backend::AttnParams;

impl CudaBackend {
    /// out = attention of q's rows over layer `layer` of the cache, laid out
    /// by `meta` (in its `n_splits` splits of the keys); `out` is already
    /// shaped.
    pub(super) fn split_attention(
        &self,
        q: &CudaAct,
        kv: &CudaKv,
        layer: usize,
        p: &AttnParams,
        meta: &AttnMeta,
        out: &mut CudaAct,
    ) {
        let n_splits = meta.n_splits;
        let part = self
            .gpu
            .alloc(q.rows * p.n_heads * n_splits * (p.head_dim + 2) * 4);
        // Decode: the last split of each (row, head) merges in the same launch
        // and also writes the int8 form the output projection reads.
        let fused = q.rows <= MAX_DECODE_ROWS && p.n_heads <= MAX_HEADS && self.fused_attention;
        let q8 = fused && p.head_dim.is_multiple_of(32);
        let (xq, xd) = if q8 {
            (
                Some(self.gpu.alloc(out.len())),
                Some(self.gpu.alloc(out.len() / 32 * 8)),
            )
        } else {
            (None, None)
        };
        let (xq_p, xd_p) = (
            xq.as_ref().map_or(0, |b| b.ptr),
            xd.as_ref().map_or(0, |b| b.ptr),
        );
        self.gpu.launch(
            "attn_split",
            (p.n_heads as u32, q.rows as u32, n_splits as u32),
            128,
            &KArgs::new()
                .ptr(q.ptr())
                .ptr(kv.k[layer].ptr)
                .ptr(kv.v[layer].ptr)
                .ptr(part.ptr)
                .ptr(meta.row_slots)
                .ptr(meta.positions)
                .ptr(meta.slots)
                .i32(p.n_heads)
                .i32(p.n_kv_heads)
                .i32(p.head_dim)
                .i32(kv.kv_dim)
                .f32(p.scale)
                .i32(p.window.unwrap_or(0))
                .i32(n_splits)
                .ptr(if fused { self.counters.ptr } else { 0 })
                .ptr(out.ptr())
                .ptr(xq_p)
                .ptr(xd_p),
        );
        if !fused {
            self.gpu.launch(
                "attn_merge",
                (p.n_heads as u32, q.rows as u32, 1),
                p.head_dim.next_multiple_of(32).min(256) as u32,
                &KArgs::new()
                    .ptr(part.ptr)
                    .ptr(out.ptr())
                    .ptr(meta.positions)
                    .i32(p.n_heads)
                    .i32(p.head_dim)
                    .i32(n_splits)
                    .ptr(xq_p)
                    .ptr(xd_p),
            );
        }
        if let (Some(q), Some(d)) = (xq, xd) {
            out.q8 = Some((q, d));
        }
    }
}
