use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::provider::openai_responses::ResponseObject;
use crate::provider::sse::{SseEvent, SseHandler};
use crate::provider::wire::{JsonBody, DONE_FRAME};
use crate::provider::StreamEvent;

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
    let named = translate(json!({"messages": [{"role": "user", "name": "bob", "content": "hi"}]}));
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
    assert!(translate(
        json!({"messages": [{"role": "user", "content": "hi"}], "stop": null, "logprobs": false})
    )
    .is_ok());
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
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
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
