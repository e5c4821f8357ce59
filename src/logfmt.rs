//! Field formatting for the text log format without colours.
//!
//! tracing-subscriber's `DefaultFields` writes every field as `name=value` through its colour
//! helpers even when colours are off: three nested formatting passes per field. Every request's
//! span has three fields and is formatted when it is created, so that was ~3.7k of the gateway's
//! ~122k instructions per call (callgrind). [`PlainFields`] writes the same text in one pass and
//! hands every case it does not write itself (the message, errors, colours) to `DefaultFields`'s
//! visitor, so the output stays byte for byte the same (a test compares the two).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// `DefaultFields`'s output, written more cheaply; see the module's documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no separating space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// One field formatted by `DefaultFields`'s own visitor, on the same writer.
    fn default_visitor(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // Every field handed over is written (the skipped `log.` ones never are).
        self.is_empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.default_visitor(|v| v.record_str(field, value));
        } else {
            // As `DefaultFields`: a string field is written quoted and escaped.
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.default_visitor(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` crate metadata, which the formatter shows elsewhere; `DefaultFields` skips it.
        if name.starts_with("log.") {
            return;
        }
        if name == "message" || self.writer.has_ansi_escapes() {
            self.default_visitor(|v| v.record_debug(field, value));
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !std::mem::take(&mut self.is_empty) {
            if let Err(e) = self.writer.write_char(' ') {
                self.result = Err(e);
                return;
            }
        }
        self.result = self
            .writer
            .write_str(name)
            .and_then(|()| self.writer.write_char('='))
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the upstream failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused \u{1b}[31m")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Events and spans with every kind of field the gateway logs, and some it does not.
    fn log_everything() {
        let request_id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        let span = tracing::info_span!("request", %request_id, method = %"POST", path = %"/v1/chat/completions");
        let _entered = span.enter();
        tracing::info!("plain message");
        tracing::warn!(
            status = 502,
            retry = true,
            ratio = 0.25,
            model = "gpt-4o",
            "upstream \"failed\"\n\u{1b}[2J"
        );
        tracing::warn!(
            error = &Outer(Inner) as &(dyn std::error::Error + 'static),
            "with a source chain"
        );
        tracing::warn!(
            error = &Inner as &(dyn std::error::Error + 'static),
            "without one"
        );
        tracing::error!(r#type = "raw identifier", debug = ?Some("x"), display = %"a b", "named fields");
        tracing::info!(only = 1u64, negative = -3i64);
        let inner = tracing::info_span!("inner", attempt = 2, empty = tracing::field::Empty);
        inner.record("empty", "filled later");
        inner.in_scope(|| tracing::info!(message = "message as a field", after = ?'c'));
    }

    fn captured<N>(fields: N, ansi: bool) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .with_target(false)
            .without_time()
            .with_ansi(ansi)
            .fmt_fields(fields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, log_everything);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_fields_write_what_the_default_fields_write() {
        for ansi in [false, true] {
            let default = captured(DefaultFields::new(), ansi);
            let plain = captured(PlainFields, ansi);
            assert_eq!(plain, default, "ansi: {ansi}");
            // Seven events; one message holds a newline, which both keep.
            assert_eq!(default.lines().count(), 8, "{default}");
        }
        // The span's fields and a field of each kind, as they appear in the lines.
        let plain = captured(PlainFields, false);
        assert!(plain.contains(
            "request{request_id=01930000-0000-7000-8000-000000000001 method=POST path=/v1/chat/completions}: plain message"
        ), "{plain}");
        assert!(
            plain.contains("status=502 retry=true ratio=0.25 model=\"gpt-4o\""),
            "{plain}"
        );
        assert!(
            plain.contains("type=\"raw identifier\" debug=Some(\"x\") display=a b"),
            "{plain}"
        );
        assert!(
            plain.contains("inner{attempt=2 empty=\"filled later\"}"),
            "{plain}"
        );
        // Escape characters in the message and in errors are written escaped by both.
        assert!(!plain.contains('\u{1b}'), "{plain}");
        assert!(
            plain.contains("error.sources=[connection refused \\x1b[31m]"),
            "{plain}"
        );
    }
}
