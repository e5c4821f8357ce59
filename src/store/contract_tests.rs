//! The contract every backend keeps, run against real PostgreSQL and a real SQLite file: the
//! same calls give the same answers.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::keys::{AuditEntry, CreateKeyError, NewKey};
use super::logs::LogFilter;
use super::record::LogStatus;
use super::testing::{as_stored, fresh_postgres, fresh_sqlite, sample_record};
use super::{LogRecord, Store, StoreError};

fn batch(n: usize) -> Vec<LogRecord> {
    (0..n).map(sample_record).collect()
}

async fn batch_round_trips_and_is_idempotent(store: &Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    store.logs.probe_writes().await.unwrap();
    let records = batch(1_000);
    assert_eq!(store.logs.insert_batch(&records).await.unwrap(), 1_000);
    assert_eq!(store.logs.count_logs().await.unwrap(), 1_000);
    for r in &records {
        let got = store.logs.get_log(r.request_id).await.unwrap();
        assert_eq!(got.as_ref(), Some(&as_stored(r)), "record {}", r.request_id);
    }
    assert_eq!(store.logs.insert_batch(&records).await.unwrap(), 0);
    assert_eq!(store.logs.insert_batch(&[]).await.unwrap(), 0);
    assert_eq!(store.logs.count_logs().await.unwrap(), 1_000);
    assert_eq!(store.logs.get_log(Uuid::new_v4()).await.unwrap(), None);
}

async fn duplicates_inside_one_batch_land_once(store: &Store) {
    let r = sample_record(1);
    let fresh = sample_record(2);
    let n = store
        .logs
        .insert_batch(&[r.clone(), r.clone(), fresh])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(store.logs.count_logs().await.unwrap(), 2);
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
        let page = store.logs.list_logs(&f).await.unwrap();
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
    store.logs.insert_batch(&records).await.unwrap();
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
            Box::new(|r| r.status == LogStatus::Error),
        ),
        (
            LogFilter {
                status: Some(LogStatus::Ok),
                ..LogFilter::default()
            },
            Box::new(|r| r.status == LogStatus::Ok),
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
                    && r.status == LogStatus::Ok
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
        .logs
        .list_logs(&LogFilter {
            limit: 0,
            ..LogFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let page = store
        .logs
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
        .logs
        .list_logs(&LogFilter {
            limit: 10,
            ..LogFilter::default()
        })
        .await
        .unwrap();
    let mut newer = sample_record(1000);
    newer.created_at = Utc.timestamp_opt(1_760_000_000, 0).unwrap();
    store.logs.insert_batch(&[newer]).await.unwrap();
    let second = store
        .logs
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

async fn keys_round_trip(store: &Store) {
    let now = chrono::Utc::now();
    let scopes = vec!["chat".to_string(), "logs:read".to_string()];
    let k = NewKey {
        name: "ci",
        prefix: "lqo_abcdefgh",
        key_hash: &"a".repeat(64),
        scopes: &scopes,
        created_at: now,
        expires_at: None,
    };
    let keys = &store.keys;
    keys.insert_api_key(&k).await.unwrap();
    let again = NewKey {
        key_hash: &"b".repeat(64),
        ..k.clone()
    };
    assert!(matches!(
        keys.insert_api_key(&again).await,
        Err(CreateKeyError::NameTaken(n)) if n == "ci"
    ));
    let found = keys.api_keys_by_prefix("lqo_abcdefgh").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].scopes, scopes);
    assert_eq!(found[0].key_hash, "a".repeat(64));
    assert_eq!(keys.count_live_api_keys(now).await.unwrap(), 1);
    keys.touch_api_key(&"a".repeat(64), now).await.unwrap();
    let revoked = keys.revoke_api_key("ci", now).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(revoked.last_used_at.is_some());
    assert_eq!(keys.revoke_api_key("ci", now).await.unwrap(), None);
    assert_eq!(keys.count_live_api_keys(now).await.unwrap(), 0);
    // The name is free again once its key is revoked.
    keys.insert_api_key(&again).await.unwrap();
    assert_eq!(keys.list_api_keys().await.unwrap().len(), 2);

    let entry = AuditEntry {
        created_at: now,
        actor: "cli".into(),
        action: "key.create".into(),
        target: Some("ci".into()),
        details: serde_json::json!({"scopes": ["chat"]}),
    };
    keys.insert_audit(&entry).await.unwrap();
    let got = keys.recent_audit(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].action, "key.create");
    assert_eq!(got[0].details, entry.details);
}

#[tokio::test]
async fn postgres_api_keys_and_audit_round_trip() {
    let (store, _db) = fresh_postgres().await.unwrap();
    keys_round_trip(&store).await;
}

#[tokio::test]
async fn sqlite_api_keys_and_audit_round_trip() {
    let (store, _dir) = fresh_sqlite().await.unwrap();
    keys_round_trip(&store).await;
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
    let url = "postgres://lqo:s3cret-pw@127.0.0.1:1/lqo?pass%77ord=hunter22";
    let err = Store::connect(url, 1).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(!text.contains("hunter22"), "{text}");
    assert!(text.contains("lqo:***@127.0.0.1:1"), "{text}");
    assert!(
        text.to_lowercase().contains("refused"),
        "the cause is lost: {text}"
    );
    let err = Store::connect("mysql://root:hunter22@db/x", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }));
    assert!(!format!("{err}").contains("hunter22"));
}
