//! What the mock answers, in each API's shape: `chat.completion` objects and chunks, Responses
//! objects and stream events, embeddings lists. Shared by the built-in mock provider and
//! `lqo mock-upstream`, so both honour the same request features: tools (a call, with arguments
//! that fit the function's schema, streamed in pieces as OpenAI does; an answer once the tool's
//! result is in), `n` choices, log probabilities, `json_schema` answers that fit the schema, and
//! base64 embeddings.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::schema;
use super::{answer_for_variant, fnv1a, is_judge_request, last_user_text, word_deltas, Triggers};
use crate::provider::{Api, ChatMessage, ToolCall, Usage};
use crate::tokens;

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
                role: m
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("user")
                    .to_string(),
                content: m.get("content").map(content_text).unwrap_or_default(),
            })
            .collect();
        r.tool_result_last = matches!(
            r.messages.last().map(|m| m.role.as_str()),
            Some("tool" | "function")
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
                role: "system".into(),
                content: text.clone(),
            });
        }
        match v.get("input") {
            Some(Value::String(s)) => r.messages.push(ChatMessage {
                role: "user".into(),
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
                            role: item
                                .get("role")
                                .and_then(Value::as_str)
                                .unwrap_or("user")
                                .to_string(),
                            content: item.get("content").map(content_text).unwrap_or_default(),
                        },
                        "function_call_output" => ChatMessage {
                            role: "tool".into(),
                            content: item.get("output").map(content_text).unwrap_or_default(),
                        },
                        "function_call" => ChatMessage {
                            role: "assistant".into(),
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

// ---------------------------------------------------------------------------------------------
// Chat Completions.
// ---------------------------------------------------------------------------------------------

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
    fn data(data: String) -> Self {
        MockFrame {
            event: None,
            data,
            text: String::new(),
            content: false,
        }
    }
}

fn chat_usage(a: &MockAnswer) -> Value {
    if !a.report_usage {
        return Value::Null;
    }
    json!({
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
        "prompt_tokens_details": { "cached_tokens": a.cached_tokens, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
    })
}

/// The tokens of `text` as the mock counts them for log probabilities: words with their leading
/// space.
fn logprob_tokens(text: &str) -> Vec<String> {
    text.split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .filter(|t| !t.is_empty())
        .collect()
}

fn logprob_of(token: &str) -> f64 {
    -((fnv1a(token.as_bytes()) % 2000) as f64 / 1000.0) - 0.0001
}

fn logprobs_json(text: &str, top: u32) -> Value {
    let content: Vec<Value> = logprob_tokens(text)
        .into_iter()
        .map(|t| {
            let lp = logprob_of(&t);
            let top_logprobs: Vec<Value> = (0..top)
                .map(|k| {
                    let alt = if k == 0 {
                        t.clone()
                    } else {
                        format!(" alt{k}")
                    };
                    json!({ "token": alt, "logprob": lp - f64::from(k), "bytes": alt.as_bytes() })
                })
                .collect();
            json!({ "token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": top_logprobs })
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
            .collect(),
    )
}

/// A `chat.completion` object.
pub fn chat_completion(a: &MockAnswer) -> Value {
    let choices: Vec<Value> = a
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut message = json!({
                "role": "assistant",
                "content": if c.tool_calls.is_empty() { json!(c.text) } else { Value::Null },
                "refusal": null,
                "annotations": []
            });
            if !c.tool_calls.is_empty() {
                message["tool_calls"] = tool_calls_json(&c.tool_calls);
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": a.logprobs.map_or(Value::Null, |top| logprobs_json(&c.text, top)),
                "finish_reason": c.finish_reason
            })
        })
        .collect();
    json!({
        "id": format!("chatcmpl-mock-{}", a.seq),
        "object": "chat.completion",
        "created": a.created,
        "model": a.model,
        "system_fingerprint": "fp_lqo_mock",
        "service_tier": "default",
        "choices": choices,
        "usage": chat_usage(a)
    })
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

/// `chat.completion.chunk` events (without `[DONE]`): per choice a role chunk, its text in deltas
/// of `words_per_delta` words (or its tool calls: id and name first, then the arguments in
/// pieces), a finish chunk; then the usage chunk when asked for.
pub fn chat_chunks(a: &MockAnswer, include_usage: bool, words_per_delta: usize) -> Vec<MockFrame> {
    let chunk = |index: usize, delta: Value, logprobs: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": format!("chatcmpl-mock-{}", a.seq),
            "object": "chat.completion.chunk",
            "created": a.created,
            "model": a.model,
            "system_fingerprint": "fp_lqo_mock",
            "choices": [{ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish }]
        });
        if include_usage {
            // OpenAI sends `usage: null` on every chunk but the last when usage was asked for.
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    let mut out = Vec::new();
    for (i, c) in a.choices.iter().enumerate() {
        out.push(MockFrame::data(chunk(
            i,
            json!({ "role": "assistant", "content": "", "refusal": null }),
            Value::Null,
            None,
        )));
        if c.tool_calls.is_empty() {
            for d in word_deltas(&c.text, words_per_delta) {
                let lp = a.logprobs.map_or(Value::Null, |top| logprobs_json(&d, top));
                let data = chunk(i, json!({ "content": d }), lp, None);
                out.push(MockFrame {
                    event: None,
                    data,
                    text: if i == 0 { d } else { String::new() },
                    content: true,
                });
            }
        }
        for (k, call) in c.tool_calls.iter().enumerate() {
            let head = json!({ "tool_calls": [{ "index": k, "id": call.id, "type": "function",
                "function": { "name": call.name, "arguments": "" } }] });
            out.push(MockFrame {
                content: true,
                ..MockFrame::data(chunk(i, head, Value::Null, None))
            });
            for piece in argument_pieces(&call.arguments) {
                let delta =
                    json!({ "tool_calls": [{ "index": k, "function": { "arguments": piece } }] });
                out.push(MockFrame {
                    content: true,
                    ..MockFrame::data(chunk(i, delta, Value::Null, None))
                });
            }
        }
        out.push(MockFrame::data(chunk(
            i,
            json!({}),
            Value::Null,
            Some(c.finish_reason),
        )));
    }
    if include_usage && a.report_usage {
        let mut usage_chunk: Value =
            serde_json::from_str(&chunk(0, json!({}), Value::Null, None)).unwrap_or_default();
        usage_chunk["choices"] = json!([]);
        usage_chunk["usage"] = chat_usage(a);
        out.push(MockFrame::data(usage_chunk.to_string()));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------------

fn function_call_item(a: &MockAnswer, k: usize, call: &ToolCall, done: bool) -> Value {
    json!({
        "id": format!("fc_mock_{}_{k}", a.seq),
        "type": "function_call",
        "status": if done { "completed" } else { "in_progress" },
        "call_id": call.id,
        "name": call.name,
        "arguments": if done { call.arguments.as_str() } else { "" }
    })
}

fn message_item(a: &MockAnswer, text: &str, status: &str) -> Value {
    json!({
        "id": format!("msg_mock_{}", a.seq),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }]
    })
}

/// A Responses `response` object; `finished` false gives the `in_progress` shell of a stream.
pub fn response_object(a: &MockAnswer, req: &MockRequest, finished: bool) -> Value {
    let c = a.first();
    let truncated = c.finish_reason == "length";
    let status = match (finished, truncated) {
        (false, _) => "in_progress",
        (true, false) => "completed",
        (true, true) => "incomplete",
    };
    let output = if !finished {
        json!([])
    } else if c.tool_calls.is_empty() {
        json!([message_item(a, &c.text, status)])
    } else {
        Value::Array(
            c.tool_calls
                .iter()
                .enumerate()
                .map(|(k, call)| function_call_item(a, k, call, true))
                .collect(),
        )
    };
    let usage = if finished && a.report_usage {
        json!({
            "input_tokens": a.input_tokens,
            "input_tokens_details": { "cached_tokens": a.cached_tokens },
            "output_tokens": a.output_tokens,
            "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": a.input_tokens + a.output_tokens
        })
    } else {
        Value::Null
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| json!({ "type": "function", "name": t.name, "parameters": t.parameters, "strict": true }))
        .collect();
    let format = match &req.format {
        Format::Text => json!({ "type": "text" }),
        Format::JsonObject => json!({ "type": "json_object" }),
        Format::JsonSchema(s) => {
            json!({ "type": "json_schema", "name": "answer", "schema": s, "strict": true })
        }
    };
    json!({
        "id": format!("resp_mock_{}", a.seq),
        "object": "response",
        "created_at": a.created,
        "status": status,
        "error": null,
        "incomplete_details": if finished && truncated { json!({ "reason": "max_output_tokens" }) } else { Value::Null },
        "instructions": req.instructions,
        "max_output_tokens": req.max_tokens,
        "model": a.model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": null,
        "reasoning": { "effort": null, "summary": null },
        "store": false,
        "temperature": 1.0,
        "text": { "format": format },
        "tool_choice": "auto",
        "tools": tools,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {}
    })
}

/// Responses stream events up to (not including) the final one, and the final
/// `response.completed` (or `.incomplete`) event.
pub fn response_events(a: &MockAnswer, req: &MockRequest) -> (Vec<MockFrame>, MockFrame) {
    let mut seq = 0u64;
    let mut event = |kind: &'static str, mut v: Value| {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(seq);
        seq += 1;
        MockFrame {
            event: Some(kind),
            ..MockFrame::data(v.to_string())
        }
    };
    let mut out = Vec::new();
    let shell = response_object(a, req, false);
    out.push(event("response.created", json!({ "response": shell })));
    out.push(event("response.in_progress", json!({ "response": shell })));
    let c = a.first();
    if c.tool_calls.is_empty() {
        let msg_id = format!("msg_mock_{}", a.seq);
        let mut added = message_item(a, "", "in_progress");
        added["content"] = json!([]);
        out.push(event(
            "response.output_item.added",
            json!({ "output_index": 0, "item": added }),
        ));
        out.push(event(
            "response.content_part.added",
            json!({
                "item_id": msg_id, "output_index": 0, "content_index": 0,
                "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] }
            }),
        ));
        for word in word_deltas(&c.text, 1) {
            let mut f = event(
                "response.output_text.delta",
                json!({
                    "item_id": msg_id, "output_index": 0, "content_index": 0, "delta": word, "logprobs": []
                }),
            );
            f.content = true;
            f.text = word;
            out.push(f);
        }
        out.push(event("response.output_text.done", json!({
            "item_id": msg_id, "output_index": 0, "content_index": 0, "text": c.text, "logprobs": []
        })));
        out.push(event(
            "response.content_part.done",
            json!({
                "item_id": msg_id, "output_index": 0, "content_index": 0,
                "part": { "type": "output_text", "text": c.text, "annotations": [], "logprobs": [] }
            }),
        ));
        let status = if c.finish_reason == "length" {
            "incomplete"
        } else {
            "completed"
        };
        out.push(event(
            "response.output_item.done",
            json!({
                "output_index": 0, "item": message_item(a, &c.text, status)
            }),
        ));
    } else {
        for (k, call) in c.tool_calls.iter().enumerate() {
            let item_id = format!("fc_mock_{}_{k}", a.seq);
            let mut f = event(
                "response.output_item.added",
                json!({
                    "output_index": k, "item": function_call_item(a, k, call, false)
                }),
            );
            f.content = true;
            out.push(f);
            for piece in argument_pieces(&call.arguments) {
                let mut f = event(
                    "response.function_call_arguments.delta",
                    json!({
                        "item_id": item_id, "output_index": k, "delta": piece
                    }),
                );
                f.content = true;
                out.push(f);
            }
            out.push(event(
                "response.function_call_arguments.done",
                json!({
                    "item_id": item_id, "output_index": k, "arguments": call.arguments
                }),
            ));
            out.push(event(
                "response.output_item.done",
                json!({
                    "output_index": k, "item": function_call_item(a, k, call, true)
                }),
            ));
        }
    }
    let done = response_object(a, req, true);
    let kind = if done["status"] == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let last = event(kind, json!({ "response": done }));
    (out, last)
}

