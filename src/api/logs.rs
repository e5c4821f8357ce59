//! `GET /v1/logs` (filtered, keyset-paginated, newest first) and `GET /v1/logs/{request_id}`:
//! the raw records read back. Parsing and error shapes here; the query is the store's `LogStore`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::{time_param, AppState};
use crate::eval::EvalDetails;
use crate::store::logs::{LogCursor, LogFilter, MAX_PAGE};
use crate::store::record::LogStatus;
use crate::store::{LogRecord, StoreError};

const DEFAULT_PAGE: usize = 50;
/// Longest accepted value of a text filter; anything longer cannot match a stored record anyway.
const MAX_FILTER_CHARS: usize = 256;

/// Query parameters of `GET /v1/logs`. Unknown parameters are refused, so a typo never silently
/// widens the result.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// Records created at or after this instant: RFC 3339 (e.g. `2025-05-01T00:00:00Z`; send
    /// `+` of an offset as `%2B`), a date (`2025-05-01`) or a span back from now (`24h`, `7d`).
    pub since: Option<String>,
    /// Records created before this instant (same forms).
    pub until: Option<String>,
    pub model_version: Option<String>,
    pub user_id: Option<String>,
    /// Records whose client sent this `x-request-id` (the gateway's own id is `request_id`).
    pub client_request_id: Option<String>,
    /// Records carrying this tag.
    pub tag: Option<String>,
    /// `ok`, `error` (the gateway or the provider failed), `rejected` (the upstream refused the
    /// client's request) or `cancelled` (the client went away first).
    pub status: Option<String>,
    /// Records per page, 1 to 500 (default 50).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPageBody {
    pub data: Vec<LogRecord>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One record as `GET /v1/logs/{request_id}` returns it: the stored fields at the top level, so
/// what quality evaluation adds later (scores, feedback) can sit beside them.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogDetail {
    #[serde(flatten)]
    pub record: LogRecord,
    /// `judge` (the LLM judge's job and scores; null when not sampled) and `feedback` (human
    /// ratings); the heuristic label and results are record fields.
    #[serde(flatten)]
    pub evaluation: EvalDetails,
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::bad_request(message)
        .param(param)
        .code("invalid_value")
}

fn text_param(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() => Err(invalid(name, format!("`{name}` must not be empty."))),
        // No stored value holds a NUL, and PostgreSQL refuses one in a query.
        Some(v) if v.contains('\0') => Err(invalid(
            name,
            format!("`{name}` must not contain a NUL character."),
        )),
        Some(v) if v.chars().count() > MAX_FILTER_CHARS => Err(invalid(
            name,
            format!("`{name}` is longer than {MAX_FILTER_CHARS} characters."),
        )),
        other => Ok(other),
    }
}

/// The filter a query string asks for, or the first thing wrong with it.
pub fn parse_filter(params: LogsParams) -> Result<LogFilter, ApiError> {
    let since = time_param("since", params.since.as_deref())?;
    let until = time_param("until", params.until.as_deref())?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(invalid(
                "until",
                "`until` must be later than `since`.".to_string(),
            ));
        }
    }
    let status = match params.status.as_deref().map(|s| (s, LogStatus::parse(s))) {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((other, None)) => {
            return Err(invalid(
                "status",
                format!(
                    "`status` must be one of {}; got {other:?}.",
                    LogStatus::NAMES.join(", ")
                ),
            ))
        }
    };
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "limit",
                    format!("`limit` must be a whole number from 1 to {MAX_PAGE}; got {v:?}."),
                ))
            }
        },
    };
    let after = match params.cursor.as_deref() {
        None => None,
        // A forged cursor may hold any instant chrono can; only the databases' range is one
        // this API can have returned.
        Some(c) => Some(
            LogCursor::decode(c)
                .filter(|c| crate::timespec::in_range(c.created_at))
                .ok_or_else(|| {
                    invalid(
                        "cursor",
                        "`cursor` is not a cursor this API returned; pass `next_cursor` unchanged."
                            .to_string(),
                    )
                })?,
        ),
    };
    Ok(LogFilter {
        since,
        until,
        model_version: text_param("model_version", params.model_version)?,
        user_id: text_param("user_id", params.user_id)?,
        client_request_id: text_param("client_request_id", params.client_request_id)?,
        tag: text_param("tag", params.tag)?,
        status,
        after,
        limit,
    })
}

fn query_error(message: String) -> ApiError {
    // serde names the offending field in backquotes: `unknown field `x``, `duplicate field `x``.
    let param = message
        .split('`')
        .nth(1)
        .filter(|p| !p.is_empty() && p.len() <= 64)
        .map(str::to_string);
    let err =
        ApiError::bad_request(format!("Invalid query string: {message}")).code("invalid_query");
    match param {
        Some(p) => err.param(p),
        None => err,
    }
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "reading logs failed");
    match e {
        StoreError::Corrupt { .. } => ApiError::internal("A stored record could not be read."),
        _ => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The log database is unavailable right now; retry shortly.",
            )
            .code("database_unavailable");
            err.retry_after_secs = Some(1);
            err
        }
    }
}

