//! What the mock answers, in each API's shape: `chat.completion` objects and chunks, Responses
//! objects and stream events, embeddings lists. Shared by the built-in mock provider and
//! `lqo mock-upstream`, so both honour the same request features: tools (a call, with arguments
//! that fit the function's schema, streamed in pieces as OpenAI does; an answer once the tool's
//! result is in), `n` choices, log probabilities, `json_schema` answers that fit the schema, and
//! base64 embeddings.

use base64::Engine as _;
use serde_json::{json, Value};

use super::schema;
use super::{answer_for_variant, fnv1a, is_judge_request, last_user_text, word_deltas, Triggers};
use crate::provider::tokens;
use crate::provider::{Api, ChatMessage, Role, ToolCall, Usage};

/// Most choices the mock gives for one request (`n`).
pub const MAX_CHOICES: u32 = 16;
/// Embedding size when the request does not say (`dimensions`).
pub const DEFAULT_DIMENSIONS: usize = 16;
pub const MAX_DIMENSIONS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Text,
    JsonObject,
    JsonSchema(Value),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

#[derive(Debug, Clone)]
pub struct MockTool {
    pub name: String,
    pub parameters: Value,
}

/// What the mock reads from a request of either API.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub api: Api,
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Responses `instructions`, echoed back.
    pub instructions: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub n: u32,
    /// `Some(top_logprobs)` when log probabilities were asked for.
    pub logprobs: Option<u32>,
    pub format: Format,
    pub tools: Vec<MockTool>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// The conversation ends with a tool's result: time to answer in text.
    pub tool_result_last: bool,
}

impl MockRequest {
    /// A request with just messages (the gateway's own `/chat` and judge calls).
    pub fn plain(
        model: &str,
        messages: Vec<ChatMessage>,
        max_tokens: Option<u32>,
        json: bool,
    ) -> Self {
        MockRequest {
            api: Api::Chat,
            model: model.to_string(),
            messages,
            instructions: None,
            stream: false,
            include_usage: false,
            max_tokens,
            n: 1,
            logprobs: None,
            format: if json {
                Format::JsonObject
            } else {
                Format::Text
            },
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            tool_result_last: false,
        }
    }

