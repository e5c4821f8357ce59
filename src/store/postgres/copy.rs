//! `llm_logs` rows in PostgreSQL's binary `COPY` format: the writer's batch insert. PostgreSQL
//! takes a binary COPY for less CPU per row than `INSERT … SELECT FROM UNNEST` of 29 arrays (no
//! array literals to parse, no executor over an UNNEST), and the encoding here is a linear walk
//! that writes each value once into one buffer. Format: "Binary Format" in the `COPY` chapter of
//! the PostgreSQL manual; each value in its type's binary send format.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::logs::text;
use crate::store::record::{replace_nul_escapes, HeuristicLabel, LogRecord};

/// The statement the encoded rows are for: the columns in [`encode_row`]'s order.
pub(super) const COPY_LOGS: &str = concat!(
    "COPY llm_logs (",
    crate::store::sql::log_columns!(),
    ") FROM STDIN WITH (FORMAT binary)"
);

const COLUMNS: i16 = 29;
/// `text`'s type oid, the element type of `tags`.
const TEXT_OID: i32 = 25;
/// jsonb's binary format version.
const JSONB_VERSION: u8 = 1;
/// PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The signature, flags and header extension that open every binary COPY stream.
pub(super) fn header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags: no OIDs
    buf.put_i32(0); // no header extension
}

/// The field count -1 that ends the stream.
pub(super) fn trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// One row; NUL, which PostgreSQL text and jsonb cannot hold, is stored as U+FFFD (as the
/// INSERT path does).
fn encode_row(buf: &mut BytesMut, r: &LogRecord) {
    buf.put_i16(COLUMNS);
    fixed(buf, r.request_id.as_bytes());
    fixed(
        buf,
        &(r.created_at.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes(),
    );
    str_field(buf, r.endpoint.as_str());
    opt_str(buf, r.user_id.as_deref());
    str_field(buf, &r.prompt);
    opt_str(buf, r.response.as_deref());
    str_field(buf, &r.model_version);
    str_field(buf, &r.provider);
    str_field(buf, &r.upstream_model);
    fixed(buf, &r.latency_ms.to_be_bytes());
    match r.ttft_ms {
        Some(t) => fixed(buf, &t.to_be_bytes()),
        None => null(buf),
    }
    fixed(buf, &r.input_tokens.to_be_bytes());
    fixed(buf, &r.cached_input_tokens.to_be_bytes());
    fixed(buf, &r.output_tokens.to_be_bytes());
    fixed(buf, &r.cost_usd.to_be_bytes());
    str_field(buf, r.status.as_str());
    fixed(buf, &r.http_status.to_be_bytes());
    opt_str(buf, r.error_type.as_deref());
    opt_str(buf, r.error_message.as_deref());
    opt_str(buf, r.finish_reason.as_deref());
    fixed(buf, &[u8::from(r.streamed)]);
    text_array(buf, &r.tags);
    json_value(buf, &r.metadata);
    opt_str(buf, r.heuristic_label.map(HeuristicLabel::as_str));
    json_value(buf, &r.heuristic_results);
    opt_str(buf, r.api_key_name.as_deref());
    opt_jsonb(buf, r.request_params.as_ref().map(|j| j.get()));
    opt_jsonb(buf, r.tool_calls.as_ref().map(|j| j.get()));
    opt_str(buf, r.client_request_id.as_deref());
}

/// Rows, with room reserved for them first.
pub(super) fn encode_rows(buf: &mut BytesMut, records: &[LogRecord]) {
    buf.reserve(records.iter().map(|r| r.approx_bytes() + 256).sum());
    for r in records {
        encode_row(buf, r);
    }
}

/// A whole batch as one COPY stream.
#[cfg(test)]
pub(super) fn encode(records: &[LogRecord]) -> BytesMut {
    let mut buf = BytesMut::new();
    header(&mut buf);
    encode_rows(&mut buf, records);
    trailer(&mut buf);
    buf
}

fn len_prefix(buf: &mut BytesMut, len: usize) {
    // Every value here is far below 1 GiB: request bodies are capped well below it.
    buf.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

fn null(buf: &mut BytesMut) {
    buf.put_i32(-1);
}

fn fixed(buf: &mut BytesMut, bytes: &[u8]) {
    len_prefix(buf, bytes.len());
    buf.put_slice(bytes);
}

fn str_field(buf: &mut BytesMut, s: &str) {
    fixed(buf, text(s).as_bytes());
}

fn opt_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => str_field(buf, s),
        None => null(buf),
    }
}

