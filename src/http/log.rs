//! One log line and the request metrics for every HTTP request
//! ([`RequestLogLayer`], the outermost layer of the router).
//!
//! The route label is the router's own [`MatchedPath`] (bounded: one value
//! per route, `unmatched` for everything else). What a handler wants logged
//! travels as typed response extensions ([`AudioAnswer`], [`AnswerCache`]),
//! set where the matching header is set by [`mark_audio`] and
//! [`mark_answer`], never parsed back from the headers.
//!
//! The layer is a plain tower service, not a `from_fn` middleware: it calls
//! the service inside it directly (no clone of the routes inside, no boxed
//! `Next`), its future is its own (no box), the line's fields are borrowed
//! (no `String` per field), and the request is counted into metric handles
//! resolved once per thread ([`stats::record_http_request`]).
//!
//! The line is a [`RequestLine`]: a `tracing` event of target
//! `opusgate::request`, or, where a writer was installed
//! ([`write_request_lines_with`], as `opusgate serve` does), the same bytes
//! written by it without the event's dispatch and field visiting, which were
//! a microsecond or two of every memory hit (PERFORMANCE.md).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::Response;
use opusgate_cache::{Key, Outcome};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Level;

use crate::stats;

/// The stored audio an answer is about: its key, and how the audio store
/// answered the request (`X-Cache`), if it was looked up.
#[derive(Clone, Copy, Debug)]
pub struct AudioAnswer {
    /// The audio's content address.
    pub key: Key,
    /// The lookup's outcome (`X-Cache`); none for `GET /api/v1/audio/{key}`.
    pub cache: Option<Outcome>,
}

/// How proxy mode's answer store answered a request (`X-Upstream-Cache`).
#[derive(Clone, Copy, Debug)]
pub struct AnswerCache(pub Outcome);

/// `X-Cache`.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `X-Upstream-Cache`.
const X_UPSTREAM_CACHE: HeaderName = HeaderName::from_static("x-upstream-cache");

/// Sets `X-Cache` and the extension the log reads for an audio answer.
pub fn mark_audio(response: &mut Response, key: Key, outcome: Option<Outcome>) {
    if let Some(outcome) = outcome {
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(outcome.as_str()));
    }
    response.extensions_mut().insert(AudioAnswer {
        key,
        cache: outcome,
    });
}

/// Sets `X-Upstream-Cache` and its extension for a backend answer.
pub fn mark_answer(response: &mut Response, outcome: Outcome) {
    response
        .headers_mut()
        .insert(X_UPSTREAM_CACHE, HeaderValue::from_static(outcome.as_str()));
    response.extensions_mut().insert(AnswerCache(outcome));
}

/// A key's 64 lowercase hexadecimal digits, written into `buffer` (no
/// allocation): the same text as `Key::to_hex` and `Key`'s `Display`.
pub fn key_hex<'a>(key: &Key, buffer: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in buffer.chunks_exact_mut(2).zip(key.as_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(buffer).unwrap_or("-")
}

/// Wraps a service in [`RequestLog`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

/// Logs method, path, route, status, cache outcomes, key, bytes and
/// duration of every request, and counts it by route and status.
#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S> Service<Request> for RequestLog<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RequestLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let seen = Seen {
            started: Instant::now(),
            method: request.method().clone(),
            // A reference count on the request head's buffer, not a copy.
            uri: request.uri().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
        };
        RequestLogFuture {
            inner: self.inner.call(request),
            seen: Some(seen),
        }
    }
}

/// The future of [`RequestLog`]: the answer, then its line.
pub struct RequestLogFuture<F> {
    inner: F,
    seen: Option<Seen>,
}

/// What the line needs of the request.
struct Seen {
    started: Instant,
    method: Method,
    uri: Uri,
    route: Option<MatchedPath>,
}

impl<F> Future for RequestLogFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = ready!(Pin::new(&mut this.inner).poll(cx));
        if let (Ok(response), Some(seen)) = (&result, this.seen.take()) {
            seen.log(response);
        }
        Poll::Ready(result)
    }
}

