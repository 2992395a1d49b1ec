//! Causal attention over the paged KV cache: each task takes one query row
//! and some of the query heads that share a KV head; keys are found through
//! the sequence's slot list, masked by position (causal, and the sliding
//! window where the layer has one). Grouped-query attention maps query head
//! h to KV head h / (n_heads / n_kv_heads).
//!
//! The heads of a task read each key and value row once between them: one
//! head per task read them once per head, six times over for Qwen2.5's
//! groups of six, which at a context of 2,048 is 0.7 GB a token for the
//! 1.5B against its 0.98 GB of weights.

use std::cell::RefCell;

use crate::vecmath::{exp_neg, max_f32, sum_f32};

use super::{pool, CpuAct};
use crate::backend::{AttnParams, AttnSeq};
use crate::quant::act::{axpy_f32, dot_f32};

pub fn attention(
    q: &CpuAct,
    k_cache: &[f32],
    v_cache: &[f32],
    kv_dim: usize,
    seqs: &[AttnSeq<'_>],
    p: &AttnParams,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let per_task = heads_per_task(group, q.rows * p.n_kv_heads, pool::global().threads());
    let tasks_per_row = p.n_heads / per_task;
    // Row → (sequence, index within it).
    let mut row_seq = vec![(0usize, 0usize); q.rows];
    for (si, s) in seqs.iter().enumerate() {
        for (i, r) in s.rows.clone().enumerate() {
            row_seq[r] = (si, i);
        }
    }
    thread_local! {
        /// Scores of a task's heads, one run of keys per head.
        static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    pool::global().chunks_mut(out, hd * per_task, &|idx, o| {
        SCORES.with_borrow_mut(|scores| {
            let (row, h0) = (idx / tasks_per_row, idx % tasks_per_row * per_task);
            let (si, i) = row_seq[row];
            let s = &seqs[si];
            let pos = s.positions[i] as usize;
            let lo = match p.window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let slots = &s.slots[lo..=pos];
            let n = slots.len();
            let koff = (h0 / group) * hd;
            let qh = |g: usize| &q.row(row)[(h0 + g) * hd..(h0 + g + 1) * hd];
            scores.resize(per_task * n, 0.0);
            for (j, &slot) in slots.iter().enumerate() {
                let k = &k_cache[slot as usize * kv_dim + koff..][..hd];
                for g in 0..per_task {
                    scores[g * n + j] = dot_f32(qh(g), k) * p.scale;
                }
            }
            for head in scores.chunks_exact_mut(n) {
                let max = max_f32(head);
                head.iter_mut().for_each(|sc| *sc = exp_neg(*sc - max));
                let inv = 1.0 / sum_f32(head);
                head.iter_mut().for_each(|sc| *sc *= inv);
            }
            o.fill(0.0);
            for (j, &slot) in slots.iter().enumerate() {
                let v = &v_cache[slot as usize * kv_dim + koff..][..hd];
                for (g, o) in o.chunks_exact_mut(hd).enumerate() {
                    axpy_f32(o, scores[g * n + j], v);
                }
            }
        })
    });
}

/// Query heads per task: as many of a KV head's `group` as still leave a
/// task for each of `threads` (`units`: query rows × KV heads), and a
/// divisor of `group`, so that a task's heads share their KV head.
fn heads_per_task(group: usize, units: usize, threads: usize) -> usize {
    let splits = threads.div_ceil(units.max(1)).clamp(1, group);
    (splits..=group)
        .find(|s| group.is_multiple_of(*s))
        .map_or(1, |s| group / s)
}

#[cfg(test)]
mod tests {
    use super::heads_per_task;

    #[test]
    fn a_task_takes_whole_shares_of_a_kv_group() {
        // Qwen2.5-1.5B decoding (6 heads a KV head, 2 KV heads) on 2
        // threads: one task per KV head; on 4, halves; on 8, single heads
        // (no divisor of 6 between 4 and 6 but 6 itself).
        assert_eq!(heads_per_task(6, 2, 2), 6);
        assert_eq!(heads_per_task(6, 2, 4), 3);
        assert_eq!(heads_per_task(6, 2, 8), 1);
        // Gemma3-270M (4 heads, one KV head): two tasks of two.
        assert_eq!(heads_per_task(4, 1, 2), 2);
        // A prompt has rows enough.
        assert_eq!(heads_per_task(4, 64, 2), 4);
        // Multi-head attention (groups of one), and a group of 7 split in 7.
        assert_eq!(heads_per_task(1, 1, 4), 1);
        assert_eq!(heads_per_task(7, 1, 2), 1);
    }
}
