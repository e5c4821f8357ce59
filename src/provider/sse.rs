//! Server-sent events from an upstream: an incremental decoder (bytes in, events out, whatever
//! the chunk boundaries), the stream of events over a response body, and the loop that hands each
//! event to a provider's `SseHandler` until the stream ends.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{ProviderError, StreamEvent};

/// One SSE line (or event) larger than this means a broken upstream, not a long answer.
const MAX_SSE_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser: bytes in, complete events out, whatever the chunk boundaries (inside a
/// line, inside a UTF-8 character, between `\r` and `\n`).
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The previous chunk ended with `\r`; a `\n` right after it is the same line ending.
    after_cr: bool,
}

impl SseDecoder {
    /// Splits on line endings with `memchr` and copies whole runs: a byte-at-a-time loop showed
    /// in profiles of saturated streaming (one token is one ~200-byte event).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut events = Vec::new();
        if std::mem::take(&mut self.after_cr) {
            if let [b'\n', rest @ ..] = bytes {
                bytes = rest;
            }
        }
        while !bytes.is_empty() {
            let end = memchr::memchr2(b'\n', b'\r', bytes);
            let run = end.unwrap_or(bytes.len());
            if self.line.len() + run > MAX_SSE_EVENT_BYTES {
                return Err(ProviderError::InvalidResponse(
                    "stream line exceeds the size limit".into(),
                ));
            }
            let Some(i) = end else {
                self.line.extend_from_slice(bytes);
                break;
            };
            let event = if self.line.is_empty() {
                self.end_line(&bytes[..i])?
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[..i]);
                let event = self.end_line(&line);
                line.clear();
                self.line = line;
                event?
            };
            events.extend(event);
            let cr = bytes[i] == b'\r';
            bytes = &bytes[i + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        Ok(events)
    }

    /// End of input: a last event without the closing blank line still counts.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            if let Some(ev) = self.end_line(&line)? {
                return Ok(Some(ev));
            }
        }
        Ok(self.dispatch())
    }

    fn end_line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, ProviderError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| ProviderError::InvalidResponse("stream is not valid UTF-8".into()))?;
        if line.starts_with(':') {
            return Ok(None); // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if data.len() + value.len() > MAX_SSE_EVENT_BYTES {
                    return Err(ProviderError::InvalidResponse(
                        "stream event exceeds the size limit".into(),
                    ));
                }
                // Every data line ends with a newline; dispatch drops the last one (as the spec does).
                data.push_str(value);
                data.push('\n');
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // id, retry and unknown fields do not matter here
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|mut data| {
            data.pop();
            SseEvent { event, data }
        })
    }
}

/// Byte chunks → SSE events.
pub fn sse_events<S>(bytes: S) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
{
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        let mut decoder = SseDecoder::default();
        while let Some(chunk) = bytes.next().await {
            match chunk.and_then(|c| decoder.feed(&c)) {
                Ok(events) => {
                    for ev in events {
                        yield Ok(ev);
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        match decoder.finish() {
            Ok(Some(ev)) => yield Ok(ev),
            Ok(None) => {}
            Err(e) => yield Err(e),
        }
    }
}

/// Turns one API's SSE events into stream events.
pub trait SseHandler: Send + 'static {
    /// Pushes the events `ev` makes to `out`; a `Done` among them ends the stream.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The upstream closed the stream before a `Done`.
    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError>;
}

/// Runs `handler` over `events` until `Done`, an error, or the end of the stream (after which
/// nothing more is read).
pub fn drive<S, H>(
    events: S,
    mut handler: H,
) -> impl Stream<Item = Result<StreamEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<SseEvent, ProviderError>> + Send + 'static,
    H: SseHandler,
{
    async_stream::stream! {
        let mut events = std::pin::pin!(events);
        let mut out = Vec::with_capacity(4);
        while let Some(ev) = events.next().await {
            match ev.and_then(|ev| handler.on_event(ev, &mut out)) {
                Ok(()) => {
                    for item in out.drain(..) {
                        let done = matches!(item, StreamEvent::Done(_));
                        yield Ok(item);
                        if done {
                            return;
                        }
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        yield handler.on_eof();
    }
}

#[cfg(test)]
mod tests;
