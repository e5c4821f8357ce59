//! `POST /v1/embeddings`: forwarded as it came but for `model` (so `encoding_format: base64`,
//! `dimensions` and whatever else reach the model), answered with the upstream's list as it came;
//! tokens and cost metered and the call recorded like a chat, without heuristics or judge.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, RawJson};
use super::openai::{json_answer, tags_and_metadata};
use super::{AppState, RequestId};
use crate::auth::Caller;
use crate::gateway::EmbeddingsInput;
use crate::provider::{EmbeddingsRequest, Role};

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Documentation only: the body is forwarded as it came.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"input": "The food was delicious."}))]
pub struct EmbeddingsRequestDoc {
    /// A configured model version or one of its aliases; absent → the default one.
    #[schema(example = json!(null))]
    pub model: Option<String>,
    /// A string, an array of strings, or token arrays.
    #[schema(value_type = Object, example = "The food was delicious.")]
    pub input: serde_json::Value,
    /// `float` (default) or `base64`.
    #[serde(default)]
    #[schema(example = "float")]
    pub encoding_format: Option<String>,
    #[serde(default)]
    #[schema(example = 16, minimum = 1, maximum = 4096)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    #[schema(example = "user-42")]
    pub user: Option<String>,
}

/// The fields of an embeddings list the OpenAPI document promises; the body is the upstream's.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct EmbeddingsList {
    pub object: String,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub model: String,
    #[schema(value_type = Option<Object>)]
    pub usage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputIn {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

fn inputs_of(input: InputIn) -> Vec<String> {
    let tokens = |t: Vec<u32>| t.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    match input {
        InputIn::One(s) => vec![s],
        InputIn::Many(v) => v,
        InputIn::Tokens(t) => vec![tokens(t)],
        InputIn::TokenLists(v) => v.into_iter().map(tokens).collect(),
    }
}

#[utoipa::path(
    post, path = "/v1/embeddings", tag = "openai",
    request_body = EmbeddingsRequestDoc,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's embeddings list as it came (base64 vectors when asked for)", body = EmbeddingsList),
        (status = 400, description = "Malformed JSON, invalid fields, or the upstream refused the request", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked API key (auth on)", body = ErrorBody),
        (status = 403, description = "The API key lacks the chat scope", body = ErrorBody),
        (status = 404, description = "Unknown model version", body = ErrorBody),
        (status = 413, description = "Body or input too large", body = ErrorBody),
        (status = 429, description = "Rate limited (by the gateway or the upstream); see Retry-After", body = ErrorBody),
        (status = 502, description = "Upstream failed, or refused the gateway's credentials", body = ErrorBody),
        (status = 504, description = "Upstream timed out", body = ErrorBody),
    )
)]
pub async fn embeddings(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<Response, ApiError> {
    let input: InputIn = body
        .member("input")?
        .ok_or_else(|| ApiError::invalid("`input` is required.").param("input"))?;
    let inputs = inputs_of(input);
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(format!(
            "`input` must hold 1 to {MAX_INPUTS} inputs; got {}.",
            inputs.len()
        ))
        .param("input"));
    }
    let as_messages: Vec<crate::provider::ChatMessage> = inputs
        .iter()
        .map(|t| crate::provider::ChatMessage {
            role: Role::User,
            content: t.clone(),
        })
        .collect();
    super::check_prompt_size(&state.config, &as_messages)?;
    let user: Option<String> = body.member("user")?;
    super::validate_user_id("user", user.as_deref())?;
    let (tags, metadata) = tags_and_metadata(None, &headers)?;
    let input = EmbeddingsInput {
        request_id: rid.id,
        client_request_id: rid.client,
        model_version: body.member("model")?,
        request: EmbeddingsRequest {
            model: String::new(),
            body,
            inputs,
        },
        user_id: user,
        tags,
        metadata,
        started: rid.started,
        caller: caller.map(|Extension(c)| c),
    };
    let out = state.gateway.embed(input).await?;
    Ok(json_answer(out.body, &out.model_version, out.overhead_ms))
}