/// Raw records, newest first, filtered, one page at a time.
#[utoipa::path(get, path = "/v1/logs", tag = "logs", params(LogsParams),
    responses(
        (status = 200, description = "One page of records, newest first", body = LogPageBody),
        (status = 400, description = "An invalid or unknown parameter (named in `param`)", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn list_logs(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<LogPageBody>, ApiError> {
    let Query(params) = Query::<LogsParams>::try_from_uri(&uri).map_err(|e| {
        let text = e.body_text();
        query_error(
            text.strip_prefix("Failed to deserialize query string: ")
                .unwrap_or(&text)
                .to_string(),
        )
    })?;
    let filter = parse_filter(params)?;
    let page = state
        .store
        .logs
        .list_logs(&filter)
        .await
        .map_err(store_error)?;
    Ok(Json(LogPageBody {
        data: page.records,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One raw record by the gateway's request id (`request_id` of the record, the
/// `x-lqo-request-id` header of the call) or by the client's own `x-request-id`: a UUID is looked
/// up as the gateway's id first; a client id a client reused names its newest record.
#[utoipa::path(get, path = "/v1/logs/{request_id}", tag = "logs",
    params(("request_id" = String, Path, description = "The gateway's request id (a UUID) or the client's own x-request-id")),
    responses(
        (status = 200, description = "The record", body = LogDetail),
        (status = 400, description = "Not an id (empty, over 128 characters, or holding a NUL)", body = ErrorBody),
        (status = 404, description = "No record with that id", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn get_log(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<LogDetail>, ApiError> {
    let Path(raw) = path.map_err(|e| {
        invalid(
            "request_id",
            format!("Invalid request id: {}", e.body_text()),
        )
    })?;
    let id = raw.trim();
    if id.is_empty() || id.len() > super::MAX_CLIENT_REQUEST_ID || id.contains('\0') {
        return Err(invalid(
            "request_id",
            format!(
                "The request id must be the gateway's (a UUID such as 0193f3a4-5b6c-7d8e-9f00-112233445566) or the client's x-request-id (1 to {} characters); got {raw:?}.",
                super::MAX_CLIENT_REQUEST_ID
            ),
        ));
    }
    let logs = &state.store.logs;
    let by_gateway_id = match Uuid::parse_str(id) {
        Ok(u) => logs.get_log(u).await.map_err(store_error)?,
        Err(_) => None,
    };
    let found = match by_gateway_id {
        Some(r) => Some(r),
        None => logs.get_log_by_client_id(id).await.map_err(store_error)?,
    };
    match found {
        Some(record) => {
            let evaluation = crate::eval::details(&state.store, record.request_id)
                .await
                .map_err(store_error)?;
            Ok(Json(LogDetail { record, evaluation }))
        }
        None => Err(ApiError::not_found(format!(
            "No log record with request id {id:?} (it may not be written yet, or be past the retention)."
        ))
        .param("request_id")
        .code("log_not_found")),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    fn params(q: &str) -> Result<LogFilter, ApiError> {
        let uri: Uri = format!("/v1/logs?{q}").parse().unwrap();
        let Query(p) =
            Query::<LogsParams>::try_from_uri(&uri).map_err(|e| query_error(e.body_text()))?;
        parse_filter(p)
    }

    #[test]
    fn good_parameters_become_a_filter() {
        let f = params("since=2025-05-01T00:00:00Z&until=2025-05-02T00:00:00%2B02:00&model_version=v1&user_id=u&tag=t&status=error&limit=500").unwrap();
        assert_eq!(f.since.unwrap().to_rfc3339(), "2025-05-01T00:00:00+00:00");
        assert_eq!(f.until.unwrap().to_rfc3339(), "2025-05-01T22:00:00+00:00");
        assert_eq!(f.status, Some(LogStatus::Error));
        assert_eq!(f.limit, 500);
        assert_eq!(params("").unwrap(), LogFilter::default());
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let micros_before_4713_bc = -210_000_000_000_000_000i64;
        let old_cursor = format!(
            "cursor={}",
            URL_SAFE_NO_PAD.encode(format!("{micros_before_4713_bc}:{}", Uuid::nil()))
        );
        for (q, param) in [
            ("since=yesterday", "since"),
            ("until=2025-05-01T00:00:00+02:00", "until"),
            (
                "since=2025-05-02T00:00:00Z&until=2025-05-01T00:00:00Z",
                "until",
            ),
            ("status=fine", "status"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("cursor=abc", "cursor"),
            ("model_version=", "model_version"),
            ("modelversion=v1", "modelversion"),
            ("tag=a&tag=b", "tag"),
            ("user_id=%00", "user_id"),
            ("model_version=a%00b", "model_version"),
            ("tag=%00", "tag"),
            ("since=7000000000000s", "since"),
            // Year 10000 in UTC, which SQLite compared as text before 2025.
            ("until=9999-12-31T23:00:00-02:00", "until"),
            // A cursor before 4713 BC, which PostgreSQL cannot compare with.
            (old_cursor.as_str(), "cursor"),
        ] {
            let e = params(q).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert_eq!(e.param.as_deref(), Some(param), "{q}: {}", e.message);
        }
        let e = params("until=2025-05-01T00:00:00+02:00").unwrap_err();
        assert!(e.message.contains("%2B"), "{}", e.message);
    }
}
