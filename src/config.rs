//! Typed configuration: a YAML file (`LQO_CONFIG`, default `lqo.yaml` if present), then environment
//! overrides with the original service's variable names, then validation that reports every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crate::auth::config::AuthConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub app_env: String,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub writer: WriterConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    pub default_model: String,
    pub limits: LimitsConfig,
    pub logging: LoggingConfig,
    /// Client API keys, route scopes, the /metrics token and per-key rate limits.
    pub auth: AuthConfig,
    /// Cheap checks run on every answer (GOOD / WARN / BAD).
    pub heuristics: HeuristicsConfig,
    /// The LLM judge: which model, how much traffic it samples, what it scores.
    pub judge: JudgeConfig,
    /// Redis for per-key rate limits shared by every replica; without it each replica counts alone.
    pub redis: RedisConfig,
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
    #[serde(serialize_with = "serialize_db_url")]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most messages accepted in one chat completion request.
    pub max_messages: usize,
    /// Most characters of prompt text (all messages together) accepted in one request.
    pub max_prompt_chars: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_messages: 256,
            max_prompt_chars: 400_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Whole-request limit, upstream retries included.
    pub request_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// Seconds to wait for in-flight requests after SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` / `postgresql://…`, or `sqlite://path` / a plain file path.
    #[serde(serialize_with = "serialize_db_url")]
    pub url: String,
    pub max_connections: u32,
    pub run_migrations: bool,
    /// PostgreSQL only: where the gateway LISTENs for key changes, when `url` points at a pooler
    /// in transaction mode (PgBouncer), which cannot hold a LISTEN: the server itself or a
    /// session-mode pool. Empty: one connection of the pool listens. `DATABASE_LISTEN_URL`.
    #[serde(serialize_with = "serialize_db_url")]
    pub listen_url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    pub channel_capacity: usize,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    /// Append-only spool for records the database cannot take right now (down, slow, or the
    /// queue is full); replayed in order once it is back, and on the next start after a crash.
    /// One gateway process per directory (it is locked).
    pub spool_dir: PathBuf,
    /// When the spool holds this much, further records are dropped (counted and logged).
    pub spool_max_bytes: u64,
    /// A batch insert that takes longer counts as failed and goes to the spool.
    pub db_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI Chat Completions (`POST {base_url}/chat/completions`), or any compatible server.
    OpenaiChat,
    /// OpenAI Responses API (`POST {base_url}/responses`), as the original service used.
    OpenaiResponses,
    /// The built-in deterministic mock model: no network at all.
    Mock,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    /// Environment variable holding the API key (read at start; never printed).
    pub api_key_env: Option<String>,
    /// Set from the environment or a file; never read from YAML so keys stay out of config files.
    #[serde(skip)]
    pub api_key: Option<SecretString>,
    /// A file whose trimmed content is the API key (e.g. a Docker secret).
    pub api_key_file: Option<PathBuf>,
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_retries: u32,
    pub retry_backoff_ms: u64,
    /// Mock only: latency before answering, in milliseconds.
    pub mock_latency_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    pub input_per_1m: f64,
    pub cached_input_per_1m: f64,
    pub output_per_1m: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: String,
    /// Model name sent upstream; defaults to the model version's own name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub pricing: Pricing,
    /// Other names clients may call this version by (e.g. a hard-coded `gpt-4o`); metrics and
    /// records still say the version's own name.
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContentLogging {
    #[default]
    Full,
    /// Stored with e-mail addresses, phone numbers, card numbers and key-like tokens masked.
    Redacted,
    /// Prompts and responses are not stored; everything else is.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// tracing filter, e.g. `info` or `lqo=debug,info`.
    pub level: String,
    pub format: LogFormat,
    /// What of prompts and responses is stored in `llm_logs`.
    pub content: ContentLogging,
    /// Raw records are deleted once their whole UTC day is more than this many days old
    /// (PostgreSQL drops daily partitions); 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 18000,
            request_timeout_secs: 120,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://data/lqo.db".into(),
            max_connections: 10,
            run_migrations: true,
            listen_url: String::new(),
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            channel_capacity: 10_000,
            batch_size: 500,
            flush_interval_ms: 100,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            db_timeout_ms: 10_000,
        }
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::Mock,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: None,
            api_key: None,
            api_key_file: None,
            timeout_secs: 60,
            connect_timeout_secs: 5,
            max_retries: 2,
            retry_backoff_ms: 200,
            mock_latency_ms: 0,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
            content: ContentLogging::Full,
            retention_days: 0,
        }
    }
}

