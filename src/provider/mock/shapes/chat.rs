//! The mock's answers as Chat Completions: `chat.completion` objects and their chunks.

use serde_json::{json, Value};

use super::*;

fn chat_usage(a: &MockAnswer) -> Value {
    if !a.report_usage {
        return Value::Null;
    }
    json!({
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens.saturating_add(a.output_tokens),
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
