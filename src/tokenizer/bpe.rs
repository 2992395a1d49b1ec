//! `gpt2`-type byte-level BPE (SmolLM2, Qwen2, Llama 3): the vocabulary's
//! tokens are written in GPT-2's byte-to-unicode alphabet, and text is first
//! split by the regexes llama.cpp uses for the file's `tokenizer.ggml.pre`.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use super::{added_tokens, library_error, vocab_map, Result, TokenKind, TokenizerError, Vocab};

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

pub fn build(v: &Vocab, merges: &[&str], pre: &str) -> Result<tokenizers::Tokenizer> {
    let regexes = pre_regexes(pre)?;
    let vocab = vocab_map(v);
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(false)
        .build()
        .map_err(library_error)?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex(r.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(library_error)?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(Sequence::new(steps)));
    tk.add_special_tokens(&added_tokens(v));
    Ok(tk)
}

/// GPT-2's reversible byte → printable char table, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}

pub fn pieces(v: &Vocab) -> Vec<Vec<u8>> {
    let table = unicode_to_byte();
    v.tokens
        .iter()
        .zip(&v.kinds)
        .map(|(t, k)| match k {
            TokenKind::Control | TokenKind::UserDefined => t.as_bytes().to_vec(),
            _ => {
                let mapped: Option<Vec<u8>> = t.chars().map(|c| table.get(&c).copied()).collect();
                mapped.unwrap_or_else(|| t.as_bytes().to_vec())
            }
        })
        .collect()
}
