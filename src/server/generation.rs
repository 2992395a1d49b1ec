//! Turning an API request into engine requests (one per choice, `n` of
//! them) and the engine's events into an OpenAI response: one JSON body, or
//! a server-sent-event stream ending with the usage chunk (if asked) and
//! `data: [DONE]`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::openai::{self, ChatRequest, CommonParams, CompletionRequest};
use super::{ApiError, Shared};
use crate::engine::generate::StopReason;
use crate::engine::request::{Completion, Event, Request, RequestHandle, Usage};
use crate::engine::EngineError;
use crate::spec::SpecStats;
use crate::tokenizer::ChatMessage;

#[derive(Clone, Copy)]
enum Kind {
    /// Chat; `Some(k)`: logprobs with k alternatives.
    Chat(Option<usize>),
    /// Text completion; `Some(k)`: legacy logprobs with k alternatives.
    Text(Option<usize>),
}

struct Job {
    kind: Kind,
    id: String,
    created: u64,
    handles: Vec<RequestHandle>,
    start: Instant,
    stream: bool,
    include_usage: bool,
}

pub async fn chat(s: Shared, req: ChatRequest) -> Result<Response, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let mut msgs = Vec::new();
    for m in &req.messages {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(ApiError::bad_request(
                format!("unknown role {:?}", m.role),
                Some("messages"),
            ));
        }
        let text = openai::content_text(&m.content).ok_or_else(|| {
            ApiError::bad_request(
                "message content must be a string or text parts",
                Some("messages"),
            )
        })?;
        msgs.push(ChatMessage::new(&m.role, &text));
    }
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if k > openai::MAX_TOP_LOGPROBS => {
            return Err(ApiError::bad_request(
                "top_logprobs must be at most 20",
                Some("top_logprobs"),
            ))
        }
        (true, k) => Some(k.unwrap_or(0)),
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "top_logprobs requires logprobs",
                Some("top_logprobs"),
            ))
        }
        (false, None) => None,
    };
    let text = s
        .model
        .tokenizer
        .chat_template
        .render(&msgs, true)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
    let prompt = s
        .model
        .tokenizer
        .encode(&text, true)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    run(s, Kind::Chat(top), prompt, &req.common, "chatcmpl").await
}

pub async fn completion(s: Shared, req: CompletionRequest) -> Result<Response, ApiError> {
    let text = match &req.prompt {
        Value::String(t) => t.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(ApiError::bad_request(
                "prompt must be a string",
                Some("prompt"),
            ))
        }
    };
    if let Some(k) = req.logprobs {
        if k > 5 {
            return Err(ApiError::bad_request(
                "logprobs must be at most 5",
                Some("logprobs"),
            ));
        }
    }
    let prompt = s
        .model
        .tokenizer
        .encode(&text, true)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            "prompt must not be empty",
            Some("prompt"),
        ));
    }
    run(s, Kind::Text(req.logprobs), prompt, &req.common, "cmpl").await
}

async fn run(
    s: Shared,
    kind: Kind,
    prompt: Vec<u32>,
    p: &CommonParams,
    prefix: &str,
) -> Result<Response, ApiError> {
    let n = p
        .n()
        .map_err(|(m, param)| ApiError::bad_request(m, Some(param)))?;
    let n_probs = match kind {
        Kind::Chat(k) | Kind::Text(k) => k.map_or(0, |k| k.max(1)),
    };
    let sampling = p
        .sampling(n_probs)
        .map_err(|(m, param)| ApiError::bad_request(m, Some(param)))?;
    let ctx = s.engine.config().ctx;
    let max_tokens = match p.max_completion_tokens.or(p.max_tokens) {
        Some(0) => {
            return Err(ApiError::bad_request(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            ))
        }
        Some(m) => m,
        None => ctx.saturating_sub(prompt.len()).max(1),
    };
    if prompt.len() + max_tokens > ctx {
        return Err(ApiError::bad_request(
            format!(
                "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceeds the context ({ctx})",
                prompt.len()
            ),
            Some("max_tokens"),
        ));
    }
    if s.engine.stats.waiting.load(Ordering::Relaxed) >= s.cfg.max_waiting {
        return Err(ApiError::overloaded());
    }
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let mut sp = sampling.clone();
        sp.seed = sp.seed.wrapping_add(i as u64);
        let r = Request {
            prompt: prompt.clone(),
            max_tokens,
            sampling: sp,
            stop: p.stops(),
            ignore_eos: p.ignore_eos,
        };
        handles.push(s.engine.submit(r).map_err(|e| match e {
            EngineError::Invalid(m) => ApiError::bad_request(m, None),
            other => ApiError::bad_request(other.to_string(), None),
        })?);
    }
    let job = Job {
        kind,
        id: format!("{prefix}-{:x}", rand::random::<u64>()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        handles,
        start: Instant::now(),
        stream: p.stream,
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
    };
    if job.stream {
        Ok(stream(s, job))
    } else {
        whole(s, job).await
    }
}

/// Latency bookkeeping for one choice.
struct Clock {
    start: Instant,
    last: Option<Instant>,
}

impl Clock {
    fn tick(&mut self, s: &Shared) {
        let now = Instant::now();
        match self.last {
            None => s.metrics.ttft.observe((now - self.start).as_secs_f64()),
            Some(t) => s.metrics.itl.observe((now - t).as_secs_f64()),
        }
        self.last = Some(now);
    }
}

