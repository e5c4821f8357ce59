//! `POST /v1/chat/completions` (OpenAI-compatible, with SSE streaming), `GET /v1/models` and
//! `GET /v1/models/{model}`, plus what the OpenAI-shaped routes share: reading tags and metadata,
//! and answering with the provider's body or its stream as they came.
//!
//! The request body is not rebuilt: the handler reads the few members the gateway needs from it
//! (`JsonBody`) and hands the bytes on, so tools, `n`, logprobs, content parts, unknown fields and
//! whatever OpenAI adds next reach the model unchanged (see README, "Pass-through").

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, RawJson};
use super::{overhead_header, tags_from_headers, validate_tags, AppState, RequestId};
use crate::auth::Caller;
use crate::config::Config;
use crate::gateway::{client_request, http_status_for, ChatInput, Endpoint, GatewayStreamItem};
use crate::provider::wire::{sse_frame, JsonBody};
use crate::provider::{Api, ChatMessage, CompletionRequest, ProviderError, Role};

/// The model version that answered, on every model call's response (the body's `model` is the
/// upstream's own name, as the upstream sent it).
pub static X_MODEL_VERSION: HeaderName = HeaderName::from_static("x-lqo-model-version");

// ---------------------------------------------------------------------------------------------
// OpenAPI shapes. Documentation only: requests are read member by member from the raw body and
// answers are the provider's own, so these list the common fields, not every one that works.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}]}))]
pub struct ChatCompletionRequest {
    /// A configured model version or one of its aliases; absent → the default one. Sent upstream
    /// as the version's `upstream_model`.
    #[schema(example = json!(null))]
    pub model: Option<String>,
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage` is turned on upstream either way; the usage chunk reaches the client only
    /// when it asked for it.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    #[schema(example = 256, minimum = 1, maximum = 100000)]
    pub max_completion_tokens: Option<u32>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; forwarded as sent.
    #[serde(default)]
    #[schema(example = 256, minimum = 1, maximum = 100000)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    #[schema(example = 1.0, minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[serde(default)]
    #[schema(example = 1.0, minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// How many choices (1–128); the record keeps the first.
    #[serde(default)]
    #[schema(example = 1, minimum = 1, maximum = 128)]
    pub n: Option<u32>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Function tools, forwarded as sent.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<serde_json::Value>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name": …}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<serde_json::Value>,
    /// End-user id; stored as the record's user_id.
    #[serde(default)]
    #[schema(example = "user-42")]
    pub user: Option<String>,
    /// Up to 16 string pairs stored with the record; `tags` (comma-separated) become tags.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputMessage {
    /// system, developer, user, assistant, tool or function.
    #[schema(example = "user")]
    pub role: String,
    /// A string, or content parts (`text`, `image_url`, `input_audio`, `file`, `refusal`).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = "Hello!")]
    pub content: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResponseFormat {
    /// text, json_object or json_schema.
    #[serde(rename = "type")]
    #[schema(example = "text")]
    pub kind: String,
    /// For json_schema: `{name, schema, strict}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub json_schema: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: i64,
    /// The upstream's own model name.
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: OutputMessage,
    pub finish_reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputMessage {
    pub role: String,
    pub content: Option<String>,
    pub refusal: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

// ---------------------------------------------------------------------------------------------
// Reading the request.
// ---------------------------------------------------------------------------------------------

/// A message's content as text: a string, or its parts' text with other parts shown as `[type]`
/// (an image is not text the gateway can count or store).
pub(super) struct ContentText(pub(super) String);

impl<'de> Deserialize<'de> for ContentText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ContentText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of content parts or null")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ContentText(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ContentText(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ContentText(String::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                #[derive(Deserialize)]
                struct Part {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    text: Option<String>,
                    #[serde(default)]
                    refusal: Option<String>,
                }
                let mut out = String::new();
                while let Some(p) = seq.next_element::<Part>()? {
                    match (p.text, p.refusal) {
                        (Some(t), _) | (None, Some(t)) => out.push_str(&t),
                        (None, None) => {
                            out.push('[');
                            out.push_str(&p.kind);
                            out.push(']');
                        }
                    }
                }
                Ok(ContentText(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct MessageIn {
    role: String,
    #[serde(default)]
    content: Option<ContentText>,
}

#[derive(Deserialize)]
struct StreamOptionsIn {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct JsonSchemaIn {
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
pub(super) struct FormatIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchemaIn>,
    /// The Responses API's `text.format` puts the schema here.
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

/// What the gateway reads from an OpenAI request body.
pub struct ParsedRequest {
    pub model: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub messages: Vec<ChatMessage>,
    pub json_mode: bool,
    pub json_schema: Option<Box<RawValue>>,
    pub max_tokens: Option<u32>,
    pub user: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Reads a Chat Completions body, refusing what the gateway cannot work with (no messages, an
/// unknown role, out-of-range sampling values) with a 400 naming the field.
pub fn parse_chat_completion(body: &JsonBody, config: &Config) -> Result<ParsedRequest, ApiError> {
    let messages: Vec<MessageIn> = body
        .member("messages")?
        .ok_or_else(|| ApiError::invalid("`messages` is required.").param("messages"))?;
    if messages.is_empty() {
        return Err(
            ApiError::invalid("`messages` must contain at least one message.").param("messages"),
        );
    }
    let max_messages = config.limits.max_messages;
    if messages.len() > max_messages {
        return Err(ApiError::invalid(format!(
            "`messages` has {} entries; at most {max_messages} are accepted.",
            messages.len()
        ))
        .param("messages"));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let Some(role) = Role::parse(&m.role) else {
            return Err(ApiError::invalid(format!(
                "messages[{i}].role must be one of {}; got {:?}.",
                Role::list(&Role::ALL),
                m.role
            ))
            .param(format!("messages[{i}].role")));
        };
        out.push(ChatMessage {
            role,
            content: m.content.map(|c| c.0).unwrap_or_default(),
        });
    }
    check_sampling(body)?;
    let format: Option<FormatIn> = body.member("response_format")?;
    let (json_mode, json_schema) = read_format(format, "response_format")?;
    let stream = body.member::<bool>("stream")?.unwrap_or(false);
    let include_usage = body
        .member::<StreamOptionsIn>("stream_options")?
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let max_tokens = match body.member::<u32>("max_completion_tokens")? {
        Some(n) => Some(n),
        None => body.member::<u32>("max_tokens")?,
    };
    Ok(ParsedRequest {
        model: body.member("model")?,
        stream,
        include_usage,
        messages: out,
        json_mode,
        json_schema,
        max_tokens,
        user: body.member("user")?,
        metadata: body.member("metadata")?,
    })
}

/// `temperature`, `top_p` and `n` within OpenAI's ranges.
pub(super) fn check_sampling(body: &JsonBody) -> Result<(), ApiError> {
    if let Some(t) = body.member::<f64>("temperature")? {
        if !(0.0..=2.0).contains(&t) {
            return Err(
                ApiError::invalid("`temperature` must be between 0 and 2.").param("temperature")
            );
        }
    }
    if let Some(p) = body.member::<f64>("top_p")? {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::invalid("`top_p` must be between 0 and 1.").param("top_p"));
        }
    }
    if let Some(n) = body.member::<u32>("n")? {
        if !(1..=128).contains(&n) {
            return Err(ApiError::invalid("`n` must be between 1 and 128.").param("n"));
        }
    }
    Ok(())
}

/// JSON mode and the schema of a `json_schema` format.
pub(super) fn read_format(
    format: Option<FormatIn>,
    at: &str,
) -> Result<(bool, Option<Box<RawValue>>), ApiError> {
    let Some(f) = format else {
        return Ok((false, None));
    };
    match f.kind.as_str() {
        "text" => Ok((false, None)),
        "json_object" => Ok((true, None)),
        "json_schema" => Ok((true, f.json_schema.and_then(|s| s.schema).or(f.schema))),
        other => Err(ApiError::invalid(format!(
            "{at}.type must be text, json_object or json_schema; got {other:?}."
        ))
        .param(format!("{at}.type"))),
    }
}

const MAX_TAGS_FROM_METADATA: usize = 16;

/// Tags from `x-lqo-tags` and `metadata.tags`, and the metadata as stored.
pub(super) fn tags_and_metadata(
    metadata: Option<BTreeMap<String, String>>,
    headers: &HeaderMap,
) -> Result<(Vec<String>, serde_json::Value), ApiError> {
    let mut tags = tags_from_headers(headers);
    let mut stored = serde_json::Map::new();
    if let Some(md) = metadata {
        if md.len() > MAX_TAGS_FROM_METADATA {
            return Err(
                ApiError::invalid("`metadata` may hold at most 16 pairs.").param("metadata")
            );
        }
        for (k, v) in md {
            if k.chars().count() > super::MAX_METADATA_KEY_CHARS
                || v.chars().count() > super::MAX_METADATA_VALUE_CHARS
                || k.contains('\0')
                || v.contains('\0')
            {
                return Err(ApiError::invalid(format!(
                    "`metadata` keys may have at most {} characters and values at most {}, without NUL.",
                    super::MAX_METADATA_KEY_CHARS,
                    super::MAX_METADATA_VALUE_CHARS
                ))
                .param("metadata"));
            }
            if k == "tags" {
                tags.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
            }
            stored.insert(k, serde_json::Value::String(v));
        }
    }
    validate_tags(&tags)?;
    Ok((tags, serde_json::Value::Object(stored)))
}

/// The core's input for a client's own OpenAI request.
#[allow(clippy::too_many_arguments)]
pub(super) fn chat_input(
    api: Api,
    endpoint: Endpoint,
    body: JsonBody,
    parsed: ParsedRequest,
    state: &AppState,
    rid: RequestId,
    headers: &HeaderMap,
    caller: Option<Caller>,
) -> Result<ChatInput, ApiError> {
    super::check_prompt_size(&state.config, &parsed.messages)?;
    super::validate_user_id("user", parsed.user.as_deref())?;
    let (tags, metadata) = tags_and_metadata(parsed.metadata, headers)?;
    Ok(ChatInput {
        request_id: rid.id,
        client_request_id: rid.client,
        endpoint,
        model_version: parsed.model,
        request: CompletionRequest {
            model: String::new(),
            messages: parsed.messages,
            max_tokens: parsed.max_tokens,
            json_mode: parsed.json_mode,
            user: parsed.user.clone(),
            client: client_request(api, body, parsed.stream, parsed.include_usage),
            ..CompletionRequest::default()
        },
        user_id: parsed.user,
        tags,
        metadata,
        started: rid.started,
        caller,
        json_schema: parsed.json_schema,
    })
}

// ---------------------------------------------------------------------------------------------
// Answering.
// ---------------------------------------------------------------------------------------------

fn model_version_header(model_version: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(model_version).ok()
}

/// Quiet time on a stream before the gateway sends an SSE comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The provider's JSON answer as it came, with the gateway's headers.
pub(super) fn json_answer(body: Bytes, model_version: &str, overhead_ms: f64) -> Response {
    let mut resp = (overhead_header(overhead_ms), body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = model_version_header(model_version) {
        headers.insert(X_MODEL_VERSION.clone(), v);
    }
    resp
}

/// A stream's frames as a `text/event-stream` body; a failure after the start becomes the API's
/// error event.
pub(super) fn sse_answer(
    api: Api,
    model_version: &str,
    frames: BoxStream<'static, GatewayStreamItem>,
) -> Response {
    let body = async_stream::stream! {
        let mut frames = frames;
        // A comment after each quiet KEEP_ALIVE, so proxies do not cut a stream whose model is
        // thinking; one timer, moved on at each write (as axum's own SSE keep-alive does).
        let idle = tokio::time::sleep(KEEP_ALIVE);
        tokio::pin!(idle);
        loop {
            let first = tokio::select! {
                item = frames.next() => item,
                _ = &mut idle => {
                    yield Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n"));
                    idle.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE);
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = Coalesced::new(api, first);
            // Frames that are ready together leave in one write. The upstream's body comes
            // from hyper's client connection task one chunk at a time: it decodes the next
            // chunk only after this task took the last, so "nothing ready" often means "not
            // decoded yet". The task yields up to YIELDS_BEFORE_WRITE times to let it run, and
            // writes when that brought nothing: one write per upstream read instead of one per
            // event (36 → 3 per streamed answer of the mock upstream), for a yield's delay.
            // Polled with a no-op waker: the next `frames.next()` above polls again with the
            // real one.
            let mut idle_yields = 0;
            let ended = loop {
                if batch.full() {
                    break false;
                }
                match frames.next().now_or_never() {
                    Some(Some(item)) => {
                        batch.push(item);
                        idle_yields = 0;
                    }
                    Some(None) => break true,
                    None if idle_yields < YIELDS_BEFORE_WRITE => {
                        idle_yields += 1;
                        tokio::task::yield_now().await;
                    }
                    None => break false,
                }
            };
            yield Ok(batch.into_bytes());
            if ended {
                break;
            }
            idle.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE);
        }
    };
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(v) = model_version_header(model_version) {
        headers.insert(X_MODEL_VERSION.clone(), v);
    }
    resp
}

/// Frames that leave in one write. One body chunk per event cost a `writev` each — about 36
/// per streamed answer of the mock upstream, half the gateway's CPU per streamed call.
struct Coalesced {
    api: Api,
    first: Bytes,
    more: Option<bytes::BytesMut>,
}

impl Coalesced {
    fn new(api: Api, first: GatewayStreamItem) -> Coalesced {
        Coalesced {
            api,
            first: Self::bytes(api, first),
            more: None,
        }
    }

    fn bytes(api: Api, item: GatewayStreamItem) -> Bytes {
        match item {
            GatewayStreamItem::Frame(frame) => frame,
            GatewayStreamItem::Error(e) => error_event(api, &e),
        }
    }

    fn push(&mut self, item: GatewayStreamItem) {
        let bytes = Self::bytes(self.api, item);
        let first = &self.first;
        self.more
            .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
            .extend_from_slice(&bytes);
    }

    fn full(&self) -> bool {
        self.more.as_ref().map_or(self.first.len(), |m| m.len()) >= COALESCE_BYTES
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, |m| m.freeze())
    }
}

/// How many times a stream yields for a next frame before it writes what it has. Two yields are
/// one turn of the scheduler: when its flush is ready, hyper's server dispatcher polls the body a
/// second time in the same turn (hyper 1.12 `poll_loop`, "re-check whether a second write poll
/// can make progress"), which completes tokio's first `yield_now` at once. One turn is what
/// hyper's client connection task needs to hand over the next chunk (measured: 103 of 104 chunks
/// came after exactly two yields in the response body, one in a task of its own).
const YIELDS_BEFORE_WRITE: u32 = 2;

/// At most this much of a stream's ready frames goes out in one write.
const COALESCE_BYTES: usize = 64 * 1024;

/// The error event that ends a stream that failed after it started.
fn error_event(api: Api, e: &ProviderError) -> Bytes {
    let code = match e {
        ProviderError::StreamInterrupted(_) => "stream_interrupted",
        _ if http_status_for(e) == 504 => "upstream_timeout",
        _ => "upstream_error",
    };
    match api {
        Api::Chat => {
            let body = json!({"error": {"message": e.to_string(), "type": "upstream_error", "param": null, "code": code}});
            sse_frame(None, &body.to_string())
        }
        Api::Responses => {
            let body =
                json!({"type": "error", "code": code, "message": e.to_string(), "param": null});
            sse_frame(Some("error"), &body.to_string())
        }
    }
}

#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's chat.completion object as it came, or with `stream: true` its text/event-stream of chat.completion.chunk objects ending in `data: [DONE]`; `x-lqo-model-version` names the model version",
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, invalid fields, or the upstream refused the request (its own error object)", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked API key (auth on)", body = ErrorBody),
        (status = 403, description = "The API key lacks the chat scope", body = ErrorBody),
        (status = 404, description = "Unknown model version", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited (by the gateway or the upstream); see Retry-After", body = ErrorBody),
        (status = 502, description = "Upstream failed, or refused the gateway's credentials", body = ErrorBody),
        (status = 504, description = "Upstream timed out", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    let (body, parsed) = off_the_workers_if_large(&state, body, parse_chat_completion).await;
    let parsed = parsed?;
    let stream = parsed.stream;
    let input = chat_input(
        Api::Chat,
        Endpoint::ChatCompletions,
        body,
        parsed,
        &state,
        rid,
        &headers,
        caller.map(|Extension(c)| c),
    )?;
    answer(&state, input, stream, Api::Chat).await
}

/// Reads the members the gateway needs from a client's body; a large one (its messages decoded
/// and copied) on the blocking pool, off the request workers.
pub(super) async fn off_the_workers_if_large(
    state: &AppState,
    body: JsonBody,
    parse: fn(&JsonBody, &Config) -> Result<ParsedRequest, ApiError>,
) -> (JsonBody, Result<ParsedRequest, ApiError>) {
    if body.bytes().len() < crate::blocking::HEAVY_BYTES {
        let parsed = parse(&body, &state.config);
        return (body, parsed);
    }
    let config = state.config.clone();
    crate::blocking::run(move || {
        let parsed = parse(&body, &config);
        (body, parsed)
    })
    .await
}

/// Runs the call and answers with the provider's body or stream.
pub(super) async fn answer(
    state: &AppState,
    input: ChatInput,
    stream: bool,
    api: Api,
) -> Result<Response, ApiError> {
    if !stream {
        let out = state.gateway.complete_chat(input).await?;
        let body = out.body.unwrap_or_default();
        return Ok(json_answer(body, &out.model_version, out.overhead_ms));
    }
    let (model_version, frames) = state.gateway.stream_chat(input).await?;
    Ok(sse_answer(api, &model_version, frames))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
}

#[utoipa::path(get, path = "/v1/models", tag = "openai",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The configured model versions", body = ModelList),
        (status = 401, description = "Missing, invalid, expired or revoked API key (auth on)", body = ErrorBody),
        (status = 403, description = "The API key lacks the chat scope", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
    ))]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .gateway
        .models()
        .map(|m| ModelObject {
            id: m.name.clone(),
            object: "model",
            created: 0,
            owned_by: m.provider_name.clone(),
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "A model version or one of its aliases", example = "mock-1")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The model version (`id` as asked for)", body = ModelObject),
        (status = 401, description = "Missing, invalid, expired or revoked API key (auth on)", body = ErrorBody),
        (status = 403, description = "The API key lacks the chat scope", body = ErrorBody),
        (status = 404, description = "No such model version or alias", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
    ))]
pub async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let route = state.gateway.resolve(Some(&model))?;
    Ok(Json(ModelObject {
        id: model,
        object: "model",
        created: 0,
        owned_by: route.provider_name.clone(),
    }))
}

#[cfg(test)]
mod stream_tests;
