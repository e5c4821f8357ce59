//! `POST /v1/chat/completions` (OpenAI-compatible, with SSE streaming) and `GET /v1/models`.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::{overhead_header, tags_from_headers, validate_tags, AppState, RequestId};
use crate::auth::Caller;
use crate::gateway::{http_status_for, ChatInput, Endpoint, GatewayStreamItem};
use crate::provider::{ChatMessage, CompletionRequest, Usage};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// A configured model version; absent → the default one.
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<StopSpec>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// End-user id; stored as the record's user_id.
    #[serde(default)]
    pub user: Option<String>,
    /// Up to 16 string pairs stored with the record; `tags` (comma-separated) become tags.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputMessage {
    /// system, developer, user, assistant or tool.
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
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
    pub kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: UsageBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: OutputMessage,
    pub finish_reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
}

impl From<&Usage> for UsageBody {
    fn from(u: &Usage) -> Self {
        UsageBody {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_input_tokens,
            },
        }
    }
}

const MAX_TAGS_FROM_METADATA: usize = 16;

/// Turns the OpenAI request into the core's input, rejecting what we cannot honour.
fn to_input(
    req: ChatCompletionRequest,
    state: &AppState,
    request_id: uuid::Uuid,
    started: std::time::Instant,
    headers: &HeaderMap,
) -> Result<(ChatInput, bool, bool), ApiError> {
    if req.messages.is_empty() {
        return Err(
            ApiError::bad_request("`messages` must contain at least one message.")
                .param("messages"),
        );
    }
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::bad_request("Only `n: 1` is supported.").param("n"));
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(
                ApiError::bad_request("`temperature` must be between 0 and 2.")
                    .param("temperature"),
            );
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::bad_request("`top_p` must be between 0 and 1.").param("top_p"));
        }
    }
    let max_messages = state.config.limits.max_messages;
    if req.messages.len() > max_messages {
        return Err(ApiError::bad_request(format!(
            "`messages` has {} entries; at most {max_messages} are accepted.",
            req.messages.len()
        ))
        .param("messages"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::bad_request(format!(
                "messages[{i}].role must be one of system, developer, user, assistant, tool; got {:?}.",
                m.role
            ))
            .param(format!("messages[{i}].role")));
        }
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content[{j}]: only text parts are supported, got type {:?}.",
                                p.kind
                            ))
                            .param(format!("messages[{i}].content[{j}]")))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage {
            role: m.role,
            content,
        });
    }
    super::check_prompt_size(&state.config, &messages)?;
    let json_mode = match req.response_format.as_ref().map(|f| f.kind.as_str()) {
        None | Some("text") => false,
        Some("json_object") | Some("json_schema") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "response_format.type must be text, json_object or json_schema; got {other:?}."
            ))
            .param("response_format.type"))
        }
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = req.stream_options.map(|o| o.include_usage).unwrap_or(false);

    let mut tags = tags_from_headers(headers);
    let mut metadata = serde_json::Map::new();
    if let Some(md) = req.metadata {
        if md.len() > MAX_TAGS_FROM_METADATA {
            return Err(
                ApiError::bad_request("`metadata` may hold at most 16 pairs.").param("metadata"),
            );
        }
        for (k, v) in md {
            if k == "tags" {
                tags.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
            }
            metadata.insert(k, serde_json::Value::String(v));
        }
    }
    validate_tags(&tags)?;
    let stop = match req.stop {
        None => vec![],
        Some(StopSpec::One(s)) => vec![s],
        Some(StopSpec::Many(v)) => v,
    };
    let input = ChatInput {
        request_id,
        endpoint: Endpoint::ChatCompletions,
        model_version: req.model,
        request: CompletionRequest {
            model: String::new(),
            messages,
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            stop,
            json_mode,
            user: req.user.clone(),
        },
        user_id: req.user,
        tags,
        metadata: serde_json::Value::Object(metadata),
        started,
        caller: None,
    };
    Ok((input, stream, include_usage))
}

