//! The one mapping from every error to an HTTP status and a stable code.
//!
//! Every error answer is JSON `{"status":"error","code":…,"message":…}`,
//! except on OpenAI's routes (`/v1/*`), where the same error (same status,
//! same code) takes OpenAI's shape
//! `{"error":{"message":…,"type":…,"code":…,"param":null}}` ([`openai_shaped`]).
//! Codes are part of the API: clients branch on them, so they never change.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::codec::CodecError;
use crate::service::{ServiceError, RETRY_AFTER_SECONDS};
use crate::upstream::UpstreamError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What happened and what to do, for a person.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Whether the connection is closed after this answer: set by the
    /// refusals that answer before the body was read to its end (the rest of
    /// it is still on the wire).
    pub close_connection: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    code: &'a str,
    message: &'a str,
}

/// OpenAI's error body: `{"error":{…}}`.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    param: Option<&'a str>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            close_connection: false,
        }
    }

    /// 400 `bad_parameter`: a query parameter or path segment is not allowed.
    pub fn bad_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    /// 400 `bad_request`: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`.
    /// Refused before the body was read to its end, so the connection closes.
    pub fn payload_too_large(limit: u64) -> ApiError {
        ApiError::refused_too_large(format!(
            "the upload is larger than the limit of {limit} bytes (limits.max_upload_bytes)"
        ))
    }

    /// 413 `payload_too_large`: one upload larger than the whole upload
    /// budget, which it could never fit in. The connection closes.
    pub fn over_upload_budget(budget: u64) -> ApiError {
        ApiError::refused_too_large(format!(
            "the upload is larger than the memory budget of {budget} bytes for all uploads in flight (limits.max_inflight_upload_bytes)"
        ))
    }

    /// 413 `payload_too_large` answered before the body was read to its
    /// end: the rest is still on the wire, so the connection closes.
    fn refused_too_large(message: String) -> ApiError {
        ApiError {
            close_connection: true,
            ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
    }

    /// 503 `overloaded` with `Retry-After`: the upload budget had no room
    /// for this body within the short wait. Refused before the body was
    /// read to its end, so the connection closes.
    pub fn upload_budget_busy() -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECONDS),
            close_connection: true,
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "too many uploads are being read at once (limits.max_inflight_upload_bytes); retry after {RETRY_AFTER_SECONDS} s"
                ),
            )
        }
    }

    /// 408 `request_timeout`: the client was too slow to send its request.
    /// The body is still (slowly) on the wire, so the connection closes.
    pub fn request_timeout(seconds: u64) -> ApiError {
        ApiError {
            close_connection: true,
            ..ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body was not received within {seconds} s"),
            )
        }
    }

    /// 416 `range_not_satisfiable`: the `Range` asked for starts past the end
    /// of a representation of `total` bytes. The handler adds
    /// `Content-Range: bytes */total` to the answer.
    pub fn range_not_satisfiable(total: usize) -> ApiError {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the requested range is outside the {total} bytes of this audio"),
        )
    }

    /// 500 `internal`: never the client's fault.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The error's `type` in OpenAI's shape, from its status, as OpenAI's
    /// API and SDKs use them: `authentication_error` for 401,
    /// `invalid_request_error` for the other 4xx (the client's request),
    /// `server_error` for 5xx (ours or the backend's side).
    pub fn openai_type(&self) -> &'static str {
        if self.status == StatusCode::UNAUTHORIZED {
            "authentication_error"
        } else if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        }
    }
}

/// Status for each converter error. Exhaustive: a new variant does not
/// compile until its status is decided here.
fn codec_status(e: &CodecError) -> StatusCode {
    match e {
        CodecError::BadParameter(_) => StatusCode::BAD_REQUEST,
        CodecError::UnsupportedFormat(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        // Opus we cannot use.
        CodecError::InvalidStream(_)
        | CodecError::TruncatedStream(_)
        | CodecError::UnsupportedChannelMapping { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        CodecError::AudioTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        CodecError::ConversionTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        // A converter bug, not the client's input.
        CodecError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<CodecError> for ApiError {
    fn from(e: CodecError) -> ApiError {
        let status = codec_status(&e);
        let message = match &e {
            CodecError::Internal(why) => {
                tracing::error!(error = %why, "converter bug");
                format!("the converter hit a bug; it was logged: {why}")
            }
            e => e.to_string(),
        };
        ApiError::new(status, e.code(), message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Codec(e) => e.into(),
            ServiceError::Overloaded => ApiError {
                retry_after: Some(RETRY_AFTER_SECONDS),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            },
            ServiceError::Internal(why) => ApiError::internal(why),
        }
    }
}

/// At most this much of a backend's error body is quoted back.
const EXCERPT_CHARS: usize = 300;

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> ApiError {
        let message = e.to_string();
        match e {
            UpstreamError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_not_configured",
                message,
            ),
            UpstreamError::Status { status, body, .. } => {
                let excerpt: String = String::from_utf8_lossy(&body)
                    .chars()
                    .take(EXCERPT_CHARS)
                    .collect();
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("the backend answered {status}: {excerpt}"),
                )
            }
            UpstreamError::BadAnswer(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
            }
            UpstreamError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
            }
            UpstreamError::Unavailable(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            status: "error",
            code: self.code,
            message: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // Saying so keeps keep-alive clients from sending their next request
        // on a connection that is about to go away.
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // For `openai_shaped`, which renders it again on `/v1/*`.
        response.extensions_mut().insert(self);
        response
    }
}

/// Whether a path is under OpenAI's API (`/v1/*`), where errors take
/// OpenAI's shape.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// An answer to a request on `/v1/*` (see [`is_openai_path`]): every error
/// answer of opusgate's own (any [`ApiError`], wherever it was raised:
/// auth, routing, body reading, conversion, the backend call, a caught
/// panic) is rendered in OpenAI's shape with the same status, headers and
/// code. Other answers, the backend's own error answers among them, pass
/// unchanged. Applied by [`super::shape`], the layer outside every handler.
pub fn openai_shaped(response: Response) -> Response {
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let body = OpenAiBody {
        error: OpenAiError {
            message: &error.message,
            kind: error.openai_type(),
            code: error.code,
            param: None,
        },
    };
    let (_, body) = axum::Json(body).into_response().into_parts();
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body)
}

/// Answer for a panic caught in a handler: logged, 500, and the server goes on.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a request handler panicked");
    ApiError::internal("the server hit a bug while handling this request; it was logged")
        .into_response()
}
