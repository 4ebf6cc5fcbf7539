//! `opusgate serve`'s request lines, written straight into the log's writer
//! ([`install`]): the bytes tracing-subscriber's own formats write for the
//! request log's event (`http::log`), the flattened JSON format or the text
//! format without colour, for a share of their CPU.
//!
//! Through `tracing`, a line was an event dispatched to the subscriber,
//! whose fields were visited one by one through `dyn` calls, formatted
//! through `fmt::Write` adaptors, and its timestamp's calendar date worked
//! out again for every line: together about a microsecond and a half of a
//! memory hit's 60 (PERFORMANCE.md). Here the fields are a plain struct
//! ([`RequestLine`]), the line is made in place in the worker's batch
//! (`log_writer::write_line`), the date is worked out once a second per
//! thread, and only a path that needs escaping is escaped. `RUST_LOG` still
//! decides whether the line is written. Tests hold both formats to
//! tracing-subscriber's bytes.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::config::LogFormat;
use crate::http::log::{write_request_lines_with, RequestLine, REQUEST_TARGET as TARGET};

use super::log_writer;

/// Has the request log write its lines in `format` directly (see the module
/// comment); false if a writer was installed already. Not for text with
/// colour: those lines stay `tracing` events.
pub fn install(format: LogFormat) -> bool {
    write_request_lines_with(match format {
        LogFormat::Json => |line| {
            let _ = log_writer::write_line(|out| json(line, out));
        },
        LogFormat::Text => |line| {
            let _ = log_writer::write_line(|out| text(line, out));
        },
    })
}

/// The line as `fmt::format().json().flatten_event(true)` writes the event:
/// timestamp, level, message, the fields in their order, target.
fn json(line: &RequestLine<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    json_str(out, line.method.as_str());
    out.extend_from_slice(b",\"path\":");
    json_str(out, line.path);
    out.extend_from_slice(b",\"route\":");
    json_str(out, line.route);
    let _ = write!(out, ",\"status\":{},\"cache\":", line.status);
    json_str(out, line.cache);
    out.extend_from_slice(b",\"upstream_cache\":");
    json_str(out, line.upstream_cache);
    out.extend_from_slice(b",\"key\":");
    json_str(out, line.key);
    let _ = write!(out, ",\"bytes\":{},\"ms\":", line.bytes);
    ms(line, out, |out, ms| {
        let _ = serde_json::to_writer(out, &ms);
    });
    out.extend_from_slice(b",\"target\":\"");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// The line as tracing-subscriber's default (full) text format writes the
/// event without ANSI colour: timestamp, padded level, target, message,
/// `name=value` fields, strings in their `Debug` form.
fn text(line: &RequestLine<'_>, out: &mut Vec<u8>) {
    timestamp(out);
    out.extend_from_slice(b"  INFO ");
    out.extend_from_slice(TARGET.as_bytes());
    out.extend_from_slice(b": request method=");
    out.extend_from_slice(line.method.as_str().as_bytes());
    out.extend_from_slice(b" path=");
    debug_str(out, line.path);
    out.extend_from_slice(b" route=");
    debug_str(out, line.route);
    let _ = write!(out, " status={} cache=", line.status);
    debug_str(out, line.cache);
    out.extend_from_slice(b" upstream_cache=");
    debug_str(out, line.upstream_cache);
    out.extend_from_slice(b" key=");
    debug_str(out, line.key);
    let _ = write!(out, " bytes={} ms=", line.bytes);
    ms(line, out, |out, ms| {
        let _ = write!(out, "{ms:?}");
    });
    out.push(b'\n');
}

/// The duration as the shortest decimal that reads back as the `f64` the
/// event carries (what serde_json and `Debug` both write for it): the
/// hundredths without trailing zeros, `.0` for a whole number. Beyond
/// 10^13 ms (where either might switch to an exponent), `float` writes it.
fn ms(line: &RequestLine<'_>, out: &mut Vec<u8>, float: impl FnOnce(&mut Vec<u8>, f64)) {
    let centi = line.centi_ms;
    if centi >= 1_000_000_000_000_000 {
        return float(out, line.ms());
    }
    let _ = write!(out, "{}.", centi / 100);
    let fraction = centi % 100;
    match (fraction / 10, fraction % 10) {
        (tenths, 0) => out.push(b'0' + tenths as u8),
        (tenths, hundredths) => {
            out.extend_from_slice(&[b'0' + tenths as u8, b'0' + hundredths as u8])
        }
    }
}

/// `text` in its `Debug` form (quoted and escaped as Rust escapes a `str`):
/// written as it is when it is printable ASCII without `"` or `\`.
fn debug_str(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// `text` as a JSON string, quotes included, escaped as serde_json escapes
/// a string: `"` and `\` with a backslash, the control characters below
/// U+0020 as `\b`, `\t`, `\n`, `\f`, `\r` or `\u00XX`, everything else as it
/// is.
fn json_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0x0f)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escape);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The first second (0000-01-01 is far behind; this is 10000-01-01) whose
/// year tracing-subscriber writes with a sign: left to it.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The last second this thread wrote, and its `YYYY-MM-DDTHH:MM:SS.`.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// The time now as tracing-subscriber's `SystemTime` writes it
/// (`2026-12-01T21:27:23.123456Z`: UTC, microseconds, truncated).
fn timestamp(out: &mut Vec<u8>) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            let second = since.as_secs();
            let prefix = SECOND.with(|cell| {
                let (cached, prefix) = cell.get();
                if cached == second {
                    return prefix;
                }
                let prefix = second_prefix(second);
                cell.set((second, prefix));
                prefix
            });
            out.extend_from_slice(&prefix);
            let _ = write!(out, "{:06}Z", since.subsec_micros());
        }
        // Before 1970 or after 9999: tracing-subscriber's own code.
        _ => {
            let mut text = String::new();
            if tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut text))
                .is_err()
            {
                text.replace_range(.., "<unknown time>");
            }
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since 1970 before the year 10000.
fn second_prefix(second: u64) -> [u8; 20] {
    let (year, month, day) = civil_date(second / 86_400);
    let in_day = second % 86_400;
    let mut prefix = [0u8; 20];
    let mut text = Prefix(&mut prefix, 0);
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    prefix
}

