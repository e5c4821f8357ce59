//! Reading raw records back: filters and keyset pagination over `llm_logs`, newest first, with
//! the same results on PostgreSQL and SQLite. Knows nothing about HTTP; `api/logs.rs` parses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{log_from_pg_row, log_from_sqlite_row, LogRecord, Store, StoreError, LOG_COLUMNS};

/// The most records one page may hold.
pub const MAX_PAGE: usize = 500;

/// `ok` or `error`, as stored in `llm_logs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    Ok,
    Error,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "ok",
            LogStatus::Error => "error",
        }
    }
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
            tag: None,
            status: None,
            after: None,
            limit: 50,
        }
    }
}

/// One page, newest first, and where the next one starts (None on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    pub next: Option<LogCursor>,
}

impl Store {
    /// Records matching `filter`, newest first (ties broken by request_id), one page at a time.
    /// Keyset pagination: a page costs the same however deep it is, and records written while
    /// a client pages never shift what it sees.
    pub async fn list_logs(&self, filter: &LogFilter) -> Result<LogPage, StoreError> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        // One more than asked tells whether there is a next page.
        let fetch = (limit + 1) as i64;
        let mut records = match self {
            Store::Postgres(pool) => {
                let mut q = QueryBuilder::<Postgres>::new(format!(
                    "SELECT {LOG_COLUMNS} FROM llm_logs WHERE true"
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
                let rows = q.build().fetch_all(pool).await?;
                rows.iter()
                    .map(log_from_pg_row)
                    .collect::<Result<Vec<_>, _>>()?
            }
            Store::Sqlite(pool) => {
                // Timestamps are RFC 3339 text in UTC written by one formatter, so text order is
                // time order and a bound DateTime compares like the stored ones.
                let mut q = QueryBuilder::<Sqlite>::new(format!(
                    "SELECT {LOG_COLUMNS} FROM llm_logs WHERE 1"
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
                let rows = q.build().fetch_all(pool).await?;
                rows.iter()
                    .map(log_from_sqlite_row)
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(LogCursor::after)
        } else {
            None
        };
        Ok(LogPage { records, next })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::TimeZone;

    use super::*;
    use crate::store::testing::{fresh_postgres, fresh_sqlite, sample_record};

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

    /// 60 records over 60 seconds with a few sharing a timestamp, varied fields.
    fn corpus() -> Vec<LogRecord> {
        (0..60)
            .map(|i| {
                let mut r = sample_record(i);
                // Pairs share a microsecond: the request_id breaks the tie.
                r.created_at = Utc
                    .timestamp_opt(1_750_000_000 + (i / 2) as i64, 0)
                    .unwrap();
                r
            })
            .collect()
    }

    fn newest_first(mut v: Vec<LogRecord>) -> Vec<LogRecord> {
        v.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.request_id)));
        v
    }

    async fn walk(store: &Store, filter: LogFilter) -> (Vec<LogRecord>, usize) {
        let mut all = Vec::new();
        let mut pages = 0;
        let mut f = filter;
        loop {
            let page = store.list_logs(&f).await.unwrap();
            pages += 1;
            assert!(page.records.len() <= f.limit);
            all.extend(page.records);
            match page.next {
                Some(c) => f.after = Some(c),
                None => break,
            }
            assert!(pages < 1000);
        }
        (all, pages)
    }

    async fn filters_and_pages_agree_with_a_plain_filter(store: Store) {
        let records = corpus();
        store.insert_batch(&records).await.unwrap();
        let ids = |v: &[LogRecord]| v.iter().map(|r| r.request_id).collect::<Vec<_>>();

        // Everything, in pages of 7: same order as a sort, no gaps, no repeats.
        let (all, pages) = walk(
            &store,
            LogFilter {
                limit: 7,
                ..LogFilter::default()
            },
        )
        .await;
        assert_eq!(ids(&all), ids(&newest_first(records.clone())));
        assert_eq!(pages, 9);
        assert_eq!(
            all.iter()
                .map(|r| r.request_id)
                .collect::<HashSet<_>>()
                .len(),
            60
        );

        // Each filter alone and all together, against the same filter applied in Rust.
        let since = Utc.timestamp_opt(1_750_000_005, 0).unwrap();
        let until = Utc.timestamp_opt(1_750_000_025, 0).unwrap();
        type Keep = Box<dyn Fn(&LogRecord) -> bool>;
        let cases: Vec<(LogFilter, Keep)> = vec![
            (
                LogFilter {
                    since: Some(since),
                    ..LogFilter::default()
                },
                Box::new(move |r| r.created_at >= since),
            ),
            (
                LogFilter {
                    until: Some(until),
                    ..LogFilter::default()
                },
                Box::new(move |r| r.created_at < until),
            ),
            (
                LogFilter {
                    model_version: Some("v1".into()),
                    ..LogFilter::default()
                },
                Box::new(|r| r.model_version == "v1"),
            ),
            (
                LogFilter {
                    user_id: Some("user-2".into()),
                    ..LogFilter::default()
                },
                Box::new(|r| r.user_id.as_deref() == Some("user-2")),
            ),
            (
                LogFilter {
                    tag: Some("tag-1".into()),
                    ..LogFilter::default()
                },
                Box::new(|r| r.tags.iter().any(|t| t == "tag-1")),
            ),
            (
                LogFilter {
                    status: Some(LogStatus::Error),
                    ..LogFilter::default()
                },
                Box::new(|r| r.status == "error"),
            ),
            (
                LogFilter {
                    status: Some(LogStatus::Ok),
                    ..LogFilter::default()
                },
                Box::new(|r| r.status == "ok"),
            ),
            (
                LogFilter {
                    since: Some(since),
                    until: Some(until),
                    tag: Some("tag-0".into()),
                    status: Some(LogStatus::Ok),
                    ..LogFilter::default()
                },
                Box::new(move |r| {
                    r.created_at >= since
                        && r.created_at < until
                        && r.tags.iter().any(|t| t == "tag-0")
                        && r.status == "ok"
                }),
            ),
            (
                LogFilter {
                    model_version: Some("nope".into()),
                    ..LogFilter::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (filter, keep) in cases {
            let want = newest_first(records.iter().filter(|r| keep(r)).cloned().collect());
            let (got, _) = walk(
                &store,
                LogFilter {
                    limit: 4,
                    ..filter.clone()
                },
            )
            .await;
            assert_eq!(ids(&got), ids(&want), "{filter:?}");
            assert!(!want.is_empty() || filter.model_version.as_deref() == Some("nope"));
        }

        // Limits are clamped; an exact last page says there is no next one.
        let page = store
            .list_logs(&LogFilter {
                limit: 0,
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 1);
        let page = store
            .list_logs(&LogFilter {
                limit: 60,
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 60);
        assert_eq!(page.next, None);
        // Records written after the first page do not shift the next one.
        let first = store
            .list_logs(&LogFilter {
                limit: 10,
                ..LogFilter::default()
            })
            .await
            .unwrap();
        let mut newer = sample_record(1000);
        newer.created_at = Utc.timestamp_opt(1_760_000_000, 0).unwrap();
        store.insert_batch(&[newer]).await.unwrap();
        let second = store
            .list_logs(&LogFilter {
                limit: 10,
                after: first.next,
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&second.records), ids(&newest_first(records)[10..20]));
    }

    #[tokio::test]
    async fn postgres_filters_and_keyset_pages_agree_with_a_plain_filter() {
        let (store, _db) = fresh_postgres().await.unwrap();
        filters_and_pages_agree_with_a_plain_filter(store).await;
    }

    #[tokio::test]
    async fn sqlite_filters_and_keyset_pages_agree_with_a_plain_filter() {
        let (store, _dir) = fresh_sqlite().await.unwrap();
        filters_and_pages_agree_with_a_plain_filter(store).await;
    }
}
