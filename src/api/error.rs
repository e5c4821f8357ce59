//! `ApiError`: the one place that decides an error's HTTP status and its OpenAI-style JSON body,
//! and `ApiJson`, the body extractor that turns every malformed input into such an error.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::keys::KeyAdminError;
use crate::auth::Denied;
use crate::eval::feedback::FeedbackError;
use crate::gateway::{http_status_for, CoreError};
use crate::provider::wire::{JsonBody, WireError};
use crate::provider::{ProviderError, UpstreamError};
use crate::store::StoreError;

/// `{"error": {"message", "type", "param", "code"}}` as OpenAI clients expect.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
    /// What the upstream said, when its error is passed through.
    pub upstream: Option<Box<UpstreamReply>>,
    /// `x-should-retry`: false when the gateway already retried, or retrying cannot help.
    pub should_retry: Option<bool>,
}

/// An upstream error passed through: its error object (type, param, code, in place of ours) and
/// the wait it asked for, to the millisecond (`retry-after-ms`).
#[derive(Debug, Default)]
pub struct UpstreamReply {
    pub object: Option<UpstreamError>,
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_secs: None,
            upstream: None,
            should_retry: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A 400 for a field with a bad value (`code: invalid_value`).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request(message).code("invalid_value")
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::UnknownModel(name) => ApiError::not_found(format!(
                "The model version `{name}` does not exist; GET /v1/models lists the configured ones."
            ))
            .param("model")
            .code("model_not_found"),
            CoreError::Unsupported { param, message } => ApiError::bad_request(message)
                .param(param)
                .code("unsupported_parameter"),
            CoreError::Upstream {
                error,
                provider,
                retries,
            } => {
                let mut e = upstream_error(error, &provider);
                if retries > 0 {
                    // The gateway retried already; a client retry would multiply upstream calls.
                    e.should_retry = Some(false);
                }
                e
            }
        }
    }
}

/// An upstream failure as the client sees it: the upstream's own 4xx with its error object and
/// Retry-After; 401/403 (the gateway's credentials) as 502 naming the provider; 5xx, connection
/// and protocol failures as 502; timeouts as 504.
fn upstream_error(p: ProviderError, provider: &str) -> ApiError {
    let status = StatusCode::from_u16(http_status_for(&p)).unwrap_or(StatusCode::BAD_GATEWAY);
    match p {
        ProviderError::Status {
            status: upstream @ (401 | 403),
            message,
            ..
        } => {
            let mut e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!(
                    "The provider `{provider}` refused the gateway's own credentials (HTTP {upstream}): {message}"
                ),
            )
            .code("upstream_auth_failed");
            e.should_retry = Some(false);
            e
        }
        ProviderError::Status {
            status: upstream,
            message,
            error,
            retry_after,
        } if status.is_client_error() => {
            let kind = match upstream {
                404 => "not_found_error",
                429 => "rate_limit_error",
                _ => "invalid_request_error",
            };
            let mut e = ApiError::new(status, kind, message);
            e.retry_after_secs = retry_after.map(|wait| wait.as_secs_f64().ceil() as u64);
            e.upstream = Some(Box::new(UpstreamReply {
                object: error.map(|o| *o),
                retry_after_ms: retry_after.map(|wait| wait.as_millis() as u64),
            }));
            e
        }
        p => {
            let code = match status {
                StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
                _ => "upstream_error",
            };
            ApiError::new(status, "upstream_error", p.to_string()).code(code)
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        let unauthorized = |message: &str, code: &'static str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code(code)
        };
        match d {
            Denied::Missing => unauthorized(
                "No API key: send `Authorization: Bearer <key>` (create one with `lqo keys create`).",
                "missing_api_key",
            ),
            Denied::Malformed => unauthorized(
                "The Authorization header must be `Bearer <key>`.",
                "invalid_api_key",
            ),
            Denied::Invalid => unauthorized("The API key is not valid.", "invalid_api_key"),
            Denied::Expired => unauthorized("The API key has expired.", "expired_api_key"),
            Denied::Revoked => unauthorized("The API key has been revoked.", "revoked_api_key"),
            Denied::MetricsToken => unauthorized(
                "GET /metrics needs `Authorization: Bearer <metrics token>` (auth.metrics_token).",
                "invalid_metrics_token",
            ),
            Denied::MissingScope { key_name, scope } => ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                format!(
                    "The API key `{key_name}` lacks the `{}` scope this route needs.",
                    scope.as_str()
                ),
            )
            .code("missing_scope"),
            Denied::AuthDisabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                "Admin routes are disabled while authentication is off (auth.required: false); use `lqo keys` on the server.",
            )
            .code("auth_disabled"),
            Denied::RateLimited { key_name, limited } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "Rate limit of {} per minute reached for `{key_name}`; retry in {} s.",
                        limited.kind.as_str(),
                        limited.retry_after_secs
                    ),
                )
                .code("rate_limit_exceeded");
                e.retry_after_secs = Some(limited.retry_after_secs);
                e
            }
            Denied::RateLimitUnavailable { key_name } => {
                // 429, not 5xx: the gateway is healthy, it only cannot count this key's calls.
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "The rate limits of `{key_name}` cannot be checked right now (shared limit store unavailable); retry shortly."
                    ),
                )
                .code("rate_limit_unavailable");
                e.retry_after_secs = Some(1);
                e
            }
            Denied::Unavailable(reason) => {
                tracing::error!(%reason, "API keys cannot be checked");
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "API keys cannot be checked right now; retry shortly.",
                )
                .code("auth_unavailable");
                e.retry_after_secs = Some(1);
                e
            }
        }
    }
}

