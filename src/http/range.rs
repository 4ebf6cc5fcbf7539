//! Byte ranges on `GET|HEAD /api/v1/audio/{key}` (RFC 9110 §14): which part
//! of a stored WAV a request's `Range` and `If-Range` select, and the
//! headers of the 206 and 416 answers.
//!
//! One range is served (206 with `Content-Range: bytes first-last/total`);
//! one that starts past the end is 416 with `Content-Range: bytes */total`.
//! Everything RFC 9110 lets a server ignore is ignored, answering 200 with
//! the whole WAV: a syntactically invalid `Range`, several ranges, the header
//! given twice, and an `If-Range` that is not the current (strong) ETag,
//! which includes every date: stored WAVs have no modification time.

use std::ops::Range;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
// http-range-header: tower-http's `fs` parser, strict RFC 9110 grammar, no dependencies.
use http_range_header::{parse_range_header, RangeUnsatisfiableError};

use super::error::ApiError;

/// What a request selects of a representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// All of it: 200.
    Whole,
    /// These bytes (never empty, within the representation): 206.
    Part(Range<usize>),
    /// A range past the end: 416.
    Unsatisfiable,
}

/// What `headers` select of a representation of `total` bytes whose strong
/// ETag is `etag`.
pub fn select(headers: &HeaderMap, etag: &HeaderValue, total: usize) -> Selection {
    let mut values = headers.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Selection::Whole;
    };
    if !if_range_holds(headers, etag) {
        return Selection::Whole;
    }
    let (Ok(text), Ok(size)) = (value.to_str(), u64::try_from(total)) else {
        return Selection::Whole;
    };
    let parsed = match parse_range_header(text) {
        Ok(parsed) if parsed.len() == 1 => parsed,
        _ => return Selection::Whole,
    };
    match parsed.validate(size) {
        Ok(valid) => match valid.as_slice() {
            [one] => match (usize::try_from(*one.start()), usize::try_from(*one.end())) {
                // `last` < `total`, so `last + 1` cannot overflow.
                (Ok(first), Ok(last)) if last < total => Selection::Part(first..last + 1),
                _ => Selection::Whole,
            },
            // Only an empty representation validates to no range.
            _ => Selection::Whole,
        },
        Err(RangeUnsatisfiableError::Unsatisfiable) => Selection::Unsatisfiable,
        Err(_) => Selection::Whole,
    }
}

/// Whether an `If-Range` lets the range apply: absent, or exactly the
/// current ETag (RFC 9110 §13.1.5 wants a strong match, so a weak ETag or
/// a date never holds).
fn if_range_holds(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let mut values = headers.get_all(header::IF_RANGE).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => value.as_bytes().trim_ascii() == etag.as_bytes(),
        (Some(_), Some(_)) => false,
    }
}

/// `Content-Range` of a 206 answer with `part` of `total` bytes.
pub fn content_range(part: &Range<usize>, total: usize) -> HeaderValue {
    let last = part.end.saturating_sub(1);
    HeaderValue::from_str(&format!("bytes {}-{last}/{total}", part.start))
        .expect("digits, a dash and a slash are a valid header value")
}

/// 416 `range_not_satisfiable` with `Content-Range: bytes */total`.
pub fn not_satisfiable(total: usize) -> Response {
    let mut response = ApiError::range_not_satisfiable(total).into_response();
    response.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{total}"))
            .expect("digits and `bytes */` are a valid header value"),
    );
    response
}

/// Makes a 200 answer a 206 for `part` of `total` bytes (status and
/// `Content-Range`; the caller puts the slice in the body).
pub fn make_partial(response: &mut Response, part: &Range<usize>, total: usize) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    response
        .headers_mut()
        .insert(header::CONTENT_RANGE, content_range(part, total));
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"0123abcd\"";

    fn pick(pairs: &[(&str, &str)], total: usize) -> Selection {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("a test header name"),
                HeaderValue::from_bytes(value.as_bytes()).expect("a test header value"),
            );
        }
        select(&headers, &HeaderValue::from_static(ETAG), total)
    }

    fn range(value: &str) -> Selection {
        pick(&[("range", value)], 1000)
    }

    #[test]
    fn single_ranges_select_their_bytes() {
        assert_eq!(range("bytes=0-99"), Selection::Part(0..100));
        assert_eq!(range("bytes=100-199"), Selection::Part(100..200));
        assert_eq!(range("bytes=100-"), Selection::Part(100..1000));
        assert_eq!(range("bytes=-500"), Selection::Part(500..1000));
        assert_eq!(range("bytes=999-999"), Selection::Part(999..1000));
        // Past the end is cut at the end; a suffix longer than all is all.
        assert_eq!(range("bytes=900-5000"), Selection::Part(900..1000));
        assert_eq!(range("bytes=-5000"), Selection::Part(0..1000));
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        assert_eq!(range("bytes=1000-"), Selection::Unsatisfiable);
        assert_eq!(range("bytes=999999-"), Selection::Unsatisfiable);
        assert_eq!(range("bytes=1000-1999"), Selection::Unsatisfiable);
        assert_eq!(range("bytes=-0"), Selection::Unsatisfiable);
    }

    #[test]
    fn invalid_and_multiple_ranges_are_ignored() {
        for value in [
            "bytes=abc",
            "bytes=5-2",
            "bytes=",
            "items=0-9",
            "0-9",
            "bytes=0-1,5-9",
            "bytes=999999-,999998-",
        ] {
            assert_eq!(range(value), Selection::Whole, "{value}");
        }
        let twice = pick(&[("range", "bytes=0-9"), ("range", "bytes=0-9")], 1000);
        assert_eq!(twice, Selection::Whole);
        let opaque = pick(&[("range", "bytes=0-9\u{e9}")], 1000);
        assert_eq!(opaque, Selection::Whole);
        assert_eq!(pick(&[], 1000), Selection::Whole);
    }

    #[test]
    fn if_range_applies_the_range_only_for_the_current_etag() {
        let with = |if_range: &str| pick(&[("range", "bytes=0-9"), ("if-range", if_range)], 1000);
        assert_eq!(with(ETAG), Selection::Part(0..10));
        assert_eq!(with("\"other\""), Selection::Whole);
        assert_eq!(with(&format!("W/{ETAG}")), Selection::Whole);
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), Selection::Whole);
        // Without a Range, If-Range changes nothing.
        assert_eq!(pick(&[("if-range", "\"other\"")], 1000), Selection::Whole);
    }

    #[test]
    fn headers_are_formatted_as_rfc_9110_says() {
        assert_eq!(content_range(&(0..100), 1000), "bytes 0-99/1000");
        assert_eq!(content_range(&(999..1000), 1000), "bytes 999-999/1000");
        let refused = not_satisfiable(1000);
        assert_eq!(refused.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(refused.headers()[header::CONTENT_RANGE], "bytes */1000");
    }
}
