//! The real `opusgate` binary as a child process: [`ServerProcess`] for
//! `opusgate serve` (killed on drop, its JSON log kept for inspection, its
//! RSS, threads and file descriptors from /proc, SIGTERM and SIGKILL), and
//! [`run_cli`] for the one-shot subcommands. Its HTTP helpers are
//! [`super::http::Api`]'s.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::Api;

/// The `opusgate` binary cargo built for this test or bench.
pub const BINARY: &str = env!("CARGO_BIN_EXE_opusgate");

/// The store directory of a test: `<dir>/store`.
pub fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// Runs `opusgate ARGS` to completion, with `stdin` piped in if given.
pub fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run opusgate");
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).expect("write stdin");
    }
    child.wait_with_output().expect("opusgate output")
}

/// A running `opusgate serve` child process. Dropping it kills it (SIGKILL)
/// and reaps it, so no test leaves a server behind, whatever fails.
pub struct ServerProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Every log line the server wrote to stderr so far (JSON).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with its store under `store_dir` and the extra
    /// environment in `env` (`OPUSGATE_*` settings, or `RUST_LOG` instead of
    /// `info`), in the store's parent directory, and waits until it listens.
    pub fn start(store_dir: &Path, env: &[(&str, String)]) -> ServerProcess {
        ServerProcess::start_with_log_format(store_dir, env, "json")
    }

    /// [`ServerProcess::start`] with `--log-format FORMAT` (`json` or
    /// `text`); [`ServerProcess::log_count`] reads only JSON lines.
    pub fn start_with_log_format(
        store_dir: &Path,
        env: &[(&str, String)],
        format: &str,
    ) -> ServerProcess {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--port", "0", "--log-format", format])
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
                } else if let Some((_, rest)) = line.split_once("opusgate listening addr=") {
                    // A text line: `… opusgate listening addr=127.0.0.1:PORT`.
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = addr_tx.send(addr.to_owned());
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut server = ServerProcess {
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

    /// `host:port`, for raw TCP clients.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
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

    /// Sends SIGTERM (`kill -TERM`) and returns at once.
    pub fn sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits (at most `limit`, then kills it and fails) for the process to
    /// exit, and returns how it exited.
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running child");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for opusgate") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "opusgate did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (at most `limit`) for the process to exit.
    pub fn terminate(self, limit: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(limit)
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

    /// Peak resident set size in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        status_field(self.pid(), "VmHWM:")
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
}

impl Api for ServerProcess {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for ServerProcess {
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
