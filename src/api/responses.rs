//! `POST /v1/responses` (OpenAI Responses API, with SSE streaming): forwarded as it came but for
//! `model` to a model version on an `openai_responses` provider, answered in the same shape by
//! the mock, translated to and from Chat Completions for a Chat Completions provider (what that
//! API cannot keep — `previous_response_id`, built-in tools, … — is a 400 naming the field).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, RawJson};
use super::openai::{answer, chat_input, check_sampling, read_format, FormatIn, ParsedRequest};
use super::{AppState, RequestId};
use crate::auth::Caller;
use crate::gateway::Endpoint;
use crate::provider::wire::JsonBody;
use crate::provider::{Api, ChatMessage, Role};

/// Documentation only: the body is read member by member and forwarded as it came.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"input": "What is the capital of France?"}))]
pub struct ResponsesRequest {
    /// A configured model version or one of its aliases; absent → the default one.
    #[schema(example = json!(null))]
    pub model: Option<String>,
    /// A string, or input items (messages with text/image/file parts, function_call and
    /// function_call_output items).
    #[schema(value_type = Object, example = "What is the capital of France?")]
    pub input: serde_json::Value,
    #[serde(default)]
    #[schema(example = "Answer in one sentence.")]
    pub instructions: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    #[schema(example = 256, minimum = 1, maximum = 100000)]
    pub max_output_tokens: Option<u32>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub text: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(example = "user-42")]
    pub user: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The fields of a Responses object the OpenAPI document promises; the body is the upstream's.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ResponseObject {
    pub id: String,
    pub object: String,
    pub status: Option<String>,
    pub model: String,
    #[schema(value_type = Vec<Object>)]
    pub output: Vec<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub usage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<super::openai::ContentText>,
    #[serde(default)]
    output: Option<super::openai::ContentText>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputIn {
    Text(String),
    Items(Vec<ItemIn>),
}

#[derive(Deserialize)]
struct TextIn {
    #[serde(default)]
    format: Option<FormatIn>,
}

/// Roles a Responses `message` input item may carry.
const ROLES: [Role; 4] = [Role::System, Role::Developer, Role::User, Role::Assistant];

/// Reads a Responses body: the conversation as text (instructions first), JSON mode, limits.
pub fn parse_responses(body: &JsonBody) -> Result<ParsedRequest, ApiError> {
    let input: InputIn = body
        .member("input")?
        .ok_or_else(|| ApiError::invalid("`input` is required.").param("input"))?;
    let mut messages = Vec::new();
    if let Some(i) = body.member::<String>("instructions")? {
        messages.push(ChatMessage {
            role: Role::System,
            content: i,
        });
    }
    match input {
        InputIn::Text(t) => messages.push(ChatMessage {
            role: Role::User,
            content: t,
        }),
        InputIn::Items(items) => {
            for (i, item) in items.into_iter().enumerate() {
                match item.kind.as_deref().unwrap_or("message") {
                    "message" => {
                        let given = item.role.unwrap_or_default();
                        let Some(role) = Role::parse(&given).filter(|r| ROLES.contains(r)) else {
                            return Err(ApiError::invalid(format!(
                                "input[{i}].role must be one of {}; got {given:?}.",
                                Role::list(&ROLES)
                            ))
                            .param(format!("input[{i}].role")));
                        };
                        messages.push(ChatMessage {
                            role,
                            content: item.content.map(|c| c.0).unwrap_or_default(),
                        });
                    }
                    "function_call_output" => messages.push(ChatMessage {
                        role: Role::Tool,
                        content: item.output.map(|c| c.0).unwrap_or_default(),
                    }),
                    "function_call" => messages.push(ChatMessage {
                        role: Role::Assistant,
                        content: String::new(),
                    }),
                    // Reasoning items, item references, built-in tool calls: not text.
                    _ => {}
                }
            }
        }
    }
    if messages.is_empty() {
        return Err(ApiError::invalid("`input` must not be empty.").param("input"));
    }
    check_sampling(body)?;
    let text: Option<TextIn> = body.member("text")?;
    let (json_mode, json_schema) = read_format(text.and_then(|t| t.format), "text.format")?;
    Ok(ParsedRequest {
        model: body.member("model")?,
        stream: body.member::<bool>("stream")?.unwrap_or(false),
        include_usage: false,
        messages,
        json_mode,
        json_schema,
        max_tokens: body.member::<u32>("max_output_tokens")?,
        user: body.member("user")?,
        metadata: body.member("metadata")?,
    })
}

#[utoipa::path(
    post, path = "/v1/responses", tag = "openai",
    request_body = ResponsesRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's response object as it came (translated from a Chat Completions provider's answer), or with `stream: true` its text/event-stream of Responses events ending in `response.completed`; `x-lqo-model-version` names the model version",
            content((ResponseObject = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Malformed JSON, invalid fields, a field a Chat Completions provider cannot carry, or the upstream refused the request", body = ErrorBody),
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
pub async fn responses(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    let (body, parsed) =
        super::openai::off_the_workers_if_large(&state, body, |b, _| parse_responses(b)).await;
    let parsed = parsed?;
    let stream = parsed.stream;
    let input = chat_input(
        Api::Responses,
        Endpoint::Responses,
        body,
        parsed,
        &state,
        rid,
        &headers,
        caller.map(|Extension(c)| c),
    )?;
    answer(&state, input, stream, Api::Responses).await
}
