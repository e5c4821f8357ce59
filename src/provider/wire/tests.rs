use serde_json::{json, Value};

use super::*;

fn body(s: &str) -> JsonBody {
    JsonBody::parse(Bytes::from(s.to_string())).unwrap()
}

fn value(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn members_are_found_and_rewritten_in_place() {
    let b = body(
        r#" { "model" : "alias", "messages":[{"role":"user","content":"hi"}], "x-new": {"deep": [1, 2]}, "stream": true } "#,
    );
    assert_eq!(b.get("model"), Some(&b"\"alias\""[..]));
    assert_eq!(b.member::<bool>("stream").unwrap(), Some(true));
    let out = b.rewrite(&[
        ("model", Some(b"\"gpt-5\"")),
        ("stream_options", Some(b"{\"include_usage\":true}")),
    ]);
    assert_eq!(
        value(&out),
        json!({"stream_options": {"include_usage": true}, "model": "gpt-5",
                   "messages": [{"role": "user", "content": "hi"}], "x-new": {"deep": [1, 2]}, "stream": true})
    );
    let without = b.rewrite(&[("messages", None)]);
    assert_eq!(
        value(&without),
        json!({"model": "alias", "x-new": {"deep": [1, 2]}, "stream": true})
    );
    // Unknown members keep their exact bytes, numbers included.
    let b = body(
        r#"{"seed": 12345678901234567890, "logit_bias": {"50256": -100}, "f": 1.0000000000000001}"#,
    );
    let out = b.rewrite(&[("model", Some(b"\"m\""))]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"model":"m","seed":12345678901234567890,"logit_bias":{"50256": -100},"f":1.0000000000000001}"#
    );
}

#[test]
fn non_ascii_names_and_values_are_read_as_they_came() {
    let text = r#"{"mödel": "ü", "model" :"m", "messages":[{"role":"user","content":"héllo 🌍 \u00e9"}],"nè":{"ключ":"值"}}"#;
    let b = body(text);
    assert_eq!(
        b.names().collect::<Vec<_>>(),
        ["mödel", "model", "messages", "nè"]
    );
    assert_eq!(b.member::<String>("model").unwrap().as_deref(), Some("m"));
    let messages: Vec<Value> = b.member("messages").unwrap().unwrap();
    assert_eq!(messages[0]["content"], "héllo 🌍 é");
    assert_eq!(value(&b.rewrite(&[])), value(text.as_bytes()));
}

