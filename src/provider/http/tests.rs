use super::*;

#[test]
fn secrets_are_masked_and_messages_truncated() {
    let s = Scrubber {
        api_key: Some(SecretString::from("my-secret-key")),
    };
    assert_eq!(
        s.text("bad key my-secret-key and sk-proj-abcdef123456 but not task-force or sk-1"),
        "bad key *** and sk-*** but not task-force or sk-1"
    );
    assert_eq!(truncate_chars("héllo", 2), "hé…");
    assert_eq!(truncate_chars("ok", 2), "ok");
    let long = "x".repeat(2000);
    let (msg, _) = parse_error_body(
        format!("{{\"error\":{{\"message\":\"{long}\",\"code\":\"c\"}}}}").as_bytes(),
        "Bad Request",
    );
    assert_eq!(
        truncate_chars(&msg, MAX_ERROR_MESSAGE_CHARS)
            .chars()
            .count(),
        501
    );
}
