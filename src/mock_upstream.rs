//! A standalone OpenAI-compatible fake model server (`lqo mock-upstream`) for demos, integration tests
//! and benchmarks: Chat Completions and Responses, streaming or not, with latency, errors and triggers.
//!
//! Everything is deterministic: the answer comes from the prompt (see `provider::mock`), the error
//! rate fails a fixed subset of requests, and `[mock:…]` triggers in the last user message force
//! statuses, delays, retry sequences, truncation and broken streams. Usage is counted with
//! `tokens.rs`, so cost figures downstream are realistic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::provider::mock::{answer_for, error_type_for, last_user_text, word_deltas, Triggers};
use crate::provider::ChatMessage;
use crate::tokens;

/// Settings of the fake server (also the `lqo mock-upstream` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct MockUpstreamConfig {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 18001)]
    pub port: u16,
    /// Delay before the answer (non-streaming) or the first chunk (streaming), in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Words in each answer (about one token each).
    #[arg(long, default_value_t = 32)]
    pub output_tokens: usize,
    /// Share of requests that fail with --error-status, 0.0–1.0. Deterministic: request n fails
    /// when floor(n·rate) != floor((n−1)·rate), so 0.5 fails exactly every second request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// HTTP status of the --error-rate failures.
    #[arg(long, default_value_t = 500, value_parser = parse_error_status)]
    pub error_status: u16,
}

impl Default for MockUpstreamConfig {
    fn default() -> Self {
        MockUpstreamConfig {
            host: "127.0.0.1".into(),
            port: 18001,
            latency_ms: 0,
            chunk_delay_ms: 0,
            output_tokens: 32,
            error_rate: 0.0,
            error_status: 500,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("must be between 0.0 and 1.0, got {rate}"))
    }
}

fn parse_error_status(s: &str) -> Result<u16, String> {
    let status: u16 = s.parse().map_err(|e| format!("{e}"))?;
    if (400..=599).contains(&status) {
        Ok(status)
    } else {
        Err(format!(
            "must be an HTTP error status (400–599), got {status}"
        ))
    }
}

/// Prompts can be long (the gateway accepts 400k characters); the default 2 MB would refuse some.
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// `[mock:fail_first]` remembers this many distinct prompts before starting over, so a long
/// benchmark cannot grow the map without bound.
const MAX_TRACKED_PROMPTS: usize = 10_000;
/// `[mock:stream_error]` drops the connection after this many content chunks.
const CHUNKS_BEFORE_STREAM_ERROR: usize = 2;
/// Without a pause hyper may drop the unsent chunks together with the connection.
const STREAM_ERROR_FLUSH: Duration = Duration::from_millis(50);

struct MockState {
    cfg: MockUpstreamConfig,
    /// Completion requests seen (numbered from 1 for the error rate).
    requests: AtomicU64,
    /// Completion requests answered with an error status.
    failures: AtomicU64,
    /// Attempts per prompt text, for `[mock:fail_first=N]`.
    attempts: Mutex<HashMap<String, u32>>,
}

/// The router, for callers that want to serve it their own way.
pub fn router(cfg: MockUpstreamConfig) -> Router {
    let state = Arc::new(MockState {
        cfg,
        requests: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        attempts: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/mock/stats", get(stats))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Serves the mock on `listener` until the task is dropped or the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: MockUpstreamConfig,
) -> std::io::Result<()> {
    // Building the tokenizer takes a moment; do it before the first request, off the runtime.
    let _ = tokio::task::spawn_blocking(tokens::warm_up).await;
    // TCP_NODELAY so streamed chunks are not held back by Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(cfg)).await
}

/// Binds `cfg.host:cfg.port` (port 0 = a free one) and serves in a background task; for tests.
pub async fn spawn(
    cfg: MockUpstreamConfig,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = serve(listener, cfg).await {
            tracing::error!(error = %e, "mock upstream stopped");
        }
    });
    Ok((addr, handle))
}

// ---------------------------------------------------------------------------------------------
// Requests.
// ---------------------------------------------------------------------------------------------

/// What both APIs' requests boil down to.
#[derive(Debug)]
struct Parsed {
    model: String,
    messages: Vec<ChatMessage>,
    /// Responses `instructions`, kept apart to echo them back.
    instructions: Option<String>,
    stream: bool,
    include_usage: bool,
    json_mode: bool,
    max_tokens: Option<u32>,
}

