//! Text ↔ token ids, built from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Encoding follows llama.cpp's tokenizer for the file's
//! `tokenizer.ggml.model` ([`bpe`] for `gpt2`, [`spm`] for `llama`) and
//! `tokenizer.ggml.pre`. Decoding maps every id to the raw bytes it stands
//! for, which is what streaming needs ([`StreamDecoder`]).

mod bpe;
mod chat;
mod specials;
mod spm;
mod stream;

pub use chat::{ChatMessage, ChatTemplate};
pub use stream::{StreamDecoder, Utf8Stream};

use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported tokenizer model {0:?} (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?} (supported: default, smollm, qwen2, llama3, llama-bpe, gpt-2); refusing to guess")]
    UnsupportedPre(String),
    #[error("tokenizer metadata: {0}")]
    Metadata(String),
    #[error("tokenizer: {0}")]
    Library(String),
    #[error("chat template: {0}")]
    Template(String),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// ggml's token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_id(v: i64) -> Self {
        match v {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// The vocabulary as stored in the file.
pub(crate) struct Vocab {
    pub tokens: Vec<String>,
    pub kinds: Vec<TokenKind>,
    pub scores: Vec<f32>,
}

/// What turns text into ids: merge lists for byte-level BPE vocabularies,
/// scores for SentencePiece ones.
enum Encoder {
    Bpe(Box<bpe::Bpe>),
    Spm(Box<spm::Spm>),
}

pub struct Tokenizer {
    encoder: Encoder,
    /// Raw bytes of each token, for decoding.
    pieces: Packed,
    /// A hash of `pieces`: two models share a vocabulary when theirs agree
    /// (checked per speculative request, so it must be cheap).
    fingerprint: u64,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// Ids that end generation (EOS, EOT and the end-of-turn markers).
    pub eog: Vec<u32>,
    pub chat_template: ChatTemplate,
}

/// Byte strings end to end in one allocation, found by index: a `Vec` or
/// `String` each cost 48 bytes of headers and heap for each of Gemma 3's
/// 262,144 tokens. Token pieces here, token texts in [`spm`].
pub(crate) struct Packed {
    bytes: Vec<u8>,
    /// Where string i ends (its start: where string i − 1 ends).
    ends: Vec<u32>,
}

impl Packed {
    pub(crate) fn new<'a>(strings: impl Iterator<Item = &'a [u8]> + Clone) -> Packed {
        let mut bytes = Vec::with_capacity(strings.clone().map(<[u8]>::len).sum());
        let ends = strings
            .map(|s| {
                bytes.extend_from_slice(s);
                bytes.len() as u32
            })
            .collect();
        Packed { bytes, ends }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// String `i`; empty past the end.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let Some(&end) = self.ends.get(i) else {
            return &[];
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start as usize..end as usize]
    }
}

/// Token texts that end a turn in the chat formats we know, as llama.cpp
/// also treats them.
const EOG_TEXTS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|eom_id|>",
];

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f
            .get_str("tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::Metadata("tokenizer.ggml.model is missing".into()))?
            .to_string();
        let vocab = read_vocab(f)?;
        let n = vocab.tokens.len();
        let id = |key: &str| -> Result<Option<u32>> {
            Ok(f.get_u64(key)?
                .filter(|&v| (v as usize) < n)
                .map(|v| v as u32))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let (encoder, pieces, default_add_bos) = match model.as_str() {
            "gpt2" => {
                let pre = f
                    .get_str("tokenizer.ggml.pre")?
                    .unwrap_or("default")
                    .to_string();
                let merges = f.get_array("tokenizer.ggml.merges")?.ok_or_else(|| {
                    TokenizerError::Metadata("tokenizer.ggml.merges is missing".into())
                })?;
                let merges: Vec<&str> = merges.iter().filter_map(|m| m.as_str()).collect();
                (
                    Encoder::Bpe(Box::new(bpe::Bpe::new(&vocab, &merges, &pre)?)),
                    bpe::pieces(&vocab),
                    false,
                )
            }
            "llama" => {
                let prefix = f
                    .get_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                (
                    Encoder::Spm(Box::new(spm::Spm::new(&vocab, prefix)?)),
                    spm::pieces(&vocab),
                    true,
                )
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let add_bos = f
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_add_bos)
            && bos.is_some();
        let mut eog: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        for (i, t) in vocab.tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) && !eog.contains(&(i as u32)) {
                eog.push(i as u32);
            }
        }
        let tok_text = |id: Option<u32>| {
            id.map(|i| vocab.tokens[i as usize].clone())
                .unwrap_or_default()
        };
        let chat_template = ChatTemplate::from_gguf(
            f.get_str("tokenizer.chat_template")?,
            f.architecture().unwrap_or(""),
            tok_text(bos),
            tok_text(eos),
        )?;
        let pieces = Packed::new(pieces.iter().map(Vec::as_slice));
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            pieces.bytes.hash(&mut h);
            pieces.ends.hash(&mut h);
            h.finish()
        };
        Ok(Self {
            encoder,
            pieces,
            fingerprint,
            bos,
            eos,
            add_bos,
            eog,
            chat_template,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The first token id whose piece differs between the two
    /// vocabularies (the sizes apart), if any.
    pub fn first_difference(&self, other: &Tokenizer) -> Option<u32> {
        if self.fingerprint == other.fingerprint && self.vocab_size() == other.vocab_size() {
            return None;
        }
        let n = self.vocab_size().min(other.vocab_size());
        (0..n as u32).find(|&id| self.piece(id) != other.piece(id))
    }

    /// Encode text; special-token text (`<|im_start|>` …) becomes its id.
    /// A BOS is prepended when `add_bos` and the model asks for one and the
    /// text does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = match &self.encoder {
            Encoder::Bpe(bpe) => bpe.encode(text)?,
            Encoder::Spm(spm) => spm.encode(text),
        };
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            let bos = self.bos.expect("add_bos implies a BOS id");
            if enc.first() != Some(&bos) {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(&enc);
        Ok(ids)
    }

    /// The bytes a token stands for.
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize)
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Decode ids to text (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.piece(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

fn read_vocab(f: &GgufFile) -> Result<Vocab> {
    let tokens: Vec<String> = f
        .get_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| TokenizerError::Metadata("tokenizer.ggml.tokens is missing".into()))?
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            TokenizerError::Metadata("tokenizer.ggml.tokens holds a non-string".into())
        })?;
    if tokens.is_empty() {
        return Err(TokenizerError::Metadata("the vocabulary is empty".into()));
    }
    let kinds = match f.get_array("tokenizer.ggml.token_type")? {
        Some(a) if a.len() == tokens.len() => a
            .iter()
            .map(|v| TokenKind::from_id(v.as_i64().unwrap_or(1)))
            .collect(),
        Some(a) => {
            return Err(TokenizerError::Metadata(format!(
                "{} token types for {} tokens",
                a.len(),
                tokens.len()
            )))
        }
        None => vec![TokenKind::Normal; tokens.len()],
    };
    let scores = match f.get_array("tokenizer.ggml.scores")? {
        Some(a) if a.len() == tokens.len() => {
            a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect()
        }
        Some(a) => {
            return Err(TokenizerError::Metadata(format!(
                "{} scores for {} tokens",
                a.len(),
                tokens.len()
            )))
        }
        None => vec![0.0; tokens.len()],
    };
    Ok(Vocab {
        tokens,
        kinds,
        scores,
    })
}

#[cfg(test)]
mod tests;