#[test]
fn escaped_and_duplicate_known_names_are_caught() {
    let b = body(r#"{"mod\u0065l": "x"}"#);
    assert_eq!(b.get("model"), Some(&b"\"x\""[..]));
    let out = b.rewrite(&[("model", Some(b"\"y\""))]);
    assert_eq!(value(&out), json!({"model": "y"}));
    let err =
        JsonBody::parse(Bytes::from_static(br#"{"model": "a", "mod\u0065l": "b"}"#)).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("model"));
    // Unknown members may repeat; they are the upstream's business.
    assert!(JsonBody::parse(Bytes::from_static(br#"{"x": 1, "x": 2}"#)).is_ok());
}

#[test]
fn malformed_bodies_are_refused() {
    for bad in [
        "",
        " ",
        "[1]",
        "{",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\":1} x",
        "{\"a\":tru}",
        "{a:1}",
        "{\"a\":\"\u{1}\"}",
        "{\"a\\\":1}",
    ] {
        assert!(
            JsonBody::parse(Bytes::from(bad.to_string())).is_err(),
            "{bad:?}"
        );
    }
    assert!(JsonBody::parse(Bytes::from_static(&[
        b'{', b'"', 0xff, b'"', b':', b'1', b'}'
    ]))
    .is_err());
    let err = JsonBody::parse(Bytes::from_static(b"{\"a\":\"\xff\"}")).unwrap_err();
    assert!(err.syntax);
    assert!(err.message.contains("not UTF-8 (at byte 6)"), "{err}");
    let err = JsonBody::parse(Bytes::from_static(b"[1,2]")).unwrap_err();
    assert!(!err.syntax);
    let b = body("{}");
    assert_eq!(b.rewrite(&[]), b"{}");
    assert_eq!(
        value(&b.rewrite(&[("model", Some(b"\"m\""))])),
        json!({"model": "m"})
    );
}

#[test]
fn member_errors_name_the_path() {
    let b = body(r#"{"messages": [{"role": 5}], "temperature": "hot"}"#);
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct M {
        role: String,
    }
    let e = b.member::<Vec<M>>("messages").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    let e = b.member::<f64>("temperature").unwrap_err();
    assert_eq!(e.param.as_deref(), Some("temperature"));
    assert_eq!(b.member::<f64>("top_p").unwrap(), None);
}

#[test]
fn filtered_keeps_what_the_predicate_accepts() {
    let b = body(r#"{"model": "m", "messages": [], "temperature": 0.5, "user": "u", "tools": []}"#);
    let out = b.filtered(|name, v| name != "messages" && !v.starts_with(b"\""));
    assert_eq!(value(&out), json!({"temperature": 0.5, "tools": []}));
}

#[test]
fn chat_views_read_text_tools_and_usage() {
    let v: ChatView = serde_json::from_str(
            r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,
               "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
               "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
    let c = v.first_choice().unwrap();
    let m = c.message.as_ref().unwrap();
    assert_eq!(m.text(), "");
    assert_eq!(
        tool_calls_of(m),
        vec![ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into()
        }]
    );
    assert!(v.has_content());
    assert_eq!(v.usage.unwrap().to_usage().unwrap().output_tokens, 4);
    let parts: MessageView = serde_json::from_str(
        r#"{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
    )
    .unwrap();
    assert_eq!(parts.text(), "ab");
    let refusal: MessageView = serde_json::from_str(r#"{"content":null,"refusal":"no"}"#).unwrap();
    assert_eq!(refusal.text(), "no");
}

#[test]
fn streamed_tool_call_pieces_assemble() {
    let mut parts = ToolCallParts::default();
    for chunk in [
        r#"{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}"#,
        r#"{"index":0,"function":{"arguments":"{\"ci"}}"#,
        r#"{"index":1,"id":"call_b","function":{"name":"put","arguments":"{}"}}"#,
        r#"{"index":0,"function":{"arguments":"ty\":1}"}}"#,
    ] {
        parts.add(&serde_json::from_str(chunk).unwrap());
    }
    let calls = parts.finish();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].arguments, "{\"city\":1}");
    assert_eq!(calls[1].name, "put");
}

#[test]
fn error_bodies_keep_their_object() {
    let (m, e) = parse_error_body(
            br#"{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            "Bad Request",
        );
    assert_eq!(m, "too long");
    let e = e.unwrap();
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    assert_eq!(e.param.as_deref(), Some("messages"));
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(parse_error_body(b"", "Bad Gateway").0, "Bad Gateway");
    assert_eq!(parse_error_body(b"down", "Bad Gateway").0, "down");
}

#[test]
fn frames_split_multiline_data() {
    assert_eq!(&sse_frame(None, "{}")[..], b"data: {}\n\n");
    assert_eq!(
        &sse_frame(Some("response.completed"), "a\nb")[..],
        b"event: response.completed\ndata: a\ndata: b\n\n"
    );
    // Empty lines, a trailing newline and an empty payload keep their `data:` fields, so a
    // client's SSE parser joins back exactly the payload that was framed.
    assert_eq!(
        &sse_frame(None, "a\n\nb")[..],
        b"data: a\ndata: \ndata: b\n\n"
    );
    assert_eq!(&sse_frame(None, "a\n")[..], b"data: a\ndata: \n\n");
    assert_eq!(&sse_frame(None, "")[..], b"data: \n\n");
}

#[test]
fn escapes_that_name_no_character_are_refused() {
    let parse = |s: &str| JsonBody::parse(Bytes::from(s.to_string()));
    for ok in [
        r#"{"a": "\u00e9 \ud83d\ude80 \\u12 \" \\ \u0000"}"#,
        r#"{"a": ["\\\\ud800"]}"#,
        r#"{}"#,
    ] {
        assert!(parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        r#"{"a": "\ud800"}"#,
        r#"{"a": "\ud800\u0041"}"#,
        r#"{"a": "x\udc00"}"#,
        r#"{"a": {"b": ["\ud83d"]}}"#,
        r#"{"\ud800": 1}"#,
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.syntax, "{bad}: {}", e.message);
    }
}
