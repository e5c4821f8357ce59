//! Nothing lost, nothing duplicated: calls made while the real PostgreSQL server is stopped and
//! started again, across a gateway crash (`kill -9` of the real `lqo` binary) with a spool left
//! behind, and across a SIGTERM during an outage, all end up in `llm_logs` exactly once.
//!
//! Each test starts its own throwaway PostgreSQL cluster (initdb / pg_ctl from Debian's
//! postgresql-15 package, as the `postgres` OS user when run as root, on a random port with its
//! socket in its own directory), so stopping it never disturbs anyone else's database.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use llm_quality_observer::app::{App, RunningApp};
use llm_quality_observer::store::{testing, Store};
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster of its own; stopped and deleted on drop.
struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    fn new() -> PgCluster {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "{PG_BIN}/initdb is missing: install Debian's postgresql-15 package"
        );
        let dir = tempfile::Builder::new()
            .prefix("lqo-pg-")
            .tempdir()
            .expect("temp dir");
        // initdb refuses to run as root: the cluster belongs to the postgres OS user.
        let as_postgres = is_root();
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let cluster = PgCluster {
            port: free_port(),
            dir,
            as_postgres,
        };
        run(cluster
            .pg("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(cluster.data()));
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, tool: &str) -> Command {
        let bin = Path::new(PG_BIN).join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
    }

    /// A fast shutdown: open connections are cut, new ones refused.
    fn stop(&self) {
        run(self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-m", "fast", "stop"]));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a blocking thread: pg_ctl and process control must not stall the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Polls `check` every 50 ms until it holds, failing after `secs` seconds.
async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` /chat calls, 10 at a time; every one must be answered 200. Their request ids.
async fn chats(http: &reqwest::Client, base: &str, n: usize, model: Option<&str>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for chunk_start in (0..n).step_by(10) {
        let calls = (chunk_start..(chunk_start + 10).min(n)).map(|i| {
            let mut body = json!({"prompt": format!("durable call {i}"), "user_id": "u-durable"});
            if let Some(m) = model {
                body["model_version"] = json!(m);
            }
            http.post(format!("{base}/chat")).json(&body).send()
        });
        for r in futures::future::join_all(calls).await {
            let r = r.expect("the gateway answers");
            assert_eq!(r.status(), 200, "a call failed while the database was down");
            let body: Value = r.json().await.expect("json");
            ids.push(Uuid::parse_str(body["request_id"].as_str().expect("id")).expect("uuid"));
        }
    }
    ids
}

/// Sum of every series of one metric.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(http: &reqwest::Client, base: &str) -> String {
    match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Exactly the expected request ids, each once.
async fn assert_exactly_once(url: &str, expected: &[Uuid]) {
    let store = Store::connect(url, 2).await.expect("connect");
    let rows = testing::fetch_i64(&store, "SELECT COUNT(*) FROM llm_logs").await;
    let distinct =
        testing::fetch_i64(&store, "SELECT COUNT(DISTINCT request_id) FROM llm_logs").await;
    assert_eq!(rows, expected.len() as i64, "rows in llm_logs");
    assert_eq!(distinct, expected.len() as i64, "distinct request ids");
    let stored: HashSet<Uuid> =
        testing::fetch_texts(&store, "SELECT request_id::text FROM llm_logs")
            .await
            .iter()
            .map(|id| Uuid::parse_str(id).expect("a uuid"))
            .collect();
    let want: HashSet<Uuid> = expected.iter().copied().collect();
    assert_eq!(
        want.len(),
        expected.len(),
        "the gateway gave out a request id twice"
    );
    assert_eq!(stored, want);
    store.close().await;
}

async fn count_rows(url: &str) -> Option<i64> {
    let store = Store::connect(url, 1).await.ok()?;
    let n = store.logs.count_logs().await.ok();
    store.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_database_restart_exactly_once() {
    let pg = blocking(PgCluster::new).await;
    let store = Store::connect(&pg.url(), 5).await.expect("connect");
    store.migrate().await.expect("migrate");
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = crate::common::config(crate::common::upstream().await);
    cfg.writer.spool_dir = spool.path().to_path_buf();
    cfg.writer.db_timeout_ms = 2_000;
    let app = RunningApp::start(App::with_store(cfg, store.clone()).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);

    let mut ids = chats(&http, &base, 100, Some("mock-local")).await;
    let pg = blocking(move || {
        pg.stop();
        pg
    })
    .await;
    // The database is gone: calls are still answered, their records go to the spool.
    ids.extend(chats(&http, &base, 100, Some("mock-local")).await);
    eventually("records on disk", 30, || async {
        let m = metrics(&http, &base).await;
        metric_sum(&m, "lqo_spool_records_total") > 0.0
    })
    .await;
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a database outage alone keeps the gateway in rotation"
    );
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["spooling"], true, "{ready}");

    let pg = blocking(move || {
        pg.start();
        pg
    })
    .await;
    let url = pg.url();
    eventually("all 200 records", 60, || async {
        count_rows(&url).await == Some(200)
    })
    .await;
    eventually("the spool drained and /ready ready", 30, || async {
        let r: Value = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["status"] == "ready" && r["spool_bytes"] == 0
    })
    .await;
    let m = metrics(&http, &base).await;
    assert!(metric_sum(&m, "lqo_spool_replayed_total") > 0.0, "{m}");
    assert_eq!(metric_sum(&m, "lqo_writer_dropped_total"), 0.0);
    app.stop().await;
    assert_exactly_once(&url, &ids).await;
    store.close().await;
    drop(pg);
}

/// The real binary, with its own spool directory and config file.
struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Gateway {
    /// `extra_yaml` is appended to the config file.
    fn start(dir: &Path, database_url: &str, extra_yaml: &str) -> Gateway {
        let config = dir.join("lqo.yaml");
        std::fs::write(
            &config,
            format!(
                "writer:\n  spool_dir: {}\n  flush_interval_ms: 10\n  db_timeout_ms: 2000\n\
                 server:\n  shutdown_grace_secs: 5\n{extra_yaml}",
                dir.join("spool").display()
            ),
        )
        .expect("config written");
        let port = free_port();
        let log = dir.join(format!("gateway-{port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lqo"))
            .args(["serve", "--port", &port.to_string()])
            .current_dir(dir)
            .env_remove("LLM_API_KEY")
            .env_remove("OPENAI_MODEL_MAIN")
            .env_remove("LLM_API_BASE_URL")
            .env_remove("PORT")
            .env("DATABASE_URL", database_url)
            .env("LQO_CONFIG", &config)
            .env("LOG_LEVEL", "info")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("lqo starts");
        Gateway { child, port, log }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base())).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lqo exited early ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "lqo did not come up:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every record the gateway has taken is in the database or fsync'd in the spool: nothing
    /// of it lives only in memory any more.
    async fn wait_durable(&self, http: &reqwest::Client, taken: usize) {
        let base = self.base();
        eventually("every record written or spooled", 60, || async {
            let m = metrics(http, &base).await;
            let durable = metric_sum(&m, "lqo_writer_rows_written_total")
                + metric_sum(&m, "lqo_spool_records_total");
            durable >= taken as f64 && metric_sum(&m, "lqo_writer_queue_depth") == 0.0
        })
        .await;
    }

    fn signal(&self, sig: &str) {
        run(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string()));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spool_bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("spool"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_kill_9_of_the_gateway_during_a_database_outage() {
    let pg = blocking(PgCluster::new).await;
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let mut gw = Gateway::start(dir.path(), &url, "");
    gw.wait_healthy(&http).await;
    let mut ids = chats(&http, &gw.base(), 150, None).await;
    let pg = blocking(move || {
        pg.stop();
        pg
    })
    .await;
    ids.extend(chats(&http, &gw.base(), 150, None).await);
    gw.wait_durable(&http, ids.len()).await;
    // Crash: no shutdown, no flush. Only the spool on disk remembers the outage's records.
    gw.child.kill().expect("kill -9");
    let status = gw.child.wait().expect("wait");
    assert!(!status.success());
    assert!(spool_bytes_on_disk(dir.path()) > 0, "nothing was spooled");
    drop(gw);

    let pg = blocking(move || {
        pg.start();
        pg
    })
    .await;
    // The restarted gateway replays the spool it finds; new traffic flows at the same time.
    let mut gw = Gateway::start(dir.path(), &url, "");
    gw.wait_healthy(&http).await;
    ids.extend(chats(&http, &gw.base(), 20, None).await);
    let total = ids.len() as i64;
    eventually("every record in the database", 60, || async {
        count_rows(&url).await == Some(total)
    })
    .await;
    eventually("an empty spool", 30, || async {
        spool_bytes_on_disk(dir.path()) == 0
    })
    .await;
    let m = metrics(&http, &gw.base()).await;
    assert!(metric_sum(&m, "lqo_spool_replayed_total") > 0.0, "{m}");
    assert_eq!(metric_sum(&m, "lqo_writer_dropped_total"), 0.0, "{m}");
    gw.signal("TERM");
    let status = blocking(move || {
        let s = gw.child.wait();
        (s, gw)
    })
    .await;
    assert!(status.0.expect("wait").success(), "{}", status.1.log_text());
    assert_exactly_once(&url, &ids).await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_database_outage_exits_promptly_and_loses_nothing() {
    let pg = blocking(PgCluster::new).await;
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // The judge is off here: this measures the write path's bound. (With the judge on, its own
    // shutdown waits for the database too — up to the pool's acquire timeouts.)
    let no_judge = "judge:\n  enabled: false\n";
    let mut gw = Gateway::start(dir.path(), &url, no_judge);
    gw.wait_healthy(&http).await;
    let mut ids = chats(&http, &gw.base(), 50, None).await;
    let pg = blocking(move || {
        pg.stop();
        pg
    })
    .await;
    ids.extend(chats(&http, &gw.base(), 100, None).await);
    // No waiting for the writer: the shutdown itself must move the queue to the spool.
    let started = Instant::now();
    gw.signal("TERM");
    let (status, gw) = blocking(move || {
        let s = gw.child.wait();
        (s, gw)
    })
    .await;
    let took = started.elapsed();
    assert!(status.expect("wait").success(), "{}", gw.log_text());
    assert!(
        took < Duration::from_secs(15),
        "shutdown took {took:?} with the database down:\n{}",
        gw.log_text()
    );
    drop(gw);

    let pg = blocking(move || {
        pg.start();
        pg
    })
    .await;
    let mut gw = Gateway::start(dir.path(), &url, "");
    gw.wait_healthy(&http).await;
    let total = ids.len() as i64;
    eventually("every record in the database", 60, || async {
        count_rows(&url).await == Some(total)
    })
    .await;
    eventually("an empty spool", 30, || async {
        spool_bytes_on_disk(dir.path()) == 0
    })
    .await;
    drop(gw);
    assert_exactly_once(&url, &ids).await;
    drop(pg);
}

#[tokio::test]
async fn ready_is_503_only_when_the_database_and_the_spool_both_fail() {
    let (store, db) = testing::fresh_postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let mut cfg = crate::common::config(crate::common::upstream().await);
    cfg.writer.spool_dir = spool_dir.clone();
    cfg.writer.db_timeout_ms = 500;
    let app = RunningApp::start(App::with_store(cfg, store).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    // The spool directory becomes unusable (moved away, a file in its place) and the database
    // disappears: a record now has nowhere to go.
    std::fs::rename(&spool_dir, dir.path().join("moved")).unwrap();
    std::fs::write(&spool_dir, b"in the way").unwrap();
    drop(db);
    let r = http
        .post(format!("{base}/chat"))
        .json(&json!({"prompt": "nowhere to go", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the call itself is still answered");
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let r = http.get(format!("{base}/ready")).send().await.unwrap();
        let code = r.status();
        let body: Value = r.json().await.unwrap();
        if code == 503 && body["status"] == "not_ready" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never said records are being lost: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reasons = last["reasons"].to_string();
    assert!(reasons.contains("spool cannot be written"), "{last}");
    assert!(reasons.contains("database"), "{last}");
    let m = metrics(&http, &base).await;
    assert!(
        crate::common::sample(&m, "lqo_spool_write_errors_total", &[("reason", "io")])
            .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
    // Shutdown still ends, and the loss is counted.
    let metrics_handle = app.state.metrics.clone();
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("shutdown is bounded even when records cannot be kept");
    assert_eq!(
        metrics_handle
            .writer_dropped
            .with_label_values(&["shutdown"])
            .get(),
        1
    );
}
