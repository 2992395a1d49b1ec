//! What a forward pass hands back for its logit rows: every logit, or only
//! what sampling needs — the k largest logits of each row and the row's
//! log-sum-exp. A GPU computes the summary where the logits are, so a few
//! hundred bytes cross to the host per token instead of the vocabulary
//! (600 KB at 152k tokens) and the host scans nothing.

/// What the caller needs from each logit row.
#[derive(Debug, Clone, PartialEq)]
pub enum Readout {
    /// Every logit.
    Full,
    /// The `k` largest logits (logit descending, ties to the lower id) and
    /// ln Σ exp over the whole row. A backend may answer with full rows
    /// instead; callers handle both.
    Top(usize),
    /// As `Top(k)`, and per row one token drawn from softmax(logits / T) with
    /// that row's key ([`gumbel_argmax`]): a draw from the whole vocabulary
    /// without the vocabulary leaving the device. One key per logit row, in
    /// batch order (a sampler's wish, before keys are drawn, has none).
    Draw(usize, Vec<DrawKey>),
}

impl Readout {
    /// The readout without its keys: what a recorded step depends on.
    pub fn shape(&self) -> (u8, usize) {
        match self {
            Readout::Full => (0, 0),
            Readout::Top(k) => (1, *k),
            Readout::Draw(k, _) => (2, *k),
        }
    }

    /// The candidates asked for, if any.
    pub fn k(&self) -> Option<usize> {
        match self {
            Readout::Full => None,
            Readout::Top(k) | Readout::Draw(k, _) => Some(*k),
        }
    }

    /// The part of this readout for logit rows `rows` of the batch.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Readout {
        match self {
            Readout::Draw(k, keys) => Readout::Draw(*k, keys[rows].to_vec()),
            r => r.clone(),
        }
    }
}

/// One row's draw: the key of its noise, and 1 / temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawKey {
    pub key: u64,
    pub inv_temp: f32,
}

impl DrawKey {
    /// The key as the device reads it: low word, high word, 1/T's bits.
    pub fn words(&self) -> [u32; 3] {
        [
            self.key as u32,
            (self.key >> 32) as u32,
            self.inv_temp.to_bits(),
        ]
    }
}

/// Gumbel noise for token `id` under `key`: −ln(−ln u), u a uniform from a
/// splitmix64 hash of (key, id). kernels/sample.cu computes the same bits,
/// so host and device draw the same token from the same logits.
pub fn gumbel_noise(key: u64, id: u32) -> f32 {
    let mut h = key ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    noise_of(uniform_of(h))
}

/// The top 23 bits of `h` as a uniform strictly inside (0, 1): (n + ½)/2²³
/// is exact in f32 and at most 1 − 2⁻²⁴ (24 bits would round the largest to
/// 1, whose noise is infinite: a token that wins whatever its logit).
fn uniform_of(h: u64) -> f32 {
    ((h >> 41) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

fn noise_of(u: f32) -> f32 {
    -(-u.ln()).ln()
}

/// argmax over ids of logit·(1/T) + noise: a draw from softmax(logits / T)
/// (the Gumbel-max trick), ties to the lower id. The noise is bounded, so a
/// token whose logit cannot reach the best so far is skipped unhashed
/// (starting from the largest logit, most of a real model's vocabulary).
pub fn gumbel_argmax(logits: &[f32], d: DrawKey) -> u32 {
    let g_max = noise_of(uniform_of(u64::MAX));
    let top = crate::sampler::argmax(logits);
    let value = |i: u32| logits[i as usize] * d.inv_temp + gumbel_noise(d.key, i);
    let mut best = (value(top), top);
    for (i, &l) in logits.iter().enumerate() {
        let i = i as u32;
        if i == top || l * d.inv_temp + g_max < best.0 {
            continue;
        }
        let v = value(i);
        if v > best.0 || (v == best.0 && i < best.1) {
            best = (v, i);
        }
    }
    best.1
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
        /// Per row the drawn token and its logit (a `Draw` readout), else
        /// empty.
        drawn: Vec<(u32, f32)>,
    },
}

/// One row of [`Logits`].
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    Full(&'a [f32]),
    Top(TopRow<'a>),
}

impl Row<'_> {
    /// The token with the largest logit (the first of equals).
    pub fn best(&self) -> u32 {
        match self {
            Row::Full(x) => crate::sampler::argmax(x),
            Row::Top(t) => t.ids[0],
        }
    }
}

/// A row's k largest logits, best first, and its log-sum-exp.
#[derive(Debug, Clone, Copy)]
pub struct TopRow<'a> {
    pub ids: &'a [u32],
    pub values: &'a [f32],
    pub lse: f32,
    /// The token drawn for this row and its logit, for a `Draw` readout.
    pub drawn: Option<(u32, f32)>,
}