#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A chat.completion object, or with `stream: true` a text/event-stream of chat.completion.chunk objects ending in `data: [DONE]`", body = ChatCompletion),
        (status = 400, description = "Malformed JSON or invalid fields", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked API key (auth on)", body = ErrorBody),
        (status = 403, description = "The API key lacks the chat scope", body = ErrorBody),
        (status = 404, description = "Unknown model version", body = ErrorBody),
        (status = 408, description = "The request body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody),
        (status = 502, description = "Upstream failed", body = ErrorBody),
        (status = 504, description = "Upstream timed out", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(RequestId(request_id, started)): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let (mut input, stream, include_usage) = to_input(req, &state, request_id, started, &headers)?;
    input.caller = caller.map(|Extension(c)| c);
    let id = format!("chatcmpl-{}", request_id.simple());
    let created = chrono::Utc::now().timestamp();
    if !stream {
        let out = state.gateway.complete_chat(input).await?;
        let body = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: out.model_version,
            choices: vec![Choice {
                index: 0,
                message: OutputMessage {
                    role: "assistant",
                    content: out.text,
                },
                finish_reason: out.finish_reason,
            }],
            usage: UsageBody::from(&out.usage),
        };
        return Ok((overhead_header(out.overhead_ms), Json(body)).into_response());
    }

    let (model, upstream) = state.gateway.stream_chat(input).await?;
    let chunks = ChunkWriter::new(&id, created, &model);
    let events = async_stream::stream! {
        yield chunks.role();
        let mut upstream = upstream;
        while let Some(item) = upstream.next().await {
            match item {
                GatewayStreamItem::Delta(d) => yield chunks.delta(&d),
                GatewayStreamItem::Done(out) => {
                    yield chunks.finish(&out.finish_reason);
                    if include_usage {
                        yield chunks.usage(&UsageBody::from(&out.usage));
                    }
                    yield "[DONE]".to_string();
                    break;
                }
                GatewayStreamItem::Error(e) => {
                    let code = if http_status_for(&e) == 504 {
                        "upstream_timeout"
                    } else {
                        "upstream_error"
                    };
                    let body = json!({"error": {"message": e.to_string(), "type": "upstream_error", "param": null, "code": code}});
                    yield body.to_string();
                    break;
                }
            }
        }
    }
    .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Writes `chat.completion.chunk` objects around a prefix built once per response: a stream sends
/// one chunk per token, and building a `serde_json::Value` tree for each showed in profiles.
struct ChunkWriter {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`
    prefix: String,
}

impl ChunkWriter {
    fn new(id: &str, created: i64, model: &str) -> Self {
        let mut prefix = String::with_capacity(128);
        prefix.push_str("{\"id\":");
        prefix.push_str(&json_string(id));
        prefix.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.push_str(&created.to_string());
        prefix.push_str(",\"model\":");
        prefix.push_str(&json_string(model));
        prefix.push_str(",\"choices\":[");
        ChunkWriter { prefix }
    }

    /// One chunk with one choice; its `delta` object is the concatenation of `delta`.
    fn choice(&self, delta: &[&str], finish_reason: Option<&str>) -> String {
        let len: usize = delta.iter().map(|p| p.len()).sum();
        let mut s = String::with_capacity(self.prefix.len() + len + 64);
        s.push_str(&self.prefix);
        s.push_str("{\"index\":0,\"delta\":");
        delta.iter().for_each(|p| s.push_str(p));
        s.push_str(",\"finish_reason\":");
        match finish_reason {
            Some(r) => s.push_str(&json_string(r)),
            None => s.push_str("null"),
        }
        s.push_str("}]}");
        s
    }

    fn role(&self) -> String {
        self.choice(&["{\"role\":\"assistant\",\"content\":\"\"}"], None)
    }

    /// The hottest of these (one per token): the escaped text goes straight into the chunk.
    fn delta(&self, content: &str) -> String {
        self.choice(&["{\"content\":", &json_string(content), "}"], None)
    }

    fn finish(&self, finish_reason: &str) -> String {
        self.choice(&["{}"], Some(finish_reason))
    }

    /// The `stream_options.include_usage` chunk: no choices, the usage.
    fn usage(&self, usage: &UsageBody) -> String {
        let mut s = self.prefix.clone();
        s.push_str("],\"usage\":");
        s.push_str(&serde_json::to_string(usage).unwrap_or_else(|_| "null".into()));
        s.push('}');
        s
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
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

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn chunks_are_valid_json_with_escaped_content() {
        let w = ChunkWriter::new("chatcmpl-1", 42, "gpt-\"x\"");
        let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap();
        let role = parse(w.role());
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(role["model"], "gpt-\"x\"");
        assert_eq!(role["created"], 42);
        let tricky = "a \"quote\", a \\ backslash,\na newline, ünïcødé 🚀 and \u{1}";
        let d = parse(w.delta(tricky));
        assert_eq!(d["object"], "chat.completion.chunk");
        assert_eq!(d["choices"][0]["delta"]["content"], tricky);
        assert!(d["choices"][0]["finish_reason"].is_null());
        let f = parse(w.finish("length"));
        assert_eq!(f["choices"][0]["finish_reason"], "length");
        assert_eq!(f["choices"][0]["delta"], json!({}));
        let u = parse(w.usage(&UsageBody::from(&Usage {
            input_tokens: 3,
            cached_input_tokens: 1,
            output_tokens: 5,
        })));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 8);
        assert_eq!(u["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    }
}
