//! Prompt lookup: if the last n tokens appeared earlier in the prompt or the
//! output, guess that what followed them then follows now. Free to compute,
//! and right surprisingly often on code and on text that quotes its input.

use super::{Proposal, Proposer};

pub struct NgramProposer {
    /// Longest and shortest suffix tried, longest first.
    pub max_n: usize,
    pub min_n: usize,
}

impl Default for NgramProposer {
    fn default() -> Self {
        Self { max_n: 4, min_n: 2 }
    }
}

impl NgramProposer {
    /// The continuation after the most recent earlier occurrence of the
    /// longest matching suffix.
    pub fn lookup(&self, history: &[u32], k: usize) -> Vec<u32> {
        let len = history.len();
        for n in (self.min_n..=self.max_n.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            // Most recent first; the match must end before the suffix starts.
            for start in (0..len - n).rev() {
                if &history[start..start + n] == suffix {
                    let from = start + n;
                    let to = (from + k).min(len);
                    if to > from {
                        return history[from..to].to_vec();
                    }
                }
            }
        }
        Vec::new()
    }
}

impl Proposer for NgramProposer {
    fn propose(&mut self, history: &[u32], k: usize) -> crate::engine::Result<Proposal> {
        let tokens = self.lookup(history, k);
        let dists = vec![None; tokens.len()];
        Ok(Proposal {
            tokens,
            dists,
            setup_secs: 0.0,
        })
    }

    fn name(&self) -> &'static str {
        "ngram"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_latest_longest_match() {
        let p = NgramProposer::default();
        // "1 2 3 9 | 1 2 3 7 | 1 2 3" → after "1 2 3" most recently came 7.
        let h = [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3];
        assert_eq!(p.lookup(&h, 2), vec![7, 5]);
        assert_eq!(p.lookup(&h, 10), vec![7, 5, 1, 2, 3]);
        assert!(p.lookup(&[4, 5, 6], 3).is_empty());
        assert!(p.lookup(&[], 3).is_empty());
        assert!(p.lookup(&[8], 3).is_empty());
    }
}
