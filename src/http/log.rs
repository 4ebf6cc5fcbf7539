//! One log line and the request metrics for every HTTP request.

use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::stats::names;

/// Middleware: logs method, path, status, cache outcome, key, bytes and
/// duration, and counts the request by route and status.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = route_label(&path);
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let cache = text("x-cache");
    let key = text(header::ETAG.as_str()).trim_matches('"').to_owned();
    let bytes = response.body().size_hint().exact();
    tracing::info!(
        target: "opusgate::request",
        %method,
        path,
        status,
        cache,
        key,
        bytes = bytes.map(|n| n as i64).unwrap_or(-1),
        ms = took.as_secs_f64() * 1000.0,
        "request"
    );
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route).record(took.as_secs_f64());
    response
}

/// The route a path belongs to, as a metric label of bounded cardinality.
fn route_label(path: &str) -> &'static str {
    if path.starts_with("/api/v1/audio/") {
        return "/api/v1/audio/{key}";
    }
    super::ROUTES
        .iter()
        .find(|route| **route == path)
        .copied()
        .unwrap_or("unmatched")
}
