//! Request bodies for every route: reading a body under the upload limit and
//! the read deadline, and multipart forms (the original service's
//! `audio_file` upload and proxy mode's OpenAI forms).

use std::convert::Infallible;
use std::ops::Range;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;

use super::budget::{Refused, Reservation};
use super::error::ApiError;
use super::AppState;

/// The multipart field that carries the audio, as the original service's
/// clients send it (`/api/v1/convert`, `/api/v1/translate_audio`).
pub const AUDIO_FIELD: &str = "audio_file";

/// One field of a multipart body, already read.
#[derive(Debug, Clone)]
pub struct FormField {
    /// The field name.
    pub name: String,
    /// The file name, for file fields.
    pub file_name: Option<String>,
    /// The field's Content-Type, if given.
    pub content_type: Option<String>,
    /// The field's bytes.
    pub data: Bytes,
}

impl FormField {
    /// The field's bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A request body's buffer with its share of the upload budget
/// ([`super::budget`]): the reservation is given back when the last
/// `Bytes` view of the buffer (a multipart field's slice, the upload being
/// converted) is dropped.
struct Held {
    data: Vec<u8>,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// A request body as [`read_upload`] read it.
pub enum ReadBody {
    /// In a buffer of its own, holding its share of the upload budget.
    Owned(Bytes),
    /// Received whole in one frame: a view of the connection's read buffer
    /// (which may be much larger than the body), with the body's share of
    /// the budget. Not to be held: hash or parse it where it lies, and copy
    /// it ([`ReadBody::into_owned`]) to keep it.
    Lent {
        /// The body's bytes.
        data: Bytes,
        /// Its share of the upload budget.
        reservation: Reservation,
    },
}

impl ReadBody {
    /// The body in a buffer of its own (copied if it was lent).
    pub fn into_owned(self) -> Bytes {
        match self {
            ReadBody::Owned(bytes) => bytes,
            ReadBody::Lent { data, reservation } => own(&data, reservation),
        }
    }
}

/// A copy of `data` in a buffer of its own, holding `reservation`.
pub fn own(data: &[u8], reservation: Reservation) -> Bytes {
    held(data.to_vec(), reservation)
}

/// `data` as `Bytes` that give `reservation` back when the last view goes.
fn held(data: Vec<u8>, reservation: Reservation) -> Bytes {
    Bytes::from_owner(Held {
        data,
        _reservation: reservation,
    })
}

/// [`read_upload`], the body in a buffer of its own.
pub async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    read_upload(app, headers, body)
        .await
        .map(ReadBody::into_owned)
}

/// Reads the whole body, refusing with 413 as soon as it crosses the limit
/// and with 408 if the client takes longer than the read timeout. A body
/// that arrives whole in one frame (the usual upload) is lent, not copied
/// ([`ReadBody::Lent`]).
///
/// The body's bytes are reserved in the upload budget before they are
/// read: the declared Content-Length at once, a chunked body's buffer as it
/// grows. No room within the budget's short wait is 503 `overloaded` (with
/// `Retry-After`), a body larger than the whole budget 413; either way what
/// was read is dropped at once. The reservation lives as long as the
/// returned body (and every slice of it).
pub async fn read_upload(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReadBody, ApiError> {
    let limit = app.config.limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let budget = app.uploads.budget_bytes();
    let refused = |why: Refused| match why {
        Refused::TooLarge => ApiError::over_upload_budget(budget),
        Refused::Busy => ApiError::upload_budget_busy(),
    };
    let timeout = Duration::from_secs(app.config.server.request_read_timeout_seconds);
    let read = async {
        let mut reservation = app.uploads.empty();
        // Never trust the declared length for more than the limit (checked
        // above): it is reserved whole before the first byte is read.
        if let Some(n) = declared {
            reservation.grow(n).await.map_err(refused)?;
        }
        let mut buffer: Vec<u8> = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if buffer.capacity() == 0 {
                if declared == Some(chunk.len() as u64) {
                    // All of it (hyper ends a body at its Content-Length).
                    return Ok(ReadBody::Lent {
                        data: chunk,
                        reservation,
                    });
                }
                buffer.reserve_exact(declared.unwrap_or(0) as usize);
            }
            let needed = buffer.len() + chunk.len();
            if needed as u64 > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            if needed > buffer.capacity() {
                // A chunked body: the buffer at least doubles (bounded by
                // the limit and the budget), and its whole capacity is
                // reserved before it grows.
                let cap = limit.min(budget) as usize;
                let target = (buffer.capacity() * 2).min(cap).max(needed);
                let more = (target as u64).saturating_sub(reservation.bytes());
                reservation.grow(more).await.map_err(refused)?;
                buffer.reserve_exact(target - buffer.len());
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(ReadBody::Owned(held(buffer, reservation)))
    };
    // A body already received whole (the usual upload) needs no timer.
    let mut read = std::pin::pin!(read);
    if let Some(done) = futures::FutureExt::now_or_never(read.as_mut()) {
        return done;
    }
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::request_timeout(timeout.as_secs()))?
}

/// The boundary if the body is `multipart/form-data`, `None` for any other
/// (or no) Content-Type.
pub fn multipart_boundary(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let content_type = content_type.to_str().unwrap_or_default();
    // Case-insensitive, without a lowercased copy.
    let multipart = content_type
        .trim_start()
        .get(.."multipart/".len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("multipart/"));
    if !multipart {
        return Ok(None);
    }
    multer::parse_boundary(content_type)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("malformed multipart Content-Type: {e}")))
}