async fn whole(s: Shared, job: Job) -> Result<Response, ApiError> {
    let mut choices = Vec::new();
    for mut h in job.handles {
        let mut c = Completion::default();
        let mut clock = Clock {
            start: job.start,
            last: None,
        };
        while let Some(ev) = h.events.recv().await {
            if matches!(ev, Event::Token { .. }) {
                clock.tick(&s);
            }
            c.absorb(ev);
        }
        if let Some(e) = c.error.take() {
            return Err(ApiError::internal(e));
        }
        choices.push(c);
    }
    let usage = Usage {
        prompt_tokens: choices.first().map_or(0, |c| c.usage.prompt_tokens),
        completion_tokens: choices.iter().map(|c| c.usage.completion_tokens).sum(),
        cached_tokens: choices.first().map_or(0, |c| c.usage.cached_tokens),
    };
    let tok = &s.model.tokenizer;
    let body_choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| match job.kind {
            Kind::Chat(top) => json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": top.map(|k| json!({"content": c.logprobs.iter().map(|x| openai::chat_logprob(tok, x, k)).collect::<Vec<_>>()})),
                "finish_reason": openai::finish_reason(c.reason.unwrap_or(StopReason::Length)),
            }),
            Kind::Text(top) => json!({
                "index": i,
                "text": c.text,
                "logprobs": top.map(|k| openai::completion_logprobs(tok, &c.logprobs, k, 0)),
                "finish_reason": openai::finish_reason(c.reason.unwrap_or(StopReason::Length)),
            }),
        })
        .collect();
    let object = if matches!(job.kind, Kind::Chat(_)) {
        "chat.completion"
    } else {
        "text_completion"
    };
    let mut body = json!({
        "id": job.id,
        "object": object,
        "created": job.created,
        "model": s.cfg.model_name,
        "choices": body_choices,
        "usage": openai::usage_json(&usage),
    });
    let spec: Vec<SpecStats> = choices
        .iter()
        .filter_map(|c| c.speculation.clone())
        .collect();
    if let Some(m) = SpecStats::merge(&spec) {
        body["speculation"] = json!(m);
    }
    Ok(Json(body).into_response())
}

fn stream(s: Shared, job: Job) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Result<SseEvent, Infallible>>();
    let chat = matches!(job.kind, Kind::Chat(_));
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let base =
        json!({"id": job.id, "object": object, "created": job.created, "model": s.cfg.model_name});
    let send = |tx: &mpsc::UnboundedSender<Result<SseEvent, Infallible>>, v: Value| {
        tx.send(Ok(SseEvent::default().data(v.to_string()))).is_ok()
    };
    let include_usage = job.include_usage;
    let kind = job.kind;
    let start = job.start;
    let tasks: Vec<_> = job
        .handles
        .into_iter()
        .enumerate()
        .map(|(i, mut h)| {
            let (tx, s, base) = (tx.clone(), s.clone(), base.clone());
            tokio::spawn(async move {
                let chunk = |delta: Value, finish: Option<&str>| {
                    let mut v = base.clone();
                    v["choices"] = json!([if chat {
                        json!({"index": i, "delta": delta, "logprobs": Value::Null, "finish_reason": finish})
                    } else {
                        json!({"index": i, "text": delta, "logprobs": Value::Null, "finish_reason": finish})
                    }]);
                    v
                };
                if chat && !send(&tx, chunk(json!({"role": "assistant", "content": ""}), None)) {
                    return (Usage::default(), None);
                }
                let mut clock = Clock { start, last: None };
                let mut offset = 0;
                loop {
                    let ev = tokio::select! {
                        ev = h.events.recv() => ev,
                        _ = tx.closed() => return (Usage::default(), None), // client left: dropping h cancels
                    };
                    let Some(ev) = ev else { return (Usage::default(), None) };
                    match ev {
                        Event::Token { sampled, text } => {
                            clock.tick(&s);
                            let mut v = if chat { chunk(json!({"content": text}), None) } else { chunk(json!(text), None) };
                            let tok = &s.model.tokenizer;
                            match kind {
                                Kind::Chat(Some(k)) => {
                                    v["choices"][0]["logprobs"] = json!({"content": [openai::chat_logprob(tok, &sampled, k)]})
                                }
                                Kind::Text(Some(k)) => {
                                    v["choices"][0]["logprobs"] = openai::completion_logprobs(tok, std::slice::from_ref(&sampled), k, offset)
                                }
                                _ => {}
                            }
                            offset += text.len();
                            if !send(&tx, v) {
                                return (Usage::default(), None);
                            }
                        }
                        Event::Done { reason, usage, text_tail, speculation } => {
                            let delta = if chat { json!({"content": text_tail}) } else { json!(text_tail) };
                            send(&tx, chunk(delta, Some(openai::finish_reason(reason))));
                            return (usage, speculation);
                        }
                        Event::Error(e) => {
                            send(&tx, json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}}));
                            return (Usage::default(), None);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut total = Usage::default();
        let mut spec = Vec::new();
        for t in tasks {
            if let Ok((u, sp)) = t.await {
                spec.extend(sp);
                total.prompt_tokens = u.prompt_tokens.max(total.prompt_tokens);
                total.cached_tokens = u.cached_tokens.max(total.cached_tokens);
                total.completion_tokens += u.completion_tokens;
            }
        }
        if include_usage {
            let mut v = base.clone();
            v["choices"] = json!([]);
            v["usage"] = openai::usage_json(&total);
            if let Some(m) = SpecStats::merge(&spec) {
                v["speculation"] = json!(m);
            }
            send(&tx, v);
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]")));
    });
    Sse::new(UnboundedReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