/// A one-dimensional `text[]` (an empty array has no dimensions).
fn text_array(buf: &mut BytesMut, items: &[String]) {
    let start = buf.len();
    buf.put_i32(0); // length, patched below
    buf.put_i32(i32::from(!items.is_empty())); // dimensions
    buf.put_i32(0); // no NULL elements
    buf.put_i32(TEXT_OID);
    if !items.is_empty() {
        buf.put_i32(i32::try_from(items.len()).unwrap_or(i32::MAX));
        buf.put_i32(1); // lower bound
        for item in items {
            str_field(buf, item);
        }
    }
    patch_len(buf, start);
}

/// jsonb from a JSON value, serialized straight into the buffer.
fn json_value(buf: &mut BytesMut, v: &serde_json::Value) {
    let start = buf.len();
    buf.put_i32(0); // length, patched below
    buf.put_u8(JSONB_VERSION);
    let body = buf.len();
    // Writing JSON into memory cannot fail.
    let _ = serde_json::to_writer((&mut *buf).writer(), v);
    // NUL is escaped as \u0000 in JSON text; jsonb refuses it in strings and keys.
    if let Cow::Owned(fixed) = replace_nul_escapes(std::str::from_utf8(&buf[body..]).unwrap_or(""))
    {
        buf.truncate(body);
        buf.put_slice(fixed.as_bytes());
    }
    patch_len(buf, start);
}

fn opt_jsonb(buf: &mut BytesMut, json: Option<&str>) {
    let Some(json) = json else {
        return null(buf);
    };
    let json = replace_nul_escapes(json);
    len_prefix(buf, 1 + json.len());
    buf.put_u8(JSONB_VERSION);
    buf.put_slice(json.as_bytes());
}

/// Writes the length of the value that starts after the 4-byte prefix at `start`.
fn patch_len(buf: &mut BytesMut, start: usize) {
    let len = buf.len() - start - 4;
    let len = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
    buf[start..start + 4].copy_from_slice(&len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::sample_record;

    #[test]
    fn stream_has_header_rows_and_trailer() {
        let records = [sample_record(1), sample_record(2)];
        let buf = encode(&records);
        assert!(buf.starts_with(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0"));
        assert!(buf.ends_with(&[0xff, 0xff]));
        // First row: field count, then the uuid with its length.
        assert_eq!(&buf[19..21], &29i16.to_be_bytes());
        assert_eq!(&buf[21..25], &16i32.to_be_bytes());
        assert_eq!(&buf[25..41], records[0].request_id.as_bytes());
    }

    #[test]
    fn empty_tags_are_a_zero_dimension_array() {
        let mut buf = BytesMut::new();
        text_array(&mut buf, &[]);
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25]
        );
    }

    #[test]
    fn nul_in_json_becomes_the_replacement_character() {
        let mut buf = BytesMut::new();
        json_value(&mut buf, &serde_json::json!({"k\u{0}": "v"}));
        let body = std::str::from_utf8(&buf[5..]).unwrap();
        assert_eq!(body, r#"{"k\ufffd":"v"}"#);
        assert_eq!(&buf[..4], &(1 + body.len() as i32).to_be_bytes());
        assert_eq!(buf[4], JSONB_VERSION);
    }
}
