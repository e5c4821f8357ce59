//! The `auth` and `redis` sections of the configuration (Redis serves the shared rate limits),
//! with their defaults and checks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::redact::{redact_url, scrub_url_secrets};

/// The scope names a key may carry.
pub const SCOPE_NAMES: [&str; 4] = ["chat", "feedback", "logs:read", "admin"];

/// Default environment variable for the `/metrics` bearer token.
pub const METRICS_TOKEN_ENV: &str = "LQO_METRICS_TOKEN";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a client API key (`Authorization: Bearer …`) on every route that is not public.
    /// Off by default (zero setup); `LQO_AUTH=required` turns it on from the environment.
    pub required: bool,
    /// Keys declared here for stateless deployments: only the key's SHA-256, never the key.
    pub keys: Vec<ConfigKey>,
    /// How long a verified key is trusted without asking the database again. On PostgreSQL a
    /// revocation reaches every replica within a second (LISTEN/NOTIFY); this is the bound when
    /// that fails, and on SQLite.
    pub cache_ttl_secs: u64,
    /// Environment variable holding the bearer token that `GET /metrics` then requires
    /// (default `LQO_METRICS_TOKEN`; unset → /metrics is public).
    pub metrics_token_env: Option<String>,
    /// A file whose trimmed content is the /metrics token (e.g. a Docker secret).
    pub metrics_token_file: Option<PathBuf>,
    /// Read from the environment or the file; never from YAML.
    #[serde(skip)]
    pub metrics_token: Option<SecretString>,
    pub rate_limits: RateLimitsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: false,
            keys: Vec::new(),
            cache_ttl_secs: 30,
            metrics_token_env: None,
            metrics_token_file: None,
            metrics_token: None,
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

/// A key declared in the config file by its hash.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigKey {
    pub name: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn default_scopes() -> Vec<String> {
    vec!["chat".to_string()]
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Applies to every key without its own entry (and, with auth off, to all anonymous callers
    /// together as the key `anonymous`).
    pub default: RateLimit,
    /// Per key name.
    pub per_key: BTreeMap<String, RateLimit>,
}

/// Token-bucket limits per minute; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub requests_per_minute: u32,
    /// Input plus output tokens of model calls.
    pub tokens_per_minute: u64,
}

impl RateLimitsConfig {
    pub fn for_key(&self, name: &str) -> RateLimit {
        self.per_key.get(name).copied().unwrap_or(self.default)
    }
}

/// Key names are metric label values and appear in logs; keep them tame.
pub fn valid_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && s != "anonymous"
}

impl AuthConfig {
    /// Problems with this section, one line each, with the path of the offending value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cache_ttl_secs > 3600 {
            problems.push(format!(
                "auth.cache_ttl_secs must be ≤ 3600 (a revoked key works until it expires from the cache), got {}",
                self.cache_ttl_secs
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            if !valid_key_name(&k.name) {
                problems.push(format!(
                    "{at}.name {:?}: a key name may only use letters, digits and . _ - (max 64), and not be \"anonymous\"",
                    k.name
                ));
            }
            if !seen.insert(k.name.as_str()) {
                problems.push(format!("{at}.name {:?} is declared twice", k.name));
            }
            if !(k.sha256.len() == 64 && k.sha256.chars().all(|c| c.is_ascii_hexdigit())) {
                problems.push(format!(
                    "{at}.sha256 must be 64 hex digits (the SHA-256 of the key, never the key itself)"
                ));
            }
            if k.scopes.is_empty() {
                problems.push(format!("{at}.scopes must name at least one scope"));
            }
            for s in &k.scopes {
                if !SCOPE_NAMES.contains(&s.as_str()) {
                    problems.push(format!(
                        "{at}.scopes: unknown scope {s:?}; known: {}",
                        SCOPE_NAMES.join(", ")
                    ));
                }
            }
        }
        for name in self.rate_limits.per_key.keys() {
            if !(valid_key_name(name) || name == "anonymous") {
                problems.push(format!(
                    "auth.rate_limits.per_key.{name}: not a valid key name"
                ));
            }
        }
        problems
    }
}

/// What a rate-limit check does when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedisFailureMode {
    /// Let the replica's own limiter decide (limits hold per replica, as without Redis).
    #[default]
    Open,
    /// Refuse limited keys with 429 until Redis answers again.
    Closed,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db` (`rediss://` for TLS); `REDIS_URL` overrides it. Empty:
    /// no Redis, and `auth.rate_limits` are enforced by each replica on its own.
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    /// Every key this gateway writes starts with `{<key_prefix>:<key name>}` (one Redis Cluster
    /// slot per API key); gateways sharing limits must share the prefix.
    pub key_prefix: String,
    /// A limit check that Redis has not answered within this many milliseconds counts as failed.
    pub timeout_ms: u64,
    pub failure_mode: RedisFailureMode,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            key_prefix: "lqo".into(),
            timeout_ms: 100,
            failure_mode: RedisFailureMode::Open,
        }
    }
}

impl RedisConfig {
    /// Problems with the `redis` section, one line each; the URL's password is never shown.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.url.is_empty() {
            if let Err(e) = redis::Client::open(self.url.as_str()) {
                // The crate's message can quote the URL; never its password.
                let reason = scrub_url_secrets(&e.to_string(), &self.url);
                problems.push(format!(
                    "redis.url {} is not a Redis URL (redis://host:port/db or rediss://…): {reason}",
                    redact_url(&self.url)
                ));
            }
        }
        let tame = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-'));
        if !tame {
            problems.push(format!(
                "redis.key_prefix {:?}: use letters, digits and : _ . - (1 to 64)",
                self.key_prefix
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            problems.push(format!(
                "redis.timeout_ms must be between 1 and 10000, got {}",
                self.timeout_ms
            ));
        }
        problems
    }
}

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}
