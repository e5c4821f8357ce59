//! Chat Completions ⇄ Responses. A Chat Completions client whose model version is served by a
//! Responses-API provider, and a Responses client in front of a Chat Completions provider: the
//! request (messages/input items and content parts, tools and tool choice, tool calls and
//! results, json_schema formats, reasoning effort, limits) one way, the answer and its stream
//! (text, refusals, function calls with streamed arguments, usage) the other. Whatever has no
//! equivalent is refused with a 400 naming the field, never dropped.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{SseEvent, SseHandler};
use super::openai_responses::{final_response, stream_error, EventView, ResponseObject};
use super::wire::{sse_frame, JsonBody, DONE_FRAME};
use super::{ProviderError, StreamEnd, StreamEvent, ToolCall};

fn unsupported(param: impl Into<String>, why: &str) -> ProviderError {
    let param = param.into();
    ProviderError::Unsupported {
        message: format!(
            "`{param}` cannot be sent to this model version: its provider speaks the Responses API, \
             which {why}."
        ),
        param,
    }
}

fn unsupported_on_chat(param: impl Into<String>, why: &str) -> ProviderError {
    let param = param.into();
    ProviderError::Unsupported {
        message: format!(
            "`{param}` cannot be sent to this model version: its provider speaks the Chat \
             Completions API, which {why}."
        ),
        param,
    }
}

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
        "total_tokens": input + output,
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
                        .and_then(super::openai_responses::ResponsesUsage::to_usage),
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

// ---------------------------------------------------------------------------------------------
// Responses client → Chat Completions provider.
// ---------------------------------------------------------------------------------------------

