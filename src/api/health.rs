//! `GET /health` (liveness), `GET /ready` (database and writer) and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::health::ReadinessState;

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
    /// spool on disk, to be replayed, or Redis fails and rate limits fall back); or `not_ready`
    /// (records are being lost: the database and the spool both fail).
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

/// Readiness of the write path (the rules are `store::health`): 200 `ready`, 200 `degraded`
/// while still serving (the database is down and records go to the spool on disk), 503
/// `not_ready` when records are being lost (database and spool both fail). Answered from a
/// background probe's findings (every second), in microseconds whatever the database does.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready, or degraded but serving (see `reasons`)", body = Readiness),
        (status = 503, description = "Records are being lost: database and spool both fail", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // What the background probe last found (database, Redis, key changes, migrations) with the
    // writer's state now: no I/O here, so a database that does not answer never slows this.
    let r = state.health.readiness(&state.writer).await;
    let code = match r.state {
        ReadinessState::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        ReadinessState::Ready | ReadinessState::Degraded => StatusCode::OK,
    };
    (
        code,
        Json(Readiness {
            status: r.state.as_str(),
            database: r.database,
            writer_queue_depth: r.writer.queue_depth,
            spooling: r.writer.spooling,
            spool_bytes: r.writer.spool_bytes,
            reasons: r.reasons,
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
