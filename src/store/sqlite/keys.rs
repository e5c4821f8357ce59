//! Client keys and the audit log on SQLite (`details` is JSON text).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{parse_json, SqliteStore};
use crate::store::codec::key_from_row;
use crate::store::error::is_unique_violation;
use crate::store::keys::{
    join_scopes, AuditEntry, CreateKeyError, KeyChanges, KeyStore, NewKey, StoredKey,
};
use crate::store::{sql, StoreError};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_api_key(&self, k: &NewKey<'_>) -> Result<(), CreateKeyError> {
        let result = sqlx::query(sql::INSERT_KEY)
            .bind(k.name)
            .bind(k.prefix)
            .bind(k.key_hash)
            .bind(join_scopes(k.scopes))
            .bind(k.created_at)
            .bind(k.expires_at)
            .execute(&self.pool)
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

    async fn revoke_api_key(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<StoredKey>, StoreError> {
        let row = sqlx::query(sql::REVOKE_KEY)
            .bind(name)
            .bind(at)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
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
            .bind(e.details.to_string())
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
                let details: String = r.try_get("details")?;
                let action: String = r.try_get("action")?;
                Ok(AuditEntry {
                    created_at: r.try_get("created_at")?,
                    actor: r.try_get("actor")?,
                    target: r.try_get("target")?,
                    details: parse_json(&details, "audit_log.details", &action)?,
                    action,
                })
            })
            .collect()
    }

    /// One process per SQLite file: its own revocations reach its cache at once.
    fn announces_key_changes(&self) -> bool {
        false
    }

    async fn listen_key_changes(
        &self,
        _listen_url: Option<&str>,
    ) -> Result<Option<KeyChanges>, StoreError> {
        Ok(None)
    }
}
