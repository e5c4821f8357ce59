//! Middleware in front of the handlers: who may call which route (client keys, scopes, the
//! `/metrics` token, per-key rate limits; decided by `crate::auth`), and the whole-request
//! timeout that answers 408 or 504 when a request outlives `server.request_timeout_secs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::error::ApiError;
use super::AppState;
use crate::auth::{access_for, is_model_call, Access};

/// The route layer: authenticates and authorizes a request for its matched route (on success the
/// [`crate::auth::Caller`] travels in the request's extensions to the handler), and copies the
/// matched route template to the response, where the outer `request_context` labels metrics with
/// it. A route layer, so unknown routes stay 404 whatever the credentials.
pub async fn route_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = require_access(&state, path.as_ref(), req, next).await;
    if let Some(p) = path {
        resp.extensions_mut().insert(p);
    }
    resp
}

async fn require_access(
    state: &AppState,
    matched: Option<&MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let (access, model_call) = {
        let path = matched
            .map(MatchedPath::as_str)
            .unwrap_or_else(|| req.uri().path());
        (access_for(path), is_model_call(path))
    };
    let decision = {
        let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        state.auth.authorize(access, model_call, header).await
    };
    match decision {
        Ok(Some(caller)) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(denied) => {
            tracing::info!(
                reason = denied.reason().unwrap_or("refused"),
                ?access,
                "request refused"
            );
            ApiError::from(denied).into_response()
        }
    }
}

/// The gateway's own deadline (`server.request_timeout_secs` from arrival) fires first for model
/// calls and records them; this backstop, a little later, bounds everything else.
const BACKSTOP_GRACE: Duration = Duration::from_secs(1);

/// Bounds the whole request, body upload included: 408 if the client had not finished sending the
/// body in time, 504 if the gateway had not finished answering.
pub async fn whole_request_timeout(
    state: &AppState,
    started: Instant,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.config.request_timeout();
    let deadline = tokio::time::Instant::from_std(started) + limit + BACKSTOP_GRACE;

    let (parts, body) = req.into_parts();
    let body_done = Arc::new(AtomicBool::new(body.is_end_stream()));
    let req = if body_done.load(Ordering::Relaxed) {
        Request::from_parts(parts, body)
    } else {
        let flag = body_done.clone();
        let end = futures::stream::poll_fn(move |_| {
            flag.store(true, Ordering::Relaxed);
            Poll::Ready(None)
        });
        Request::from_parts(parts, Body::from_stream(body.into_data_stream().chain(end)))
    };
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) if !body_done.load(Ordering::Relaxed) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "The request body did not arrive within {} s (server.request_timeout_secs).",
                limit.as_secs()
            ),
        )
        .code("request_timeout")
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            format!(
                "The request did not complete within {} s (server.request_timeout_secs).",
                limit.as_secs()
            ),
        )
        .code("request_timeout")
        .into_response(),
    }
}

/// Gives errors that axum produces on its own with an empty body (405 Method Not Allowed, for
/// one) the OpenAI-style JSON body every other error has, keeping their headers (`Allow`).
pub fn json_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.headers().contains_key(CONTENT_TYPE)
    {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let message = match status {
        // axum adds the `Allow` header outside this middleware, so it is not here to quote yet;
        // the client gets it on the response.
        StatusCode::METHOD_NOT_ALLOWED => {
            "This route does not accept that method; the `Allow` header lists the ones it does."
                .to_string()
        }
        s => s.canonical_reason().unwrap_or("Error").to_string(),
    };
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let code = if status == StatusCode::METHOD_NOT_ALLOWED {
        "method_not_allowed"
    } else {
        "http_error"
    };
    let json = ApiError::new(status, kind, message)
        .code(code)
        .into_response();
    let (json_parts, body) = json.into_parts();
    for (name, value) in json_parts.headers.iter() {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// Adds the bearer scheme to the OpenAPI document (Swagger UI's "Authorize" button) and, from
/// `auth::ROUTE_ACCESS`, documents on every protected operation the answers the access layer can
/// give (401, 403, 429, 503; 408 where a body is read), so the schema stays truthful for routes
/// added later without each handler repeating them.
pub struct SecurityAddon;

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lqo_…")
                    .description(Some(
                        "A client API key (`lqo keys create`), required when auth.required is on; \
                         for GET /metrics the metrics token, when one is set.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let access = access_for(path);
            let added: &[(&str, &str)] = match access {
                Access::Public => continue,
                Access::MetricsToken => &[("401", "The metrics token is set and was not sent")],
                Access::Scope(_) => &[
                    (
                        "401",
                        "Missing, malformed, invalid, expired or revoked API key (auth on)",
                    ),
                    (
                        "403",
                        "The API key lacks this route's scope (or, for admin routes, auth is off)",
                    ),
                    ("429", "The key's rate limit is reached; see Retry-After"),
                    ("503", "API keys cannot be checked right now"),
                ],
            };
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in added {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(description));
                }
                if op.request_body.is_some() {
                    op.responses
                        .responses
                        .entry("408".to_string())
                        .or_insert_with(|| {
                            error_response("The request body did not arrive in time")
                        });
                }
                if op.security.is_none() {
                    // Optional: with auth off no credential is needed.
                    op.security = Some(vec![
                        SecurityRequirement::default(),
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                    ]);
                }
            }
        }
    }
}
