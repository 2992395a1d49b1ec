//! The rope_store kernel's launch (kernels/ops.cu): RoPE on rows of q and
//! k, and k and v into the f16 KV cache at the rows' slots, one block per
//! (row, head). It serves `rope_store`, `rope` and `kv_store` when the
//! Q/K/V products do not do it in their epilogue.

use super::gpu::KArgs;
use super::CudaBackend;
use crate::backend::{Rope, RopeStyle};

impl CudaBackend {
    /// The rope_store kernel (kernels/ops.cu) on `rows` rows, `heads` blocks
    /// each: `ptrs` = q, k, v, positions, slots, k cache, v cache; `dims` =
    /// q_cols, kv_dim, head_dim. Blocks past q_cols / head_dim are KV heads,
    /// stored at the slots; without `rope` nothing is rotated.
    pub(super) fn launch_rope_store(
        &self,
        rows: usize,
        heads: usize,
        ptrs: [u64; 7],
        dims: [usize; 3],
        rope: Option<&Rope>,
    ) {
        let (rot, step, freq_scale, halves) = rope.map_or((0, 0.0, 0.0, false), |r| {
            (
                r.dims,
                r.angle_step(),
                r.freq_scale,
                r.style == RopeStyle::Halves,
            )
        });
        let block = if rope.is_some() {
            (rot / 2).next_multiple_of(32).clamp(32, 128)
        } else {
            128
        };
        let mut args = KArgs::new();
        for p in ptrs {
            args = args.ptr(p);
        }
        self.gpu.launch(
            "rope_store",
            (rows as u32, heads as u32, 1),
            block as u32,
            &args
                .i32(dims[0])
                .i32(dims[1])
                .i32(dims[2])
                .i32(rot)
                .f32(step)
                .f32(freq_scale)
                .i32(halves as usize),
        );
    }
}
