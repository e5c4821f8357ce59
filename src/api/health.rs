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
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    pub writer_queue_depth: usize,
    /// Why the gateway is not ready, when it is not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[utoipa::path(get, path = "/ready", tag = "ops",
    responses(
        (status = 200, description = "Database reachable and writer healthy", body = Readiness),
        (status = 503, description = "Not ready, with the reasons", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("database unreachable: {e}")),
        Err(_) => reasons.push("database unreachable: ping timed out after 2 s".into()),
    }
    if let Some(e) = state.writer.last_error() {
        reasons.push(format!("writer cannot write to the database: {e}"));
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if reasons.is_empty() {
                "ready"
            } else {
                "not_ready"
            },
            database: state.store.backend(),
            writer_queue_depth: state.writer.queue_depth(),
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
