//! Per-key rate limits: requests per minute with `governor` (GCRA, burst = one minute's worth) and
//! tokens per minute with a token bucket that may go into debt. With Redis configured the same
//! limits are kept in Redis for all replicas together (`shared_limits.rs`), and this replica's
//! own limiter decides only while Redis fails (`redis.failure_mode: open`).
//!
//! Tokens are check-then-charge: a request is let through while the key's token bucket is not
//! empty, and the call's real usage (input + output tokens, known only at the end, streaming
//! included) is charged afterwards. One large call can therefore overdraw the bucket; the key then
//! waits until the debt has refilled, so the average stays at the configured rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use super::config::RedisFailureMode;
use super::config::{RateLimit, RateLimitsConfig};
use super::shared_limits::{SharedLimits, SharedVerdict};

/// Which limit refused a request; the `limit` label of `lqo_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
}

impl LimitKind {
    pub const ALL: [&'static str; 2] = ["requests", "tokens"];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// A refusal: which limit and how long until a retry can succeed (whole seconds, ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub kind: LimitKind,
    pub retry_after_secs: u64,
}

pub(crate) fn whole_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// A token bucket holding up to `capacity` tokens, refilled continuously at `per_sec`; charges may
/// take it below zero.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_minute(tokens: u64, now: Instant) -> Self {
        let capacity = tokens as f64;
        TokenBucket {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Ok while there is anything left; else how long until there is.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level > 0.0 {
            return Ok(());
        }
        // Wait until the level is back above zero (one token).
        let secs = (1.0 - self.level) / self.per_sec;
        Err(Duration::from_secs_f64(secs.clamp(0.0, 1e9)))
    }

    pub fn charge(&mut self, tokens: u64, now: Instant) {
        self.refill(now);
        self.level -= tokens as f64;
    }

    pub fn level(&self) -> f64 {
        self.level
    }
}

/// Why a limited key's request may not proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Limited(Limited),
    /// Redis failed and `redis.failure_mode` is `closed`.
    StoreUnavailable,
}

/// The limiters of one key (or of all anonymous callers together).
pub struct KeyLimiter {
    name: Arc<str>,
    limit: RateLimit,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<Mutex<TokenBucket>>,
    shared: Option<Arc<SharedLimits>>,
}

impl std::fmt::Debug for KeyLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLimiter")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl KeyLimiter {
    /// A limiter of this replica alone.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_shared("", limit, None)
    }

    /// A limiter kept in Redis under `name` when `shared` is given, with this replica's own
    /// limiter as the fallback.
    pub fn with_shared(name: &str, limit: RateLimit, shared: Option<Arc<SharedLimits>>) -> Self {
        let requests = NonZeroU32::new(limit.requests_per_minute)
            .map(|n| DefaultDirectRateLimiter::direct(Quota::per_minute(n)));
        let tokens = (limit.tokens_per_minute > 0).then(|| {
            Mutex::new(TokenBucket::per_minute(
                limit.tokens_per_minute,
                Instant::now(),
            ))
        });
        KeyLimiter {
            name: Arc::from(name),
            limit,
            requests,
            tokens,
            shared,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Takes one request from the key's request budget and, for model calls, checks its token
    /// budget: in Redis when configured, else (or while Redis fails, failing open) here.
    pub async fn check(&self, model_call: bool) -> Result<(), Refusal> {
        if let Some(shared) = &self.shared {
            match shared.check(&self.name, self.limit, model_call).await {
                SharedVerdict::Allowed => return Ok(()),
                SharedVerdict::Refused(l) => return Err(Refusal::Limited(l)),
                SharedVerdict::Unavailable => {
                    if shared.failure_mode() == RedisFailureMode::Closed {
                        return Err(Refusal::StoreUnavailable);
                    }
                }
            }
        }
        self.check_local(model_call).map_err(Refusal::Limited)
    }

    /// This replica's own decision: takes one request from the request budget and, for model
    /// calls, checks the token budget.
    pub fn check_local(&self, model_call: bool) -> Result<(), Limited> {
        if model_call {
            // Checked first so a key in token debt does not also burn its request budget.
            if let Some(t) = &self.tokens {
                let mut bucket = t.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(wait) = bucket.check(Instant::now()) {
                    return Err(Limited {
                        kind: LimitKind::Tokens,
                        retry_after_secs: whole_secs(wait),
                    });
                }
            }
        }
        if let Some(r) = &self.requests {
            if let Err(not_until) = r.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Limited {
                    kind: LimitKind::Requests,
                    retry_after_secs: whole_secs(wait),
                });
            }
        }
        Ok(())
    }

    /// Charges a finished call's tokens (input + output): to this replica's bucket always (its
    /// fallback then knows this replica's own usage), and to the shared one in Redis in the
    /// background, off the request path.
    pub fn charge_tokens(&self, tokens: u64) {
        if let Some(t) = &self.tokens {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .charge(tokens, Instant::now());
        }
        if let Some(shared) = &self.shared {
            if self.limit.tokens_per_minute > 0 && tokens > 0 {
                let shared = shared.clone();
                let name = self.name.clone();
                let limit = self.limit;
                tokio::spawn(async move { shared.charge(&name, limit, tokens).await });
            }
        }
    }
}

