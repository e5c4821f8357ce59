//! What the store keeps, as types: the `llm_logs` record and the closed sets of words stored in
//! text columns (status, rating, agreement, …). Each such enum is encoded and decoded here and
//! nowhere else: `as_str` is what a row holds, `parse` reads it back, and serde uses the same
//! words (the API and the writer's spool show exactly what the database holds).

use std::borrow::Cow;

use chrono::{DateTime, Timelike, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

/// An enum stored as one of a fixed set of words. Generates `ALL`, `NAMES`, `as_str`, `parse`,
/// `Display`, and serde/OpenAPI representations that use the same words. Variants order as
/// declared. The words are taken as `tt`, not `literal`: a `literal` fragment reaches the derive
/// macros wrapped in an invisible group, which serde reads but utoipa does not (the OpenAPI
/// document then named the variants instead of the words).
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:tt ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stored words, e.g. the label values a metric is created with.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The word stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value a stored word stands for; None for any other text.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// How a model call ended, as stored in `llm_logs.status` and counted in the `status` label
    /// of `lqo_requests_total`. Only `error` is the gateway's or the provider's failure (the
    /// error budget); `rejected` and `cancelled` are the client's doing.
    pub enum LogStatus {
        /// Answered.
        Ok = "ok",
        /// The gateway or the provider failed (5xx, timeout, connection, a broken stream, the
        /// gateway's credentials refused, the provider's rate limit).
        Error = "error",
        /// The upstream refused the client's request (its 4xx, passed to the client).
        Rejected = "rejected",
        /// The client went away before the answer was complete (HTTP 499, as nginx logs it).
        Cancelled = "cancelled",
    }
}

stored_enum! {
    /// Which public route a call came through (`llm_logs.endpoint`, the `endpoint` label).
    pub enum Endpoint {
        /// `POST /chat`.
        Chat = "chat",
        /// `POST /v1/chat/completions`.
        ChatCompletions = "chat_completions",
        /// `POST /v1/responses`.
        Responses = "responses",
        /// `POST /v1/embeddings`.
        Embeddings = "embeddings",
    }
}

stored_enum! {
    /// The heuristics' verdict on an answer (`llm_logs.heuristic_label`), worst last: the worst
    /// failed check gives the label.
    pub enum HeuristicLabel {
        Good = "good",
        Warn = "warn",
        Bad = "bad",
    }
}

stored_enum! {
    /// Where a judge job is, as stored in `judge_jobs.status`.
    pub enum JobStatus {
        /// Waiting to be claimed (possibly not before `available_at`).
        Pending = "pending",
        /// Claimed by a worker under a lease.
        Running = "running",
        Done = "done",
        /// Given up after `judge.max_attempts` calls or for a reason no retry fixes.
        Error = "error",
    }
}

stored_enum! {
    /// The scale a human rating was given on (`feedback.scale`).
    pub enum Scale {
        /// -1 (thumbs down) or 1 (thumbs up).
        Thumbs = "thumbs",
        /// 1 to 5.
        Stars = "stars",
    }
}

stored_enum! {
    /// What a human rating says (`feedback.rating`).
    pub enum Rating {
        Positive = "positive",
        Neutral = "neutral",
        Negative = "negative",
    }
}

stored_enum! {
    /// Whether a human rating and the judge's overall score say the same thing
    /// (`feedback.agreement`, null until both exist).
    pub enum Agreement {
        Agree = "agree",
        Disagree = "disagree",
        /// One side is neutral: nothing to compare.
        NotComparable = "not_comparable",
    }
}

/// Reads a stored word as `T`, or reports the row as corrupt (never a panic, never a guess).
pub(crate) fn decode_word<T>(
    parse: fn(&str) -> Option<T>,
    text: &str,
    column: &str,
    id: impl std::fmt::Display,
) -> Result<T, super::StoreError> {
    parse(text)
        .ok_or_else(|| super::StoreError::corrupt(id, format!("{column}: unknown value {text:?}")))
}

/// JSON kept as the text it was written as (a request's parameters, an answer's tool calls), so
/// the request path never builds a tree of it: stored as `jsonb` / TEXT, shown as JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// Valid JSON text, or None.
    pub fn from_vec(json: Vec<u8>) -> Option<JsonText> {
        let text = String::from_utf8(json).ok()?;
        RawValue::from_string(text).ok().map(JsonText)
    }

    pub fn from_value(v: &serde_json::Value) -> Option<JsonText> {
        serde_json::to_vec(v).ok().and_then(Self::from_vec)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.get()).unwrap_or_default()
    }

    /// For PostgreSQL's jsonb, which refuses `\u0000`: NUL escapes become U+FFFD escapes, as NUL
    /// bytes in text columns become U+FFFD.
    pub(crate) fn without_nul_escapes(&self) -> Cow<'_, str> {
        replace_nul_escapes(self.get())
    }
}

/// Equal when the JSON is (key order and spacing aside, as jsonb keeps neither).
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

