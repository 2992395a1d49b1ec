//! The OpenAI API's request and response shapes, as far as tandem serves
//! them, and their translation to engine requests.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::generate::StopReason;
use crate::engine::request::Usage;
use crate::sampler::{Sampled, SamplingParams};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions.
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<StopField>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Extension (as in vLLM): generate exactly max_tokens.
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    pub content: Value,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessageIn>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Value,
    pub logprobs: Option<usize>,
    #[serde(flatten)]
    pub common: CommonParams,
}

pub const MAX_N: usize = 16;
pub const MAX_TOP_LOGPROBS: usize = 20;

impl CommonParams {
    pub fn stops(&self) -> Vec<String> {
        match &self.stop {
            None => vec![],
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        }
    }

    /// Sampling for choice 0 (choice i uses seed + i). OpenAI defaults:
    /// temperature 1, no truncation.
    pub fn sampling(&self, n_probs: usize) -> Result<SamplingParams, (String, &'static str)> {
        let top_k = match self.top_k {
            None => 0,
            Some(k) if k <= 0 => 0,
            Some(k) => k as usize,
        };
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repetition_penalty.unwrap_or(1.0),
            repeat_last_n: 64,
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.unwrap_or_else(rand_seed),
            n_probs,
        };
        if !(-2.0..=2.0).contains(&p.presence_penalty) {
            return Err((
                "presence_penalty must be between -2 and 2".into(),
                "presence_penalty",
            ));
        }
        if !(-2.0..=2.0).contains(&p.frequency_penalty) {
            return Err((
                "frequency_penalty must be between -2 and 2".into(),
                "frequency_penalty",
            ));
        }
        if p.temperature > 2.0 {
            return Err(("temperature must be between 0 and 2".into(), "temperature"));
        }
        p.validate().map_err(|m| (m, "sampling"))?;
        Ok(p)
    }

    pub fn n(&self) -> Result<usize, (String, &'static str)> {
        match self.n.unwrap_or(1) {
            0 => Err(("n must be at least 1".into(), "n")),
            n if n > MAX_N => Err((format!("n must be at most {MAX_N}"), "n")),
            n => Ok(n),
        }
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Message content: a string, or a list of `{"type":"text","text":…}` parts.
pub fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(|t| t.as_str()),
                    p.get("text").and_then(|t| t.as_str()),
                ) {
                    (Some("text"), Some(t)) => Some(t.to_string()),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()),
        _ => None,
    }
}

pub fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Length => "length",
        StopReason::Eog | StopReason::StopString | StopReason::Cancelled => "stop",
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

fn token_str(tok: &Tokenizer, id: u32) -> String {
    String::from_utf8_lossy(tok.piece(id)).into_owned()
}

/// One chat logprobs `content` entry.
pub fn chat_logprob(tok: &Tokenizer, s: &Sampled, top: usize) -> Value {
    let entry = |id: u32, lp: f32| json!({"token": token_str(tok, id), "logprob": lp, "bytes": tok.piece(id)});
    let mut v = entry(s.id, s.logprob);
    v["top_logprobs"] = Value::Array(s.top.iter().take(top).map(|&(i, l)| entry(i, l)).collect());
    v
}

/// Legacy completions logprobs object for a run of tokens.
pub fn completion_logprobs(
    tok: &Tokenizer,
    sampled: &[Sampled],
    top: usize,
    mut offset: usize,
) -> Value {
    let mut tokens = vec![];
    let mut lps = vec![];
    let mut tops = vec![];
    let mut offsets = vec![];
    for s in sampled {
        let t = token_str(tok, s.id);
        offsets.push(offset);
        offset += t.len();
        tokens.push(t);
        lps.push(s.logprob);
        let m: serde_json::Map<String, Value> = s
            .top
            .iter()
            .take(top)
            .map(|&(i, l)| (token_str(tok, i), json!(l)))
            .collect();
        tops.push(Value::Object(m));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

#[derive(Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}