impl Seen {
    /// Writes the request's line and counts it.
    fn log(self, response: &Response) {
        let took = self.started.elapsed();
        let status = response.status().as_u16();
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let extensions = response.extensions();
        let audio = extensions.get::<AudioAnswer>();
        let mut hex = [0u8; 64];
        RequestLine {
            method: &self.method,
            path: self.uri.path(),
            route,
            status,
            cache: audio.and_then(|a| a.cache).map_or("-", Outcome::as_str),
            upstream_cache: extensions
                .get::<AnswerCache>()
                .map_or("-", |c| c.0.as_str()),
            key: audio.map_or("-", |a| key_hex(&a.key, &mut hex)),
            bytes: response.body().size_hint().exact().map_or(-1, |n| n as i64),
            // Milliseconds to 2 decimals (`ms=7.74`, not `ms=7.7379809999999996`).
            centi_ms: (took.as_secs_f64() * 100_000.0).round() as u64,
        }
        .write();
        stats::record_http_request(route, status, took);
    }
}

/// One request's line: the fields of the `opusgate::request` event at
/// `info`, in the order they are written.
#[derive(Clone, Copy, Debug)]
pub struct RequestLine<'a> {
    /// The request's method.
    pub method: &'a Method,
    /// The request's path, as sent (no query).
    pub path: &'a str,
    /// The route that matched, or `unmatched`.
    pub route: &'a str,
    /// The answer's status.
    pub status: u16,
    /// `X-Cache`, or `-`.
    pub cache: &'a str,
    /// `X-Upstream-Cache`, or `-`.
    pub upstream_cache: &'a str,
    /// The audio's key in hexadecimal, or `-`.
    pub key: &'a str,
    /// The answer body's length, -1 when not known in advance (streamed).
    pub bytes: i64,
    /// Time to the answer's head in hundredths of a millisecond.
    pub centi_ms: u64,
}

/// The target of the request lines (`RUST_LOG=opusgate::request=off` turns
/// them off).
pub const REQUEST_TARGET: &str = "opusgate::request";

/// Writes a request line outside tracing's event dispatch (see
/// [`write_request_lines_with`]).
pub type LineWriter = fn(&RequestLine<'_>);

/// The process's request-line writer, if one was installed.
static LINE_WRITER: OnceLock<LineWriter> = OnceLock::new();

/// Has every later request line written by `writer` instead of through a
/// `tracing` event, when the `tracing` subscriber has `opusgate::request` at
/// `info` enabled (`RUST_LOG` still decides). `writer` must write the line
/// the subscriber would (`opusgate serve` installs one that writes its
/// log's format byte for byte: `cli::request_line`). Once per process;
/// false if a writer was installed already. Without one (tests, embedders),
/// lines are `tracing` events.
pub fn write_request_lines_with(writer: LineWriter) -> bool {
    LINE_WRITER.set(writer).is_ok()
}

impl RequestLine<'_> {
    /// The duration field: milliseconds to 2 decimals.
    pub fn ms(&self) -> f64 {
        self.centi_ms as f64 / 100.0
    }

    /// Writes the line: through the installed writer, or as [`event`](Self::event).
    fn write(&self) {
        match LINE_WRITER.get() {
            Some(writer) => {
                if tracing::enabled!(target: REQUEST_TARGET, Level::INFO) {
                    writer(self);
                }
            }
            None => self.event(),
        }
    }

    /// The line as a `tracing` event: target `opusgate::request`, level
    /// `info`, message `request`, then the fields.
    pub fn event(&self) {
        tracing::info!(
            target: REQUEST_TARGET,
            method = %self.method,
            path = self.path,
            route = self.route,
            status = self.status,
            cache = self.cache,
            upstream_cache = self.upstream_cache,
            key = self.key,
            bytes = self.bytes,
            ms = self.ms(),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_is_the_keys_own_hex() {
        for seed in [&b""[..], b"a", b"opusgate"] {
            let key = Key::derive(seed, b"params");
            let mut buffer = [0u8; 64];
            assert_eq!(key_hex(&key, &mut buffer), key.to_hex());
            assert_eq!(key_hex(&key, &mut buffer), key.to_string());
        }
        let mut buffer = [0u8; 64];
        assert_eq!(
            key_hex(&Key::from_bytes([0xa5; 32]), &mut buffer),
            "a5".repeat(32)
        );
    }
}