/// Limiters by key name, created on first use from the config.
pub struct RateLimiters {
    config: RateLimitsConfig,
    shared: Option<Arc<SharedLimits>>,
    by_key: Mutex<HashMap<String, Arc<KeyLimiter>>>,
}

impl RateLimiters {
    /// `shared`: Redis, when configured, for limits across replicas.
    pub fn new(config: RateLimitsConfig, shared: Option<Arc<SharedLimits>>) -> Self {
        RateLimiters {
            config,
            shared,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.as_ref()
    }

    /// The limiter of a key, `None` when the key is unlimited. Key names are bounded by the keys
    /// that exist, so the map stays small.
    pub fn for_key(&self, name: &str) -> Option<Arc<KeyLimiter>> {
        let limit = self.config.for_key(name);
        if limit == RateLimit::default() {
            return None;
        }
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            map.entry(name.to_string())
                .or_insert_with(|| {
                    Arc::new(KeyLimiter::with_shared(name, limit, self.shared.clone()))
                })
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_and_goes_into_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_minute(60, t0); // one token per second
        assert!(b.check(t0).is_ok());
        b.charge(90, t0);
        assert_eq!(b.level(), -30.0);
        let wait = b.check(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 31.0).abs() < 1e-6, "{wait:?}");
        // 40 s later: -30 + 40 = 10 tokens.
        assert!(b.check(t0 + Duration::from_secs(40)).is_ok());
        assert!((b.level() - 10.0).abs() < 1e-6);
        // Never above capacity.
        assert!(b.check(t0 + Duration::from_secs(1000)).is_ok());
        assert!((b.level() - 60.0).abs() < 1e-6);
    }

    #[test]
    fn requests_per_minute_allow_a_burst_then_refuse_with_retry_after() {
        let l = KeyLimiter::new(RateLimit {
            requests_per_minute: 3,
            tokens_per_minute: 0,
        });
        for _ in 0..3 {
            l.check_local(true).unwrap();
        }
        let refused = l.check_local(true).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Requests);
        assert!(
            (1..=20).contains(&refused.retry_after_secs),
            "{refused:?}: one request per 20 s"
        );
    }

    #[test]
    fn tokens_limit_only_model_calls() {
        let l = KeyLimiter::new(RateLimit {
            requests_per_minute: 0,
            tokens_per_minute: 100,
        });
        l.check_local(true).unwrap();
        l.charge_tokens(500);
        let refused = l.check_local(true).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Tokens);
        assert!(refused.retry_after_secs >= 240, "{refused:?}");
        l.check_local(false).unwrap();
    }

    #[test]
    fn unlimited_keys_have_no_limiter() {
        let mut cfg = RateLimitsConfig::default();
        cfg.per_key.insert(
            "busy".into(),
            RateLimit {
                requests_per_minute: 1,
                tokens_per_minute: 0,
            },
        );
        let r = RateLimiters::new(cfg, None);
        assert!(r.for_key("other").is_none());
        let a = r.for_key("busy").unwrap();
        let b = r.for_key("busy").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
