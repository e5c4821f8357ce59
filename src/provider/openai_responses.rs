//! OpenAI Responses API client (`POST {base_url}/responses`), streaming and not — the API the original
//! service used. Transport, retries and SSE decoding are shared with `openai_chat`.

use serde::{Deserialize, Serialize};

use super::config::ProviderConfig;
use super::openai_chat::{truncate_chars, ErrorDetail, HttpUpstream, SseEvent, SseHandler};
use super::{
    Completion, CompletionRequest, CompletionStream, Provider, ProviderError, StreamEvent, Usage,
};

/// Client for `POST {base_url}/responses`.
pub struct OpenAiResponses {
    http: HttpUpstream,
}

impl OpenAiResponses {
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        Ok(OpenAiResponses {
            http: HttpUpstream::new(cfg, "/responses")?,
        })
    }
}

#[derive(Serialize)]
struct InputMessage<'a> {
    role: &'a str,
    content: &'a str,
}

/// The request body. `stop` has no Responses equivalent and is not sent.
#[derive(Serialize)]
struct ResponsesRequest<'a> {
    model: &'a str,
    input: Vec<InputMessage<'a>>,
    /// System messages, joined: the Responses API takes them here rather than in `input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

impl<'a> ResponsesRequest<'a> {
    fn new(req: &'a CompletionRequest, stream: bool) -> Self {
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        ResponsesRequest {
            model: &req.model,
            input: req
                .messages
                .iter()
                .filter(|m| m.role != "system")
                .map(|m| InputMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
            instructions: (!system.is_empty()).then(|| system.join("\n\n")),
            max_output_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            text: req
                .json_mode
                .then(|| serde_json::json!({ "format": { "type": "json_object" } })),
            user: req.user.as_deref(),
            stream,
        }
    }
}

/// A response object, as returned whole or inside `response.completed` stream events.
#[derive(Debug, Deserialize)]
struct ResponseObject {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// Kept loose: besides messages there are reasoning, tool-call and other items of various shapes.
    #[serde(default)]
    output: Vec<serde_json::Value>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputTokensDetails>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct InputTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ResponsesUsage {
    fn to_usage(&self) -> Option<Usage> {
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            cached_input_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
        })
    }
}

impl ResponseObject {
    /// The answer: every `output_text` part of every `message` item, in order (a refusal when
    /// there is no text).
    fn text(&self) -> String {
        let parts = || {
            self.output
                .iter()
                .filter(|item| item.get("type").and_then(|t| t.as_str()) == Some("message"))
                .filter_map(|item| item.get("content").and_then(|c| c.as_array()))
                .flatten()
        };
        let part_text = |kind: &str, field: &str| -> String {
            parts()
                .filter(|p| p.get("type").and_then(|t| t.as_str()) == Some(kind))
                .filter_map(|p| p.get(field).and_then(|t| t.as_str()))
                .collect()
        };
        let text = part_text("output_text", "text");
        if text.is_empty() {
            part_text("refusal", "refusal")
        } else {
            text
        }
    }

    /// `completed` → `stop`; `incomplete` → `length` for the token limit, else its reason; failed,
    /// cancelled or unfinished responses are errors.
    fn finish_reason(&self) -> Result<String, ProviderError> {
        match self.status.as_deref() {
            None | Some("completed") => Ok("stop".into()),
            Some("incomplete") => {
                let reason = self
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.reason.as_deref());
                Ok(match reason {
                    Some("max_output_tokens") => "length".into(),
                    Some(other) => other.to_string(),
                    None => "incomplete".into(),
                })
            }
            Some(status) => {
                let detail = self
                    .error
                    .as_ref()
                    .and_then(ErrorDetail::describe)
                    .map(|d| format!(": {}", truncate_chars(&d, 500)))
                    .unwrap_or_default();
                Err(ProviderError::InvalidResponse(format!(
                    "the response ended with status {status}{detail}"
                )))
            }
        }
    }

    fn into_completion(self, requested_model: &str) -> Result<Completion, ProviderError> {
        let finish_reason = self.finish_reason()?;
        Ok(Completion {
            text: self.text(),
            finish_reason,
            usage: self.usage.as_ref().and_then(ResponsesUsage::to_usage),
            upstream_model: self.model.unwrap_or_else(|| requested_model.to_string()),
            retries: 0,
        })
    }
}

