//! The mock's answers as the Responses API: response objects and their stream events.

use serde_json::{json, Value};

use super::*;

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
            "total_tokens": a.input_tokens.saturating_add(a.output_tokens)
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