/// Reads a body that must be a multipart form (proxy mode's routes).
pub async fn read_form(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<FormField>, ApiError> {
    let raw = read_body(app, headers, body).await?;
    let boundary = multipart_boundary(headers)?
        .ok_or_else(|| ApiError::bad_request("this route takes a multipart/form-data body"))?;
    read_multipart(raw, boundary).await
}

/// Parses a multipart body that is already in memory (and so already
/// bounded by the upload limit and held in the upload budget).
///
/// Each field's data is a slice of `raw`, not a copy: multer (which copies
/// its input into its own buffer, and `Field::bytes` once more) is fed
/// `raw` in small zero-copy slices, one per poll, and its field chunks are
/// checked against the field's place in `raw` and dropped. Should they ever
/// disagree, the body is parsed again the copying way.
pub async fn read_multipart(raw: Bytes, boundary: String) -> Result<Vec<FormField>, ApiError> {
    let parts = locate_parts(&raw, &boundary);
    match parse_in_place(&raw, boundary.clone(), parts.as_deref()).await? {
        Some(fields) => Ok(fields),
        None => parse_copying(raw, boundary).await,
    }
}

fn malformed(e: multer::Error) -> ApiError {
    ApiError::bad_request(format!("malformed multipart body: {e}"))
}

/// Bytes of `raw` handed to multer per poll.
const MULTIPART_SLICE: usize = 64 * 1024;

/// Parses `raw` with multer, slicing each field's data out of `raw` at the
/// place `parts` says (`None` when multer's data differs from it).
async fn parse_in_place(
    raw: &Bytes,
    boundary: String,
    parts: Option<&[Range<usize>]>,
) -> Result<Option<Vec<FormField>>, ApiError> {
    let total = raw.len();
    let feed = raw.clone();
    // One slice per poll (multer takes every ready chunk into its buffer at
    // once), and the end in a poll of its own: multer 3.1 reads an end that
    // comes in the same poll as the first bytes, before it has looked at
    // them, as a body without a boundary.
    let stream = futures::stream::unfold(0, move |at| {
        let feed = feed.clone();
        async move {
            tokio::task::yield_now().await;
            (at < total).then(|| {
                let end = (at + MULTIPART_SLICE).min(total);
                (Ok::<Bytes, Infallible>(feed.slice(at..end)), end)
            })
        }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    let mut agrees = parts.is_some();
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        let place = parts.and_then(|p| p.get(fields.len())).cloned();
        agrees &= place.is_some();
        let place = place.unwrap_or(0..0);
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let mut at = place.start;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            let end = at + chunk.len();
            agrees &= end <= place.end && raw[at.min(total)..end.min(total)] == chunk[..];
            at = end;
        }
        agrees &= at == place.end;
        fields.push(FormField {
            name,
            file_name,
            content_type,
            data: if agrees {
                raw.slice(place)
            } else {
                Bytes::new()
            },
        });
    }
    agrees &= parts.is_some_and(|p| p.len() == fields.len());
    Ok(agrees.then_some(fields))
}

/// Parses `raw` with multer in one chunk, each field's data copied.
async fn parse_copying(raw: Bytes, boundary: String) -> Result<Vec<FormField>, ApiError> {
    let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(raw) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(malformed)?;
        fields.push(FormField {
            name,
            file_name,
            content_type,
            data,
        });
    }
    Ok(fields)
}

