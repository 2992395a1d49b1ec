//! Prompt lookup: if the last n tokens appeared earlier in the prompt or the
//! output, guess that what followed them then follows now. Free to compute,
//! and right surprisingly often on code and on text that quotes its input.
//!
//! Of the earlier places where the suffix occurs, the one whose preceding
//! tokens also match the longest is followed, and that length of shared
//! context is the guess's outlook: a continuation of a long copied passage is
//! kept far more often than one found after two common tokens, and the
//! governor keeps its acceptance rate per outlook.

use super::{Proposal, Proposer};

/// Shared context measured up to this many tokens.
const MAX_CONTEXT: usize = 32;
/// Guesses kept from the outlook's lookup for the proposal that follows it.
const CACHED_GUESSES: usize = 16;

pub struct NgramProposer {
    /// Longest and shortest suffix tried, longest first.
    pub max_n: usize,
    pub min_n: usize,
    /// The last lookup, so `propose` after `outlook` does not scan twice.
    last: Option<LastLookup>,
}

/// A lookup's result, keyed by the history it was made on (its length and
/// last token: the history only grows between the two calls of a round).
struct LastLookup {
    len: usize,
    last_token: Option<u32>,
    guesses: Vec<u32>,
    context: usize,
}

impl Default for NgramProposer {
    fn default() -> Self {
        Self {
            max_n: 4,
            min_n: 2,
            last: None,
        }
    }
}

/// A match's shared context (in tokens) as one of [`super::OUTLOOKS`]
/// classes: 2, 3, 4–7, 8–15, 16 or more.
pub fn outlook_of(context: usize) -> usize {
    match context {
        0..=2 => 1,
        3 => 2,
        4..=7 => 3,
        8..=15 => 4,
        _ => 5,
    }
}

impl NgramProposer {
    /// Up to `k` tokens that followed the longest matching suffix, at the
    /// occurrence whose preceding tokens match furthest back (the most recent
    /// of equals), and how many tokens of context matched there.
    pub fn lookup(&self, history: &[u32], k: usize) -> (Vec<u32>, usize) {
        let len = history.len();
        for n in (self.min_n..=self.max_n.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            let mut best: Option<(usize, usize)> = None;
            // Most recent first; the match must end before the suffix starts,
            // and something must follow it.
            for start in (0..len - n).rev() {
                if &history[start..start + n] != suffix {
                    continue;
                }
                let mut context = n;
                while context < MAX_CONTEXT
                    && context < start + n
                    && history[start + n - context - 1] == history[len - context - 1]
                {
                    context += 1;
                }
                if best.is_none_or(|(c, _)| context > c) {
                    best = Some((context, start + n));
                    // No earlier occurrence can share more; ties go to the
                    // most recent, this one.
                    if context == MAX_CONTEXT {
                        break;
                    }
                }
            }
            if let Some((context, from)) = best {
                let to = (from + k).min(len);
                return (history[from..to].to_vec(), context);
            }
        }
        (Vec::new(), 0)
    }

    fn cached(&mut self, history: &[u32]) -> (&[u32], usize) {
        let (len, last_token) = (history.len(), history.last().copied());
        if self
            .last
            .as_ref()
            .is_none_or(|l| (l.len, l.last_token) != (len, last_token))
        {
            let (guesses, context) = self.lookup(history, CACHED_GUESSES);
            self.last = Some(LastLookup {
                len,
                last_token,
                guesses,
                context,
            });
        }
        let l = self.last.as_ref().expect("filled above");
        (&l.guesses, l.context)
    }
}

impl Proposer for NgramProposer {
    fn outlook(&mut self, history: &[u32]) -> Option<usize> {
        let (guesses, context) = self.cached(history);
        (!guesses.is_empty()).then(|| outlook_of(context))
    }

    fn propose(&mut self, history: &[u32], k: usize) -> crate::engine::Result<Proposal> {
        let tokens = if k <= CACHED_GUESSES {
            let (guesses, _) = self.cached(history);
            guesses[..k.min(guesses.len())].to_vec()
        } else {
            self.lookup(history, k).0
        };
        let dists = vec![None; tokens.len()];
        Ok(Proposal {
            tokens,
            dists,
            setup_secs: 0.0,
            setup_tokens: 0,
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
        assert_eq!(p.lookup(&h, 2), (vec![7, 5], 3));
        assert_eq!(p.lookup(&h, 10).0, vec![7, 5, 1, 2, 3]);
        assert!(p.lookup(&[4, 5, 6], 3).0.is_empty());
        assert!(p.lookup(&[], 3).0.is_empty());
        assert!(p.lookup(&[8], 3).0.is_empty());
    }

    #[test]
    fn prefers_the_occurrence_with_the_longest_shared_context() {
        let p = NgramProposer::default();
        // "6 1 2" occurs at the start and now; "9 1 2" more recently.
        let h = [5, 6, 1, 2, 7, 0, 9, 1, 2, 8, 0, 5, 6, 1, 2];
        assert_eq!(p.lookup(&h, 2), (vec![7, 0], 4));
        // The outlook grows with the shared context.
        let mut q = NgramProposer::default();
        assert_eq!(q.outlook(&h), Some(3));
        assert_eq!(q.outlook(&[3, 4, 0, 3, 4]), Some(1));
        assert_eq!(q.outlook(&[3, 4, 5]), None);
        let long: Vec<u32> = (0..20).chain([99]).chain(0..20).collect();
        assert_eq!(q.outlook(&long), Some(5));
        assert_eq!(q.propose(&long, 3).unwrap().tokens, vec![99, 0, 1]);
    }
}
