//! Why a database operation failed, and how the writer tells an outage from data the database
//! will never take. Messages never contain a database password.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create directory {} for the SQLite database: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {backend} at `{url}`: {reason}")]
    Connect {
        backend: &'static str,
        url: String,
        reason: String,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot encode a log record: {0}")]
    Encode(String),
    #[error("stored log {request_id} is unreadable: {reason}")]
    Corrupt { request_id: String, reason: String },
}

/// A driver error that means the database was not reached (or the connection was lost), not
/// that it answered with an error.
pub(crate) fn is_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

impl StoreError {
    /// True when the database could not be reached (refused, timed out, connection lost), as
    /// opposed to answering with an error: a migration that failed this way is retried until
    /// the database answers.
    pub fn is_unreachable(&self) -> bool {
        let io_like = is_unreachable;
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Database(e) => io_like(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => io_like(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => io_like(e),
            _ => false,
        }
    }

    /// True when the database refused the data itself (a bad value, a violated constraint, a value
    /// too large), so sending the same rows again can never succeed. False for outages, timeouts
    /// and schema trouble, which retrying can outlive.
    pub fn is_data_rejected(&self) -> bool {
        match self {
            StoreError::Encode(_) => true,
            StoreError::Database(sqlx::Error::Encode(_)) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
                    return true;
                }
                let Some(code) = db.code() else { return false };
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    // 22 data exception, 23 integrity constraint, 54 program limit (e.g. an
                    // index row too large); 42 (undefined table, …) stays retryable.
                    matches!(code.get(..2), Some("22" | "23" | "54"))
                } else {
                    // SQLite primary codes: 18 TOOBIG, 19 CONSTRAINT, 20 MISMATCH.
                    code.parse::<i32>()
                        .map(|c| matches!(c & 0xff, 18..=20))
                        .unwrap_or(false)
                }
            }
            _ => false,
        }
    }

    /// A stored value that does not decode (an unknown enum text, a malformed uuid or JSON).
    pub(crate) fn corrupt(id: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            request_id: id.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A unique index refused the statement (on either backend).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_errors_count_as_rejected() {
        assert!(StoreError::Encode("x".into()).is_data_rejected());
        assert!(!StoreError::Database(sqlx::Error::PoolTimedOut).is_data_rejected());
    }
}
