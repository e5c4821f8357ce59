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
