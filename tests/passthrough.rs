//! Fidelity: what the client sends reaches the model, what the model says reaches the client.
//! The real gateway in front of `lqo mock-upstream` (which records the bodies it receives) and
//! the built-in mock: bodies forwarded field for field but for the documented rewrites, answers
//! and stream events as the upstream sent them, upstream errors with their meaning, the new
//! routes, and records that hold the parameters and tool calls.

mod common;

use common::{sample, Harness};
use serde_json::{json, Value};
use uuid::Uuid;

fn id_of(resp: &reqwest::Response) -> Uuid {
    Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).unwrap()
}

/// The mock upstream behind the `chat` provider.
fn upstream_base(h: &Harness) -> String {
    h.app.state.config.providers["chat"]
        .base_url
        .trim_end_matches("/v1")
        .to_string()
}

/// Bodies the mock upstream received, oldest first.
async fn upstream_bodies(h: &Harness) -> Vec<Value> {
    let v: Value = h
        .http
        .get(format!("{}/mock/requests", upstream_base(h)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].clone())
        .collect()
}

async fn upstream_requests(h: &Harness) -> u64 {
    let v: Value = h
        .http
        .get(format!("{}/mock/stats", upstream_base(h)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["requests"].as_u64().unwrap()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                       "required": ["city", "unit"], "additionalProperties": false}, "strict": true}})
}

