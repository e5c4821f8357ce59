//! Shared test harness: a real mock upstream on loopback, a fresh database, and the real app on a
//! random port.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use llm_quality_observer::app::{App, RunningApp};
use llm_quality_observer::config::{Config, RedisConfig};
use llm_quality_observer::mock_upstream::{self, MockUpstreamConfig};
use llm_quality_observer::store::{testing, LogRecord, Store};
use secrecy::SecretString;
use uuid::Uuid;

pub const API_KEY: &str = "sk-test-SECRET-0123456789";

pub async fn upstream() -> SocketAddr {
    let cfg = MockUpstreamConfig {
        port: 0,
        ..MockUpstreamConfig::default()
    };
    let (addr, _task) = mock_upstream::spawn(cfg)
        .await
        .expect("mock upstream starts");
    addr
}

/// Three model versions on the real reqwest providers (Chat Completions and Responses) against
/// the mock upstream, one on a provider with a 1 s timeout, and one on the built-in mock.
pub fn config(upstream: SocketAddr) -> Config {
    let yaml = format!(
        r#"
providers:
  chat: {{ kind: openai_chat, base_url: "http://{upstream}/v1", max_retries: 2, retry_backoff_ms: 5 }}
  responses: {{ kind: openai_responses, base_url: "http://{upstream}/v1", max_retries: 2, retry_backoff_ms: 5 }}
  impatient: {{ kind: openai_chat, base_url: "http://{upstream}/v1", timeout_secs: 1, max_retries: 0 }}
  local: {{ kind: mock }}
models:
  gpt-test: {{ provider: chat, upstream_model: gpt-5-mini, pricing: {{ input_per_1m: 0.25, cached_input_per_1m: 0.025, output_per_1m: 2.0 }} }}
  gpt-resp: {{ provider: responses, upstream_model: gpt-5-mini, pricing: {{ input_per_1m: 1.0, output_per_1m: 4.0 }} }}
  gpt-slow: {{ provider: impatient, pricing: {{ input_per_1m: 1.0, output_per_1m: 1.0 }} }}
  mock-local: {{ provider: local, pricing: {{ input_per_1m: 1.0, output_per_1m: 1.0 }} }}
default_model: gpt-test
writer: {{ flush_interval_ms: 10 }}
server: {{ max_body_bytes: 65536 }}
limits: {{ max_prompt_chars: 20000 }}
"#
    );
    let mut cfg = Config::from_yaml(&yaml).expect("test config parses");
    for name in ["chat", "responses", "impatient"] {
        if let Some(p) = cfg.providers.get_mut(name) {
            p.api_key = Some(SecretString::from(API_KEY.to_string()));
        }
    }
    // Every app gets its own spool: a spool directory is locked by the process that uses it.
    cfg.writer.spool_dir = std::env::temp_dir()
        .join("lqo-test-spool")
        .join(Uuid::new_v4().simple().to_string());
    cfg.validate().expect("test config is valid");
    cfg
}

