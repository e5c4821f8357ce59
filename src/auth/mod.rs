//! Who may call what: client API keys (hashed, scoped, expiring, revocable), the route → scope
//! table, the `/metrics` token, and per-key rate limits. Knows nothing about axum; the middleware
//! in `api/auth.rs` asks [`Auth::authorize`] and maps its answer to a response.

pub mod cli;
pub mod config;
pub mod keys;
pub mod ratelimit;
pub mod shared_limits;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::metrics::Metrics;
use crate::store::keys::{KeyChange, KeyChangeOp};
use crate::store::KeyStore;
use config::AuthConfig;
use keys::{hash_key, hashes_equal, lookup_prefix, parse_hash_hex};
use ratelimit::{KeyLimiter, Limited, RateLimiters, Refusal};
use shared_limits::SharedLimits;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/chat`, `/v1/chat/completions`, `/v1/models`.
    Chat,
    /// `/v1/feedback`.
    Feedback,
    /// `/v1/logs…`.
    LogsRead,
    /// `/v1/admin…` (key management).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Chat, Scope::Feedback, Scope::LogsRead, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Feedback => "feedback",
            Scope::LogsRead => "logs:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes(Scope::ALL.iter().fold(0, |acc, s| acc | s.bit()))
    }

    /// Unknown names are ignored (config and CLI reject them before they are stored).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Scopes {
        Scopes(
            names
                .iter()
                .filter_map(|n| Scope::parse(n.as_ref()))
                .fold(0, |acc, s| acc | s.bit()),
        )
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, readiness, docs).
    Public,
    /// `auth.metrics_token` when one is set, else anyone; independent of client keys.
    MetricsToken,
    /// A client key with this scope (when auth is required).
    Scope(Scope),
}

/// Route (template or path prefix, matched at `/` boundaries) → what it requires. Routes added
/// later inherit from their prefix (e.g. `/v1/logs/{id}` from `/v1/logs`); a route matching no
/// entry requires the admin scope, so nothing new is ever open by accident.
pub const ROUTE_ACCESS: &[(&str, Access)] = &[
    ("/health", Access::Public),
    ("/ready", Access::Public),
    ("/docs", Access::Public),
    ("/openapi.json", Access::Public),
    ("/metrics", Access::MetricsToken),
    ("/chat", Access::Scope(Scope::Chat)),
    ("/v1/chat/completions", Access::Scope(Scope::Chat)),
    ("/v1/responses", Access::Scope(Scope::Chat)),
    ("/v1/embeddings", Access::Scope(Scope::Chat)),
    ("/v1/models", Access::Scope(Scope::Chat)),
    ("/v1/feedback", Access::Scope(Scope::Feedback)),
    ("/v1/logs", Access::Scope(Scope::LogsRead)),
    ("/v1/admin", Access::Scope(Scope::Admin)),
];

/// Routes that call a model: the tokens-per-minute budget applies to these only.
pub const MODEL_CALL_ROUTES: &[&str] = &[
    "/chat",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
];

pub fn is_model_call(path: &str) -> bool {
    MODEL_CALL_ROUTES.contains(&path)
}

/// What the route `path` (a route template such as `/v1/logs/{id}`, or a plain path) requires.
pub fn access_for(path: &str) -> Access {
    ROUTE_ACCESS
        .iter()
        .filter(|(prefix, _)| {
            path == *prefix
                || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, a)| *a)
        .unwrap_or(Access::Scope(Scope::Admin))
}

/// Who is calling: a verified key, or `anonymous` when auth is off.
#[derive(Clone)]
pub struct Caller {
    name: Arc<str>,
    authenticated: bool,
    scopes: Scopes,
    limiter: Option<Arc<KeyLimiter>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("authenticated", &self.authenticated)
            .field("scopes", &self.scopes.names())
            .finish()
    }
}

pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The key's name; `None` for anonymous callers (auth off).
    pub fn key_name(&self) -> Option<&str> {
        self.authenticated.then_some(&*self.name)
    }

    /// The key's name or `anonymous`: the `key_name` metric label.
    pub fn label(&self) -> &str {
        &self.name
    }

    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// Charges a finished model call's tokens to the caller's tokens-per-minute budget.
    pub fn charge_tokens(&self, tokens: u64) {
        if let Some(l) = &self.limiter {
            l.charge_tokens(tokens);
        }
    }
}

/// Why a request was refused; `api::error` turns it into 401/403/429/503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// No key has this value.
    Invalid,
    Expired,
    Revoked,
    MissingScope {
        key_name: String,
        scope: Scope,
    },
    /// `/metrics` with a token set and a missing or wrong bearer.
    MetricsToken,
    /// Admin routes need authentication on, so that keys cannot be minted by anyone.
    AuthDisabled,
    RateLimited {
        key_name: String,
        limited: Limited,
    },
    /// The key has limits, Redis cannot be asked, and `redis.failure_mode` is `closed`.
    RateLimitUnavailable {
        key_name: String,
    },
    /// The key database could not be asked.
    Unavailable(String),
}

impl Denied {
    /// The `reason` label of `lqo_auth_failures_total`; `None` for refusals that are not
    /// authentication failures.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::Invalid => "invalid",
            Denied::Expired => "expired",
            Denied::Revoked => "revoked",
            Denied::MissingScope { .. } => "missing_scope",
            Denied::MetricsToken => "metrics_token",
            Denied::Unavailable(_) => "unavailable",
            Denied::AuthDisabled
            | Denied::RateLimited { .. }
            | Denied::RateLimitUnavailable { .. } => return None,
        })
    }
}

pub const FAILURE_REASONS: [&str; 8] = [
    "missing",
    "malformed",
    "invalid",
    "expired",
    "revoked",
    "missing_scope",
    "metrics_token",
    "unavailable",
];

/// A key that exists (from the config or the database), as far as auth needs it.
#[derive(Debug, Clone)]
struct KnownKey {
    name: Arc<str>,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
enum Verdict {
    Valid(KnownKey),
    Revoked,
    Invalid,
}

struct Cached {
    at: Instant,
    verdict: Verdict,
}

/// Verified keys (and unknown ones) are remembered this many entries at most.
const MAX_CACHE_ENTRIES: usize = 10_000;

pub struct Auth {
    required: bool,
    keys: Arc<dyn KeyStore>,
    config_keys: Vec<(KnownKey, [u8; 32])>,
    metrics_token: Option<[u8; 32]>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    cache_ttl: Duration,
    limiters: RateLimiters,
    metrics: Arc<Metrics>,
    /// True while key changes from other processes arrive by PostgreSQL LISTEN/NOTIFY.
    key_changes_followed: AtomicBool,
}

/// `Authorization: Bearer <token>` → the token.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, Denied> {
    let raw = header.ok_or(Denied::Missing)?;
    let value = std::str::from_utf8(raw)
        .map_err(|_| Denied::Malformed)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(Denied::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Denied::Malformed);
    }
    Ok(token)
}

impl Auth {
    /// Config validation has checked the key hashes; a malformed one is skipped here, never a panic.
    /// `shared`: Redis, when configured, keeps the rate limits of all replicas together.
    pub fn new(
        cfg: &AuthConfig,
        keys: Arc<dyn KeyStore>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<SharedLimits>>,
    ) -> Auth {
        let config_keys = cfg
            .keys
            .iter()
            .filter_map(|k| {
                let hash = parse_hash_hex(&k.sha256)?;
                Some((
                    KnownKey {
                        name: Arc::from(k.name.as_str()),
                        scopes: Scopes::from_names(&k.scopes),
                        expires_at: k.expires_at,
                    },
                    hash,
                ))
            })
            .collect();
        use secrecy::ExposeSecret;
        let metrics_token = cfg
            .metrics_token
            .as_ref()
            .map(|t| t.expose_secret())
            .filter(|t| !t.is_empty())
            .map(hash_key);
        for reason in FAILURE_REASONS {
            metrics.auth_failures.with_label_values(&[reason]);
        }
        Auth {
            required: cfg.required,
            keys,
            config_keys,
            metrics_token,
            cache: Mutex::new(HashMap::new()),
            cache_ttl: Duration::from_secs(cfg.cache_ttl_secs),
            limiters: RateLimiters::new(cfg.rate_limits.clone(), shared),
            metrics,
            key_changes_followed: AtomicBool::new(false),
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Names of the keys declared in the config file.
    pub fn config_key_names(&self) -> Vec<String> {
        self.config_keys
            .iter()
            .map(|(k, _)| k.name.to_string())
            .collect()
    }

    /// Decides whether a request for a route with `access` (a model call or not), carrying this
    /// `Authorization` header value, may proceed, and as whom. Counts refusals in the metrics.
    pub async fn authorize(
        &self,
        access: Access,
        model_call: bool,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Caller>, Denied> {
        let result = self.decide(access, model_call, authorization).await;
        if let Err(d) = &result {
            if let Some(reason) = d.reason() {
                self.metrics
                    .auth_failures
                    .with_label_values(&[reason])
                    .inc();
            }
            if let Denied::RateLimited { key_name, limited } = d {
                self.metrics
                    .rate_limited
                    .with_label_values(&[key_name.as_str(), limited.kind.as_str()])
                    .inc();
            }
        }
        result
    }

    async fn decide(
        &self,
        access: Access,
        model_call: bool,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Caller>, Denied> {
        let scope = match access {
            Access::Public => return Ok(None),
            Access::MetricsToken => {
                if let Some(want) = &self.metrics_token {
                    let token = bearer_token(authorization).map_err(|_| Denied::MetricsToken)?;
                    if !hashes_equal(want, &hash_key(token)) {
                        return Err(Denied::MetricsToken);
                    }
                }
                return Ok(None);
            }
            Access::Scope(s) => s,
        };
        let caller = if !self.required {
            if scope == Scope::Admin {
                return Err(Denied::AuthDisabled);
            }
            Caller {
                name: Arc::from(ANONYMOUS),
                authenticated: false,
                scopes: Scopes::all(),
                limiter: self.limiters.for_key(ANONYMOUS),
            }
        } else {
            let token = bearer_token(authorization)?;
            let key = self.verify(token).await?;
            if !key.scopes.contains(scope) {
                return Err(Denied::MissingScope {
                    key_name: key.name.to_string(),
                    scope,
                });
            }
            Caller {
                limiter: self.limiters.for_key(&key.name),
                name: key.name,
                authenticated: true,
                scopes: key.scopes,
            }
        };
        if let Some(l) = &caller.limiter {
            l.check(model_call).await.map_err(|refusal| match refusal {
                Refusal::Limited(limited) => Denied::RateLimited {
                    key_name: caller.name.to_string(),
                    limited,
                },
                Refusal::StoreUnavailable => Denied::RateLimitUnavailable {
                    key_name: caller.name.to_string(),
                },
            })?;
        }
        Ok(Some(caller))
    }

    /// Finds the key with this value: the cache, then the configured keys (each compared in
    /// constant time), then the database row with the key's prefix (hash compared in constant
    /// time). Expiry is checked on every use; revocation within the cache TTL.
    async fn verify(&self, token: &str) -> Result<KnownKey, Denied> {
        let hash = hash_key(token);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&hash)
                .filter(|c| c.at.elapsed() < self.cache_ttl)
                .map(|c| c.verdict.clone())
        };
        let verdict = match cached {
            Some(v) => v,
            None => {
                let v = self.lookup(token, &hash).await?;
                self.remember(hash, v.clone());
                v
            }
        };
        match verdict {
            Verdict::Valid(k) => match k.expires_at {
                Some(t) if t <= Utc::now() => Err(Denied::Expired),
                _ => Ok(k),
            },
            Verdict::Revoked => Err(Denied::Revoked),
            Verdict::Invalid => Err(Denied::Invalid),
        }
    }

    async fn lookup(&self, token: &str, hash: &[u8; 32]) -> Result<Verdict, Denied> {
        // Every configured key is compared, match or not, so timing says nothing about which.
        let mut found = None;
        for (k, h) in &self.config_keys {
            if hashes_equal(h, hash) {
                found = Some(k.clone());
            }
        }
        if let Some(k) = found {
            return Ok(Verdict::Valid(k));
        }
        let Some(prefix) = lookup_prefix(token) else {
            return Ok(Verdict::Invalid);
        };
        let rows = self
            .keys
            .api_keys_by_prefix(prefix)
            .await
            .map_err(|e| Denied::Unavailable(e.to_string()))?;
        for row in rows {
            let Some(stored) = parse_hash_hex(&row.key_hash) else {
                continue;
            };
            if !hashes_equal(&stored, hash) {
                continue;
            }
            if row.revoked_at.is_some() {
                return Ok(Verdict::Revoked);
            }
            let keys = self.keys.clone();
            let key_hash = row.key_hash.clone();
            tokio::spawn(async move {
                if let Err(e) = keys.touch_api_key(&key_hash, Utc::now()).await {
                    tracing::debug!(error = %e, "could not record the key's last use");
                }
            });
            return Ok(Verdict::Valid(KnownKey {
                name: Arc::from(row.name.as_str()),
                scopes: Scopes::from_names(&row.scopes),
                expires_at: row.expires_at,
            }));
        }
        Ok(Verdict::Invalid)
    }

    fn remember(&self, hash: [u8; 32], verdict: Verdict) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.cache_ttl;
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            hash,
            Cached {
                at: Instant::now(),
                verdict,
            },
        );
    }

    /// Forgets what the cache knows about a key name, so a revocation made through this replica
    /// takes effect at once (other replicas follow by LISTEN/NOTIFY, else within the cache TTL).
    pub fn forget(&self, name: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, c| !matches!(&c.verdict, Verdict::Valid(k) if &*k.name == name));
    }

    /// Forgets every cached verdict (after key changes may have been missed).
    pub fn forget_all(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Applies a key change announced by any process on the database: a revoked key's verdict
    /// is dropped; a created key drops the cached refusals of unknown keys.
    pub fn apply_key_change(&self, change: &KeyChange) {
        match change.op {
            KeyChangeOp::Revoke => self.forget(&change.name),
            KeyChangeOp::Create => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.retain(|_, c| !matches!(c.verdict, Verdict::Invalid));
            }
        }
    }

    /// What `/ready` should say about key changes: `None` while they are followed (or need not
    /// be: auth off, or SQLite, which one process serves).
    pub fn key_changes_problem(&self) -> Option<String> {
        let expected = self.required && self.keys.announces_key_changes();
        (expected && !self.key_changes_followed.load(Ordering::Relaxed)).then(|| {
            format!(
                "key changes from other replicas are not being received (PostgreSQL LISTEN is down): a revoked key is refused here within auth.cache_ttl_secs ({} s)",
                self.cache_ttl.as_secs()
            )
        })
    }

    /// What `/ready` should say about the shared rate-limit store (Redis): `None` without Redis
    /// or when it answers a PING.
    pub async fn shared_limits_problem(&self) -> Option<String> {
        match self.limiters.shared() {
            Some(shared) => shared.probe().await,
            None => None,
        }
    }

    /// Says at start how the gateway is protected: a warning when auth is off, an error when it
    /// is required but no key exists.
    pub async fn log_startup_state(&self) {
        match self.limiters.shared() {
            Some(shared) => match shared.probe().await {
                None => tracing::info!(
                    url = shared.shown_url(),
                    "rate limits are shared by every replica through Redis"
                ),
                Some(problem) => tracing::warn!("{problem}"),
            },
            None => tracing::info!(
                "rate limits are counted by this replica alone (set REDIS_URL to share them)"
            ),
        }
        if !self.required {
            tracing::warn!(
                "authentication is off: any client can call the gateway; set auth.required: true or LQO_AUTH=required"
            );
        } else {
            let now = Utc::now();
            let config_keys = self
                .config_keys
                .iter()
                .filter(|(k, _)| k.expires_at.is_none_or(|t| t > now))
                .count();
            match self.keys.count_live_api_keys(now).await {
                Ok(0) if config_keys == 0 => tracing::error!(
                    "authentication is required but no API key exists: every request will get 401; create one with `lqo keys create --name NAME --scopes chat` or declare one under auth.keys"
                ),
                Ok(stored) => tracing::info!(
                    stored_keys = stored,
                    config_keys,
                    cache_ttl_secs = self.cache_ttl.as_secs(),
                    "authentication required: clients send Authorization: Bearer <key>"
                ),
                Err(e) => tracing::error!(error = %e, "authentication is required but the key table cannot be read"),
            }
        }
        if self.metrics_token.is_some() {
            tracing::info!("GET /metrics requires the metrics bearer token");
        }
    }
}

/// Follows key creation and revocation made by any process on the same PostgreSQL database
/// (`LISTEN lqo_api_keys`), so a revoked key is refused on every replica within a second. While
/// the listener is down the cache TTL bounds the delay; after a reconnect the whole cache is
/// dropped, since changes may have been missed. `None` when there is nothing to follow (auth off,
/// or SQLite). `listen_url`: `database.listen_url`, when the pool goes through a transaction-mode
/// pooler. Abort the task to stop it.
pub fn follow_key_changes(
    auth: Arc<Auth>,
    listen_url: Option<String>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !auth.required || !auth.keys.announces_key_changes() {
        return None;
    }
    Some(tokio::spawn(async move {
        const MAX_BACKOFF: Duration = Duration::from_secs(30);
        let mut backoff = Duration::from_millis(500);
        loop {
            match auth.keys.listen_key_changes(listen_url.as_deref()).await {
                Ok(None) => return,
                Ok(Some(mut changes)) => {
                    auth.forget_all();
                    auth.key_changes_followed.store(true, Ordering::Relaxed);
                    tracing::debug!("following key changes (LISTEN lqo_api_keys)");
                    backoff = Duration::from_millis(500);
                    loop {
                        match changes.next().await {
                            Ok(Some(change)) => {
                                tracing::debug!(key_name = %change.name, op = ?change.op, "key change");
                                auth.apply_key_change(&change);
                            }
                            Ok(None) => {
                                tracing::warn!(
                                    "the key change listener reconnected; forgetting cached keys"
                                );
                                auth.forget_all();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "the key change listener failed; revocations by other replicas now take up to auth.cache_ttl_secs");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for key changes; retrying");
                }
            }
            auth.key_changes_followed.store(false, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_matches_templates_and_prefixes_at_slashes() {
        assert_eq!(access_for("/health"), Access::Public);
        assert_eq!(access_for("/docs/swagger-ui.css"), Access::Public);
        assert_eq!(access_for("/metrics"), Access::MetricsToken);
        assert_eq!(access_for("/chat"), Access::Scope(Scope::Chat));
        assert_eq!(
            access_for("/v1/chat/completions"),
            Access::Scope(Scope::Chat)
        );
        assert_eq!(access_for("/v1/logs"), Access::Scope(Scope::LogsRead));
        assert_eq!(access_for("/v1/logs/{id}"), Access::Scope(Scope::LogsRead));
        assert_eq!(access_for("/v1/feedback"), Access::Scope(Scope::Feedback));
        assert_eq!(
            access_for("/v1/admin/keys/{name}"),
            Access::Scope(Scope::Admin)
        );
        // Not a prefix at a slash boundary, and unknown routes: admin only.
        assert_eq!(access_for("/chatty"), Access::Scope(Scope::Admin));
        assert_eq!(access_for("/v1/something-new"), Access::Scope(Scope::Admin));
    }

    #[test]
    fn scopes_round_trip() {
        let s = Scopes::from_names(&["chat", "logs:read", "bogus"]);
        assert!(s.contains(Scope::Chat) && s.contains(Scope::LogsRead));
        assert!(!s.contains(Scope::Admin));
        assert_eq!(s.names(), vec!["chat", "logs:read"]);
        assert_eq!(Scopes::all().names().len(), 4);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some(b"bearer   abc  ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(Denied::Missing));
        assert_eq!(bearer_token(Some(b"Basic abc")), Err(Denied::Malformed));
        assert_eq!(bearer_token(Some(b"Bearer ")), Err(Denied::Malformed));
        assert_eq!(bearer_token(Some(b"abc")), Err(Denied::Malformed));
        assert_eq!(bearer_token(Some(&[0xff, 0xfe])), Err(Denied::Malformed));
    }
}