/// PostgreSQL keeps microseconds; SQLite gets the same precision so both backends read back alike.
pub(crate) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// One model call, as it lands in `llm_logs`.
///
/// The writer's spool keeps records as this struct's JSON across restarts and upgrades: a field
/// added later needs `#[serde(default)]`, or records spooled by the previous version become
/// unreadable (`spool::tests::a_record_spooled_by_the_first_version_still_reads` guards this).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LogRecord {
    /// The gateway's id of the call (a UUIDv7 it generated): the record's key.
    pub request_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub endpoint: Endpoint,
    pub user_id: Option<String>,
    /// The prompt as stored (the last user message for /chat; the JSON messages array otherwise).
    pub prompt: String,
    pub response: Option<String>,
    pub model_version: String,
    pub provider: String,
    pub upstream_model: String,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub status: LogStatus,
    pub http_status: i32,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub finish_reason: Option<String>,
    pub streamed: bool,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// The heuristic checks' verdict; None when they did not run.
    pub heuristic_label: Option<HeuristicLabel>,
    /// The failed heuristic checks with their reasons (a JSON array; `[]` when none failed).
    pub heuristic_results: serde_json::Value,
    /// Name of the client API key that made the call, when authentication is on.
    pub api_key_name: Option<String>,
    /// The request's parameters: the client's body without the conversation (`messages`, or
    /// `input` and `instructions`), subject to `logging.content`; None for `POST /chat`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub request_params: Option<JsonText>,
    /// The answer's tool calls, OpenAI-shaped (`[{id, type, function: {name, arguments}}]`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<JsonText>,
    /// The client's own `x-request-id`, when it sent one (`request_id` is the gateway's).
    #[serde(default)]
    pub client_request_id: Option<String>,
}

impl LogRecord {
    /// Roughly the bytes the record takes in memory and as JSON: its texts plus a fixed share
    /// for the rest. What `GET /v1/logs` pages and the PostgreSQL batch splits are budgeted by.
    pub fn approx_bytes(&self) -> usize {
        fn json_bytes(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::String(s) => s.len() + 2,
                serde_json::Value::Array(items) => 2 + items.iter().map(json_bytes).sum::<usize>(),
                serde_json::Value::Object(map) => {
                    2 + map
                        .iter()
                        .map(|(k, v)| k.len() + 4 + json_bytes(v))
                        .sum::<usize>()
                }
                _ => 8,
            }
        }
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        512 + self.prompt.len()
            + opt(&self.response)
            + opt(&self.error_message)
            + opt(&self.user_id)
            + opt(&self.client_request_id)
            + self.tags.iter().map(|t| t.len() + 3).sum::<usize>()
            + json_bytes(&self.metadata)
            + json_bytes(&self.heuristic_results)
            + self.request_params.as_ref().map_or(0, |p| p.get().len())
            + self.tool_calls.as_ref().map_or(0, |t| t.get().len())
    }
}

/// JSON text with every `\u0000` escape (a NUL, which PostgreSQL's jsonb refuses) turned into
/// `\ufffd`; an escaped backslash followed by `u0000` stays as it is.
pub(crate) fn replace_nul_escapes(text: &str) -> Cow<'_, str> {
    if !text.contains("\\u0000") {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b[i + 1..].starts_with(b"u0000") {
                out.push_str(&text[copied..i]);
                out.push_str("\\ufffd");
                i += 6;
                copied = i;
                continue;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_word_reads_back_as_itself() {
        fn round_trip<T: Copy + PartialEq + std::fmt::Debug + serde::Serialize>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(parse(as_str(v)), Some(v));
                // serde shows the stored word, so the API and the spool say what the row says.
                assert_eq!(serde_json::to_value(v).unwrap(), as_str(v));
            }
            assert_eq!(parse("nonsense"), None);
            assert_eq!(parse(""), None);
        }
        round_trip(LogStatus::ALL, LogStatus::as_str, LogStatus::parse);
        round_trip(Endpoint::ALL, Endpoint::as_str, Endpoint::parse);
        round_trip(
            HeuristicLabel::ALL,
            HeuristicLabel::as_str,
            HeuristicLabel::parse,
        );
        assert_eq!(
            Endpoint::NAMES,
            ["chat", "chat_completions", "responses", "embeddings"]
        );
        assert!(
            HeuristicLabel::Good < HeuristicLabel::Warn
                && HeuristicLabel::Warn < HeuristicLabel::Bad
        );
        round_trip(JobStatus::ALL, JobStatus::as_str, JobStatus::parse);
        round_trip(Scale::ALL, Scale::as_str, Scale::parse);
        round_trip(Rating::ALL, Rating::as_str, Rating::parse);
        round_trip(Agreement::ALL, Agreement::as_str, Agreement::parse);
        assert_eq!(Agreement::NotComparable.as_str(), "not_comparable");
        assert_eq!(LogStatus::parse("OK"), None, "stored words are exact");
    }

    #[test]
    fn the_openapi_schema_names_the_stored_words() {
        use utoipa::PartialSchema;
        let shown = |schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(schema).unwrap()["enum"].clone()
        };
        assert_eq!(
            shown(LogStatus::schema()),
            serde_json::json!(["ok", "error", "rejected", "cancelled"])
        );
        // The metric's status label takes exactly the stored words.
        assert_eq!(LogStatus::NAMES, crate::metrics::REQUEST_STATUSES);
        assert_eq!(
            shown(Endpoint::schema()),
            serde_json::json!(["chat", "chat_completions", "responses", "embeddings"])
        );
        assert_eq!(
            shown(Agreement::schema()),
            serde_json::json!(["agree", "disagree", "not_comparable"])
        );
    }

    #[test]
    fn an_unknown_stored_word_is_a_corrupt_row_not_a_panic() {
        let err = decode_word(Rating::parse, "meh", "feedback.rating", 7).unwrap_err();
        assert!(err.to_string().contains("feedback.rating"), "{err}");
        assert_eq!(
            decode_word(Rating::parse, "neutral", "feedback.rating", 7).unwrap(),
            Rating::Neutral
        );
    }
}
