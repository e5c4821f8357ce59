//! `POST /chat`: the original service's API, `{prompt, user_id, model_version?}` →
//! `{response, model_version, latency_ms, request_id}`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::{
    overhead_header, tags_from_headers, validate_metadata, validate_tags, validate_user_id,
    AppState, RequestId,
};
use crate::auth::Caller;
use crate::gateway::{ChatInput, Endpoint};
use crate::provider::{ChatMessage, CompletionRequest, Role};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"prompt": "What is the capital of France?", "user_id": "user-42"}))]
pub struct ChatRequest {
    /// The user's prompt.
    #[schema(example = "What is the capital of France?")]
    pub prompt: String,
    /// Who asked; stored with the record.
    #[schema(example = "user-42")]
    pub user_id: String,
    /// A configured model version; null or absent → the default one.
    #[serde(default)]
    pub model_version: Option<String>,
    /// Free-form labels stored with the record (also from the `x-lqo-tags` header, comma-separated).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Any JSON object, stored with the record.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub response: String,
    pub model_version: String,
    /// Milliseconds from request arrival to answer, gateway included.
    #[schema(example = 4735.19)]
    pub latency_ms: f64,
    pub request_id: String,
}

#[utoipa::path(
    post, path = "/chat", tag = "chat",
    request_body = ChatRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The model's answer", body = ChatResponse),
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
pub async fn chat(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if req.prompt.trim().is_empty() {
        return Err(ApiError::bad_request("`prompt` must not be empty.").param("prompt"));
    }
    let mut tags = req.tags;
    tags.extend(tags_from_headers(&headers));
    validate_tags(&tags)?;
    validate_user_id("user_id", Some(&req.user_id))?;
    let metadata = match req.metadata {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::bad_request("`metadata` must be a JSON object.").param("metadata"))
        }
    };
    validate_metadata(&metadata)?;
    let input = ChatInput {
        request_id: rid.id,
        client_request_id: rid.client,
        endpoint: Endpoint::Chat,
        model_version: req.model_version,
        request: CompletionRequest {
            messages: vec![ChatMessage {
                role: Role::User,
                content: req.prompt,
            }],
            user: Some(req.user_id.clone()),
            ..CompletionRequest::default()
        },
        user_id: Some(req.user_id),
        tags,
        metadata,
        started: rid.started,
        caller: caller.map(|Extension(c)| c),
        json_schema: None,
    };
    super::check_prompt_size(&state.config, &input.request.messages)?;
    let out = state.gateway.complete_chat(input).await?;
    Ok((
        overhead_header(out.overhead_ms),
        Json(ChatResponse {
            response: out.text,
            model_version: out.model_version,
            latency_ms: (out.latency_ms * 100.0).round() / 100.0,
            request_id: out.request_id.to_string(),
        }),
    ))
}
