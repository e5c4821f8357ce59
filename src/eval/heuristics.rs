//! Cheap checks run on every successful answer, synchronously on the request path: empty answer,
//! length bounds, forbidden terms, refusal phrases, JSON validity (when JSON was asked for, against
//! the client's schema for `json_schema`, and of every tool call's arguments) and truncation. Each
//! failed check has a severity; the worst one gives the GOOD / WARN / BAD label.
//!
//! Work is bounded whatever the answer's size: phrases are matched as lowercase substrings (no
//! regex; one Aho-Corasick pass for all phrases of a list), refusals only in the opening of the
//! answer, forbidden terms in the first
//! [`FORBIDDEN_SCAN_BYTES`]; JSON is parsed only when the request asked for it or the model called
//! tools, and a schema is compiled once and kept ([`SCHEMA_CACHE_SIZE`] of them).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use serde::Serialize;
use serde_json::value::RawValue;

use super::config::HeuristicsConfig;
use crate::metrics::{Metrics, ModelSeries};
use crate::provider::ToolCall;

/// Compiled `json_schema` validators kept at most; clients send the same few schemas again and
/// again, and compiling one costs far more than validating with it.
pub const SCHEMA_CACHE_SIZE: usize = 256;

/// Refusals open an answer; looking further would flag answers that merely quote one.
pub const REFUSAL_SCAN_CHARS: usize = 400;
/// Forbidden terms are looked for in this much of the answer (1 MiB), so one huge answer cannot
/// stall a request; the `length` check flags such answers anyway.
pub const FORBIDDEN_SCAN_BYTES: usize = 1024 * 1024;

/// Every check, as it appears in the `check` label and the stored results.
pub const CHECKS: [&str; 6] = [
    "empty",
    "length",
    "forbidden_terms",
    "refusal",
    "json_valid",
    "truncated",
];

/// Overall verdict on one answer (lowercase in labels and in the stored column, which
/// `store::record` encodes).
pub use crate::store::record::HeuristicLabel as Label;

/// One failed check: which, how bad, and why (stored in `llm_logs.heuristic_results`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub check: &'static str,
    /// `warn` or `bad`.
    pub result: Label,
    pub reason: String,
}

/// The outcome of every check that ran on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub label: Label,
    /// Checks that ran and passed.
    pub passed: Vec<&'static str>,
    pub failed: Vec<Failure>,
}

impl Outcome {
    /// The failed checks as the JSON array stored with the record (`[]` when none failed).
    pub fn results_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.failed).unwrap_or_else(|_| serde_json::Value::Array(vec![]))
    }

    /// Counts every check that ran (`pass`/`fail`) and the label, for one model version, in its
    /// pre-resolved `series`.
    pub fn observe(&self, metrics: &Metrics, series: &ModelSeries, model_version: &str) {
        for check in &self.passed {
            series.count_check(metrics, model_version, check, true);
        }
        for f in &self.failed {
            series.count_check(metrics, model_version, f.check, false);
        }
        series.count_label(self.label as usize);
    }
}

/// What the checks look at besides the text.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerContext<'a> {
    /// `stop`, `length`, `content_filter`, … as the upstream reported it.
    pub finish_reason: &'a str,
    /// The request asked for a JSON object (`response_format`).
    pub json_requested: bool,
    /// The functions the model called instead of (or besides) answering in text.
    pub tool_calls: &'a [ToolCall],
    /// The schema a `json_schema` answer must satisfy, as the client sent it.
    pub json_schema: Option<&'a RawValue>,
}

/// A compiled schema, or why it could not be compiled (then answers are checked for JSON only).
type CompiledSchema = Result<Arc<jsonschema::Validator>, String>;
/// Compiled schemas by a hash of their text; the text is kept so a hit is exact.
type SchemaCache = HashMap<u64, (Box<str>, CompiledSchema)>;

