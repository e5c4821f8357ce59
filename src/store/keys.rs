//! The client-key concern: `api_keys` (only hashes and prefixes) and the `audit_log`. Knows
//! nothing about HTTP or how keys are generated; `auth::keys` decides that.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key. A live key of the same name is a [`CreateKeyError::NameTaken`].
    async fn insert_api_key(&self, k: &NewKey<'_>) -> Result<(), CreateKeyError>;

    /// Keys whose prefix matches (normally one; a prefix collision returns both).
    async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<StoredKey>, StoreError>;

    /// Every key, live or not, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Number of keys that are neither revoked nor expired at `now`.
    async fn count_live_api_keys(&self, now: DateTime<Utc>) -> Result<i64, StoreError>;

    /// Marks the live key of that name revoked; `None` when there is no live key of that name.
    async fn revoke_api_key(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError>;

    /// Records when a key was last verified against the database (at most once per cache TTL).
    async fn touch_api_key(&self, key_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Appends one audit row.
    async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` audit rows, newest first.
    async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Whether key creation and revocation are announced to every process on this database
    /// (PostgreSQL NOTIFY on [`KEY_CHANGES_CHANNEL`]); SQLite serves one process, so the key
    /// cache's TTL is all it needs.
    fn announces_key_changes(&self) -> bool;

    /// Starts listening for key changes, on one connection of the pool or, given `listen_url`,
    /// on a connection of its own there (past a transaction-mode pooler, which cannot hold a
    /// LISTEN); `None` where changes are not announced.
    async fn listen_key_changes(
        &self,
        listen_url: Option<&str>,
    ) -> Result<Option<KeyChanges>, StoreError>;
}

/// The PostgreSQL channel on which key creation and revocation are announced to every gateway
/// on the database, so their key caches follow within a second (`auth::follow_key_changes`).
pub const KEY_CHANGES_CHANNEL: &str = "lqo_api_keys";

/// What happened to a key, as announced on [`KEY_CHANGES_CHANNEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangeOp {
    Create,
    Revoke,
}

/// One announced change: the payload is `{"op": "create"|"revoke", "name": "<key name>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyChange {
    pub op: KeyChangeOp,
    pub name: String,
}

/// Key changes announced by any process on the same PostgreSQL database; holds one connection
/// while it listens.
pub struct KeyChanges(pub(crate) sqlx::postgres::PgListener);

impl KeyChanges {
    /// The next change. `Ok(None)`: the connection was lost and is being re-established, and
    /// changes made meanwhile were missed.
    pub async fn next(&mut self) -> Result<Option<KeyChange>, StoreError> {
        loop {
            let Some(n) = self.0.try_recv().await? else {
                return Ok(None);
            };
            match serde_json::from_str(n.payload()) {
                Ok(change) => return Ok(Some(change)),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable key change notification")
                }
            }
        }
    }
}

/// One row of `api_keys`. `scopes` are the stored names (`chat`, `logs:read`, …).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredKey {
    pub name: String,
    pub prefix: String,
    /// Lowercase hex SHA-256 of the key.
    #[serde(skip)]
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What to insert for a new key.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub scopes: &'a [String],
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One row of `audit_log`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub created_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("a live key named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Scopes are stored as one comma-separated text column on every backend.
pub(crate) fn join_scopes(scopes: &[String]) -> String {
    scopes.join(",")
}

pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
