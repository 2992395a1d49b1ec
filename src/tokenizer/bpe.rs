//! `gpt2`-type byte-level BPE (SmolLM2, Qwen2, Llama 3): the vocabulary's
//! tokens are written in GPT-2's byte-to-unicode alphabet, text is first
//! split into words by the regexes llama.cpp uses for the file's
//! `tokenizer.ggml.pre`, and each word's bytes are merged by the merge list,
//! the lowest rank first and the leftmost of equals, as llama.cpp does.
//!
//! The merging runs on token ids: a byte's token is its one character, and
//! a merge `a b` is the pair of ids (a, b) and the id of `ab`. Through the
//! `tokenizers` crate the same vocabulary held two maps of boxed strings and
//! a cache, ~10 MB for SmolLM2's 49,152 tokens (a tenth of its weights);
//! this holds ~1.5.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fancy_regex::Regex;

use super::specials::Specials;
use super::{Result, TokenKind, TokenizerError, Vocab};

pub struct Bpe {
    /// Applied in turn, each splitting the pieces the previous one made.
    splitters: Vec<Regex>,
    /// Each byte's one-character token.
    byte_ids: [Option<u32>; 256],
    /// (left, right) → (rank, merged): the merge list by ids.
    merges: HashMap<(u32, u32), (u32, u32)>,
    specials: Specials,
}

/// The pre-tokenizer regexes, applied in order, each splitting the pieces the
/// previous one produced (matches and the text between them are both kept).
fn pre_regexes(pre: &str) -> Result<&'static [&'static str]> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    Ok(match pre {
        "default" => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
        "gpt-2" | "gpt2" => &[GPT2],
        "smollm" | "starcoder" | "refact" | "codeshell" => &[r"\p{N}", GPT2],
        "qwen2" | "stablelm2" => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        "llama3" | "llama-bpe" | "llama-v3" => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
    })
}

/// GPT-2's reversible byte → printable character table: printable Latin-1
/// stands for itself, the other bytes for U+0100 onwards in byte order.
fn byte_char(b: u8) -> char {
    let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable {
        return char::from(b);
    }
    let rank = (0..b)
        .filter(|&x| !matches!(x, 33..=126 | 161..=172 | 174..=255))
        .count() as u32;
    char::from_u32(256 + rank).expect("below U+0200")
}

