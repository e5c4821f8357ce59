//! `GET /health` (liveness), `GET /ready` (database and writer) and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `degraded` (still serving: e.g. the database is down and records go to the
    /// spool on disk, to be replayed, or Redis fails and rate limits fall back); or `not_ready` (records are being lost: the database and
    /// the spool both fail).
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    pub writer_queue_depth: usize,
    /// True while records go to the spool because the database failed.
    pub spooling: bool,
    /// Bytes in the spool waiting to be replayed.
    pub spool_bytes: u64,
    /// What is wrong, when the status is not `ready`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Readiness of the write path. A database outage alone keeps the gateway in rotation (200,
/// `degraded`): calls are still served and their records are safe in the spool, and a readiness
/// failure on every replica at once would turn a database outage into a gateway outage. Only
/// when records cannot be kept at all — database and spool both failing — is it 503.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready, or degraded but serving (see `reasons`)", body = Readiness),
        (status = 503, description = "Records are being lost: database and spool both fail", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    let mut db_failing = match ping {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            reasons.push(format!("database unreachable: {e}"));
            true
        }
        Err(_) => {
            reasons.push("database unreachable: ping timed out after 2 s".into());
            true
        }
    };
    let writer = state.writer.status();
    if let Some(e) = &writer.db_error {
        reasons.push(format!("writer cannot write to the database: {e}"));
        db_failing = true;
    }
    if writer.spooling {
        reasons.push(format!(
            "log records go to the spool on disk until the database takes writes again ({} bytes waiting)",
            writer.spool_bytes
        ));
    }
    // Limits fail open or closed as configured, never a lost record: degraded, not 503.
    if let Some(problem) = state.auth.shared_limits_problem().await {
        reasons.push(problem);
    }
    if let Some(problem) = state.auth.key_changes_problem() {
        reasons.push(problem);
    }
    let spool_failing = writer.spool_error.is_some();
    if let Some(e) = &writer.spool_error {
        reasons.push(format!(
            "LOG RECORDS CAN BE LOST: the spool cannot be written: {e}"
        ));
    }
    let (code, status) = if db_failing && spool_failing {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    } else if reasons.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::OK, "degraded")
    };
    (
        code,
        Json(Readiness {
            status,
            database: state.store.backend(),
            writer_queue_depth: writer.queue_depth,
            spooling: writer.spooling,
            spool_bytes: writer.spool_bytes,
            reasons,
        }),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .writer_queue_depth
        .set(state.writer.queue_depth() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
