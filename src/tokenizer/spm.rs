//! `llama`-type SentencePiece vocabularies (Gemma 3): spaces are written as
//! `▁`, pieces are merged highest-score first, and characters outside the
//! vocabulary fall back to `<0xNN>` byte tokens.
//!
//! llama.cpp merges adjacent symbols whose concatenation is a token, best
//! score first. That is a BPE whose merge list holds every split `a + b` of
//! every token, ranked by the token's score — the same conversion Hugging Face
//! uses for SentencePiece BPE models — so it runs on the `tokenizers` crate.

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence};
use tokenizers::NormalizerWrapper;

use super::{added_tokens, library_error, vocab_map, Result, TokenKind, Vocab};

pub fn build(v: &Vocab, add_space_prefix: bool) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(v);
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, (t, k)) in v.tokens.iter().zip(&v.kinds).enumerate() {
        if *k != TokenKind::Normal && *k != TokenKind::UserDefined {
            continue;
        }
        for (split, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(split);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((v.scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    // Best score first; ties broken by id so the order is deterministic.
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = v
        .tokens
        .iter()
        .zip(&v.kinds)
        .find(|(_, k)| **k == TokenKind::Unknown)
        .map(|(t, _)| t.clone())
        .unwrap_or_else(|| "<unk>".to_string());
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .unk_token(unk)
        .fuse_unk(true)
        .build()
        .map_err(library_error)?;
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norms.push(Prepend::new("▁".to_string()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(library_error)?.into());
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_normalizer(Some(Sequence::new(norms)));
    tk.add_special_tokens(&added_tokens(v));
    Ok(tk)
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
