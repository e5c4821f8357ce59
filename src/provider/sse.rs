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
                // Room for both at once: a fresh event's `push_str` would otherwise allocate
                // exactly the line and the newline reallocate and copy it.
                data.reserve(value.len() + 1);
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

/// Turns one API's SSE events into stream events.
pub trait SseHandler: Send + Unpin + 'static {
    /// Pushes the events `ev` makes to `out`; a `Done` among them ends the stream.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The upstream closed the stream before a `Done`.
    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError>;
}

/// Runs `handler` over the SSE events of `bytes` until `Done`, an error, or the end of the
/// stream (after which nothing more is read). One hand-written stream rather than two chained
/// generators: every event of every streamed answer passes through here, and each layer of
/// polling cost CPU per event.
pub fn drive<S, H>(bytes: S, handler: H) -> Driven<S, H>
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin + 'static,
    H: SseHandler,
{
    Driven {
        bytes,
        handler,
        decoder: SseDecoder::default(),
        ready: std::collections::VecDeque::new(),
        out: Vec::with_capacity(4),
        ended: false,
    }
}

/// The stream `drive` returns.
pub struct Driven<S, H> {
    bytes: S,
    handler: H,
    decoder: SseDecoder,
    /// Stream events made from what has been read and not yet taken.
    ready: std::collections::VecDeque<Result<StreamEvent, ProviderError>>,
    out: Vec<StreamEvent>,
    /// `Done`, an error or the end was reached: nothing more is read.
    ended: bool,
}

impl<S, H: SseHandler> Driven<S, H> {
    /// Hands `ev` to the handler; a `Done` or an error ends the stream.
    fn handle(&mut self, ev: SseEvent) {
        match self.handler.on_event(ev, &mut self.out) {
            Ok(()) => {
                for item in self.out.drain(..) {
                    let done = matches!(item, StreamEvent::Done(_));
                    self.ready.push_back(Ok(item));
                    if done {
                        self.ended = true;
                        break;
                    }
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: ProviderError) {
        self.ready.push_back(Err(e));
        self.ended = true;
    }
}

impl<S, H> Stream for Driven<S, H>
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Unpin,
    H: SseHandler,
{
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if let Some(item) = this.ready.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(this.bytes.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => match this.decoder.feed(&chunk) {
                    Ok(events) => {
                        for ev in events {
                            this.handle(ev);
                            if this.ended {
                                break;
                            }
                        }
                    }
                    Err(e) => this.fail(e),
                },
                Some(Err(e)) => this.fail(e),
                None => {
                    match this.decoder.finish() {
                        Ok(Some(ev)) => this.handle(ev),
                        Ok(None) => {}
                        Err(e) => this.fail(e),
                    }
                    if !this.ended {
                        let last = this.handler.on_eof();
                        this.ready.push_back(last);
                        this.ended = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
