//! A standalone OpenAI-compatible fake model server (`lqo mock-upstream`) for demos, integration tests
//! and benchmarks: Chat Completions, Responses and embeddings, streaming or not, with latency,
//! errors and triggers. It answers with the same shapes as the built-in mock
//! (`provider::mock::shapes`): tool calls (streamed as deltas), `n` choices, log probabilities,
//! schema-shaped JSON, Responses function calls, base64 embeddings.
//!
//! Everything is deterministic: the answer comes from the prompt (see `provider::mock`), the error
//! rate fails a fixed subset of requests, and `[mock:…]` triggers in the last user message force
//! statuses, delays, retry sequences, truncation and broken streams. Usage is counted with
//! `tokens.rs`, so cost figures downstream are realistic. `GET /mock/requests` shows the last
//! request bodies exactly as received, so tests can check what a gateway forwarded.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::provider::mock::shapes::{self, MockAnswer, MockFrame, MockRequest};
use crate::provider::mock::{error_type_for, last_user_text, Triggers, CHUNKS_BEFORE_STREAM_ERROR};
use crate::provider::Api;
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
/// Request bodies kept for `GET /mock/requests`.
const RECORDED_REQUESTS: usize = 32;
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
    /// The last request bodies (path, bytes as received), for `GET /mock/requests`.
    recorded: Mutex<VecDeque<(&'static str, Bytes)>>,
}

/// The router, for callers that want to serve it their own way.
pub fn router(cfg: MockUpstreamConfig) -> Router {
    let state = Arc::new(MockState {
        cfg,
        requests: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        attempts: Mutex::new(HashMap::new()),
        recorded: Mutex::new(VecDeque::with_capacity(RECORDED_REQUESTS)),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/mock/stats", get(stats))
        .route("/mock/requests", get(recorded_requests))
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

fn record(state: &MockState, path: &'static str, body: &Bytes) {
    let mut recorded = state
        .recorded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if recorded.len() == RECORDED_REQUESTS {
        recorded.pop_front();
    }
    recorded.push_back((path, body.clone()));
}

/// Sleeps only for a non-zero duration: tokio rounds even a zero sleep up to its next 1 ms
/// timer tick, which would put a false floor under every benchmark of the gateway.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Applies delays, error triggers and the error rate to a request whose last user text is
/// `prompt`; `Err` is the error response to send.
async fn gate(
    state: &MockState,
    headers: &HeaderMap,
    triggers: &Triggers,
    prompt: &str,
) -> Result<u64, Response> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
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
    Ok(n)
}

/// Parses a completion request and passes it through [`gate`]; the answer, or the response to send.
async fn plan(
    state: &MockState,
    headers: &HeaderMap,
    api: Api,
    body: &Bytes,
) -> Result<(MockRequest, MockAnswer, Triggers), Response> {
    let req = MockRequest::parse(api, body).map_err(|m| error_response(400, m))?;
    let triggers = Triggers::for_messages(&req.messages);
    let n = gate(state, headers, &triggers, last_user_text(&req.messages)).await?;
    let answer = shapes::answer(&req, state.cfg.output_tokens, &triggers, n);
    Ok((req, answer, triggers))
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

fn frame_text(f: &MockFrame) -> String {
    match f.event {
        Some(e) => format!("event: {e}\ndata: {}\n\n", f.data),
        None => format!("data: {}\n\n", f.data),
    }
}

fn stream_break() -> std::io::Error {
    std::io::Error::other("[mock:stream_error] dropped the stream")
}

/// Streams `frames` then `last`, with the configured latency before the first and delay
/// between content events; `[mock:stream_error]` drops the connection after a few.
fn stream_frames(
    state: &MockState,
    frames: Vec<MockFrame>,
    last: String,
    stream_error: bool,
) -> Response {
    let latency = Duration::from_millis(state.cfg.latency_ms);
    let chunk_delay = Duration::from_millis(state.cfg.chunk_delay_ms);
    let out = async_stream::stream! {
        pause(latency).await;
        let mut content_events = 0;
        for f in frames {
            if f.content {
                if stream_error && content_events == CHUNKS_BEFORE_STREAM_ERROR {
                    // Let the chunks so far reach the client before the connection is dropped.
                    tokio::time::sleep(STREAM_ERROR_FLUSH).await;
                    yield Err(stream_break());
                    return;
                }
                if content_events > 0 {
                    pause(chunk_delay).await;
                }
                content_events += 1;
            }
            yield Ok(frame_text(&f));
        }
        yield Ok(last);
    };
    sse_response(out)
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Chat Completions, Responses, embeddings.
// ---------------------------------------------------------------------------------------------

async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "/v1/chat/completions", &body);
    let (req, answer, triggers) = match plan(&state, &headers, Api::Chat, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !req.stream {
        pause(Duration::from_millis(state.cfg.latency_ms)).await;
        return json_response(&shapes::chat_completion(&answer));
    }
    let frames = shapes::chat_chunks(&answer, req.include_usage, 1);
    stream_frames(
        &state,
        frames,
        "data: [DONE]\n\n".into(),
        triggers.stream_error,
    )
}

async fn responses(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "/v1/responses", &body);
    let (req, answer, triggers) = match plan(&state, &headers, Api::Responses, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !req.stream {
        pause(Duration::from_millis(state.cfg.latency_ms)).await;
        return json_response(&shapes::response_object(&answer, &req, true));
    }
    let (frames, last) = shapes::response_events(&answer, &req);
    stream_frames(&state, frames, frame_text(&last), triggers.stream_error)
}

async fn embeddings(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "/v1/embeddings", &body);
    let v: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_response(400, format!("invalid JSON body: {e}")),
    };
    let inputs = match v.get("input").map(shapes::embedding_inputs) {
        Some(Ok(i)) => i,
        Some(Err(m)) => return error_response(400, m),
        None => return error_response(400, "'input' is required".into()),
    };
    let (dimensions, base64) = match shapes::embedding_options(&v) {
        Ok(o) => o,
        Err(m) => return error_response(400, m),
    };
    let joined = inputs.join("\n");
    let triggers = Triggers::parse(&joined);
    if let Err(response) = gate(&state, &headers, &triggers, &joined).await {
        return response;
    }
    pause(Duration::from_millis(state.cfg.latency_ms)).await;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-embedding");
    json_response(&shapes::embeddings_list(&inputs, model, dimensions, base64))
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

/// The last request bodies, oldest first: `[{path, body}]`, the body as received (parsed when
/// it is JSON, else as a string).
async fn recorded_requests(State(state): State<Arc<MockState>>) -> Json<Value> {
    let recorded = state
        .recorded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    Json(Value::Array(
        recorded
            .iter()
            .map(|(path, body)| {
                let body = serde_json::from_slice(body)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
                json!({ "path": path, "body": body })
            })
            .collect(),
    ))
}

async fn not_found() -> Response {
    error_response(404, "unknown route".into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::provider::ChatMessage;

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
