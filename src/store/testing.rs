//! Fresh, isolated databases and sample records for tests: the crate's unit tests use it under
//! `cfg(test)`, the integration tests in `tests/` through the `testing` feature (a
//! dev-dependency of the crate on itself), so none of it ships in the gateway.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use super::record::{Endpoint, HeuristicLabel, JsonText, LogStatus};
use super::{LogRecord, Store, StoreError};
use crate::redact::{redact_url, scrub_url_secrets};

/// Where test databases are created unless `LQO_TEST_PG_URL` says otherwise.
pub const DEFAULT_TEST_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A test database on the PostgreSQL server; dropped (with `FORCE`, so open pools do not block
/// it) when this value is dropped or [`TestDb::cleanup`] is called.
pub struct TestDb {
    admin: PgConnectOptions,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDb {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL, for a second connection or a child process.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database now and reports a failure instead of printing it.
    pub async fn cleanup(mut self) -> Result<(), StoreError> {
        self.dropped = true;
        drop_database(&self.admin, &self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin = self.admin.clone();
        let name = std::mem::take(&mut self.name);
        // Drop cannot await, and the test's runtime may be the current-thread kind: a separate
        // thread with its own runtime does the work, joined so the test process does not exit
        // before the database is gone.
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(rt) => rt.block_on(drop_database(&admin, &name)),
                Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
            };
            if let Err(e) = result {
                eprintln!("could not drop test database {name}: {e}");
            }
        });
        let _ = worker.join();
    }
}