impl From<KeyAdminError> for ApiError {
    fn from(e: KeyAdminError) -> Self {
        let message = e.to_string();
        match e {
            KeyAdminError::InvalidName(_) => ApiError::bad_request(message).param("name"),
            KeyAdminError::InvalidScopes(_) => ApiError::bad_request(message).param("scopes"),
            KeyAdminError::ExpiryInPast(_) => ApiError::bad_request(message).param("expires"),
            KeyAdminError::DeclaredInConfig(_) | KeyAdminError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
                    .param("name")
                    .code("key_name_taken")
            }
            KeyAdminError::NotFound(_) => ApiError::not_found(message).code("key_not_found"),
            KeyAdminError::Store(s) => {
                tracing::error!(error = %s, "API key administration failed");
                ApiError::internal("The key table could not be updated.")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after_ms = self.upstream.as_ref().and_then(|u| u.retry_after_ms);
        let (kind, param, code) = match self.upstream.and_then(|u| u.object) {
            Some(u) => (
                u.kind.unwrap_or_else(|| self.kind.to_string()),
                u.param,
                u.code,
            ),
            None => (
                self.kind.to_string(),
                self.param,
                self.code.map(str::to_string),
            ),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind,
                param,
                code,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme the client should use.
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"lqo\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        if let Some(ms) = retry_after_ms {
            if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
                resp.headers_mut().insert("retry-after-ms", v);
            }
        }
        if let Some(retry) = self.should_retry {
            resp.headers_mut().insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        resp
    }
}

impl From<FeedbackError> for ApiError {
    fn from(e: FeedbackError) -> Self {
        match e {
            FeedbackError::Invalid { param, message } => ApiError::bad_request(message)
                .param(param)
                .code("invalid_value"),
            FeedbackError::UnknownRequest(id) => ApiError::not_found(format!(
                "No logged request has id {id:?}. Feedback must name the request_id of an answer \
                 from this gateway (or the client's own x-request-id), sent after the answer arrived."
            ))
            .param("request_id")
            .code("request_not_found"),
            FeedbackError::Store(e) => ApiError::from_store(e),
        }
    }
}

impl ApiError {
    /// A database failure: 503 with Retry-After (a corrupt row is a 500); the detail goes to
    /// the log, not to the client.
    pub fn from_store(e: StoreError) -> Self {
        tracing::error!(error = %e, "database operation failed");
        match e {
            StoreError::Corrupt { .. } => ApiError::internal("A stored row could not be read."),
            _ => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "The database is unavailable right now; retry shortly.",
                )
                .code("database_unavailable");
                err.retry_after_secs = Some(1);
                err
            }
        }
    }
}

/// A JSON body extractor that accepts any content type (curl users forget the header) and answers
/// every failure — too large, not JSON, wrong shape — with an `ApiError` naming the field.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        // A large body is parsed on the blocking pool, off the request workers.
        let heavy = bytes.len() >= crate::blocking::HEAVY_BYTES;
        crate::blocking::run_if(heavy, move || parse_json(&bytes).map(ApiJson)).await
    }
}

/// A JSON object body kept as it came (`JsonBody`), for the routes that forward it; malformed
/// bodies are refused like `ApiJson` refuses them.
pub struct RawJson(pub JsonBody);

impl<S> FromRequest<S> for RawJson
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        let heavy = bytes.len() >= crate::blocking::HEAVY_BYTES;
        crate::blocking::run_if(heavy, move || {
            JsonBody::parse(bytes).map(RawJson).map_err(ApiError::from)
        })
        .await
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let err = ApiError::bad_request(e.message).code(if e.syntax {
            "invalid_json"
        } else {
            "invalid_value"
        });
        match e.param {
            Some(p) => err.param(p),
            None => err,
        }
    }
}

fn bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "The request body is larger than the configured limit (server.max_body_bytes).",
        )
        .code("body_too_large")
    } else {
        ApiError::bad_request(format!("Could not read the request body: {r}"))
    }
}

/// Parses JSON with the path of the offending field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(
            ApiError::bad_request("The request body is empty; a JSON object is expected.")
                .code("invalid_json"),
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request(format!("The request body is not valid JSON: {inner}"))
                    .code("invalid_json")
            }
            Category::Data => {
                let err = ApiError::bad_request(format!("Invalid request: {inner}"))
                    .code("invalid_value");
                if path.is_empty() || path == "." {
                    err
                } else {
                    err.param(path)
                }
            }
        }
    })?;
    // Anything after the value but whitespace (`{…} trailing`, a second object) is refused, as
    // the forwarding routes refuse it.
    de.end().map_err(|e| {
        ApiError::bad_request(format!("The request body is not valid JSON: {e}"))
            .code("invalid_json")
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        prompt: String,
        n: u32,
    }

    #[test]
    fn syntax_errors_and_type_errors_are_distinguished() {
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert_eq!(e.code, Some("invalid_json"));
        let e = parse_json::<T>(br#"{"prompt": 5, "n": 1}"#).unwrap_err();
        assert_eq!(e.code, Some("invalid_value"));
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = parse_json::<T>(br#"{"n": 1}"#).unwrap_err();
        assert!(
            e.message.contains("missing field `prompt`"),
            "{}",
            e.message
        );
        let e = parse_json::<T>(b"  ").unwrap_err();
        assert!(e.message.contains("empty"));
        for trailing in [
            &br#"{"prompt": "x", "n": 1} trailing"#[..],
            br#"{"prompt": "x", "n": 1}{}"#,
        ] {
            let e = parse_json::<T>(trailing).unwrap_err();
            assert_eq!(e.code, Some("invalid_json"));
            assert!(e.message.contains("trailing"), "{}", e.message);
        }
        assert!(parse_json::<T>(b"{\"prompt\": \"x\", \"n\": 1} \n").is_ok());
    }
}
