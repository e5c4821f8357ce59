//! What a call leaves behind: how it is finished (once per call, whatever the outcome), its
//! metrics, and its record with the content `logging.content` allows (full, redacted, or none).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{
    http_status_for, status_for, truncate, ChatInput, ChatOutput, EmbeddingsInput,
    EmbeddingsOutput, Endpoint, Gateway, ModelRoute,
};
use crate::auth::Caller;
use crate::config::ContentLogging;
use crate::eval::heuristics::AnswerContext;
use crate::provider::tokens;
use crate::provider::{
    self, Api, ChatMessage, Completion, Embeddings, ProviderError, ToolCall, Usage,
};
use crate::redact::redact;
use crate::store::record::LogStatus;
use crate::store::{JsonText, LogRecord};

/// Reported usage beyond this many tokens of a kind is not believed (an upstream reporting
/// 2^64 − 1 tokens added 5.5e13 USD to the cost counter and stored −1 tokens).
pub const MAX_SANE_TOKENS: u64 = 100_000_000;

impl Gateway {
    /// Finishes a call that got its answer: metrics, record, judge sample; the answer for the
    /// handler. `client_gone`: the client left a call that ran on to its end on its own task
    /// (`server.finish_abandoned_calls`): recorded as `cancelled`, with the answer's usage. The
    /// CPU-heavy part (token counting, heuristics, redaction and JSON of a large prompt or
    /// answer) runs on the blocking pool, which also submits the record, so a handler dropped
    /// meanwhile loses nothing.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish_ok(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        input: &Arc<ChatInput>,
        c: Completion,
        upstream: Duration,
        ttft: Option<Duration>,
        streamed: bool,
        client_gone: bool,
    ) -> ChatOutput {
        if !is_heavy(input, c.text.len()) {
            return self.finish_ok_now(route, input, c, upstream, ttft, streamed, client_gone);
        }
        let (this, route, input) = (self.clone(), route.clone(), input.clone());
        crate::blocking::run(move || {
            this.finish_ok_now(&route, &input, c, upstream, ttft, streamed, client_gone)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_ok_now(
        &self,
        route: &ModelRoute,
        input: &ChatInput,
        c: Completion,
        upstream: Duration,
        ttft: Option<Duration>,
        streamed: bool,
        client_gone: bool,
    ) -> ChatOutput {
        let usage = self.usage_or_counted(&route.name, input, &c.text, &c.tool_calls, c.usage);
        let cost_usd = route.cost_usd(&usage);
        // Before the clock stops, so the checks' cost shows in the gateway overhead. An answer
        // nobody received is not judged.
        let checked = (self.heuristics.enabled() && !client_gone).then(|| {
            let outcome = self.heuristics.evaluate(
                &c.text,
                AnswerContext {
                    finish_reason: &c.finish_reason,
                    json_requested: input.request.json_mode,
                    tool_calls: &c.tool_calls,
                    json_schema: input.json_schema.as_deref(),
                },
            );
            outcome.observe(&self.metrics, &route.series, &route.name);
            outcome
        });
        let total = input.started.elapsed();
        let overhead = total.saturating_sub(upstream);
        if client_gone {
            let endpoint = input.endpoint.as_str();
            self.observe_err(
                &route.name,
                endpoint,
                total,
                &ProviderError::ClientDisconnected,
            );
        } else {
            observe_ok(
                route,
                input.endpoint,
                total,
                overhead,
                ttft,
                usage.output_tokens,
            );
        }
        observe_tokens(route, &usage, cost_usd, true);
        let latency_ms = total.as_secs_f64() * 1000.0;
        let mut record = self.base_record(
            route,
            self.chat_meta(input, streamed),
            total,
            &usage,
            cost_usd,
        );
        record.response = self.stored_text(&c.text);
        if !c.upstream_model.is_empty() {
            record.upstream_model = c.upstream_model.clone();
        }
        record.ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0);
        record.finish_reason = Some(c.finish_reason.clone());
        record.tool_calls = self.stored_tool_calls(&c.tool_calls);
        record.heuristic_label = checked.as_ref().map(|o| o.label);
        record.heuristic_results = checked
            .as_ref()
            .map_or_else(|| serde_json::Value::Array(vec![]), |o| o.results_json());
        if client_gone {
            self.mark_failed(&mut record, &ProviderError::ClientDisconnected);
        }
        self.submit(record);
        // The judge scores text; an answer that only calls tools has none to score.
        let judgeable = !client_gone && (!c.text.trim().is_empty() || c.tool_calls.is_empty());
        if let Some(q) = self.judge_queue.as_ref().filter(|_| judgeable) {
            q.offer(input.request_id, &route.name);
        }
        ChatOutput {
            request_id: input.request_id,
            model_version: route.name.clone(),
            text: c.text,
            finish_reason: c.finish_reason,
            tool_calls: c.tool_calls,
            usage,
            latency_ms,
            overhead_ms: overhead.as_secs_f64() * 1000.0,
            cost_usd,
            body: c.body,
        }
    }

    /// Finishes a call that failed (or whose client left, `ProviderError::ClientDisconnected`):
    /// metrics and record, the CPU-heavy part on the blocking pool as in [`Gateway::finish_ok`].
    pub(super) async fn finish_err(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        input: &Arc<ChatInput>,
        e: &ProviderError,
        partial_text: String,
        ttft: Option<Duration>,
        streamed: bool,
    ) {
        if !is_heavy(input, partial_text.len()) {
            return self.finish_err_now(route, input, e, partial_text, ttft, streamed);
        }
        let (this, route, input, e) = (self.clone(), route.clone(), input.clone(), e.clone());
        crate::blocking::run(move || {
            this.finish_err_now(&route, &input, &e, partial_text, ttft, streamed)
        })
        .await
    }

    fn finish_err_now(
        &self,
        route: &ModelRoute,
        input: &ChatInput,
        e: &ProviderError,
        partial_text: String,
        ttft: Option<Duration>,
        streamed: bool,
    ) {
        let total = input.started.elapsed();
        let endpoint = input.endpoint.as_str();
        let mv = route.name.as_str();
        self.observe_err(mv, endpoint, total, e);
        // Input tokens were spent even when the answer failed mid-stream; count what we know.
        let usage = if partial_text.is_empty() {
            Usage::default()
        } else {
            self.usage_or_counted(mv, input, &partial_text, &[], None)
        };
        let cost_usd = route.cost_usd(&usage);
        if !partial_text.is_empty() {
            observe_tokens(route, &usage, cost_usd, true);
        }
        let mut record = self.base_record(
            route,
            self.chat_meta(input, streamed),
            total,
            &usage,
            cost_usd,
        );
        if !partial_text.is_empty() {
            record.response = self.stored_text(&partial_text);
        }
        record.ttft_ms = ttft.map(|t| t.as_secs_f64() * 1000.0);
        self.mark_failed(&mut record, e);
        self.submit(record);
    }

    /// Records a call whose handler was dropped (its client hung up) as `cancelled`, on a task
    /// of its own: a `Drop` may neither wait nor do CPU-heavy work.
    pub(super) fn record_abandoned(
        self: &Arc<Self>,
        route: Arc<ModelRoute>,
        input: Arc<ChatInput>,
        partial_text: String,
        ttft: Option<Duration>,
        streamed: bool,
    ) {
        let e = ProviderError::ClientDisconnected;
        match self.background_runtime() {
            Some(rt) => {
                let this = self.clone();
                rt.spawn(async move {
                    this.finish_err(&route, &input, &e, partial_text, ttft, streamed)
                        .await
                });
            }
            None => self.finish_err_now(&route, &input, &e, partial_text, ttft, streamed),
        }
    }

    /// The upstream's usage if it reported a sane one, else the tokens counted here.
    fn usage_or_counted(
        &self,
        mv: &str,
        input: &ChatInput,
        text: &str,
        tool_calls: &[ToolCall],
        usage: Option<Usage>,
    ) -> Usage {
        self.sane_usage(mv, usage).unwrap_or_else(|| Usage {
            input_tokens: tokens::count_message_tokens(&input.request.messages),
            cached_input_tokens: 0,
            output_tokens: tokens::count_tokens(text)
                + tool_calls
                    .iter()
                    .map(|t| tokens::count_tokens(&t.name) + tokens::count_tokens(&t.arguments))
                    .sum::<u64>(),
        })
    }

    /// The upstream's usage, or None when it reported none or one beyond [`MAX_SANE_TOKENS`]
    /// (counted in `lqo_upstream_invalid_usage_total` and logged).
    pub(super) fn sane_usage(&self, mv: &str, usage: Option<Usage>) -> Option<Usage> {
        let u = usage?;
        let largest = u
            .input_tokens
            .max(u.cached_input_tokens)
            .max(u.output_tokens);
        if largest <= MAX_SANE_TOKENS {
            return Some(u);
        }
        self.metrics
            .upstream_invalid_usage
            .with_label_values(&[mv])
            .inc();
        tracing::warn!(
            model_version = mv,
            input_tokens = u.input_tokens,
            cached_input_tokens = u.cached_input_tokens,
            output_tokens = u.output_tokens,
            "upstream reported usage beyond sane bounds; counting the tokens instead"
        );
        None
    }
}

impl Gateway {
    /// Finishes an embeddings call that got its answer (usage counted and the inputs masked for
    /// the record on the blocking pool when they are large).
    pub(super) async fn finish_embed_ok(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        input: &Arc<EmbeddingsInput>,
        e: Embeddings,
        upstream: Duration,
    ) -> EmbeddingsOutput {
        if !tokens::is_heavy(inputs_bytes(input)) {
            return self.finish_embed_ok_now(route, input, e, upstream);
        }
        let (this, route, input) = (self.clone(), route.clone(), input.clone());
        crate::blocking::run(move || this.finish_embed_ok_now(&route, &input, e, upstream)).await
    }

    fn finish_embed_ok_now(
        &self,
        route: &ModelRoute,
        input: &EmbeddingsInput,
        e: Embeddings,
        upstream: Duration,
    ) -> EmbeddingsOutput {
        let mv = route.name.as_str();
        let usage = self.sane_usage(mv, e.usage).unwrap_or_else(|| Usage {
            input_tokens: input
                .request
                .inputs
                .iter()
                .map(|t| tokens::count_tokens(t))
                .sum(),
            cached_input_tokens: 0,
            output_tokens: 0,
        });
        let cost_usd = route.cost_usd(&usage);
        let total = input.started.elapsed();
        let overhead = total.saturating_sub(upstream);
        observe_ok(route, Endpoint::Embeddings, total, overhead, None, 0);
        observe_tokens(route, &usage, cost_usd, false);
        let mut record = self.base_record(route, self.embed_meta(input), total, &usage, cost_usd);
        record.upstream_model = e.upstream_model;
        self.submit(record);
        EmbeddingsOutput {
            model_version: route.name.clone(),
            body: e.body,
            overhead_ms: overhead.as_secs_f64() * 1000.0,
        }
    }

    /// Finishes an embeddings call that failed (or whose client left).
    pub(super) async fn finish_embed_err(
        self: &Arc<Self>,
        route: &Arc<ModelRoute>,
        input: &Arc<EmbeddingsInput>,
        e: &ProviderError,
    ) {
        if !tokens::is_heavy(inputs_bytes(input)) {
            return self.finish_embed_err_now(route, input, e);
        }
        let (this, route, input, e) = (self.clone(), route.clone(), input.clone(), e.clone());
        crate::blocking::run(move || this.finish_embed_err_now(&route, &input, &e)).await
    }

    fn finish_embed_err_now(&self, route: &ModelRoute, input: &EmbeddingsInput, e: &ProviderError) {
        let total = input.started.elapsed();
        self.observe_err(&route.name, Endpoint::Embeddings.as_str(), total, e);
        let usage = Usage::default();
        let mut record = self.base_record(route, self.embed_meta(input), total, &usage, 0.0);
        self.mark_failed(&mut record, e);
        self.submit(record);
    }

    /// Records an embeddings call whose client hung up, on a task of its own.
    pub(super) fn record_abandoned_embedding(
        self: &Arc<Self>,
        route: Arc<ModelRoute>,
        input: Arc<EmbeddingsInput>,
    ) {
        let e = ProviderError::ClientDisconnected;
        match self.background_runtime() {
            Some(rt) => {
                let this = self.clone();
                rt.spawn(async move { this.finish_embed_err(&route, &input, &e).await });
            }
            None => self.finish_embed_err_now(&route, &input, &e),
        }
    }

    fn embed_meta<'a>(&self, input: &'a EmbeddingsInput) -> RecordMeta<'a> {
        RecordMeta {
            request_id: input.request_id,
            client_request_id: &input.client_request_id,
            endpoint: Endpoint::Embeddings,
            user_id: &input.user_id,
            tags: &input.tags,
            metadata: &input.metadata,
            caller: &input.caller,
            prompt: self.stored_inputs(&input.request.inputs),
            params: self.stored_params(&input.request.body, &["input"]),
            streamed: false,
        }
    }
}