/// The first `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= hay.len() {
        let i = at
            + hay[at..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// Where each part's data lies in a multipart body, by multer's own reading
/// of it (preamble up to the first `--boundary`, transport padding after a
/// delimiter, headers up to a blank line, data up to `CRLF--boundary`);
/// `None` when the body does not read that way.
fn locate_parts(raw: &[u8], boundary: &str) -> Option<Vec<Range<usize>>> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let close = format!("\r\n--{boundary}");
    let mut pos = find(raw, delimiter, 0)?;
    let mut parts = Vec::new();
    loop {
        if !raw.get(pos..)?.starts_with(delimiter) {
            return None;
        }
        pos += delimiter.len();
        if raw.get(pos..pos + 2)? == b"--" {
            return Some(parts);
        }
        while matches!(raw.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        if raw.get(pos..pos + 2)? != b"\r\n" {
            return None;
        }
        let start = find(raw, b"\r\n\r\n", pos + 2)? + 4;
        let end = find(raw, close.as_bytes(), start)?;
        parts.push(start..end);
        pos = end + 2;
    }
}

/// Takes the one field named `name` out of `fields`: 400 `bad_request` if
/// there is none or more than one.
pub fn take_field(fields: &mut Vec<FormField>, name: &str) -> Result<FormField, ApiError> {
    let mut positions = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name == name)
        .map(|(i, _)| i);
    match (positions.next(), positions.next()) {
        (Some(i), None) => Ok(fields.remove(i)),
        (None, _) => Err(ApiError::bad_request(format!(
            "the form has no `{name}` field: send it in a field named `{name}`"
        ))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "the form has more than one `{name}` field: send one per request"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> FormField {
        FormField {
            name: name.into(),
            file_name: None,
            content_type: None,
            data: Bytes::from(name.to_owned()),
        }
    }

    fn body(parts: &[(&str, &[u8])], preamble: &str, padding: &str) -> Bytes {
        let mut out = preamble.as_bytes().to_vec();
        for (name, data) in parts {
            out.extend_from_slice(format!("--XyZ{padding}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(out)
    }

    #[tokio::test]
    async fn multipart_fields_are_slices_of_the_body() {
        // Bigger than several slices, with CRs and partial boundaries inside.
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| if i % 977 == 0 { b'\r' } else { (i % 251) as u8 })
            .chain(*b"\r\n--Xy\r\n-")
            .collect();
        let long_preamble = "p".repeat(100_000);
        for (preamble, padding) in [
            ("", ""),
            ("ignored preamble\r\n", " \t"),
            (long_preamble.as_str(), ""),
        ] {
            let raw = body(
                &[("audio_file", &big), ("empty", b""), ("t", b"x")],
                preamble,
                padding,
            );
            let fields = read_multipart(raw.clone(), "XyZ".into()).await.unwrap();
            let copied = parse_copying(raw.clone(), "XyZ".into()).await.unwrap();
            assert_eq!(fields.len(), 3);
            for (a, b) in fields.iter().zip(&copied) {
                assert_eq!(
                    (&a.name, &a.file_name, &a.content_type),
                    (&b.name, &b.file_name, &b.content_type)
                );
                assert_eq!(a.data, b.data);
                let inside = raw.as_ptr_range();
                assert!(
                    a.data.is_empty() || inside.contains(&a.data.as_ptr()),
                    "{} is a copy",
                    a.name
                );
            }
            assert_eq!(fields[0].data.len(), big.len());
        }
    }

    #[tokio::test]
    async fn a_short_field_ending_in_a_newline() {
        let raw = body(&[("audio_file", b"\x89PNG\r\n\x1a\n")], "", "");
        let copied = parse_copying(raw.clone(), "XyZ".into()).await.unwrap();
        let fields = read_multipart(raw.clone(), "XyZ".into()).await.unwrap();
        assert_eq!(fields[0].data, copied[0].data);
    }

    #[tokio::test]
    async fn malformed_multipart_is_still_refused() {
        let raw = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
        );
        assert!(read_multipart(raw, "XyZ".into()).await.is_err());
        assert!(read_multipart(Bytes::new(), "XyZ".into()).await.is_err());
    }

    #[test]
    fn take_field_takes_exactly_one() {
        let mut fields = vec![field("a"), field("b"), field("c")];
        assert_eq!(
            take_field(&mut fields, "b").map(|f| f.text()).ok(),
            Some("b".into())
        );
        assert_eq!(fields.len(), 2);
        assert!(take_field(&mut fields, "b").is_err());
        fields.push(field("a"));
        assert!(take_field(&mut fields, "a").is_err());
        assert_eq!(fields.len(), 3, "a refused take leaves the fields alone");
    }
}