/// The checks, prepared once from the configuration (phrases lowercased and normalised).
#[derive(Debug, Clone)]
pub struct Heuristics {
    enabled: bool,
    min_chars: usize,
    max_chars: usize,
    forbidden_terms: Phrases,
    refusal_phrases: Phrases,
    schemas: Arc<Mutex<SchemaCache>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Heuristics {
    pub fn new(cfg: &HeuristicsConfig) -> Heuristics {
        Heuristics {
            enabled: cfg.enabled,
            min_chars: cfg.min_chars,
            max_chars: cfg.max_chars,
            forbidden_terms: Phrases::new(&cfg.forbidden_terms),
            refusal_phrases: Phrases::new(&cfg.refusal_phrases),
            schemas: Arc::new(Mutex::new(HashMap::new())),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The validator of a schema text, compiled on first sight.
    fn schema(&self, schema: &RawValue) -> CompiledSchema {
        let text = schema.get();
        let key = self.hasher.hash_one(text);
        let mut cache = self
            .schemas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached, v)) = cache.get(&key) {
            if **cached == *text {
                return v.clone();
            }
        }
        let compiled = serde_json::from_str::<serde_json::Value>(schema.get())
            .map_err(|e| e.to_string())
            .and_then(|v| {
                // Formats are annotations unless asked for, as in OpenAI's structured outputs.
                jsonschema::options()
                    .build(&v)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            });
        if cache.len() >= SCHEMA_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(key, (text.into(), compiled.clone()));
        compiled
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Runs every applicable check on `text`. Length is counted in Unicode scalar values.
    pub fn evaluate(&self, text: &str, ctx: AnswerContext<'_>) -> Outcome {
        let mut passed = Vec::with_capacity(CHECKS.len());
        let mut failed = Vec::new();
        let mut record = |check: &'static str, failure: Option<(Label, String)>| match failure {
            None => passed.push(check),
            Some((result, reason)) => failed.push(Failure {
                check,
                result,
                reason,
            }),
        };

        let trimmed = text.trim();
        let no_text = trimmed.is_empty();
        // A tool call is an answer: the model chose to act instead of (or before) writing.
        let empty = no_text && ctx.tool_calls.is_empty();
        record(
            "empty",
            empty.then(|| {
                (
                    Label::Bad,
                    "the answer is empty or only whitespace".to_string(),
                )
            }),
        );
        // No text fails `empty` or is a tool call; judging its length or wording adds nothing.
        if !no_text {
            record("length", self.length_failure(trimmed));
            if !self.forbidden_terms.is_empty() {
                record("forbidden_terms", self.forbidden_failure(text));
            }
            if !self.refusal_phrases.is_empty() {
                record("refusal", self.refusal_failure(trimmed));
            }
        }
        if ctx.json_requested || !ctx.tool_calls.is_empty() {
            // A tool call with no text is not the JSON document that was asked for; skip it.
            let text_checked = ctx.json_requested && (!no_text || ctx.tool_calls.is_empty());
            let failure = ctx
                .tool_calls
                .iter()
                .find_map(tool_call_failure)
                .or_else(|| {
                    text_checked
                        .then(|| self.json_text_failure(trimmed, ctx.json_schema))
                        .flatten()
                });
            record("json_valid", failure);
        }
        record(
            "truncated",
            (ctx.finish_reason == "length").then(|| {
                (
                    Label::Warn,
                    "the answer was cut off at the token limit (finish_reason length)".to_string(),
                )
            }),
        );
        let label = failed.iter().map(|f| f.result).max().unwrap_or(Label::Good);
        Outcome {
            label,
            passed,
            failed,
        }
    }

    fn length_failure(&self, trimmed: &str) -> Option<(Label, String)> {
        // A char takes 1 to 4 bytes, so the byte length usually settles it without walking the
        // text; otherwise counting stops one past the maximum.
        let bytes = trimmed.len();
        if bytes.div_ceil(4) >= self.min_chars && bytes <= self.max_chars {
            return None;
        }
        let chars = trimmed
            .chars()
            .take(self.max_chars.saturating_add(1))
            .count();
        if chars < self.min_chars {
            return Some((
                Label::Warn,
                format!(
                    "the answer has {chars} characters, fewer than the minimum {}",
                    self.min_chars
                ),
            ));
        }
        if chars > self.max_chars {
            return Some((
                Label::Warn,
                format!(
                    "the answer has more than the maximum {} characters",
                    self.max_chars
                ),
            ));
        }
        None
    }

    fn forbidden_failure(&self, text: &str) -> Option<(Label, String)> {
        let found = self
            .forbidden_terms
            .found(prefix_bytes(text, FORBIDDEN_SCAN_BYTES));
        if found.is_empty() {
            return None;
        }
        Some((
            Label::Bad,
            format!("the answer contains forbidden terms: {}", found.join(", ")),
        ))
    }

    fn refusal_failure(&self, trimmed: &str) -> Option<(Label, String)> {
        self.refusal_phrases
            .found(prefix_chars(trimmed, REFUSAL_SCAN_CHARS))
            .first()
            .map(|p| {
                (
                    Label::Warn,
                    format!("the answer reads as a refusal ({p:?})"),
                )
            })
    }
}

impl Heuristics {
    /// Invalid JSON, or JSON that breaks the requested schema: BAD, as the client's parser fails.
    fn json_text_failure(
        &self,
        trimmed: &str,
        schema: Option<&RawValue>,
    ) -> Option<(Label, String)> {
        let Some(schema) = schema else {
            return json_failure(trimmed);
        };
        let value: serde_json::Value = match serde_json::from_str(trimmed) {
            Ok(v) => v,
            Err(_) => return json_failure(trimmed),
        };
        match self.schema(schema) {
            Ok(validator) => validator.validate(&value).err().map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    "the answer".to_string()
                } else {
                    format!("`{at}`")
                };
                (
                    Label::Bad,
                    format!("the answer does not match the requested JSON schema: {at}: {e}"),
                )
            }),
            // A schema the validator cannot compile (e.g. a remote $ref) is not the answer's fault.
            Err(_) => None,
        }
    }
}