/// A Responses request body as a Chat Completions request body for `model`.
pub fn responses_to_chat(
    body: &JsonBody,
    model: &str,
    stream: bool,
) -> Result<Vec<u8>, ProviderError> {
    let req: Map<String, Value> = serde_json::from_slice(body.bytes()).map_err(|e| {
        ProviderError::InvalidResponse(format!("cannot read the request body: {e}"))
    })?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions").filter(|v| !v.is_null()) {
        messages.push(json!({ "role": "system", "content": i }));
    }
    for (key, value) in &req {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "stream" | "instructions" => {}
            "input" => input_items(value, &mut messages)?,
            "tools" => {
                out.insert("tools".into(), chat_tools(value)?);
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), chat_tool_choice(value)?);
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
                out.insert(key.clone(), value.clone());
            }
            "max_output_tokens" => {
                out.insert("max_completion_tokens".into(), value.clone());
            }
            "reasoning" => {
                for (k, v) in value.as_object().into_iter().flatten() {
                    match k.as_str() {
                        "effort" => {
                            out.insert("reasoning_effort".into(), v.clone());
                        }
                        _ if v.is_null() => {}
                        _ => {
                            return Err(unsupported_on_chat(
                                format!("reasoning.{k}"),
                                "has no such option",
                            ))
                        }
                    }
                }
            }
            "text" => {
                for (k, v) in value.as_object().into_iter().flatten() {
                    match k.as_str() {
                        "format" => {
                            out.insert("response_format".into(), chat_format(v)?);
                        }
                        "verbosity" => {
                            out.insert("verbosity".into(), v.clone());
                        }
                        _ if v.is_null() => {}
                        _ => {
                            return Err(unsupported_on_chat(
                                format!("text.{k}"),
                                "has no such option",
                            ))
                        }
                    }
                }
            }
            "truncation" if value == "disabled" => {}
            other => {
                return Err(unsupported_on_chat(
                    other,
                    "keeps no server-side state and has no equivalent",
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    serde_json::to_vec(&out)
        .map_err(|e| ProviderError::InvalidResponse(format!("cannot encode request: {e}")))
}

fn input_items(value: &Value, messages: &mut Vec<Value>) -> Result<(), ProviderError> {
    let items = match value {
        Value::String(s) => {
            messages.push(json!({ "role": "user", "content": s }));
            return Ok(());
        }
        Value::Array(items) => items,
        _ => {
            return Err(unsupported_on_chat(
                "input",
                "needs a string or input items",
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                let content = match item.get("content") {
                    Some(Value::Array(parts)) => chat_parts(parts, role, i)?,
                    Some(c) => c.clone(),
                    None => json!(""),
                };
                messages.push(json!({ "role": role, "content": content }));
            }
            "function_call" => {
                let call = json!({
                    "id": item["call_id"], "type": "function",
                    "function": { "name": item["name"], "arguments": item["arguments"] }
                });
                // Calls made together are one assistant message with several tool calls.
                match messages.last_mut() {
                    Some(last)
                        if last["role"] == "assistant" && last.get("tool_calls").is_some() =>
                    {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    _ => messages.push(
                        json!({ "role": "assistant", "content": null, "tool_calls": [call] }),
                    ),
                }
            }
            "function_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect(),
                    other => other.to_string(),
                };
                messages.push(
                    json!({ "role": "tool", "tool_call_id": item["call_id"], "content": output }),
                );
            }
            // A reasoning item only means something to the model that wrote it (its content is
            // encrypted or a summary); a Chat Completions model cannot take it back.
            "reasoning" => {}
            _ => {
                return Err(unsupported_on_chat(
                    format!("input[{i}]"),
                    "has no such input item",
                ))
            }
        }
    }
    Ok(())
}

fn chat_parts(parts: &[Value], role: &str, i: usize) -> Result<Value, ProviderError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let here = || format!("input[{i}].content[{j}]");
        out.push(
            match p.get("type").and_then(Value::as_str).unwrap_or_default() {
                "input_text" | "output_text" => json!({ "type": "text", "text": p["text"] }),
                "refusal" if role == "assistant" => {
                    json!({ "type": "refusal", "refusal": p["refusal"] })
                }
                "input_image" => match p.get("image_url").filter(|u| !u.is_null()) {
                    Some(url) => {
                        let mut image = json!({ "url": url });
                        if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                            image["detail"] = d.clone();
                        }
                        json!({ "type": "image_url", "image_url": image })
                    }
                    None => return Err(unsupported_on_chat(here(), "takes images by URL only")),
                },
                "input_file" => {
                    let mut file = json!({});
                    for field in ["file_id", "file_data", "filename"] {
                        if let Some(v) = p.get(field).filter(|v| !v.is_null()) {
                            file[field] = v.clone();
                        }
                    }
                    json!({ "type": "file", "file": file })
                }
                _ => return Err(unsupported_on_chat(here(), "has no such content part")),
            },
        );
    }
    Ok(Value::Array(out))
}

fn chat_tools(value: &Value) -> Result<Value, ProviderError> {
    let list = value
        .as_array()
        .ok_or_else(|| unsupported_on_chat("tools", "needs an array of tools"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(unsupported_on_chat(
                format!("tools[{i}]"),
                "has only function tools",
            ));
        }
        let mut function = json!({ "name": t["name"] });
        for field in ["description", "parameters", "strict"] {
            if let Some(v) = t.get(field).filter(|v| !v.is_null()) {
                function[field] = v.clone();
            }
        }
        out.push(json!({ "type": "function", "function": function }));
    }
    Ok(Value::Array(out))
}

fn chat_tool_choice(value: &Value) -> Result<Value, ProviderError> {
    match value {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(value.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            Ok(json!({ "type": "function", "function": { "name": value["name"] } }))
        }
        _ => Err(unsupported_on_chat(
            "tool_choice",
            "has no such tool choice",
        )),
    }
}

fn chat_format(format: &Value) -> Result<Value, ProviderError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({ "type": "text" })),
        Some("json_object") => Ok(json!({ "type": "json_object" })),
        Some("json_schema") => {
            let mut schema = json!({ "name": format["name"], "schema": format["schema"] });
            for field in ["strict", "description"] {
                if let Some(v) = format.get(field).filter(|v| !v.is_null()) {
                    schema[field] = v.clone();
                }
            }
            Ok(json!({ "type": "json_schema", "json_schema": schema }))
        }
        _ => Err(unsupported_on_chat(
            "text.format.type",
            "has no such format",
        )),
    }
}