fn inputs_bytes(input: &EmbeddingsInput) -> usize {
    input.request.inputs.iter().map(String::len).sum::<usize>() + input.request.body.bytes().len()
}

/// Whether finishing a call is CPU-heavy enough for the blocking pool: a large prompt (counted,
/// serialised and maybe redacted for the record) or a large answer.
fn is_heavy(input: &ChatInput, answer_bytes: usize) -> bool {
    let prompt: usize = input.request.messages.iter().map(|m| m.content.len()).sum();
    let body = input
        .request
        .client
        .as_ref()
        .map_or(0, |c| c.body.bytes().len());
    tokens::is_heavy(prompt.max(body) + answer_bytes)
}

impl Gateway {
    pub(super) fn chat_meta<'a>(&self, input: &'a ChatInput, streamed: bool) -> RecordMeta<'a> {
        let params = input.request.client.as_ref().and_then(|c| {
            let dropped: &[&str] = match c.api {
                Api::Chat => &["messages"],
                Api::Responses => &["input", "instructions"],
            };
            self.stored_params(&c.body, dropped)
        });
        RecordMeta {
            request_id: input.request_id,
            client_request_id: &input.client_request_id,
            endpoint: input.endpoint,
            user_id: &input.user_id,
            tags: &input.tags,
            metadata: &input.metadata,
            caller: &input.caller,
            prompt: self.stored_prompt(&input.request.messages),
            params,
            streamed,
        }
    }

    /// A call that ended without an answer, under its status (`error`, `rejected` or
    /// `cancelled`).
    pub(super) fn observe_err(&self, mv: &str, endpoint: &str, total: Duration, e: &ProviderError) {
        let m = &self.metrics;
        let status = status_for(e);
        m.request_duration
            .with_label_values(&[mv, endpoint, status.as_str()])
            .observe(total.as_secs_f64());
        m.requests
            .with_label_values(&[mv, endpoint, status.as_str()])
            .inc();
        m.errors
            .with_label_values(&[mv, endpoint, e.error_type()])
            .inc();
        match status {
            LogStatus::Cancelled => {
                tracing::info!(
                    model_version = mv,
                    endpoint,
                    "client went away before the answer"
                )
            }
            _ => {
                tracing::warn!(model_version = mv, endpoint, error_type = e.error_type(), error = %e, "upstream call failed")
            }
        }
    }

    /// A successful call's record; the caller fills in the answer.
    pub(super) fn base_record(
        &self,
        route: &ModelRoute,
        meta: RecordMeta<'_>,
        total: Duration,
        usage: &Usage,
        cost_usd: f64,
    ) -> LogRecord {
        let api_key_name = meta.caller.as_ref().and_then(|caller| {
            caller.charge_tokens(usage.input_tokens + usage.output_tokens);
            caller.key_name().map(str::to_string)
        });
        LogRecord {
            request_id: meta.request_id,
            created_at: Utc::now(),
            endpoint: meta.endpoint,
            user_id: meta.user_id.clone(),
            prompt: meta.prompt,
            response: None,
            model_version: route.name.clone(),
            provider: route.provider.kind().to_string(),
            upstream_model: route.upstream_model.clone(),
            latency_ms: total.as_secs_f64() * 1000.0,
            ttft_ms: None,
            input_tokens: usage.input_tokens as i64,
            cached_input_tokens: usage.cached_input_tokens as i64,
            output_tokens: usage.output_tokens as i64,
            cost_usd,
            status: LogStatus::Ok,
            http_status: 200,
            error_type: None,
            error_message: None,
            finish_reason: None,
            streamed: meta.streamed,
            tags: meta.tags.clone(),
            metadata: meta.metadata.clone(),
            heuristic_label: None,
            heuristic_results: serde_json::Value::Array(vec![]),
            api_key_name,
            request_params: meta.params,
            tool_calls: None,
            client_request_id: meta.client_request_id.clone(),
        }
    }

    pub(super) fn mark_failed(&self, record: &mut LogRecord, e: &ProviderError) {
        record.status = status_for(e);
        record.http_status = i32::from(http_status_for(e));
        record.error_type = Some(e.error_type().into());
        record.error_message = Some(self.stored_error(&truncate(&e.to_string(), 1000)));
    }

    pub(super) fn submit(&self, record: LogRecord) {
        // The writer counts and logs a record it cannot queue; the answer goes out regardless.
        let _ = self.writer.submit(record);
    }

    /// The prompt as stored: a single message's text, or the conversation as a JSON array.
    /// With `logging.content: redacted` each message is masked before the array is built, so
    /// the stored JSON stays valid.
    pub(super) fn stored_prompt(&self, messages: &[ChatMessage]) -> String {
        match (self.content, messages) {
            (ContentLogging::None, _) => String::new(),
            (ContentLogging::Full, [only]) => only.content.clone(),
            (ContentLogging::Redacted, [only]) => redact(&only.content).into_owned(),
            (ContentLogging::Full, many) => serde_json::to_string(many).unwrap_or_default(),
            (ContentLogging::Redacted, many) => {
                let masked: Vec<ChatMessage> = many
                    .iter()
                    .map(|m| ChatMessage {
                        role: m.role,
                        content: redact(&m.content).into_owned(),
                    })
                    .collect();
                serde_json::to_string(&masked).unwrap_or_default()
            }
        }
    }

    /// Embedding inputs as stored: one input's text, or a JSON array of them.
    pub(super) fn stored_inputs(&self, inputs: &[String]) -> String {
        let shown: Vec<String> = match self.content {
            ContentLogging::None => return String::new(),
            ContentLogging::Full => inputs.to_vec(),
            ContentLogging::Redacted => inputs.iter().map(|t| redact(t).into_owned()).collect(),
        };
        match shown.as_slice() {
            [only] => only.clone(),
            many => serde_json::to_string(many).unwrap_or_default(),
        }
    }

    /// The request's parameters as stored: the client's body without the conversation
    /// (`dropped`); with `logging.content: redacted` every string in it masked, with `none` only
    /// `model` and the numbers and booleans.
    pub(super) fn stored_params(
        &self,
        body: &provider::wire::JsonBody,
        dropped: &[&str],
    ) -> Option<JsonText> {
        let keep = |name: &str, _value: &[u8]| !dropped.contains(&name);
        let json = match self.content {
            ContentLogging::Full => body.filtered(keep),
            ContentLogging::None => body.filtered(|name, value| {
                keep(name, value)
                    && (name == "model" || !matches!(value.first(), Some(b'"' | b'{' | b'[')))
            }),
            ContentLogging::Redacted => {
                let mut v: serde_json::Value = serde_json::from_slice(&body.filtered(keep)).ok()?;
                redact_strings(&mut v);
                serde_json::to_vec(&v).ok()?
            }
        };
        JsonText::from_vec(json)
    }

    /// An answer's tool calls as stored (OpenAI's shape); their arguments are content.
    pub(super) fn stored_tool_calls(&self, calls: &[ToolCall]) -> Option<JsonText> {
        if calls.is_empty() {
            return None;
        }
        let shown: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| {
                let arguments = match self.content {
                    ContentLogging::Full => c.arguments.clone(),
                    ContentLogging::Redacted => redact(&c.arguments).into_owned(),
                    ContentLogging::None => String::new(),
                };
                serde_json::json!({ "id": c.id, "type": "function",
                    "function": { "name": c.name, "arguments": arguments } })
            })
            .collect();
        JsonText::from_vec(serde_json::to_vec(&shown).ok()?)
    }

    pub(super) fn stored_text(&self, text: &str) -> Option<String> {
        match self.content {
            ContentLogging::None => None,
            ContentLogging::Full => Some(text.to_string()),
            ContentLogging::Redacted => Some(redact(text).into_owned()),
        }
    }

    /// Upstream error messages can quote the prompt; they are masked like it.
    pub(super) fn stored_error(&self, message: &str) -> String {
        match self.content {
            ContentLogging::Redacted => redact(message).into_owned(),
            _ => message.to_string(),
        }
    }
}

