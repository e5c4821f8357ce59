//! HTTP handlers, one file per resource, and the router that ties them to the app state.
//! Handlers parse, call the gateway core, and shape the answer; no SQL and no business rules here.

pub mod access;
pub mod admin;
pub mod chat;
pub mod embeddings;
pub mod error;
pub mod feedback;
pub mod health;
pub mod logs;
pub mod openai;
pub mod responses;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tracing::Instrument;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::Config;
use crate::eval::EvalSettings;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::provider::ChatMessage;
use crate::store::writer::WriterHandle;
use crate::store::Store;
use access::SecurityAddon;
use error::ApiError;

/// Shared by every handler. One `Arc`: axum clones the state for every extractor and middleware
/// layer of every request, and cloning (and dropping) one pointer instead of a struct of them showed
/// up in profiles at saturation.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub config: Arc<Config>,
    /// The evaluation's view of `config` (judge, model versions), built once.
    pub eval: Arc<EvalSettings>,
    pub gateway: Arc<Gateway>,
    pub store: Store,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    /// Client keys, scopes and rate limits (`crate::auth`).
    pub auth: Arc<Auth>,
    /// What `/ready` answers from.
    pub health: Arc<crate::store::health::HealthProbe>,
}

/// Who a request is: the gateway's own id (a new UUIDv7, the key of the call's record and what
/// judge sampling hashes), the client's `x-request-id` when it sent one (stored beside it,
/// echoed back, findable), and when the request arrived.
#[derive(Debug, Clone)]
pub struct RequestId {
    pub id: Uuid,
    pub started: Instant,
    pub client: Option<String>,
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The gateway's id of the call, on every response (`x-request-id` echoes the client's own).
pub static X_LQO_REQUEST_ID: HeaderName = HeaderName::from_static("x-lqo-request-id");
pub static X_OVERHEAD: HeaderName = HeaderName::from_static("x-lqo-overhead-ms");

/// Longest accepted client `x-request-id`.
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

/// The client's `x-request-id`: None when absent or blank, Err when it is not 1 to
/// [`MAX_CLIENT_REQUEST_ID`] visible ASCII characters.
fn client_request_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(&X_REQUEST_ID) else {
        return Ok(None);
    };
    let text = v.to_str().ok().map(str::trim);
    match text {
        Some("") => Ok(None),
        Some(t) if t.len() <= MAX_CLIENT_REQUEST_ID && !t.contains('\t') => Ok(Some(t.to_string())),
        _ => Err(ApiError::invalid(format!(
            "The `x-request-id` header must be 1 to {MAX_CLIENT_REQUEST_ID} visible ASCII characters."
        ))
        .param("x-request-id")),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "LLM Quality Observer", description = "An LLM gateway that logs every call and exposes latency, tokens, cost and quality per model version."),
    paths(chat::chat, openai::chat_completions, responses::responses, embeddings::embeddings,
        openai::list_models, openai::get_model, health::health, health::ready, health::metrics,
        logs::list_logs, logs::get_log,
        feedback::submit_feedback, feedback::agreement,
        admin::create_key, admin::list_keys, admin::revoke_key),
    modifiers(&SecurityAddon),
    tags(
        (name = "chat", description = "The original API"),
        (name = "openai", description = "OpenAI-compatible API"),
        (name = "ops", description = "Health and metrics"),
        (name = "logs", description = "The raw records read back"),
        (name = "feedback", description = "Human ratings of answers, and how often the LLM judge agrees with them"),
        (name = "admin", description = "Client API keys (scope admin; authentication must be on)"),
    )
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let api = Router::new()
        .route("/chat", post(chat::chat))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{model}", get(openai::get_model))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/v1/feedback", post(feedback::submit_feedback))
        .route("/v1/feedback/agreement", get(feedback::agreement))
        .route("/v1/logs", get(logs::list_logs))
        .route("/v1/logs/{request_id}", get(logs::get_log))
        .route(
            "/v1/admin/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route("/v1/admin/keys/{name}", delete(admin::revoke_key))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        // Keys and scopes per matched route (`auth::ROUTE_ACCESS`); unknown routes stay 404.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::route_context,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        // One outer layer, not one per concern: each `from_fn` layer clones the service stack
        // below it for every request, and that showed in profiles at saturation.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ));
    api.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such route; see /docs for the API.").code("route_not_found")
}

/// For every request: its id, a tracing span, the whole-request deadline, JSON bodies for the
/// errors axum answers on its own, the `x-request-id` header and the per-route HTTP counter.
async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = Uuid::now_v7();
    let client = client_request_id(req.headers());
    let echo = match &client {
        Ok(Some(c)) => HeaderValue::from_str(c).ok(),
        _ => None,
    };
    let span = tracing::info_span!("request", %request_id, method = %req.method(), path = %req.uri().path());
    let resp = match client {
        Ok(client) => {
            req.extensions_mut().insert(RequestId {
                id: request_id,
                started,
                client,
            });
            access::whole_request_timeout(&state, started, req, next)
                .instrument(span.clone())
                .await
        }
        Err(e) => e.into_response(),
    };
    let mut resp = access::json_bare_errors(resp);
    let status = resp.status();
    // Route templates only, so the label set stays bounded whatever paths clients send.
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    state
        .metrics
        .http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = request_id.hyphenated().encode_lower(&mut id);
    if let Ok(v) = HeaderValue::from_str(id) {
        // The client's own id is echoed when it sent a valid one; else the gateway's.
        let echoed = echo.unwrap_or_else(|| v.clone());
        resp.headers_mut().insert(X_REQUEST_ID.clone(), echoed);
        resp.headers_mut().insert(X_LQO_REQUEST_ID.clone(), v);
    }
    // Debug, not info: every call is already a database record and a metric sample, and writing
    // this line for each request cost ~5 % of the gateway's CPU at saturation (bench/README.md).
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "handled"
        )
    });
    resp
}

