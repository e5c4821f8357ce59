//! The `providers` and `models` sections of the configuration: which upstreams exist, which model
//! versions call them, what each costs; their defaults and checks, and the list prices the
//! built-in defaults use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

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
    /// A whole non-streamed call (per attempt); for a stream, the wait for its head and each
    /// gap between its chunks.
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_retries: u32,
    pub retry_backoff_ms: u64,
    /// Mock only: latency before answering, in milliseconds.
    pub mock_latency_ms: u64,
    /// Which HTTP client calls the upstream (`provider/http.rs`).
    pub http_client: HttpClient,
    /// A PEM file of root certificates trusted for this upstream's TLS besides the public web
    /// PKI's (an upstream behind a private CA); read at start.
    pub ca_file: Option<PathBuf>,
}

/// `auto`: hyper-util's client (with rustls for https) for upstreams no proxy from the
/// environment applies to (~20 % less CPU per call), reqwest for the rest. `reqwest`: reqwest
/// always.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpClient {
    #[default]
    Auto,
    Reqwest,
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
            http_client: HttpClient::Auto,
            ca_file: None,
        }
    }
}

/// The variable a provider's API key is read from unless `api_key_env` names another.
pub const DEFAULT_API_KEY_ENV: &str = "LLM_API_KEY";

impl ProviderConfig {
    /// Problems with `providers.<name>`, one line each, with the path of the offending value.
    pub fn problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.kind != ProviderKind::Mock {
            if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
                problems.push(format!(
                    "providers.{name}.base_url must be an http(s) URL, got {:?}",
                    self.base_url
                ));
            }
            if self.api_key.is_none() {
                problems.push(format!(
                    "providers.{name} has no API key: set {} or providers.{name}.api_key_file",
                    self.api_key_env.as_deref().unwrap_or(DEFAULT_API_KEY_ENV)
                ));
            }
        }
        if self.timeout_secs == 0 {
            problems.push(format!("providers.{name}.timeout_secs must be > 0"));
        }
        if let Some(path) = &self.ca_file {
            if let Err(e) = super::http::read_ca_file(path) {
                problems.push(format!("providers.{name}.ca_file: {e}"));
            }
        }
        problems
    }
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

impl ModelConfig {
    /// Problems with `models.<name>`, one line each; `providers` are the declared ones.
    pub fn problems(
        &self,
        name: &str,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if !valid_label(name) {
            problems.push(format!(
                "models.{name}: a model version name may only use letters, digits and . _ - : (max 64)"
            ));
        }
        if !providers.contains_key(&self.provider) {
            problems.push(format!(
                "models.{name}.provider {:?} is not declared under providers",
                self.provider
            ));
        }
        for (field, v) in [
            ("input_per_1m", self.pricing.input_per_1m),
            ("cached_input_per_1m", self.pricing.cached_input_per_1m),
            ("output_per_1m", self.pricing.output_per_1m),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!(
                    "models.{name}.pricing.{field} must be ≥ 0, got {v}"
                ));
            }
        }
        problems
    }
}

/// Problems with the `aliases` of all model versions together: each alias printable, never a
/// version's own name, and owned by one version only.
pub fn alias_problems(models: &BTreeMap<String, ModelConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut alias_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, m) in models {
        for (i, alias) in m.aliases.iter().enumerate() {
            if alias.is_empty() || alias.len() > 128 || alias.chars().any(char::is_control) {
                problems.push(format!(
                    "models.{name}.aliases[{i}] must be 1 to 128 printable characters"
                ));
            } else if models.contains_key(alias) {
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
    problems
}

/// Model version names become metric label values and URL parts; keep them tame.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// Prices per 1M tokens of the models the built-in defaults know (USD, list prices).
pub fn known_pricing(model: &str) -> Pricing {
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
