//! What the engine hands a model: several sequences' new tokens at explicit
//! positions, each with its KV block table. [`FlatBatch`] lays them out as
//! the rows the backend works on.

use super::{ModelError, Result};
use crate::backend::{AttnSeq, Readout};
use crate::kv::SeqBlocks;

/// New tokens of one sequence. Its `kv` must already hold room for
/// `start_pos + tokens.len()` positions.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub kv: &'a SeqBlocks,
    /// Logits are returned for new tokens with index ≥ this (0: all of them,
    /// for verification and perplexity; `tokens.len() - 1`: the last only).
    pub logits_from: usize,
}

pub struct ForwardBatch<'a> {
    pub seqs: Vec<SeqInput<'a>>,
    /// What the caller needs of each logit row.
    pub readout: Readout,
}

impl<'a> ForwardBatch<'a> {
    pub fn single(
        tokens: &'a [u32],
        start_pos: usize,
        kv: &'a SeqBlocks,
        logits_from: usize,
        readout: Readout,
    ) -> Self {
        Self {
            seqs: vec![SeqInput {
                tokens,
                start_pos,
                kv,
                logits_from,
            }],
            readout,
        }
    }
}

/// A batch flattened into rows.
pub(crate) struct FlatBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    /// Where each new row's K/V is written.
    pub write_slots: Vec<u32>,
    /// Per sequence: the slot of every position up to its last new token.
    pub seq_slots: Vec<Vec<u32>>,
    pub seq_rows: Vec<std::ops::Range<usize>>,
    pub logit_rows: Vec<usize>,
}

impl FlatBatch {
    pub fn new(b: &ForwardBatch<'_>, vocab: usize, ctx_len: usize) -> Result<Self> {
        let mut f = FlatBatch {
            tokens: Vec::new(),
            positions: Vec::new(),
            write_slots: Vec::new(),
            seq_slots: Vec::new(),
            seq_rows: Vec::new(),
            logit_rows: Vec::new(),
        };
        for s in &b.seqs {
            let end = s.start_pos + s.tokens.len();
            if end > ctx_len {
                return Err(ModelError::ContextOverflow {
                    pos: end - 1,
                    ctx: ctx_len,
                });
            }
            assert!(
                end <= s.kv.len(),
                "KV holds {} positions, batch needs {end}",
                s.kv.len()
            );
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::BadToken(bad));
            }
            let first = f.tokens.len();
            f.tokens.extend_from_slice(s.tokens);
            f.positions.extend((s.start_pos..end).map(|p| p as u32));
            f.write_slots
                .extend((s.start_pos..end).map(|p| s.kv.slot(p)));
            f.seq_slots.push((0..end).map(|p| s.kv.slot(p)).collect());
            f.seq_rows.push(first..f.tokens.len());
            f.logit_rows
                .extend(first + s.logits_from.min(s.tokens.len())..f.tokens.len());
        }
        Ok(f)
    }

    pub fn attn_seqs(&self) -> Vec<AttnSeq<'_>> {
        self.seq_rows
            .iter()
            .zip(&self.seq_slots)
            .map(|(rows, slots)| AttnSeq {
                rows: rows.clone(),
                slots,
                positions: &self.positions[rows.clone()],
            })
            .collect()
    }
}
