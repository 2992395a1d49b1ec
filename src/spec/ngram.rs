//! Prompt lookup: if the last n tokens appeared earlier in the prompt or the
//! output, guess that what followed them then follows now. Free to compute,
//! and right surprisingly often on code and on text that quotes its input.
//!
//! Of the earlier places where the suffix occurs, the one whose preceding
//! tokens also match the longest is followed, and that length of shared
//! context is the guess's outlook: a continuation of a long copied passage is
//! kept far more often than one found after two common tokens, and the
//! governor keeps its acceptance rate per outlook.

use std::collections::HashMap;

use super::{Proposal, Proposer};

/// Shared context measured up to this many tokens.
const MAX_CONTEXT: usize = 32;
/// Guesses kept from the outlook's lookup for the proposal that follows it.
const CACHED_GUESSES: usize = 16;

#[derive(Default)]
pub struct NgramProposer {
    /// The last lookup, so `propose` after `outlook` does not scan twice.
    last: Option<LastLookup>,
    index: PairIndex,
}

/// A lookup's result, keyed by the history it was made on (its length and
/// last token: the history only grows between the two calls of a round).
struct LastLookup {
    len: usize,
    last_token: Option<u32>,
    guesses: Vec<u32>,
    context: usize,
}

/// Where each pair of adjacent tokens ended in the history (the index of the
/// token after it), oldest first: the only places a suffix of two or more
/// tokens can have occurred before. Extended as the history grows, so a
/// lookup visits the pair's occurrences instead of scanning the history for
/// each suffix length (three passes over the history a round: ~12 µs at a
/// few hundred tokens on the H100's host, against 2 ms steps, and growing
/// with the context).
#[derive(Default)]
struct PairIndex {
    /// The history indexed so far, to notice a history that is not its
    /// continuation (then the index is rebuilt).
    seen: Vec<u32>,
    ends: HashMap<(u32, u32), Vec<u32>>,
}

impl PairIndex {
    fn sync(&mut self, history: &[u32]) {
        let n = self.seen.len();
        if history.len() < n || history[..n] != self.seen[..] {
            self.seen.clear();
            self.ends.clear();
        }
        for i in self.seen.len()..history.len() {
            if i >= 1 {
                let pair = (history[i - 1], history[i]);
                self.ends.entry(pair).or_default().push(i as u32 + 1);
            }
            self.seen.push(history[i]);
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
    /// Up to `k` tokens that followed an earlier occurrence of the history's
    /// last two tokens: the occurrence whose preceding tokens match furthest
    /// back (the most recent of equals), and how many tokens of context
    /// matched there (at least 2, at most [`MAX_CONTEXT`]).
    pub fn lookup(&mut self, history: &[u32], k: usize) -> (Vec<u32>, usize) {
        let len = history.len();
        if len < 3 {
            return (Vec::new(), 0);
        }
        self.index.sync(history);
        let Some(ends) = self.index.ends.get(&(history[len - 2], history[len - 1])) else {
            return (Vec::new(), 0);
        };
        let mut best: Option<(usize, usize)> = None;
        // Most recent first; something must follow the match (the pair
        // ending at `len` is the suffix itself).
        for &end in ends.iter().rev() {
            let end = end as usize;
            if end >= len {
                continue;
            }
            let mut context = 2;
            while context < MAX_CONTEXT
                && context < end
                && history[end - context - 1] == history[len - context - 1]
            {
                context += 1;
            }
            if best.is_none_or(|(c, _)| context > c) {
                best = Some((context, end));
                // No earlier occurrence can share more; ties go to the
                // most recent, this one.
                if context == MAX_CONTEXT {
                    break;
                }
            }
        }
        match best {
            Some((context, from)) => (history[from..(from + k).min(len)].to_vec(), context),
            None => (Vec::new(), 0),
        }
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
        let mut p = NgramProposer::default();
        // "1 2 3 9 | 1 2 3 7 | 1 2 3" → after "1 2 3" most recently came 7.
        let h = [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3];
        assert_eq!(p.lookup(&h, 2), (vec![7, 5], 3));
        assert_eq!(p.lookup(&h, 10).0, vec![7, 5, 1, 2, 3]);
        assert!(p.lookup(&[4, 5, 6], 3).0.is_empty());
        assert!(p.lookup(&[], 3).0.is_empty());
        assert!(p.lookup(&[8], 3).0.is_empty());
    }

    /// The lookup as it was before the index: for suffixes of 4, 3, then 2
    /// tokens, every earlier occurrence scanned.
    fn scan(history: &[u32], k: usize) -> (Vec<u32>, usize) {
        let len = history.len();
        for n in (2..=4.min(len.saturating_sub(1))).rev() {
            let suffix = &history[len - n..];
            let mut best: Option<(usize, usize)> = None;
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
                    if context == MAX_CONTEXT {
                        break;
                    }
                }
            }
            if let Some((context, from)) = best {
                return (history[from..(from + k).min(len)].to_vec(), context);
            }
        }
        (Vec::new(), 0)
    }

    #[test]
    fn the_index_finds_what_a_scan_of_every_suffix_finds() {
        let mut rng = crate::rng::XorShift::from_state(0x5851_f42d_4c95_7f2d);
        let mut p = NgramProposer::default();
        for alphabet in [2u64, 3, 5, 40] {
            let mut h: Vec<u32> = Vec::new();
            for step in 0..600 {
                // Mostly growing, as a request's history does; now and then
                // a different history, which the index must notice.
                if step % 150 == 149 {
                    h.truncate(h.len() / 2);
                    h.push(99);
                }
                h.push((rng.next().expect("endless") % alphabet) as u32);
                if alphabet == 2 && step % 7 == 0 {
                    let copy: Vec<u32> = h[h.len().saturating_sub(40)..].to_vec();
                    h.extend(copy);
                }
                assert_eq!(p.lookup(&h, 6), scan(&h, 6), "alphabet {alphabet}, {h:?}");
            }
        }
    }

    #[test]
    fn prefers_the_occurrence_with_the_longest_shared_context() {
        let mut p = NgramProposer::default();
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
