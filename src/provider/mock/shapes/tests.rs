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
