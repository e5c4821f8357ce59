//! Writer ingest benchmark: pushes records through the real `WriterHandle` into a fresh
//! PostgreSQL database (partitioned `llm_logs`, every index) and reports records/s, then measures
//! the two disk paths of the spool: a `submit` on a full queue (one fsync per record) and the
//! replay of a spool into the database.
//!
//!     cargo run --release --example writer_bench -- [--records 200000] [--producers 4]
//!         [--batch-size 500] [--channel 10000] [--overflow 2000] [--replay 100000]
//!         [--writers 1]
//!
//! `--writers N` runs N writers side by side into the one database, each with its own pool of
//! `database.max_connections` (10) and its own spool, as N gateway replicas do; producers are
//! spread over them. docs/SCALING.md compares 1 and 3.
//!
//! The database server comes from LQO_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/
//! postgres); a throwaway database is created and dropped. See bench/README.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use llm_quality_observer::config::WriterConfig;
use llm_quality_observer::metrics::Metrics;
use llm_quality_observer::store::record::{Endpoint, HeuristicLabel, LogStatus};
use llm_quality_observer::store::spool::{Spool, SpoolReason};
use llm_quality_observer::store::writer::{self, Submitted};
use llm_quality_observer::store::{testing, LogRecord, Store};
use uuid::Uuid;

