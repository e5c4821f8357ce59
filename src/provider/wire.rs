//! OpenAI wire formats as the gateway touches them: a client's JSON body kept as bytes with the
//! position of each top-level member (so it can be forwarded with a member replaced, and read
//! field by field without building a tree), borrowed views of the upstream's answers and stream
//! chunks, and server-sent event frames.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ToolCall, UpstreamError, Usage};

/// Members the gateway reads or rewrites in some API's request body. Only these are looked up by
/// name, and a body naming one of them twice is refused (the gateway and the upstream must not
/// read different values). Everything else is carried as it came.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "input",
    "instructions",
    "n",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "response_format",
    "text",
    "tools",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "encoding_format",
    "dimensions",
];

/// A problem with a client's body, naming the member when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub param: Option<String>,
    pub message: String,
    /// The body is not JSON at all (as opposed to JSON of the wrong shape).
    pub syntax: bool,
}

impl WireError {
    fn syntax(message: impl Into<String>) -> Self {
        WireError {
            param: None,
            message: message.into(),
            syntax: true,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, Clone)]
struct Member {
    /// The key's raw text between its quotes.
    key: Range<usize>,
    /// The value's text.
    value: Range<usize>,
    /// The key, when it is one of [`KNOWN`].
    name: Option<&'static str>,
}

/// A JSON object kept as the client sent it, with the position of each top-level member.
#[derive(Clone)]
pub struct JsonBody {
    bytes: Bytes,
    members: Vec<Member>,
}

impl fmt::Debug for JsonBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies hold prompts; debug output shows their size only.
        write!(f, "JsonBody({} bytes)", self.bytes.len())
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

impl JsonBody {
    /// Reads the top level of a JSON object. Values are checked to be valid JSON but not
    /// decoded; keys are decoded, so an escaped spelling of a known name is still that name.
    pub fn parse(bytes: Bytes) -> Result<JsonBody, WireError> {
        let b = &bytes[..];
        let mut members = Vec::with_capacity(12);
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err(if i == b.len() {
                WireError::syntax("The request body is empty; a JSON object is expected.")
            } else if serde_json::from_slice::<IgnoredAny>(b).is_ok() {
                WireError {
                    param: None,
                    message: "The request body must be a JSON object.".into(),
                    syntax: false,
                }
            } else {
                WireError::syntax("The request body is not valid JSON.")
            });
        }
        // One pass over the whole body instead of one per string: serde_json then reads `str`
        // slices of it and skips its own UTF-8 check of every key and string value.
        let text = std::str::from_utf8(b).map_err(|e| {
            WireError::syntax(format!(
                "The request body is not valid JSON: it is not UTF-8 (at byte {}).",
                e.valid_up_to()
            ))
        })?;
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return Err(WireError::syntax(format!(
                        "The request body is not valid JSON: expected a member name at byte {i}."
                    )));
                }
                let key_start = i + 1;
                let mut j = key_start;
                let mut escaped = false;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        escaped = true;
                        j += 1;
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return Err(WireError::syntax(
                        "The request body is not valid JSON: unterminated string.",
                    ));
                }
                // Both ends are quotes, so the slice falls on character boundaries.
                let key_text = &text[i..=j];
                let name = if escaped {
                    let key: String = serde_json::from_str(key_text).map_err(|e| {
                        WireError::syntax(format!("The request body is not valid JSON: {e}"))
                    })?;
                    KNOWN.iter().copied().find(|k| *k == key)
                } else {
                    let key: &str = serde_json::from_str(key_text).map_err(|e| {
                        WireError::syntax(format!("The request body is not valid JSON: {e}"))
                    })?;
                    KNOWN.iter().copied().find(|k| *k == key)
                };
                if let Some(n) = name {
                    if members.iter().any(|m: &Member| m.name == Some(n)) {
                        return Err(WireError {
                            param: Some(n.to_string()),
                            message: format!("`{n}` appears more than once in the request body."),
                            syntax: false,
                        });
                    }
                }
                i = skip_ws(b, j + 1);
                if b.get(i) != Some(&b':') {
                    return Err(WireError::syntax(format!(
                        "The request body is not valid JSON: expected `:` at byte {i}."
                    )));
                }
                i = skip_ws(b, i + 1);
                let mut de = serde_json::Deserializer::from_str(&text[i..]);
                let raw = <&RawValue>::deserialize(&mut de).map_err(|e| {
                    WireError::syntax(format!("The request body is not valid JSON: {e}"))
                })?;
                let start = raw.get().as_ptr() as usize - b.as_ptr() as usize;
                let end = start + raw.get().len();
                members.push(Member {
                    key: key_start..j,
                    value: start..end,
                    name,
                });
                i = skip_ws(b, end);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => {
                        return Err(WireError::syntax(format!(
                            "The request body is not valid JSON: expected `,` or `}}` at byte {i}."
                        )))
                    }
                }
            }
        }
        if skip_ws(b, i) != b.len() {
            return Err(WireError::syntax(
                "The request body is not valid JSON: trailing characters after the object.",
            ));
        }
        check_unicode_escapes(b)?;
        Ok(JsonBody { bytes, members })
    }

    /// The body as it came.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The raw value of a known member (`null` counts as absent).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|m| m.name == Some(name))
            .map(|m| &self.bytes[m.value.clone()])
            .filter(|v| *v != b"null")
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names of every member, in order (escaped keys decoded).
    pub fn names(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.members.iter().map(|m| match m.name {
            Some(n) => Cow::Borrowed(n),
            None => {
                let raw = &self.bytes[m.key.start - 1..m.key.end + 1];
                serde_json::from_slice::<Cow<str>>(raw).unwrap_or(Cow::Borrowed(""))
            }
        })
    }

    /// Decodes a known member, naming it (and the path inside it) when it has the wrong shape.
    pub fn member<'a, T: Deserialize<'a>>(&'a self, name: &str) -> Result<Option<T>, WireError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        // The body was checked to be UTF-8 when parsed, and a member's value starts and ends
        // at ASCII bytes, so this cannot fail; one bulk pass is cheaper than one per string.
        let Ok(raw) = std::str::from_utf8(raw) else {
            return Ok(None);
        };
        let mut de = serde_json::Deserializer::from_str(raw);
        serde_path_to_error::deserialize(&mut de)
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = if path == "." || path.is_empty() {
                    name.to_string()
                } else if path.starts_with('[') {
                    format!("{name}{path}")
                } else {
                    format!("{name}.{path}")
                };
                WireError {
                    message: format!("Invalid request: `{param}`: {}", e.into_inner()),
                    param: Some(param),
                    syntax: false,
                }
            })
    }

    /// The body with some known members replaced (`Some`: new raw JSON value; members not present
    /// are added at the front) or removed (`None`); everything else byte for byte as it came.
    pub fn rewrite(&self, changes: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let extra: usize = changes
            .iter()
            .map(|(n, v)| n.len() + 4 + v.map_or(0, <[u8]>::len))
            .sum();
        let mut out = Vec::with_capacity(self.bytes.len() + extra);
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for (name, value) in changes {
            if let Some(v) = value {
                if !self.members.iter().any(|m| m.name == Some(name)) {
                    sep(&mut out);
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    out.extend_from_slice(v);
                }
            }
        }
        for m in &self.members {
            let change = m
                .name
                .and_then(|n| changes.iter().find(|(c, _)| *c == n).map(|(_, v)| *v));
            let value = match change {
                None => &self.bytes[m.value.clone()],
                Some(None) => continue,
                Some(Some(v)) => v,
            };
            sep(&mut out);
            out.extend_from_slice(&self.bytes[m.key.start - 1..m.key.end + 1]);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        out
    }

    /// The body with only the members `keep(name, raw value)` accepts.
    pub fn filtered(&self, keep: impl Fn(&str, &[u8]) -> bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len());
        out.push(b'{');
        for (m, name) in self.members.iter().zip(self.names()) {
            let value = &self.bytes[m.value.clone()];
            if !keep(&name, value) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&self.bytes[m.key.start - 1..m.key.end + 1]);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        out
    }
}