/// The zero-setup defaults: no providers or models here; `apply_env` adds the built-in ones.
impl Default for Config {
    fn default() -> Self {
        Config {
            app_env: "development".into(),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            writer: WriterConfig::default(),
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            default_model: String::new(),
            limits: LimitsConfig::default(),
            logging: LoggingConfig::default(),
            auth: AuthConfig::default(),
            heuristics: HeuristicsConfig::default(),
            judge: JudgeConfig::default(),
            redis: RedisConfig::default(),
        }
    }
}

fn serialize_db_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Prices per 1M tokens of the models the built-in defaults know (USD, list prices).
fn known_pricing(model: &str) -> Pricing {
    let (input, cached, output) = match model {
        "gpt-5" => (1.25, 0.125, 10.0),
        "gpt-5-mini" => (0.25, 0.025, 2.0),
        "gpt-5-nano" => (0.05, 0.005, 0.4),
        "gpt-4o" => (2.5, 1.25, 10.0),
        "gpt-4o-mini" => (0.15, 0.075, 0.6),
        "gpt-4.1" => (2.0, 0.5, 8.0),
        "gpt-4.1-mini" => (0.4, 0.1, 1.6),
        _ => (0.25, 0.025, 2.0),
    };
    Pricing {
        input_per_1m: input,
        cached_input_per_1m: cached,
        output_per_1m: output,
    }
}

