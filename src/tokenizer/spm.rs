//! `llama`-type SentencePiece vocabularies (Gemma 3): spaces are written as
//! `▁`, pieces are merged highest-score first, and characters outside the
//! vocabulary fall back to `<0xNN>` byte tokens.
//!
//! The merging is llama.cpp's: adjacent symbols whose concatenation is a
//! token are merged, the best score first and the leftmost of equals, until
//! no pair is a token. It runs on the vocabulary alone. Through the
//! `tokenizers` crate it needed a BPE merge list holding every split `a + b`
//! of every token (2.3 million for Gemma 3's 262,144), which took ~150 MB
//! and put the 270M model's peak memory at 1.6 times its file.

use std::collections::BinaryHeap;

use super::specials::Specials;
use super::{Packed, Result, TokenKind, Vocab};

pub struct Spm {
    /// Every token's text, and the ids sorted by text (then id): a lookup
    /// is a binary search. A hash map of 262,144 boxed strings held 16 MB;
    /// this holds 5.
    texts: Packed,
    by_text: Vec<u32>,
    scores: Vec<f32>,
    /// Normal and user-defined tokens are what merges may form; any token
    /// reads a lone character.
    mergeable: Vec<bool>,
    /// `<0xNN>` tokens by byte.
    bytes: [Option<u32>; 256],
    unk: u32,
    add_space_prefix: bool,
    specials: Specials,
}

impl Spm {
    pub fn new(v: &Vocab, add_space_prefix: bool) -> Result<Spm> {
        let texts = Packed::new(v.tokens.iter().map(String::as_bytes));
        let mut by_text: Vec<u32> = (0..v.tokens.len() as u32).collect();
        by_text.sort_by(|&a, &b| {
            let text = |id: u32| texts.get(id as usize);
            text(a).cmp(text(b)).then(a.cmp(&b))
        });
        let mergeable = v
            .kinds
            .iter()
            .map(|k| matches!(k, TokenKind::Normal | TokenKind::UserDefined))
            .collect();
        let mut bytes = [None; 256];
        let mut unk = None;
        for (id, (t, k)) in v.tokens.iter().zip(&v.kinds).enumerate() {
            let id = id as u32;
            match k {
                TokenKind::Byte => {
                    if let Some(b) = parse_byte_token(t) {
                        bytes[b as usize].get_or_insert(id);
                    }
                }
                TokenKind::Unknown => {
                    unk.get_or_insert(id);
                }
                _ => {}
            }
        }
        Ok(Spm {
            texts,
            by_text,
            scores: v.scores.clone(),
            mergeable,
            bytes,
            unk: unk.unwrap_or(0),
            add_space_prefix,
            specials: Specials::new(v)?,
        })
    }

    /// The ids of `text`: special-token text becomes its id, the rest is
    /// merged, with a `▁` before each run of raw text when the vocabulary
    /// asks for a space prefix.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.specials
            .split(text, &mut out, |raw, out| self.encode_raw(raw, out));
        out
    }

    fn encode_raw(&self, raw: &str, out: &mut Vec<u32>) {
        if raw.is_empty() {
            return;
        }
        let mut text = String::with_capacity(raw.len() + 3);
        if self.add_space_prefix {
            text.push('▁');
        }
        text.push_str(&raw.replace(' ', "▁"));
        // Symbols: each a run of bytes, linked to its neighbours; a merged
        // symbol's right part is emptied (len 0).
        let n = text.chars().count();
        let mut syms: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        for i in 1..n {
            self.push_pair(&text, &syms, i - 1, i, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (l, r) = (pair.left, pair.right);
            // Stale: a side was merged since the pair was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != pair.len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(next) = syms[r].next {
                syms[next].prev = Some(l);
            }
            if let Some(prev) = syms[l].prev {
                self.push_pair(&text, &syms, prev, l, &mut queue);
            }
            if let Some(next) = syms[l].next {
                self.push_pair(&text, &syms, l, next, &mut queue);
            }
        }
        let mut i = (n > 0).then_some(0);
        while let Some(s) = i {
            let piece = &text[syms[s].start..syms[s].start + syms[s].len];
            match self.find(piece) {
                Some(id) => out.push(id),
                // Only a lone character is not a token: its bytes are.
                None => out.extend(
                    piece
                        .bytes()
                        .map(|b| self.bytes[b as usize].unwrap_or(self.unk)),
                ),
            }
            i = syms[s].next;
        }
    }

    /// The token whose text is `piece` (the lowest id of duplicates).
    fn find(&self, piece: &str) -> Option<u32> {
        let piece = piece.as_bytes();
        let text = |id: u32| self.texts.get(id as usize);
        let i = self.by_text.partition_point(|&id| text(id) < piece);
        let id = *self.by_text.get(i)?;
        (text(id) == piece).then_some(id)
    }

    fn push_pair(
        &self,
        text: &str,
        syms: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let len = syms[left].len + syms[right].len;
        let piece = &text[syms[left].start..syms[left].start + len];
        if let Some(id) = self.find(piece).filter(|&id| self.mergeable[id as usize]) {
            queue.push(Pair {
                score: self.scores[id as usize],
                left,
                right,
                len,
            });
        }
    }
}

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A pair of neighbours whose concatenation is a token.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// The best score first, then the leftmost (the heap pops the greatest).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

pub fn pieces(v: &Vocab) -> Vec<Vec<u8>> {
    v.tokens
        .iter()
        .zip(&v.kinds)
        .map(|(t, k)| match k {
            TokenKind::Byte => parse_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            TokenKind::Control | TokenKind::UserDefined => t.as_bytes().to_vec(),
            _ => t.replace('▁', " ").into_bytes(),
        })
        .collect()
}

fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        use TokenKind::*;
        let t: &[(&str, TokenKind, f32)] = &[
            ("<unk>", Unknown, 0.0),
            ("<start>", Control, 0.0),
            ("a", Normal, -1.0),
            ("b", Normal, -1.0),
            ("ba", Normal, -2.0),
            ("ab", Normal, -2.0),
            ("▁", Normal, -1.0),
            ("▁a", Normal, -0.5),
            ("<0xC3>", Byte, 0.0),
            ("<0xA9>", Byte, 0.0),
            ("abb", Normal, -0.1),
        ];
        Vocab {
            tokens: t.iter().map(|x| x.0.to_string()).collect(),
            kinds: t.iter().map(|x| x.1).collect(),
            scores: t.iter().map(|x| x.2).collect(),
        }
    }

    #[test]
    fn merges_best_score_first_and_the_leftmost_of_equals() {
        let spm = Spm::new(&vocab(), false).unwrap();
        // "ab" and "ba" score alike: the leftmost pair merges (llama.cpp),
        // not the lower id (a BPE merge list ranked by id would take "ba").
        assert_eq!(spm.encode("aba"), vec![5, 2]);
        assert_eq!(spm.encode("bab"), vec![4, 3]);
        // "abb" scores best but needs "ab" first, and "ab" + "b" is a pair.
        assert_eq!(spm.encode("abb"), vec![10]);
        // A character outside the vocabulary falls back to its bytes.
        assert_eq!(spm.encode("é"), vec![8, 9]);
        assert_eq!(spm.encode("<start>ab"), vec![1, 5]);
    }

    #[test]
    fn a_space_prefix_starts_each_run_of_raw_text() {
        let spm = Spm::new(&vocab(), true).unwrap();
        assert_eq!(spm.encode("a"), vec![7]);
        assert_eq!(spm.encode("<start>a"), vec![1, 7]);
        assert_eq!(spm.encode("a a"), vec![7, 7]);
        assert!(spm.encode("").is_empty());
    }
}
