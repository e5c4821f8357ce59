//! Admin routes (scope `admin`, and only with authentication on): create, list and revoke client
//! API keys over HTTP. Every call is written to `audit_log` under the acting key's name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::AppState;
use crate::auth::config::default_scopes;
use crate::auth::keys::{self, CreatedKey};
use crate::auth::{Caller, ANONYMOUS};
use crate::timespec::{parse_time, Toward};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Letters, digits and `. _ -`, at most 64; unique among live keys (not `anonymous`).
    #[schema(example = "ci-pipeline", pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Any of chat, feedback, logs:read, admin; default `[chat]`.
    #[serde(default = "default_scopes")]
    #[schema(value_type = Vec<ScopeName>, min_items = 1, example = json!(["chat"]))]
    pub scopes: Vec<String>,
    /// An RFC 3339 time, a date (`2030-01-01`), or a duration from now (`90d`, `12h`, `2w`).
    #[serde(default)]
    #[schema(example = "90d")]
    pub expires: Option<String>,
}

/// The scope names, for the OpenAPI document (requests carry them as strings).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ScopeName {
    #[schema(rename = "chat")]
    Chat,
    #[schema(rename = "feedback")]
    Feedback,
    #[schema(rename = "logs:read")]
    LogsRead,
    #[schema(rename = "admin")]
    Admin,
}

/// A key as listed: never the key itself, nor its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: Option<String>,
    pub scopes: Vec<String>,
    /// `database` (created with `lqo keys create` or this API) or `config` (auth.keys).
    pub source: &'static str,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<crate::store::keys::StoredKey> for KeyInfo {
    fn from(k: crate::store::keys::StoredKey) -> Self {
        KeyInfo {
            name: k.name,
            prefix: Some(k.prefix),
            scopes: k.scopes,
            source: "database",
            created_at: Some(k.created_at),
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub object: &'static str,
    pub data: Vec<KeyInfo>,
}

fn actor(caller: &Option<Extension<Caller>>) -> String {
    caller
        .as_ref()
        .and_then(|Extension(c)| c.key_name().map(str::to_string))
        .unwrap_or_else(|| ANONYMOUS.to_string())
}

#[utoipa::path(
    post, path = "/v1/admin/keys", tag = "admin",
    request_body = CreateKeyRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The key; shown this once, only its SHA-256 is stored", body = CreatedKey),
        (status = 400, description = "Invalid name, scopes or expiry", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked key", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or authentication is off", body = ErrorBody),
        (status = 409, description = "A live key of that name exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let now = Utc::now();
    let expires_at = match req.expires.as_deref() {
        None => None,
        Some(s) => Some(
            parse_time(s, now, Toward::Future)
                .map_err(|e| ApiError::bad_request(format!("`expires`: {e}.")).param("expires"))?,
        ),
    };
    let created = keys::create_key(
        state.store.keys.as_ref(),
        &state.auth.config_key_names(),
        &req.name,
        &req.scopes,
        expires_at,
        &actor(&caller),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get, path = "/v1/admin/keys", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every key, from the database and the config file", body = KeyList),
        (status = 401, description = "Missing, invalid, expired or revoked key", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or authentication is off", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<KeyList>, ApiError> {
    let stored = state.store.keys.list_api_keys().await.map_err(|e| {
        tracing::error!(error = %e, "listing API keys failed");
        ApiError::internal("The key table could not be read.")
    })?;
    let mut data: Vec<KeyInfo> = stored.into_iter().map(KeyInfo::from).collect();
    for k in &state.config.auth.keys {
        data.push(KeyInfo {
            name: k.name.clone(),
            prefix: None,
            scopes: k.scopes.clone(),
            source: "config",
            created_at: None,
            expires_at: k.expires_at,
            revoked_at: None,
            last_used_at: None,
        });
    }
    keys::audit(
        state.store.keys.as_ref(),
        &actor(&caller),
        "key.list",
        None,
        serde_json::json!({"count": data.len()}),
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "writing the audit log failed");
        ApiError::internal("The audit log could not be written.")
    })?;
    Ok(Json(KeyList {
        object: "list",
        data,
    }))
}

#[utoipa::path(
    delete, path = "/v1/admin/keys/{name}", tag = "admin",
    params(("name" = String, Path, description = "The key's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The key, now revoked; it stops working at once on this replica, within a second on the others (PostgreSQL LISTEN/NOTIFY) and at most auth.cache_ttl_secs where that fails", body = KeyInfo),
        (status = 401, description = "Missing, invalid, expired or revoked key", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or authentication is off", body = ErrorBody),
        (status = 404, description = "No live key of that name", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    let revoked = keys::revoke_key(state.store.keys.as_ref(), &name, &actor(&caller)).await?;
    state.auth.forget(&name);
    Ok(Json(KeyInfo::from(revoked)))
}
