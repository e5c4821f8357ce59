//! The SSE response's batching: frames that are ready together leave together, and none is held
//! back.

use super::*;
use std::time::Duration;

fn frames(
    rx: tokio::sync::mpsc::Receiver<GatewayStreamItem>,
) -> BoxStream<'static, GatewayStreamItem> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }).boxed()
}

fn frame(i: usize) -> GatewayStreamItem {
    GatewayStreamItem::Frame(Bytes::from(format!("data: {i}\n\n")))
}

type Chunks = axum::body::BodyDataStream;

async fn next_chunk(body: &mut Chunks) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the body did not answer within 10 s")
        .map(Result::unwrap)
}

/// Frames handed over one at a time by another task — as hyper's client connection task
/// hands over the upstream's body — leave together in a few writes, in order.
#[tokio::test(flavor = "current_thread")]
async fn frames_handed_over_one_at_a_time_leave_together() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..40 {
            tx.send(frame(i)).await.unwrap();
        }
    });
    let mut body = sse_answer(Api::Chat, "m", frames(rx))
        .into_body()
        .into_data_stream();
    let mut chunks = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await {
        chunks.push(chunk);
    }
    let expected: String = (0..40).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(chunks.concat(), expected.as_bytes());
    assert!(chunks.len() <= 4, "{} writes for 40 frames", chunks.len());
}

/// A frame with nothing behind it goes out at once: waiting for company never holds a token
/// back from the client.
#[tokio::test(flavor = "current_thread")]
async fn a_lone_frame_goes_out_without_waiting_for_the_next() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut body = sse_answer(Api::Chat, "m", frames(rx))
        .into_body()
        .into_data_stream();
    tx.send(frame(1)).await.unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap(), "data: 1\n\n");
    tx.send(frame(2)).await.unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap(), "data: 2\n\n");
    drop(tx);
    assert!(next_chunk(&mut body).await.is_none());
}
