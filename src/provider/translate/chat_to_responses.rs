//! A Chat Completions client in front of a Responses-API provider: its request translated into
//! a Responses request, the Responses answer and stream translated back into Chat Completions.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::unsupported;
use crate::provider::openai_responses::{final_response, stream_error, EventView, ResponseObject};
use crate::provider::sse::{SseEvent, SseHandler};
use crate::provider::wire::{sse_frame, JsonBody, DONE_FRAME};
use crate::provider::{ProviderError, StreamEnd, StreamEvent, ToolCall};

/// A Chat Completions request body as a Responses request body for `model`.
pub fn chat_to_responses(
    body: &JsonBody,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, ProviderError> {
    let req: Map<String, Value> = serde_json::from_slice(body.bytes()).map_err(|e| {
        ProviderError::InvalidResponse(format!("cannot read the request body: {e}"))
    })?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut text = Map::new();
    for (key, value) in req {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "stream" => {}
            "stream_options" => {
                // include_usage is honoured by the stream translator; nothing else is known.
                let extra = value
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "include_usage").cloned());
                if let Some(k) = extra {
                    return Err(unsupported(
                        format!("stream_options.{k}"),
                        "has no such option",
                    ));
                }
            }
            "messages" => messages(&value, &mut out)?,
            "tools" => {
                out.insert("tools".into(), tools(&value)?);
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(&value)?);
            }
            "parallel_tool_calls"
            | "temperature"
            | "top_p"
            | "user"
            | "metadata"
            | "store"
            | "service_tier"
            | "prompt_cache_key"
            | "safety_identifier" => {
                out.insert(key, value);
            }
            "max_tokens" | "max_completion_tokens" => {
                out.insert("max_output_tokens".into(), value);
            }
            "reasoning_effort" => {
                out.insert("reasoning".into(), json!({ "effort": value }));
            }
            "verbosity" => {
                text.insert("verbosity".into(), value);
            }
            "response_format" => {
                text.insert("format".into(), response_format(&value)?);
            }
            "n" if value == json!(1) => {}
            "n" => return Err(unsupported("n", "returns one answer per request")),
            "logprobs" if value == json!(false) => {}
            "logprobs" | "top_logprobs" => {
                return Err(unsupported(
                    key,
                    "the gateway does not translate log probabilities",
                ))
            }
            other => return Err(unsupported(other, "has no equivalent")),
        }
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    serde_json::to_vec(&out)
        .map_err(|e| ProviderError::InvalidResponse(format!("cannot encode request: {e}")))
}

fn messages(value: &Value, out: &mut Map<String, Value>) -> Result<(), ProviderError> {
    let list = value
        .as_array()
        .ok_or_else(|| unsupported("messages", "needs an array of messages"))?;
    let mut input = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let obj = m
            .as_object()
            .ok_or_else(|| unsupported(format!("messages[{i}]"), "needs message objects"))?;
        let role = obj.get("role").and_then(Value::as_str).unwrap_or_default();
        for key in obj.keys() {
            let known = match role {
                "assistant" => {
                    matches!(key.as_str(), "role" | "content" | "tool_calls" | "refusal")
                }
                "tool" => matches!(key.as_str(), "role" | "content" | "tool_call_id"),
                _ => matches!(key.as_str(), "role" | "content"),
            };
            if !known && !obj[key].is_null() {
                return Err(unsupported(at(key), "has no such message field"));
            }
        }
        let content = obj.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" | "user" => {
                let content = match content {
                    Some(c) => input_content(c, role, i)?,
                    None => json!(""),
                };
                input.push(json!({ "role": role, "content": content }));
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(c) = content {
                    match input_content(c, role, i)? {
                        Value::String(s) if s.is_empty() => {}
                        Value::String(s) => parts.push(json!({ "type": "output_text", "text": s })),
                        Value::Array(mut p) => parts.append(&mut p),
                        _ => {}
                    }
                }
                if let Some(r) = obj.get("refusal").and_then(Value::as_str) {
                    parts.push(json!({ "type": "refusal", "refusal": r }));
                }
                if !parts.is_empty() {
                    input.push(json!({ "role": "assistant", "content": parts }));
                }
                for (j, call) in obj
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = &call["function"];
                    if call
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("function")
                        != "function"
                        || !f.is_object()
                    {
                        return Err(unsupported(
                            format!("messages[{i}].tool_calls[{j}]"),
                            "only carries function calls",
                        ));
                    }
                    input.push(json!({
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": f["name"],
                        "arguments": f["arguments"],
                    }));
                }
            }
            "tool" => {
                let output = match content {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect(),
                    _ => String::new(),
                };
                input.push(json!({
                    "type": "function_call_output",
                    "call_id": obj.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "output": output,
                }));
            }
            _ => return Err(unsupported(at("role"), "has no such role")),
        }
    }
    out.insert("input".into(), Value::Array(input));
    Ok(())
}

