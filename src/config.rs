//! The whole configuration, assembled: a YAML file (`LQO_CONFIG`, default `lqo.yaml` if present),
//! then environment overrides with the original service's variable names, then validation that
//! reports every problem. Each subsystem owns its section and that section's checks
//! (`store::config`, `provider::config`, `eval::config`, `auth::config`); this module only puts
//! them together, adds the sections of the layers above them (server, limits, logging) and the
//! checks that span sections. Nothing below `config` imports it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crate::auth::config::{AuthConfig, RedisConfig, RedisFailureMode};
pub use crate::eval::config::{EvalSettings, HeuristicsConfig, JudgeConfig};
pub use crate::provider::config::{
    alias_problems, known_pricing, valid_label, ModelConfig, Pricing, ProviderConfig, ProviderKind,
    DEFAULT_API_KEY_ENV,
};
pub use crate::redact::ContentLogging;
pub use crate::store::config::{DatabaseConfig, WriterConfig};

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
    /// Most client connections open at once; capped below the open-file limit (whose soft
    /// value is raised to the hard one at start). Beyond it new clients wait in the backlog.
    pub max_connections: usize,
    /// A connection must deliver a request's head (request line and headers) within this many
    /// seconds of its start, or of the first byte after an idle spell; else it is closed.
    pub header_read_timeout_secs: u64,
    /// A connection with nothing read or written and no request being handled for this long
    /// (keep-alive between requests, or a response the client stopped reading) is closed.
    /// Longer than 15 s: a quiet stream sends a keep-alive comment every 15 s.
    pub idle_timeout_secs: u64,
    /// A model call whose client hangs up is recorded as `cancelled` either way. Off: the
    /// upstream call is dropped with the client (nothing more is spent; the record has the
    /// usage known so far). On: it runs on to its end, so the record has its usage and cost.
    pub finish_abandoned_calls: bool,
    /// Threads that serve client connections, each with a runtime of its own (default: one per
    /// CPU the process may use). A connection stays on one of them with its upstream calls
    /// (each thread has its own upstream connection pool), so a call never wakes another thread:
    /// 30-40 % less CPU per streamed call (bench/README.md). 0 serves connections on the
    /// process's shared runtime, whose worker threads take work from each other.
    pub connection_threads: usize,
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
            max_connections: 10_000,
            header_read_timeout_secs: 10,
            // Above the 60 s idle timeout of common load balancers, so they close first.
            idle_timeout_secs: 75,
            finish_abandoned_calls: false,
            connection_threads: std::thread::available_parallelism().map_or(1, usize::from),
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
                    api_key_env: Some(DEFAULT_API_KEY_ENV.into()),
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
                    .unwrap_or_else(|| DEFAULT_API_KEY_ENV.into());
                p.api_key = env(&var).map(SecretString::from);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem, one line each, with the path of the offending value: each section's own
    /// checks, then the ones that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes must be > 0".into());
        }
        if self.server.request_timeout_secs == 0 {
            problems.push("server.request_timeout_secs must be > 0".into());
        }
        if self.server.max_connections == 0 {
            problems.push("server.max_connections must be > 0".into());
        }
        if self.server.connection_threads > 1024 {
            problems.push("server.connection_threads must be at most 1024".into());
        }
        if self.server.header_read_timeout_secs == 0 {
            problems.push("server.header_read_timeout_secs must be > 0".into());
        }
        if self.server.idle_timeout_secs <= 15 {
            problems.push(
                "server.idle_timeout_secs must be more than 15 (a quiet stream sends a keep-alive comment every 15 s)"
                    .into(),
            );
        }
        problems.extend(self.database.problems());
        if self.limits.max_messages == 0 {
            problems.push("limits.max_messages must be > 0".into());
        }
        if self.limits.max_prompt_chars == 0 {
            problems.push("limits.max_prompt_chars must be > 0".into());
        }
        problems.extend(self.writer.problems());
        if self.providers.is_empty() {
            problems.push("providers must declare at least one provider".into());
        }
        for (name, p) in &self.providers {
            problems.extend(p.problems(name));
        }
        if self.models.is_empty() {
            problems.push("models must declare at least one model version".into());
        }
        for (name, m) in &self.models {
            problems.extend(m.problems(name, &self.providers));
        }
        problems.extend(alias_problems(&self.models));
        if self.default_model.is_empty() {
            problems.push("default_model must be set".into());
        } else if !self.models.contains_key(&self.default_model) {
            problems.push(format!(
                "default_model {:?} is not one of the configured models",
                self.default_model
            ));
        }
        problems.extend(self.auth.problems());
        problems.extend(self.redis.problems());
        problems.extend(self.heuristics.problems());
        problems.extend(self.judge.problems(&|m| self.models.contains_key(m)));
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

    /// The connection limits of `server`, the count capped below the open-file limit.
    pub fn connection_limits(&self) -> crate::server::ConnectionLimits {
        crate::server::ConnectionLimits {
            max_connections: crate::server::connection_cap(self.server.max_connections),
            header_read_timeout: Duration::from_secs(self.server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.server.idle_timeout_secs),
            threads: self.server.connection_threads,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.database.is_postgres()
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

    /// What evaluation needs from this configuration.
    pub fn eval_settings(&self) -> EvalSettings {
        EvalSettings {
            judge: self.judge.clone(),
            judge_model: self.judge_model().to_string(),
            sample_rate: self.judge_sample_rate(),
            models: self.models.clone(),
            providers: self.providers.clone(),
            content: self.logging.content,
        }
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
