//! The built-in deterministic mock model, used when no API key is configured, plus the answer text,
//! answer shapes (`shapes`) and `[mock:…]` test triggers it shares with the standalone mock
//! upstream server (`mock_upstream`).

pub mod schema;
pub mod shapes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;

use super::wire::{sse_frame, DONE_FRAME};
use super::{
    Api, ChatMessage, Completion, CompletionRequest, CompletionStream, Embeddings,
    EmbeddingsRequest, Provider, ProviderError, RetryPolicy, StreamEnd, StreamEvent,
};
use shapes::{MockAnswer, MockRequest};

/// Words in an answer unless the request's `max_tokens` asks for fewer.
pub const DEFAULT_OUTPUT_WORDS: usize = 32;

/// How much of the prompt the answer quotes.
const PROMPT_QUOTE_CHARS: usize = 80;

/// Filler for answers longer than the quoted prompt; picked by a hash of the prompt so different
/// prompts get different (but repeatable) answers.
const FILLER: &[&str] = &[
    "latency", "quality", "tokens", "model", "gateway", "answer", "metrics", "cost", "prompt",
    "judge", "score", "stream", "request", "version", "record", "budget", "signal", "trace",
    "sample", "window", "label", "alert", "batch", "replica", "cache", "result", "context",
    "review", "feedback", "baseline", "rollout", "observer",
];

/// The deterministic answer to `prompt`: `"This is a mock answer to: <first 80 chars>. "` followed by
/// filler, exactly `words` whitespace-separated words long (the quote is cut when `words` is small).
pub fn answer_text(prompt: &str, words: usize) -> String {
    answer_text_variant(prompt, words, 0)
}

