//! One exchange with the backend, and the answers that are passed through
//! chunk by chunk as the backend sends them (event streams, and chunked
//! answers to a request that asked for a stream).
//!
//! Deadlines are per call, not the client's: a whole answer must arrive
//! within `upstream.timeout_seconds`; a stream's head must, and then each
//! chunk must follow the previous one within the same time.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::answer::Answer;
use super::UpstreamError;

/// Which success answers are passed through as streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum StreamWhen {
    /// None: every answer is read whole.
    Never,
    /// `Content-Type: text/event-stream`.
    EventStream,
    /// An event stream, or any answer without a `Content-Length` (chunked):
    /// for a request that asked for a stream.
    EventStreamOrChunked,
}

impl StreamWhen {
    fn streams(self, content_type: &str, content_length: Option<u64>) -> bool {
        match self {
            StreamWhen::Never => false,
            StreamWhen::EventStream => is_event_stream(content_type),
            StreamWhen::EventStreamOrChunked => {
                is_event_stream(content_type) || content_length.is_none()
            }
        }
    }
}

/// Whether a Content-Type is `text/event-stream` (any parameters, any case).
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// What one exchange gave: a whole success answer, or a success answer's
/// head with its body still to come.
pub(crate) enum Exchange {
    /// Read to its end.
    Whole(Answer),
    /// To be passed through.
    Stream(reqwest::Response),
}

/// The backend's content type, `application/octet-stream` when it gives none.
fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// Sends one request: a success answer whole or (as `when` says) as a
/// stream, anything else as [`UpstreamError::Status`] with its whole body.
pub(crate) async fn exchange(
    builder: reqwest::RequestBuilder,
    timeout: u64,
    when: StreamWhen,
) -> Result<Exchange, UpstreamError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else {
            UpstreamError::Unavailable(e.to_string())
        }
    };
    let response = tokio::time::timeout_at(deadline, builder.send())
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
        .map_err(classify)?;
    let status = response.status().as_u16();
    let content_type = content_type(&response);
    let success = (200..300).contains(&status);
    if success && when.streams(&content_type, response.content_length()) {
        return Ok(Exchange::Stream(response));
    }
    let body = tokio::time::timeout_at(deadline, response.bytes())
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
        .map_err(classify)?;
    if success {
        Ok(Exchange::Whole(Answer {
            status,
            content_type,
            body,
            backend_seconds: 0.0,
        }))
    } else {
        Err(UpstreamError::Status {
            status,
            content_type,
            body,
        })
    }
}

/// A success answer passed through as the backend sends it. It holds its
/// backend permit until it ends, fails or is dropped (the client went away).
pub struct Streamed {
    /// The backend's status (2xx).
    pub status: u16,
    /// The backend's content type.
    pub content_type: String,
    /// The body, chunk by chunk. An error ends it: the backend broke off, or
    /// sent nothing for `upstream.timeout_seconds`.
    pub body: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl Streamed {
    /// The body of `response`, each chunk within `idle` seconds of the last.
    pub(crate) fn new(
        response: reqwest::Response,
        permit: OwnedSemaphorePermit,
        idle: u64,
    ) -> Self {
        let status = response.status().as_u16();
        let content_type = content_type(&response);
        let body = futures::stream::try_unfold(
            (response, permit),
            move |(mut response, permit)| async move {
                let chunk = tokio::time::timeout(Duration::from_secs(idle), response.chunk())
                    .await
                    .map_err(|_| UpstreamError::Timeout(idle))
                    .and_then(|r| {
                        r.map_err(|e| {
                            UpstreamError::Unavailable(format!("the stream broke off: {e}"))
                        })
                    });
                match chunk {
                    Ok(chunk) => Ok(chunk.map(|c| (c, (response, permit)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "a backend stream ended early");
                        Err(e)
                    }
                }
            },
        )
        .boxed();
        Streamed {
            status,
            content_type,
            body,
        }
    }

    /// The whole answer (for a caller that needs all of it).
    pub async fn collect(self) -> Result<Answer, UpstreamError> {
        let body = self
            .body
            .try_fold(BytesMut::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await?;
        Ok(Answer {
            status: self.status,
            content_type: self.content_type,
            body: body.freeze(),
            backend_seconds: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_and_chunked_answers_stream_when_asked() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("application/json"));
        assert!(!StreamWhen::Never.streams("text/event-stream", None));
        assert!(StreamWhen::EventStream.streams("text/event-stream", Some(10)));
        assert!(!StreamWhen::EventStream.streams("application/json", None));
        assert!(StreamWhen::EventStreamOrChunked.streams("application/json", None));
        assert!(!StreamWhen::EventStreamOrChunked.streams("application/json", Some(10)));
    }
}
