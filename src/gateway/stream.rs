//! Streamed calls: the provider's frames passed on as they come, the text kept for the record, and
//! the call recorded exactly once — at the final event (before the last frame goes out), on an
//! upstream error, or, when the client hangs up, as `cancelled`: at once (the upstream stream is
//! dropped with it), or with `server.finish_abandoned_calls` once the stream has been read to its
//! end on a task of its own, with its usage and cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::{disarm, Abandoned, ChatInput, CoreError, Gateway, InFlight, ModelRoute};
use crate::provider::{Completion, ProviderError, StreamEnd, StreamEvent};

/// What a gateway stream yields to the handler.
#[derive(Debug)]
pub enum GatewayStreamItem {
    /// A whole server-sent event for the client, as the provider shaped it.
    Frame(Bytes),
    /// The stream failed after it started; the handler tells the client in its API's way.
    Error(ProviderError),
}

type Frames = BoxStream<'static, GatewayStreamItem>;

impl Gateway {
    /// Streaming call. Errors before the first byte come back here so the handler can answer
    /// with a proper status; the returned stream yields the client's frames and records the call
    /// when it ends — normally, on an upstream error, or when the client goes away.
    pub async fn stream_chat(
        self: &Arc<Self>,
        input: ChatInput,
    ) -> Result<(String, Frames), CoreError> {
        if !self.finish_abandoned {
            return self.start_stream(input, None).await;
        }
        // The call runs on its own task and reaches the client through a channel; when the
        // client goes away the task reads the stream on to its end and records it as cancelled.
        let gone = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let this = self.clone();
        let flag = gone.clone();
        self.spawn_background(async move {
            let mut frames = match this.start_stream(input, Some(flag.clone())).await {
                Ok((model_version, frames)) => {
                    if started_tx.send(Ok(model_version)).is_err() {
                        flag.store(true, Ordering::Release);
                    }
                    frames
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            while let Some(item) = frames.next().await {
                if !flag.load(Ordering::Acquire) && tx.send(item).await.is_err() {
                    flag.store(true, Ordering::Release);
                }
            }
        });
        match started_rx.await {
            Ok(Ok(model_version)) => {
                let frames = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                Ok((model_version, frames.boxed()))
            }
            Ok(Err(e)) => Err(e),
            // The task panicked before it started the stream (its panic is logged by tokio).
            Err(_) => Err(CoreError::Upstream {
                error: ProviderError::InvalidResponse("the call's task failed".into()),
                provider: String::new(),
                retries: 0,
            }),
        }
    }

    /// Starts the upstream stream and wraps it. `gone` is set when the call runs on its own task
    /// (then nothing here is dropped early) and tells the recorder the client left.
    async fn start_stream(
        self: &Arc<Self>,
        mut input: ChatInput,
        gone: Option<Arc<AtomicBool>>,
    ) -> Result<(String, Frames), CoreError> {
        let (route, in_flight) = self.begin(&mut input)?;
        let input = Arc::new(input);
        let guard = gone
            .is_none()
            .then(|| Abandoned::new(self, &route, &input, true));
        let upstream_start = Instant::now();
        let (started, attempted) = self
            .call(&route, input.started, || {
                route.provider.stream(&input.request)
            })
            .await;
        disarm(guard);
        let upstream_stream = match started {
            Ok(s) => s,
            Err(e @ ProviderError::Unsupported { .. }) => {
                return Err(Self::upstream_error(&route, e, &attempted))
            }
            Err(e) => {
                self.finish_err(&route, &input, &e, String::new(), None, true)
                    .await;
                return Err(Self::upstream_error(&route, e, &attempted));
            }
        };
        let model_version = route.name.clone();
        let deadline = self.deadline(input.started);
        let mut rec = StreamRecorder {
            gateway: self.clone(),
            route,
            input,
            text: String::new(),
            ttft: None,
            upstream_start,
            done: false,
            gone,
            _in_flight: in_flight,
        };
        let out = async_stream::stream! {
            let mut upstream_stream = upstream_stream;
            // One timer for the whole stream: a `timeout_at` per chunk would insert and remove a
            // timer entry for every token.
            let deadline = tokio::time::sleep_until(deadline);
            tokio::pin!(deadline);
            loop {
                let next = tokio::select! {
                    biased;
                    n = upstream_stream.next() => n,
                    _ = &mut deadline => Some(Err(ProviderError::Timeout(rec.gateway.request_timeout))),
                };
                match next {
                    Some(Ok(StreamEvent::Chunk { frame, text, content })) => {
                        if content && rec.ttft.is_none() {
                            rec.ttft = Some(rec.input.started.elapsed());
                        }
                        rec.text.push_str(&text);
                        if !frame.is_empty() {
                            yield GatewayStreamItem::Frame(frame);
                        }
                    }
                    Some(Ok(StreamEvent::Done(end))) => {
                        // Recorded before the last frame goes out: a client that hangs up on
                        // `[DONE]` still gets a complete record.
                        let trailer = end.trailer.clone();
                        rec.finish_ok(end).await;
                        if !trailer.is_empty() {
                            yield GatewayStreamItem::Frame(trailer);
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        rec.finish_err(&e).await;
                        yield GatewayStreamItem::Error(e);
                        break;
                    }
                    None => {
                        let e = ProviderError::StreamInterrupted("the stream ended without a final event".into());
                        rec.finish_err(&e).await;
                        yield GatewayStreamItem::Error(e);
                        break;
                    }
                }
            }
        };
        Ok((model_version, out.boxed()))
    }
}

/// State of one streamed call; records it exactly once — at the end, or on drop if the client
/// disconnected first.
struct StreamRecorder {
    gateway: Arc<Gateway>,
    route: Arc<ModelRoute>,
    input: Arc<ChatInput>,
    text: String,
    ttft: Option<Duration>,
    upstream_start: Instant,
    done: bool,
    /// Set when the client left a call that runs on its own task.
    gone: Option<Arc<AtomicBool>>,
    _in_flight: InFlight,
}

impl StreamRecorder {
    async fn finish_ok(&mut self, end: StreamEnd) {
        self.done = true;
        let c = Completion {
            text: std::mem::take(&mut self.text),
            finish_reason: end.finish_reason,
            usage: end.usage,
            upstream_model: end.upstream_model.unwrap_or_default(),
            tool_calls: end.tool_calls,
            body: None,
        };
        let upstream = self.upstream_start.elapsed();
        let client_gone = self
            .gone
            .as_ref()
            .is_some_and(|g| g.load(Ordering::Acquire));
        self.gateway
            .finish_ok(
                &self.route,
                &self.input,
                c,
                upstream,
                self.ttft.or(Some(self.input.started.elapsed())),
                true,
                client_gone,
            )
            .await;
    }

    async fn finish_err(&mut self, e: &ProviderError) {
        self.done = true;
        let text = std::mem::take(&mut self.text);
        self.gateway
            .finish_err(&self.route, &self.input, e, text, self.ttft, true)
            .await;
    }
}

impl Drop for StreamRecorder {
    fn drop(&mut self) {
        if !self.done {
            self.gateway.record_abandoned(
                self.route.clone(),
                self.input.clone(),
                std::mem::take(&mut self.text),
                self.ttft,
                true,
            );
        }
    }
}