/// Every Chat Completions feature the issue lists as dropped or refused before.
fn rich_body() -> Value {
    json!({
        "model": "gpt-test",
        "messages": [
            {"role": "developer", "content": "Be brief.", "name": "ops"},
            {"role": "user", "name": "ada", "content": [
                {"type": "text", "text": "What is the weather here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Lima\",\"unit\":\"c\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "18 C"},
            {"role": "user", "content": "And tomorrow?"}
        ],
        "tools": [weather_tool()],
        "tool_choice": "none",
        "parallel_tool_calls": false,
        "n": 2,
        "logprobs": true,
        "top_logprobs": 2,
        "seed": 42,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "service_tier": "default",
        "store": false,
        "prediction": {"type": "content", "content": "It will be"},
        "stop": ["\n\n"],
        "temperature": 0.3,
        "max_completion_tokens": 200,
        "user": "user-7",
        "metadata": {"tags": "fidelity", "team": "search"},
        "x_vendor_extension": {"nested": [1, 2.5, "three", null, true]}
    })
}

async fn a_body_reaches_the_upstream_field_for_field(h: &Harness) {
    let body = rich_body();
    let resp = h.post_json("/v1/chat/completions", body.clone()).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let mut expected = body.clone();
    expected["model"] = json!("gpt-5-mini");
    assert_eq!(upstream_bodies(h).await.last().unwrap(), &expected);
    // The upstream's answer as it came: both choices, log probabilities, its fingerprint.
    assert_eq!(answer["choices"].as_array().unwrap().len(), 2);
    assert_eq!(answer["system_fingerprint"], "fp_lqo_mock");
    assert!(answer["choices"][1]["logprobs"]["content"][0]["top_logprobs"][1].is_object());

    // Streamed: the only other rewrite is stream_options.include_usage.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": false, "x_option": 1});
    let resp = h.post_json("/v1/chat/completions", streamed.clone()).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    expected = streamed;
    expected["model"] = json!("gpt-5-mini");
    expected["stream_options"] = json!({"include_usage": true, "x_option": 1});
    assert_eq!(upstream_bodies(h).await.last().unwrap(), &expected);
    assert!(
        !text.contains("\"total_tokens\""),
        "the usage chunk the client did not ask for is hidden: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn a_chat_body_reaches_the_upstream_field_for_field_sqlite() {
    let h = Harness::sqlite().await;
    a_body_reaches_the_upstream_field_for_field(&h).await;
    h.app.stop().await;
}

async fn tool_calls_are_answered_recorded_and_shown(h: &Harness) {
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Weather in Lima?"}],
        "tools": [weather_tool()], "temperature": 0.2, "user": "u-tools"});
    let resp = h.post_json("/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    let id = id_of(&resp);
    let answer: Value = resp.json().await.unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["unit"], "c", "arguments fit the function's schema");

    let rec = h.record(id).await;
    assert_eq!(rec.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        rec.heuristic_label.as_deref(),
        Some("good"),
        "{:?}",
        rec.heuristic_results
    );
    let calls = rec.tool_calls.as_ref().unwrap().to_value();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["id"], call["id"]);
    let params = rec.request_params.as_ref().unwrap().to_value();
    assert!(params.get("messages").is_none(), "{params}");
    assert_eq!(params["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(params["temperature"], 0.2);

    let shown: Value = h
        .http
        .get(h.url(&format!("/v1/logs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["tool_calls"], calls, "{shown}");
    assert_eq!(shown["request_params"]["temperature"], 0.2, "{shown}");

    // The tool turn: the result goes up with its tool_call_id, the answer is text.
    let turn = json!({"model": "gpt-test", "tools": [weather_tool()], "messages": [
        {"role": "user", "content": "Weather in Lima?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C"}]});
    let resp = h.post_json("/v1/chat/completions", turn.clone()).await;
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(answer["choices"][0]["message"]["content"].is_string());
    let sent = upstream_bodies(h).await.last().unwrap().clone();
    assert_eq!(sent["messages"], turn["messages"]);
}

#[tokio::test]
async fn tool_calls_are_answered_recorded_and_shown_postgres() {
    let h = Harness::postgres().await;
    tool_calls_are_answered_recorded_and_shown(&h).await;
    h.app.stop().await;
}

#[tokio::test]
async fn tool_calls_are_answered_recorded_and_shown_sqlite() {
    let h = Harness::sqlite().await;
    tool_calls_are_answered_recorded_and_shown(&h).await;
    h.app.stop().await;
}

/// `data:` payloads of an SSE body.
fn data_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| json!(d)))
        .collect()
}

#[tokio::test]
async fn streamed_tool_calls_arrive_as_deltas_and_are_recorded_whole() {
    let h = Harness::sqlite().await;
    for model in ["gpt-test", "gpt-resp", "mock-local"] {
        let resp = h
            .post_json(
                "/v1/chat/completions",
                json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                       "messages": [{"role": "user", "content": "Weather in Lima?"}], "tools": [weather_tool()]}),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let id = id_of(&resp);
        let data = data_of(&resp.text().await.unwrap());
        assert_eq!(data.last().unwrap(), "[DONE]", "{model}");
        let deltas: Vec<&Value> = data
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert!(deltas.len() >= 2, "{model}: {deltas:?}");
        assert!(deltas[0]["id"].is_string() && deltas[0]["function"]["name"] == "get_weather");
        let args: String = deltas
            .iter()
            .filter_map(|d| d["function"]["arguments"].as_str())
            .collect();
        let usage = &data[data.len() - 2]["usage"];
        assert!(
            usage["total_tokens"].as_u64().unwrap() > 0,
            "{model}: {usage}"
        );
        let rec = h.record(id).await;
        let calls = rec.tool_calls.unwrap().to_value();
        assert_eq!(calls[0]["function"]["arguments"], args, "{model}");
        assert_eq!(rec.finish_reason.as_deref(), Some("tool_calls"), "{model}");
        assert!(rec.ttft_ms.is_some(), "{model}");
        assert_eq!(
            rec.output_tokens,
            usage["completion_tokens"].as_i64().unwrap()
        );
    }
    h.app.stop().await;
}

async fn error_of(resp: reqwest::Response, status: u16) -> (reqwest::header::HeaderMap, Value) {
    assert_eq!(resp.status(), status);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    (headers, body["error"].clone())
}

#[tokio::test]
async fn upstream_errors_keep_their_meaning() {
    let h = Harness::sqlite().await;
    let chat = |content: &str| json!({"model": "gpt-test", "messages": [{"role": "user", "content": content}]});
    // A 400 (e.g. context_length_exceeded) reaches the client as a 400 with the upstream's object.
    let before = upstream_requests(&h).await;
    let resp = h
        .post_json("/v1/chat/completions", chat("too long [mock:status=400]"))
        .await;
    let id = id_of(&resp);
    let (_, e) = error_of(resp, 400).await;
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "invalid_request");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("requested by the prompt"));
    assert_eq!(
        upstream_requests(&h).await - before,
        1,
        "a 400 is not retried"
    );
    let rec = h.record(id).await;
    assert_eq!(
        (rec.http_status, rec.error_type.as_deref()),
        (400, Some("upstream_rejected"))
    );

    // A 429 keeps Retry-After; the gateway retried it, so the SDK is told not to.
    let before = upstream_requests(&h).await;
    let resp = h
        .post_json("/v1/chat/completions", chat("busy [mock:status=429]"))
        .await;
    let id = id_of(&resp);
    let (headers, e) = error_of(resp, 429).await;
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(headers["retry-after"], "0");
    assert_eq!(headers["x-should-retry"], "false");
    assert_eq!(
        upstream_requests(&h).await - before,
        3,
        "1 attempt + 2 retries"
    );
    let rec = h.record(id).await;
    assert_eq!(rec.error_type.as_deref(), Some("upstream_rate_limited"));
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_upstream_retries_total",
            &[("model_version", "gpt-test")]
        ),
        Some(2.0),
        "retries of a call that failed in the end are counted"
    );

    // 401/403 are the gateway's credentials: 502 naming the provider, no key in sight.
    let resp = h
        .post_json("/v1/chat/completions", chat("who [mock:status=401]"))
        .await;
    let (headers, e) = error_of(resp, 502).await;
    assert_eq!(e["code"], "upstream_auth_failed");
    assert!(e["message"].as_str().unwrap().contains("`chat`"), "{e}");
    assert!(!e.to_string().contains(common::API_KEY));
    assert_eq!(headers["x-should-retry"], "false");
    let resp = h
        .post_json("/v1/chat/completions", chat("gone [mock:status=404]"))
        .await;
    let (_, e) = error_of(resp, 404).await;
    assert_eq!(e["code"], "model_not_found");
    // 5xx after retries: 502, and no SDK retry on top.
    let resp = h
        .post_json("/v1/chat/completions", chat("down [mock:status=503]"))
        .await;
    let (headers, _) = error_of(resp, 502).await;
    assert_eq!(headers["x-should-retry"], "false");
    let m = h.metrics().await;
    for (error_type, n) in [
        ("upstream_rejected", 2.0),
        ("upstream_rate_limited", 1.0),
        ("upstream_auth", 1.0),
        ("upstream_status", 1.0),
        ("stream_interrupted", 0.0),
    ] {
        let labels = [
            ("model_version", "gpt-test"),
            ("endpoint", "chat_completions"),
            ("error_type", error_type),
        ];
        assert_eq!(
            sample(&m, "lqo_errors_total", &labels),
            Some(n),
            "{error_type}"
        );
    }
    h.app.stop().await;
}

