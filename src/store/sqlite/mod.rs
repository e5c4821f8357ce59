//! The SQLite backend: one embedded file in WAL mode, and every store trait implemented against
//! it (one file per concern). uuids and JSON are TEXT here; timestamps are RFC 3339 text in UTC
//! written by one formatter, so text order is time order. SQLite has one writer: the judge queue
//! claims inside `BEGIN IMMEDIATE`, and "now" comes from this process.

mod feedback;
mod judge;
mod keys;
mod logs;
mod retention;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::{Backend, StoreError};
use crate::redact::{redact_url, scrub_url_secrets};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database behind the store traits. Cloning is cheap (a pool handle).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating file and parent directory) `sqlite://path`, `sqlite:path` or a plain path.
    pub(crate) async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let shown = redact_url(url);
        let base = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
                url: shown.clone(),
                reason: scrub_url_secrets(&e.to_string(), url),
            })?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        create_parent_dir(&base)?;
        let opts = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a crash can lose the last commits' fsync, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Connect {
                backend: "sqlite",
                url: shown,
                reason: scrub_url_secrets(&e.to_string(), url),
            })?;
        Ok(SqliteStore { pool })
    }
}

fn create_parent_dir(opts: &SqliteConnectOptions) -> Result<(), StoreError> {
    let file = opts.get_filename();
    // In-memory databases are named `file:…` by sqlx and have no directory.
    if file.to_string_lossy().starts_with("file:") {
        return Ok(());
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// A uuid column read back (TEXT on SQLite).
fn parse_uuid(raw: &str, column: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(raw).map_err(|e| StoreError::corrupt(raw, format!("{column}: {e}")))
}

/// A JSON column read back (TEXT on SQLite).
fn parse_json<T: serde::de::DeserializeOwned>(
    raw: &str,
    column: &str,
    id: impl std::fmt::Display,
) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::corrupt(id, format!("{column}: {e}")))
}

#[async_trait]
impl Backend for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(super::sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    #[cfg(any(test, feature = "testing"))]
    async fn execute_sql(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    #[cfg(any(test, feature = "testing"))]
    async fn fetch_i64(&self, sql: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    #[cfg(any(test, feature = "testing"))]
    async fn fetch_texts(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }
}
