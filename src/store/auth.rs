//! SQL for client API keys (`api_keys`: only hashes and prefixes) and the `audit_log` table.
//! Knows nothing about HTTP or how keys are generated; `auth::keys` decides that.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{is_unique_violation, Store, StoreError};

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

const KEY_COLUMNS: &str =
    "name, prefix, key_hash, scopes, created_at, expires_at, revoked_at, last_used_at";

fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn key_from_row<R>(row: &R) -> Result<StoredKey, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let scopes: String = row.try_get("scopes")?;
    Ok(StoredKey {
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        scopes: split_scopes(&scopes),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("a live key named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The PostgreSQL channel on which key creation and revocation are announced to every gateway
/// on the database, so their key caches follow within a second (`auth::listen_for_key_changes`).
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

/// Queues the announcement in `tx`; PostgreSQL delivers it to the listeners when `tx` commits,
/// and never if it rolls back.
async fn notify_key_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    op: KeyChangeOp,
    name: &str,
) -> Result<(), sqlx::Error> {
    let payload = serde_json::json!({"op": op, "name": name}).to_string();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(KEY_CHANGES_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Key changes announced by any process on the same PostgreSQL database; holds one connection
/// of the pool while it listens.
pub struct KeyChanges(sqlx::postgres::PgListener);

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

impl Store {
    /// Starts listening for key changes, on one connection of the pool or, given `listen_url`,
    /// on a connection of its own there (past a transaction-mode pooler, which cannot hold a
    /// LISTEN); `None` on SQLite, which serves one process only (the key cache's TTL applies).
    pub async fn listen_key_changes(
        &self,
        listen_url: Option<&str>,
    ) -> Result<Option<KeyChanges>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let mut listener = match listen_url {
                    Some(url) => sqlx::postgres::PgListener::connect(url)
                        .await
                        .map_err(|e| StoreError::Connect {
                            backend: "postgres",
                            url: super::redact_url(url),
                            reason: super::scrub(&e.to_string(), url),
                        })?,
                    None => sqlx::postgres::PgListener::connect_with(pool).await?,
                };
                listener.listen(KEY_CHANGES_CHANNEL).await?;
                Ok(Some(KeyChanges(listener)))
            }
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// Inserts a key (announced on [`KEY_CHANGES_CHANNEL`] on PostgreSQL). A live key of the
    /// same name is a [`CreateKeyError::NameTaken`].
    pub async fn insert_api_key(&self, k: &NewKey<'_>) -> Result<(), CreateKeyError> {
        let scopes = k.scopes.join(",");
        let result = match self {
            Store::Postgres(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    let n = sqlx::query(
                        "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(k.name)
                    .bind(k.prefix)
                    .bind(k.key_hash)
                    .bind(&scopes)
                    .bind(k.created_at)
                    .bind(k.expires_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    notify_key_change(&mut tx, KeyChangeOp::Create, k.name).await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(n)
                }
                .await
            }
            Store::Sqlite(pool) => sqlx::query(
                "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(k.name)
            .bind(k.prefix)
            .bind(k.key_hash)
            .bind(&scopes)
            .bind(k.created_at)
            .bind(k.expires_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        };
        match result {
            Ok(_) => Ok(()),
            // The live-name unique index refuses a second live key of that name.
            Err(e) if is_unique_violation(&e) => Err(CreateKeyError::NameTaken(k.name.to_string())),
            Err(e) => Err(CreateKeyError::Store(e.into())),
        }
    }

    /// Keys whose prefix matches (normally one; a prefix collision returns both).
    pub async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<StoredKey>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1"
                ))
                .bind(prefix)
                .fetch_all(pool)
                .await?;
                rows.iter().map(key_from_row).collect()
            }
            Store::Sqlite(pool) => {
                let rows = sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = ?1"
                ))
                .bind(prefix)
                .fetch_all(pool)
                .await?;
                rows.iter().map(key_from_row).collect()
            }
        }
    }

    /// Every key, live or not, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(&sql).fetch_all(pool).await?;
                rows.iter().map(key_from_row).collect()
            }
            Store::Sqlite(pool) => {
                let rows = sqlx::query(&sql).fetch_all(pool).await?;
                rows.iter().map(key_from_row).collect()
            }
        }
    }

    /// Number of keys that are neither revoked nor expired at `now`.
    pub async fn count_live_api_keys(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let n = match self {
            Store::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $1)",
                )
                .bind(now)
                .fetch_one(pool)
                .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > ?1)",
                )
                .bind(now)
                .fetch_one(pool)
                .await?
            }
        };
        Ok(n)
    }

    /// Marks the live key of that name revoked (announced on [`KEY_CHANGES_CHANNEL`] on
    /// PostgreSQL); `None` when there is no live key of that name.
    pub async fn revoke_api_key(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let row = sqlx::query(&format!(
                    "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL \
                     RETURNING {KEY_COLUMNS}"
                ))
                .bind(name)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await?;
                let key = row.as_ref().map(key_from_row).transpose()?;
                if key.is_some() {
                    notify_key_change(&mut tx, KeyChangeOp::Revoke, name).await?;
                }
                tx.commit().await?;
                Ok(key)
            }
            Store::Sqlite(pool) => {
                let row = sqlx::query(&format!(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL \
                     RETURNING {KEY_COLUMNS}"
                ))
                .bind(name)
                .bind(at)
                .fetch_optional(pool)
                .await?;
                row.as_ref().map(key_from_row).transpose()
            }
        }
    }

    /// Records when a key was last verified against the database (at most once per cache TTL).
    pub async fn touch_api_key(&self, key_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1")
                    .bind(key_hash)
                    .bind(at)
                    .execute(pool)
                    .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query("UPDATE api_keys SET last_used_at = ?2 WHERE key_hash = ?1")
                    .bind(key_hash)
                    .bind(at)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Appends one audit row.
    pub async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO audit_log (created_at, actor, action, target, details) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(e.created_at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.details)
                .execute(pool)
                .await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO audit_log (created_at, actor, action, target, details) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .bind(e.created_at)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(e.details.to_string())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// The newest `limit` audit rows, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT created_at, actor, action, target, details FROM audit_log \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditEntry {
                            created_at: r.try_get("created_at")?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            details: r.try_get("details")?,
                        })
                    })
                    .collect()
            }
            Store::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT created_at, actor, action, target, details FROM audit_log \
                     ORDER BY id DESC LIMIT ?1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let details: String = r.try_get("details")?;
                        Ok(AuditEntry {
                            created_at: r.try_get("created_at")?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            details: serde_json::from_str(&details)
                                .map_err(|e| StoreError::Encode(format!("audit details: {e}")))?,
                        })
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fresh_postgres, fresh_sqlite};
    use super::*;

    async fn keys_round_trip(store: &Store) {
        let now = chrono::Utc::now();
        let scopes = vec!["chat".to_string(), "logs:read".to_string()];
        let k = NewKey {
            name: "ci",
            prefix: "lqo_abcdefgh",
            key_hash: &"a".repeat(64),
            scopes: &scopes,
            created_at: now,
            expires_at: None,
        };
        store.insert_api_key(&k).await.unwrap();
        let again = NewKey {
            key_hash: &"b".repeat(64),
            ..k.clone()
        };
        assert!(matches!(
            store.insert_api_key(&again).await,
            Err(CreateKeyError::NameTaken(n)) if n == "ci"
        ));
        let found = store.api_keys_by_prefix("lqo_abcdefgh").await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].scopes, scopes);
        assert_eq!(found[0].key_hash, "a".repeat(64));
        assert_eq!(store.count_live_api_keys(now).await.unwrap(), 1);
        store.touch_api_key(&"a".repeat(64), now).await.unwrap();
        let revoked = store.revoke_api_key("ci", now).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(revoked.last_used_at.is_some());
        assert_eq!(store.revoke_api_key("ci", now).await.unwrap(), None);
        assert_eq!(store.count_live_api_keys(now).await.unwrap(), 0);
        // The name is free again once its key is revoked.
        store.insert_api_key(&again).await.unwrap();
        assert_eq!(store.list_api_keys().await.unwrap().len(), 2);

        let entry = AuditEntry {
            created_at: now,
            actor: "cli".into(),
            action: "key.create".into(),
            target: Some("ci".into()),
            details: serde_json::json!({"scopes": ["chat"]}),
        };
        store.insert_audit(&entry).await.unwrap();
        let got = store.recent_audit(10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].action, "key.create");
        assert_eq!(got[0].details, entry.details);
    }

    #[tokio::test]
    async fn postgres_api_keys_and_audit_round_trip() {
        let (store, _db) = fresh_postgres().await.unwrap();
        keys_round_trip(&store).await;
    }

    #[tokio::test]
    async fn sqlite_api_keys_and_audit_round_trip() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        keys_round_trip(&store).await;
    }
}
