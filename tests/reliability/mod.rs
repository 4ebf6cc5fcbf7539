//! Support for the reliability tests (`hostile_corpus`, `crash_recovery`,
//! `faults`) and the soak bench: the real `opusgate` binary as a child
//! process (killed on drop, its JSON log kept for inspection), its RSS,
//! thread and file-descriptor counts from /proc, and fresh conversions to
//! compare served bytes against.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `opusgate` binary cargo built for this test or bench.
pub const BINARY: &str = env!("CARGO_BIN_EXE_opusgate");

/// A running `opusgate serve` child process. Dropping it kills it (SIGKILL)
/// and reaps it, so no test leaves a server behind, whatever fails.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Every log line the server wrote to stderr so far (JSON).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with its store under `store_dir` and the extra
    /// `OPUSGATE_*` settings in `env`, and waits until it listens.
    pub fn start(store_dir: &Path, env: &[(&str, String)]) -> Server {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--port", "0", "--log-format", "json"])
            // No config.toml is read from a temporary directory.
            .current_dir(store_dir.parent().unwrap_or(store_dir))
            .env("OPUSGATE_CACHE__DIR", store_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start opusgate");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        let sink = Arc::clone(&log);
        // Reads the log until the process exits, so that it never blocks on
        // a full pipe, and reports the listening address once.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "opusgate listening" {
                        if let Some(addr) = v["addr"].as_str() {
                            let _ = addr_tx.send(addr.to_owned());
                        }
                    }
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            log,
        };
        match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => server.base = format!("http://{addr}"),
            Err(_) => panic!(
                "opusgate did not start listening within 60 s; its log:\n{}",
                server.log_text()
            ),
        }
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The whole log so far, one line per event.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Log lines whose `message` field contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
            .count()
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most `limit`) for the process to exit.
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running child");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for opusgate") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "opusgate did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident set size in KiB.
    pub fn rss_kb(&self) -> u64 {
        status_field(self.pid(), "VmRSS:")
    }

    /// Number of threads.
    pub fn threads(&self) -> u64 {
        status_field(self.pid(), "Threads:")
    }

    /// Number of open file descriptors.
    pub fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// `GET /api/v1/stats`.
    pub async fn stats(&self, client: &reqwest::Client) -> Value {
        client
            .get(self.url("/api/v1/stats"))
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats JSON")
    }

    /// Waits until the server has at most `at_most` open file descriptors
    /// (it has closed the connections it was holding); panics after `limit`.
    pub async fn wait_open_fds(&self, at_most: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open_fds() > at_most {
            assert!(
                Instant::now() < deadline,
                "descriptors left open after {limit:?}: {}, expected at most {at_most}",
                self.open_fds()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs `upload` to `/api/v1/convert`: (status, `X-Cache`, body).
    pub async fn convert(&self, client: &reqwest::Client, upload: &[u8]) -> (u16, String, Vec<u8>) {
        let r = client
            .post(self.url("/api/v1/convert"))
            .body(upload.to_vec())
            .send()
            .await
            .expect("convert request");
        let status = r.status().as_u16();
        let cache = header(&r, "x-cache");
        (status, cache, r.bytes().await.expect("body").to_vec())
    }

    /// Health answers and a new upload gets exactly its WAV: the server
    /// still serves.
    pub async fn still_serves(&self, client: &reqwest::Client, seed: u64) {
        let health = client
            .get(self.url("/api/v1/health"))
            .send()
            .await
            .expect("health request");
        assert_eq!(health.status(), 200);
        let upload = clip(1.0, seed);
        let (status, _, body) = self.convert(client, &upload).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, fresh_wav(&upload));
    }

    /// Polls the stats until `done` holds for them (at most `limit`).
    pub async fn wait_stats(
        &self,
        client: &reqwest::Client,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let stats = self.stats(client).await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; stats: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A numeric field (first number after `name`) of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A response header as text ("" when absent or not text).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The store directory of a test: `<dir>/store`.
pub fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// The WAV the server must answer for `upload` at the default 16 kHz mono.
pub fn fresh_wav(upload: &[u8]) -> Vec<u8> {
    opusgate::codec::convert(upload, &opusgate::codec::ConvertOptions::default())
        .expect("a fresh conversion of a good clip")
        .wav
}

/// A speech-like clip from the project's sample encoder.
pub fn clip(seconds: f64, seed: u64) -> Vec<u8> {
    opusgate::codec::encode_sample(&opusgate::codec::SampleOptions {
        seconds,
        seed,
        ..opusgate::codec::SampleOptions::default()
    })
    .expect("sample clip")
}