struct Args {
    records: usize,
    producers: usize,
    batch_size: usize,
    channel: usize,
    overflow: usize,
    replay: usize,
    writers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        records: 200_000,
        producers: 4,
        batch_size: WriterConfig::default().batch_size,
        channel: WriterConfig::default().channel_capacity,
        overflow: 2_000,
        replay: 100_000,
        writers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--records" => a.records = n,
            "--producers" => a.producers = n.max(1),
            "--batch-size" => a.batch_size = n.max(1),
            "--channel" => a.channel = n.max(1),
            "--overflow" => a.overflow = n,
            "--replay" => a.replay = n,
            "--writers" => a.writers = n.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// A realistic record: a few hundred bytes of prompt and answer, tags, metadata, today's time
/// (so it lands in a daily partition like live traffic does).
fn record(i: usize) -> LogRecord {
    let ok = !i.is_multiple_of(20);
    LogRecord {
        request_id: Uuid::now_v7(),
        created_at: Utc::now(),
        endpoint: if i.is_multiple_of(2) {
            Endpoint::Chat
        } else {
            Endpoint::ChatCompletions
        },
        user_id: Some(format!("user-{}", i % 1000)),
        prompt: format!(
            "[{{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"}},{{\"role\":\"user\",\"content\":\"Question {i}: explain how a write-ahead log makes a database durable, in three sentences.\"}}]"
        ),
        response: ok.then(|| {
            format!("Answer {i}: A write-ahead log records every change before it is applied, so after a crash the database replays the log to redo committed work and discard the rest. Because the log is appended sequentially and flushed at commit, durability costs one sequential write instead of many random ones. Checkpoints bound how much log must be replayed.")
        }),
        model_version: format!("model-{}", i % 4),
        provider: "openai_chat".into(),
        upstream_model: "gpt-5-mini".into(),
        latency_ms: 250.0 + (i % 500) as f64,
        ttft_ms: Some(80.0 + (i % 50) as f64),
        input_tokens: 40 + (i % 30) as i64,
        cached_input_tokens: 0,
        output_tokens: 70 + (i % 40) as i64,
        cost_usd: 0.000_15,
        status: if ok { LogStatus::Ok } else { LogStatus::Error },
        http_status: if ok { 200 } else { 502 },
        error_type: (!ok).then(|| "upstream_status".to_string()),
        error_message: (!ok).then(|| "upstream returned HTTP 503".to_string()),
        finish_reason: ok.then(|| "stop".to_string()),
        streamed: i.is_multiple_of(3),
        tags: vec!["bench".into(), format!("team-{}", i % 5)],
        metadata: serde_json::json!({"tenant": format!("t{}", i % 50), "trace": i}),
        heuristic_label: ok.then_some(HeuristicLabel::Good),
        heuristic_results: serde_json::json!([]),
        api_key_name: Some("bench".into()),
        request_params: None,
        tool_calls: None,
        client_request_id: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn config(a: &Args, spool_dir: &std::path::Path) -> WriterConfig {
    WriterConfig {
        channel_capacity: a.channel,
        batch_size: a.batch_size,
        flush_interval_ms: 100,
        spool_dir: spool_dir.to_path_buf(),
        spool_max_bytes: 8 * 1024 * 1024 * 1024,
        db_timeout_ms: 10_000,
    }
}

async fn wait_for_rows(store: &Store, n: i64, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let have = store.logs.count_logs().await.map_err(|e| e.to_string())?;
        if have == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("expected {n} rows, have {have}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args()?;
    let (store, db) = testing::fresh_postgres().await?;
    // The bench's own connection, to lock and truncate the table behind the writer's back.
    let pool = sqlx::PgPool::connect(db.url()).await?;
    println!(
        "writer bench: {} records, {} producers, {} writer(s), batch_size {}, channel {}, database {} (fresh)",
        a.records,
        a.producers,
        a.writers,
        a.batch_size,
        a.channel,
        db.name()
    );

    // 1. Ingest: records/s from submit() until the last one is committed.
    let records: Vec<Vec<LogRecord>> = (0..a.producers)
        .map(|p| {
            (0..a.records / a.producers)
                .map(|i| record(p * a.records + i))
                .collect()
        })
        .collect();
    let total: usize = records.iter().map(Vec::len).sum();
    // Each writer gets a pool of its own, as each gateway replica has.
    let base = std::env::var("LQO_TEST_PG_URL")
        .unwrap_or_else(|_| testing::DEFAULT_TEST_PG_URL.to_string());
    let (server, _) = base
        .rsplit_once('/')
        .ok_or("LQO_TEST_PG_URL needs a path")?;
    let db_url = format!("{server}/{}", db.name());
    let max_connections = llm_quality_observer::config::DatabaseConfig::default().max_connections;
    let metrics = Arc::new(Metrics::new());
    let mut spool_dirs = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..a.writers {
        let pool = Store::connect(&db_url, max_connections).await?;
        let dir = tempfile::tempdir()?;
        writers.push(writer::spawn(
            pool.logs.clone(),
            &config(&a, dir.path()),
            metrics.clone(),
        )?);
        spool_dirs.push(dir);
    }
    let started = Instant::now();
    let mut producers = Vec::new();
    for (p, batch) in records.into_iter().enumerate() {
        let handle = writers[p % writers.len()].0.clone();
        let capacity = a.channel;
        producers.push(tokio::spawn(async move {
            let mut spooled = 0usize;
            let mut latencies = Vec::with_capacity(batch.len());
            for r in batch {
                // A client that backs off when the queue is nearly full, as request handlers
                // effectively do when they wait on their upstream.
                while handle.queue_depth() > capacity * 9 / 10 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let t = Instant::now();
                let outcome = handle.submit(r);
                latencies.push(t.elapsed());
                if outcome == Ok(Submitted::Spooled) {
                    spooled += 1;
                }
            }
            (spooled, latencies)
        }));
    }
    let mut spooled = 0;
    let mut latencies = Vec::with_capacity(total);
    for p in producers {
        let (s, l) = p.await?;
        spooled += s;
        latencies.extend(l);
    }
    for (handle, task) in writers {
        writer::close_and_wait(handle, task).await;
    }
    let elapsed = started.elapsed();
    let rows = store.logs.count_logs().await?;
    latencies.sort();
    let batches = metrics.writer_batch_size.get_sample_count();
    println!(
        "ingest:   {total} records in {:.2} s = {:.0} records/s into PostgreSQL ({} rows; {batches} batches, mean {:.0} records; {spooled} overflowed to the spool)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        rows,
        if batches > 0 { metrics.writer_batch_size.get_sample_sum() / batches as f64 } else { 0.0 },
    );
    println!(
        "submit(): p50 {:?}, p99 {:?}, max {:?} (queue path)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    if rows != total as i64 {
        return Err(format!("expected {total} rows, found {rows}").into());
    }

    // 2. Overflow: submit() with the queue full goes to the spool, one fsync per record. The
    // table is locked so the writer is stuck on its first batch and the queue of 1 stays full.
    if a.overflow > 0 {
        let overflow_dir = tempfile::tempdir()?;
        let mut cfg = config(&a, overflow_dir.path());
        cfg.channel_capacity = 1;
        cfg.batch_size = 1;
        let mut locker = pool.begin().await?;
        sqlx::query("LOCK TABLE llm_logs IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *locker)
            .await?;
        let metrics = Arc::new(Metrics::new());
        let (handle, task) = writer::spawn(store.logs.clone(), &cfg, metrics.clone())?;
        let mut lat = Vec::with_capacity(a.overflow);
        let mut spooled = 0;
        for i in 0..a.overflow {
            let t = Instant::now();
            let outcome = handle.submit(record(10_000_000 + i));
            lat.push(t.elapsed());
            if outcome == Ok(Submitted::Spooled) {
                spooled += 1;
            }
            if i == 0 {
                // Let the writer take the first record and block on the lock.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        lat.sort();
        println!(
            "overflow: {spooled} of {} submits spooled; submit() p50 {:?}, p99 {:?} (append + fdatasync per record)",
            a.overflow,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        locker.rollback().await?;
        wait_for_rows(
            &store,
            total as i64 + a.overflow as i64,
            Duration::from_secs(120),
        )
        .await?;
        writer::close_and_wait(handle, task).await;
    }

    // 3. Replay: a spool left by an outage, fed back into the database.
    if a.replay > 0 {
        sqlx::raw_sql("TRUNCATE llm_logs").execute(&pool).await?;
        let replay_dir = tempfile::tempdir()?;
        {
            let mut spool = Spool::open(replay_dir.path(), u64::MAX, Arc::default())?;
            let t = Instant::now();
            let batch: Vec<LogRecord> = (0..a.replay).map(|i| record(20_000_000 + i)).collect();
            for chunk in batch.chunks(a.batch_size) {
                spool.append(chunk, SpoolReason::DbError)?;
            }
            println!(
                "spool:    {} records appended in batches of {} in {:.2} s = {:.0} records/s ({} MiB on disk)",
                a.replay,
                a.batch_size,
                t.elapsed().as_secs_f64(),
                a.replay as f64 / t.elapsed().as_secs_f64(),
                spool.bytes() / (1024 * 1024)
            );
        }
        let metrics = Arc::new(Metrics::new());
        let t = Instant::now();
        let (handle, task) = writer::spawn(
            store.logs.clone(),
            &config(&a, replay_dir.path()),
            metrics.clone(),
        )?;
        wait_for_rows(&store, a.replay as i64, Duration::from_secs(300)).await?;
        let took = t.elapsed();
        println!(
            "replay:   {} records from the spool in {:.2} s = {:.0} records/s",
            metrics.spool_replayed.get(),
            took.as_secs_f64(),
            a.replay as f64 / took.as_secs_f64()
        );
        writer::close_and_wait(handle, task).await;
    }
    pool.close().await;
    store.close().await;
    db.cleanup().await?;
    Ok(())
}