/// Where configuration values come from besides the file; a trait-free closure keeps tests hermetic.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads the file (if any), applies the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let lookup = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::load_with(path, &lookup)
    }

    pub fn load_with(path: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let explicit = path
            .map(Path::to_path_buf)
            .or_else(|| env("LQO_CONFIG").map(PathBuf::from));
        let mut cfg = match explicit {
            Some(p) => Self::from_file(&p)?,
            None if Path::new("lqo.yaml").exists() => Self::from_file(Path::new("lqo.yaml"))?,
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Environment overrides. The original service's names keep working.
    pub fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if let Some(v) = env("APP_ENV") {
            self.app_env = v;
        }
        if self.app_env == "production" {
            self.logging.format = LogFormat::Json;
        }
        if let Some(v) = env("LOG_LEVEL") {
            self.logging.level = v.to_lowercase();
        }
        if let Some(v) = env("LQO_LOG_FORMAT") {
            match v.as_str() {
                "json" => self.logging.format = LogFormat::Json,
                "text" => self.logging.format = LogFormat::Text,
                other => problems.push(format!(
                    "LQO_LOG_FORMAT must be json or text, got {other:?}"
                )),
            }
        }
        if let Some(v) = env("DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = env("DATABASE_LISTEN_URL") {
            self.database.listen_url = v;
        }
        if let Some(v) = env("REDIS_URL") {
            self.redis.url = v;
        }
        if let Some(v) = env("LQO_AUTH") {
            match v.to_ascii_lowercase().as_str() {
                "required" | "on" | "true" => self.auth.required = true,
                "off" | "false" => self.auth.required = false,
                _ => problems.push(format!("LQO_AUTH must be required or off, got {v:?}")),
            }
        }
        if let Some(file) = &self.auth.metrics_token_file {
            match std::fs::read_to_string(file) {
                Ok(s) => self.auth.metrics_token = Some(SecretString::from(s.trim().to_string())),
                Err(e) => problems.push(format!("auth.metrics_token_file {}: {e}", file.display())),
            }
        } else {
            let var = self.auth.metrics_token_env.as_deref();
            let var = var.unwrap_or(crate::auth::config::METRICS_TOKEN_ENV);
            self.auth.metrics_token = env(var).map(SecretString::from);
        }
        if let Some(v) = env("PORT") {
            match v.parse() {
                Ok(p) => self.server.port = p,
                Err(_) => problems.push(format!("PORT must be a port number, got {v:?}")),
            }
        }

        // Built-in providers when the file declares none: the original single-model setup.
        if self.providers.is_empty() {
            let key = env("LLM_API_KEY");
            let main = env("OPENAI_MODEL_MAIN");
            if key.is_some() {
                let kind = match env("LLM_API_KIND").as_deref() {
                    Some("chat") | Some("openai_chat") => ProviderKind::OpenaiChat,
                    _ => ProviderKind::OpenaiResponses,
                };
                let mut p = ProviderConfig {
                    kind,
                    api_key_env: Some("LLM_API_KEY".into()),
                    ..ProviderConfig::default()
                };
                if let Some(base) = env("LLM_API_BASE_URL") {
                    p.base_url = base;
                }
                self.providers.insert("openai".into(), p);
                let model = main.unwrap_or_else(|| "gpt-5-mini".into());
                self.models.entry(model.clone()).or_insert(ModelConfig {
                    provider: "openai".into(),
                    upstream_model: None,
                    pricing: known_pricing(&model),
                    aliases: Vec::new(),
                });
                if self.default_model.is_empty() {
                    self.default_model = model;
                }
            } else {
                self.providers
                    .insert("mock".into(), ProviderConfig::default());
                let names: Vec<String> = match main {
                    Some(m) => vec![m],
                    None => vec!["mock-1".into(), "mock-2".into()],
                };
                for name in &names {
                    self.models.entry(name.clone()).or_insert(ModelConfig {
                        provider: "mock".into(),
                        upstream_model: None,
                        pricing: known_pricing("gpt-5-mini"),
                        aliases: Vec::new(),
                    });
                }
                if self.default_model.is_empty() {
                    self.default_model = names[0].clone();
                }
            }
        } else {
            if let Some(base) = env("LLM_API_BASE_URL") {
                for p in self.providers.values_mut() {
                    if p.kind != ProviderKind::Mock {
                        p.base_url = base.clone();
                    }
                }
            }
            if let Some(m) = env("OPENAI_MODEL_MAIN") {
                self.default_model = m;
            }
        }

        for (name, p) in self.providers.iter_mut() {
            if p.kind == ProviderKind::Mock {
                continue;
            }
            if let Some(file) = &p.api_key_file {
                match std::fs::read_to_string(file) {
                    Ok(s) => p.api_key = Some(SecretString::from(s.trim().to_string())),
                    Err(e) => problems.push(format!(
                        "providers.{name}.api_key_file {}: {e}",
                        file.display()
                    )),
                }
            } else {
                let var = p
                    .api_key_env
                    .clone()
                    .unwrap_or_else(|| "LLM_API_KEY".into());
                p.api_key = env(&var).map(SecretString::from);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem, one line each, with the path of the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes must be > 0".into());
        }
        if self.server.request_timeout_secs == 0 {
            problems.push("server.request_timeout_secs must be > 0".into());
        }
        let url = self.database.url.as_str();
        if url.is_empty() {
            problems.push("database.url must not be empty".into());
        } else if url.contains("://")
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            problems.push(format!(
                "database.url must start with postgres://, postgresql:// or sqlite://, got {}",
                redact_url(url)
            ));
        }
        let listen = self.database.listen_url.as_str();
        let listen_ok = listen.is_empty()
            || listen.starts_with("postgres://")
            || listen.starts_with("postgresql://");
        if !listen_ok {
            problems.push(format!(
                "database.listen_url must be a postgres:// URL (the server, or a session-mode pool), got {}",
                redact_url(listen)
            ));
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be > 0".into());
        }
        if self.limits.max_messages == 0 {
            problems.push("limits.max_messages must be > 0".into());
        }
        if self.limits.max_prompt_chars == 0 {
            problems.push("limits.max_prompt_chars must be > 0".into());
        }
        if self.writer.channel_capacity == 0 {
            problems.push("writer.channel_capacity must be > 0".into());
        }
        if self.writer.batch_size == 0 {
            problems.push("writer.batch_size must be > 0".into());
        }
        if self.writer.spool_dir.as_os_str().is_empty() {
            problems.push("writer.spool_dir must not be empty".into());
        }
        if self.writer.spool_max_bytes < 1024 * 1024 {
            problems.push("writer.spool_max_bytes must be at least 1048576 (1 MiB)".into());
        }
        if self.writer.db_timeout_ms == 0 {
            problems.push("writer.db_timeout_ms must be > 0".into());
        }
        if self.providers.is_empty() {
            problems.push("providers must declare at least one provider".into());
        }
        for (name, p) in &self.providers {
            if p.kind != ProviderKind::Mock {
                if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                    problems.push(format!(
                        "providers.{name}.base_url must be an http(s) URL, got {:?}",
                        p.base_url
                    ));
                }
                if p.api_key.is_none() {
                    problems.push(format!(
                        "providers.{name} has no API key: set {} or providers.{name}.api_key_file",
                        p.api_key_env.as_deref().unwrap_or("LLM_API_KEY")
                    ));
                }
            }
            if p.timeout_secs == 0 {
                problems.push(format!("providers.{name}.timeout_secs must be > 0"));
            }
        }
        if self.models.is_empty() {
            problems.push("models must declare at least one model version".into());
        }
        for (name, m) in &self.models {
            if !valid_label(name) {
                problems.push(format!(
                    "models.{name}: a model version name may only use letters, digits and . _ - : (max 64)"
                ));
            }
            if !self.providers.contains_key(&m.provider) {
                problems.push(format!(
                    "models.{name}.provider {:?} is not declared under providers",
                    m.provider
                ));
            }
            for (field, v) in [
                ("input_per_1m", m.pricing.input_per_1m),
                ("cached_input_per_1m", m.pricing.cached_input_per_1m),
                ("output_per_1m", m.pricing.output_per_1m),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    problems.push(format!(
                        "models.{name}.pricing.{field} must be ≥ 0, got {v}"
                    ));
                }
            }
        }
        let mut alias_owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, m) in &self.models {
            for (i, alias) in m.aliases.iter().enumerate() {
                if alias.is_empty() || alias.len() > 128 || alias.chars().any(char::is_control) {
                    problems.push(format!(
                        "models.{name}.aliases[{i}] must be 1 to 128 printable characters"
                    ));
                } else if self.models.contains_key(alias) {
                    problems.push(format!(
                        "models.{name}.aliases[{i}] {alias:?} is already a model version's name"
                    ));
                } else if let Some(other) = alias_owner.insert(alias, name) {
                    problems.push(format!(
                        "models.{name}.aliases[{i}] {alias:?} is also an alias of models.{other}"
                    ));
                }
            }
        }
        if self.default_model.is_empty() {
            problems.push("default_model must be set".into());
        } else if !self.models.contains_key(&self.default_model) {
            problems.push(format!(
                "default_model {:?} is not one of the configured models",
                self.default_model
            ));
        }
        problems.extend(self.auth.problems());
        problems.extend(self.redis_problems());
        problems.extend(self.eval_problems());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            problems.push(format!("logging.level {:?}: {e}", self.logging.level));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.server.request_timeout_secs)
    }

    fn redis_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let r = &self.redis;
        if !r.url.is_empty() {
            if let Err(e) = redis::Client::open(r.url.as_str()) {
                // The crate's message can quote the URL; never its password.
                let reason = e.to_string().replace(&r.url, &redact_url(&r.url));
                problems.push(format!(
                    "redis.url {} is not a Redis URL (redis://host:port/db or rediss://…): {reason}",
                    redact_url(&r.url)
                ));
            }
        }
        let tame = !r.key_prefix.is_empty()
            && r.key_prefix.len() <= 64
            && r.key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-'));
        if !tame {
            problems.push(format!(
                "redis.key_prefix {:?}: use letters, digits and : _ . - (1 to 64)",
                r.key_prefix
            ));
        }
        if r.timeout_ms == 0 || r.timeout_ms > 10_000 {
            problems.push(format!(
                "redis.timeout_ms must be between 1 and 10000, got {}",
                r.timeout_ms
            ));
        }
        problems
    }

    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
    }

    /// The configuration as YAML with secrets shown only as set / not set.
    pub fn to_redacted_yaml(&self) -> String {
        let mut out = serde_yaml::to_string(self).unwrap_or_default();
        out.push_str("# resolved API keys:\n");
        for (name, p) in &self.providers {
            if p.kind != ProviderKind::Mock {
                let state = match &p.api_key {
                    Some(k) if !k.expose_secret().is_empty() => "set (hidden)",
                    _ => "not set",
                };
                out.push_str(&format!("#   providers.{name}: {state}\n"));
            }
        }
        let metrics_token = match &self.auth.metrics_token {
            Some(t) if !t.expose_secret().is_empty() => "set (hidden)",
            _ => "not set (GET /metrics is public)",
        };
        out.push_str(&format!("#   auth.metrics_token: {metrics_token}\n"));
        out
    }
}

