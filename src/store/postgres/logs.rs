//! `llm_logs` on PostgreSQL: the batch insert (a binary `COPY`, `copy.rs`; one `UNNEST` statement
//! that skips stored rows for a batch written twice), the row codec, and the filtered listing.

use std::borrow::Cow;

use async_trait::async_trait;
use bytes::BytesMut;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{copy, PgStore};
use crate::store::codec::{opt_word_column, word_column};
use crate::store::error::is_unique_violation;
use crate::store::logs::{LogFilter, LogPage, LogStore, MAX_PAGE_BYTES};
use crate::store::record::{Endpoint, HeuristicLabel, JsonText, LogRecord, LogStatus};
use crate::store::sql::{self, log_columns};
use crate::store::StoreError;

/// One Postgres parameter or message may not exceed 1 GiB; batches of long prompts are split
/// well below that (one transaction keeps the batch atomic).
const MAX_STATEMENT_BYTES: usize = 64 * 1024 * 1024;

/// One statement per batch: each column travels as one array parameter, so the statement text and
/// its plan are the same for every batch size. Tags cannot be a `text[][]` element of UNNEST
/// (PostgreSQL arrays are not ragged), so each row's tags travel as one array literal
/// ([`array_literal`]) cast to text[] in place.
macro_rules! insert {
    () => {
        concat!(
    "INSERT INTO llm_logs (",
    log_columns!(),
    ") SELECT u.request_id, u.created_at, u.endpoint, u.user_id, u.prompt, u.response, \
     u.model_version, u.provider, u.upstream_model, u.latency_ms, u.ttft_ms, u.input_tokens, \
     u.cached_input_tokens, u.output_tokens, u.cost_usd, u.status, u.http_status, u.error_type, \
     u.error_message, u.finish_reason, u.streamed, \
     u.tags::text[], u.metadata, u.heuristic_label, \
     u.heuristic_results, u.api_key_name, u.request_params::jsonb, u.tool_calls::jsonb, \
     u.client_request_id \
     FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::text[], $10::float8[], $11::float8[], $12::int8[], $13::int8[], \
     $14::int8[], $15::float8[], $16::text[], $17::int4[], $18::text[], $19::text[], $20::text[], \
     $21::bool[], $22::text[], $23::jsonb[], $24::text[], $25::jsonb[], $26::text[], $27::text[], \
     $28::text[], $29::text[]) \
     AS u(request_id, created_at, endpoint, user_id, prompt, response, model_version, provider, \
     upstream_model, latency_ms, ttft_ms, input_tokens, cached_input_tokens, output_tokens, \
     cost_usd, status, http_status, error_type, error_message, finish_reason, streamed, tags, \
     metadata, heuristic_label, heuristic_results, api_key_name, request_params, tool_calls, \
     client_request_id)"
        )
    };
}

/// The batch insert for a batch that holds rows already stored (the binary COPY refused it):
/// skips them, so a batch written twice (spool replay after a crash, a retry after a lost commit
/// acknowledgement) lands once. The conflict key includes created_at because
/// llm_logs is partitioned by it (migration 0002); a replayed record carries its original
/// created_at.
const INSERT_IDEMPOTENT: &str = concat!(
    insert!(),
    " ON CONFLICT (request_id, created_at) DO NOTHING"
);

/// A COPY sends its rows in pieces of about this size, so a batch of long prompts is encoded and
/// buffered a piece at a time; the pieces are one COPY, so the batch lands whole or not at all.
const COPY_PIECE_BYTES: usize = 1024 * 1024;

/// Writes the batch with one binary `COPY` (see `copy.rs`) on a connection of its own. A COPY
/// that did not end cleanly — cut off by the writer's timeout, or a broken connection — leaves
/// its connection mid-protocol, so that connection is closed rather than returned to the pool.
async fn copy_rows(pool: &sqlx::PgPool, records: &[LogRecord]) -> Result<u64, sqlx::Error> {
    let mut conn = CloseUnlessClean(Some(pool.acquire().await?));
    let Some(c) = conn.0.as_mut() else {
        unreachable!("the connection is held until the end");
    };
    let mut copy = c.copy_in_raw(copy::COPY_LOGS).await?;
    let pieces = chunk_by_bytes(records, COPY_PIECE_BYTES);
    let last = pieces.len() - 1;
    let mut buf = BytesMut::new();
    copy::header(&mut buf);
    for (i, piece) in pieces.into_iter().enumerate() {
        copy::encode_rows(&mut buf, piece);
        if i == last {
            copy::trailer(&mut buf);
        }
        copy.send(buf.split()).await?;
    }
    let result = copy.finish().await;
    // finish() reads the server's answer to its end, an error answer included.
    if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
        conn.clean();
    }
    result
}