/// A tool call whose arguments are not JSON breaks the client's dispatch: BAD.
fn tool_call_failure(call: &ToolCall) -> Option<(Label, String)> {
    serde_json::from_str::<serde::de::IgnoredAny>(&call.arguments)
        .err()
        .map(|e| {
            (
                Label::Bad,
                format!(
                    "the arguments of the call to `{}` are not valid JSON: {e}",
                    call.name
                ),
            )
        })
}

/// Invalid JSON when JSON was asked for breaks the client's parser: BAD. A code fence around
/// valid JSON is reported as such, since strict clients fail on it too.
fn json_failure(trimmed: &str) -> Option<(Label, String)> {
    match serde_json::from_str::<serde::de::IgnoredAny>(trimmed) {
        Ok(_) => None,
        Err(e) => {
            let reason = if trimmed.starts_with("```") {
                "JSON was requested but the answer is wrapped in a Markdown code fence".to_string()
            } else {
                format!("JSON was requested but the answer is not valid JSON: {e}")
            };
            Some((Label::Bad, reason))
        }
    }
}

/// A list of phrases, trimmed, normalised, sorted and deduplicated, and one automaton that finds
/// them all in a single pass over a text. Matching 17 refusal phrases one `contains` at a time
/// was ~4 % of the gateway's instructions per call (callgrind).
#[derive(Debug, Clone)]
struct Phrases {
    phrases: Vec<String>,
    /// `None` when the list is empty or the automaton could not be built (then nothing matches;
    /// building fails only past limits far above any configured list).
    automaton: Option<AhoCorasick>,
}

impl Phrases {
    fn new(terms: &[String]) -> Phrases {
        let mut phrases: Vec<String> = terms
            .iter()
            .map(|t| normalise(t.trim()))
            .filter(|t| !t.is_empty())
            .collect();
        phrases.sort();
        phrases.dedup();
        // ASCII case folding in the automaton lets an ASCII text be searched as it is; any other
        // text is lowercased first, as the phrases are.
        let automaton = (!phrases.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    // A few hundred states at most: the DFA's table is small, its search loop
                    // the tightest (~2 instructions per byte instead of ~8).
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&phrases)
                    .map_err(
                        |e| tracing::error!(error = %e, "cannot prepare the heuristic phrases"),
                    )
                    .ok()
            })
            .flatten();
        Phrases { phrases, automaton }
    }

    fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }

    /// The phrases `text` contains, case-insensitively and with typographic apostrophes folded,
    /// in the list's (sorted) order.
    fn found(&self, text: &str) -> Vec<&str> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let lowered;
        let text = if text.is_ascii() {
            text
        } else {
            lowered = normalise(text);
            &lowered
        };
        // Answers almost never hold a phrase: one pass that stops at the first, and the list
        // only for the rare answer that does.
        if !automaton.is_match(text) {
            return Vec::new();
        }
        let mut hit = vec![false; self.phrases.len()];
        for m in automaton.find_overlapping_iter(text) {
            hit[m.pattern().as_usize()] = true;
        }
        self.phrases
            .iter()
            .zip(hit)
            .filter_map(|(p, hit)| hit.then_some(p.as_str()))
            .collect()
    }
}

/// Lowercase, with typographic apostrophes folded to `'` so "I can’t" matches "i can't".
fn normalise(s: &str) -> String {
    let lower = s.to_lowercase();
    // The folded apostrophes are not ASCII, and most answers are: `replace` with a set of chars
    // walks and copies the text char by char (~4k instructions per typical answer, callgrind),
    // where `is_ascii` is a word-at-a-time scan.
    if lower.is_ascii() {
        return lower;
    }
    lower.replace(['\u{2019}', '\u{2018}', '\u{02bc}'], "'")
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn prefix_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `max` chars of `s`.
fn prefix_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Phrases that open a refusal, matched case-insensitively at the start of an answer.
pub fn default_refusal_phrases() -> Vec<String> {
    [
        "i can't help with",
        "i cannot help with",
        "i can't assist with",
        "i cannot assist with",
        "i'm unable to help",
        "i am unable to help",
        "i'm not able to help",
        "i can't provide",
        "i cannot provide",
        "i can't comply",
        "i cannot comply",
        "i won't be able to help",
        "i must decline",
        "as an ai language model",
        "i'm sorry, but i can't",
        "i'm sorry, but i cannot",
        "sorry, i can't",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests;
