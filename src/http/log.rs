//! One log line and the request metrics for every HTTP request.
//!
//! The route label is the router's own [`MatchedPath`] (bounded: one value
//! per route, `unmatched` for everything else). What a handler wants logged
//! travels as typed response extensions ([`AudioCache`], [`AnswerCache`],
//! [`Key`]), set where the matching header is set by [`mark_audio`] and
//! [`mark_answer`], never parsed back from the headers.

use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opusgate_cache::{Key, Outcome};

use crate::stats::names;

/// How the audio store answered a request (`X-Cache`).
#[derive(Clone, Copy, Debug)]
pub struct AudioCache(pub Outcome);

/// How proxy mode's answer store answered a request (`X-Upstream-Cache`).
#[derive(Clone, Copy, Debug)]
pub struct AnswerCache(pub Outcome);

/// Sets `X-Cache` and the extensions the log reads for an audio answer.
pub fn mark_audio(response: &mut Response, key: Key, outcome: Option<Outcome>) {
    if let Some(outcome) = outcome {
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static(outcome.as_str()));
        response.extensions_mut().insert(AudioCache(outcome));
    }
    response.extensions_mut().insert(key);
}

/// Sets `X-Upstream-Cache` and its extension for a backend answer.
pub fn mark_answer(response: &mut Response, outcome: Outcome) {
    response.headers_mut().insert(
        "x-upstream-cache",
        HeaderValue::from_static(outcome.as_str()),
    );
    response.extensions_mut().insert(AnswerCache(outcome));
}

/// Middleware: logs method, path, route, status, cache outcomes, key, bytes
/// and duration, and counts the request by route and status.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let extensions = response.extensions();
    let cache = extensions.get::<AudioCache>().map_or("-", |c| c.0.as_str());
    let upstream_cache = extensions
        .get::<AnswerCache>()
        .map_or("-", |c| c.0.as_str());
    let key = extensions
        .get::<Key>()
        .map_or_else(|| "-".to_owned(), Key::to_hex);
    let bytes = response.body().size_hint().exact();
    tracing::info!(
        target: "opusgate::request",
        %method,
        path,
        route,
        status,
        cache,
        upstream_cache,
        key,
        bytes = bytes.map(|n| n as i64).unwrap_or(-1),
        // Milliseconds to 2 decimals (`ms=7.74`, not `ms=7.7379809999999996`).
        ms = (took.as_secs_f64() * 100_000.0).round() / 100.0,
        "request"
    );
    metrics::counter!(names::HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route).record(took.as_secs_f64());
    response
}
