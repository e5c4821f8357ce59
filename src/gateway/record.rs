//! What a call leaves behind: its metrics, and its record with the content `logging.content`
//! allows (full, redacted, or none). The gateway's use cases in `mod.rs` call these once per call.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{http_status_for, truncate, ChatInput, Endpoint, Gateway, ModelRoute};
use crate::auth::Caller;
use crate::config::ContentLogging;
use crate::provider::{self, Api, ChatMessage, ProviderError, ToolCall, Usage};
use crate::redact::redact;
use crate::store::record::LogStatus;
use crate::store::{JsonText, LogRecord};

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

    pub(super) fn observe_ok(
        &self,
        mv: &str,
        endpoint: &str,
        total: Duration,
        overhead: Duration,
        ttft: Option<Duration>,
        output_tokens: u64,
    ) {
        let m = &self.metrics;
        m.request_duration
            .with_label_values(&[mv, endpoint, "ok"])
            .observe(total.as_secs_f64());
        m.gateway_overhead
            .with_label_values(&[mv, endpoint])
            .observe(overhead.as_secs_f64());
        if let Some(t) = ttft {
            m.time_to_first_token
                .with_label_values(&[mv, endpoint])
                .observe(t.as_secs_f64());
            m.observe_time_per_output_token(mv, total, t, output_tokens);
        }
        m.requests.with_label_values(&[mv, endpoint, "ok"]).inc();
    }

    pub(super) fn observe_err(&self, mv: &str, endpoint: &str, total: Duration, e: &ProviderError) {
        let m = &self.metrics;
        m.request_duration
            .with_label_values(&[mv, endpoint, "error"])
            .observe(total.as_secs_f64());
        m.requests.with_label_values(&[mv, endpoint, "error"]).inc();
        m.errors
            .with_label_values(&[mv, endpoint, e.error_type()])
            .inc();
        tracing::warn!(model_version = mv, endpoint, error_type = e.error_type(), error = %e, "upstream call failed");
    }

    pub(super) fn observe_tokens(&self, mv: &str, usage: &Usage, cost_usd: f64, with_output: bool) {
        let m = &self.metrics;
        m.tokens_per_request
            .with_label_values(&[mv, "input"])
            .observe(usage.input_tokens as f64);
        if with_output {
            m.tokens_per_request
                .with_label_values(&[mv, "output"])
                .observe(usage.output_tokens as f64);
        }
        m.tokens
            .with_label_values(&[mv, "input"])
            .inc_by(usage.input_tokens);
        m.tokens
            .with_label_values(&[mv, "cached_input"])
            .inc_by(usage.cached_input_tokens);
        m.tokens
            .with_label_values(&[mv, "output"])
            .inc_by(usage.output_tokens);
        m.cost_per_request
            .with_label_values(&[mv])
            .observe(cost_usd);
        m.cost.with_label_values(&[mv]).inc_by(cost_usd);
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
        record.status = LogStatus::Error;
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
