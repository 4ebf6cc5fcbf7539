//! Test support: a real opusgate server on 127.0.0.1:0 with its own data
//! directory, clips made by the project's sample encoder, and small HTTP helpers.
#![allow(dead_code)]

pub mod backend;

use std::path::{Path, PathBuf};
use std::time::Duration;

use opusgate::codec::{encode_sample, SampleOptions};
use opusgate::config::Config;
use opusgate::server::{self, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server; stop it with [`TestServer::stop`].
pub struct TestServer {
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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

    pub async fn stats(&self, client: &reqwest::Client) -> serde_json::Value {
        client
            .get(self.url("/api/v1/stats"))
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats json")
    }
}

/// A speech-like Ogg Opus clip from the project's encoder; distinct seeds give distinct clips.
pub fn clip(seconds: f64, seed: u64) -> Vec<u8> {
    encode_sample(&SampleOptions {
        seconds,
        seed,
        ..SampleOptions::default()
    })
    .expect("sample clip")
}

/// Frames per channel and format of a WAV body.
pub fn wav_info(body: &[u8]) -> (u64, u32, u16) {
    let reader = hound::WavReader::new(std::io::Cursor::new(body)).expect("a WAV body");
    let spec = reader.spec();
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    (
        u64::from(reader.duration()),
        spec.sample_rate,
        spec.channels,
    )
}

pub async fn post_convert(
    client: &reqwest::Client,
    server: &TestServer,
    query: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(server.url(&format!("/api/v1/convert{query}")))
        .body(body)
        .send()
        .await
        .expect("convert request")
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Path of a file in a temp dir.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