/// [`answer_text`] with another filler for each `variant` (the mock's `n` choices differ).
pub fn answer_text_variant(prompt: &str, words: usize, variant: u32) -> String {
    let quoted: String = prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(PROMPT_QUOTE_CHARS)
        .collect();
    let head = if variant == 0 {
        format!("This is a mock answer to: {quoted}.")
    } else {
        format!("This is mock answer {} to: {quoted}.", variant + 1)
    };
    let seed = fnv1a(prompt.as_bytes()).wrapping_add(u64::from(variant) * 7);
    let filler =
        (0..).map(|i: u64| FILLER[((seed.wrapping_add(i)) % FILLER.len() as u64) as usize]);
    head.split_whitespace()
        .chain(filler)
        .take(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` wrapped as a JSON object, for requests that asked for JSON output.
pub fn json_answer(text: &str) -> String {
    serde_json::json!({ "answer": text, "mock": true }).to_string()
}

/// Opens the LLM judge's rubric (see `eval::judge`). A request whose system message carries it is a
/// judge call: the mock then answers a judge-shaped JSON verdict instead of its usual text, and
/// only `[mock:judge_…]` triggers apply (the judged prompt's own triggers are data, not switches).
pub const JUDGE_MARKER: &str = "[lqo:judge-rubric]";
/// The rubric line naming the criteria to score, e.g. `Criteria: overall, truthfulness`.
pub const JUDGE_CRITERIA_PREFIX: &str = "Criteria:";

/// True when `messages` are an LLM-judge rubric call.
pub fn is_judge_request(messages: &[ChatMessage]) -> bool {
    messages
        .iter()
        .any(|m| m.role == "system" && m.content.contains(JUDGE_MARKER))
}

/// The mock judge's reply: deterministic scores 3–5 per criterion derived from the judged text
/// (or all `[mock:judge_score=N]`), as `{"scores": {...}, "rationale": "..."}`.
/// `[mock:judge_malformed]` answers prose without JSON every time, `[mock:judge_malformed_once]`
/// only until the conversation holds an earlier (refused) assistant reply, and
/// `[mock:judge_fenced]` wraps the JSON in a Markdown fence with prose around it.
pub fn judge_answer(messages: &[ChatMessage], triggers: &Triggers) -> String {
    let retried = messages.iter().any(|m| m.role == "assistant");
    if triggers.judge_malformed || (triggers.judge_malformed_once && !retried) {
        return "I would rate this answer fairly well, maybe a four out of five overall.".into();
    }
    let criteria: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .flat_map(|m| m.content.lines())
        .find_map(|l| l.trim().strip_prefix(JUDGE_CRITERIA_PREFIX))
        .map(|rest| {
            rest.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec!["overall"]);
    let material = judged_text(messages);
    let mut scores = serde_json::Map::new();
    for c in criteria {
        let score = triggers.judge_score.map_or_else(
            || 3 + fnv1a(format!("{c}\n{material}").as_bytes()) % 3,
            u64::from,
        );
        scores.insert(c.to_string(), serde_json::json!(score));
    }
    let verdict = serde_json::json!({
        "scores": scores,
        "rationale": "Mock judge: deterministic scores derived from the judged text.",
    })
    .to_string();
    if triggers.judge_fenced {
        format!("Here is my evaluation:\n\n```json\n{verdict}\n```\n\nLet me know if you need more detail.")
    } else {
        verdict
    }
}

/// In a judge call, the first user message: the prompt and answer being judged (a retry appends
/// more messages after it).
fn judged_text(messages: &[ChatMessage]) -> &str {
    messages
        .iter()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// The text of the last `user` message (the triggers and the quoted prompt come from it), or of the
/// last message when there is no user message.
pub fn last_user_text(messages: &[ChatMessage]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .or_else(|| messages.last())
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// Deterministic test switches written into the prompt, e.g. `[mock:status=429]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    /// `[mock:status=NNN]`: answer with this HTTP status (only 400–599 count).
    pub status: Option<u16>,
    /// `[mock:delay_ms=N]`: wait this long before anything else.
    pub delay_ms: Option<u64>,
    /// `[mock:fail_first=N]`: the first N attempts with the same text fail with 503.
    pub fail_first: Option<u32>,
    /// `[mock:truncate]`: stop early with finish_reason `length`.
    pub truncate: bool,
    /// `[mock:stream_error]`: break the stream after a couple of chunks.
    pub stream_error: bool,
    /// `[mock:cached_tokens=N]`: report N of the prompt tokens as cached (capped at the prompt).
    pub cached_tokens: Option<u64>,
    /// `[mock:bad_json]`: when JSON output was requested, answer text that is not JSON.
    pub bad_json: bool,
    /// `[mock:no_usage]`: report no usage, as some compatible servers do (the gateway then counts
    /// tokens itself).
    pub no_usage: bool,
    /// `[mock:parallel_tools]`: call every offered tool at once (unless `parallel_tool_calls`
    /// is false), not just the first.
    pub parallel_tools: bool,
    /// Judge calls only (see [`judge_answer`]): `[mock:judge_malformed]`.
    pub judge_malformed: bool,
    /// Judge calls only: `[mock:judge_malformed_once]`.
    pub judge_malformed_once: bool,
    /// Judge calls only: `[mock:judge_fenced]`.
    pub judge_fenced: bool,
    /// Judge calls only: `[mock:judge_score=N]` (1–5; others ignored).
    pub judge_score: Option<u8>,
}

impl Triggers {
    /// Reads every `[mock:key]` / `[mock:key=value]` in `text`; unknown keys and bad values are
    /// ignored, so a prompt can never make the mock fail in an unplanned way.
    pub fn parse(text: &str) -> Triggers {
        Self::parse_keys(text, false)
    }

    /// The triggers of a request. For a judge call (see [`is_judge_request`]) they are read from
    /// the judged material and only `judge_…` keys count, with `judge_status` and
    /// `judge_delay_ms` acting as `status` and `delay_ms`.
    pub fn for_messages(messages: &[ChatMessage]) -> Triggers {
        if is_judge_request(messages) {
            Self::parse_keys(judged_text(messages), true)
        } else {
            Self::parse_keys(last_user_text(messages), false)
        }
    }

    fn parse_keys(text: &str, judge: bool) -> Triggers {
        let mut t = Triggers::default();
        let mut rest = text;
        while let Some(start) = rest.find("[mock:") {
            rest = &rest[start + "[mock:".len()..];
            let Some(end) = rest.find(']') else { break };
            let body = &rest[..end];
            rest = &rest[end + 1..];
            let (key, value) = match body.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (body.trim(), None),
            };
            let key = match (judge, key.strip_prefix("judge_")) {
                (true, Some(k @ ("status" | "delay_ms"))) => k,
                (true, Some(_)) => key,
                (true, None) | (false, Some(_)) => continue,
                (false, None) => key,
            };
            match (key, value) {
                ("judge_malformed", _) => t.judge_malformed = true,
                ("judge_malformed_once", _) => t.judge_malformed_once = true,
                ("judge_fenced", _) => t.judge_fenced = true,
                ("judge_score", Some(v)) => {
                    t.judge_score = v.parse().ok().filter(|s| (1..=5).contains(s));
                }
                ("bad_json", _) => t.bad_json = true,
                ("parallel_tools", _) => t.parallel_tools = true,
                ("no_usage", _) => t.no_usage = true,
                ("status", Some(v)) => {
                    t.status = v.parse().ok().filter(|s| (400..=599).contains(s));
                }
                ("delay_ms", Some(v)) => t.delay_ms = v.parse().ok(),
                ("fail_first", Some(v)) => t.fail_first = v.parse().ok(),
                ("cached_tokens", Some(v)) => t.cached_tokens = v.parse().ok(),
                ("truncate", _) => t.truncate = true,
                ("stream_error", _) => t.stream_error = true,
                _ => {}
            }
        }
        t
    }
}

