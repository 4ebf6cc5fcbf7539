//! The JSON log's request lines, written straight out instead of through
//! serde: the same bytes tracing-subscriber's JSON format writes
//! (`flatten_event(true)`), for a share of its CPU.
//!
//! The request log (`http::log`) writes a line per request; in JSON,
//! tracing-subscriber builds it through a serde serializer over an adaptor
//! that checks every piece it is given for UTF-8 again, which was most of
//! the line's cost on the memory-hit path. [`RequestLinesJson`] writes the
//! lines of target `opusgate::request` outside any span itself, in the
//! order and encoding of that format (`timestamp`, `level`, the event's
//! fields in their order, `target`; strings escaped as serde_json escapes
//! them, numbers as it writes them), and hands every other line to the
//! format it wraps. A test holds the two to the same bytes.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the request lines (see `http::log`).
const REQUEST_TARGET: &str = "opusgate::request";

/// tracing-subscriber's JSON format (flattened, with its system-time
/// timestamps), with request lines written directly (see the module
/// comment).
#[derive(Debug)]
pub struct RequestLinesJson {
    format: Format<Json, SystemTime>,
}

impl RequestLinesJson {
    /// Wraps `format`, which must be `fmt::format().json().flatten_event(true)`
    /// (what `init_logging` uses): the request lines are written as it
    /// would write them.
    pub fn new(format: Format<Json, SystemTime>) -> RequestLinesJson {
        RequestLinesJson { format }
    }
}

impl<S, N> FormatEvent<S, N> for RequestLinesJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // In a span, the format adds `span` and `spans`: its own way.
        if meta.target() != REQUEST_TARGET
            || event.parent().is_some()
            || ctx.lookup_current().is_some()
        {
            return self.format.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes an event's fields as `,"name":value` pairs.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Writes one field, unless an earlier one failed.
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = entry(self.out, field.name(), value);
        }
    }
}

/// `,"name":value`.
fn entry(
    out: &mut Writer<'_>,
    name: &str,
    value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
) -> fmt::Result {
    out.write_char(',')?;
    json_str(out, name)?;
    out.write_char(':')?;
    value(out)
}

impl Visit for Fields<'_, '_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own rendering (shortest round trip; `null` for NaN
        // and the infinities), on the stack: at most 24 bytes.
        self.entry(field, |out| {
            let mut buffer = [0u8; 32];
            let mut rest = &mut buffer[..];
            serde_json::to_writer(&mut rest, &value).map_err(|_| fmt::Error)?;
            let written = 32 - rest.len();
            out.write_str(std::str::from_utf8(&buffer[..written]).map_err(|_| fmt::Error)?)
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| json_str(out, value));
    }
}

/// `text` as a JSON string, quotes included.
fn json_str(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what it is given as serde_json escapes a string's contents:
/// `"` and `\` with a backslash, the control characters below U+0020 as
/// `\b`, `\t`, `\n`, `\f`, `\r` or `\u00XX`; everything else as it is.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut start = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                b'\t' => "\\t",
                b'\n' => "\\n",
                0x0c => "\\f",
                b'\r' => "\\r",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Every byte escaped is ASCII: the cuts fall between characters.
            self.0.write_str(&text[start..at])?;
            if escape.is_empty() {
                let digits = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0x0f)],
                ];
                self.0
                    .write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = at + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;

        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    impl Sink {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// Events as the request log writes them, and some it never does.
    fn emit() {
        let method = axum::http::Method::POST;
        tracing::info!(
            target: "opusgate::request",
            %method,
            path = "/api/v1/convert",
            route = "/api/v1/convert",
            status = 200u16,
            cache = "hit-memory",
            upstream_cache = "-",
            key = "e8e73e8d654cd8862052d32f246fa3604571a6e9bbd6010e2bf14f1f0ad5602c",
            bytes = 320_044i64,
            ms = 0.02f64,
            "request"
        );
        tracing::info!(
            target: "opusgate::request",
            path = "/a \"quoted\" \\ path\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f} é ☃ 𝄞",
            debug = ?"a \"debug\" string\n",
            display = %"a \"display\" string\u{2}",
            yes = true,
            no = false,
            negative = -7i64,
            big = u64::MAX,
            whole = 1.0f64,
            tiny = 1e-7f64,
            huge = 1.5e300f64,
            nan = f64::NAN,
            infinite = f64::INFINITY,
            "with {} arguments",
            "format"
        );
        tracing::warn!(target: "opusgate::server", answer = 42, "not a request line");
        let span = tracing::info_span!("a span", id = 7);
        let _in = span.enter();
        tracing::info!(target: "opusgate::request", status = 500u16, "request");
    }

    /// The lines written by a JSON subscriber with the given event format.
    fn lines_with<E>(format: E) -> Vec<String>
    where
        E: FormatEvent<tracing_subscriber::Registry, tracing_subscriber::fmt::format::JsonFields>
            + Send
            + Sync
            + 'static,
    {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(sink.clone())
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        sink.lines()
    }

    /// The line without its timestamp's value.
    fn untimed(line: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let stamp = value["timestamp"].as_str().unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 27, "{stamp}");
        line.replacen(stamp, "T", 1)
    }

    #[test]
    fn request_lines_are_the_json_formats_own_bytes() {
        let json = || tracing_subscriber::fmt::format().json().flatten_event(true);
        let ours = lines_with(RequestLinesJson::new(json()));
        let theirs = lines_with(json());
        assert_eq!(ours.len(), 4, "{ours:?}");
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(untimed(ours), untimed(theirs));
        }
        assert!(ours[0].ends_with(r#""bytes":320044,"ms":0.02,"target":"opusgate::request"}"#));
        assert!(ours[3].contains(r#""span":"#), "{}", ours[3]);
    }
}
