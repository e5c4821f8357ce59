//! Cheap checks run on every successful answer, synchronously on the request path: empty answer,
//! length bounds, forbidden terms, refusal phrases, JSON validity (when JSON was asked for, against
//! the client's schema for `json_schema`, and of every tool call's arguments) and truncation. Each
//! failed check has a severity; the worst one gives the GOOD / WARN / BAD label.
//!
//! Work is bounded whatever the answer's size: phrases are matched as lowercase substrings (no
//! regex), refusals only in the opening of the answer, forbidden terms in the first
//! [`FORBIDDEN_SCAN_BYTES`]; JSON is parsed only when the request asked for it or the model called
//! tools, and a schema is compiled once and kept ([`SCHEMA_CACHE_SIZE`] of them).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;

use super::config::HeuristicsConfig;
use crate::metrics::Metrics;
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

    /// Counts every check that ran (`pass`/`fail`) and the label, for one model version.
    pub fn observe(&self, metrics: &Metrics, model_version: &str) {
        for check in &self.passed {
            metrics
                .heuristic_checks
                .with_label_values(&[model_version, check, "pass"])
                .inc();
        }
        for f in &self.failed {
            metrics
                .heuristic_checks
                .with_label_values(&[model_version, f.check, "fail"])
                .inc();
        }
        metrics
            .heuristic_labels
            .with_label_values(&[model_version, self.label.as_str()])
            .inc();
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
    forbidden_terms: Vec<String>,
    refusal_phrases: Vec<String>,
    schemas: Arc<Mutex<SchemaCache>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Heuristics {
    pub fn new(cfg: &HeuristicsConfig) -> Heuristics {
        let prepare = |terms: &[String]| -> Vec<String> {
            let mut out: Vec<String> = terms
                .iter()
                .map(|t| normalise(t.trim()))
                .filter(|t| !t.is_empty())
                .collect();
            out.sort();
            out.dedup();
            out
        };
        Heuristics {
            enabled: cfg.enabled,
            min_chars: cfg.min_chars,
            max_chars: cfg.max_chars,
            forbidden_terms: prepare(&cfg.forbidden_terms),
            refusal_phrases: prepare(&cfg.refusal_phrases),
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
        let scanned = normalise(prefix_bytes(text, FORBIDDEN_SCAN_BYTES));
        let found: Vec<&str> = self
            .forbidden_terms
            .iter()
            .filter(|t| scanned.contains(t.as_str()))
            .map(String::as_str)
            .collect();
        if found.is_empty() {
            return None;
        }
        Some((
            Label::Bad,
            format!("the answer contains forbidden terms: {}", found.join(", ")),
        ))
    }

    fn refusal_failure(&self, trimmed: &str) -> Option<(Label, String)> {
        let opening = normalise(prefix_chars(trimmed, REFUSAL_SCAN_CHARS));
        self.refusal_phrases
            .iter()
            .find(|p| opening.contains(p.as_str()))
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
mod tests {
    use super::*;

    fn cfg() -> HeuristicsConfig {
        HeuristicsConfig {
            forbidden_terms: vec!["Project Falcon".into(), "  ".into(), "ÜBERSECRET".into()],
            ..HeuristicsConfig::default()
        }
    }

    fn stop() -> AnswerContext<'static> {
        AnswerContext {
            finish_reason: "stop",
            ..AnswerContext::default()
        }
    }

    fn failed_checks(o: &Outcome) -> Vec<&'static str> {
        o.failed.iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_plain_good_answer_passes_every_check() {
        let h = Heuristics::new(&cfg());
        let o = h.evaluate("Paris is the capital of France.", stop());
        assert_eq!(o.label, Label::Good);
        assert!(o.failed.is_empty());
        assert_eq!(
            o.passed,
            vec!["empty", "length", "forbidden_terms", "refusal", "truncated"]
        );
        assert_eq!(o.results_json(), serde_json::json!([]));
    }

    #[test]
    fn empty_and_whitespace_answers_are_bad_and_skip_wording_checks() {
        let h = Heuristics::new(&cfg());
        for text in ["", "   ", "\n\t \u{3000}"] {
            let o = h.evaluate(text, stop());
            assert_eq!(o.label, Label::Bad, "{text:?}");
            assert_eq!(failed_checks(&o), vec!["empty"]);
            assert_eq!(o.passed, vec!["truncated"]);
        }
    }

    #[test]
    fn length_bounds_count_characters_not_bytes() {
        let h = Heuristics::new(&HeuristicsConfig {
            min_chars: 3,
            max_chars: 5,
            ..HeuristicsConfig::default()
        });
        // 5 chars, 20 bytes: within bounds although the byte length is not.
        assert_eq!(h.evaluate("🚀🚀🚀🚀🚀", stop()).label, Label::Good);
        let o = h.evaluate("🚀🚀🚀🚀🚀🚀", stop());
        assert_eq!(failed_checks(&o), vec!["length"]);
        assert_eq!(o.label, Label::Warn);
        assert!(
            o.failed[0].reason.contains("more than the maximum 5"),
            "{o:?}"
        );
        let o = h.evaluate("ok", stop());
        assert_eq!(failed_checks(&o), vec!["length"]);
        assert!(o.failed[0].reason.contains("fewer than the minimum 3"));
        // 8 bytes but 2 chars: the byte length alone must not pass it.
        let o = h.evaluate("🚀🚀", stop());
        assert_eq!(failed_checks(&o), vec!["length"]);
        assert!(o.failed[0].reason.contains("has 2 characters"), "{o:?}");
        // Surrounding whitespace does not count.
        assert_eq!(h.evaluate("   abc   ", stop()).label, Label::Good);
    }

    #[test]
    fn forbidden_terms_match_case_insensitively_including_unicode() {
        let h = Heuristics::new(&cfg());
        let o = h.evaluate("The plan is called PROJECT falcon, do not share.", stop());
        assert_eq!(o.label, Label::Bad);
        assert_eq!(failed_checks(&o), vec!["forbidden_terms"]);
        assert!(o.failed[0].reason.contains("project falcon"));
        let o = h.evaluate("Das ist übersecret.", stop());
        assert_eq!(failed_checks(&o), vec!["forbidden_terms"]);
        // A blank configured term never matches everything.
        assert_eq!(h.evaluate("nothing to see", stop()).label, Label::Good);
    }

    #[test]
    fn forbidden_terms_are_found_deep_in_long_answers_but_scanning_is_bounded() {
        let h = Heuristics::new(&HeuristicsConfig {
            max_chars: usize::MAX,
            ..cfg()
        });
        let mut text = "é".repeat(200_000);
        text.push_str(" project falcon ");
        assert_eq!(
            failed_checks(&h.evaluate(&text, stop())),
            vec!["forbidden_terms"]
        );
        let mut beyond = "a".repeat(FORBIDDEN_SCAN_BYTES + 1);
        beyond.push_str("project falcon");
        assert_eq!(h.evaluate(&beyond, stop()).label, Label::Good);
        // A multi-byte char straddling the scan limit does not panic.
        let straddle = format!("{}é{}", "a".repeat(FORBIDDEN_SCAN_BYTES - 1), "b");
        assert_eq!(h.evaluate(&straddle, stop()).label, Label::Good);
    }

    #[test]
    fn very_long_answers_fail_the_length_check_quickly() {
        let h = Heuristics::new(&HeuristicsConfig::default());
        let text = "word ".repeat(2_000_000);
        let started = std::time::Instant::now();
        let o = h.evaluate(&text, stop());
        assert_eq!(failed_checks(&o), vec!["length"]);
        // Generous even for an unoptimised build on a busy machine: the point is "not quadratic".
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn refusals_are_found_in_the_opening_with_curly_apostrophes() {
        let h = Heuristics::new(&cfg());
        let o = h.evaluate("I’m sorry, but I can’t help with that request.", stop());
        assert_eq!(o.label, Label::Warn);
        assert_eq!(failed_checks(&o), vec!["refusal"]);
        let o = h.evaluate("AS AN AI LANGUAGE MODEL, I have no opinions.", stop());
        assert_eq!(failed_checks(&o), vec!["refusal"]);
        // ASCII text takes the short way; the fold still applies beside other non-ASCII text.
        assert_eq!(normalise("I CAN'T"), "i can't");
        assert_eq!(normalise("Ünd I CAN‘T ʼ"), "ünd i can't '");
        // Quoted deep inside a long answer it is not a refusal.
        let late = format!(
            "{} he said \"I can't help with that\".",
            "Story. ".repeat(100)
        );
        assert_eq!(h.evaluate(&late, stop()).label, Label::Good);
        // An empty phrase list switches the check off.
        let off = Heuristics::new(&HeuristicsConfig {
            refusal_phrases: vec![],
            ..HeuristicsConfig::default()
        });
        let o = off.evaluate("I can't help with that.", stop());
        assert_eq!(o.label, Label::Good);
        assert!(!o.passed.contains(&"refusal"));
    }

    #[test]
    fn json_validity_is_checked_only_when_requested() {
        let h = Heuristics::new(&cfg());
        let json = AnswerContext {
            finish_reason: "stop",
            json_requested: true,
            ..AnswerContext::default()
        };
        assert_eq!(
            h.evaluate(r#"{"a": [1, "ü", null]}"#, json).label,
            Label::Good
        );
        assert!(h
            .evaluate(r#" {"a": 1} "#, json)
            .passed
            .contains(&"json_valid"));
        for bad in [
            r#"{"a": 1"#,
            r#"{"a": 1} trailing"#,
            "not json at all",
            r#"{'single': 'quotes'}"#,
            "{\"a\": \"\u{0}\"",
        ] {
            let o = h.evaluate(bad, json);
            assert_eq!(failed_checks(&o), vec!["json_valid"], "{bad:?}");
            assert_eq!(o.label, Label::Bad);
        }
        let o = h.evaluate("```json\n{\"a\": 1}\n```", json);
        assert!(o.failed[0].reason.contains("code fence"), "{o:?}");
        // Deep nesting is walked without recursion: valid when balanced, never a stack overflow.
        let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert_eq!(h.evaluate(&deep, json).label, Label::Good);
        let unbalanced = format!("{}{}", "[".repeat(5_000), "]".repeat(4_999));
        assert_eq!(
            failed_checks(&h.evaluate(&unbalanced, json)),
            vec!["json_valid"]
        );
        // Not requested: prose is fine.
        assert_eq!(h.evaluate("not json at all", stop()).label, Label::Good);
        // Empty answer when JSON was asked for: both empty and invalid JSON.
        assert_eq!(
            failed_checks(&h.evaluate("", json)),
            vec!["empty", "json_valid"]
        );
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn a_tool_call_answer_is_not_empty_and_its_arguments_must_be_json() {
        let h = Heuristics::new(&cfg());
        let calls = [call("weather", r#"{"city": "Lima"}"#)];
        let ctx = AnswerContext {
            finish_reason: "tool_calls",
            tool_calls: &calls,
            ..AnswerContext::default()
        };
        let o = h.evaluate("", ctx);
        assert_eq!(o.label, Label::Good, "{o:?}");
        assert_eq!(o.passed, vec!["empty", "json_valid", "truncated"]);
        let broken = [call("weather", r#"{"city": "Li"#)];
        let o = h.evaluate(
            "",
            AnswerContext {
                tool_calls: &broken,
                ..ctx
            },
        );
        assert_eq!(failed_checks(&o), vec!["json_valid"]);
        assert!(o.failed[0].reason.contains("`weather`"), "{o:?}");
        // JSON mode with a tool call and no text: the text is not what was asked for.
        let o = h.evaluate(
            "",
            AnswerContext {
                json_requested: true,
                ..ctx
            },
        );
        assert_eq!(o.label, Label::Good, "{o:?}");
    }

    #[test]
    fn json_schema_answers_are_validated_against_the_schema() {
        let h = Heuristics::new(&cfg());
        let schema = RawValue::from_string(
            r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0}},
               "required":["name","age"],"additionalProperties":false}"#
                .into(),
        )
        .unwrap();
        let ctx = AnswerContext {
            finish_reason: "stop",
            json_requested: true,
            json_schema: Some(&schema),
            ..AnswerContext::default()
        };
        assert_eq!(
            h.evaluate(r#"{"name": "Ada", "age": 36}"#, ctx).label,
            Label::Good
        );
        for (bad, at) in [
            (r#"{"name": "Ada"}"#, "the answer"),
            (r#"{"name": "Ada", "age": -1}"#, "`/age`"),
            (r#"{"name": "Ada", "age": 1, "x": 2}"#, "the answer"),
        ] {
            let o = h.evaluate(bad, ctx);
            assert_eq!(failed_checks(&o), vec!["json_valid"], "{bad}");
            assert!(
                o.failed[0].reason.contains("schema") && o.failed[0].reason.contains(at),
                "{o:?}"
            );
        }
        assert!(h.evaluate("not json", ctx).failed[0]
            .reason
            .contains("not valid JSON"));
        // A schema that cannot be compiled (remote refs are never fetched) only checks JSON.
        let remote =
            RawValue::from_string(r#"{"$ref": "https://example.com/s.json"}"#.into()).unwrap();
        let o = h.evaluate(
            "{}",
            AnswerContext {
                json_schema: Some(&remote),
                ..ctx
            },
        );
        assert_eq!(o.label, Label::Good, "{o:?}");
        assert_eq!(
            h.schemas.lock().unwrap().len(),
            2,
            "each schema compiled once"
        );
    }

    #[test]
    fn truncation_is_a_warning_and_the_worst_failure_wins() {
        let h = Heuristics::new(&cfg());
        let length = AnswerContext {
            finish_reason: "length",
            ..AnswerContext::default()
        };
        let o = h.evaluate("A perfectly fine but cut", length);
        assert_eq!(o.label, Label::Warn);
        assert_eq!(failed_checks(&o), vec!["truncated"]);
        let o = h.evaluate("project falcon, and then", length);
        assert_eq!(o.label, Label::Bad);
        assert_eq!(failed_checks(&o), vec!["forbidden_terms", "truncated"]);
        assert_eq!(
            o.results_json(),
            serde_json::json!([
                {"check": "forbidden_terms", "result": "bad", "reason": "the answer contains forbidden terms: project falcon"},
                {"check": "truncated", "result": "warn", "reason": "the answer was cut off at the token limit (finish_reason length)"},
            ])
        );
    }

    #[test]
    fn observe_counts_checks_and_the_label() {
        let m = Metrics::new();
        let h = Heuristics::new(&cfg());
        h.evaluate("", stop()).observe(&m, "v1");
        h.evaluate("fine answer", stop()).observe(&m, "v1");
        let get = |check: &str, result: &str| {
            m.heuristic_checks
                .with_label_values(&["v1", check, result])
                .get()
        };
        assert_eq!(get("empty", "fail"), 1);
        assert_eq!(get("empty", "pass"), 1);
        assert_eq!(get("truncated", "pass"), 2);
        assert_eq!(get("length", "pass"), 1);
        assert_eq!(
            m.heuristic_labels.with_label_values(&["v1", "bad"]).get(),
            1
        );
        assert_eq!(
            m.heuristic_labels.with_label_values(&["v1", "good"]).get(),
            1
        );
    }

    #[test]
    fn evaluation_of_a_typical_answer_takes_microseconds() {
        let h = Heuristics::new(&cfg());
        let text = "Paris is the capital of France. ".repeat(60);
        let ctx = AnswerContext {
            finish_reason: "stop",
            ..AnswerContext::default()
        };
        let n = 2_000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(h.evaluate(std::hint::black_box(&text), ctx));
        }
        let per_call = started.elapsed() / n;
        eprintln!(
            "heuristics on a {} byte answer: {per_call:?} per call",
            text.len()
        );
        assert!(
            per_call < std::time::Duration::from_millis(1),
            "{per_call:?}"
        );
    }
}
