//! Per-key rate limits shared by every replica through Redis: one Lua script per check (GCRA for
//! requests per minute, the debt-allowing token bucket of `ratelimit.rs` for tokens per minute),
//! one round trip, on Redis's clock so replicas' clocks do not matter. Without Redis, or while it
//! fails and `redis.failure_mode` is `open`, each replica's own limiter decides.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::config::RateLimit;
use super::config::{RedisConfig, RedisFailureMode};
use super::ratelimit::{whole_secs, LimitKind, Limited};
use crate::metrics::Metrics;
use crate::redact::redact_url;

/// KEYS[1]: GCRA state of the requests limit (theoretical arrival time, µs).
/// KEYS[2]: token bucket of the tokens limit (hash `level`, `ts` in µs).
/// ARGV: requests per minute (0 = none), tokens per minute (0 = none), `1` for a model call.
/// Reply `{0, 0}` allowed, `{1, retry_ms}` refused by requests, `{2, retry_ms}` by tokens.
/// Tokens are checked first and only read, so a key in token debt does not also burn requests.
const CHECK_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = 60000000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
if ARGV[3] == '1' and tpm > 0 then
  local b = redis.call('HMGET', KEYS[2], 'level', 'ts')
  local level = tonumber(b[1])
  if level then
    local per_us = tpm / minute
    local ts = tonumber(b[2]) or now
    if now > ts then level = math.min(tpm, level + (now - ts) * per_us) end
    if level <= 0 then
      return {2, math.ceil((1 - level) / per_us / 1000)}
    end
  end
end
if rpm > 0 then
  -- Whole microseconds keep the arithmetic exact; the burst is one minute's worth.
  local interval = math.floor(minute / rpm)
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - now > minute then
    return {1, math.ceil((new_tat - now - minute) / 1000)}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
    'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return {0, 0}
"#;

/// KEYS[1]: the token bucket; ARGV: tokens per minute, tokens used. The key expires once the
/// bucket would be full again (a missing key is a full bucket).
const CHARGE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tpm = tonumber(ARGV[1])
local per_us = tpm / 60000000
local b = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(b[1]) or tpm
local ts = tonumber(b[2]) or now
if now > ts then level = math.min(tpm, level + (now - ts) * per_us) end
level = level - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level), 'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((tpm - level) / per_us / 1000) + 1000)
return 1
"#;

/// After a failed call Redis is left alone this long: checks fall back at once instead of each
/// waiting for the timeout, and the connection manager reconnects meanwhile.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// What Redis said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedVerdict {
    Allowed,
    Refused(Limited),
    /// Redis failed, timed out, or is in its back-off after a failure; `redis.failure_mode`
    /// decides what happens.
    Unavailable,
}

