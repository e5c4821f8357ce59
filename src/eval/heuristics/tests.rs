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
    let remote = RawValue::from_string(r#"{"$ref": "https://example.com/s.json"}"#.into()).unwrap();
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
    let series = ModelSeries::new(&m, "v1", &[], &CHECKS, Label::NAMES);
    h.evaluate("", stop()).observe(&m, &series, "v1");
    h.evaluate("fine answer", stop()).observe(&m, &series, "v1");
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

proptest::proptest! {
    /// The automaton finds exactly what a `contains` per phrase on the normalised text finds,
    /// in ASCII and non-ASCII texts, whatever their case and apostrophes.
    #[test]
    fn phrases_find_what_contains_finds(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "I can't help with", "i CAN’T PROVIDE", "Sorry, I can't", "as an AI language model",
                "Project falcon", "übersecret", "ÜBERSECRET", "plain words ", "é", " ", "can", "'",
            ]),
            0..8,
        )
    ) {
        let text: String = parts.concat();
        let mut terms = default_refusal_phrases();
        terms.extend(["Project Falcon".to_string(), "ÜBERSECRET".to_string(), " ".to_string()]);
        let phrases = Phrases::new(&terms);
        let normalised = normalise(&text);
        let expected: Vec<&str> = phrases
            .phrases
            .iter()
            .filter(|p| normalised.contains(p.as_str()))
            .map(String::as_str)
            .collect();
        proptest::prop_assert_eq!(phrases.found(&text), expected);
    }
}

#[test]
fn an_empty_phrase_list_finds_nothing() {
    let phrases = Phrases::new(&["  ".to_string()]);
    assert!(phrases.is_empty());
    assert!(phrases.found("anything at all").is_empty());
}
