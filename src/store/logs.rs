//! The `llm_logs` concern: the writer's batch insert, reading one record back, and the filtered,
//! keyset-paginated listing behind `GET /v1/logs` — the same results on every backend.

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record::{LogRecord, LogStatus};
use super::StoreError;

/// The most records one page may hold.
pub const MAX_PAGE: usize = 500;

/// The most record bytes one page holds ([`LogRecord::approx_bytes`]): a page ends early,
/// with a `next_cursor` as usual, once the next record would pass it, so the memory a
/// `GET /v1/logs` request takes is bounded whatever the records' size — about this much plus
/// one record (a page always holds at least one), twice over while it is written out as JSON.
/// Rows are read from the database one at a time, never a whole page at once.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Raw records: written in batches by `store::writer`, read by `api/logs.rs`.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Inserts a batch atomically and returns how many rows were new. A record whose request_id
    /// is already stored (or repeated in the batch) is skipped, never an error, so replays are
    /// safe. Timestamps are kept to the microsecond on every backend.
    async fn insert_batch(&self, records: &[LogRecord]) -> Result<u64, StoreError>;

    /// The stored record of one call by the gateway's id: the newest row with it (rows written
    /// before migration 0007 were keyed by a client's `x-request-id` and may share one).
    async fn get_log(&self, request_id: Uuid) -> Result<Option<LogRecord>, StoreError>;

    /// The newest record whose client sent this `x-request-id` (clients may reuse one).
    async fn get_log_by_client_id(
        &self,
        client_request_id: &str,
    ) -> Result<Option<LogRecord>, StoreError>;

    /// Records matching `filter`, newest first (ties broken by request_id), one page at a time.
    /// Keyset pagination: a page costs the same however deep it is, and records written while a
    /// client pages never shift what it sees.
    async fn list_logs(&self, filter: &LogFilter) -> Result<LogPage, StoreError>;

    /// Number of rows in `llm_logs`.
    async fn count_logs(&self) -> Result<i64, StoreError>;

    /// Whether the database would take writes again: reachable, and the table is there.
    async fn probe_writes(&self) -> Result<(), StoreError>;
}

/// Where the previous page ended: the last record's (created_at, request_id), the order
/// pages are walked in. Clients see it only as an opaque string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    pub created_at: DateTime<Utc>,
    pub request_id: Uuid,
}

impl LogCursor {
    pub fn after(record: &LogRecord) -> LogCursor {
        LogCursor {
            created_at: record.created_at,
            request_id: record.request_id,
        }
    }

    /// base64url (no padding) of `<unix microseconds>:<request_id>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.request_id
        ))
    }

    /// None for anything [`LogCursor::encode`] did not produce.
    pub fn decode(s: &str) -> Option<LogCursor> {
        let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
        let text = std::str::from_utf8(&raw).ok()?;
        let (micros, id) = text.split_once(':')?;
        Some(LogCursor {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            request_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// Which records, and which page of them. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    pub model_version: Option<String>,
    pub user_id: Option<String>,
    /// Records whose client sent this `x-request-id`.
    pub client_request_id: Option<String>,
    /// Records carrying this tag (among others).
    pub tag: Option<String>,
    pub status: Option<LogStatus>,
    /// Records strictly after this one in the newest-first order.
    pub after: Option<LogCursor>,
    /// Clamped to 1..=[`MAX_PAGE`].
    pub limit: usize,
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter {
            since: None,
            until: None,
            model_version: None,
            user_id: None,
            client_request_id: None,
            tag: None,
            status: None,
            after: None,
            limit: 50,
        }
    }
}

impl LogFilter {
    /// The page size after clamping, and how many rows a backend fetches: one more than that,
    /// which tells whether there is a next page.
    pub(crate) fn page_and_fetch(&self) -> (usize, i64) {
        let limit = self.limit.clamp(1, MAX_PAGE);
        (limit, (limit + 1) as i64)
    }
}

/// One page, newest first, and where the next one starts (None on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    pub next: Option<LogCursor>,
}

impl LogPage {
    /// A page from rows streamed in page order (the query asks for `limit + 1`): at most
    /// `limit` records and at most `max_bytes` of them (at least one), then the cursor after the
    /// last one if a row was left over. Rows are decoded one at a time; the stream is dropped as
    /// soon as the page is full.
    pub(crate) async fn collect<R>(
        rows: impl futures::Stream<Item = Result<R, sqlx::Error>>,
        limit: usize,
        max_bytes: usize,
        decode: impl Fn(&R) -> Result<LogRecord, StoreError>,
    ) -> Result<LogPage, StoreError> {
        use futures::TryStreamExt;
        let mut rows = std::pin::pin!(rows);
        let mut records: Vec<LogRecord> = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.try_next().await? {
            let record = decode(&row)?;
            let size = record.approx_bytes();
            let full = records.len() >= limit || (!records.is_empty() && bytes + size > max_bytes);
            if full {
                let next = records.last().map(LogCursor::after);
                return Ok(LogPage { records, next });
            }
            bytes += size;
            records.push(record);
        }
        Ok(LogPage {
            records,
            next: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::sample_record;

    #[tokio::test]
    async fn a_page_ends_at_its_byte_budget_with_a_cursor() {
        let records: Vec<LogRecord> = (0..10)
            .map(|i| {
                let mut r = sample_record(i);
                r.prompt = "x".repeat(1000);
                r
            })
            .collect();
        let rows = || futures::stream::iter(records.clone().into_iter().map(Ok::<_, sqlx::Error>));
        assert!(records[0].approx_bytes() > 1000);
        let three: usize = records[..3].iter().map(LogRecord::approx_bytes).sum();
        // Room for three records: three, and the cursor after the third.
        let page = LogPage::collect(rows(), 9, three + 10, |r| Ok(r.clone()))
            .await
            .unwrap();
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.next, Some(LogCursor::after(&records[2])));
        // A record larger than the budget still makes a page of one.
        let page = LogPage::collect(rows(), 9, 10, |r| Ok(r.clone()))
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert!(page.next.is_some());
        // The count limit as before; the last page has no cursor.
        let page = LogPage::collect(rows(), 4, usize::MAX, |r| Ok(r.clone()))
            .await
            .unwrap();
        assert_eq!((page.records.len(), page.next.is_some()), (4, true));
        let page = LogPage::collect(rows(), 10, usize::MAX, |r| Ok(r.clone()))
            .await
            .unwrap();
        assert_eq!((page.records.len(), page.next), (10, None));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = LogCursor {
            created_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            request_id: Uuid::now_v7(),
        };
        assert_eq!(LogCursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!", "bm9wZQ", "MTox", &URL_SAFE_NO_PAD.encode("x:y")] {
            assert_eq!(LogCursor::decode(bad), None, "{bad}");
        }
    }
}
