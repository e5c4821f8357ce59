//! The `database` and `writer` sections of the configuration, with their defaults and checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::redact::redact_url;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` / `postgresql://…`, or `sqlite://path` / a plain file path.
    #[serde(serialize_with = "serialize_db_url")]
    pub url: String,
    pub max_connections: u32,
    pub run_migrations: bool,
    /// PostgreSQL only: where the gateway LISTENs for key changes, when `url` points at a pooler
    /// in transaction mode (PgBouncer), which cannot hold a LISTEN: the server itself or a
    /// session-mode pool. Empty: one connection of the pool listens. `DATABASE_LISTEN_URL`.
    #[serde(serialize_with = "serialize_db_url")]
    pub listen_url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/lqo.db".into(),
            max_connections: 10,
            run_migrations: true,
            listen_url: String::new(),
        }
    }
}

fn serialize_db_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

impl DatabaseConfig {
    /// Problems with this section, one line each, with the path of the offending value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let url = self.url.as_str();
        if url.is_empty() {
            problems.push("database.url must not be empty".into());
        } else if url.contains("://")
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            problems.push(format!(
                "database.url must start with postgres://, postgresql:// or sqlite://, got {}",
                redact_url(url)
            ));
        }
        let listen = self.listen_url.as_str();
        let listen_ok = listen.is_empty()
            || listen.starts_with("postgres://")
            || listen.starts_with("postgresql://");
        if !listen_ok {
            problems.push(format!(
                "database.listen_url must be a postgres:// URL (the server, or a session-mode pool), got {}",
                redact_url(listen)
            ));
        }
        if self.max_connections == 0 {
            problems.push("database.max_connections must be > 0".into());
        }
        problems
    }

    pub fn is_postgres(&self) -> bool {
        super::is_postgres_url(&self.url)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    pub channel_capacity: usize,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    /// Append-only spool for records the database cannot take right now (down, slow, or the
    /// queue is full); replayed in order once it is back, and on the next start after a crash.
    /// One gateway process per directory (it is locked).
    pub spool_dir: PathBuf,
    /// When the spool holds this much, further records are dropped (counted and logged).
    pub spool_max_bytes: u64,
    /// A batch insert that takes longer counts as failed and goes to the spool.
    pub db_timeout_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            channel_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 100,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            db_timeout_ms: 10_000,
        }
    }
}

impl WriterConfig {
    /// Problems with this section, one line each, with the path of the offending value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.channel_capacity == 0 {
            problems.push("writer.channel_capacity must be > 0".into());
        }
        if self.batch_size == 0 {
            problems.push("writer.batch_size must be > 0".into());
        }
        if self.spool_dir.as_os_str().is_empty() {
            problems.push("writer.spool_dir must not be empty".into());
        }
        if self.spool_max_bytes < 1024 * 1024 {
            problems.push("writer.spool_max_bytes must be at least 1048576 (1 MiB)".into());
        }
        if self.db_timeout_ms == 0 {
            problems.push("writer.db_timeout_ms must be > 0".into());
        }
        problems
    }
}