#[tokio::test]
async fn responses_route_passes_through_or_translates() {
    let h = Harness::postgres().await;
    // A Responses provider: the body goes up as it came but for `model`.
    let body = json!({"model": "gpt-resp", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather in Lima?"}]}],
        "instructions": "Be brief.", "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "reasoning": {"effort": "low"}, "store": false, "metadata": {"tags": "resp"}});
    let resp = h.post_json("/v1/responses", body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-lqo-model-version"], "gpt-resp");
    let id = id_of(&resp);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["output"][0]["type"], "function_call");
    let mut expected = body.clone();
    expected["model"] = json!("gpt-5-mini");
    assert_eq!(upstream_bodies(&h).await.last().unwrap(), &expected);
    let rec = h.record(id).await;
    assert_eq!(rec.endpoint, "responses");
    assert_eq!(rec.tags, vec!["resp".to_string()]);
    assert_eq!(
        rec.tool_calls.unwrap().to_value()[0]["function"]["name"],
        "get_weather"
    );
    let params = rec.request_params.unwrap().to_value();
    assert!(params.get("input").is_none() && params.get("instructions").is_none());
    assert!(
        rec.prompt.contains("Be brief."),
        "instructions are part of the prompt"
    );

    // Streamed, events as they came.
    let resp = h
        .post_json(
            "/v1/responses",
            json!({"model": "gpt-resp", "input": "Tell me a story", "stream": true}),
        )
        .await;
    let id = id_of(&resp);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("event: response.created\ndata: "),
        "{text}"
    );
    assert!(text.contains("event: response.output_text.delta"));
    assert!(text
        .trim_end()
        .lines()
        .rev()
        .nth(1)
        .unwrap()
        .starts_with("event: response.completed"));
    let rec = h.record(id).await;
    assert!(rec.streamed && rec.response.unwrap().contains("Tell me a story"));

    // The built-in mock speaks Responses too.
    let resp = h
        .post_json(
            "/v1/responses",
            json!({"model": "mock-local", "input": "hi"}),
        )
        .await;
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["output"][0]["content"][0]["type"], "output_text");

    // A Chat Completions provider gets the request translated, and the answer back as a response.
    let resp = h
        .post_json("/v1/responses", json!({"model": "gpt-test", "input": "Weather in Lima?", "instructions": "Be brief.",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["output"][0]["type"], "function_call");
    let sent = upstream_bodies(&h).await.last().unwrap().clone();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    // What it cannot keep is a 400 naming the field: nothing sent, nothing metered.
    let before = upstream_requests(&h).await;
    let resp = h
        .post_json(
            "/v1/responses",
            json!({"model": "gpt-test", "input": "hi", "previous_response_id": "resp_1"}),
        )
        .await;
    let (_, e) = error_of(resp, 400).await;
    assert_eq!(e["param"], "previous_response_id");
    assert_eq!(e["code"], "unsupported_parameter");
    assert_eq!(upstream_requests(&h).await, before);
    let m = h.metrics().await;
    let responses = |mv: &str, status: &str| {
        sample(
            &m,
            "lqo_requests_total",
            &[
                ("model_version", mv),
                ("endpoint", "responses"),
                ("status", status),
            ],
        )
    };
    assert_eq!(responses("gpt-test", "error"), Some(0.0));
    assert_eq!(responses("gpt-test", "ok"), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "lqo_requests_total",
            &[
                ("model_version", "gpt-resp"),
                ("endpoint", "responses"),
                ("status", "ok")
            ]
        ),
        Some(2.0)
    );
    h.app.stop().await;
}

#[tokio::test]
async fn a_chat_client_on_a_responses_provider_is_translated_or_refused_by_name() {
    let h = Harness::sqlite().await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "gpt-resp", "messages": [{"role": "user", "content": "A city"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false}}},
                "reasoning_effort": "minimal"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let id = id_of(&resp);
    let answer: Value = resp.json().await.unwrap();
    let content: Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content["name"].is_string(), "{answer}");
    let sent = upstream_bodies(&h).await.last().unwrap().clone();
    assert_eq!(sent["text"]["format"]["type"], "json_schema");
    assert_eq!(sent["reasoning"]["effort"], "minimal");
    let rec = h.record(id).await;
    assert_eq!(
        rec.heuristic_label.as_deref(),
        Some("good"),
        "{:?}",
        rec.heuristic_results
    );

    let before = upstream_requests(&h).await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "gpt-resp", "messages": [{"role": "user", "content": "x"}], "seed": 1}),
        )
        .await;
    let (_, e) = error_of(resp, 400).await;
    assert_eq!(e["param"], "seed");
    assert!(
        e["message"].as_str().unwrap().contains("Responses API"),
        "{e}"
    );
    assert_eq!(upstream_requests(&h).await, before);
    h.app.stop().await;
}