impl Bpe {
    pub fn new(v: &Vocab, merges: &[&str], pre: &str) -> Result<Bpe> {
        let splitters = pre_regexes(pre)?
            .iter()
            .map(|r| Regex::new(r).map_err(|e| TokenizerError::Library(e.to_string())))
            .collect::<Result<_>>()?;
        // Only for the build: the merge list is text.
        let mut by_text: HashMap<&str, u32> = HashMap::with_capacity(v.tokens.len());
        for (id, t) in v.tokens.iter().enumerate() {
            by_text.entry(t.as_str()).or_insert(id as u32);
        }
        let mut byte_ids = [None; 256];
        let mut buf = [0u8; 4];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = by_text
                .get(&*byte_char(b as u8).encode_utf8(&mut buf))
                .copied();
        }
        let mut by_pair = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                continue;
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            // A merge whose parts or result are not tokens can never apply
            // (symbols are always tokens here).
            if let (Some(&a), Some(&b), Some(&ab)) =
                (by_text.get(a), by_text.get(b), by_text.get(joined.as_str()))
            {
                by_pair.entry((a, b)).or_insert((rank as u32, ab));
            }
        }
        Ok(Bpe {
            splitters,
            byte_ids,
            merges: by_pair,
            specials: Specials::new(v)?,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut failed = None;
        let mut scratch = Scratch::default();
        self.specials.split(text, &mut out, |raw, out| {
            if failed.is_none() {
                if let Err(e) = self.encode_raw(raw, out, &mut scratch) {
                    failed = Some(e);
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn encode_raw(&self, raw: &str, out: &mut Vec<u32>, scratch: &mut Scratch) -> Result<()> {
        let mut words = vec![raw];
        for re in &self.splitters {
            let mut next = Vec::with_capacity(words.len());
            for w in words {
                split_isolated(re, w, &mut next)?;
            }
            words = next;
        }
        for w in words {
            self.merge_word(w.as_bytes(), out, scratch);
        }
        Ok(())
    }

    /// The lowest-ranked pair of neighbours merges first, the leftmost of
    /// equal ranks, until no neighbours are a merge.
    fn merge_word(&self, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        s.syms.clear();
        s.syms
            .extend(word.iter().filter_map(|&b| self.byte_ids[b as usize]));
        let n = s.syms.len();
        s.next.clear();
        s.next.extend((1..=n).map(|i| i as u32));
        s.prev.clear();
        s.prev
            .extend((0..n).map(|i| if i == 0 { NONE } else { i as u32 - 1 }));
        s.queue.clear();
        for i in 1..n {
            self.push_pair(&s.syms, i - 1, i, &mut s.queue);
        }
        while let Some(Reverse((_, l, left, right, merged))) = s.queue.pop() {
            let l = l as usize;
            let r = s.next[l] as usize;
            // Stale: a side was merged since the pair was queued (a merged
            // right side is GONE, never a token id).
            if r >= n || s.syms[l] != left || s.syms[r] != right {
                continue;
            }
            s.syms[l] = merged;
            s.syms[r] = GONE;
            s.next[l] = s.next[r];
            if (s.next[l] as usize) < n {
                let nx = s.next[l] as usize;
                s.prev[nx] = l as u32;
                self.push_pair(&s.syms, l, nx, &mut s.queue);
            }
            if s.prev[l] != NONE {
                self.push_pair(&s.syms, s.prev[l] as usize, l, &mut s.queue);
            }
        }
        out.extend(s.syms.iter().copied().filter(|&id| id != GONE));
    }

    fn push_pair(&self, syms: &[u32], l: usize, r: usize, queue: &mut BinaryHeap<Reverse<Queued>>) {
        if let Some(&(rank, merged)) = self.merges.get(&(syms[l], syms[r])) {
            queue.push(Reverse((rank, l as u32, syms[l], syms[r], merged)));
        }
    }
}

/// (rank, left position, left id, right id, merged id): the heap pops the
/// lowest rank, then the leftmost.
type Queued = (u32, u32, u32, u32, u32);

const GONE: u32 = u32::MAX;
const NONE: u32 = u32::MAX;

/// Buffers one `encode` reuses across its words.
#[derive(Default)]
struct Scratch {
    syms: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    queue: BinaryHeap<Reverse<Queued>>,
}

/// `text` split at `re`'s matches, the matches and the text between them
/// each a piece (none empty).
fn split_isolated<'t>(re: &Regex, text: &'t str, out: &mut Vec<&'t str>) -> Result<()> {
    let mut at = 0;
    for m in re.find_iter(text) {
        let m = m.map_err(|e| TokenizerError::Library(e.to_string()))?;
        if m.start() > at {
            out.push(&text[at..m.start()]);
        }
        if m.end() > m.start() {
            out.push(m.as_str());
        }
        at = m.end();
    }
    if text.len() > at {
        out.push(&text[at..]);
    }
    Ok(())
}

/// The bytes each token stands for: byte-level tokens mapped back through
/// [`byte_char`], control and user-defined ones as written.
pub fn pieces(v: &Vocab) -> Vec<Vec<u8>> {
    let mut char_byte = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        char_byte.insert(byte_char(b), b);
    }
    v.tokens
        .iter()
        .zip(&v.kinds)
        .map(|(t, k)| match k {
            TokenKind::Control | TokenKind::UserDefined => t.as_bytes().to_vec(),
            _ => {
                let mapped: Option<Vec<u8>> =
                    t.chars().map(|c| char_byte.get(&c).copied()).collect();
                mapped.unwrap_or_else(|| t.as_bytes().to_vec())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[&str]) -> Vocab {
        Vocab {
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            kinds: tokens
                .iter()
                .map(|t| match t.starts_with("<|") {
                    true => TokenKind::Control,
                    false => TokenKind::Normal,
                })
                .collect(),
            scores: vec![0.0; tokens.len()],
        }
    }

    #[test]
    fn byte_chars_are_gpt2s_table() {
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(0), 'Ā');
        assert_eq!(byte_char(0xAD), 'Ń');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn merges_lowest_rank_first_and_the_leftmost_of_equals() {
        //             0    1    2    3     4     5      6     7
        let v = vocab(&["a", "b", "c", "ab", "bc", "abc", "Ġ", "<|x|>"]);
        // "b c" ranks before "a b": "abc" is a + bc, and "a bc" is no merge.
        let bpe = Bpe::new(&v, &["b c", "a b", "ab c"], "gpt2").unwrap();
        assert_eq!(bpe.encode("abc").unwrap(), vec![0, 4]);
        let bpe = Bpe::new(&v, &["a b", "b c", "ab c"], "gpt2").unwrap();
        assert_eq!(bpe.encode("abc").unwrap(), vec![5]);
        // One merge, two overlapping places: the leftmost goes first.
        let v = vocab(&["a", "aa", "b", "<|x|>", "Ġ"]);
        let bpe = Bpe::new(&v, &["a a"], "gpt2").unwrap();
        assert_eq!(bpe.encode("aaa").unwrap(), vec![1, 0]);
        // Specials are cut out before the words are split.
        assert_eq!(bpe.encode("aa<|x|>a").unwrap(), vec![1, 3, 0]);
        // A byte without a token is dropped.
        assert_eq!(bpe.encode("a d b").unwrap(), vec![0, 4, 4, 2]);
    }

    #[test]
    fn words_are_split_by_the_pre_tokenizer_first() {
        let v = vocab(&["a", "Ġ", "Ġa", "aĠ"]);
        let bpe = Bpe::new(&v, &["a Ġ", "Ġ a"], "gpt2").unwrap();
        // " a" is one word, so "a " (rank 0) cannot form across words.
        assert_eq!(bpe.encode("a a").unwrap(), vec![0, 2]);
    }
}
