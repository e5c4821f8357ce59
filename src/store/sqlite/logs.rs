//! `llm_logs` on SQLite: the batch insert as one prepared statement per row inside one
//! transaction, the row codec, and the filtered listing.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{parse_json, parse_uuid, SqliteStore};
use crate::store::codec::{opt_word_column, word_column};
use crate::store::logs::{LogFilter, LogPage, LogStore, MAX_PAGE_BYTES};
use crate::store::record::{to_micros, Endpoint, HeuristicLabel, JsonText, LogRecord, LogStatus};
use crate::store::sql::{self, log_columns};
use crate::store::StoreError;

/// Prepared once per connection and run per row inside one transaction: as fast as multi-row
/// VALUES on SQLite, with no variable-count limit to chunk around.
const INSERT: &str = concat!(
    "INSERT INTO llm_logs (",
    log_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
     $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29) ON CONFLICT(request_id) DO NOTHING"
);

#[async_trait]
impl LogStore for SqliteStore {
    async fn insert_batch(&self, records: &[LogRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for r in records {
            let tags =
                serde_json::to_string(&r.tags).map_err(|e| StoreError::Encode(e.to_string()))?;
            inserted += sqlx::query(INSERT)
                .bind(r.request_id.to_string())
                .bind(to_micros(r.created_at))
                .bind(r.endpoint.as_str())
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
                .bind(r.status.as_str())
                .bind(r.http_status)
                .bind(&r.error_type)
                .bind(&r.error_message)
                .bind(&r.finish_reason)
                .bind(r.streamed)
                .bind(tags)
                .bind(r.metadata.to_string())
                .bind(r.heuristic_label.map(HeuristicLabel::as_str))
                .bind(r.heuristic_results.to_string())
                .bind(&r.api_key_name)
                .bind(r.request_params.as_ref().map(JsonText::get))
                .bind(r.tool_calls.as_ref().map(JsonText::get))
                .bind(&r.client_request_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_log(&self, request_id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        let row = sqlx::query(sql::GET_LOG)
            .bind(request_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(log_from_row).transpose()
    }

    async fn get_log_by_client_id(
        &self,
        client_request_id: &str,
    ) -> Result<Option<LogRecord>, StoreError> {
        let row = sqlx::query(sql::GET_LOG_BY_CLIENT_ID)
            .bind(client_request_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(log_from_row).transpose()
    }

    async fn list_logs(&self, filter: &LogFilter) -> Result<LogPage, StoreError> {
        let (limit, fetch) = filter.page_and_fetch();
        // Timestamps are RFC 3339 text in UTC written by one formatter, so text order is time
        // order and a bound DateTime compares like the stored ones.
        let mut q = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            log_columns!(),
            " FROM llm_logs WHERE 1"
        ));
        if let Some(t) = filter.since {
            q.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = filter.until {
            q.push(" AND created_at < ").push_bind(t);
        }
        if let Some(v) = &filter.model_version {
            q.push(" AND model_version = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.user_id {
            q.push(" AND user_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.client_request_id {
            q.push(" AND client_request_id = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.tag {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(llm_logs.tags) WHERE value = ")
                .push_bind(v.clone())
                .push(")");
        }
        if let Some(s) = filter.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(c) = filter.after {
            q.push(" AND (created_at, request_id) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.request_id.to_string())
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, request_id DESC LIMIT ")
            .push_bind(fetch);
        // Streamed, so a page of large records is cut by bytes instead of held whole.
        let rows = q.build().fetch(&self.pool);
        LogPage::collect(rows, limit, MAX_PAGE_BYTES, log_from_row).await
    }

    async fn count_logs(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::COUNT_LOGS)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn probe_writes(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PROBE_WRITES).execute(&self.pool).await?;
        Ok(())
    }
}

/// Decodes a row selected with the `LogRecord` columns (uuid and JSON columns are TEXT here).
fn log_from_row(row: &SqliteRow) -> Result<LogRecord, StoreError> {
    let raw_id: String = row.try_get("request_id")?;
    let request_id = parse_uuid(&raw_id, "request_id")?;
    let tags: String = row.try_get("tags")?;
    let metadata: String = row.try_get("metadata")?;
    let heuristic_results: String = row.try_get("heuristic_results")?;
    Ok(LogRecord {
        request_id,
        created_at: row.try_get("created_at")?,
        endpoint: word_column(row, "endpoint", Endpoint::parse, request_id)?,
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
        status: word_column(row, "status", LogStatus::parse, request_id)?,
        http_status: row.try_get("http_status")?,
        error_type: row.try_get("error_type")?,
        error_message: row.try_get("error_message")?,
        finish_reason: row.try_get("finish_reason")?,
        streamed: row.try_get("streamed")?,
        tags: parse_json(&tags, "tags", request_id)?,
        metadata: parse_json(&metadata, "metadata", request_id)?,
        heuristic_label: opt_word_column(
            row,
            "heuristic_label",
            HeuristicLabel::parse,
            request_id,
        )?,
        heuristic_results: parse_json(&heuristic_results, "heuristic_results", request_id)?,
        api_key_name: row.try_get("api_key_name")?,
        request_params: json_text(row, "request_params", request_id)?,
        tool_calls: json_text(row, "tool_calls", request_id)?,
        client_request_id: row.try_get("client_request_id")?,
    })
}

/// A nullable JSON TEXT column kept as the text it holds.
fn json_text(
    row: &SqliteRow,
    column: &str,
    request_id: Uuid,
) -> Result<Option<JsonText>, StoreError> {
    match row.try_get::<Option<String>, _>(column)? {
        None => Ok(None),
        Some(text) => JsonText::from_vec(text.into_bytes())
            .map(Some)
            .ok_or_else(|| StoreError::corrupt(request_id, format!("{column}: not JSON"))),
    }
}