// ---------------------------------------------------------------------------------------------
// Embeddings.
// ---------------------------------------------------------------------------------------------

/// The inputs of an embeddings request as text (token arrays as their numbers).
pub fn embedding_inputs(input: &Value) -> Result<Vec<String>, String> {
    let as_text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(tokens) if tokens.iter().all(Value::is_u64) => Some(
                tokens
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }
    };
    let inputs = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            vec![as_text(input).unwrap_or_default()]
        }
        Value::Array(items) => items
            .iter()
            .map(as_text)
            .collect::<Option<Vec<_>>>()
            .ok_or("'input' must be a string, an array of strings or of token arrays")?,
        _ => return Err("'input' must be a string, an array of strings or of token arrays".into()),
    };
    if inputs.is_empty() {
        return Err("'input' must not be empty".into());
    }
    Ok(inputs)
}

/// A deterministic unit vector for `text`.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dimensions)
        .map(|d| {
            let h = fnv1a(format!("{d}:{text}").as_bytes());
            (h % 2001) as f64 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// An embeddings `list` object; `base64` encodes each vector as little-endian f32 bytes, as
/// OpenAI's `encoding_format: base64` does.
pub fn embeddings_list(inputs: &[String], model: &str, dimensions: usize, base64: bool) -> Value {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = embedding(text, dimensions);
            let encoded = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": encoded })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| tokens::count_tokens(t)).sum();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    })
}

/// The `dimensions` and `encoding_format` of an embeddings request.
pub fn embedding_options(v: &Map<String, Value>) -> Result<(usize, bool), String> {
    let dimensions = match v.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(d) => d
            .as_u64()
            .filter(|d| (1..=MAX_DIMENSIONS as u64).contains(d))
            .ok_or(format!(
                "'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}"
            ))? as usize,
    };
    let base64 = match v.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(format!(
                "'encoding_format' must be float or base64, got {other:?}"
            ))
        }
    };
    Ok((dimensions, base64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> MockRequest {
        MockRequest::from_chat(&v).unwrap()
    }

    fn weather_tools() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"], "additionalProperties": false}}}])
    }

    #[test]
    fn tools_are_called_until_their_result_is_in() {
        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "Weather in Lima?"}], "tools": weather_tools()}),
        );
        let a = answer(&req, 8, &Triggers::default(), 1);
        let c = a.first();
        assert_eq!(c.finish_reason, "tool_calls");
        assert_eq!(c.tool_calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&c.tool_calls[0].arguments).unwrap();
        assert_eq!(args["unit"], "c");
        assert!(args["city"].as_str().unwrap().contains("Lima"));
        let body = chat_completion(&a);
        assert!(body["choices"][0]["message"]["content"].is_null());
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );

        let after = chat(json!({"messages": [
            {"role": "user", "content": "Weather in Lima?"},
            {"role": "assistant", "content": null, "tool_calls": body["choices"][0]["message"]["tool_calls"]},
            {"role": "tool", "tool_call_id": c.tool_calls[0].id, "content": "18 C"}], "tools": weather_tools()}));
        let a = answer(&after, 8, &Triggers::default(), 2);
        assert_eq!(a.first().finish_reason, "stop");
        assert!(a.first().tool_calls.is_empty());
        assert!(a.first().text.contains("Weather in"), "{}", a.first().text);
        let none = chat(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": weather_tools(), "tool_choice": "none"}),
        );
        assert!(answer(&none, 8, &Triggers::default(), 3)
            .first()
            .tool_calls
            .is_empty());
    }

    #[test]
    fn streamed_tool_calls_come_in_pieces_that_add_up() {
        let req = chat(
            json!({"messages": [{"role": "user", "content": "Weather in Lima?"}], "tools": weather_tools(), "stream": true}),
        );
        let a = answer(&req, 8, &Triggers::default(), 1);
        let frames = chat_chunks(&a, false, 1);
        let chunks: Vec<Value> = frames
            .iter()
            .map(|f| serde_json::from_str(&f.data).unwrap())
            .collect();
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert!(deltas.len() > 2, "{deltas:?}");
        assert_eq!(deltas[0]["id"], a.first().tool_calls[0].id);
        assert_eq!(deltas[0]["function"]["name"], "get_weather");
        assert!(deltas[1].get("id").is_none());
        let args: String = deltas
            .iter()
            .filter_map(|d| d["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, a.first().tool_calls[0].arguments);
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn n_choices_with_logprobs_and_a_usage_chunk() {
        let req = chat(
            json!({"messages": [{"role": "user", "content": "Say hi"}], "n": 2, "logprobs": true, "top_logprobs": 2}),
        );
        let a = answer(&req, 6, &Triggers::default(), 1);
        assert_eq!(a.choices.len(), 2);
        assert_ne!(a.choices[0].text, a.choices[1].text);
        let body = chat_completion(&a);
        let lp = &body["choices"][1]["logprobs"]["content"];
        assert_eq!(lp.as_array().unwrap().len(), 6);
        assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
        let expected: u64 = a
            .choices
            .iter()
            .map(|c| tokens::count_tokens(&c.text))
            .sum();
        assert_eq!(body["usage"]["completion_tokens"], expected);
        let frames = chat_chunks(&a, true, 2);
        let last: Value = serde_json::from_str(&frames.last().unwrap().data).unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], expected);
        let text: String = frames.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(text, a.choices[0].text);
    }

    #[test]
    fn json_schema_answers_fit_the_schema() {
        let req = chat(json!({"messages": [{"role": "user", "content": "A city"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "strict": true,
                "schema": {"type": "object", "properties": {"name": {"type": "string"}, "pop": {"type": "integer"}},
                           "required": ["name", "pop"], "additionalProperties": false}}}}));
        let a = answer(&req, 8, &Triggers::default(), 1);
        let v: Value = serde_json::from_str(&a.first().text).unwrap();
        assert!(v["name"].is_string() && v["pop"].is_i64(), "{v}");
    }

    #[test]
    fn responses_function_calls_stream_as_items_and_argument_deltas() {
        let req = MockRequest::from_responses(&json!({"model": "m", "input": "Weather in Lima?", "stream": true,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})).unwrap();
        let a = answer(&req, 8, &Triggers::default(), 4);
        let (events, last) = response_events(&a, &req);
        let kinds: Vec<&str> = events.iter().filter_map(|e| e.event).collect();
        assert!(
            kinds.contains(&"response.function_call_arguments.delta"),
            "{kinds:?}"
        );
        assert_eq!(last.event, Some("response.completed"));
        let done: Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(done["response"]["output"][0]["type"], "function_call");
        assert_eq!(done["response"]["output"][0]["name"], "get_weather");
        // The tool's result in, the answer is text.
        let after = MockRequest::from_responses(&json!({"input": [
            {"role": "user", "content": "Weather in Lima?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "18 C"}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}))
        .unwrap();
        let a = answer(&after, 8, &Triggers::default(), 5);
        assert_eq!(
            response_object(&a, &after, true)["output"][0]["type"],
            "message"
        );
    }

    #[test]
    fn embeddings_are_unit_vectors_in_float_or_base64() {
        let inputs = embedding_inputs(&json!(["a", "b"])).unwrap();
        let floats = embeddings_list(&inputs, "e", 8, false);
        let v: Vec<f64> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(v.len(), 8);
        assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
        let b64 = embeddings_list(&inputs, "e", 8, true);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        let first = f32::from_le_bytes(raw[..4].try_into().unwrap());
        assert_eq!(first, embedding("b", 8)[0]);
        assert!(floats["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            embedding_inputs(&json!([1, 2, 3])).unwrap(),
            vec!["1 2 3".to_string()]
        );
        assert!(embedding_inputs(&json!([])).is_err());
        assert!(embedding_inputs(&json!({"x": 1})).is_err());
    }
}