    pub fn parse(api: Api, body: &[u8]) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        match api {
            Api::Chat => Self::from_chat(&v),
            Api::Responses => Self::from_responses(&v),
        }
    }

    fn common(api: Api, v: &Value) -> Self {
        let mut r = MockRequest::plain(
            v.get("model")
                .and_then(Value::as_str)
                .unwrap_or("mock-model"),
            Vec::new(),
            None,
            false,
        );
        r.api = api;
        r.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
        r.parallel_tool_calls = v
            .get("parallel_tool_calls")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        r.tool_choice = match v.get("tool_choice") {
            Some(Value::String(s)) if s == "none" => ToolChoice::None,
            Some(Value::String(s)) if s == "required" => ToolChoice::Required,
            Some(Value::Object(o)) => {
                let name = o
                    .get("name")
                    .or_else(|| o.get("function").and_then(|f| f.get("name")))
                    .and_then(Value::as_str);
                name.map_or(ToolChoice::Auto, |n| ToolChoice::Named(n.to_string()))
            }
            _ => ToolChoice::Auto,
        };
        r
    }

    pub fn from_chat(v: &Value) -> Result<Self, String> {
        let items = v
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("'messages' must be an array")?;
        if items.is_empty() {
            return Err("'messages' must not be empty".into());
        }
        let mut r = Self::common(Api::Chat, v);
        r.messages = items
            .iter()
            .map(|m| ChatMessage {
                role: role_of(m),
                content: m.get("content").map(content_text).unwrap_or_default(),
            })
            .collect();
        r.tool_result_last = matches!(
            r.messages.last().map(|m| m.role),
            Some(Role::Tool | Role::Function)
        );
        r.include_usage = v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        r.max_tokens = u32_field(v, &["max_completion_tokens", "max_tokens"]);
        r.n = u32_field(v, &["n"]).unwrap_or(1).clamp(1, MAX_CHOICES);
        if v.get("logprobs").and_then(Value::as_bool) == Some(true) {
            r.logprobs = Some(u32_field(v, &["top_logprobs"]).unwrap_or(0).min(20));
        }
        r.format = format_of(v.get("response_format"), "/json_schema/schema");
        r.tools = v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("function"))
            .filter_map(|f| {
                Some(MockTool {
                    name: f.get("name")?.as_str()?.to_string(),
                    parameters: f.get("parameters").cloned().unwrap_or(json!({})),
                })
            })
            .collect();
        Ok(r)
    }

    pub fn from_responses(v: &Value) -> Result<Self, String> {
        let mut r = Self::common(Api::Responses, v);
        r.instructions = v
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(text) = &r.instructions {
            r.messages.push(ChatMessage {
                role: Role::System,
                content: text.clone(),
            });
        }
        match v.get("input") {
            Some(Value::String(s)) => r.messages.push(ChatMessage {
                role: Role::User,
                content: s.clone(),
            }),
            Some(Value::Array(items)) => {
                for item in items {
                    let kind = item
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("message");
                    let message = match kind {
                        "message" => ChatMessage {
                            role: role_of(item),
                            content: item.get("content").map(content_text).unwrap_or_default(),
                        },
                        "function_call_output" => ChatMessage {
                            role: Role::Tool,
                            content: item.get("output").map(content_text).unwrap_or_default(),
                        },
                        "function_call" => ChatMessage {
                            role: Role::Assistant,
                            content: String::new(),
                        },
                        _ => continue,
                    };
                    r.messages.push(message);
                }
                r.tool_result_last = items
                    .last()
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    == Some("function_call_output");
            }
            _ => return Err("'input' must be a string or an array of items".into()),
        }
        if r.messages.is_empty() {
            return Err("'input' must not be empty".into());
        }
        r.max_tokens = u32_field(v, &["max_output_tokens"]);
        r.format = format_of(v.pointer("/text/format"), "/schema");
        r.tools = v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
            .filter_map(|t| {
                Some(MockTool {
                    name: t.get("name")?.as_str()?.to_string(),
                    parameters: t.get("parameters").cloned().unwrap_or(json!({})),
                })
            })
            .collect();
        Ok(r)
    }
}

fn format_of(format: Option<&Value>, schema_at: &str) -> Format {
    let Some(f) = format else {
        return Format::Text;
    };
    match f.get("type").and_then(Value::as_str) {
        Some("json_object") => Format::JsonObject,
        Some("json_schema") => {
            Format::JsonSchema(f.pointer(schema_at).cloned().unwrap_or(json!({})))
        }
        _ => Format::Text,
    }
}

/// A message's role as the mock reads it: any word it does not know is the user speaking.
fn role_of(message: &Value) -> Role {
    message
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .unwrap_or(Role::User)
}

/// Text of a message content: a string, or the text parts of an array (other parts as `[type]`).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None => format!(
                    "[{}]",
                    p.get("type").and_then(Value::as_str).unwrap_or("part")
                ),
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn u32_field(v: &Value, names: &[&str]) -> Option<u32> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_u64))
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

/// One choice of a mock answer.
#[derive(Debug, Clone)]
pub struct MockChoice {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: &'static str,
}

/// A whole mock answer, before it is shaped for an API.
#[derive(Debug, Clone)]
pub struct MockAnswer {
    pub seq: u64,
    pub model: String,
    pub created: u64,
    pub choices: Vec<MockChoice>,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub logprobs: Option<u32>,
    /// False for `[mock:no_usage]`: the answer says nothing about usage.
    pub report_usage: bool,
}

