//! The layer right outside every handler (inside CORS and the request log):
//! a panic in a handler becomes a logged 500 ([`error::panic_response`]) and
//! the server goes on, and on OpenAI's routes (`/v1/*`) every error answer
//! of opusgate's own is rendered in OpenAI's shape
//! ([`error::openai_shaped`]), a caught panic's included.
//!
//! One plain tower service where there were two layers (tower-http's
//! `CatchPanicLayer` and a `from_fn` middleware): it calls the service
//! inside it directly, its future is its own (no box, no boxed body), so
//! the memory-hit path pays for neither.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::error;

/// Wraps a service in [`ErrorShape`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorShapeLayer;

impl<S> Layer<S> for ErrorShapeLayer {
    type Service = ErrorShape<S>;

    fn layer(&self, inner: S) -> ErrorShape<S> {
        ErrorShape { inner }
    }
}

/// Catches panics and shapes errors on `/v1/*` (see the module comment).
#[derive(Clone, Debug)]
pub struct ErrorShape<S> {
    inner: S,
}

impl<S> Service<Request> for ErrorShape<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ErrorShapeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let openai = error::is_openai_path(request.uri().path());
        let state = match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => State::Running(future),
            Err(payload) => State::Panicked(Some(error::panic_response(payload))),
        };
        ErrorShapeFuture { state, openai }
    }
}

/// The future of [`ErrorShape`].
pub struct ErrorShapeFuture<F> {
    state: State<F>,
    openai: bool,
}

enum State<F> {
    /// The handler's answer on its way.
    Running(F),
    /// The call itself panicked: its answer, until polled.
    Panicked(Option<Response>),
}

impl<F> Future for ErrorShapeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match &mut this.state {
            State::Running(future) => {
                match catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(cx))) {
                    Ok(polled) => match ready!(polled) {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    Err(payload) => error::panic_response(payload),
                }
            }
            // Polled again after its answer (a caller's bug): a 500, not a panic.
            State::Panicked(response) => response.take().unwrap_or_else(|| {
                error::ApiError::internal("an answer was asked for twice").into_response()
            }),
        };
        Poll::Ready(Ok(if this.openai {
            error::openai_shaped(response)
        } else {
            response
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;

    use axum::body::Body;
    use axum::http::StatusCode;
    use serde_json::Value;

    use super::*;
    use crate::http::error::ApiError;

    /// What the inner service does.
    #[derive(Clone, Copy)]
    enum Inner {
        /// Answers this error.
        Fails,
        /// Answers 200.
        Answers,
        /// Panics in `call`.
        PanicsInCall,
        /// Panics when its future is polled.
        PanicsInPoll,
    }

    /// A future that panics when polled.
    struct Panics;

    impl Future for Panics {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            panic!("a handler bug");
        }
    }

    enum InnerFuture {
        Ready(Ready<Result<Response, Infallible>>),
        Panics(Panics),
    }

    impl Future for InnerFuture {
        type Output = Result<Response, Infallible>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match &mut *self {
                InnerFuture::Ready(ready) => Pin::new(ready).poll(cx),
                InnerFuture::Panics(panics) => Pin::new(panics).poll(cx),
            }
        }
    }

    impl Service<Request> for Inner {
        type Response = Response;
        type Error = Infallible;
        type Future = InnerFuture;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> InnerFuture {
            let answer = |response| InnerFuture::Ready(std::future::ready(Ok(response)));
            match self {
                Inner::Fails => answer(ApiError::not_found("no such thing").into_response()),
                Inner::Answers => answer(Response::new(Body::from("fine"))),
                Inner::PanicsInCall => panic!("a handler bug"),
                Inner::PanicsInPoll => InnerFuture::Panics(Panics),
            }
        }
    }

    async fn answer(inner: Inner, path: &str) -> (StatusCode, Value) {
        let mut service = ErrorShapeLayer.layer(inner);
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let Ok(response) = service.call(request).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, json)
    }

    #[tokio::test]
    async fn errors_take_openais_shape_on_v1_only() {
        let (status, ours) = answer(Inner::Fails, "/api/v1/audio/x").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ours["code"], "not_found");
        assert_eq!(ours["status"], "error");
        let (status, openai) = answer(Inner::Fails, "/v1/models/x").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(openai["error"]["code"], "not_found");
        assert_eq!(openai["error"]["type"], "invalid_request_error");
        assert_eq!(openai["error"]["message"], "no such thing");
        assert!(openai["error"]["param"].is_null());
        // A success passes unchanged (its body is not JSON).
        let (status, body) = answer(Inner::Answers, "/v1/models").await;
        assert_eq!((status, body), (StatusCode::OK, Value::Null));
    }

    #[tokio::test]
    async fn a_panic_in_call_or_poll_is_a_500_in_the_routes_shape() {
        for inner in [Inner::PanicsInCall, Inner::PanicsInPoll] {
            let (status, ours) = answer(inner, "/api/v1/convert").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(ours["code"], "internal");
            let (status, openai) = answer(inner, "/v1/audio/transcriptions").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(openai["error"]["code"], "internal");
            assert_eq!(openai["error"]["type"], "server_error");
        }
    }
}