/// Words to answer with and the finish reason: `max_tokens` below the configured length, or the
/// truncate trigger, cut the answer short with `length`, as a real model hitting its limit would.
pub fn plan_length(
    output_words: usize,
    max_tokens: Option<u32>,
    truncate: bool,
) -> (usize, &'static str) {
    let mut words = output_words;
    let mut finish = "stop";
    if let Some(max) = max_tokens {
        let max = max as usize;
        if max < words {
            words = max;
            finish = "length";
        }
    }
    if truncate {
        words = (words / 2).max(1).min(words);
        finish = "length";
    }
    (words, finish)
}

/// The mock's answer to a request: text and finish reason.
pub fn answer_for(
    messages: &[ChatMessage],
    output_words: usize,
    max_tokens: Option<u32>,
    json_mode: bool,
) -> (String, &'static str) {
    answer_for_variant(messages, output_words, max_tokens, json_mode, 0)
}

/// [`answer_for`] for one of several choices.
pub fn answer_for_variant(
    messages: &[ChatMessage],
    output_words: usize,
    max_tokens: Option<u32>,
    json_mode: bool,
    variant: u32,
) -> (String, &'static str) {
    let triggers = Triggers::for_messages(messages);
    if is_judge_request(messages) {
        return (judge_answer(messages, &triggers), "stop");
    }
    let prompt = last_user_text(messages);
    let (words, finish) = plan_length(output_words, max_tokens, triggers.truncate);
    let text = answer_text_variant(prompt, words, variant);
    let text = if json_mode && !triggers.bad_json {
        json_answer(&text)
    } else {
        text
    };
    (text, finish)
}