/// Writes into a fixed buffer (what does not fit is an error).
struct Prefix<'a>(&'a mut [u8; 20], usize);

impl fmt::Write for Prefix<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.1 + text.len();
        self.0
            .get_mut(self.1..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.1 = end;
        Ok(())
    }
}

/// The proleptic Gregorian (year, month, day) of a day since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use axum::http::Method;
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

    /// Lines as the request log writes them, and with every odd value.
    fn lines(methods: &[Method]) -> Vec<RequestLine<'_>> {
        let key = "e8e73e8d654cd8862052d32f246fa3604571a6e9bbd6010e2bf14f1f0ad5602c";
        let typical = RequestLine {
            method: &methods[0],
            path: "/api/v1/convert",
            route: "/api/v1/convert",
            status: 200,
            cache: "hit-memory",
            upstream_cache: "-",
            key,
            bytes: 320_044,
            centi_ms: 2,
        };
        let mut all = vec![typical];
        for (at, centi_ms) in [0, 1, 10, 99, 100, 774, 1000, 123_456_789, u64::MAX]
            .into_iter()
            .enumerate()
        {
            all.push(RequestLine {
                method: &methods[at % methods.len()],
                status: [404, 503, 101][at % 3],
                bytes: [-1, 0, i64::MAX][at % 3],
                centi_ms,
                ..typical
            });
        }
        for path in [
            "/a \"quoted\" \\ path\n\t\r\u{8}\u{c}\u{1}\u{1b}[31m\u{1f}\u{7f} é ☃ 𝄞 \u{200b}\u{301}",
            "/api/v1/audio/'x'",
            "",
        ] {
            all.push(RequestLine {
                path,
                route: "unmatched",
                cache: "-",
                upstream_cache: "hit-disk",
                key: "-",
                ..typical
            });
        }
        all
    }

    /// What a subscriber made by `build` writes for the lines' events.
    fn tracing_bytes(
        lines: &[RequestLine<'_>],
        build: impl FnOnce(Sink) -> Box<dyn tracing::Subscriber + Send + Sync>,
    ) -> Vec<String> {
        let sink = Sink::default();
        tracing::subscriber::with_default(build(sink.clone()), || {
            for line in lines {
                line.event();
            }
        });
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        written.split_inclusive('\n').map(str::to_owned).collect()
    }

    /// What `write` makes of the lines.
    fn our_bytes(
        lines: &[RequestLine<'_>],
        write: fn(&RequestLine<'_>, &mut Vec<u8>),
    ) -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let mut out = Vec::new();
                write(line, &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    /// `line` with its timestamp (checked for its shape) replaced by `T`.
    fn untimed(line: &str, stamp_at: usize) -> String {
        let stamp = &line[stamp_at..stamp_at + 27];
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.',
            "{line}"
        );
        format!("{}T{}", &line[..stamp_at], &line[stamp_at + 27..])
    }

    /// Our lines for [`lines`], checked against the subscriber `build`
    /// makes (timestamps at `stamp_at` aside), and returned.
    fn same_as_tracing(
        write: fn(&RequestLine<'_>, &mut Vec<u8>),
        stamp_at: usize,
        build: impl FnOnce(Sink) -> Box<dyn tracing::Subscriber + Send + Sync>,
    ) -> Vec<String> {
        let methods = [
            Method::POST,
            Method::GET,
            Method::from_bytes(b"PURGE").unwrap(),
        ];
        let lines = lines(&methods);
        let theirs = tracing_bytes(&lines, build);
        let ours = our_bytes(&lines, write);
        assert_eq!(ours.len(), lines.len());
        assert_eq!(theirs.len(), ours.len());
        for (ours, theirs) in ours.iter().zip(&theirs) {
            assert_eq!(untimed(ours, stamp_at), untimed(theirs, stamp_at));
        }
        ours
    }

    #[test]
    fn json_lines_are_the_json_formats_own_bytes() {
        let ours = same_as_tracing(json, "{\"timestamp\":\"".len(), |sink| {
            Box::new(
                tracing_subscriber::fmt()
                    .with_writer(sink)
                    .with_ansi(false)
                    .json()
                    .flatten_event(true)
                    .finish(),
            )
        });
        assert!(ours[0].ends_with(
            r#""bytes":320044,"ms":0.02,"target":"opusgate::request"}
"#
        ));
    }

    #[test]
    fn text_lines_are_the_text_formats_own_bytes() {
        let ours = same_as_tracing(text, 0, |sink| {
            Box::new(
                tracing_subscriber::fmt()
                    .with_writer(sink)
                    .with_ansi(false)
                    .finish(),
            )
        });
        assert!(ours[0].ends_with(" bytes=320044 ms=0.02\n"), "{}", ours[0]);
    }

    #[test]
    fn durations_are_written_as_the_float_formats_write_them() {
        let methods = [Method::GET];
        let line = lines(&methods)[0];
        let centis = (0..=300_000u64)
            .chain((0..64).map(|shift| 1u64 << shift))
            .chain([999_999_999_999_999, 1_000_000_000_000_000, u64::MAX]);
        for centi_ms in centis {
            let line = RequestLine { centi_ms, ..line };
            let mut json = Vec::new();
            ms(&line, &mut json, |out, ms| {
                serde_json::to_writer(out, &ms).unwrap()
            });
            assert_eq!(json, serde_json::to_vec(&line.ms()).unwrap(), "{centi_ms}");
            let mut debug = Vec::new();
            ms(&line, &mut debug, |out, ms| write!(out, "{ms:?}").unwrap());
            assert_eq!(debug, format!("{:?}", line.ms()).as_bytes(), "{centi_ms}");
        }
    }

    #[test]
    fn dates_are_the_proleptic_gregorian_calendars() {
        let cases = [
            (0, "1970-01-01T00:00:00."),
            (86_399, "1970-01-01T23:59:59."),
            (951_782_400, "2000-02-29T00:00:00."),
            (951_868_800, "2000-03-01T00:00:00."),
            (1_798_761_599, "2026-12-31T23:59:59."),
            (4_107_542_400, "2100-03-01T00:00:00."),
            (4_107_456_000, "2100-02-28T00:00:00."),
            (YEAR_10000 - 1, "9999-12-31T23:59:59."),
        ];
        for (second, expected) in cases {
            assert_eq!(
                std::str::from_utf8(&second_prefix(second)).unwrap(),
                expected,
                "{second}"
            );
        }
    }

    #[test]
    fn timestamps_are_tracing_subscribers_to_the_second() {
        // Two clocks read one after the other agree to the second, unless
        // a second ended between them: then the next try agrees.
        let agreed = (0..5).any(|_| {
            let mut theirs = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            let mut ours = Vec::new();
            timestamp(&mut ours);
            let ours = String::from_utf8(ours).unwrap();
            assert_eq!((ours.len(), &ours[26..]), (27, "Z"), "{ours}");
            ours[..20] == theirs[..20]
        });
        assert!(agreed);
    }
}
