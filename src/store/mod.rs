//! Durable storage of raw records: PostgreSQL or an embedded SQLite file behind one `Store`,
//! and the batching writer that keeps inserts off the request path. Knows nothing about HTTP.

pub mod auth;
pub mod query;
pub mod retention;
pub mod spool;
pub mod writer;

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::value::RawValue;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, PgPool, Row, SqlitePool};
use uuid::Uuid;

/// JSON kept as the text it was written as (a request's parameters, an answer's tool calls), so
/// the request path never builds a tree of it: stored as `jsonb` / TEXT, shown as JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// Valid JSON text, or None.
    pub fn from_vec(json: Vec<u8>) -> Option<JsonText> {
        let text = String::from_utf8(json).ok()?;
        RawValue::from_string(text).ok().map(JsonText)
    }

    pub fn from_value(v: &serde_json::Value) -> Option<JsonText> {
        serde_json::to_vec(v).ok().and_then(Self::from_vec)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or_default()
    }

    /// For PostgreSQL's jsonb, which refuses `\u0000`: NUL escapes become U+FFFD escapes, as
    /// NUL bytes in text columns become U+FFFD ([`pg_text`]).
    fn pg_text(&self) -> Cow<'_, str> {
        let text = self.get();
        if !text.contains("\\u0000") {
            return Cow::Borrowed(text);
        }
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                if b[i + 1..].starts_with(b"u0000") {
                    out.push_str(&text[copied..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    copied = i;
                    continue;
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// Equal when the JSON is (key order and spacing aside, as jsonb keeps neither).
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

/// One model call, as it lands in `llm_logs`.
///
/// The writer's spool keeps records as this struct's JSON across restarts and upgrades: a field
/// added later needs `#[serde(default)]`, or records spooled by the previous version become
/// unreadable (`spool::tests::a_record_spooled_by_the_first_version_still_reads` guards this).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogRecord {
    pub request_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// `chat` (POST /chat) or `chat_completions` (POST /v1/chat/completions).
    pub endpoint: String,
    pub user_id: Option<String>,
    /// The prompt as stored (the last user message for /chat; the JSON messages array otherwise).
    pub prompt: String,
    pub response: Option<String>,
    pub model_version: String,
    pub provider: String,
    pub upstream_model: String,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    /// `ok` or `error`.
    pub status: String,
    pub http_status: i32,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub finish_reason: Option<String>,
    pub streamed: bool,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// `good`, `warn` or `bad` from the heuristic checks; None when they did not run.
    pub heuristic_label: Option<String>,
    /// The failed heuristic checks with their reasons (a JSON array; `[]` when none failed).
    pub heuristic_results: serde_json::Value,
    /// Name of the client API key that made the call, when authentication is on.
    pub api_key_name: Option<String>,
    /// The request's parameters: the client's body without the conversation (`messages`, or
    /// `input` and `instructions`), subject to `logging.content`; None for `POST /chat`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub request_params: Option<JsonText>,
    /// The answer's tool calls, OpenAI-shaped (`[{id, type, function: {name, arguments}}]`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<JsonText>,
}

/// Why a database operation failed. Messages never contain a database password.
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

impl StoreError {
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
}

/// The database behind the gateway. Cloning is cheap (a pool handle).
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A dead database must fail start-up and readiness quickly, not hang them.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// One Postgres parameter or message may not exceed 1 GiB; batches of long prompts are split
/// well below that (one transaction keeps the batch atomic).
const PG_MAX_STATEMENT_BYTES: usize = 64 * 1024 * 1024;

/// The columns of a `LogRecord`, in the order every statement and row decoder here uses.
macro_rules! log_columns {
    () => {
        "request_id, created_at, endpoint, user_id, prompt, response, model_version, provider, \
         upstream_model, latency_ms, ttft_ms, input_tokens, cached_input_tokens, output_tokens, \
         cost_usd, status, http_status, error_type, error_message, finish_reason, streamed, tags, \
         metadata, heuristic_label, heuristic_results, api_key_name, request_params, tool_calls"
    };
}

/// Column list for `SELECT`s that decode rows with [`log_from_pg_row`] / [`log_from_sqlite_row`].
pub const LOG_COLUMNS: &str = log_columns!();

/// One statement per batch: each column travels as one array parameter, so the statement text and
/// its plan are the same for every batch size. Tags cannot be a `text[][]` element of UNNEST
/// (PostgreSQL arrays are not ragged), so each row's tags travel as one array literal
/// ([`pg_array_literal`]) cast to text[] in place.
macro_rules! pg_insert {
    () => {
        concat!(
    "INSERT INTO llm_logs (",
    log_columns!(),
    ") SELECT u.request_id, u.created_at, u.endpoint, u.user_id, u.prompt, u.response, \
     u.model_version, u.provider, u.upstream_model, u.latency_ms, u.ttft_ms, u.input_tokens, \
     u.cached_input_tokens, u.output_tokens, u.cost_usd, u.status, u.http_status, u.error_type, \
     u.error_message, u.finish_reason, u.streamed, \
     u.tags::text[], u.metadata, u.heuristic_label, \
     u.heuristic_results, u.api_key_name, u.request_params::jsonb, u.tool_calls::jsonb \
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::float8[], $11::float8[], $12::int8[], $13::int8[], \
     $14::int8[], $15::float8[], $16::text[], $17::int4[], $18::text[], $19::text[], $20::text[], \
     $21::bool[], $22::text[], $23::jsonb[], $24::text[], $25::jsonb[], $26::text[], $27::text[], \
     $28::text[]) \
     AS u(request_id, created_at, endpoint, user_id, prompt, response, model_version, provider, \
     upstream_model, latency_ms, ttft_ms, input_tokens, cached_input_tokens, output_tokens, \
     cost_usd, status, http_status, error_type, error_message, finish_reason, streamed, tags, \
     metadata, heuristic_label, heuristic_results, api_key_name, request_params, tool_calls)"
        )
    };
}

/// The batch insert without the conflict clause, where PostgreSQL spends ~13 % less CPU per row
/// (`examples/writer_bench.rs`); a batch that hits an existing row is written again with
/// [`PG_INSERT_IDEMPOTENT`].
const PG_INSERT: &str = pg_insert!();
/// Skips rows already stored, so a batch written twice (spool replay after a crash, a retry after
/// a lost commit acknowledgement) lands once. The conflict key includes created_at because
/// llm_logs is partitioned by it (migration 0002); a replayed record carries its original
/// created_at.
const PG_INSERT_IDEMPOTENT: &str = concat!(
    pg_insert!(),
    " ON CONFLICT (request_id, created_at) DO NOTHING"
);

/// Prepared once per connection and run per row inside one transaction: as fast as multi-row
/// VALUES on SQLite, with no variable-count limit to chunk around.
const SQLITE_INSERT: &str = concat!(
    "INSERT INTO llm_logs (",
    log_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28) ON CONFLICT(request_id) DO NOTHING"
);

const PG_GET_LOG: &str = concat!(
    "SELECT ",
    log_columns!(),
    // Partitioned by time, request_id alone is not unique (a reused client x-request-id makes
    // two rows): the newest one is the answer.
    " FROM llm_logs WHERE request_id = $1 ORDER BY created_at DESC LIMIT 1"
);
const SQLITE_GET_LOG: &str = concat!(
    "SELECT ",
    log_columns!(),
    " FROM llm_logs WHERE request_id = ?1"
);
const COUNT_LOGS: &str = "SELECT COUNT(*) FROM llm_logs";
const PING: &str = "SELECT 1";

impl Store {
    /// Opens a pool. `postgres://…` / `postgresql://…` selects PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a plain file path selects SQLite (file and parent directory created).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let max_connections = max_connections.max(1);
        let shown = redact_url(url);
        if is_postgres_url(url) {
            let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
                url: shown.clone(),
                reason: scrub(&e.to_string(), url),
            })?;
            return connect_postgres(opts, max_connections, &shown, url).await;
        }
        let base = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
                url: shown.clone(),
                reason: scrub(&e.to_string(), url),
            })?
        } else if url.contains("://") {
            return Err(StoreError::InvalidUrl {
                url: shown,
                reason:
                    "unsupported scheme; use postgres://, postgresql://, sqlite:// or a file path"
                        .into(),
            });
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        create_parent_dir(&base)?;
        let opts = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a crash can lose the last commits' fsync, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Connect {
                backend: "sqlite",
                url: shown,
                reason: scrub(&e.to_string(), url),
            })?;
        Ok(Store::Sqlite(pool))
    }

    /// "postgres" or "sqlite", for logs and the readiness report.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the embedded migrations; safe to run again and from several replicas at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => PG_MIGRATOR.run(pool).await?,
            Store::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// A round trip to the database (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => {
                sqlx::query(PING).execute(pool).await?;
            }
            Store::Sqlite(pool) => {
                sqlx::query(PING).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(pool) => pool.close().await,
        }
    }

    /// Inserts a batch atomically and returns how many rows were new. A record whose request_id
    /// is already stored (or repeated in the batch) is skipped, never an error, so replays are safe.
    /// Timestamps are kept to the microsecond on both backends.
    pub async fn insert_batch(&self, records: &[LogRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Postgres(pool) => {
                let chunks = chunk_by_bytes(records, PG_MAX_STATEMENT_BYTES);
                if let [only] = chunks.as_slice() {
                    // Duplicates are rare (a batch written again), so the cheaper statement
                    // goes first; the failed one wrote nothing.
                    return match pg_insert_chunk(pool, only, PG_INSERT).await {
                        Err(e) if is_unique_violation(&e) => {
                            Ok(pg_insert_chunk(pool, only, PG_INSERT_IDEMPOTENT).await?)
                        }
                        other => Ok(other?),
                    };
                }
                // Oversized batches are rare; a failed statement would abort the transaction.
                let mut tx = pool.begin().await?;
                let mut inserted = 0;
                for chunk in chunks {
                    inserted += pg_insert_chunk(&mut *tx, chunk, PG_INSERT_IDEMPOTENT).await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut inserted = 0;
                for r in records {
                    let tags = serde_json::to_string(&r.tags)
                        .map_err(|e| StoreError::Encode(e.to_string()))?;
                    inserted += sqlx::query(SQLITE_INSERT)
                        .bind(r.request_id.to_string())
                        .bind(to_micros(r.created_at))
                        .bind(&r.endpoint)
                        .bind(&r.user_id)
                        .bind(&r.prompt)
                        .bind(&r.response)
                        .bind(&r.model_version)
                        .bind(&r.provider)
                        .bind(&r.upstream_model)
                        .bind(r.latency_ms)
                        .bind(r.ttft_ms)
                        .bind(r.input_tokens)
                        .bind(r.cached_input_tokens)
                        .bind(r.output_tokens)
                        .bind(r.cost_usd)
                        .bind(&r.status)
                        .bind(r.http_status)
                        .bind(&r.error_type)
                        .bind(&r.error_message)
                        .bind(&r.finish_reason)
                        .bind(r.streamed)
                        .bind(tags)
                        .bind(r.metadata.to_string())
                        .bind(&r.heuristic_label)
                        .bind(r.heuristic_results.to_string())
                        .bind(&r.api_key_name)
                        .bind(r.request_params.as_ref().map(JsonText::get))
                        .bind(r.tool_calls.as_ref().map(JsonText::get))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(inserted)
            }
        }
    }

    /// The stored record of one request, if any.
    pub async fn get_log(&self, request_id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        match self {
            Store::Postgres(pool) => {
                let row = sqlx::query(PG_GET_LOG)
                    .bind(request_id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(log_from_pg_row).transpose()
            }
            Store::Sqlite(pool) => {
                let row = sqlx::query(SQLITE_GET_LOG)
                    .bind(request_id.to_string())
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(log_from_sqlite_row).transpose()
            }
        }
    }

    /// Number of rows in `llm_logs`.
    pub async fn count_logs(&self) -> Result<i64, StoreError> {
        let n = match self {
            Store::Postgres(pool) => sqlx::query_scalar(COUNT_LOGS).fetch_one(pool).await?,
            Store::Sqlite(pool) => sqlx::query_scalar(COUNT_LOGS).fetch_one(pool).await?,
        };
        Ok(n)
    }
}

/// Decodes a PostgreSQL row selected with [`LOG_COLUMNS`].
pub fn log_from_pg_row(row: &PgRow) -> Result<LogRecord, StoreError> {
    Ok(LogRecord {
        request_id: row.try_get("request_id")?,
        created_at: row.try_get("created_at")?,
        endpoint: row.try_get("endpoint")?,
        user_id: row.try_get("user_id")?,
        prompt: row.try_get("prompt")?,
        response: row.try_get("response")?,
        model_version: row.try_get("model_version")?,
        provider: row.try_get("provider")?,
        upstream_model: row.try_get("upstream_model")?,
        latency_ms: row.try_get("latency_ms")?,
        ttft_ms: row.try_get("ttft_ms")?,
        input_tokens: row.try_get("input_tokens")?,
        cached_input_tokens: row.try_get("cached_input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
        status: row.try_get("status")?,
        http_status: row.try_get("http_status")?,
        error_type: row.try_get("error_type")?,
        error_message: row.try_get("error_message")?,
        finish_reason: row.try_get("finish_reason")?,
        streamed: row.try_get("streamed")?,
        tags: row.try_get("tags")?,
        metadata: row.try_get("metadata")?,
        heuristic_label: row.try_get("heuristic_label")?,
        heuristic_results: row.try_get("heuristic_results")?,
        api_key_name: row.try_get("api_key_name")?,
        request_params: row
            .try_get::<Option<serde_json::Value>, _>("request_params")?
            .as_ref()
            .and_then(JsonText::from_value),
        tool_calls: row
            .try_get::<Option<serde_json::Value>, _>("tool_calls")?
            .as_ref()
            .and_then(JsonText::from_value),
    })
}

/// Decodes a SQLite row selected with [`LOG_COLUMNS`] (uuid and JSON columns are TEXT there).
pub fn log_from_sqlite_row(row: &SqliteRow) -> Result<LogRecord, StoreError> {
    let raw_id: String = row.try_get("request_id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        request_id: raw_id.clone(),
        reason,
    };
    let request_id = Uuid::parse_str(&raw_id).map_err(|e| corrupt(format!("request_id: {e}")))?;
    let tags: String = row.try_get("tags")?;
    let tags = serde_json::from_str(&tags).map_err(|e| corrupt(format!("tags: {e}")))?;
    let metadata: String = row.try_get("metadata")?;
    let metadata =
        serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let heuristic_results: String = row.try_get("heuristic_results")?;
    let heuristic_results = serde_json::from_str(&heuristic_results)
        .map_err(|e| corrupt(format!("heuristic_results: {e}")))?;
    let json_text = |column: &str| -> Result<Option<JsonText>, StoreError> {
        match row.try_get::<Option<String>, _>(column)? {
            None => Ok(None),
            Some(text) => JsonText::from_vec(text.into_bytes())
                .map(Some)
                .ok_or_else(|| corrupt(format!("{column}: not JSON"))),
        }
    };
    let request_params = json_text("request_params")?;
    let tool_calls = json_text("tool_calls")?;
    Ok(LogRecord {
        request_id,
        created_at: row.try_get("created_at")?,
        endpoint: row.try_get("endpoint")?,
        user_id: row.try_get("user_id")?,
        prompt: row.try_get("prompt")?,
        response: row.try_get("response")?,
        model_version: row.try_get("model_version")?,
        provider: row.try_get("provider")?,
        upstream_model: row.try_get("upstream_model")?,
        latency_ms: row.try_get("latency_ms")?,
        ttft_ms: row.try_get("ttft_ms")?,
        input_tokens: row.try_get("input_tokens")?,
        cached_input_tokens: row.try_get("cached_input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
        status: row.try_get("status")?,
        http_status: row.try_get("http_status")?,
        error_type: row.try_get("error_type")?,
        error_message: row.try_get("error_message")?,
        finish_reason: row.try_get("finish_reason")?,
        streamed: row.try_get("streamed")?,
        tags,
        metadata,
        heuristic_label: row.try_get("heuristic_label")?,
        heuristic_results,
        api_key_name: row.try_get("api_key_name")?,
        request_params,
        tool_calls,
    })
}

/// A unique index refused the statement (on either backend).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

async fn pg_insert_chunk<'e, E>(
    executor: E,
    records: &[LogRecord],
    statement: &'static str,
) -> Result<u64, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let n = records.len();
    let mut request_id = Vec::with_capacity(n);
    let mut created_at = Vec::with_capacity(n);
    let mut endpoint = Vec::with_capacity(n);
    let mut user_id = Vec::with_capacity(n);
    let mut prompt = Vec::with_capacity(n);
    let mut response = Vec::with_capacity(n);
    let mut model_version = Vec::with_capacity(n);
    let mut provider = Vec::with_capacity(n);
    let mut upstream_model = Vec::with_capacity(n);
    let mut latency_ms = Vec::with_capacity(n);
    let mut ttft_ms = Vec::with_capacity(n);
    let mut input_tokens = Vec::with_capacity(n);
    let mut cached_input_tokens = Vec::with_capacity(n);
    let mut output_tokens = Vec::with_capacity(n);
    let mut cost_usd = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut http_status = Vec::with_capacity(n);
    let mut error_type = Vec::with_capacity(n);
    let mut error_message = Vec::with_capacity(n);
    let mut finish_reason = Vec::with_capacity(n);
    let mut streamed = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut heuristic_label = Vec::with_capacity(n);
    let mut heuristic_results = Vec::with_capacity(n);
    let mut api_key_name = Vec::with_capacity(n);
    let mut request_params = Vec::with_capacity(n);
    let mut tool_calls = Vec::with_capacity(n);
    for r in records {
        request_id.push(r.request_id);
        created_at.push(r.created_at);
        endpoint.push(pg_text(&r.endpoint));
        user_id.push(r.user_id.as_deref().map(pg_text));
        prompt.push(pg_text(&r.prompt));
        response.push(r.response.as_deref().map(pg_text));
        model_version.push(pg_text(&r.model_version));
        provider.push(pg_text(&r.provider));
        upstream_model.push(pg_text(&r.upstream_model));
        latency_ms.push(r.latency_ms);
        ttft_ms.push(r.ttft_ms);
        input_tokens.push(r.input_tokens);
        cached_input_tokens.push(r.cached_input_tokens);
        output_tokens.push(r.output_tokens);
        cost_usd.push(r.cost_usd);
        status.push(pg_text(&r.status));
        http_status.push(r.http_status);
        error_type.push(r.error_type.as_deref().map(pg_text));
        error_message.push(r.error_message.as_deref().map(pg_text));
        finish_reason.push(r.finish_reason.as_deref().map(pg_text));
        streamed.push(r.streamed);
        tags.push(pg_array_literal(&r.tags));
        let mut m = r.metadata.clone();
        strip_nul_json(&mut m);
        metadata.push(m);
        heuristic_label.push(r.heuristic_label.as_deref().map(pg_text));
        let mut h = r.heuristic_results.clone();
        strip_nul_json(&mut h);
        heuristic_results.push(h);
        api_key_name.push(r.api_key_name.as_deref().map(pg_text));
        request_params.push(r.request_params.as_ref().map(JsonText::pg_text));
        tool_calls.push(r.tool_calls.as_ref().map(JsonText::pg_text));
    }
    let result = sqlx::query(statement)
        .bind(request_id)
        .bind(created_at)
        .bind(endpoint)
        .bind(user_id)
        .bind(prompt)
        .bind(response)
        .bind(model_version)
        .bind(provider)
        .bind(upstream_model)
        .bind(latency_ms)
        .bind(ttft_ms)
        .bind(input_tokens)
        .bind(cached_input_tokens)
        .bind(output_tokens)
        .bind(cost_usd)
        .bind(status)
        .bind(http_status)
        .bind(error_type)
        .bind(error_message)
        .bind(finish_reason)
        .bind(streamed)
        .bind(tags)
        .bind(metadata)
        .bind(heuristic_label)
        .bind(heuristic_results)
        .bind(api_key_name)
        .bind(request_params)
        .bind(tool_calls)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

/// PostgreSQL text cannot hold NUL, and one such byte would make the whole batch fail forever;
/// it is stored as U+FFFD instead.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A PostgreSQL array literal of text elements (`{"a","b \"c\""}`), every element quoted so
/// commas, braces, spaces and the word NULL stay text.
fn pg_array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|t| t.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in pg_text(item).chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// jsonb rejects `\u0000` in strings and keys for the same reason as [`pg_text`].
fn strip_nul_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nul_json),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(k.replace('\0', "\u{FFFD}"), v);
                }
            }
            map.values_mut().for_each(strip_nul_json);
        }
        _ => {}
    }
}

