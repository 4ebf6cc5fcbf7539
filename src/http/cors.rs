//! CORS: tower-http's [`CorsLayer`] built from `[cors]`, so that a web page
//! on an allowed origin can call the API and read its answers, errors
//! included.
//!
//! The layer sits outside authentication and every handler (see
//! [`super::router`]): it answers every `OPTIONS` request (a preflight)
//! itself, with 200 and no body, before any key is asked for or any handler
//! runs; an origin not allowed gets that answer without
//! `Access-Control-Allow-Origin`, so its browser sends nothing more. Every
//! other answer, 401, 413, 415 and 503 included, carries the CORS headers
//! for an allowed origin. With `allowed_origins` empty there is no layer:
//! no CORS header at all, and `OPTIONS` is 405 like any method a route
//! does not take.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{AllowedOrigins, CorsConfig};

/// The request headers a page may send (`Access-Control-Allow-Headers`).
pub const ALLOWED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-api-key"),
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_NONE_MATCH,
    header::RANGE,
];

/// The answer headers a page's script may read besides the CORS-safelisted
/// ones (`Access-Control-Expose-Headers`).
pub const EXPOSED_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("x-cache"),
    header::ETAG,
    header::LOCATION,
    HeaderName::from_static("x-audio-duration-ms"),
    HeaderName::from_static("x-upstream-cache"),
    header::CONTENT_RANGE,
    header::RETRY_AFTER,
];

/// The methods the API takes (`Access-Control-Allow-Methods`).
pub const ALLOWED_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// The layer for `config`, or `None` when CORS is off. Settings that
/// [`crate::config::Config::validate`] refuses (a `*` with API keys, an
/// origin that is none) give no layer either, logged: a server started
/// without validation fails closed, never open.
pub fn layer(config: &CorsConfig, api_keys_configured: bool) -> Option<CorsLayer> {
    if let Some((setting, value, why)) = config.problem(api_keys_configured) {
        tracing::error!(setting, value, why, "CORS is off: its settings are invalid");
        return None;
    }
    let allow_origin = match config.origins() {
        Ok(AllowedOrigins::Off) | Err(_) => return None,
        Ok(AllowedOrigins::Any) => AllowOrigin::any(),
        Ok(AllowedOrigins::List(origins)) => AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(ALLOWED_METHODS)
            .allow_headers(ALLOWED_HEADERS)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(Duration::from_secs(config.max_age_seconds)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_when_empty_or_refused() {
        assert!(layer(&CorsConfig::default(), false).is_none());
        let star = CorsConfig {
            allowed_origins: vec!["*".into()],
            ..CorsConfig::default()
        };
        assert!(layer(&star, false).is_some());
        assert!(layer(&star, true).is_none(), "`*` with keys fails closed");
        let exact = CorsConfig {
            allowed_origins: vec!["https://app.example".into()],
            ..CorsConfig::default()
        };
        assert!(layer(&exact, true).is_some());
    }
}