/// `stream_options` with `include_usage: true`, keeping whatever else the client put there.
pub fn stream_options_with_usage(client: Option<&[u8]>) -> Vec<u8> {
    let mut map = client
        .and_then(|raw| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw).ok()
        })
        .unwrap_or_default();
    map.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&map).unwrap_or_else(|_| b"{\"include_usage\":true}".to_vec())
}

/// A JSON string literal.
pub fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

// ---------------------------------------------------------------------------------------------
// Server-sent events.
// ---------------------------------------------------------------------------------------------

/// `data: <data>\n\n`, or with an `event:` line first.
pub fn sse_frame(event: Option<&str>, data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16 + event.map_or(0, str::len));
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    // A data payload spanning lines needs one `data:` field per line. Every streamed event of
    // every answer passes here, almost always one line: `memchr` finds that out faster than
    // `str::split`'s character search (~2 % of a streamed call's instructions).
    let mut rest = data.as_bytes();
    loop {
        out.extend_from_slice(b"data: ");
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..=i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

// ---------------------------------------------------------------------------------------------
// Reading answers.
// ---------------------------------------------------------------------------------------------

/// Message content as text: a string, or the `text` of an array of parts (some compatible
/// servers send parts), borrowed from the body when it has no escapes.
#[derive(Debug, Default)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of content parts or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                #[derive(Deserialize)]
                struct Part<'a> {
                    #[serde(default, borrow)]
                    text: Option<Cow<'a, str>>,
                }
                let mut out = String::new();
                while let Some(p) = seq.next_element::<Part<'de>>()? {
                    if let Some(t) = p.text {
                        out.push_str(&t);
                    }
                }
                Ok(Text(Cow::Owned(out)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
pub struct FunctionView<'a> {
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub arguments: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallView<'a> {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function: Option<FunctionView<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct MessageView<'a> {
    #[serde(default, borrow)]
    pub content: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallView<'a>>>,
}

impl MessageView<'_> {
    /// The content, or the refusal when there is no content.
    pub fn text(&self) -> &str {
        match (&self.content, &self.refusal) {
            (Some(Text(c)), _) if !c.is_empty() => c,
            (_, Some(r)) => r,
            _ => "",
        }
    }

    fn has_content(&self) -> bool {
        !self.text().is_empty() || self.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
    }
}

#[derive(Debug, Deserialize)]
pub struct ChoiceView<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow)]
    pub message: Option<MessageView<'a>>,
    #[serde(default, borrow)]
    pub delta: Option<MessageView<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatUsage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl ChatUsage {
    pub fn to_usage(&self) -> Option<Usage> {
        if self.prompt_tokens.is_none() && self.completion_tokens.is_none() {
            return None;
        }
        Some(Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
        })
    }
}