async fn drop_database(admin: &PgConnectOptions, name: &str) -> Result<(), StoreError> {
    let mut conn = admin.connect().await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// A new, empty database (no migrations applied) on the test server.
pub async fn empty_postgres() -> Result<(Store, TestDb), StoreError> {
    let base = std::env::var("LQO_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_TEST_PG_URL.into());
    let admin = PgConnectOptions::from_str(&base).map_err(|e| StoreError::InvalidUrl {
        url: redact_url(&base),
        reason: scrub_url_secrets(&e.to_string(), &base),
    })?;
    // Generated from hex digits only, so it is safe to splice into DDL and a URL path.
    let name = format!("lqo_test_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.map_err(|e| StoreError::Connect {
        backend: "postgres",
        url: redact_url(&base),
        reason: scrub_url_secrets(&e.to_string(), &base),
    })?;
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let url = database_url(&base, &name);
    let db = TestDb {
        admin,
        name,
        url: url.clone(),
        dropped: false,
    };
    let store = Store::connect(&url, 5).await?;
    Ok((store, db))
}

/// `base` with its database path replaced by `name` (query parameters kept).
fn database_url(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let path_start = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &head[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// A new, migrated database on the test server (`LQO_TEST_PG_URL`, default
/// [`DEFAULT_TEST_PG_URL`]).
pub async fn fresh_postgres() -> Result<(Store, TestDb), StoreError> {
    let (store, db) = empty_postgres().await?;
    store.migrate().await?;
    Ok((store, db))
}

/// A migrated SQLite file in a temporary directory that is deleted when the `TempDir` drops.
pub async fn fresh_sqlite() -> Result<(Store, tempfile::TempDir), StoreError> {
    let dir = tempfile::tempdir().map_err(|source| StoreError::CreateDir {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = dir.path().join("lqo.db");
    let store = Store::connect(&path.to_string_lossy(), 5).await?;
    store.migrate().await?;
    Ok((store, dir))
}

/// Runs SQL (one or more statements) for a test's setup or sabotage. Panics on failure: a test
/// whose setup fails must stop there.
pub async fn execute(store: &Store, sql: &str) {
    if let Err(e) = store.backend.execute_sql(sql).await {
        panic!("test SQL failed: {e}\n{sql}");
    }
}

/// The single integer a test query returns.
pub async fn fetch_i64(store: &Store, sql: &str) -> i64 {
    match store.backend.fetch_i64(sql).await {
        Ok(n) => n,
        Err(e) => panic!("test SQL failed: {e}\n{sql}"),
    }
}

/// The text column of every row a test query returns.
pub async fn fetch_texts(store: &Store, sql: &str) -> Vec<String> {
    match store.backend.fetch_texts(sql).await {
        Ok(v) => v,
        Err(e) => panic!("test SQL failed: {e}\n{sql}"),
    }
}

/// What a record looks like after a round trip: timestamps at microsecond precision.
pub fn as_stored(r: &LogRecord) -> LogRecord {
    LogRecord {
        created_at: super::record::to_micros(r.created_at),
        ..r.clone()
    }
}

/// A plausible record with every optional field set; `i` varies the content.
pub fn sample_record(i: usize) -> LogRecord {
    use chrono::TimeZone;
    let created_at = chrono::Utc
        .timestamp_opt(
            1_700_000_000 + i as i64,
            (i as u32 % 1000) * 1_000_123 % 1_000_000_000,
        )
        .single()
        .unwrap_or_else(chrono::Utc::now);
    let failed = i.is_multiple_of(5);
    let odd = !i.is_multiple_of(2);
    LogRecord {
        request_id: Uuid::now_v7(),
        created_at,
        endpoint: if odd {
            Endpoint::ChatCompletions
        } else {
            Endpoint::Chat
        },
        user_id: (!i.is_multiple_of(3)).then(|| format!("user-{}", i % 17)),
        prompt: format!("prompt {i}: say something ünïcødé 🚀 with 'quotes' and \"double\""),
        response: (!failed).then(|| format!("response {i}")),
        model_version: format!("v{}", i % 4),
        provider: "mock".into(),
        upstream_model: "mock-1".into(),
        latency_ms: 12.345_678_9 + i as f64 / 7.0,
        ttft_ms: odd.then_some(0.1 + i as f64 / 3.0),
        input_tokens: i as i64 * 3,
        cached_input_tokens: i as i64,
        output_tokens: i as i64 * 2 + 1,
        cost_usd: 1.0e-7 * i as f64 + 1.0 / 3.0,
        status: if failed {
            LogStatus::Error
        } else {
            LogStatus::Ok
        },
        http_status: if failed { 502 } else { 200 },
        error_type: failed.then(|| "upstream_error".to_string()),
        error_message: failed.then(|| format!("upstream said no ({i})")),
        finish_reason: (!failed).then(|| "stop".to_string()),
        streamed: odd,
        tags: (0..i % 4).map(|t| format!("tag-{t}")).collect(),
        metadata: if i.is_multiple_of(7) {
            serde_json::json!({})
        } else {
            serde_json::json!({"i": i, "team": "search", "nested": {"list": [1, 2.5, "x"], "flag": true, "none": null}})
        },
        heuristic_label: (!failed).then_some(if odd {
            HeuristicLabel::Warn
        } else {
            HeuristicLabel::Good
        }),
        heuristic_results: if odd {
            serde_json::json!([{"check": "length", "result": "warn", "reason": "short"}])
        } else {
            serde_json::json!([])
        },
        api_key_name: odd.then(|| format!("key-{}", i % 3)),
        request_params: odd.then(|| {
            JsonText::from_vec(
                format!(r#"{{"model":"m{i}","temperature":0.5,"tools":[{{"type":"function","function":{{"name":"f","parameters":{{}}}}}}],"stop":"END"}}"#)
                    .into_bytes(),
            )
            .unwrap_or_else(|| unreachable!())
        }),
        tool_calls: (i % 3 == 1).then(|| {
            JsonText::from_value(&serde_json::json!([{"id": format!("call_{i}"), "type": "function",
                "function": {"name": "f", "arguments": "{\"a\": 1}"}}]))
            .unwrap_or_else(|| unreachable!())
        }),
        client_request_id: (i % 4 == 2).then(|| format!("client-{i}")),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn test_database_urls_keep_server_and_options() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h:1", "t3"), "postgres://h:1/t3");
    }
}
