//! A server on its own tokio runtime and thread in the bench process, so
//! that the client's work does not run on the server's threads: opusgate
//! itself, or a bare axum handler answering a prepared body (the
//! framework's ceiling). Stopped and joined when dropped.

use axum::body::Bytes;
use axum::routing::post;
use opusgate_cache::Key;

/// A server running on its own runtime and thread.
pub struct Background {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a [`Background`] runs: given its listener and stop signal.
pub type Make = Box<
    dyn FnOnce(
            tokio::net::TcpListener,
            tokio::sync::oneshot::Receiver<()>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

impl Background {
    /// The framework's ceiling: read the upload, derive its content address
    /// with `key_params` when given (what a memory hit must do), and answer
    /// `answer` as `audio/wav` on `POST /api/v1/convert`.
    pub fn ceiling(answer: Bytes, key_params: Option<Vec<u8>>) -> Background {
        Background::spawn(Box::new(move |listener, stop| {
            let app = axum::Router::new().route(
                "/api/v1/convert",
                post(move |body: Bytes| {
                    let answer = answer.clone();
                    let key_params = key_params.clone();
                    async move {
                        match &key_params {
                            Some(params) => {
                                std::hint::black_box(Key::derive(&body, params));
                            }
                            None => {
                                std::hint::black_box(body.len());
                            }
                        }
                        ([("content-type", "audio/wav")], answer)
                    }
                }),
            );
            Box::pin(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.await;
                    })
                    .await;
            })
        }))
    }

    /// Binds 127.0.0.1:0 on a new runtime and thread and runs `make` there.
    pub fn spawn(make: Make) -> Background {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                make(listener, stop_rx).await;
            });
        });
        let addr = addr_rx.recv().expect("server address");
        Background {
            base: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
