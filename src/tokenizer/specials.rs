//! Control and user-defined tokens (`<|im_start|>`, `<start_of_turn>` …),
//! found verbatim in raw text before any other splitting, as llama.cpp does
//! when it parses special tokens: the leftmost match, and the longest of
//! those starting there.

use aho_corasick::{AhoCorasick, MatchKind};

use super::{Result, TokenKind, TokenizerError, Vocab};

pub struct Specials {
    /// `None` when the vocabulary has no such token.
    matcher: Option<AhoCorasick>,
    ids: Vec<u32>,
}

impl Specials {
    pub fn new(v: &Vocab) -> Result<Specials> {
        let (texts, ids): (Vec<&str>, Vec<u32>) = v
            .tokens
            .iter()
            .zip(&v.kinds)
            .enumerate()
            .filter(|(_, (t, k))| {
                matches!(k, TokenKind::Control | TokenKind::UserDefined) && !t.is_empty()
            })
            .map(|(id, (t, _))| (t.as_str(), id as u32))
            .unzip();
        let matcher = if texts.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&texts)
                    .map_err(|e| TokenizerError::Library(e.to_string()))?,
            )
        };
        Ok(Specials { matcher, ids })
    }

    /// Calls `raw` with each stretch of text between special tokens (never
    /// empty) and pushes each special token's id onto `out` in between.
    pub fn split(&self, text: &str, out: &mut Vec<u32>, mut raw: impl FnMut(&str, &mut Vec<u32>)) {
        let mut at = 0;
        if let Some(ac) = &self.matcher {
            for m in ac.find_iter(text) {
                if m.start() > at {
                    raw(&text[at..m.start()], out);
                }
                out.push(self.ids[m.pattern().as_usize()]);
                at = m.end();
            }
        }
        if text.len() > at {
            raw(&text[at..], out);
        }
    }
}