#[tokio::test]
async fn embeddings_pass_through_and_are_metered() {
    let h = Harness::sqlite().await;
    let body = json!({"model": "gpt-test", "input": ["first text", "second text"], "encoding_format": "base64", "dimensions": 8});
    let resp = h.post_json("/v1/embeddings", body.clone()).await;
    assert_eq!(resp.status(), 200);
    let id = id_of(&resp);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        list["data"][0]["embedding"].is_string(),
        "base64 as asked: {list}"
    );
    let mut expected = body;
    expected["model"] = json!("gpt-5-mini");
    assert_eq!(upstream_bodies(&h).await.last().unwrap(), &expected);
    let rec = h.record(id).await;
    assert_eq!(rec.endpoint, "embeddings");
    assert_eq!(
        rec.input_tokens,
        list["usage"]["prompt_tokens"].as_i64().unwrap()
    );
    assert!(rec.cost_usd > 0.0);
    assert!(rec.heuristic_label.is_none(), "no heuristics on embeddings");
    assert!(rec.prompt.contains("second text"));
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "lqo_requests_total",
            &[
                ("model_version", "gpt-test"),
                ("endpoint", "embeddings"),
                ("status", "ok")
            ]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "lqo_tokens_total",
            &[("model_version", "gpt-test"), ("token_type", "input")]
        )
        .unwrap()
            > 0.0
    );
    // Token arrays (what LangChain sends) pass too.
    let resp = h
        .post_json(
            "/v1/embeddings",
            json!({"model": "gpt-test", "input": [[1, 2, 3], [4, 5]]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        upstream_bodies(&h).await.last().unwrap()["input"],
        json!([[1, 2, 3], [4, 5]])
    );
    // The built-in mock embeds as well, floats by default.
    let list: Value = h
        .post_json(
            "/v1/embeddings",
            json!({"model": "mock-local", "input": "x"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(list["data"][0]["embedding"].is_array());
    h.app.stop().await;
}

#[tokio::test]
async fn models_are_retrieved_and_aliases_reach_their_version() {
    let h = Harness::sqlite_with(|c| {
        if let Some(m) = c.models.get_mut("gpt-test") {
            m.aliases = vec!["gpt-4o".into()];
        }
    })
    .await;
    let get = |p: String| h.http.get(h.url(&p)).send();
    let m: Value = get("/v1/models/gpt-4o".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        m,
        json!({"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "chat"})
    );
    let m: Value = get("/v1/models/mock-local".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["owned_by"], "local");
    let r = get("/v1/models/gpt-9000".into()).await.unwrap();
    let (_, e) = error_of(r, 404).await;
    assert_eq!(e["code"], "model_not_found");
    let resp = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.headers()["x-lqo-model-version"], "gpt-test");
    let rec = h.record(id_of(&resp)).await;
    assert_eq!(rec.model_version, "gpt-test");
    assert_eq!(
        upstream_bodies(&h).await.last().unwrap()["model"],
        "gpt-5-mini"
    );
    assert!(
        !h.metrics().await.contains("gpt-4o"),
        "an alias is never a label"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn the_builtin_mock_honours_tools_n_logprobs_and_schemas() {
    let h = Harness::sqlite().await;
    let answer: Value = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "mock-local", "n": 3, "logprobs": true, "top_logprobs": 1,
                   "messages": [{"role": "user", "content": "Say hi"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"].as_array().unwrap().len(), 3);
    assert!(answer["choices"][2]["logprobs"]["content"][0]["logprob"].is_number());
    let answer: Value = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "mock-local", "messages": [{"role": "user", "content": "A person"}],
                   "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {
                       "type": "object", "properties": {"age": {"type": "integer", "minimum": 18}}, "required": ["age"]}}}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let person: Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(person["age"], 18);
    let answer: Value = h
        .post_json(
            "/v1/chat/completions",
            json!({"model": "mock-local", "messages": [{"role": "user", "content": "Weather?"}],
                   "tools": [weather_tool()], "tool_choice": "required"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["type"],
        "function"
    );
    h.app.stop().await;
}

#[tokio::test]
async fn stored_parameters_follow_content_logging() {
    use llm_quality_observer::config::ContentLogging;
    for (mode, check) in [
        (ContentLogging::Redacted, "redacted"),
        (ContentLogging::None, "none"),
    ] {
        let h = Harness::sqlite_with(|c| c.logging.content = mode).await;
        let resp = h
            .post_json(
                "/v1/chat/completions",
                json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                       "user": "ada@example.com", "temperature": 0.5, "stop": ["mail me at ada@example.com"],
                       "tools": [weather_tool()]}),
            )
            .await;
        let rec = h.record(id_of(&resp)).await;
        let params = rec.request_params.unwrap().to_value();
        assert_eq!(params["temperature"], 0.5, "{check}");
        assert!(
            !params.to_string().contains("ada@example.com"),
            "{check}: {params}"
        );
        let calls = rec.tool_calls.unwrap().to_value();
        match check {
            "redacted" => assert!(params["stop"][0]
                .as_str()
                .unwrap()
                .starts_with("mail me at")),
            _ => {
                assert!(
                    params.get("stop").is_none() && params.get("tools").is_none(),
                    "{params}"
                );
                assert_eq!(
                    calls[0]["function"]["arguments"], "",
                    "arguments are content"
                );
                assert_eq!(params["model"], "gpt-test");
            }
        }
        h.app.stop().await;
    }
}

#[tokio::test]
async fn swagger_try_it_out_defaults_work() {
    let h = Harness::sqlite_with(|c| c.default_model = "mock-local".into()).await;
    let spec: Value = h
        .http
        .get(h.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, schema) in [
        ("/chat", "ChatRequest"),
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/responses", "ResponsesRequest"),
        ("/v1/embeddings", "EmbeddingsRequestDoc"),
    ] {
        // Swagger UI's "Try it out" sends the schema's example; it must be a valid request.
        let example = spec["components"]["schemas"][schema]["example"].clone();
        assert!(example.is_object(), "{schema} has no example");
        let r = h.post_json(path, example.clone()).await;
        assert_eq!(r.status(), 200, "{path} with {example}");
    }
    let n = &spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]["n"];
    assert_eq!(n["maximum"], 128, "{n}");
    assert!(spec["paths"]["/v1/models/{model}"]["get"].is_object());
    h.app.stop().await;
}

#[tokio::test]
async fn answers_that_only_call_tools_are_not_sent_to_the_judge() {
    let h = Harness::sqlite_with(|c| {
        c.judge.sample_rate = Some(1.0);
        c.judge.model = Some("mock-local".into());
    })
    .await;
    let ask = |tools: bool| {
        let mut body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "Weather in Lima?"}]});
        if tools {
            body["tools"] = json!([weather_tool()]);
        }
        body
    };
    let call = h.post_json("/v1/chat/completions", ask(true)).await;
    let call_id = id_of(&call);
    // Offered after the tool call: the queue is first in, first out, so once this answer's job
    // is in the table, a job for the tool call would be too.
    let text = h.post_json("/v1/chat/completions", ask(false)).await;
    let text_id = id_of(&text);
    h.record(call_id).await;
    h.record(text_id).await;
    let llm_quality_observer::store::Store::Sqlite(pool) = &h.store else {
        panic!("sqlite harness")
    };
    let jobs = |id: Uuid| {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM judge_jobs WHERE request_id = ?1")
            .bind(id.to_string())
            .fetch_one(pool)
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while jobs(text_id).await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the text answer was never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(jobs(call_id).await.unwrap(), 0);
    h.app.stop().await;
}