/// Text of a message content: a string or an array of parts with `text`.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn messages_from(items: &[Value]) -> Vec<ChatMessage> {
    items
        .iter()
        .filter(|m| m.get("content").is_some())
        .map(|m| ChatMessage {
            role: m
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("user")
                .to_string(),
            content: m.get("content").map(content_text).unwrap_or_default(),
        })
        .collect()
}

fn u32_field(v: &Value, names: &[&str]) -> Option<u32> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_u64))
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

fn model_of(v: &Value) -> String {
    v.get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string()
}

fn parse_chat(body: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| messages_from(m))
        .ok_or("'messages' must be an array")?;
    if messages.is_empty() {
        return Err("'messages' must not be empty".into());
    }
    let format = v.pointer("/response_format/type").and_then(Value::as_str);
    Ok(Parsed {
        model: model_of(&v),
        messages,
        instructions: None,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        json_mode: matches!(format, Some("json_object" | "json_schema")),
        max_tokens: u32_field(&v, &["max_completion_tokens", "max_tokens"]),
    })
}

fn parse_responses(body: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let instructions = v
        .get("instructions")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut messages = Vec::new();
    if let Some(text) = &instructions {
        messages.push(ChatMessage {
            role: "system".into(),
            content: text.clone(),
        });
    }
    match v.get("input") {
        Some(Value::String(s)) => messages.push(ChatMessage {
            role: "user".into(),
            content: s.clone(),
        }),
        Some(Value::Array(items)) => messages.extend(messages_from(items)),
        _ => return Err("'input' must be a string or an array of messages".into()),
    }
    if messages.is_empty() {
        return Err("'input' must not be empty".into());
    }
    let format = v.pointer("/text/format/type").and_then(Value::as_str);
    Ok(Parsed {
        model: model_of(&v),
        messages,
        instructions,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        json_mode: matches!(format, Some("json_object" | "json_schema")),
        max_tokens: u32_field(&v, &["max_output_tokens"]),
    })
}

/// The answer to one request, once delays and error triggers have passed.
struct Plan {
    n: u64,
    model: String,
    text: String,
    finish_reason: &'static str,
    input_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    stream_error: bool,
}

/// Sleeps only for a non-zero duration: tokio rounds even a zero sleep up to its next 1 ms
/// timer tick, which would put a false floor under every benchmark of the gateway.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Applies delays, triggers and the error rate; `Err` is the error response to send.
async fn plan(state: &MockState, headers: &HeaderMap, parsed: &Parsed) -> Result<Plan, Response> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let prompt = last_user_text(&parsed.messages);
    let triggers = Triggers::for_messages(&parsed.messages);
    if let Some(ms) = triggers.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = triggers.status {
        let message = if status == 401 {
            // Echoes the presented key, as some real upstreams do (OpenAI shows a masked one), so
            // tests can prove the gateway never lets it through.
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            format!("Incorrect API key provided: {presented}.")
        } else {
            format!("mock error {status} requested by the prompt")
        };
        return Err(fail(state, status, message));
    }
    if let Some(first) = triggers.fail_first {
        let attempt = {
            let mut attempts = state
                .attempts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if attempts.len() >= MAX_TRACKED_PROMPTS && !attempts.contains_key(prompt) {
                attempts.clear();
            }
            let count = attempts.entry(prompt.to_string()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        if attempt <= first {
            return Err(fail(
                state,
                503,
                format!("mock failure {attempt} of {first} ([mock:fail_first])"),
            ));
        }
    }
    let rate = state.cfg.error_rate;
    if rate > 0.0 && (n as f64 * rate).floor() != ((n - 1) as f64 * rate).floor() {
        return Err(fail(
            state,
            state.cfg.error_status,
            format!("mock error-rate failure (request {n})"),
        ));
    }
    let (text, finish_reason) = answer_for(
        &parsed.messages,
        state.cfg.output_tokens,
        parsed.max_tokens,
        parsed.json_mode,
    );
    let input_tokens = tokens::count_message_tokens(&parsed.messages);
    Ok(Plan {
        n,
        model: parsed.model.clone(),
        output_tokens: tokens::count_tokens(&text),
        text,
        finish_reason,
        input_tokens,
        cached_tokens: triggers.cached_tokens.unwrap_or(0).min(input_tokens),
        stream_error: triggers.stream_error,
    })
}

fn fail(state: &MockState, status: u16, message: String) -> Response {
    state.failures.fetch_add(1, Ordering::Relaxed);
    error_response(status, message)
}

/// An OpenAI-shaped error; 429s carry `retry-after: 0` so clients retry at once.
fn error_response(status: u16, message: String) -> Response {
    let (kind, code) = error_type_for(status);
    let body =
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status_code, Json(body)).into_response();
    if status == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An SSE response from a stream of ready-made frames; an `Err` item drops the connection.
fn sse_response<S>(frames: S) -> Response
where
    S: futures::Stream<Item = Result<String, std::io::Error>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn data_frame(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn stream_break() -> std::io::Error {
    std::io::Error::other("[mock:stream_error] dropped the stream")
}

// ---------------------------------------------------------------------------------------------
// Chat Completions.
// ---------------------------------------------------------------------------------------------

async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = match parse_chat(&body) {
        Ok(p) => p,
        Err(message) => return error_response(400, message),
    };
    let plan = match plan(&state, &headers, &parsed).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let latency = Duration::from_millis(state.cfg.latency_ms);
    if !parsed.stream {
        pause(latency).await;
        return Json(chat_completion_body(&plan)).into_response();
    }
    let chunk_delay = Duration::from_millis(state.cfg.chunk_delay_ms);
    let include_usage = parsed.include_usage;
    let frames = async_stream::stream! {
        pause(latency).await;
        yield Ok(data_frame(&chat_chunk(&plan, json!({ "role": "assistant", "content": "", "refusal": null }), None, include_usage)));
        for (i, word) in word_deltas(&plan.text, 1).into_iter().enumerate() {
            if plan.stream_error && i == CHUNKS_BEFORE_STREAM_ERROR {
                // Let the chunks so far reach the client before the connection is dropped.
                tokio::time::sleep(STREAM_ERROR_FLUSH).await;
                yield Err(stream_break());
                return;
            }
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            yield Ok(data_frame(&chat_chunk(&plan, json!({ "content": word }), None, include_usage)));
        }
        yield Ok(data_frame(&chat_chunk(&plan, json!({}), Some(plan.finish_reason), include_usage)));
        if include_usage {
            let mut usage_chunk = chat_chunk(&plan, json!({}), None, true);
            usage_chunk["choices"] = json!([]);
            usage_chunk["usage"] = chat_usage(&plan);
            yield Ok(data_frame(&usage_chunk));
        }
        yield Ok("data: [DONE]\n\n".to_string());
    };
    sse_response(frames)
}

fn chat_usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": { "cached_tokens": plan.cached_tokens, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0 }
    })
}