/// The request's members a Responses object repeats back.
fn echoed(req: &JsonBody) -> Map<String, Value> {
    let mut out = Map::new();
    for name in [
        "instructions",
        "tools",
        "text",
        "metadata",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
    ] {
        if let Some(raw) = req.get(name) {
            if let Ok(v) = serde_json::from_slice::<Value>(raw) {
                out.insert(name.to_string(), v);
            }
        }
    }
    for (name, default) in [
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
    ] {
        let v = req
            .get(name)
            .and_then(|raw| serde_json::from_slice(raw).ok())
            .unwrap_or(default);
        out.insert(name.to_string(), v);
    }
    out
}

fn responses_usage(usage: &Value) -> Value {
    if usage.is_null() {
        return Value::Null;
    }
    let input = usage["prompt_tokens"].as_u64().unwrap_or(0);
    let output = usage["completion_tokens"].as_u64().unwrap_or(0);
    json!({
        "input_tokens": input,
        "input_tokens_details": { "cached_tokens": usage.pointer("/prompt_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0) },
        "output_tokens": output,
        "output_tokens_details": { "reasoning_tokens": usage.pointer("/completion_tokens_details/reasoning_tokens").and_then(Value::as_u64).unwrap_or(0) },
        "total_tokens": input + output,
    })
}

fn status_of(finish_reason: &str) -> (&'static str, Value) {
    match finish_reason {
        "length" => ("incomplete", json!({ "reason": "max_output_tokens" })),
        "content_filter" => ("incomplete", json!({ "reason": "content_filter" })),
        _ => ("completed", Value::Null),
    }
}

fn message_item(id: &str, text: &str, refusal: &str, status: &str) -> Value {
    let mut content = Vec::new();
    if !text.is_empty() || refusal.is_empty() {
        content.push(
            json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }),
        );
    }
    if !refusal.is_empty() {
        content.push(json!({ "type": "refusal", "refusal": refusal }));
    }
    json!({ "id": id, "type": "message", "status": status, "role": "assistant", "content": content })
}

fn call_item(call: &ToolCall, status: &str) -> Value {
    json!({ "id": format!("fc_{}", call.id), "type": "function_call", "status": status,
            "call_id": call.id, "name": call.name, "arguments": call.arguments })
}

/// What a Responses object says about the answer.
struct Outcome<'a> {
    id: &'a str,
    created: i64,
    model: &'a str,
    status: &'a str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Value,
}

/// A Responses object around an outcome, echoing the request.
fn response_shell(o: Outcome<'_>, echo: &Map<String, Value>) -> Value {
    let mut r = json!({
        "id": o.id, "object": "response", "created_at": o.created, "status": o.status, "error": null,
        "incomplete_details": o.incomplete, "model": o.model, "output": o.output, "usage": o.usage,
        "instructions": null, "tools": [], "text": { "format": { "type": "text" } }, "metadata": {},
    });
    for (k, v) in echo {
        r[k] = v.clone();
    }
    r
}