/// The fields of a `chat.completion` object or `chat.completion.chunk` the gateway reads.
#[derive(Debug, Deserialize)]
pub struct ChatView<'a> {
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    pub usage: Option<ChatUsage>,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

impl<'a> ChatView<'a> {
    /// The first choice (index 0, else the first listed).
    pub fn first_choice(&self) -> Option<&ChoiceView<'a>> {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .or_else(|| self.choices.first())
    }

    /// Whether any choice's delta carries answer content.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta
                .as_ref()
                .or(c.message.as_ref())
                .is_some_and(MessageView::has_content)
        })
    }
}

/// Tool calls assembled from stream deltas (`index` says which call a piece belongs to).
#[derive(Debug, Default)]
pub struct ToolCallParts {
    calls: Vec<ToolCall>,
}

impl ToolCallParts {
    pub fn add(&mut self, delta: &ToolCallView<'_>) {
        let i = delta.index.unwrap_or(self.calls.len().saturating_sub(1));
        // An index far beyond the calls so far is a broken upstream, not a reason to allocate.
        if i > self.calls.len() + 64 {
            return;
        }
        while self.calls.len() <= i {
            self.calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.calls[i];
        if let Some(id) = &delta.id {
            call.id = id.to_string();
        }
        if let Some(f) = &delta.function {
            if let Some(n) = &f.name {
                call.name.push_str(n);
            }
            if let Some(a) = &f.arguments {
                call.arguments.push_str(a);
            }
        }
    }

    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
    }
}