/// A message's content as Responses input content: a string as is, parts translated.
fn input_content(content: &Value, role: &str, i: usize) -> Result<Value, ProviderError> {
    let Some(parts) = content.as_array() else {
        return Ok(content.clone());
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let here = format!("messages[{i}].content[{j}]");
        let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
        out.push(match (kind, role) {
            ("text", "assistant") => json!({ "type": "output_text", "text": p["text"] }),
            ("text", _) => json!({ "type": "input_text", "text": p["text"] }),
            ("refusal", "assistant") => json!({ "type": "refusal", "refusal": p["refusal"] }),
            ("image_url", "user") => {
                let image = &p["image_url"];
                let mut part = json!({ "type": "input_image", "image_url": image["url"] });
                part["detail"] = image.get("detail").cloned().unwrap_or(json!("auto"));
                part
            }
            ("file", "user") => {
                let mut part = json!({ "type": "input_file" });
                for field in ["file_id", "file_data", "filename"] {
                    if let Some(v) = p["file"].get(field) {
                        part[field] = v.clone();
                    }
                }
                part
            }
            ("input_audio", "user") => {
                return Err(unsupported(
                    here,
                    "the gateway does not translate audio input for",
                ))
            }
            _ => return Err(unsupported(here, "has no such content part for this role")),
        });
    }
    Ok(Value::Array(out))
}

fn tools(value: &Value) -> Result<Value, ProviderError> {
    let list = value
        .as_array()
        .ok_or_else(|| unsupported("tools", "needs an array of tools"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let f = &t["function"];
        if t.get("type").and_then(Value::as_str) != Some("function") || !f.is_object() {
            return Err(unsupported(
                format!("tools[{i}]"),
                "only takes function tools here",
            ));
        }
        let mut tool = json!({ "type": "function", "name": f["name"] });
        for field in ["description", "parameters", "strict"] {
            if let Some(v) = f.get(field).filter(|v| !v.is_null()) {
                tool[field] = v.clone();
            }
        }
        // Chat Completions tools are not strict unless they say so; Responses ones are.
        if tool.get("strict").is_none() {
            tool["strict"] = json!(false);
        }
        out.push(tool);
    }
    Ok(Value::Array(out))
}

fn tool_choice(value: &Value) -> Result<Value, ProviderError> {
    match value {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(value.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(json!({ "type": "function", "name": value["function"]["name"] }))
        }
        _ => Err(unsupported("tool_choice", "has no such tool choice")),
    }
}

fn response_format(value: &Value) -> Result<Value, ProviderError> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({ "type": "text" })),
        Some("json_object") => Ok(json!({ "type": "json_object" })),
        Some("json_schema") => {
            let s = &value["json_schema"];
            let mut format =
                json!({ "type": "json_schema", "name": s["name"], "schema": s["schema"] });
            for field in ["strict", "description"] {
                if let Some(v) = s.get(field).filter(|v| !v.is_null()) {
                    format[field] = v.clone();
                }
            }
            Ok(format)
        }
        _ => Err(unsupported(
            "response_format.type",
            "has no such response format",
        )),
    }
}

fn chat_usage(object: &ResponseObject) -> Value {
    let Some(u) = &object.usage else {
        return Value::Null;
    };
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input.saturating_add(output),
        "prompt_tokens_details": {
            "cached_tokens": u.input_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0)
        },
        "completion_tokens_details": {
            "reasoning_tokens": u.output_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0)
        }
    })
}

fn tool_call_json(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } })
        })
        .collect()
}