/// Removes a test app's spool directory when the harness goes away.
pub struct SpoolDir(pub std::path::PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Harness {
    pub app: RunningApp,
    pub store: Store,
    pub http: reqwest::Client,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let (store, dir) = testing::fresh_sqlite().await.expect("sqlite store");
        Self::start(store, Box::new(dir)).await
    }

    pub async fn postgres() -> Harness {
        let (store, db) = testing::fresh_postgres().await.expect("postgres store");
        Self::start(store, Box::new(db)).await
    }

    /// SQLite, with the test config changed by `tweak` first (e.g. to turn auth on).
    pub async fn sqlite_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let (store, dir) = testing::fresh_sqlite().await.expect("sqlite store");
        Self::start_with(store, Box::new(dir), tweak).await
    }

    /// PostgreSQL, with the test config changed by `tweak` first.
    pub async fn postgres_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let (store, db) = testing::fresh_postgres().await.expect("postgres store");
        Self::start_with(store, Box::new(db), tweak).await
    }

    /// Another gateway on the same database (a second replica), with its own upstream and
    /// spool; the database stays with the harness that created it.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Config)) -> Harness {
        Self::start_with(self.store.clone(), Box::new(()), tweak).await
    }

    async fn start(store: Store, guard: Box<dyn std::any::Any + Send>) -> Harness {
        Self::start_with(store, guard, |_| {}).await
    }

    async fn start_with(
        store: Store,
        guard: Box<dyn std::any::Any + Send>,
        tweak: impl FnOnce(&mut Config),
    ) -> Harness {
        let up = upstream().await;
        let mut cfg = config(up);
        tweak(&mut cfg);
        cfg.validate().expect("tweaked test config is valid");
        let spool_dir = SpoolDir(cfg.writer.spool_dir.clone());
        let app = App::with_store(cfg, store.clone()).expect("app builds");
        let app = RunningApp::start(app).await.expect("app starts");
        Harness {
            app,
            store,
            http: reqwest::Client::new(),
            _guard: Box::new((guard, spool_dir)),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits for the writer to land the record (it flushes every 10 ms here).
    pub async fn record(&self, request_id: Uuid) -> LogRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.store.logs.get_log(request_id).await.expect("get_log") {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "record {request_id} never landed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Redis for shared rate limits (`LQO_TEST_REDIS_URL`, default the local server's db 0) under a
/// key prefix no other test uses; give the same value to every replica of one test.
pub fn test_redis() -> RedisConfig {
    RedisConfig {
        url: std::env::var("LQO_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_string()),
        key_prefix: format!("lqo-test-{}", Uuid::new_v4().simple()),
        ..RedisConfig::default()
    }
}

/// A loopback URL where nothing listens (a port the kernel just handed out and took back).
pub fn nothing_listening_url(scheme: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("{scheme}://127.0.0.1:{port}")
}

/// The value of one exposition line `name{labels} value` whose labels include all of `want`.
pub fn sample(metrics: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        if !want
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

/// What [`PgProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards to the real PostgreSQL.
    Up,
    /// Closes every connection at once, as a stopped server's refusal does.
    Refuse,
    /// Accepts and never answers, as a host that vanished does.
    Blackhole,
}

/// A TCP proxy in front of the test PostgreSQL, to take "the database" down and up under a
/// running gateway. Changing the mode cuts the connections it forwards.
pub struct PgProxy {
    pub addr: SocketAddr,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    hung: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    pub async fn start(mode: ProxyMode) -> PgProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(mode);
        let hung = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let target = pg_server_addr();
        let counter = hung.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut changed = rx.clone();
                let mode = *changed.borrow_and_update();
                let hung = counter.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    match mode {
                        ProxyMode::Refuse => {}
                        ProxyMode::Blackhole => {
                            hung.fetch_add(1, Ordering::SeqCst);
                            let mut sink = [0u8; 1024];
                            loop {
                                use tokio::io::AsyncReadExt;
                                tokio::select! {
                                    n = client.read(&mut sink) => if matches!(n, Ok(0) | Err(_)) { break },
                                    _ = changed.changed() => break,
                                }
                            }
                            hung.fetch_sub(1, Ordering::SeqCst);
                        }
                        ProxyMode::Up => {
                            if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = changed.changed() => {}
                                }
                            }
                        }
                    }
                });
            }
        });
        PgProxy {
            addr,
            mode: tx,
            hung,
            task,
        }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// Connections held open without an answer right now.
    pub fn hung(&self) -> usize {
        self.hung.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `url` (of the test server) pointed at this proxy.
    pub fn url_for(&self, url: &str) -> String {
        let target = pg_server_addr();
        url.replacen(&target, &self.addr.to_string(), 1)
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// host:port of the test PostgreSQL server.
fn pg_server_addr() -> String {
    let url = std::env::var("LQO_TEST_PG_URL")
        .unwrap_or_else(|_| testing::DEFAULT_TEST_PG_URL.to_string());
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host_part = after_scheme.split('/').next().unwrap_or(after_scheme);
    host_part
        .rsplit('@')
        .next()
        .unwrap_or(host_part)
        .to_string()
}
