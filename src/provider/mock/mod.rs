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
    EmbeddingsRequest, Provider, ProviderError, RetryPolicy, Role, StreamEnd, StreamEvent,
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
        .any(|m| m.role == Role::System && m.content.contains(JUDGE_MARKER))
}

/// The mock judge's reply: deterministic scores 3–5 per criterion derived from the judged text
/// (or all `[mock:judge_score=N]`), as `{"scores": {...}, "rationale": "..."}`.
/// `[mock:judge_malformed]` answers prose without JSON every time, `[mock:judge_malformed_once]`
/// only until the conversation holds an earlier (refused) assistant reply, and
/// `[mock:judge_fenced]` wraps the JSON in a Markdown fence with prose around it.
pub fn judge_answer(messages: &[ChatMessage], triggers: &Triggers) -> String {
    let retried = messages.iter().any(|m| m.role == Role::Assistant);
    if triggers.judge_malformed || (triggers.judge_malformed_once && !retried) {
        return "I would rate this answer fairly well, maybe a four out of five overall.".into();
    }
    let criteria: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
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
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// The text of the last `user` message (the triggers and the quoted prompt come from it), or of the
/// last message when there is no user message.
pub fn last_user_text(messages: &[ChatMessage]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
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
    /// `[mock:usage_tokens=N]`: report N input and N output tokens, whatever was counted (an
    /// upstream with a broken usage report).
    pub usage_tokens: Option<u64>,
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
                ("usage_tokens", Some(v)) => t.usage_tokens = v.parse().ok(),
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

    /// The request as the mock reads it, and the answer (its usage counted by tiktoken). A
    /// large request is read and counted on the blocking pool, off the request workers.
    async fn plan(
        &self,
        req: &CompletionRequest,
    ) -> Result<(MockRequest, MockAnswer), ProviderError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let words = self.output_words;
        let bytes = req.messages.iter().map(|m| m.content.len()).sum::<usize>()
            + req.client.as_ref().map_or(0, |c| c.body.bytes().len());
        if crate::provider::tokens::is_heavy(bytes) {
            let req = req.clone();
            crate::blocking::run(move || plan(&req, words, seq)).await
        } else {
            plan(req, words, seq)
        }
    }
}

/// The request as the mock reads it, and the answer.
fn plan(
    req: &CompletionRequest,
    output_words: usize,
    seq: u64,
) -> Result<(MockRequest, MockAnswer), ProviderError> {
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
    let answer = shapes::answer(&mreq, output_words, &triggers, seq);
    Ok((mreq, answer))
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
        let (mreq, answer) = self.plan(req).await?;
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
        let (mreq, answer) = self.plan(req).await?;
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
        let bytes = req.inputs.iter().map(String::len).sum();
        let list = if crate::provider::tokens::is_heavy(bytes) {
            let (inputs, model) = (req.inputs.clone(), req.model.clone());
            crate::blocking::run(move || {
                shapes::embeddings_list(&inputs, &model, dimensions, base64)
            })
            .await
        } else {
            shapes::embeddings_list(&req.inputs, &req.model, dimensions, base64)
        };
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
mod tests;