/// A pooled connection that goes back to the pool only when [`CloseUnlessClean::clean`] was
/// called; dropped otherwise, it is detached from the pool and closed.
struct CloseUnlessClean(Option<PoolConnection<Postgres>>);

impl CloseUnlessClean {
    fn clean(&mut self) {
        self.0 = None; // dropped here: back to the pool
    }
}

impl Drop for CloseUnlessClean {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

#[async_trait]
impl LogStore for PgStore {
    async fn insert_batch(&self, records: &[LogRecord]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        // Duplicates are rare (a batch written again after a crash or a lost acknowledgement),
        // so the cheap binary COPY goes first; a COPY that hits an existing row wrote nothing,
        // and the batch is written again with the statement that skips stored rows.
        match copy_rows(&self.pool, records).await {
            Err(e) if is_unique_violation(&e) => {}
            other => return Ok(other?),
        }
        let chunks = chunk_by_bytes(records, MAX_STATEMENT_BYTES);
        if let [only] = chunks.as_slice() {
            return Ok(insert_chunk(&self.pool, only, INSERT_IDEMPOTENT).await?);
        }
        // Oversized batches are rare; a failed statement would abort the transaction.
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in chunks {
            inserted += insert_chunk(&mut *tx, chunk, INSERT_IDEMPOTENT).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn get_log(&self, request_id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        let row = sqlx::query(sql::GET_LOG)
            .bind(request_id)
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
        let mut q = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            log_columns!(),
            " FROM llm_logs WHERE true"
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
            // Containment, so the GIN index on tags serves it.
            q.push(" AND tags @> ARRAY[")
                .push_bind(v.clone())
                .push("]::text[]");
        }
        if let Some(s) = filter.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(c) = filter.after {
            q.push(" AND (created_at, request_id) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.request_id)
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

/// Decodes a row selected with the `LogRecord` columns.
fn log_from_row(row: &PgRow) -> Result<LogRecord, StoreError> {
    let request_id: Uuid = row.try_get("request_id")?;
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
        tags: row.try_get("tags")?,
        metadata: row.try_get("metadata")?,
        heuristic_label: opt_word_column(
            row,
            "heuristic_label",
            HeuristicLabel::parse,
            request_id,
        )?,
        heuristic_results: row.try_get("heuristic_results")?,
        api_key_name: row.try_get("api_key_name")?,
        request_params: json_text(row, "request_params")?,
        tool_calls: json_text(row, "tool_calls")?,
        client_request_id: row.try_get("client_request_id")?,
    })
}

/// A nullable jsonb column as the JSON text it holds.
fn json_text(row: &PgRow, column: &str) -> Result<Option<JsonText>, StoreError> {
    Ok(row
        .try_get::<Option<serde_json::Value>, _>(column)?
        .as_ref()
        .and_then(JsonText::from_value))
}

async fn insert_chunk<'e, E>(
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
    let mut client_request_id = Vec::with_capacity(n);
    for r in records {
        request_id.push(r.request_id);
        created_at.push(r.created_at);
        endpoint.push(r.endpoint.as_str());
        user_id.push(r.user_id.as_deref().map(text));
        prompt.push(text(&r.prompt));
        response.push(r.response.as_deref().map(text));
        model_version.push(text(&r.model_version));
        provider.push(text(&r.provider));
        upstream_model.push(text(&r.upstream_model));
        latency_ms.push(r.latency_ms);
        ttft_ms.push(r.ttft_ms);
        input_tokens.push(r.input_tokens);
        cached_input_tokens.push(r.cached_input_tokens);
        output_tokens.push(r.output_tokens);
        cost_usd.push(r.cost_usd);
        status.push(r.status.as_str());
        http_status.push(r.http_status);
        error_type.push(r.error_type.as_deref().map(text));
        error_message.push(r.error_message.as_deref().map(text));
        finish_reason.push(r.finish_reason.as_deref().map(text));
        streamed.push(r.streamed);
        tags.push(array_literal(&r.tags));
        let mut m = r.metadata.clone();
        strip_nul_json(&mut m);
        metadata.push(m);
        heuristic_label.push(r.heuristic_label.map(HeuristicLabel::as_str));
        let mut h = r.heuristic_results.clone();
        strip_nul_json(&mut h);
        heuristic_results.push(h);
        api_key_name.push(r.api_key_name.as_deref().map(text));
        request_params.push(r.request_params.as_ref().map(JsonText::without_nul_escapes));
        tool_calls.push(r.tool_calls.as_ref().map(JsonText::without_nul_escapes));
        client_request_id.push(r.client_request_id.as_deref().map(text));
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
        .bind(client_request_id)
        .execute(executor)
        .await?;
    Ok(result.rows_affected())
}

/// PostgreSQL text cannot hold NUL, and one such byte would make the whole batch fail forever;
/// it is stored as U+FFFD instead.
pub(super) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A PostgreSQL array literal of text elements (`{"a","b \"c\""}`), every element quoted so
/// commas, braces, spaces and the word NULL stay text.
fn array_literal(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|t| t.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in text(item).chars() {
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

/// jsonb rejects `\u0000` in strings and keys for the same reason as [`text`].
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
        let size = r.approx_bytes();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{empty_postgres, fetch_i64, fresh_postgres, sample_record};

    /// A COPY cut off part-way (the writer's timeout drops the insert) writes all or nothing,
    /// and the connection it was on does not go back to the pool mid-protocol: the next batch
    /// goes through. A cut-off COPY whose data had all reached the server may still commit after
    /// the test looked, so each batch is told apart by its user id: at any moment it has all its
    /// rows or none.
    #[tokio::test]
    async fn a_copy_cut_off_part_way_writes_nothing_and_leaves_the_pool_usable() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let mut stored = 0;
        let cut_offs = [50u64, 300, 1_000, 3_000, 10_000, 30_000];
        for micros in cut_offs {
            let batch: Vec<LogRecord> = (0..300)
                .map(|i| {
                    let mut r = sample_record(i);
                    r.prompt = "x".repeat(40_000);
                    r.user_id = Some(format!("cut-off-{micros}"));
                    r
                })
                .collect();
            let _ = tokio::time::timeout(
                std::time::Duration::from_micros(micros),
                store.logs.insert_batch(&batch),
            )
            .await;
            let landed = fetch_i64(&store, "SELECT count(*) FROM llm_logs").await - stored;
            assert!(
                landed == 0 || landed == batch.len() as i64,
                "cut off after {micros} µs: {landed} of {} rows landed",
                batch.len()
            );
            stored += landed;
            let mut next = sample_record(1);
            next.user_id = Some("after-a-cut-off".into());
            assert_eq!(store.logs.insert_batch(&[next]).await.unwrap(), 1);
            stored += 1;
        }
        assert!(fetch_i64(&store, "SELECT count(*) FROM llm_logs").await >= stored);
        for micros in cut_offs {
            let sql = format!("SELECT count(*) FROM llm_logs WHERE user_id = 'cut-off-{micros}'");
            let landed = fetch_i64(&store, &sql).await;
            assert!(
                landed == 0 || landed == 300,
                "cut off after {micros} µs: {landed} of 300 rows landed"
            );
        }
        let sql = "SELECT count(*) FROM llm_logs WHERE user_id = 'after-a-cut-off'";
        assert_eq!(fetch_i64(&store, sql).await, cut_offs.len() as i64);
    }

    #[tokio::test]
    async fn a_batch_written_twice_lands_once_through_the_fallback_statement() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let first: Vec<LogRecord> = (0..5).map(sample_record).collect();
        assert_eq!(store.logs.insert_batch(&first).await.unwrap(), 5);
        // The COPY refuses the stored rows; the batch goes again with ON CONFLICT DO NOTHING.
        let mut again = first.clone();
        again.push(sample_record(6));
        assert_eq!(store.logs.insert_batch(&again).await.unwrap(), 1);
        assert_eq!(fetch_i64(&store, "SELECT count(*) FROM llm_logs").await, 6);
    }

    #[tokio::test]
    async fn postgres_stores_nul_bytes_as_replacement_characters() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let mut r = sample_record(3);
        r.prompt = "a\0b".into();
        r.tags = vec!["t\0".into()];
        r.metadata = serde_json::json!({"k\0": ["v\0"]});
        r.request_params = JsonText::from_vec(br#"{"stop":"a\u0000b","n":"\\u0000"}"#.to_vec());
        assert_eq!(store.logs.insert_batch(&[r.clone()]).await.unwrap(), 1);
        let got = store.logs.get_log(r.request_id).await.unwrap().unwrap();
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
        let batch = [r.clone(), none.clone()];
        assert_eq!(store.logs.insert_batch(&batch).await.unwrap(), 2);
        let got = |id| {
            let logs = store.logs.clone();
            async move { logs.get_log(id).await.unwrap().unwrap().tags }
        };
        assert_eq!(got(r.request_id).await, awkward);
        assert!(got(none.request_id).await.is_empty());
    }

    #[tokio::test]
    async fn postgres_batch_with_one_stored_row_lands_the_others() {
        // The plain insert fails on the stored row; the idempotent retry keeps the rest.
        let (store, _db) = fresh_postgres().await.unwrap();
        let old = sample_record(6);
        let one = std::slice::from_ref(&old);
        assert_eq!(store.logs.insert_batch(one).await.unwrap(), 1);
        let batch = vec![sample_record(7), old.clone(), sample_record(8)];
        assert_eq!(store.logs.insert_batch(&batch).await.unwrap(), 2);
        for r in &batch {
            assert!(store.logs.get_log(r.request_id).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn postgres_splits_oversized_batches_into_one_transaction() {
        let (store, _db) = fresh_postgres().await.unwrap();
        let records: Vec<LogRecord> = (0..10).map(sample_record).collect();
        let chunks = chunk_by_bytes(&records, 1_500);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert_eq!(store.logs.insert_batch(&records).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn postgres_reused_request_id_reads_back_the_newest_row_everywhere() {
        // Partitioned by time, a reused client x-request-id makes two rows: every reader
        // (get_log, the judge's material, the feedback's model version) picks the newest.
        let (store, _db) = fresh_postgres().await.unwrap();
        let mut old = sample_record(10);
        old.response = Some("old answer".into());
        old.status = crate::store::record::LogStatus::Ok;
        old.model_version = "v-old".into();
        let mut new = old.clone();
        new.created_at = old.created_at + chrono::Duration::seconds(90);
        new.response = Some("new answer".into());
        new.model_version = "v-new".into();
        // The old row first: a reader that takes whichever row comes first (heap order, or the
        // (request_id, created_at) index) gets the old one.
        store.logs.insert_batch(&[old.clone()]).await.unwrap();
        store.logs.insert_batch(&[new.clone()]).await.unwrap();
        assert_eq!(store.logs.count_logs().await.unwrap(), 2);
        let id = old.request_id;
        let got = store.logs.get_log(id).await.unwrap().unwrap();
        assert_eq!(got.model_version, "v-new");
        let material = store.judge.material(id).await.unwrap().unwrap();
        assert_eq!(material.response.as_deref(), Some("new answer"));
        assert_eq!(material.model_version, "v-new");
        let version = store.feedback.logged_model_version(id).await.unwrap();
        assert_eq!(version.as_deref(), Some("v-new"));
    }

    #[tokio::test]
    async fn postgres_migration_upgrades_the_seed_table_in_place() {
        let (store, _db) = empty_postgres().await.unwrap();
        // The original Python service's table, with a row in it.
        crate::store::testing::execute(
            &store,
            "CREATE TABLE llm_logs (id SERIAL PRIMARY KEY, created_at TIMESTAMP DEFAULT now(), \
             user_id VARCHAR NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, \
             model_version VARCHAR NOT NULL, latency_ms DOUBLE PRECISION NOT NULL, \
             status VARCHAR NOT NULL); \
             INSERT INTO llm_logs (created_at, user_id, prompt, response, model_version, latency_ms, status) \
             VALUES ('2024-05-01 10:00:00', 'u1', 'hi', 'hello', 'gpt-5-mini', 4735.19, 'ok');",
        )
        .await;
        store.migrate().await.unwrap();
        let ids = crate::store::testing::fetch_texts(
            &store,
            "SELECT request_id::text || ' ' || to_char(created_at AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS') FROM llm_logs",
        )
        .await;
        let (id, created_at) = ids[0].split_once(' ').unwrap();
        assert_eq!(created_at, "2024-05-01T10:00:00");
        let id = Uuid::parse_str(id).unwrap();
        let old = store.logs.get_log(id).await.unwrap().unwrap();
        assert_eq!(old.prompt, "hi");
        assert_eq!(old.endpoint.as_str(), "chat");
        assert_eq!(old.created_at.to_rfc3339(), "2024-05-01T10:00:00+00:00");
        assert!(old.tags.is_empty());
        let mut new = sample_record(5);
        new.user_id = None;
        new.response = None;
        assert_eq!(store.logs.insert_batch(&[new.clone()]).await.unwrap(), 1);
        assert_eq!(
            store.logs.get_log(new.request_id).await.unwrap(),
            Some(crate::store::testing::as_stored(&new))
        );
    }
}