#[derive(Debug, Default)]
struct Health {
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

pub struct SharedLimits {
    conn: ConnectionManager,
    key_prefix: String,
    timeout: Duration,
    failure_mode: RedisFailureMode,
    check_script: Script,
    charge_script: Script,
    health: Mutex<Health>,
    metrics: Arc<Metrics>,
    /// The URL without its password, for logs and /ready.
    shown_url: String,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("url", &self.shown_url)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl SharedLimits {
    /// `None` without `redis.url`. Connects lazily: a Redis that is down at start is a failure
    /// like any other (fail open or closed), never a failed start. Needs a Tokio runtime.
    pub fn from_config(cfg: &RedisConfig, metrics: Arc<Metrics>) -> Option<Arc<SharedLimits>> {
        if cfg.url.is_empty() {
            return None;
        }
        let shown_url = redact_url(&cfg.url);
        // Config validation opened the URL already; a failure here is reported, not a panic.
        let client = match redis::Client::open(cfg.url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %shown_url, error = %e, "invalid redis.url: rate limits stay per replica");
                return None;
            }
        };
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = match ConnectionManager::new_lazy_with_config(client, manager_cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %shown_url, error = %e, "cannot set up the Redis connection: rate limits stay per replica");
                return None;
            }
        };
        Some(Arc::new(SharedLimits {
            conn,
            key_prefix: cfg.key_prefix.clone(),
            timeout,
            failure_mode: cfg.failure_mode,
            check_script: Script::new(CHECK_LUA),
            charge_script: Script::new(CHARGE_LUA),
            health: Mutex::new(Health::default()),
            metrics,
            shown_url,
        }))
    }

    pub fn failure_mode(&self) -> RedisFailureMode {
        self.failure_mode
    }

    /// The URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// `{prefix:key}` is a Redis Cluster hash tag: both keys of one API key live in one slot, as
    /// a script's keys must.
    fn keys(&self, key_name: &str) -> (String, String) {
        let tag = format!("{{{}:{}}}", self.key_prefix, key_name);
        (format!("{tag}:rpm"), format!("{tag}:tpm"))
    }

    fn in_backoff(&self) -> bool {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.retry_at.is_some_and(|t| Instant::now() < t)
    }

    fn succeeded(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = h.failing_since.take() {
            tracing::info!(
                url = %self.shown_url,
                after_secs = since.elapsed().as_secs(),
                "Redis answers again: rate limits are shared by every replica again"
            );
        }
        h.retry_at = None;
        h.last_error = None;
    }

    fn failed(&self, error: String) {
        self.metrics.rate_limit_store_errors.inc();
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if h.failing_since.is_none() {
            h.failing_since = Some(now);
            tracing::warn!(
                url = %self.shown_url,
                error = %error,
                failure_mode = ?self.failure_mode,
                "Redis failed: rate limits are {} until it answers",
                match self.failure_mode {
                    RedisFailureMode::Open => "enforced by each replica alone",
                    RedisFailureMode::Closed => "refusing limited keys (429)",
                }
            );
        }
        h.retry_at = Some(now + BACKOFF_AFTER_FAILURE);
        h.last_error = Some(error);
    }

    fn unavailable(&self) -> SharedVerdict {
        let mode = match self.failure_mode {
            RedisFailureMode::Open => "open",
            RedisFailureMode::Closed => "closed",
        };
        self.metrics
            .rate_limit_store_bypassed
            .with_label_values(&[mode])
            .inc();
        SharedVerdict::Unavailable
    }

    /// Takes one request from the key's shared request budget and, for model calls, checks its
    /// shared token budget.
    pub async fn check(&self, key_name: &str, limit: RateLimit, model_call: bool) -> SharedVerdict {
        if self.in_backoff() {
            return self.unavailable();
        }
        let (rpm_key, tpm_key) = self.keys(key_name);
        let mut invocation = self.check_script.key(rpm_key);
        invocation
            .key(tpm_key)
            .arg(limit.requests_per_minute)
            .arg(limit.tokens_per_minute)
            .arg(u8::from(model_call));
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        let refused = |kind, retry_ms: i64| {
            SharedVerdict::Refused(Limited {
                kind,
                retry_after_secs: whole_secs(Duration::from_millis(retry_ms.max(0) as u64)),
            })
        };
        match reply {
            Ok(Ok((0, _))) => {
                self.succeeded();
                SharedVerdict::Allowed
            }
            Ok(Ok((1, ms))) => {
                self.succeeded();
                refused(LimitKind::Requests, ms)
            }
            Ok(Ok((2, ms))) => {
                self.succeeded();
                refused(LimitKind::Tokens, ms)
            }
            Ok(Ok(other)) => {
                self.failed(format!("unexpected reply {other:?} from the limit script"));
                self.unavailable()
            }
            Ok(Err(e)) => {
                self.failed(e.to_string());
                self.unavailable()
            }
            Err(_) => {
                self.failed(format!("no answer within {} ms", self.timeout.as_millis()));
                self.unavailable()
            }
        }
    }

    /// Charges a finished call's tokens to the key's shared token budget.
    pub async fn charge(&self, key_name: &str, limit: RateLimit, tokens: u64) {
        if limit.tokens_per_minute == 0 || tokens == 0 {
            return;
        }
        let (_, tpm_key) = self.keys(key_name);
        let mut invocation = self.charge_script.key(tpm_key);
        invocation.arg(limit.tokens_per_minute).arg(tokens);
        let mut conn = self.conn.clone();
        // A charge is off the request path: it may wait longer than a check.
        let reply =
            tokio::time::timeout(self.timeout * 10, invocation.invoke_async::<i64>(&mut conn))
                .await;
        match reply {
            Ok(Ok(_)) => self.succeeded(),
            Ok(Err(e)) => self.failed(format!("charging {tokens} tokens: {e}")),
            Err(_) => self.failed(format!(
                "charging {tokens} tokens: no answer within {} ms",
                (self.timeout * 10).as_millis()
            )),
        }
    }

    /// Asks Redis whether it is there (PING), so readiness also notices a recovery while no
    /// limited request arrives; `None` when it answers, else what `/ready` should say.
    pub async fn probe(&self) -> Option<String> {
        let mut conn = self.conn.clone();
        let ping = tokio::time::timeout(
            self.timeout.max(Duration::from_millis(500)),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match ping {
            Ok(Ok(_)) => {
                self.succeeded();
                None
            }
            Ok(Err(e)) => {
                self.failed(e.to_string());
                Some(self.reason())
            }
            Err(_) => {
                self.failed(format!(
                    "no answer to PING within {} ms",
                    self.timeout.as_millis()
                ));
                Some(self.reason())
            }
        }
    }

    fn reason(&self) -> String {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let error = h.last_error.as_deref().unwrap_or("unknown error");
        let effect = match self.failure_mode {
            RedisFailureMode::Open => {
                "rate limits are enforced by each replica alone (redis.failure_mode: open)"
            }
            RedisFailureMode::Closed => {
                "keys with rate limits are refused with 429 (redis.failure_mode: closed)"
            }
        };
        format!(
            "shared rate limits: Redis at {} fails ({error}); {effect}",
            self.shown_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two "replicas" (two clients with their own connections) on the real Redis, under a prefix
    /// no other test uses.
    async fn replicas(
        failure_mode: RedisFailureMode,
    ) -> (Arc<SharedLimits>, Arc<SharedLimits>, Arc<Metrics>) {
        let cfg = RedisConfig {
            url: std::env::var("LQO_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            key_prefix: format!("lqo-test-{}", uuid::Uuid::new_v4().simple()),
            failure_mode,
            // Generous: the machine is shared with compilers; a timeout would fail the test.
            timeout_ms: 2_000,
        };
        let m = Arc::new(Metrics::new());
        let a = SharedLimits::from_config(&cfg, m.clone()).unwrap();
        let b = SharedLimits::from_config(&cfg, m.clone()).unwrap();
        (a, b, m)
    }

    fn limit(rpm: u32, tpm: u64) -> RateLimit {
        RateLimit {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    #[tokio::test]
    async fn requests_per_minute_are_one_budget_for_every_replica() {
        let (a, b, _) = replicas(RedisFailureMode::Open).await;
        let l = limit(5, 0);
        let mut allowed = 0;
        let mut refusals = Vec::new();
        for i in 0..10 {
            let replica = if i % 2 == 0 { &a } else { &b };
            match replica.check("k", l, true).await {
                SharedVerdict::Allowed => allowed += 1,
                SharedVerdict::Refused(r) => refusals.push(r),
                SharedVerdict::Unavailable => panic!("Redis unavailable"),
            }
        }
        // One request per 12 s refills: the test takes far less than that.
        assert_eq!(allowed, 5, "{refusals:?}");
        for r in &refusals {
            assert_eq!(r.kind, LimitKind::Requests);
            assert!((1..=12).contains(&r.retry_after_secs), "{r:?}");
        }
        // Another key has its own budget.
        assert_eq!(a.check("other", l, true).await, SharedVerdict::Allowed);
    }

    #[tokio::test]
    async fn tokens_per_minute_are_shared_and_may_go_into_debt() {
        let (a, b, _) = replicas(RedisFailureMode::Open).await;
        let l = limit(0, 100);
        assert_eq!(a.check("k", l, true).await, SharedVerdict::Allowed);
        a.charge("k", l, 250).await;
        // 100 - 250 = -150 tokens; refilled at 100/min, back above zero in (1 + 150) × 0.6 s.
        match b.check("k", l, true).await {
            SharedVerdict::Refused(r) => {
                assert_eq!(r.kind, LimitKind::Tokens);
                assert!((85..=91).contains(&r.retry_after_secs), "{r:?}");
            }
            other => panic!("expected a tokens refusal, got {other:?}"),
        }
        // Routes that call no model are not held back by the token budget.
        assert_eq!(b.check("k", l, false).await, SharedVerdict::Allowed);
    }

    /// A TCP proxy to the test Redis that can be cut and restored, to play an outage without
    /// touching the shared server.
    struct Proxy {
        port: u16,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Proxy {
        async fn start(port: u16) -> Proxy {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let target = std::env::var("LQO_TEST_REDIS_URL")
                .ok()
                .and_then(|u| {
                    let rest = u.split_once("://")?.1;
                    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                    Some(host.split('/').next()?.to_string())
                })
                .unwrap_or_else(|| "127.0.0.1:6379".into());
            let accept = tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    conns.spawn(async move {
                        if let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                }
            });
            Proxy {
                port,
                tasks: vec![accept],
            }
        }

        /// Closes the listener and every proxied connection (the JoinSet drops with the task).
        fn cut(self) -> u16 {
            for t in &self.tasks {
                t.abort();
            }
            self.port
        }
    }

    #[tokio::test]
    async fn limits_are_shared_again_once_redis_is_back() {
        let proxy = Proxy::start(0).await;
        let cfg = RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", proxy.port),
            key_prefix: format!("lqo-test-{}", uuid::Uuid::new_v4().simple()),
            timeout_ms: 2_000,
            ..RedisConfig::default()
        };
        let m = Arc::new(Metrics::new());
        let s = SharedLimits::from_config(&cfg, m.clone()).unwrap();
        let l = limit(100, 0);
        assert_eq!(s.check("k", l, true).await, SharedVerdict::Allowed);
        let port = proxy.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.check("k", l, true).await, SharedVerdict::Unavailable);
        assert!(s.probe().await.is_some());
        let proxy = Proxy::start(port).await;
        // The connection manager reconnects; the back-off after a failure is one second.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match s.check("k", l, true).await {
                SharedVerdict::Allowed => break,
                other => assert!(
                    Instant::now() < deadline,
                    "Redis is back but checks still say {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(s.probe().await, None);
        assert!(m.rate_limit_store_errors.get() >= 1);
        proxy.cut();
    }

    #[tokio::test]
    async fn a_failing_redis_is_counted_then_left_alone_for_a_moment() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = RedisConfig {
            url: format!("redis://:hunter2@127.0.0.1:{port}/0"),
            failure_mode: RedisFailureMode::Closed,
            ..RedisConfig::default()
        };
        let m = Arc::new(Metrics::new());
        let s = SharedLimits::from_config(&cfg, m.clone()).unwrap();
        assert_eq!(
            s.check("k", limit(5, 0), true).await,
            SharedVerdict::Unavailable
        );
        // Within the back-off the next check does not wait for Redis again.
        let t = Instant::now();
        assert_eq!(
            s.check("k", limit(5, 0), true).await,
            SharedVerdict::Unavailable
        );
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        assert_eq!(m.rate_limit_store_errors.get(), 1);
        assert_eq!(
            m.rate_limit_store_bypassed
                .with_label_values(&["closed"])
                .get(),
            2
        );
        let reason = s.probe().await.expect("a reason for /ready");
        assert!(reason.contains("failure_mode: closed"), "{reason}");
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn keys_share_one_cluster_slot_per_api_key() {
        let m = Arc::new(Metrics::new());
        let cfg = RedisConfig {
            url: "redis://:hunter2@127.0.0.1:1/0".into(),
            key_prefix: "lqo:test".into(),
            ..RedisConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(async { SharedLimits::from_config(&cfg, m).unwrap() });
        let (a, b) = s.keys("ci-bot");
        assert_eq!(a, "{lqo:test:ci-bot}:rpm");
        assert_eq!(b, "{lqo:test:ci-bot}:tpm");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.shown_url().contains("hunter2"));
    }
}