/// A Responses `response` object as a `chat.completion` object.
pub fn response_to_chat_completion(object: &ResponseObject) -> Vec<u8> {
    let text = object.output_text();
    let refusal = object.refusal();
    let calls = object.tool_calls();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && (!calls.is_empty() || !refusal.is_empty()) { Value::Null } else { json!(text) },
        "refusal": if refusal.is_empty() { Value::Null } else { json!(refusal) },
        "annotations": [],
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_call_json(&calls));
    }
    let body = json!({
        "id": object.id.as_deref().unwrap_or("chatcmpl-translated"),
        "object": "chat.completion",
        "created": object.created_at.unwrap_or(0),
        "model": object.model.as_deref().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": object.finish_reason().unwrap_or_else(|_| "stop".into()),
        }],
        "usage": chat_usage(object),
        "service_tier": object.service_tier,
        "system_fingerprint": null,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Responses stream events → `chat.completion.chunk` events.
#[derive(Debug, Default)]
pub struct ResponsesToChatStream {
    include_usage: bool,
    id: String,
    model: String,
    created: i64,
    /// Function-call item ids → their `tool_calls` index.
    calls: HashMap<String, usize>,
}

impl ResponsesToChatStream {
    pub fn new(include_usage: bool) -> Self {
        ResponsesToChatStream {
            include_usage,
            id: "chatcmpl-translated".into(),
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        sse_frame(None, &v.to_string())
    }

    fn push(out: &mut Vec<StreamEvent>, frame: Bytes, text: String, content: bool) {
        out.push(StreamEvent::Chunk {
            frame,
            text,
            content,
        });
    }
}

impl SseHandler for ResponsesToChatStream {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let view: EventView = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream event: {e}"))
        })?;
        let kind = view
            .kind
            .as_deref()
            .or(ev.event.as_deref())
            .unwrap_or_default();
        match kind {
            "response.created" => {
                if let Ok(r) = final_response(view.response) {
                    if let Some(id) = r.id {
                        self.id = id;
                    }
                    self.model = r.model.unwrap_or_default();
                    self.created = r.created_at.unwrap_or(0);
                }
                let frame = self.chunk(
                    json!({ "role": "assistant", "content": "", "refusal": null }),
                    None,
                );
                Self::push(out, frame, String::new(), false);
            }
            "response.output_text.delta" => {
                let d = view.delta.as_deref().unwrap_or_default();
                let frame = self.chunk(json!({ "content": d }), None);
                Self::push(out, frame, d.to_string(), !d.is_empty());
            }
            "response.refusal.delta" => {
                let d = view.delta.as_deref().unwrap_or_default();
                let frame = self.chunk(json!({ "refusal": d }), None);
                Self::push(out, frame, String::new(), true);
            }
            "response.output_item.added" => {
                let item: Value = view
                    .item
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or_default();
                if item["type"] == "function_call" {
                    let index = self.calls.len();
                    if let Some(id) = item["id"].as_str() {
                        self.calls.insert(id.to_string(), index);
                    }
                    let frame = self.chunk(
                        json!({ "tool_calls": [{
                            "index": index, "id": item["call_id"], "type": "function",
                            "function": { "name": item["name"], "arguments": "" }
                        }] }),
                        None,
                    );
                    Self::push(out, frame, String::new(), true);
                }
            }
            "response.function_call_arguments.delta" => {
                let index = view
                    .item_id
                    .as_deref()
                    .and_then(|id| self.calls.get(id).copied())
                    .unwrap_or(self.calls.len().saturating_sub(1));
                let frame = self.chunk(
                    json!({ "tool_calls": [{ "index": index, "function": { "arguments": view.delta.as_deref().unwrap_or_default() } }] }),
                    None,
                );
                Self::push(out, frame, String::new(), true);
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = final_response(view.response)?;
                let finish_reason = response.finish_reason()?;
                if kind == "response.failed" {
                    return Err(ProviderError::InvalidResponse(
                        "the response failed without details".into(),
                    ));
                }
                let frame = self.chunk(json!({}), Some(&finish_reason));
                Self::push(out, frame, String::new(), false);
                if self.include_usage {
                    let v = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": chat_usage(&response),
                    });
                    Self::push(out, sse_frame(None, &v.to_string()), String::new(), false);
                }
                out.push(StreamEvent::Done(StreamEnd {
                    finish_reason,
                    usage: response
                        .usage
                        .as_ref()
                        .and_then(crate::provider::openai_responses::ResponsesUsage::to_usage),
                    tool_calls: response.tool_calls(),
                    upstream_model: response.model.clone(),
                    trailer: Bytes::from_static(DONE_FRAME),
                }));
            }
            "error" => return Err(stream_error(data)),
            _ => {}
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        Err(ProviderError::StreamInterrupted(
            "the stream ended before response.completed".into(),
        ))
    }
}
