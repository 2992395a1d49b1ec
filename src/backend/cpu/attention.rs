//! Causal attention over the paged KV cache: each (query row, head) is one
//! task; keys are found through the sequence's slot list, masked by position
//! (causal, and the sliding window where the layer has one). Grouped-query
//! attention maps query head h to KV head h / (n_heads / n_kv_heads).

use std::cell::RefCell;

use super::{pool, CpuAct};
use crate::backend::{AttnParams, AttnSeq};

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
    // Row → (sequence, index within it).
    let mut row_seq = vec![(0usize, 0usize); q.rows];
    for (si, s) in seqs.iter().enumerate() {
        for (i, r) in s.rows.clone().enumerate() {
            row_seq[r] = (si, i);
        }
    }
    thread_local! {
        static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    pool::global().chunks_mut(out, hd, &|idx, o| {
        SCORES.with_borrow_mut(|scores| {
            let (row, h) = (idx / p.n_heads, idx % p.n_heads);
            let (si, i) = row_seq[row];
            let s = &seqs[si];
            let pos = s.positions[i] as usize;
            let lo = match p.window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            let qh = &q.row(row)[h * hd..(h + 1) * hd];
            let koff = (h / group) * hd;
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for &slot in &s.slots[lo..=pos] {
                let k = &k_cache[slot as usize * kv_dim + koff..][..hd];
                let sc = crate::quant::act::dot_f32(qh, k) * p.scale;
                max = max.max(sc);
                scores.push(sc);
            }
            let mut sum = 0.0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (&slot, &w) in s.slots[lo..=pos].iter().zip(scores.iter()) {
                let v = &v_cache[slot as usize * kv_dim + koff..][..hd];
                let w = w * inv;
                o.iter_mut().zip(v).for_each(|(a, b)| *a += w * b);
            }
        })
    });
}
