//! The OpenAI-compatible HTTP server (axum): routes, authentication, body
//! parsing and error mapping. Generation itself is the batched engine's; the
//! server knows nothing of tensors. Disconnecting clients cancel their
//! requests because dropping a [`RequestHandle`](crate::engine::request::RequestHandle)
//! cancels it.

mod error;
mod generation;
mod metrics;
pub mod openai;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;
use metrics::ServerMetrics;

use crate::backend::device::AnyBackend;
use crate::engine::batched::BatchEngine;
use crate::model::LoadedModel;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_name: String,
    pub api_key: Option<String>,
    /// Requests allowed to wait for a slot before new ones get 503.
    pub max_waiting: usize,
    pub max_body_bytes: usize,
}

pub struct AppState {
    pub engine: BatchEngine,
    pub model: Arc<LoadedModel<AnyBackend>>,
    pub cfg: ServerConfig,
    pub metrics: ServerMetrics,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint".into(),
                param: None,
                code: None,
            }
        })
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serve until Ctrl-C, then stop taking connections and let running
/// requests finish.
pub async fn serve(state: Shared, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down: draining requests in flight");
        })
        .await
}

async fn count_status(
    State(s): State<Shared>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let resp = next.run(req).await;
    s.metrics.count_status(resp.status().as_u16());
    resp
}

fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &s.cfg.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The body as JSON of type T, with OpenAI-style errors for every failure.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "request body too large".into(),
                param: None,
                code: None,
            }
        } else {
            ApiError::bad_request(r.body_text(), None)
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

async fn chat(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let req = parse_body(body)?;
    generation::chat(s, req).await
}

async fn completions(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let req = parse_body(body)?;
    generation::completion(s, req).await
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": s.cfg.model_name, "object": "model", "created": 0, "owned_by": "tandem"}],
    }))
    .into_response())
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(&s.engine.stats),
    )
        .into_response()
}