/// Splits an answer into stream deltas of `words_per_delta` words that concatenate back to it.
pub fn word_deltas(text: &str, words_per_delta: usize) -> Vec<String> {
    let words_per_delta = words_per_delta.max(1);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            current.push(' ');
        }
        current.push_str(word);
        count += 1;
        if count == words_per_delta {
            out.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// OpenAI-ish error type for a status, used in mock error bodies and messages.
pub fn error_type_for(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("not_found_error", "model_not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "overloaded"),
        s if s >= 500 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "mock_error"),
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `[mock:stream_error]` breaks a stream after this many content events.
pub const CHUNKS_BEFORE_STREAM_ERROR: usize = 2;

/// The in-process mock model: answers in the client's API (tools, `n`, log probabilities,
/// schema-shaped JSON, embeddings; see `shapes`) with usage counted by tiktoken, as
/// `lqo mock-upstream` does.
#[derive(Debug)]
pub struct MockProvider {
    latency: Duration,
    output_words: usize,
    /// Numbers answers, for their ids.
    seq: AtomicU64,
}

impl MockProvider {
    pub fn new(latency_ms: u64) -> Self {
        MockProvider {
            latency: Duration::from_millis(latency_ms),
            output_words: DEFAULT_OUTPUT_WORDS,
            seq: AtomicU64::new(0),
        }
    }

    /// Answers with `words` words instead of [`DEFAULT_OUTPUT_WORDS`].
    pub fn with_output_words(mut self, words: usize) -> Self {
        self.output_words = words;
        self
    }

    /// Applies the delay and status triggers shared by both call styles.
    async fn before_answer(&self, triggers: &Triggers) -> Result<(), ProviderError> {
        if let Some(ms) = triggers.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = triggers.status {
            let (kind, _) = error_type_for(status);
            return Err(ProviderError::status(
                status,
                format!("mock {kind} requested by the prompt"),
            ));
        }
        Ok(())
    }

    /// The request as the mock reads it, and the answer.
    fn plan(&self, req: &CompletionRequest) -> Result<(MockRequest, MockAnswer), ProviderError> {
        let mreq = match &req.client {
            Some(c) => {
                let mut m = MockRequest::parse(c.api, c.body.bytes())
                    .map_err(|message| ProviderError::status(400, message))?;
                m.model = req.model.clone();
                m
            }
            None => MockRequest::plain(
                &req.model,
                req.messages.clone(),
                req.max_tokens,
                req.json_mode,
            ),
        };
        let triggers = Triggers::for_messages(&mreq.messages);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let answer = shapes::answer(&mreq, self.output_words, &triggers, seq);
        Ok((mreq, answer))
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn kind(&self) -> &'static str {
        "mock"
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::none()
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let triggers = Triggers::for_messages(&req.messages);
        self.before_answer(&triggers).await?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let (mreq, answer) = self.plan(req)?;
        let body = req.client.as_ref().map(|c| {
            let v = match c.api {
                Api::Chat => shapes::chat_completion(&answer),
                Api::Responses => shapes::response_object(&answer, &mreq, true),
            };
            bytes::Bytes::from(v.to_string())
        });
        let first = answer.first();
        Ok(Completion {
            text: first.text.clone(),
            finish_reason: first.finish_reason.to_string(),
            usage: answer.reported_usage(),
            upstream_model: req.model.clone(),
            tool_calls: first.tool_calls.clone(),
            body,
        })
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let triggers = Triggers::for_messages(&req.messages);
        self.before_answer(&triggers).await?;
        let (mreq, answer) = self.plan(req)?;
        let include_usage = req.client.as_ref().is_some_and(|c| c.include_usage);
        let (frames, trailer) = match req.api() {
            Api::Chat => (
                shapes::chat_chunks(&answer, include_usage, 4),
                bytes::Bytes::from_static(DONE_FRAME),
            ),
            Api::Responses => {
                let (frames, last) = shapes::response_events(&answer, &mreq);
                let trailer = sse_frame(last.event, &last.data);
                (frames, trailer)
            }
        };
        let first = answer.first().clone();
        let end = StreamEnd {
            finish_reason: first.finish_reason.to_string(),
            usage: answer.reported_usage(),
            tool_calls: first.tool_calls,
            upstream_model: Some(req.model.clone()),
            trailer,
        };
        let latency = self.latency;
        let stream = async_stream::stream! {
            // The latency stands for time to first token, so it comes after the stream is open.
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut content_events = 0;
            for f in frames {
                if f.content {
                    if triggers.stream_error && content_events == CHUNKS_BEFORE_STREAM_ERROR {
                        yield Err(ProviderError::StreamInterrupted("mock stream broken by [mock:stream_error]".into()));
                        return;
                    }
                    content_events += 1;
                }
                yield Ok(StreamEvent::Chunk { frame: sse_frame(f.event, &f.data), text: f.text, content: f.content });
                // Lets the consumer observe events one by one, like a real stream.
                tokio::task::yield_now().await;
            }
            yield Ok(StreamEvent::Done(end));
        };
        Ok(stream.boxed())
    }

    async fn embed(&self, req: &EmbeddingsRequest) -> Result<Embeddings, ProviderError> {
        let text = req.inputs.join("\n");
        let triggers = Triggers::parse(&text);
        self.before_answer(&triggers).await?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let options: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(req.body.bytes()).unwrap_or_default();
        let (dimensions, base64) =
            shapes::embedding_options(&options).map_err(|m| ProviderError::status(400, m))?;
        let list = shapes::embeddings_list(&req.inputs, &req.model, dimensions, base64);
        let tokens = list["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        Ok(Embeddings {
            body: bytes::Bytes::from(list.to_string()),
            usage: Some(super::Usage {
                input_tokens: tokens,
                cached_input_tokens: 0,
                output_tokens: 0,
            }),
            upstream_model: req.model.clone(),
            count: req.inputs.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(prompt: &str) -> CompletionRequest {
        CompletionRequest {
            model: "mock-1".into(),
            messages: vec![
                ChatMessage {
                    role: "system".into(),
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: prompt.into(),
                },
            ],
            ..CompletionRequest::default()
        }
    }

    #[test]
    fn answer_is_deterministic_and_has_the_requested_word_count() {
        let a = answer_text("What is the capital of France?", 32);
        assert_eq!(a, answer_text("What is the capital of France?", 32));
        assert!(a.starts_with("This is a mock answer to: What is the capital of France?."));
        assert_eq!(a.split_whitespace().count(), 32);
        assert_eq!(answer_text("x", 3), "This is a");
        assert_eq!(answer_text("x", 0), "");
        assert_ne!(answer_text("a", 20), answer_text("b", 20));
        let long = "word ".repeat(100);
        assert!(answer_text(&long, 200).len() < 200 * 12);
    }

    #[test]
    fn triggers_are_parsed_and_bad_ones_ignored() {
        let t = Triggers::parse(
            "hi [mock:status=429] [mock:delay_ms=15][mock:fail_first=2] [mock:truncate] [mock:stream_error] [mock:cached_tokens=7]",
        );
        assert_eq!(t.status, Some(429));
        assert_eq!(t.delay_ms, Some(15));
        assert_eq!(t.fail_first, Some(2));
        assert!(t.truncate && t.stream_error);
        assert_eq!(t.cached_tokens, Some(7));
        let bad = Triggers::parse(
            "[mock:status=200] [mock:status=abc] [mock:delay_ms=-1] [mock:nope] [mock:status=5",
        );
        assert_eq!(bad, Triggers::default());
    }

    #[test]
    fn deltas_concatenate_to_the_answer() {
        let text = answer_text("streaming please", 13);
        let deltas = word_deltas(&text, 4);
        assert_eq!(deltas.len(), 4);
        assert_eq!(deltas.concat(), text);
    }

    #[tokio::test]
    async fn completes_with_model_echo_and_counted_usage() {
        let c = MockProvider::new(0)
            .complete(&req("Hello there"))
            .await
            .unwrap();
        assert!(c.text.contains("Hello there"));
        assert_eq!(c.finish_reason, "stop");
        let usage = c.usage.unwrap();
        assert_eq!(usage.output_tokens, crate::tokens::count_tokens(&c.text));
        assert_eq!(
            usage.input_tokens,
            crate::tokens::count_message_tokens(&req("Hello there").messages)
        );
        assert_eq!(c.upstream_model, "mock-1");
        assert!(c.body.is_none());
        let quiet = MockProvider::new(0)
            .complete(&req("Hello there [mock:no_usage]"))
            .await
            .unwrap();
        assert!(quiet.usage.is_none());
    }

    #[tokio::test]
    async fn a_client_body_is_answered_in_its_api() {
        use crate::provider::wire::JsonBody;
        let body = serde_json::json!({"messages": [{"role": "user", "content": "Weather?"}],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}], "n": 2});
        let mut r = req("Weather?");
        r.client = Some(std::sync::Arc::new(crate::provider::ClientRequest {
            api: Api::Chat,
            body: JsonBody::parse(bytes::Bytes::from(body.to_string())).unwrap(),
            stream: false,
            include_usage: false,
        }));
        let c = MockProvider::new(0).complete(&r).await.unwrap();
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(c.tool_calls[0].name, "weather");
        let v: serde_json::Value = serde_json::from_slice(c.body.as_ref().unwrap()).unwrap();
        assert_eq!(v["choices"].as_array().unwrap().len(), 2);
        assert_eq!(v["model"], "mock-1");
    }

    #[tokio::test]
    async fn json_mode_answers_a_json_object() {
        let mut r = req("give me json");
        r.json_mode = true;
        let c = MockProvider::new(0).complete(&r).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&c.text).unwrap();
        assert!(v["answer"].as_str().unwrap().contains("give me json"));
    }

    #[tokio::test]
    async fn status_trigger_is_a_status_error() {
        let err = MockProvider::new(0)
            .complete(&req("boom [mock:status=503]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 503, .. }),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn truncate_and_max_tokens_finish_with_length() {
        let c = MockProvider::new(0)
            .complete(&req("cut [mock:truncate]"))
            .await
            .unwrap();
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.text.split_whitespace().count(), DEFAULT_OUTPUT_WORDS / 2);
        let mut r = req("short please");
        r.max_tokens = Some(5);
        let c = MockProvider::new(0).complete(&r).await.unwrap();
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.text.split_whitespace().count(), 5);
    }

    #[tokio::test]
    async fn stream_yields_deltas_then_done() {
        let p = MockProvider::new(1);
        let full = p.complete(&req("stream me")).await.unwrap().text;
        let mut s = p.stream(&req("stream me")).await.unwrap();
        let mut text = String::new();
        let mut deltas = 0;
        let mut done = None;
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                StreamEvent::Chunk {
                    text: t, content, ..
                } => {
                    if content {
                        deltas += 1;
                    }
                    text.push_str(&t);
                }
                StreamEvent::Done(end) => {
                    assert!(end.usage.is_some());
                    assert_eq!(&end.trailer[..], DONE_FRAME);
                    done = Some(end.finish_reason);
                }
            }
        }
        assert!(deltas > 2);
        assert_eq!(text, full);
        assert_eq!(done.as_deref(), Some("stop"));
    }

    #[tokio::test]
    async fn stream_error_trigger_yields_an_err_item() {
        let mut s = MockProvider::new(0)
            .stream(&req("break [mock:stream_error]"))
            .await
            .unwrap();
        let items: Vec<_> = s.by_ref().collect().await;
        let content = items
            .iter()
            .filter(|i| matches!(i, Ok(StreamEvent::Chunk { content: true, .. })))
            .count();
        assert_eq!(content, CHUNKS_BEFORE_STREAM_ERROR);
        assert!(matches!(
            items.last(),
            Some(Err(ProviderError::StreamInterrupted(_)))
        ));
    }

    fn judge_req(material: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage {
                role: "system".into(),
                content: format!(
                    "{JUDGE_MARKER} rubric\n{JUDGE_CRITERIA_PREFIX} overall, truthfulness\nReply in JSON."
                ),
            },
            ChatMessage {
                role: "user".into(),
                content: material.into(),
            },
        ]
    }

    #[test]
    fn judge_calls_get_a_deterministic_verdict_for_the_rubric_criteria() {
        let m = judge_req("<prompt>hi</prompt><answer>hello</answer>");
        assert!(is_judge_request(&m));
        let (text, finish) = answer_for(&m, 32, Some(3), true);
        assert_eq!(finish, "stop");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let scores = v["scores"].as_object().unwrap();
        assert_eq!(
            scores.keys().collect::<Vec<_>>(),
            vec!["overall", "truthfulness"]
        );
        assert!(scores
            .values()
            .all(|s| (3..=5).contains(&s.as_u64().unwrap())));
        assert!(v["rationale"].as_str().unwrap().contains("Mock judge"));
        assert_eq!(answer_for(&m, 32, None, true).0, text);
        assert!(!is_judge_request(&[m[1].clone()]));
    }

    #[test]
    fn judge_triggers_apply_only_to_judge_calls() {
        let forced = judge_req("prompt [mock:judge_score=2] [mock:truncate] [mock:status=500]");
        let t = Triggers::for_messages(&forced);
        assert_eq!(t.judge_score, Some(2));
        assert!(!t.truncate);
        assert_eq!(t.status, None);
        let v: serde_json::Value =
            serde_json::from_str(&answer_for(&forced, 32, None, true).0).unwrap();
        assert_eq!(v["scores"]["overall"], 2);

        let failing = judge_req("x [mock:judge_status=503] [mock:judge_delay_ms=5]");
        let t = Triggers::for_messages(&failing);
        assert_eq!((t.status, t.delay_ms), (Some(503), Some(5)));
        // In an ordinary request the judge triggers are inert.
        let plain = Triggers::parse("x [mock:judge_status=503] [mock:judge_malformed]");
        assert_eq!(plain, Triggers::default());

        let malformed = judge_req("x [mock:judge_malformed]");
        let reply = answer_for(&malformed, 32, None, true).0;
        assert!(serde_json::from_str::<serde_json::Value>(&reply).is_err());

        let mut once = judge_req("x [mock:judge_malformed_once]");
        assert!(
            serde_json::from_str::<serde_json::Value>(&answer_for(&once, 32, None, true).0)
                .is_err()
        );
        once.push(ChatMessage {
            role: "assistant".into(),
            content: "bad".into(),
        });
        once.push(ChatMessage {
            role: "user".into(),
            content: "again, as JSON".into(),
        });
        assert!(
            serde_json::from_str::<serde_json::Value>(&answer_for(&once, 32, None, true).0).is_ok()
        );

        let fenced = answer_for(&judge_req("x [mock:judge_fenced]"), 32, None, true).0;
        assert!(fenced.contains("```json\n{"), "{fenced}");
    }

    #[test]
    fn bad_json_trigger_breaks_json_mode() {
        let m = vec![ChatMessage {
            role: "user".into(),
            content: "json please [mock:bad_json]".into(),
        }];
        let (text, _) = answer_for(&m, 8, None, true);
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
        assert!(text.starts_with("This is a mock answer"));
    }

    #[tokio::test]
    async fn delay_trigger_waits() {
        let started = std::time::Instant::now();
        MockProvider::new(0)
            .complete(&req("slow [mock:delay_ms=50]"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