/// Responses stream events → stream events: text deltas, then `Done` from the final response.
#[derive(Debug, Default)]
struct ResponsesStreamHandler;

impl SseHandler for ResponsesStreamHandler {
    fn on_event(&mut self, ev: SseEvent) -> Result<Vec<StreamEvent>, ProviderError> {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let mut v: serde_json::Value = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidResponse(format!("cannot parse a stream event: {e}"))
        })?;
        let kind = v
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .or(ev.event)
            .unwrap_or_default();
        match kind.as_str() {
            "response.output_text.delta" => {
                let delta = v.get("delta").and_then(|d| d.as_str()).unwrap_or_default();
                Ok(if delta.is_empty() {
                    Vec::new()
                } else {
                    vec![StreamEvent::Delta(delta.to_string())]
                })
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response: ResponseObject = serde_json::from_value(v["response"].take())
                    .map_err(|e| {
                        ProviderError::InvalidResponse(format!(
                            "cannot parse the final response: {e}"
                        ))
                    })?;
                let finish_reason = response.finish_reason()?;
                if kind == "response.failed" {
                    // A failed response without a failed status is still a failure.
                    return Err(ProviderError::InvalidResponse(
                        "the response failed without details".into(),
                    ));
                }
                Ok(vec![StreamEvent::Done {
                    finish_reason,
                    usage: response.usage.as_ref().and_then(ResponsesUsage::to_usage),
                }])
            }
            "error" => {
                // The fields sit at the top level of the event, or under `error` in older shapes.
                let detail: ErrorDetail = serde_json::from_value(match v.get_mut("error") {
                    Some(inner) if inner.is_object() => inner.take(),
                    _ => v,
                })
                .unwrap_or_default();
                Err(ProviderError::InvalidResponse(format!(
                    "upstream reported an error mid-stream: {}",
                    truncate_chars(&detail.describe().unwrap_or_default(), 500)
                )))
            }
            _ => Ok(Vec::new()),
        }
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        Err(ProviderError::InvalidResponse(
            "the stream ended before response.completed".into(),
        ))
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiResponses {
    fn kind(&self) -> &'static str {
        "openai_responses"
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError> {
        let (response, retries) = self
            .http
            .post_json(&ResponsesRequest::new(req, false), false)
            .await?;
        let body: ResponseObject = self.http.read_json(response).await?;
        let mut completion = body
            .into_completion(&req.model)
            .map_err(|e| self.http.scrub(e))?;
        completion.retries = retries;
        Ok(completion)
    }

    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        let (response, _retries) = self
            .http
            .post_json(&ResponsesRequest::new(req, true), true)
            .await?;
        Ok(self.http.stream_events(response, ResponsesStreamHandler))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::super::openai_chat::tests::{
        collect, config, decode_split, request, summarize, upstream, FAKE_KEY,
    };
    use super::*;
    use crate::provider::config::ProviderKind;

    fn responses(addr: std::net::SocketAddr) -> OpenAiResponses {
        let mut cfg = config(addr);
        cfg.kind = ProviderKind::OpenaiResponses;
        OpenAiResponses::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn completes_with_text_finish_reason_and_usage() {
        let addr = upstream().await;
        let c = responses(addr)
            .complete(&request("Capital of Peru?"))
            .await
            .unwrap();
        assert!(
            c.text
                .starts_with("This is a mock answer to: Capital of Peru?"),
            "{}",
            c.text
        );
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(c.upstream_model, "gpt-test");
        let usage = c.usage.unwrap();
        assert_eq!(usage.output_tokens, crate::tokens::count_tokens(&c.text));
        // The system message travelled as `instructions` and is counted by the mock.
        assert_eq!(
            usage.input_tokens,
            crate::tokens::count_message_tokens(&request("Capital of Peru?").messages)
        );
    }

    #[tokio::test]
    async fn streams_text_finish_reason_and_usage() {
        let addr = upstream().await;
        let p = responses(addr);
        let full = p.complete(&request("Stream it")).await.unwrap();
        let (text, done, err) = collect(p.stream(&request("Stream it")).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, full.text);
        let (finish, usage) = done.unwrap();
        assert_eq!(finish, "stop");
        assert_eq!(usage, full.usage);
    }

    #[tokio::test]
    async fn json_mode_gets_a_json_answer() {
        let addr = upstream().await;
        let mut r = request("json please");
        r.json_mode = true;
        let c = responses(addr).complete(&r).await.unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&c.text)
            .unwrap()
            .is_object());
    }

    #[tokio::test]
    async fn fail_first_two_succeeds_with_two_retries() {
        let addr = upstream().await;
        let c = responses(addr)
            .complete(&request("flaky [mock:fail_first=2]"))
            .await
            .unwrap();
        assert_eq!(c.retries, 2);
    }

    #[tokio::test]
    async fn errors_map_like_chat() {
        let addr = upstream().await;
        let p = responses(addr);
        let err = p
            .complete(&request("no [mock:status=429]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 429, .. }),
            "{err:?}"
        );
        let err = p
            .complete(&request("no [mock:status=400]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Status { status: 400, .. }),
            "{err:?}"
        );
        let err = p
            .complete(&request("who [mock:status=401]"))
            .await
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains(FAKE_KEY), "{err:?}");

        let mut cfg = config(addr);
        cfg.timeout_secs = 1;
        cfg.api_key = Some(SecretString::from(FAKE_KEY));
        let slow = OpenAiResponses::new(&cfg).unwrap();
        let err = slow
            .complete(&request("slow [mock:delay_ms=3000]"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Timeout(d) if d == Duration::from_secs(1)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn truncated_answer_finishes_with_length() {
        let addr = upstream().await;
        let p = responses(addr);
        let c = p.complete(&request("cut [mock:truncate]")).await.unwrap();
        assert_eq!(c.finish_reason, "length");
        let (_, done, err) =
            collect(p.stream(&request("cut [mock:truncate]")).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(done.unwrap().0, "length");
    }

    #[tokio::test]
    async fn broken_stream_yields_an_error_item() {
        let addr = upstream().await;
        let (text, done, err) = collect(
            responses(addr)
                .stream(&request("break [mock:stream_error]"))
                .await
                .unwrap(),
        )
        .await;
        assert!(!text.is_empty());
        assert!(done.is_none());
        assert!(err.is_some());
    }

    #[test]
    fn request_body_moves_system_messages_to_instructions() {
        let mut r = request("hi");
        r.max_tokens = Some(100);
        r.json_mode = true;
        let v = serde_json::to_value(ResponsesRequest::new(&r, true)).unwrap();
        assert_eq!(v["instructions"], "You are terse.");
        assert_eq!(v["input"].as_array().unwrap().len(), 1);
        assert_eq!(v["input"][0]["role"], "user");
        assert_eq!(v["input"][0]["content"], "hi");
        assert_eq!(v["max_output_tokens"], 100);
        assert_eq!(v["text"]["format"]["type"], "json_object");
        assert_eq!(v["stream"], true);
        assert!(v.get("stop").is_none());
    }

    /// Shaped like a real gpt-5-mini answer: a reasoning item before the message.
    const RESPONSES_FIXTURE: &str = r#"{
      "id": "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b",
      "object": "response",
      "created_at": 1756315696,
      "status": "completed",
      "background": false,
      "error": null,
      "incomplete_details": null,
      "instructions": null,
      "max_output_tokens": null,
      "model": "gpt-5-mini-2025-08-07",
      "output": [
        {
          "id": "rs_68af4030baa48193b0b43b4c2a176a1a05438e46b5f69a3b",
          "type": "reasoning",
          "summary": []
        },
        {
          "id": "msg_68af40337e58819392e2b8c8ef4e5bc005438e46b5f69a3b",
          "type": "message",
          "status": "completed",
          "content": [
            {
              "type": "output_text",
              "annotations": [],
              "logprobs": [],
              "text": "Lima is the capital of Peru."
            },
            {
              "type": "output_text",
              "annotations": [],
              "text": " It sits on the Pacific coast."
            }
          ],
          "role": "assistant"
        }
      ],
      "parallel_tool_calls": true,
      "previous_response_id": null,
      "reasoning": { "effort": "medium", "summary": null },
      "store": true,
      "temperature": 1.0,
      "text": { "format": { "type": "text" }, "verbosity": "medium" },
      "tool_choice": "auto",
      "tools": [],
      "top_p": 1.0,
      "truncation": "disabled",
      "usage": {
        "input_tokens": 1536,
        "input_tokens_details": { "cached_tokens": 1280 },
        "output_tokens": 204,
        "output_tokens_details": { "reasoning_tokens": 192 },
        "total_tokens": 1740
      },
      "user": null,
      "metadata": {}
    }"#;

    #[test]
    fn parses_a_real_response_with_reasoning_items() {
        let body: ResponseObject = serde_json::from_str(RESPONSES_FIXTURE).unwrap();
        let c = body.into_completion("gpt-5-mini").unwrap();
        assert_eq!(
            c.text,
            "Lima is the capital of Peru. It sits on the Pacific coast."
        );
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(c.upstream_model, "gpt-5-mini-2025-08-07");
        assert_eq!(
            c.usage,
            Some(Usage {
                input_tokens: 1536,
                cached_input_tokens: 1280,
                output_tokens: 204
            })
        );
    }

    #[test]
    fn incomplete_and_failed_statuses() {
        let incomplete: ResponseObject = serde_json::from_str(
            r#"{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}"#,
        )
        .unwrap();
        let c = incomplete.into_completion("m").unwrap();
        assert_eq!(c.finish_reason, "length");
        assert_eq!(c.text, "");
        let failed: ResponseObject = serde_json::from_str(
            r#"{"status":"failed","error":{"code":"server_error","message":"The model failed"},"output":[]}"#,
        )
        .unwrap();
        let err = failed.into_completion("m").unwrap_err();
        assert!(
            matches!(&err, ProviderError::InvalidResponse(m) if m.contains("The model failed")),
            "{err:?}"
        );
    }

    const RESPONSES_SSE_FIXTURE: &str = concat!(
        "event: response.created\n",
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-5-mini-2025-08-07\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_item.added\n",
        "data: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}}\n\n",
        "event: response.output_text.delta\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Lima\",\"logprobs\":[]}\n\n",
        "event: response.output_text.delta\r\n",
        "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\" is the capital — ¡sí! 🇵🇪\",\"logprobs\":[]}\r\n\r\n",
        "event: response.output_text.done\n",
        "data: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"text\":\"Lima is the capital — ¡sí! 🇵🇪\"}\n\n",
        "event: response.completed\n",
        "data: {\"type\":\"response.completed\",\"sequence_number\":7,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5-mini-2025-08-07\",\"output\":[{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]},{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"completed\",\"content\":[{\"type\":\"output_text\",\"text\":\"Lima is the capital — ¡sí! 🇵🇪\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":80,\"output_tokens_details\":{\"reasoning_tokens\":64},\"total_tokens\":100}}}\n\n",
    );

    #[test]
    fn sse_parsing_survives_any_chunk_boundaries() {
        let expected = (
            "Lima is the capital — ¡sí! 🇵🇪".to_string(),
            Some((
                "stop".to_string(),
                Some(Usage {
                    input_tokens: 20,
                    cached_input_tokens: 0,
                    output_tokens: 80,
                }),
            )),
        );
        for cut in 0..RESPONSES_SSE_FIXTURE.len() {
            let items = decode_split(RESPONSES_SSE_FIXTURE, &[cut], ResponsesStreamHandler);
            assert_eq!(summarize(&items), expected, "cut at {cut}");
        }
        let all: Vec<usize> = (1..RESPONSES_SSE_FIXTURE.len()).collect();
        let items = decode_split(RESPONSES_SSE_FIXTURE, &all, ResponsesStreamHandler);
        assert_eq!(summarize(&items), expected);
    }

    #[test]
    fn failed_and_error_events_are_errors() {
        let items = decode_split(
            "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"output\":[]}}\n\n",
            &[],
            ResponsesStreamHandler,
        );
        assert!(
            matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("boom")),
            "{items:?}"
        );
        let items = decode_split(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\",\"param\":null}\n\n",
            &[],
            ResponsesStreamHandler,
        );
        assert!(
            matches!(items.last(), Some(Err(ProviderError::InvalidResponse(m))) if m.contains("slow down")),
            "{items:?}"
        );
        let items = decode_split(
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
            &[],
            ResponsesStreamHandler,
        );
        assert!(matches!(
            items.last(),
            Some(Err(ProviderError::InvalidResponse(_)))
        ));
        let incomplete = decode_split(
            "data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"output\":[]}}\n\n",
            &[],
            ResponsesStreamHandler,
        );
        assert_eq!(summarize(&incomplete).1.unwrap().0, "length");
    }
}
