use super::*;

#[test]
fn sse_decoder_follows_the_spec_details() {
    let mut d = SseDecoder::default();
    let evs = d
        .feed(b"event: ping\ndata: a\ndata: b\nid: 1\n\ndata:no-space\r\rdata\n\n")
        .unwrap();
    assert_eq!(
        evs,
        vec![
            SseEvent {
                event: Some("ping".into()),
                data: "a\nb".into()
            },
            SseEvent {
                event: None,
                data: "no-space".into()
            },
            SseEvent {
                event: None,
                data: "".into()
            },
        ]
    );
    assert!(d.feed(&[0xff, b'\n']).is_err());
}

/// Echoes each event's data as a frame; `stop` ends the answer, `bad` is a handler error.
struct Echo;

impl SseHandler for Echo {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        match ev.data.as_str() {
            "stop" => out.push(StreamEvent::Done(crate::provider::StreamEnd::default())),
            "bad" => return Err(ProviderError::InvalidResponse("bad event".into())),
            data => out.push(StreamEvent::Chunk {
                frame: Bytes::from(data.to_string()),
                text: data.to_string(),
                content: true,
            }),
        }
        Ok(())
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        Err(ProviderError::StreamInterrupted("no final event".into()))
    }
}

/// What `drive` makes of `chunks`: the frames' text, "done", or the error.
async fn driven(chunks: &[&'static str]) -> Vec<String> {
    let bytes = futures::stream::iter(
        chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c.as_bytes())))
            .collect::<Vec<_>>(),
    );
    drive(bytes, Echo)
        .map(|item| match item {
            Ok(StreamEvent::Chunk { text, .. }) => text,
            Ok(StreamEvent::Done(_)) => "done".to_string(),
            Err(e) => format!("error: {e}"),
        })
        .collect()
        .await
}

#[tokio::test]
async fn drive_hands_over_every_event_and_stops_at_the_end() {
    // Several events in one chunk, one event over two chunks, nothing read after the end.
    assert_eq!(
        driven(&[
            "data: a\n\ndata: b\n\nda",
            "ta: c\n\n",
            "data: stop\n\ndata: late\n\n"
        ])
        .await,
        ["a", "b", "c", "done"]
    );
    // A last event without its blank line still counts.
    assert_eq!(driven(&["data: a\n\ndata: stop"]).await, ["a", "done"]);
    // No final event: the handler says how the stream ended.
    assert_eq!(
        driven(&["data: a\n\n"]).await,
        ["a", "error: upstream stream interrupted: no final event"]
    );
    // A handler error ends the stream; the events after it in the same chunk are not handed over.
    let out = driven(&["data: a\n\ndata: bad\n\ndata: c\n\n"]).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], "a");
    assert!(out[1].starts_with("error:"), "{out:?}");
    // An upstream read error ends it too.
    let bytes = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"data: a\n\n")),
        Err(ProviderError::StreamInterrupted("reset".into())),
        Ok(Bytes::from_static(b"data: b\n\n")),
    ]);
    let n = drive(bytes, Echo).count().await;
    assert_eq!(n, 2);
}