/// Model version names become metric label values and URL parts; keep them tame.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// Cheap checks on every answer (see `eval::heuristics`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeuristicsConfig {
    pub enabled: bool,
    /// Answers shorter than this many characters (Unicode scalar values) get WARN.
    pub min_chars: usize,
    /// Answers longer than this many characters get WARN.
    pub max_chars: usize,
    /// Case-insensitive substrings that make an answer BAD (e.g. internal code names).
    pub forbidden_terms: Vec<String>,
    /// Case-insensitive phrases that, in the opening of an answer, mark it a refusal (WARN).
    pub refusal_phrases: Vec<String>,
}

impl Default for HeuristicsConfig {
    fn default() -> Self {
        HeuristicsConfig {
            enabled: true,
            min_chars: 2,
            max_chars: 20_000,
            forbidden_terms: Vec::new(),
            refusal_phrases: crate::eval::heuristics::default_refusal_phrases(),
        }
    }
}

/// The LLM judge (see `eval::judge`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    pub enabled: bool,
    /// A configured model version that judges; unset → `default_model`.
    pub model: Option<String>,
    /// Share of each model version's successful answers that are judged, 0.0–1.0. Unset → 1.0
    /// when the judge model is the built-in mock (free), 0.1 otherwise.
    pub sample_rate: Option<f64>,
    /// Per model version overrides of `sample_rate`.
    pub per_model_sample_rate: BTreeMap<String, f64>,
    /// What the judge scores, each 1–5; must include `overall`.
    pub criteria: Vec<String>,
    /// Descriptions of criteria for the rubric; needed for criteria without a built-in one
    /// (built-in: overall, instruction_following, truthfulness, helpfulness, relevance,
    /// conciseness, safety).
    pub rubric: BTreeMap<String, String>,
    /// Judge calls per record at most (first try plus retries after invalid output or an
    /// upstream error); then the record is a judge error.
    pub max_attempts: u32,
    /// How often an idle worker looks for jobs queued by other replicas.
    pub poll_interval_ms: u64,
    /// Jobs claimed per round trip.
    pub batch_size: usize,
    /// Judge calls in flight per worker.
    pub concurrency: usize,
    /// Deadline of one judge call.
    pub timeout_secs: u64,
    /// A claimed job whose worker has not finished it after this long is claimed again (the
    /// worker died); must exceed `timeout_secs × max_attempts`.
    pub lease_secs: u64,
    /// Wait before retrying after an upstream error; doubles per attempt, capped at 60 s.
    pub retry_backoff_ms: u64,
    /// A job whose record has not reached the database after this long is given up.
    pub record_wait_secs: u64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            enabled: true,
            model: None,
            sample_rate: None,
            per_model_sample_rate: BTreeMap::new(),
            criteria: vec![
                "overall".into(),
                "instruction_following".into(),
                "truthfulness".into(),
            ],
            rubric: BTreeMap::new(),
            max_attempts: 3,
            poll_interval_ms: 1_000,
            batch_size: 8,
            concurrency: 4,
            timeout_secs: 60,
            lease_secs: 600,
            retry_backoff_ms: 1_000,
            record_wait_secs: 600,
        }
    }
}