impl<'a> TopRow<'a> {
    /// The candidates as (id, logit), best first.
    pub fn candidates(&self) -> impl Iterator<Item = (u32, f32)> + 'a {
        self.ids.iter().copied().zip(self.values.iter().copied())
    }

    /// The logit of `id` if it is among the candidates (or drawn).
    pub fn logit(&self, id: u32) -> Option<f32> {
        match self.ids.iter().position(|&t| t == id) {
            Some(i) => Some(self.values[i]),
            None => self.drawn.filter(|d| d.0 == id).map(|d| d.1),
        }
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
                drawn,
            } => Row::Top(TopRow {
                ids: &ids[i * k..(i + 1) * k],
                values: &values[i * k..(i + 1) * k],
                lse: lse[i],
                drawn: drawn.get(i).copied(),
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
                    drawn,
                },
                Logits::Top {
                    k: k2,
                    ids: i2,
                    values: v2,
                    lse: l2,
                    drawn: d2,
                },
            ) => {
                assert_eq!(*k, k2, "appending logits of another width");
                ids.extend(i2);
                values.extend(v2);
                lse.extend(l2);
                drawn.extend(d2);
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
            drawn: vec![(7, 0.5)],
        };
        top.append(Logits::Top {
            k: 2,
            ids: vec![0, 2],
            values: vec![9.0, 1.0],
            lse: vec![9.1],
            drawn: vec![(0, 9.0)],
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

#[cfg(test)]
mod draw_tests {
    use super::*;

    /// Gumbel-max draws follow softmax(l / T): counts over many keys against
    /// the exact probabilities, by chi-square.
    #[test]
    fn gumbel_draws_follow_the_softmax() {
        let l = [1.0f32, 3.0, 2.0, -1.0, 2.5];
        let t = 0.8f32;
        let z: f64 = l.iter().map(|&v| (v as f64 / t as f64).exp()).sum();
        let p: Vec<f64> = l.iter().map(|&v| (v as f64 / t as f64).exp() / z).collect();
        let n = 40_000;
        let mut counts = [0usize; 5];
        for key in 0..n as u64 {
            let d = DrawKey {
                key: key.wrapping_mul(0x2545_F491_4F6C_DD1D),
                inv_temp: 1.0 / t,
            };
            counts[gumbel_argmax(&l, d) as usize] += 1;
        }
        let stat: f64 = counts
            .iter()
            .zip(&p)
            .map(|(&c, &pi)| (c as f64 - n as f64 * pi).powi(2) / (n as f64 * pi))
            .sum();
        // 4 degrees of freedom: p = 0.001 at 18.47.
        assert!(
            stat < 18.47,
            "chi-square {stat}, counts {counts:?}, p {p:?}"
        );
    }

    #[test]
    fn noise_is_finite_at_both_ends_of_the_hash() {
        for h in [0, u64::MAX] {
            let u = uniform_of(h);
            assert!(u > 0.0 && u < 1.0, "{u}");
            assert!(noise_of(u).is_finite());
        }
    }

    /// Skipping tokens that cannot win changes nothing: the same draw as
    /// hashing every token.
    #[test]
    fn pruned_argmax_equals_the_exhaustive_one() {
        let l: Vec<f32> = (0..3000)
            .map(|i| ((i * 7919) % 1000) as f32 / 40.0)
            .collect();
        for key in 0..200u64 {
            let d = DrawKey {
                key: key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                inv_temp: [1.0, 0.5, 3.0][key as usize % 3],
            };
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (i, &x) in l.iter().enumerate() {
                let v = x * d.inv_temp + gumbel_noise(d.key, i as u32);
                if v > best.0 {
                    best = (v, i as u32);
                }
            }
            assert_eq!(gumbel_argmax(&l, d), best.1);
        }
    }
}