/// Splits a batch so that no statement carries more than `limit` bytes of text (roughly).
fn chunk_by_bytes(records: &[LogRecord], limit: usize) -> Vec<&[LogRecord]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        let size = 512
            + r.prompt.len()
            + r.response.as_ref().map_or(0, String::len)
            + r.error_message.as_ref().map_or(0, String::len)
            + r.tags.iter().map(String::len).sum::<usize>()
            + r.request_params.as_ref().map_or(0, |p| p.get().len())
            + r.tool_calls.as_ref().map_or(0, |t| t.get().len());
        if i > start && bytes + size > limit {
            chunks.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    chunks.push(&records[start..]);
    chunks
}

/// Postgres keeps microseconds; SQLite gets the same precision so both backends read back alike.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn is_postgres_url(url: &str) -> bool {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

async fn connect_postgres(
    opts: PgConnectOptions,
    max_connections: u32,
    shown_url: &str,
    raw_url: &str,
) -> Result<Store, StoreError> {
    let failed = |reason: String| StoreError::Connect {
        backend: "postgres",
        url: shown_url.to_string(),
        reason: scrub(&reason, raw_url),
    };
    // The pool retries a refused connection until its timeout and then reports only "pool timed
    // out"; one direct attempt first surfaces the real cause (refused, bad password, no database).
    match tokio::time::timeout(ACQUIRE_TIMEOUT, opts.connect()).await {
        Ok(Ok(probe)) => {
            let _ = sqlx::Connection::close(probe).await;
        }
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                ACQUIRE_TIMEOUT.as_secs()
            )))
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(Store::Postgres(pool))
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