fn redact_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(masked) = redact(s) {
                *s = masked;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_strings),
        _ => {}
    }
}

/// The parts of a record that come from the request rather than the answer.
pub(super) struct RecordMeta<'a> {
    pub(super) request_id: Uuid,
    pub(super) client_request_id: &'a Option<String>,
    pub(super) endpoint: Endpoint,
    pub(super) user_id: &'a Option<String>,
    pub(super) tags: &'a Vec<String>,
    pub(super) metadata: &'a serde_json::Value,
    pub(super) caller: &'a Option<Caller>,
    pub(super) prompt: String,
    pub(super) params: Option<JsonText>,
    pub(super) streamed: bool,
}

fn observe_ok(
    route: &ModelRoute,
    endpoint: Endpoint,
    total: Duration,
    overhead: Duration,
    ttft: Option<Duration>,
    output_tokens: u64,
) {
    let series = route.series.endpoint(endpoint as usize);
    series.duration_ok.observe(total.as_secs_f64());
    series.overhead.observe(overhead.as_secs_f64());
    if let Some(t) = ttft {
        series.time_to_first_token.observe(t.as_secs_f64());
        route
            .series
            .observe_time_per_output_token(total, t, output_tokens);
    }
    series.requests_ok.inc();
}

fn observe_tokens(route: &ModelRoute, usage: &Usage, cost_usd: f64, with_output: bool) {
    let s = &route.series;
    s.input_tokens_per_request
        .observe(usage.input_tokens as f64);
    if with_output {
        s.output_tokens_per_request
            .observe(usage.output_tokens as f64);
    }
    s.input_tokens.inc_by(usage.input_tokens);
    s.cached_input_tokens.inc_by(usage.cached_input_tokens);
    s.output_tokens.inc_by(usage.output_tokens);
    s.cost_per_request.observe(cost_usd);
    s.cost.inc_by(cost_usd);
}
