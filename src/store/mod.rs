//! The store owns every table. Other modules ask it through one trait per concern —
//! [`LogStore`] (raw records), [`JudgeJobs`] (the judge's queue and scores), [`FeedbackStore`]
//! (human ratings and agreement), [`KeyStore`] (client keys, audit log), [`LogRetention`]
//! (partitions and retention) — each implemented once per backend in `postgres/` and `sqlite/`
//! and picked in one place, [`Store::connect`]. Nothing outside this folder writes SQL or knows
//! which backend it talks to. Also here: the batching writer and its disk spool, and the
//! readiness rules of the write path. Knows nothing about HTTP.

mod codec;
pub mod config;
mod error;
pub mod feedback;
pub mod health;
pub mod judge;
pub mod keys;
pub mod logs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod postgres;
pub mod record;
pub mod retention;
pub mod spool;
mod sql;
mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod writer;

#[cfg(test)]
mod contract_tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;

pub use error::StoreError;
pub use feedback::FeedbackStore;
pub use judge::JudgeJobs;
pub use keys::KeyStore;
pub use logs::LogStore;
pub use record::{JsonText, LogRecord};
pub use retention::LogRetention;

use crate::redact::{redact_url, scrub_url_secrets};
use postgres::PgStore;
use sqlite::SqliteStore;

/// A dead database must fail start-up and readiness quickly, not hang them.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every backend offers besides the query traits: its name, schema, health, lifecycle.
#[async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn close(&self);
    /// Test-only access for assertions on raw rows (`store::testing`).
    #[cfg(any(test, feature = "testing"))]
    async fn execute_sql(&self, sql: &str) -> Result<(), StoreError>;
    #[cfg(any(test, feature = "testing"))]
    async fn fetch_i64(&self, sql: &str) -> Result<i64, StoreError>;
    #[cfg(any(test, feature = "testing"))]
    async fn fetch_texts(&self, sql: &str) -> Result<Vec<String>, StoreError>;
}

/// The database behind the gateway, one handle per concern. Cloning is cheap (shared pointers to
/// one pool). Hand a subsystem only the concern it needs, e.g. `store.keys.clone()` to `Auth`.
#[derive(Clone)]
pub struct Store {
    pub logs: Arc<dyn LogStore>,
    pub judge: Arc<dyn JudgeJobs>,
    pub feedback: Arc<dyn FeedbackStore>,
    pub keys: Arc<dyn KeyStore>,
    pub retention: Arc<dyn LogRetention>,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.backend).finish()
    }
}

impl Store {
    fn over<B>(backend: B) -> Store
    where
        B: Backend + LogStore + JudgeJobs + FeedbackStore + KeyStore + LogRetention + 'static,
    {
        let b = Arc::new(backend);
        Store {
            logs: b.clone(),
            judge: b.clone(),
            feedback: b.clone(),
            keys: b.clone(),
            retention: b.clone(),
            backend: b,
        }
    }

    /// Opens a pool: the one place a backend is picked. `postgres://…` / `postgresql://…`
    /// selects PostgreSQL; `sqlite://path`, `sqlite:path` or a plain file path selects SQLite
    /// (file and parent directory created).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let max_connections = max_connections.max(1);
        if is_postgres_url(url) {
            let shown = redact_url(url);
            let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
                url: shown.clone(),
                reason: scrub_url_secrets(&e.to_string(), url),
            })?;
            let pg = PgStore::connect(opts, max_connections, ACQUIRE_TIMEOUT, &shown, url).await?;
            return Ok(Store::over(pg));
        }
        if url.contains("://") && !url.starts_with("sqlite:") {
            return Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason:
                    "unsupported scheme; use postgres://, postgresql://, sqlite:// or a file path"
                        .into(),
            });
        }
        let sqlite = SqliteStore::connect(url, max_connections, ACQUIRE_TIMEOUT).await?;
        Ok(Store::over(sqlite))
    }

    /// Like [`Store::connect`], for a gateway that must start while the database is down: when
    /// PostgreSQL cannot be reached (refused, no answer), the store connects on first use
    /// instead, and the reason comes back beside it. A database that answers and refuses (a
    /// wrong password, no such database), a bad URL and any SQLite failure (a local file) still
    /// fail the start: those are mistakes to fix, not outages to ride out.
    pub async fn open(
        url: &str,
        max_connections: u32,
    ) -> Result<(Store, Option<StoreError>), StoreError> {
        if !is_postgres_url(url) {
            return Ok((Store::connect(url, max_connections).await?, None));
        }
        let shown = redact_url(url);
        let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: shown.clone(),
            reason: scrub_url_secrets(&e.to_string(), url),
        })?;
        let unreachable = |reason: String| StoreError::Connect {
            backend: "postgres",
            url: shown.clone(),
            reason: scrub_url_secrets(&reason, url),
        };
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, sqlx::ConnectOptions::connect(&opts));
        let outage = match probe.await {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                None
            }
            Ok(Err(e)) if error::is_unreachable(&e) => Some(unreachable(e.to_string())),
            Ok(Err(_)) => None,
            Err(_) => Some(unreachable(format!(
                "no answer within {} s",
                ACQUIRE_TIMEOUT.as_secs()
            ))),
        };
        match outage {
            None => Ok((Store::connect(url, max_connections).await?, None)),
            Some(e) => {
                let pg = PgStore::connect_lazy(opts, max_connections.max(1), ACQUIRE_TIMEOUT);
                Ok((Store::over(pg), Some(e)))
            }
        }
    }

    /// "postgres" or "sqlite", for logs and the readiness report.
    pub fn backend(&self) -> &'static str {
        self.backend.name()
    }

    /// Applies the embedded migrations; safe to run again and from several replicas at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrate().await
    }

    /// A round trip to the database (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.backend.close().await
    }
}

/// Whether a `database.url` names PostgreSQL (anything else is an SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}
