//! Client keys and the audit log on PostgreSQL (`details` is jsonb).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::Row;

use super::PgStore;
use crate::redact::{redact_url, scrub_url_secrets};
use crate::store::codec::key_from_row;
use crate::store::error::is_unique_violation;
use crate::store::keys::{
    join_scopes, AuditEntry, CreateKeyError, KeyChangeOp, KeyChanges, KeyStore, NewKey, StoredKey,
    KEY_CHANGES_CHANNEL,
};
use crate::store::{sql, StoreError};

#[async_trait]
impl KeyStore for PgStore {
    /// Announced on [`KEY_CHANGES_CHANNEL`] in the same transaction.
    async fn insert_api_key(&self, k: &NewKey<'_>) -> Result<(), CreateKeyError> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(sql::INSERT_KEY)
                .bind(k.name)
                .bind(k.prefix)
                .bind(k.key_hash)
                .bind(join_scopes(k.scopes))
                .bind(k.created_at)
                .bind(k.expires_at)
                .execute(&mut *tx)
                .await?;
            notify_key_change(&mut tx, KeyChangeOp::Create, k.name).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(_) => Ok(()),
            // The live-name unique index refuses a second live key of that name.
            Err(e) if is_unique_violation(&e) => Err(CreateKeyError::NameTaken(k.name.to_string())),
            Err(e) => Err(CreateKeyError::Store(e.into())),
        }
    }

    async fn api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(sql::KEYS_BY_PREFIX)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn list_api_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(sql::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn count_live_api_keys(&self, now: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::COUNT_LIVE_KEYS)
            .bind(now)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Announced on [`KEY_CHANGES_CHANNEL`] in the same transaction.
    async fn revoke_api_key(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sql::REVOKE_KEY)
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

    async fn touch_api_key(&self, key_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(sql::TOUCH_KEY)
            .bind(key_hash)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(sql::INSERT_AUDIT)
            .bind(e.created_at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(&e.details)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(sql::RECENT_AUDIT)
            .bind(limit)
            .fetch_all(&self.pool)
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

    fn announces_key_changes(&self) -> bool {
        true
    }

    async fn listen_key_changes(
        &self,
        listen_url: Option<&str>,
    ) -> Result<Option<KeyChanges>, StoreError> {
        let mut listener = match listen_url {
            Some(url) => PgListener::connect(url)
                .await
                .map_err(|e| StoreError::Connect {
                    backend: "postgres",
                    url: redact_url(url),
                    reason: scrub_url_secrets(&e.to_string(), url),
                })?,
            None => PgListener::connect_with(&self.pool).await?,
        };
        listener.listen(KEY_CHANGES_CHANNEL).await?;
        Ok(Some(KeyChanges(listener)))
    }
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