/// A `since`/`until`-style query parameter: any form `timespec` reads, spans counted back from
/// now. A 400 naming the parameter otherwise.
pub fn time_param(
    name: &'static str,
    value: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    crate::timespec::parse_time(v, chrono::Utc::now(), crate::timespec::Toward::Past)
        .map(Some)
        .map_err(|e| {
            let hint = if v.trim().contains(' ') {
                " (a `+` in a URL query means a space: send the offset's + as %2B, or use Z)"
            } else {
                ""
            };
            ApiError::bad_request(format!("`{name}`: {e}{hint}."))
                .param(name)
                .code("invalid_value")
        })
}

/// `x-lqo-overhead-ms`: what the gateway added to this request, so users see it without a benchmark.
/// Milliseconds with three decimals, formatted from whole microseconds: `{:.3}` of an f64 takes
/// the float formatter's exact path, ~1k instructions per call.
pub fn overhead_header(overhead_ms: f64) -> [(HeaderName, HeaderValue); 1] {
    use std::fmt::Write;
    // A negative or NaN input (neither happens: it is a saturating difference) shows as 0.000.
    let us = (overhead_ms * 1000.0).round().max(0.0) as u64;
    let mut text = String::with_capacity(16);
    let _ = write!(text, "{}.{:03}", us / 1000, us % 1000);
    let v = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0"));
    [(X_OVERHEAD.clone(), v)]
}

/// Tags from the `x-lqo-tags` header, comma-separated.
pub fn tags_from_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-lqo-tags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
/// Longest accepted user id (`user_id`, `user`), in characters: well under what PostgreSQL's
/// index on it can hold (a 3,000-character id was answered 200 and then refused by the database).
pub use crate::eval::feedback::MAX_USER_ID_CHARS;
/// Most bytes of a `/chat` `metadata` object, as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest metadata key, in characters (OpenAI's limit).
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest value of the OpenAI routes' string metadata, in characters (OpenAI's limit).
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

pub fn validate_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(
            ApiError::bad_request(format!("At most {MAX_TAGS} tags are accepted.")).param("tags"),
        );
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > MAX_TAG_LEN || t.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "Tags must be 1 to {MAX_TAG_LEN} characters without NUL; got {t:?}."
        ))
        .param("tags"));
    }
    Ok(())
}

/// A user id as stored and filtered on: at most [`MAX_USER_ID_CHARS`] characters, no NUL
/// (PostgreSQL text cannot hold one). `field` names it in the 400 (`user_id`, `user`).
pub fn validate_user_id(field: &'static str, user: Option<&str>) -> Result<(), ApiError> {
    let Some(u) = user else { return Ok(()) };
    if u.chars().count() > MAX_USER_ID_CHARS {
        return Err(ApiError::invalid(format!(
            "`{field}` may have at most {MAX_USER_ID_CHARS} characters."
        ))
        .param(field));
    }
    if u.contains('\0') {
        return Err(
            ApiError::invalid(format!("`{field}` must not contain a NUL character.")).param(field),
        );
    }
    Ok(())
}

/// A metadata object as stored (jsonb on PostgreSQL): at most [`MAX_METADATA_BYTES`] as JSON,
/// keys of at most [`MAX_METADATA_KEY_CHARS`], and no NUL in any key or string at any depth.
pub fn validate_metadata(metadata: &serde_json::Value) -> Result<(), ApiError> {
    fn nul_or_long_key(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => {
                Some("must not contain a NUL character".into())
            }
            serde_json::Value::Array(items) => items.iter().find_map(nul_or_long_key),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                if k.contains('\0') {
                    Some("must not contain a NUL character".into())
                } else if k.chars().count() > MAX_METADATA_KEY_CHARS {
                    Some(format!(
                        "keys may have at most {MAX_METADATA_KEY_CHARS} characters"
                    ))
                } else {
                    nul_or_long_key(v)
                }
            }),
            _ => None,
        }
    }
    if let Some(problem) = nul_or_long_key(metadata) {
        return Err(ApiError::invalid(format!("`metadata` {problem}.")).param("metadata"));
    }
    let bytes = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "`metadata` is {bytes} bytes as JSON; at most {MAX_METADATA_BYTES} are accepted."
        ))
        .param("metadata"));
    }
    Ok(())
}

/// Rejects prompts over `limits.max_prompt_chars` before anything is sent upstream.
pub fn check_prompt_size(config: &Config, messages: &[ChatMessage]) -> Result<(), ApiError> {
    let chars: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    let max = config.limits.max_prompt_chars;
    if chars > max {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The prompt has {chars} characters; at most {max} are accepted (limits.max_prompt_chars)."),
        )
        .code("prompt_too_long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_overhead_header_has_three_decimals_as_before() {
        for (ms, want) in [
            (0.0, "0.000"),
            (0.0424, "0.042"),
            (1.23456, "1.235"),
            (12.0, "12.000"),
            (12345.6789, "12345.679"),
            (-1.0, "0.000"),
            (f64::NAN, "0.000"),
        ] {
            let [(name, value)] = super::overhead_header(ms);
            assert_eq!(name, "x-lqo-overhead-ms");
            assert_eq!(value, want, "{ms}");
            if ms >= 0.0 {
                assert_eq!(value.to_str().unwrap(), format!("{ms:.3}"), "{ms}");
            }
        }
    }
}