fn chat_completion_body(plan: &Plan) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{}", plan.n),
        "object": "chat.completion",
        "created": unix_now(),
        "model": plan.model,
        "system_fingerprint": "fp_lqo_mock",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": plan.text, "refusal": null },
            "logprobs": null,
            "finish_reason": plan.finish_reason
        }],
        "usage": chat_usage(plan)
    })
}

fn chat_chunk(
    plan: &Plan,
    delta: Value,
    finish_reason: Option<&str>,
    include_usage: bool,
) -> Value {
    let mut chunk = json!({
        "id": format!("chatcmpl-mock-{}", plan.n),
        "object": "chat.completion.chunk",
        "created": unix_now(),
        "model": plan.model,
        "system_fingerprint": "fp_lqo_mock",
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }]
    });
    if include_usage {
        // OpenAI sends `usage: null` on every chunk but the last when usage was asked for.
        chunk["usage"] = Value::Null;
    }
    chunk
}

// ---------------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------------

async fn responses(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = match parse_responses(&body) {
        Ok(p) => p,
        Err(message) => return error_response(400, message),
    };
    let plan = match plan(&state, &headers, &parsed).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let latency = Duration::from_millis(state.cfg.latency_ms);
    let instructions = parsed.instructions.clone();
    if !parsed.stream {
        pause(latency).await;
        return Json(response_body(&plan, instructions.as_deref(), true)).into_response();
    }
    let chunk_delay = Duration::from_millis(state.cfg.chunk_delay_ms);
    let frames = async_stream::stream! {
        let msg_id = format!("msg_mock_{}", plan.n);
        let mut seq = 0u64;
        let mut event = |kind: &str, mut v: Value| {
            v["type"] = json!(kind);
            v["sequence_number"] = json!(seq);
            seq += 1;
            format!("event: {kind}\ndata: {v}\n\n")
        };
        let in_progress = response_body(&plan, instructions.as_deref(), false);
        yield Ok(event("response.created", json!({ "response": in_progress })));
        yield Ok(event("response.in_progress", json!({ "response": in_progress })));
        pause(latency).await;
        yield Ok(event("response.output_item.added", json!({
            "output_index": 0,
            "item": { "id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": [] }
        })));
        yield Ok(event("response.content_part.added", json!({
            "item_id": msg_id, "output_index": 0, "content_index": 0,
            "part": { "type": "output_text", "text": "", "annotations": [] }
        })));
        for (i, word) in word_deltas(&plan.text, 1).into_iter().enumerate() {
            if plan.stream_error && i == CHUNKS_BEFORE_STREAM_ERROR {
                // Let the chunks so far reach the client before the connection is dropped.
                tokio::time::sleep(STREAM_ERROR_FLUSH).await;
                yield Err(stream_break());
                return;
            }
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            yield Ok(event("response.output_text.delta", json!({
                "item_id": msg_id, "output_index": 0, "content_index": 0, "delta": word, "logprobs": []
            })));
        }
        yield Ok(event("response.output_text.done", json!({
            "item_id": msg_id, "output_index": 0, "content_index": 0, "text": plan.text, "logprobs": []
        })));
        let done = response_body(&plan, instructions.as_deref(), true);
        let kind = if done["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
        yield Ok(event(kind, json!({ "response": done })));
    };
    sse_response(frames)
}

/// A Responses object; `finished` false gives the `in_progress` shell sent at stream start.
fn response_body(plan: &Plan, instructions: Option<&str>, finished: bool) -> Value {
    let truncated = plan.finish_reason == "length";
    let status = match (finished, truncated) {
        (false, _) => "in_progress",
        (true, false) => "completed",
        (true, true) => "incomplete",
    };
    let output = if finished {
        json!([{
            "id": format!("msg_mock_{}", plan.n),
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{ "type": "output_text", "text": plan.text, "annotations": [], "logprobs": [] }]
        }])
    } else {
        json!([])
    };
    let usage = if finished {
        json!({
            "input_tokens": plan.input_tokens,
            "input_tokens_details": { "cached_tokens": plan.cached_tokens },
            "output_tokens": plan.output_tokens,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": plan.input_tokens + plan.output_tokens
        })
    } else {
        Value::Null
    };
    json!({
        "id": format!("resp_mock_{}", plan.n),
        "object": "response",
        "created_at": unix_now(),
        "status": status,
        "error": null,
        "incomplete_details": if finished && truncated { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
        "instructions": instructions,
        "model": plan.model,
        "output": output,
        "usage": usage
    })
}

// ---------------------------------------------------------------------------------------------
// Everything else.
// ---------------------------------------------------------------------------------------------

async fn models() -> Json<Value> {
    let data: Vec<Value> = ["mock-model", "gpt-5-mini", "gpt-4o-mini"]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "lqo-mock" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Counters for tests and benchmarks: how many completion requests came, how many were failed.
async fn stats(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({
        "requests": state.requests.load(Ordering::Relaxed),
        "failures": state.failures.load(Ordering::Relaxed)
    }))
}

async fn not_found() -> Response {
    error_response(404, "unknown route".into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    async fn start(cfg: MockUpstreamConfig) -> String {
        let (addr, _) = spawn(MockUpstreamConfig { port: 0, ..cfg }).await.unwrap();
        format!("http://{addr}")
    }

    fn chat_body(prompt: &str) -> Value {
        json!({ "model": "m", "messages": [{ "role": "user", "content": prompt }] })
    }

    #[test]
    fn cli_defaults_match_default() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cfg: MockUpstreamConfig,
        }
        let parsed = Cli::parse_from(["mock"]).cfg;
        let default = MockUpstreamConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        let custom = Cli::parse_from([
            "mock",
            "--port",
            "0",
            "--error-rate",
            "0.25",
            "--error-status",
            "503",
        ])
        .cfg;
        assert_eq!(
            (custom.port, custom.error_rate, custom.error_status),
            (0, 0.25, 503)
        );
        assert!(Cli::try_parse_from(["mock", "--error-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["mock", "--error-status", "200"]).is_err());
    }

    #[tokio::test]
    async fn error_rate_half_fails_exactly_every_second_request() {
        let base = start(MockUpstreamConfig {
            error_rate: 0.5,
            error_status: 503,
            ..MockUpstreamConfig::default()
        })
        .await;
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let r = client
                .post(format!("{base}/v1/chat/completions"))
                .json(&chat_body("hello"))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        assert_eq!(statuses, [200, 503, 200, 503, 200, 503, 200, 503, 200, 503]);
        let stats: Value = client
            .get(format!("{base}/mock/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats, json!({ "requests": 10, "failures": 5 }));
    }

    #[tokio::test]
    async fn health_models_and_unknown_routes() {
        let base = start(MockUpstreamConfig::default()).await;
        let client = reqwest::Client::new();
        let health: Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health, json!({ "status": "ok" }));
        let models: Value = client
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["object"], "list");
        assert!(!models["data"].as_array().unwrap().is_empty());
        let r = client.get(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }

    #[tokio::test]
    async fn chat_non_streaming_shape_and_usage() {
        let base = start(MockUpstreamConfig {
            output_tokens: 12,
            ..MockUpstreamConfig::default()
        })
        .await;
        let v: Value = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({
                "model": "gpt-x",
                "messages": [
                    { "role": "system", "content": "sys" },
                    { "role": "user", "content": [{ "type": "text", "text": "parts work [mock:cached_tokens=3]" }] }
                ]
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-x");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text.split_whitespace().count(), 12);
        assert!(text.contains("parts work"));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["completion_tokens"], tokens::count_tokens(text));
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 3);
    }

    async fn sse_text(base: &str, path: &str, body: Value) -> (String, String) {
        let r = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        (ct, r.text().await.unwrap())
    }

    #[tokio::test]
    async fn chat_stream_has_chunks_finish_usage_and_done() {
        let base = start(MockUpstreamConfig {
            chunk_delay_ms: 1,
            ..MockUpstreamConfig::default()
        })
        .await;
        let mut body = chat_body("stream please");
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
        let (ct, text) = sse_text(&base, "/v1/chat/completions", body.clone()).await;
        assert_eq!(ct, "text/event-stream");
        let frames: Vec<&str> = text.split("\n\n").filter(|f| !f.is_empty()).collect();
        assert_eq!(*frames.last().unwrap(), "data: [DONE]");
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let usage_chunk = chunks.last().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );

        // Without include_usage there is no usage chunk.
        body["stream_options"] = json!({ "include_usage": false });
        let (_, text) = sse_text(&base, "/v1/chat/completions", body).await;
        assert!(!text.contains("\"usage\""));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn responses_accepts_string_input_and_instructions() {
        let base = start(MockUpstreamConfig::default()).await;
        let v: Value = reqwest::Client::new()
            .post(format!("{base}/v1/responses"))
            .json(&json!({ "model": "gpt-5-mini", "input": "Tell me a joke", "instructions": "Be funny", "max_output_tokens": 8 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["instructions"], "Be funny");
        let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text.split_whitespace().count(), 8);
        let expected_input = tokens::count_message_tokens(&[
            ChatMessage {
                role: "system".into(),
                content: "Be funny".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "Tell me a joke".into(),
            },
        ]);
        assert_eq!(v["usage"]["input_tokens"], expected_input);
        assert_eq!(
            v["usage"]["total_tokens"],
            expected_input + tokens::count_tokens(text)
        );
    }

    #[tokio::test]
    async fn responses_stream_events_in_order() {
        let base = start(MockUpstreamConfig::default()).await;
        let (_, text) = sse_text(
            &base,
            "/v1/responses",
            json!({ "model": "m", "input": [{ "role": "user", "content": [{ "type": "input_text", "text": "hi" }] }], "stream": true, "text": { "format": { "type": "json_object" } } }),
        )
        .await;
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(kinds.last(), Some(&"response.completed"));
        assert!(kinds.contains(&"response.output_text.delta"));
        let completed: Value = serde_json::from_str(
            text.lines()
                .rfind(|l| l.starts_with("data: "))
                .and_then(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        let answer = completed["response"]["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap();
        assert!(serde_json::from_str::<Value>(answer).unwrap().is_object());
        assert!(
            completed["response"]["usage"]["output_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    #[tokio::test]
    async fn triggers_and_bad_requests() {
        let base = start(MockUpstreamConfig::default()).await;
        let client = reqwest::Client::new();
        let post = |body: Value| {
            client
                .post(format!("{base}/v1/chat/completions"))
                .json(&body)
                .send()
        };

        let r = post(chat_body("limited [mock:status=429]")).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "0");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].is_string());

        for expected in [503, 503, 200, 200] {
            let r = post(chat_body("flaky [mock:fail_first=2]")).await.unwrap();
            assert_eq!(r.status(), expected);
        }

        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = post(json!({ "model": "m", "messages": [] })).await.unwrap();
        assert_eq!(r.status(), 400);
        let r = client
            .post(format!("{base}/v1/responses"))
            .json(&json!({ "model": "m" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    #[tokio::test]
    async fn stream_error_drops_the_connection() {
        let base = start(MockUpstreamConfig::default()).await;
        let mut body = chat_body("break [mock:stream_error]");
        body["stream"] = json!(true);
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.is_err());
    }
}
