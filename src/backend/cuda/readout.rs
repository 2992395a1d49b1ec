//! Reading a pass's logits out: all of them, or per row the k largest and
//! the log-sum-exp (and, for a draw, one token drawn by the Gumbel-max
//! trick), computed on the device (kernels/sample.cu) so that a few hundred
//! bytes cross to the host per token instead of the vocabulary.

use super::gpu::{DevBuf, KArgs};
use super::step::OutShape;
use super::{CudaAct, CudaBackend};

/// Candidates one block of `top_k_stage` sorts, and its threads (passed to
/// the kernels as TOPK_CHUNK and TOPK_THREADS).
pub(super) const CHUNK: usize = 2048;
pub(super) const THREADS: u32 = 1024;

/// Candidate lists of one stage: values and ids, `per_row` of each per row.
struct Stage {
    vals: u64,
    ids: u64,
    per_row: usize,
}

/// The draw's arguments of one launch: keys (3 words per row; 0 for no
/// draw), partial bests written and read, the logits, the drawn output.
#[derive(Clone, Copy, Default)]
struct DrawArgs {
    keys: u64,
    parts_out: u64,
    parts_in: u64,
    logits: u64,
    logit_stride: usize,
    out: u64,
}

impl CudaBackend {
    /// Per row of `x`, its `k` largest values (descending, ties to the lower
    /// index) and ln Σ exp over the row, and with `draw_keys` (a device
    /// array of 3 words per row) a token drawn from softmax(x / T), in
    /// [`OutShape::Top`]'s layout. Stages shrink each row by CHUNK/k until
    /// one block holds it.
    pub(super) fn top_k(
        &self,
        x: &CudaAct,
        k: usize,
        draw_keys: Option<u64>,
    ) -> (DevBuf, OutShape) {
        let (rows, n) = (x.rows, x.cols);
        assert!(
            (1..=CHUNK / 2).contains(&k) && k <= n,
            "top-k readout of {k} from rows of {n}"
        );
        let shape = OutShape::Top {
            rows,
            k,
            drawn: draw_keys.is_some(),
        };
        let out = self.gpu.alloc(shape.len() * 4);
        let result = Stage {
            vals: out.ptr,
            ids: out.ptr + (rows * k * 4) as u64,
            per_row: k,
        };
        let lse = out.ptr + (2 * rows * k * 4) as u64;
        let draw = draw_keys.map_or(DrawArgs::default(), |keys| DrawArgs {
            keys,
            logits: x.ptr(),
            logit_stride: n,
            out: lse + (rows * 4) as u64,
            ..DrawArgs::default()
        });
        let logits = Stage {
            vals: x.ptr(),
            ids: 0,
            per_row: n,
        };
        let first_blocks = n.div_ceil(CHUNK);
        if first_blocks == 1 {
            self.top_k_stage(&logits, &result, k, rows, (0, 0, 0), lse, draw);
            return (out, shape);
        }
        let room = rows * first_blocks * k * 4;
        let bufs: Vec<DevBuf> = (0..4).map(|_| self.gpu.alloc(room)).collect();
        let parts = self.gpu.alloc(rows * first_blocks * 8);
        let draw_parts = draw_keys.map(|_| self.gpu.alloc(rows * first_blocks * 8));
        let (draw_first, draw_middle, draw_last) = match &draw_parts {
            None => (draw, draw, draw),
            Some(draw_parts) => (
                DrawArgs {
                    parts_out: draw_parts.ptr,
                    ..draw
                },
                DrawArgs::default(),
                DrawArgs {
                    parts_in: draw_parts.ptr,
                    ..draw
                },
            ),
        };
        let mut from = Stage {
            vals: bufs[0].ptr,
            ids: bufs[1].ptr,
            per_row: first_blocks * k,
        };
        self.top_k_stage(&logits, &from, k, rows, (parts.ptr, 0, 0), 0, draw_first);
        let mut spare = (bufs[2].ptr, bufs[3].ptr);
        loop {
            let blocks = from.per_row.div_ceil(CHUNK);
            if blocks == 1 {
                let combine = (0, parts.ptr, first_blocks);
                self.top_k_stage(&from, &result, k, rows, combine, lse, draw_last);
                return (out, shape);
            }
            let to = Stage {
                vals: spare.0,
                ids: spare.1,
                per_row: blocks * k,
            };
            self.top_k_stage(&from, &to, k, rows, (0, 0, 0), 0, draw_middle);
            spare = (from.vals, from.ids);
            from = to;
        }
    }

    /// One launch of `top_k_stage` from `from` into `to` (one block per
    /// CHUNK of `from`'s candidates); `parts` = (partials written, partials
    /// read, how many read per row).
    #[allow(clippy::too_many_arguments)]
    fn top_k_stage(
        &self,
        from: &Stage,
        to: &Stage,
        k: usize,
        rows: usize,
        parts: (u64, u64, usize),
        lse: u64,
        draw: DrawArgs,
    ) {
        let blocks = from.per_row.div_ceil(CHUNK);
        self.gpu.launch(
            "top_k_stage",
            (blocks as u32, rows as u32, 1),
            THREADS,
            &KArgs::new()
                .ptr(from.vals)
                .ptr(from.ids)
                .i32(from.per_row)
                .i32(from.per_row)
                .i32(k)
                .ptr(to.vals)
                .ptr(to.ids)
                .i32(to.per_row)
                .ptr(parts.0)
                .ptr(parts.1)
                .i32(parts.2)
                .ptr(lse)
                .ptr(draw.keys)
                .ptr(draw.parts_out)
                .ptr(draw.parts_in)
                .ptr(draw.logits)
                .i32(draw.logit_stride)
                .ptr(draw.out),
        );
    }
}
