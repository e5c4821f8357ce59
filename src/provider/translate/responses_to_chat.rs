//! A Responses client in front of a Chat Completions provider: its request translated into a Chat
//! Completions request, the Chat Completions answer and stream translated back into Responses.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::unsupported_on_chat;
use crate::provider::sse::{SseEvent, SseHandler};
use crate::provider::wire::{sse_frame, JsonBody};
use crate::provider::{ProviderError, StreamEnd, StreamEvent, ToolCall};

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
        "total_tokens": input.saturating_add(output),
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
    let text = crate::provider::mock::shapes::content_text(&message["content"]);
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
            usage: crate::provider::wire::ChatUsage::deserialize(&self.usage)
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
