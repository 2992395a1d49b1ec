//! What a forward pass hands back for its logit rows: every logit, or only
//! what sampling needs — the k largest logits of each row and the row's
//! log-sum-exp. A GPU computes the summary where the logits are, so a few
//! hundred bytes cross to the host per token instead of the vocabulary
//! (600 KB at 152k tokens) and the host scans nothing.

/// What the caller needs from each logit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readout {
    /// Every logit.
    Full,
    /// The `k` largest logits (logit descending, ties to the lower id) and
    /// ln Σ exp over the whole row. A backend may answer with full rows
    /// instead; callers handle both.
    Top(usize),
}

/// Largest k a backend is asked to summarise; beyond it rows come back full.
pub const MAX_TOP_K: usize = 256;

/// Logits of the rows a pass was asked for, in batch order.
#[derive(Debug, Clone, PartialEq)]
pub enum Logits {
    /// `rows × vocab` values.
    Full { vocab: usize, data: Vec<f32> },
    /// Per row `k` candidates (`ids`, `values`: `rows × k`, best first) and
    /// the row's log-sum-exp.
    Top {
        k: usize,
        ids: Vec<u32>,
        values: Vec<f32>,
        lse: Vec<f32>,
    },
}

/// One row of [`Logits`].
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    Full(&'a [f32]),
    Top(TopRow<'a>),
}

/// A row's k largest logits, best first, and its log-sum-exp.
#[derive(Debug, Clone, Copy)]
pub struct TopRow<'a> {
    pub ids: &'a [u32],
    pub values: &'a [f32],
    pub lse: f32,
}

impl TopRow<'_> {
    /// The logit of `id` if it is among the candidates.
    pub fn logit(&self, id: u32) -> Option<f32> {
        let i = self.ids.iter().position(|&t| t == id)?;
        Some(self.values[i])
    }
}

impl Logits {
    pub fn empty() -> Self {
        Logits::Full {
            vocab: 0,
            data: Vec::new(),
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Logits::Full { vocab, data } => data.len().checked_div(*vocab).unwrap_or(0),
            Logits::Top { lse, .. } => lse.len(),
        }
    }

    pub fn row(&self, i: usize) -> Row<'_> {
        match self {
            Logits::Full { vocab, data } => Row::Full(&data[i * vocab..(i + 1) * vocab]),
            Logits::Top {
                k,
                ids,
                values,
                lse,
            } => Row::Top(TopRow {
                ids: &ids[i * k..(i + 1) * k],
                values: &values[i * k..(i + 1) * k],
                lse: lse[i],
            }),
        }
    }

    pub fn last(&self) -> Row<'_> {
        self.row(self.rows() - 1)
    }

    /// The full rows; `None` when the backend summarised them.
    pub fn into_full(self) -> Option<Vec<f32>> {
        match self {
            Logits::Full { data, .. } => Some(data),
            Logits::Top { .. } => None,
        }
    }

    /// Rows of `other` after these (both of one kind and width; an empty
    /// side takes the other's).
    pub fn append(&mut self, other: Logits) {
        if self.rows() == 0 {
            *self = other;
            return;
        }
        if other.rows() == 0 {
            return;
        }
        match (self, other) {
            (
                Logits::Full { vocab, data },
                Logits::Full {
                    vocab: v2,
                    data: d2,
                },
            ) => {
                assert_eq!(*vocab, v2, "appending logits of another width");
                data.extend(d2);
            }
            (
                Logits::Top {
                    k,
                    ids,
                    values,
                    lse,
                },
                Logits::Top {
                    k: k2,
                    ids: i2,
                    values: v2,
                    lse: l2,
                },
            ) => {
                assert_eq!(*k, k2, "appending logits of another width");
                ids.extend(i2);
                values.extend(v2);
                lse.extend(l2);
            }
            _ => panic!("appending summarised logits to full ones"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_index_both_kinds() {
        let full = Logits::Full {
            vocab: 3,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(full.rows(), 2);
        assert!(matches!(full.row(1), Row::Full(r) if r == [4.0, 5.0, 6.0]));
        let mut top = Logits::Top {
            k: 2,
            ids: vec![2, 1],
            values: vec![3.0, 2.0],
            lse: vec![3.4],
        };
        top.append(Logits::Top {
            k: 2,
            ids: vec![0, 2],
            values: vec![9.0, 1.0],
            lse: vec![9.1],
        });
        assert_eq!(top.rows(), 2);
        let Row::Top(r) = top.last() else {
            panic!("summary row expected")
        };
        assert_eq!(
            (r.ids, r.lse, r.logit(2), r.logit(1)),
            (&[0, 2][..], 9.1, Some(1.0), None)
        );
        assert_eq!(Logits::empty().rows(), 0);
    }
}