/// The URL with its password (userinfo or `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &out[rest_start..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_len].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Removes the URL's password from a driver message, should the driver ever echo it.
fn scrub(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for secret in url_secrets(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "***");
        }
    }
    out
}

fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_string());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for kv in query.split('&') {
            if let Some((k, v)) = kv.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    secrets.push(v.to_string());
                }
            }
        }
    }
    secrets
}

/// Fresh, isolated databases for tests (used by unit tests here and by integration tests in
/// `tests/`, hence not `cfg(test)`).
pub mod testing {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    use uuid::Uuid;

    use super::{connect_postgres, redact_url, scrub, Store, StoreError};

    /// Where test databases are created unless `LQO_TEST_PG_URL` says otherwise.
    pub const DEFAULT_TEST_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A test database on the PostgreSQL server; dropped (with `FORCE`, so open pools do not
    /// block it) when this value is dropped or [`TestDb::cleanup`] is called.
    pub struct TestDb {
        admin: PgConnectOptions,
        name: String,
        dropped: bool,
    }

    impl TestDb {
        pub fn name(&self) -> &str {
            &self.name
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
            // Drop cannot await, and the test's runtime may be the current-thread kind: a
            // separate thread with its own runtime does the work, joined so the test process
            // does not exit before the database is gone.
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
            reason: scrub(&e.to_string(), &base),
        })?;
        // Generated from hex digits only, so it is safe to splice into DDL.
        let name = format!("lqo_test_{}", Uuid::new_v4().simple());
        let mut conn = admin.connect().await.map_err(|e| StoreError::Connect {
            backend: "postgres",
            url: redact_url(&base),
            reason: scrub(&e.to_string(), &base),
        })?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let db = TestDb {
            admin: admin.clone(),
            name: name.clone(),
            dropped: false,
        };
        let store = connect_postgres(admin.database(&name), 5, &redact_url(&base), &base).await?;
        Ok((store, db))
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

    /// A plausible record with every optional field set; `i` varies the content.
    pub fn sample_record(i: usize) -> super::LogRecord {
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
        super::LogRecord {
            request_id: Uuid::now_v7(),
            created_at,
            endpoint: if !odd { "chat" } else { "chat_completions" }.into(),
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
            status: if failed { "error" } else { "ok" }.into(),
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
            heuristic_label: (!failed).then(|| if odd { "warn" } else { "good" }.to_string()),
            heuristic_results: if odd {
                serde_json::json!([{"check": "length", "result": "warn", "reason": "short"}])
            } else {
                serde_json::json!([])
            },
            api_key_name: odd.then(|| format!("key-{}", i % 3)),
            request_params: odd.then(|| {
                super::JsonText::from_vec(
                    format!(r#"{{"model":"m{i}","temperature":0.5,"tools":[{{"type":"function","function":{{"name":"f","parameters":{{}}}}}}],"stop":"END"}}"#)
                        .into_bytes(),
                )
                .unwrap_or_else(|| unreachable!())
            }),
            tool_calls: (i % 3 == 1).then(|| {
                super::JsonText::from_value(&serde_json::json!([{"id": format!("call_{i}"), "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\": 1}"}}]))
                .unwrap_or_else(|| unreachable!())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{empty_postgres, fresh_postgres, fresh_sqlite, sample_record};
    use super::*;

    fn batch(n: usize) -> Vec<LogRecord> {
        (0..n).map(sample_record).collect()
    }

    /// What a record looks like after a round trip: timestamps at microsecond precision.
    fn stored(r: &LogRecord) -> LogRecord {
        LogRecord {
            created_at: to_micros(r.created_at),
            ..r.clone()
        }
    }

    async fn batch_round_trips_and_is_idempotent(store: &Store) {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        let records = batch(1_000);
        assert_eq!(store.insert_batch(&records).await.unwrap(), 1_000);
        assert_eq!(store.count_logs().await.unwrap(), 1_000);
        for r in &records {
            let got = store.get_log(r.request_id).await.unwrap();
            assert_eq!(got.as_ref(), Some(&stored(r)), "record {}", r.request_id);
        }
        assert_eq!(store.insert_batch(&records).await.unwrap(), 0);
        assert_eq!(store.insert_batch(&[]).await.unwrap(), 0);
        assert_eq!(store.count_logs().await.unwrap(), 1_000);
        assert_eq!(store.get_log(Uuid::new_v4()).await.unwrap(), None);
    }

    async fn duplicates_inside_one_batch_land_once(store: &Store) {
        let r = sample_record(1);
        let fresh = sample_record(2);
        let n = store
            .insert_batch(&[r.clone(), r.clone(), fresh])
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(store.count_logs().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn postgres_batch_round_trips_every_field_and_ignores_duplicates() {
        let (store, db) = fresh_postgres().await.unwrap();
        assert_eq!(store.backend(), "postgres");
        batch_round_trips_and_is_idempotent(&store).await;
        db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_batch_round_trips_every_field_and_ignores_duplicates() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        batch_round_trips_and_is_idempotent(&store).await;
    }

    #[tokio::test]
    async fn postgres_duplicates_inside_one_batch_land_once() {
        let (store, _db) = fresh_postgres().await.unwrap();
        duplicates_inside_one_batch_land_once(&store).await;
    }

    #[tokio::test]
    async fn sqlite_duplicates_inside_one_batch_land_once() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        duplicates_inside_one_batch_land_once(&store).await;
    }

    #[tokio::test]
    async fn postgres_stores_nul_bytes_as_replacement_characters() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let mut r = sample_record(3);
        r.prompt = "a\0b".into();
        r.tags = vec!["t\0".into()];
        r.metadata = serde_json::json!({"k\0": ["v\0"]});
        r.request_params = JsonText::from_vec(br#"{"stop":"a\u0000b","n":"\\u0000"}"#.to_vec());
        assert_eq!(store.insert_batch(&[r.clone()]).await.unwrap(), 1);
        let got = store.get_log(r.request_id).await.unwrap().unwrap();
        assert_eq!(got.prompt, "a\u{FFFD}b");
        assert_eq!(got.tags, vec!["t\u{FFFD}".to_string()]);
        assert_eq!(
            got.metadata,
            serde_json::json!({"k\u{FFFD}": ["v\u{FFFD}"]})
        );
        // An escaped backslash followed by `u0000` is text, not a NUL.
        assert_eq!(
            got.request_params.unwrap().to_value(),
            serde_json::json!({"stop": "a\u{FFFD}b", "n": "\\u0000"})
        );
    }

    #[tokio::test]
    async fn postgres_keeps_tags_that_look_like_array_syntax() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let awkward: Vec<String> = [
            "plain",
            "with space",
            "a,b",
            "{braces}",
            "quote\"d",
            "back\\slash",
            "NULL",
            "",
            "ünïcödé ✓",
            "\\\"",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let mut r = sample_record(4);
        r.tags = awkward.clone();
        let mut none = sample_record(5);
        none.tags = vec![];
        assert_eq!(
            store
                .insert_batch(&[r.clone(), none.clone()])
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store.get_log(r.request_id).await.unwrap().unwrap().tags,
            awkward
        );
        assert!(store
            .get_log(none.request_id)
            .await
            .unwrap()
            .unwrap()
            .tags
            .is_empty());
    }

    #[tokio::test]
    async fn postgres_batch_with_one_stored_row_lands_the_others() {
        // The plain insert fails on the stored row; the idempotent retry keeps the rest.
        let (store, _db) = fresh_postgres().await.unwrap();
        let old = sample_record(6);
        assert_eq!(
            store
                .insert_batch(std::slice::from_ref(&old))
                .await
                .unwrap(),
            1
        );
        let batch = vec![sample_record(7), old.clone(), sample_record(8)];
        assert_eq!(store.insert_batch(&batch).await.unwrap(), 2);
        for r in &batch {
            assert!(store.get_log(r.request_id).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn postgres_splits_oversized_batches_into_one_transaction() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let records = batch(10);
        let chunks = chunk_by_bytes(&records, 1_500);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert_eq!(store.insert_batch(&records).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn postgres_migration_upgrades_the_seed_table_in_place() {
        let (store, _db) = empty_postgres().await.unwrap();
        let Store::Postgres(pool) = &store else {
            panic!("not postgres")
        };
        // The original Python service's table, with a row in it.
        sqlx::raw_sql(
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, \
             model_version VARCHAR NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, \
             status VARCHAR NOT NULL); \
             INSERT INTO llm_logs (created_at, user_id, prompt, response, model_version, latency_ms, status) \
             VALUES ('2024-05-01 10:00:00', 'u1', 'hi', 'hello', 'gpt-5-mini', 4735.19, 'ok');",
        )
        .execute(pool)
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let (id, created_at): (Uuid, DateTime<Utc>) =
            sqlx::query_as("SELECT request_id, created_at FROM llm_logs")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(created_at.to_rfc3339(), "2024-05-01T10:00:00+00:00");
        let old = store.get_log(id).await.unwrap().unwrap();
        assert_eq!(old.prompt, "hi");
        assert_eq!(old.endpoint, "chat");
        assert!(old.tags.is_empty());
        let mut new = sample_record(5);
        new.user_id = None;
        new.response = None;
        assert_eq!(store.insert_batch(&[new.clone()]).await.unwrap(), 1);
        assert_eq!(
            store.get_log(new.request_id).await.unwrap(),
            Some(stored(&new))
        );
    }

    #[tokio::test]
    async fn sqlite_url_forms_all_open_a_file_and_create_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        for url in [
            format!("sqlite://{base}/a/one.db"),
            format!("sqlite:{base}/b/two.db"),
            format!("{base}/c/three.db"),
        ] {
            let store = Store::connect(&url, 2).await.unwrap();
            store.migrate().await.unwrap();
            store.ping().await.unwrap();
            store.close().await;
        }
        for f in ["a/one.db", "b/two.db", "c/three.db"] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
    }

    #[tokio::test]
    async fn connection_errors_never_show_the_password() {
        let url = "postgres://lqo:s3cret-pw@127.0.0.1:1/lqo";
        let err = Store::connect(url, 1).await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("lqo:***@127.0.0.1:1"), "{text}");
        assert!(
            text.to_lowercase().contains("refused"),
            "the cause is lost: {text}"
        );
        let err = Store::connect("mysql://root:hunter22@db/x", 1)
            .await
            .unwrap_err();
        assert!(!format!("{err}").contains("hunter22"));
    }

    #[test]
    fn redact_url_hides_userinfo_and_query_passwords() {
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require&password=x"),
            "postgresql://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/lqo.db"), "sqlite://data/lqo.db");
    }

    #[test]
    fn only_data_errors_count_as_rejected() {
        assert!(StoreError::Encode("x".into()).is_data_rejected());
        assert!(!StoreError::Database(sqlx::Error::PoolTimedOut).is_data_rejected());
    }
}