impl Config {
    /// The model version that judges.
    pub fn judge_model(&self) -> &str {
        self.judge.model.as_deref().unwrap_or(&self.default_model)
    }

    /// The judge's default sample rate: as configured, else everything for the free built-in
    /// mock and a tenth for a real (paid) model.
    pub fn judge_sample_rate(&self) -> f64 {
        if let Some(r) = self.judge.sample_rate {
            return r;
        }
        let mock = self
            .models
            .get(self.judge_model())
            .and_then(|m| self.providers.get(&m.provider))
            .is_some_and(|p| p.kind == ProviderKind::Mock);
        if mock {
            1.0
        } else {
            0.1
        }
    }

    fn eval_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let h = &self.heuristics;
        if h.max_chars == 0 || h.min_chars > h.max_chars {
            problems.push(format!(
                "heuristics.max_chars must be > 0 and ≥ heuristics.min_chars, got min {} max {}",
                h.min_chars, h.max_chars
            ));
        }
        for (field, terms) in [
            ("forbidden_terms", &h.forbidden_terms),
            ("refusal_phrases", &h.refusal_phrases),
        ] {
            for (i, t) in terms.iter().enumerate() {
                if t.trim().is_empty() {
                    problems.push(format!("heuristics.{field}[{i}] must not be blank"));
                }
            }
        }
        let j = &self.judge;
        if let Some(m) = &j.model {
            if !self.models.contains_key(m) {
                problems.push(format!(
                    "judge.model {m:?} is not one of the configured models"
                ));
            }
        }
        let valid_rate = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
        if let Some(r) = j.sample_rate {
            if !valid_rate(r) {
                problems.push(format!(
                    "judge.sample_rate must be between 0 and 1, got {r}"
                ));
            }
        }
        for (name, r) in &j.per_model_sample_rate {
            if !self.models.contains_key(name) {
                problems.push(format!(
                    "judge.per_model_sample_rate.{name}: not one of the configured models"
                ));
            }
            if !valid_rate(*r) {
                problems.push(format!(
                    "judge.per_model_sample_rate.{name} must be between 0 and 1, got {r}"
                ));
            }
        }
        if !j.criteria.iter().any(|c| c == "overall") {
            problems.push("judge.criteria must include overall".into());
        }
        if j.criteria.len() > 10 {
            problems.push("judge.criteria may list at most 10 criteria".into());
        }
        for (i, c) in j.criteria.iter().enumerate() {
            let tame = !c.is_empty()
                && c.len() <= 40
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !tame {
                problems.push(format!(
                    "judge.criteria[{i}] {c:?}: use lowercase letters, digits and _ (max 40)"
                ));
            } else if j.criteria[..i].contains(c) {
                problems.push(format!("judge.criteria[{i}] {c:?} is listed twice"));
            } else if !j.rubric.contains_key(c)
                && crate::eval::judge::builtin_description(c).is_none()
            {
                problems.push(format!(
                    "judge.criteria[{i}] {c:?} has no built-in description: add judge.rubric.{c}"
                ));
            }
        }
        for (name, text) in &j.rubric {
            if !j.criteria.contains(name) {
                problems.push(format!("judge.rubric.{name}: not one of judge.criteria"));
            } else if text.trim().is_empty() {
                problems.push(format!("judge.rubric.{name} must not be blank"));
            }
        }
        for (field, v) in [
            ("max_attempts", u64::from(j.max_attempts)),
            ("poll_interval_ms", j.poll_interval_ms),
            ("batch_size", j.batch_size as u64),
            ("concurrency", j.concurrency as u64),
            ("timeout_secs", j.timeout_secs),
            ("lease_secs", j.lease_secs),
        ] {
            if v == 0 {
                problems.push(format!("judge.{field} must be > 0"));
            }
        }
        if j.max_attempts > 10 {
            problems.push(format!(
                "judge.max_attempts must be at most 10, got {}",
                j.max_attempts
            ));
        }
        if j.lease_secs <= j.timeout_secs.saturating_mul(u64::from(j.max_attempts)) {
            problems.push(format!(
                "judge.lease_secs ({}) must exceed judge.timeout_secs × judge.max_attempts ({})",
                j.lease_secs,
                j.timeout_secs.saturating_mul(u64::from(j.max_attempts))
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn zero_setup_default_is_sqlite_and_mock() {
        let cfg = Config::load_with(None, &env_of(&[])).unwrap();
        assert!(!cfg.is_postgres());
        assert_eq!(cfg.default_model, "mock-1");
        assert_eq!(cfg.providers["mock"].kind, ProviderKind::Mock);
        assert_eq!(cfg.server.port, 18000);
    }

    #[test]
    fn original_env_variables_select_openai() {
        let env = env_of(&[
            ("LLM_API_KEY", "sk-secret-123"),
            ("OPENAI_MODEL_MAIN", "gpt-5-mini"),
            ("LLM_API_BASE_URL", "http://127.0.0.1:9/v1"),
            ("DATABASE_URL", "postgresql://u:pw@db/x"),
            ("APP_ENV", "production"),
            ("LOG_LEVEL", "DEBUG"),
        ]);
        let cfg = Config::load_with(None, &env).unwrap();
        assert_eq!(cfg.default_model, "gpt-5-mini");
        assert_eq!(cfg.providers["openai"].kind, ProviderKind::OpenaiResponses);
        assert_eq!(cfg.providers["openai"].base_url, "http://127.0.0.1:9/v1");
        assert!(cfg.is_postgres());
        assert_eq!(cfg.logging.format, LogFormat::Json);
        assert_eq!(cfg.logging.level, "debug");
        let shown = cfg.to_redacted_yaml();
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(!shown.contains("pw@"), "{shown}");
        assert!(!format!("{cfg:?}").contains("sk-secret-123"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::from_yaml("server:\n  prot: 1\n").unwrap_err();
        assert!(err.contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml = r#"
providers:
  up: { kind: openai_chat, base_url: "ftp://x" }
models:
  "bad name": { provider: nope, pricing: { input_per_1m: -1 } }
default_model: missing
"#;
        let mut cfg = Config::from_yaml(yaml).unwrap();
        cfg.apply_env(&env_of(&[])).unwrap();
        let ConfigError::Invalid(problems) = cfg.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let all = problems.join("\n");
        for needle in [
            "providers.up.base_url",
            "providers.up has no API key",
            "models.bad name: a model version name",
            "models.bad name.provider \"nope\"",
            "models.bad name.pricing.input_per_1m must be ≥ 0",
            "default_model \"missing\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn redis_url_comes_from_the_environment_and_never_shows_its_password() {
        let cfg = Config::load_with(
            None,
            &env_of(&[("REDIS_URL", "redis://:s3cret-pw@redis.internal:6379/2")]),
        )
        .unwrap();
        assert_eq!(cfg.redis.url, "redis://:s3cret-pw@redis.internal:6379/2");
        assert_eq!(cfg.redis.failure_mode, RedisFailureMode::Open);
        assert!(!cfg.to_redacted_yaml().contains("s3cret-pw"));

        let mut cfg = Config::from_yaml(
            "redis: { url: 'http://:s3cret-pw@x', key_prefix: 'a{b}', timeout_ms: 0, failure_mode: closed }",
        )
        .unwrap();
        cfg.apply_env(&env_of(&[])).unwrap();
        let ConfigError::Invalid(problems) = cfg.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let all = problems.join("\n");
        for needle in ["redis.url", "redis.key_prefix", "redis.timeout_ms"] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(!all.contains("s3cret-pw"), "{all}");
    }

    #[test]
    fn kubernetes_configmap_config_validates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/kubernetes/configmap.yaml"
        ))
        .unwrap();
        let cm: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let file = cm["data"]["lqo.yaml"].as_str().expect("data.lqo.yaml");
        let mut cfg = Config::from_yaml(file).unwrap();
        // What the StatefulSet passes from the Secret.
        cfg.apply_env(&env_of(&[
            ("DATABASE_URL", "postgres://lqo:pw@postgres:5432/llm_logs"),
            ("REDIS_URL", "redis://redis:6379/0"),
            ("LLM_API_KEY", "k"),
        ]))
        .unwrap();
        cfg.validate().unwrap();
        assert!(cfg.auth.required && cfg.is_postgres());
        assert_eq!(cfg.writer.spool_dir, Path::new("/var/lib/lqo/spool"));
    }

    #[test]
    fn aliases_are_unique_and_never_shadow_a_version() {
        let yaml = r#"
providers: { m: { kind: mock } }
models:
  a: { provider: m, aliases: [gpt-4o, b] }
  b: { provider: m, aliases: [gpt-4o, ""] }
default_model: a
"#;
        let mut cfg = Config::from_yaml(yaml).unwrap();
        cfg.apply_env(&env_of(&[])).unwrap();
        let ConfigError::Invalid(problems) = cfg.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let all = problems.join("\n");
        for needle in [
            "models.a.aliases[1] \"b\" is already a model version's name",
            "models.b.aliases[0] \"gpt-4o\" is also an alias of models.a",
            "models.b.aliases[1] must be 1 to 128 printable characters",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn example_config_parses_and_validates() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lqo.example.yaml"))
                .unwrap();
        let mut cfg = Config::from_yaml(&text).unwrap();
        cfg.apply_env(&env_of(&[("LLM_API_KEY", "k")])).unwrap();
        cfg.validate().unwrap();
    }
}
