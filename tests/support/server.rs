//! A real opusgate server in process (`opusgate::server::run` on the test's
//! runtime, on 127.0.0.1:0) with its own data directory and small
//! capacities; its HTTP helpers are [`super::http::Api`]'s.

use std::path::Path;
use std::time::Duration;

use opusgate::config::Config;
use opusgate::server::{self, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::http::Api;

/// A running server; stop it with [`TestServer::stop`].
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServerError>>,
}

/// A fresh data directory for a test.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Defaults with the store under `dir` and small capacities.
pub fn config_in(dir: &Path) -> Config {
    let mut config = Config::default();
    config.cache.dir = dir.join("store");
    config.cache.memory_bytes = 64 * 1024 * 1024;
    config.cache.disk_bytes = 256 * 1024 * 1024;
    config.server.shutdown_grace_seconds = 10;
    config
}

impl TestServer {
    /// Starts a server with `config` and waits until it is ready.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let run_config = config.clone();
        let handle = tokio::spawn(async move {
            server::run(listener, run_config, async move {
                let _ = rx.await;
            })
            .await
        });
        let server = TestServer {
            base: format!("http://{addr}"),
            config,
            shutdown: Some(tx),
            handle,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server at {} never became ready", self.base);
    }

    /// Signals shutdown and waits until the store is flushed and closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(30), &mut self.handle)
            .await
            .expect("server did not stop within 30 s")
            .expect("server task panicked");
        result.expect("server stopped with an error");
    }
}

impl Api for TestServer {
    fn base(&self) -> &str {
        &self.base
    }
}