/// A `chat.completion` object as a Responses `response` object (`req`: the client's request).
pub fn chat_completion_to_response(chat: &[u8], req: &JsonBody) -> Vec<u8> {
    let v: Value = serde_json::from_slice(chat).unwrap_or_default();
    let choice = &v["choices"][0];
    let message = &choice["message"];
    let text = super::mock::shapes::content_text(&message["content"]);
    let refusal = message["refusal"].as_str().unwrap_or_default();
    let id = v["id"].as_str().unwrap_or("translated");
    let mut output = Vec::new();
    let (status, incomplete) = status_of(choice["finish_reason"].as_str().unwrap_or("stop"));
    if !text.is_empty() || !refusal.is_empty() || message["tool_calls"].is_null() {
        output.push(message_item(&format!("msg_{id}"), &text, refusal, status));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let call = ToolCall {
            id: call["id"].as_str().unwrap_or_default().to_string(),
            name: call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            arguments: call["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        output.push(call_item(&call, "completed"));
    }
    let r = response_shell(
        Outcome {
            id: &format!("resp_{id}"),
            created: v["created"].as_i64().unwrap_or(0),
            model: v["model"].as_str().unwrap_or_default(),
            status,
            incomplete,
            output,
            usage: responses_usage(&v["usage"]),
        },
        &echoed(req),
    );
    serde_json::to_vec(&r).unwrap_or_default()
}

/// `chat.completion.chunk` events → Responses stream events: the created / in-progress shell,
/// a message item with its text deltas, function-call items with their argument deltas, and
/// `response.completed` with the whole response once the upstream is done.
#[derive(Debug)]
pub struct ChatToResponsesStream {
    echo: Map<String, Value>,
    id: String,
    model: String,
    created: i64,
    seq: u64,
    started: bool,
    /// The message item's output index, once opened.
    message_at: Option<usize>,
    text: String,
    refusal: String,
    /// Function calls by their chat `index`: the call and its output index.
    calls: Vec<(ToolCall, usize)>,
    /// Output items opened so far (done ones included).
    items: usize,
    finish_reason: Option<String>,
    usage: Value,
}

impl ChatToResponsesStream {
    pub fn new(req: &JsonBody) -> Self {
        ChatToResponsesStream {
            echo: echoed(req),
            id: "resp_translated".into(),
            model: String::new(),
            created: 0,
            seq: 0,
            started: false,
            message_at: None,
            text: String::new(),
            refusal: String::new(),
            calls: Vec::new(),
            items: 0,
            finish_reason: None,
            usage: Value::Null,
        }
    }

    fn event(&mut self, kind: &str, mut v: Value) -> Bytes {
        v["type"] = json!(kind);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        sse_frame(Some(kind), &v.to_string())
    }

    fn push(
        &mut self,
        out: &mut Vec<StreamEvent>,
        kind: &str,
        v: Value,
        text: String,
        content: bool,
    ) {
        let frame = self.event(kind, v);
        out.push(StreamEvent::Chunk {
            frame,
            text,
            content,
        });
    }

    fn msg_id(&self) -> String {
        format!("msg_{}", self.id)
    }

    fn shell(&self, status: &str, incomplete: Value, output: Vec<Value>, usage: Value) -> Value {
        let outcome = Outcome {
            id: &self.id,
            created: self.created,
            model: &self.model,
            status,
            incomplete,
            output,
            usage,
        };
        response_shell(outcome, &self.echo)
    }

    fn open_message(&mut self, out: &mut Vec<StreamEvent>) -> usize {
        if let Some(at) = self.message_at {
            return at;
        }
        let at = self.items;
        self.items += 1;
        self.message_at = Some(at);
        let mut item = message_item(&self.msg_id(), "", "", "in_progress");
        item["content"] = json!([]);
        self.push(
            out,
            "response.output_item.added",
            json!({ "output_index": at, "item": item }),
            String::new(),
            false,
        );
        let id = self.msg_id();
        self.push(
            out,
            "response.content_part.added",
            json!({ "item_id": id, "output_index": at, "content_index": 0,
            "part": { "type": "output_text", "text": "", "annotations": [], "logprobs": [] } }),
            String::new(),
            false,
        );
        at
    }

    /// Closes every open item and ends with `response.completed` (or `.incomplete`).
    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> StreamEvent {
        let finish_reason = self.finish_reason.take().unwrap_or_else(|| "stop".into());
        let (status, incomplete) = status_of(&finish_reason);
        let mut output: Vec<(usize, Value)> = Vec::new();
        if let Some(at) = self.message_at {
            let id = self.msg_id();
            let text = self.text.clone();
            self.push(out, "response.output_text.done", json!({ "item_id": id, "output_index": at, "content_index": 0, "text": text, "logprobs": [] }), String::new(), false);
            self.push(out, "response.content_part.done", json!({ "item_id": id, "output_index": at, "content_index": 0,
                "part": { "type": "output_text", "text": text, "annotations": [], "logprobs": [] } }), String::new(), false);
            let item = message_item(&id, &self.text, &self.refusal, status);
            self.push(
                out,
                "response.output_item.done",
                json!({ "output_index": at, "item": item }),
                String::new(),
                false,
            );
            output.push((at, item));
        }
        for (call, at) in self.calls.clone() {
            let item_id = format!("fc_{}", call.id);
            self.push(
                out,
                "response.function_call_arguments.done",
                json!({ "item_id": item_id, "output_index": at, "arguments": call.arguments }),
                String::new(),
                false,
            );
            let item = call_item(&call, "completed");
            self.push(
                out,
                "response.output_item.done",
                json!({ "output_index": at, "item": item }),
                String::new(),
                false,
            );
            output.push((at, item));
        }
        output.sort_by_key(|(at, _)| *at);
        let usage = responses_usage(&self.usage);
        let response = self.shell(
            status,
            incomplete,
            output.into_iter().map(|(_, v)| v).collect(),
            usage,
        );
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let trailer = self.event(kind, json!({ "response": response }));
        StreamEvent::Done(StreamEnd {
            finish_reason,
            usage: super::wire::ChatUsage::deserialize(&self.usage)
                .ok()
                .and_then(|u| u.to_usage()),
            tool_calls: self.calls.iter().map(|(c, _)| c.clone()).collect(),
            upstream_model: Some(self.model.clone()),
            trailer,
        })
    }
}

impl SseHandler for ChatToResponsesStream {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            let done = self.finish(out);
            out.push(done);
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream chunk: {e}"))
        })?;
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(ProviderError::InvalidResponse(format!(
                "upstream reported an error mid-stream: {}",
                err["message"].as_str().unwrap_or_default()
            )));
        }
        if !self.started {
            self.started = true;
            if let Some(id) = chunk["id"].as_str() {
                self.id = format!("resp_{id}");
            }
            self.model = chunk["model"].as_str().unwrap_or_default().to_string();
            self.created = chunk["created"].as_i64().unwrap_or(0);
            let shell = self.shell("in_progress", Value::Null, Vec::new(), Value::Null);
            self.push(
                out,
                "response.created",
                json!({ "response": shell }),
                String::new(),
                false,
            );
            self.push(
                out,
                "response.in_progress",
                json!({ "response": shell }),
                String::new(),
                false,
            );
        }
        if !chunk["usage"].is_null() {
            self.usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0))
        else {
            return Ok(());
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let at = self.open_message(out);
            self.text.push_str(text);
            let id = self.msg_id();
            self.push(out, "response.output_text.delta", json!({ "item_id": id, "output_index": at, "content_index": 0, "delta": text, "logprobs": [] }), text.to_string(), true);
        }
        if let Some(refusal) = delta["refusal"].as_str().filter(|t| !t.is_empty()) {
            let at = self.open_message(out);
            self.refusal.push_str(refusal);
            let id = self.msg_id();
            self.push(
                out,
                "response.refusal.delta",
                json!({ "item_id": id, "output_index": at, "content_index": 0, "delta": refusal }),
                String::new(),
                true,
            );
        }
        for t in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = t["index"].as_u64().unwrap_or(0) as usize;
            if index > self.calls.len() + 64 {
                continue;
            }
            while self.calls.len() <= index {
                let at = self.items;
                self.items += 1;
                let call = ToolCall {
                    id: t["id"].as_str().unwrap_or_default().to_string(),
                    name: t["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    arguments: String::new(),
                };
                let item = call_item(&call, "in_progress");
                self.calls.push((call, at));
                self.push(
                    out,
                    "response.output_item.added",
                    json!({ "output_index": at, "item": item }),
                    String::new(),
                    true,
                );
            }
            let (call, at) = &mut self.calls[index];
            let at = *at;
            if let Some(piece) = t["function"]["arguments"]
                .as_str()
                .filter(|p| !p.is_empty())
            {
                call.arguments.push_str(piece);
                let item_id = format!("fc_{}", call.id);
                self.push(
                    out,
                    "response.function_call_arguments.delta",
                    json!({ "item_id": item_id, "output_index": at, "delta": piece }),
                    String::new(),
                    true,
                );
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_string());
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        if self.finish_reason.is_some() {
            // No [DONE], but the answer had finished: the closing events go out with the last.
            let mut closing = Vec::new();
            let mut done = self.finish(&mut closing);
            if let StreamEvent::Done(end) = &mut done {
                let mut trailer = Vec::new();
                for e in closing {
                    if let StreamEvent::Chunk { frame, .. } = e {
                        trailer.extend_from_slice(&frame);
                    }
                }
                trailer.extend_from_slice(&end.trailer);
                end.trailer = Bytes::from(trailer);
            }
            Ok(done)
        } else {
            Err(ProviderError::StreamInterrupted(
                "the stream ended before the final chunk".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Result<Value, ProviderError> {
        let body = JsonBody::parse(Bytes::from(body.to_string())).unwrap();
        chat_to_responses(&body, "gpt-5", false).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_tool_conversation_translates_both_ways() {
        let v = translate(json!({
            "model": "alias",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Lima\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low",
            "max_completion_tokens": 50,
            "n": 1,
            "stream_options": {"include_usage": true}
        }))
        .unwrap();
        assert_eq!(v["model"], "gpt-5");
        assert_eq!(
            v["input"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["input"][1]["content"][0],
            json!({"type": "input_text", "text": "Weather?"})
        );
        assert_eq!(v["input"][1]["content"][1]["type"], "input_image");
        assert_eq!(
            v["input"][2],
            json!({"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Lima\"}"})
        );
        assert_eq!(
            v["input"][3],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "18 C"})
        );
        assert_eq!(v["tools"][0]["name"], "weather");
        assert_eq!(v["tools"][0]["strict"], false);
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "name": "weather"})
        );
        assert_eq!(v["text"]["format"]["type"], "json_schema");
        assert_eq!(v["text"]["format"]["strict"], true);
        assert_eq!(v["reasoning"]["effort"], "low");
        assert_eq!(v["max_output_tokens"], 50);
        assert_eq!(v["parallel_tool_calls"], false);

        let object: ResponseObject = serde_json::from_value(json!({
            "id": "resp_1", "created_at": 7, "model": "gpt-5", "status": "completed",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "id": "fc_1", "call_id": "call_2", "name": "weather", "arguments": "{}"}
            ],
            "usage": {"input_tokens": 10, "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 3}}
        }))
        .unwrap();
        let chat: Value = serde_json::from_slice(&response_to_chat_completion(&object)).unwrap();
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert!(chat["choices"][0]["message"]["content"].is_null());
        assert_eq!(
            chat["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_2"
        );
        assert_eq!(chat["usage"]["total_tokens"], 15);
        assert_eq!(
            chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
            3
        );
    }

    #[test]
    fn what_cannot_be_translated_is_named() {
        let base = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (field, value, param) in [
            ("n", json!(2), "n"),
            ("logprobs", json!(true), "logprobs"),
            ("stop", json!(["x"]), "stop"),
            ("seed", json!(1), "seed"),
            ("frequency_penalty", json!(0.5), "frequency_penalty"),
            ("logit_bias", json!({"1": 1}), "logit_bias"),
            (
                "tools",
                json!([{"type": "custom", "custom": {"name": "x"}}]),
                "tools[0]",
            ),
        ] {
            let mut body = base.clone();
            body[field] = value;
            match translate(body) {
                Err(ProviderError::Unsupported { param: p, .. }) => assert_eq!(p, param),
                other => panic!("{field}: {other:?}"),
            }
        }
        let named =
            translate(json!({"messages": [{"role": "user", "name": "bob", "content": "hi"}]}));
        assert!(
            matches!(named, Err(ProviderError::Unsupported { param, .. }) if param == "messages[0].name")
        );
        let audio = translate(
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]}),
        );
        assert!(
            matches!(audio, Err(ProviderError::Unsupported { param, .. }) if param == "messages[0].content[0]")
        );
        // Nulls are absent values, not fields to translate.
        assert!(translate(json!({"messages": [{"role": "user", "content": "hi"}], "stop": null, "logprobs": false})).is_ok());
    }

    fn to_chat(body: Value) -> Result<Value, ProviderError> {
        let body = JsonBody::parse(Bytes::from(body.to_string())).unwrap();
        responses_to_chat(&body, "llama", false).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn responses_input_items_become_messages() {
        let v = to_chat(json!({
            "model": "alias", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "18 C"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]}
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "high", "summary": null},
            "max_output_tokens": 10, "store": false, "truncation": "disabled"
        }))
        .unwrap();
        let m = &v["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}})
        );
        assert_eq!(
            m[2]["tool_calls"].as_array().unwrap().len(),
            2,
            "calls made together stay together"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "18 C"})
        );
        assert_eq!(m[4]["content"], "noon");
        assert_eq!(
            m.as_array().unwrap().len(),
            5,
            "the reasoning item is not sent"
        );
        assert_eq!(v["tools"][0]["function"]["strict"], true);
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(v["response_format"]["json_schema"]["name"], "w");
        assert_eq!(v["reasoning_effort"], "high");
        assert_eq!(v["max_completion_tokens"], 10);
        for (field, value, param) in [
            (
                "previous_response_id",
                json!("resp_1"),
                "previous_response_id",
            ),
            ("tools", json!([{"type": "web_search"}]), "tools[0]"),
            ("truncation", json!("auto"), "truncation"),
            ("include", json!(["reasoning.encrypted_content"]), "include"),
            (
                "input",
                json!([{"type": "item_reference", "id": "x"}]),
                "input[0]",
            ),
        ] {
            let mut body = json!({"input": "hi"});
            body[field] = value;
            match to_chat(body) {
                Err(ProviderError::Unsupported { param: p, message }) => {
                    assert_eq!(p, param);
                    assert!(message.contains("Chat Completions"), "{message}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_chat_answer_becomes_a_response_object() {
        let req = JsonBody::parse(Bytes::from_static(
            br#"{"input":"x","instructions":"Be brief."}"#,
        ))
        .unwrap();
        let chat = json!({"id": "chatcmpl-9", "created": 5, "model": "llama", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hi", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let r: Value = serde_json::from_slice(&chat_completion_to_response(
            chat.to_string().as_bytes(),
            &req,
        ))
        .unwrap();
        assert_eq!(r["id"], "resp_chatcmpl-9");
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(r["output"][1]["call_id"], "c1");
        assert_eq!(r["usage"]["total_tokens"], 7);
        assert_eq!(r["instructions"], "Be brief.");
        assert_eq!(r["tool_choice"], "auto");
    }

    #[test]
    fn streamed_function_calls_become_tool_call_deltas() {
        let mut t = ResponsesToChatStream::new(true);
        let mut out = Vec::new();
        for (kind, data) in [
            (
                "response.created",
                json!({"type": "response.created", "response": {"id": "resp_9", "model": "gpt-5", "created_at": 3, "output": []}}),
            ),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": ""}}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{\"city\""}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": ":\"Lima\"}"}),
            ),
            (
                "response.completed",
                json!({"type": "response.completed", "response": {"status": "completed", "model": "gpt-5", "output": [{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Lima\"}"}], "usage": {"input_tokens": 4, "output_tokens": 6}}}),
            ),
        ] {
            t.on_event(
                SseEvent {
                    event: Some(kind.into()),
                    data: data.to_string(),
                },
                &mut out,
            )
            .unwrap();
        }
        let chunks: Vec<Value> = out
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Chunk { frame, .. } if !frame.is_empty() => {
                    let text = std::str::from_utf8(frame).unwrap();
                    Some(serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(chunks[0]["id"], "resp_9");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_1"
        );
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{\"city\":\"Lima\"}");
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["usage"]["total_tokens"], 10);
        match out.last().unwrap() {
            StreamEvent::Done(end) => {
                assert_eq!(end.tool_calls.len(), 1);
                assert_eq!(&end.trailer[..], DONE_FRAME);
            }
            other => panic!("{other:?}"),
        }
    }
}