impl MockAnswer {
    /// The usage, when the answer reports it.
    pub fn reported_usage(&self) -> Option<Usage> {
        self.report_usage.then(|| self.usage())
    }

    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            cached_input_tokens: self.cached_tokens,
            output_tokens: self.output_tokens,
        }
    }

    pub fn first(&self) -> &MockChoice {
        &self.choices[0]
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decides the answer: tool calls while the conversation does not yet hold a tool's result (and
/// tools were offered and not refused), else text — schema-shaped JSON for `json_schema`.
pub fn answer(req: &MockRequest, output_words: usize, triggers: &Triggers, seq: u64) -> MockAnswer {
    let prompt = last_user_text(&req.messages);
    let calls_tools = !req.tools.is_empty()
        && req.tool_choice != ToolChoice::None
        && !req.tool_result_last
        && !is_judge_request(&req.messages);
    let mut choices = Vec::with_capacity(req.n as usize);
    for variant in 0..req.n.max(1) {
        let choice = if calls_tools {
            let chosen: Vec<&MockTool> = match &req.tool_choice {
                ToolChoice::Named(n) => req.tools.iter().filter(|t| &t.name == n).take(1).collect(),
                _ if triggers.parallel_tools && req.parallel_tool_calls => {
                    req.tools.iter().collect()
                }
                _ => req.tools.iter().take(1).collect(),
            };
            let chosen = if chosen.is_empty() {
                req.tools.iter().take(1).collect()
            } else {
                chosen
            };
            MockChoice {
                text: String::new(),
                tool_calls: chosen
                    .iter()
                    .enumerate()
                    .map(|(k, t)| ToolCall {
                        id: format!("call_mock_{seq}_{variant}_{k}"),
                        name: t.name.clone(),
                        arguments: schema::instance(&t.parameters, prompt).to_string(),
                    })
                    .collect(),
                finish_reason: "tool_calls",
            }
        } else {
            match &req.format {
                Format::JsonSchema(s) if !triggers.bad_json && !is_judge_request(&req.messages) => {
                    MockChoice {
                        text: schema::instance(s, prompt).to_string(),
                        tool_calls: Vec::new(),
                        finish_reason: "stop",
                    }
                }
                format => {
                    let json = *format != Format::Text;
                    let (text, finish_reason) = answer_for_variant(
                        &req.messages,
                        output_words,
                        req.max_tokens,
                        json,
                        variant,
                    );
                    MockChoice {
                        text,
                        tool_calls: Vec::new(),
                        finish_reason,
                    }
                }
            }
        };
        choices.push(choice);
    }
    let input_tokens = tokens::count_message_tokens(&req.messages);
    let output_tokens = choices
        .iter()
        .map(|c| {
            tokens::count_tokens(&c.text)
                + c.tool_calls
                    .iter()
                    .map(|t| tokens::count_tokens(&t.name) + tokens::count_tokens(&t.arguments))
                    .sum::<u64>()
        })
        .sum();
    let (input_tokens, output_tokens) = match triggers.usage_tokens {
        Some(n) => (n, n),
        None => (input_tokens, output_tokens),
    };
    MockAnswer {
        seq,
        model: req.model.clone(),
        created: unix_now(),
        choices,
        input_tokens,
        cached_tokens: triggers.cached_tokens.unwrap_or(0).min(input_tokens),
        output_tokens,
        logprobs: req.logprobs,
        report_usage: !triggers.no_usage,
    }
}

/// One event of a mock stream, as the transport sends it.
#[derive(Debug, Clone)]
pub struct MockFrame {
    pub event: Option<&'static str>,
    pub data: String,
    /// The first choice's answer text in this event.
    pub text: String,
    /// The event carries answer content (text or a tool call).
    pub content: bool,
}

impl MockFrame {
    pub(super) fn data(data: String) -> Self {
        MockFrame {
            event: None,
            data,
            text: String::new(),
            content: false,
        }
    }
}

/// Splits tool-call arguments into pieces the way a model streams them.
fn argument_pieces(arguments: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in arguments.char_indices() {
        if i - start >= 8 {
            out.push(&arguments[start..i]);
            start = i;
        }
    }
    if start < arguments.len() {
        out.push(&arguments[start..]);
    }
    out
}

mod chat;
mod embeddings;
mod responses;

pub use chat::{chat_chunks, chat_completion};
pub use embeddings::{embedding, embedding_inputs, embedding_options, embeddings_list};
pub use responses::{response_events, response_object};

#[cfg(test)]
mod tests;