/// Whole tool calls of a non-streamed message.
pub fn tool_calls_of(m: &MessageView<'_>) -> Vec<ToolCall> {
    let mut parts = ToolCallParts::default();
    for (i, t) in m.tool_calls.iter().flatten().enumerate() {
        parts.add(&ToolCallView {
            index: Some(i),
            id: t.id.clone(),
            function: t.function.as_ref().map(|f| FunctionView {
                name: f.name.clone(),
                arguments: f.arguments.clone(),
            }),
        });
    }
    parts.finish()
}

// ---------------------------------------------------------------------------------------------
// Error objects.
// ---------------------------------------------------------------------------------------------

/// The `error` object OpenAI puts in error bodies and error stream events.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<serde_json::Value>,
}

fn scalar_text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl ErrorDetail {
    /// The message with the code (or type) in brackets, for logs and records.
    pub fn describe(&self) -> Option<String> {
        let code = scalar_text(&self.code).or_else(|| self.kind.clone());
        match (&self.message, code) {
            (Some(m), Some(c)) => Some(format!("{m} ({c})")),
            (Some(m), None) => Some(m.clone()),
            (None, Some(c)) => Some(c),
            (None, None) => None,
        }
    }

    pub fn upstream_error(&self) -> UpstreamError {
        UpstreamError {
            kind: self.kind.clone(),
            param: scalar_text(&self.param),
            code: scalar_text(&self.code),
        }
    }
}

/// An error body's message and error object: OpenAI's `{"error": {…}}` (or a bare error object),
/// else the body text, else the status reason.
/// Refuses `\\u` escapes that name no Unicode scalar value: a lone surrogate (`\\ud800` without
/// its low half) or a short or non-hex escape. Members are kept as raw text, which serde_json
/// does not decode, and PostgreSQL's jsonb refuses such a string: the call's record (its
/// parameters are the body) would be lost after the answer. `b` is valid JSON otherwise, so a
/// backslash only occurs inside strings.
fn check_unicode_escapes(b: &[u8]) -> Result<(), WireError> {
    let hex = |at: usize| -> Option<u16> {
        let digits = b.get(at..at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let bad = |at: usize| {
        WireError::syntax(format!(
            "The request body is not valid JSON: the escape at byte {at} is not a Unicode character (a lone surrogate or a short \\u escape)."
        ))
    };
    let mut i = 0;
    while let Some(off) = b.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + off;
        if b.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        let unit = hex(at + 2).ok_or_else(|| bad(at))?;
        i = at + 6;
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(i..i + 2) == Some(b"\\u"))
                    .then(|| hex(i + 2))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i += 6,
                    _ => return Err(bad(at)),
                }
            }
            0xDC00..=0xDFFF => return Err(bad(at)),
            _ => {}
        }
    }
    Ok(())
}

pub fn parse_error_body(body: &[u8], reason: &str) -> (String, Option<UpstreamError>) {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorDetail,
    }
    let detail = serde_json::from_slice::<Envelope>(body)
        .map(|e| e.error)
        .or_else(|_| serde_json::from_slice::<ErrorDetail>(body));
    if let Ok(d) = detail {
        if let Some(message) = d.message.clone() {
            return (message, Some(d.upstream_error()));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        (reason.to_string(), None)
    } else {
        (text.to_string(), None)
    }
}

#[cfg(test)]
mod tests;
