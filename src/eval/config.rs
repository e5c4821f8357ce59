//! The `heuristics` and `judge` sections of the configuration, their defaults and their checks,
//! and [`EvalSettings`]: what evaluation needs from the assembled configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::config::{ModelConfig, ProviderConfig};
use crate::redact::ContentLogging;

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
            refusal_phrases: super::heuristics::default_refusal_phrases(),
        }
    }
}

impl HeuristicsConfig {
    /// Problems with this section, one line each, with the path of the offending value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_chars == 0 || self.min_chars > self.max_chars {
            problems.push(format!(
                "heuristics.max_chars must be > 0 and ≥ heuristics.min_chars, got min {} max {}",
                self.min_chars, self.max_chars
            ));
        }
        for (field, terms) in [
            ("forbidden_terms", &self.forbidden_terms),
            ("refusal_phrases", &self.refusal_phrases),
        ] {
            for (i, t) in terms.iter().enumerate() {
                if t.trim().is_empty() {
                    problems.push(format!("heuristics.{field}[{i}] must not be blank"));
                }
            }
        }
        problems
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

impl JudgeConfig {
    /// Problems with this section, one line each, with the path of the offending value.
    /// `is_model` tells which model versions are configured.
    pub fn problems(&self, is_model: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(m) = &self.model {
            if !is_model(m) {
                problems.push(format!(
                    "judge.model {m:?} is not one of the configured models"
                ));
            }
        }
        let valid_rate = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
        if let Some(r) = self.sample_rate {
            if !valid_rate(r) {
                problems.push(format!(
                    "judge.sample_rate must be between 0 and 1, got {r}"
                ));
            }
        }
        for (name, r) in &self.per_model_sample_rate {
            if !is_model(name) {
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
        problems.extend(self.criteria_problems());
        for (field, v) in [
            ("max_attempts", u64::from(self.max_attempts)),
            ("poll_interval_ms", self.poll_interval_ms),
            ("batch_size", self.batch_size as u64),
            ("concurrency", self.concurrency as u64),
            ("timeout_secs", self.timeout_secs),
            ("lease_secs", self.lease_secs),
        ] {
            if v == 0 {
                problems.push(format!("judge.{field} must be > 0"));
            }
        }
        if self.max_attempts > 10 {
            problems.push(format!(
                "judge.max_attempts must be at most 10, got {}",
                self.max_attempts
            ));
        }
        let calls = self
            .timeout_secs
            .saturating_mul(u64::from(self.max_attempts));
        if self.lease_secs <= calls {
            problems.push(format!(
                "judge.lease_secs ({}) must exceed judge.timeout_secs × judge.max_attempts ({calls})",
                self.lease_secs
            ));
        }
        problems
    }

    fn criteria_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.criteria.iter().any(|c| c == "overall") {
            problems.push("judge.criteria must include overall".into());
        }
        if self.criteria.len() > 10 {
            problems.push("judge.criteria may list at most 10 criteria".into());
        }
        for (i, c) in self.criteria.iter().enumerate() {
            let tame = !c.is_empty()
                && c.len() <= 40
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
            if !tame {
                problems.push(format!(
                    "judge.criteria[{i}] {c:?}: use lowercase letters, digits and _ (max 40)"
                ));
            } else if self.criteria[..i].contains(c) {
                problems.push(format!("judge.criteria[{i}] {c:?} is listed twice"));
            } else if !self.rubric.contains_key(c) && super::judge::builtin_description(c).is_none()
            {
                problems.push(format!(
                    "judge.criteria[{i}] {c:?} has no built-in description: add judge.rubric.{c}"
                ));
            }
        }
        for (name, text) in &self.rubric {
            if !self.criteria.contains(name) {
                problems.push(format!("judge.rubric.{name}: not one of judge.criteria"));
            } else if text.trim().is_empty() {
                problems.push(format!("judge.rubric.{name} must not be blank"));
            }
        }
        problems
    }
}

/// What evaluation needs from the assembled configuration (built by `Config::eval_settings`):
/// the judge section with its choices resolved, and the model versions it may meet.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub judge: JudgeConfig,
    /// `judge.model`, or `default_model` when unset.
    pub judge_model: String,
    /// `judge.sample_rate`, or its default for the judge model: everything for the free
    /// built-in mock, a tenth for a real (paid) model.
    pub sample_rate: f64,
    /// The configured model versions (metric labels are only ever these).
    pub models: BTreeMap<String, ModelConfig>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// What of prompts and answers is stored (nothing → nothing to judge).
    pub content: ContentLogging,
}

impl EvalSettings {
    /// Whether a model version is configured (and so may label a metric).
    pub fn is_model(&self, model_version: &str) -> bool {
        self.models.contains_key(model_version)
    }
}
