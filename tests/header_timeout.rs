//! The request-head deadline (`server.header_read_timeout_seconds`), against
//! the real binary with raw TCP clients:
//! - half a request line, nothing at all, or a head trickled a byte at a time
//!   past the deadline: the server closes the connection after about the
//!   timeout, not before, and goes on serving;
//! - a head sent slowly but within the deadline is answered normally;
//! - an idle keep-alive connection is closed after the same timeout (hyper
//!   starts it as soon as the connection goes idle);
//! - fifty stalled connections give their file descriptors back;
//! - running out of file descriptors makes accepts fail, which the server
//!   logs and retries instead of stopping;
//! - a stalled client holds up SIGTERM no longer than the header timeout
//!   (not the 30 s grace period).
//!
//! The slow *body* (408) is `faults::a_client_sending_1_byte_per_second_gets_408`.

mod support;

use std::time::{Duration, Instant};

use support::http::Api as _;
use support::process::{store_dir, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadline most tests run with.
const TIMEOUT: &str = "1";
/// Not cut off before this: the timeout, less slack for clock granularity.
const NOT_BEFORE: Duration = Duration::from_millis(800);
/// Cut off before this: the timeout plus generous slack for a loaded machine.
const WITHIN: Duration = Duration::from_secs(10);
/// What the server logs when it closes a connection for a late head.
const TIMEOUT_LOG: &str = "request head not received";

fn start(dir: &tempfile::TempDir, header_timeout: &str) -> ServerProcess {
    ServerProcess::start(
        &store_dir(dir.path()),
        &[(
            "OPUSGATE_SERVER__HEADER_READ_TIMEOUT_SECONDS",
            header_timeout.into(),
        )],
    )
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
enum Closed {
    /// read returned 0.
    Eof,
    /// read or write failed: the server reset the connection.
    Reset(std::io::ErrorKind),
}

/// Reads until the server closes the connection (at most `limit`) and
/// returns what it sent before closing.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Closed) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Closed::Eof,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => return Closed::Reset(e.kind()),
            }
        }
    };
    match tokio::time::timeout(limit, read_all).await {
        Ok(closed) => (answer, closed),
        Err(_) => panic!("the connection was still open after {limit:?}"),
    }
}

/// Asserts that a cut-off connection got nothing, or a 408 and nothing else.
fn assert_no_answer_or_408(answer: &[u8]) {
    let text = String::from_utf8_lossy(answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to a late head: {text:?}"
    );
}

/// Polls the server's log until `needle` appears `n` times (at most 10 s).
async fn wait_log(server: &ServerProcess, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.log_count(needle) < n {
        assert!(
            Instant::now() < deadline,
            "{needle:?} logged {} times, expected {n}; log:\n{}",
            server.log_count(needle),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Health answers and a new upload gets exactly its WAV.
async fn still_serves(server: &ServerProcess) {
    server.still_serves(&reqwest::Client::new(), 77).await;
}

/// Reads one response with a Content-Length body from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a Content-Length");
                if raw.len() >= end + 4 + length {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read response");
            assert!(n > 0, "closed mid-response: {raw:?}");
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("a response in time");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn half_a_request_line_is_cut_off_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream
        .write_all(b"POST /api/v1/convert HT")
        .await
        .expect("half a request line");
    let (answer, closed) = read_until_closed(&mut stream, WITHIN).await;
    let took = started.elapsed();
    eprintln!(
        "half a request line: closed after {took:?} ({closed:?}), answer {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took >= NOT_BEFORE,
        "cut off after {took:?}, before the 1 s header timeout"
    );
    assert_no_answer_or_408(&answer);
    wait_log(&server, TIMEOUT_LOG, 1).await;
    still_serves(&server).await;
    server.kill9();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_off_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    let (answer, closed) = read_until_closed(&mut stream, WITHIN).await;
    let took = started.elapsed();
    eprintln!("silent connection: closed after {took:?} ({closed:?})");
    assert!(took >= NOT_BEFORE, "cut off after {took:?}");
    assert_no_answer_or_408(&answer);
    still_serves(&server).await;
    server.kill9();
}

#[tokio::test]
async fn a_head_trickled_past_the_deadline_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nX-Slow: ")
        .await
        .expect("request line");
    // One header byte every 100 ms, forever: each byte is progress, but the
    // deadline is for the whole head and is not pushed back by it.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        assert!(
            started.elapsed() < WITHIN,
            "still open after {WITHIN:?} of trickling"
        );
        if let Err(e) = stream.write_all(b"a").await {
            break Closed::Reset(e.kind());
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => break Closed::Eof,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break Closed::Reset(e.kind()),
        }
    };
    let took = started.elapsed();
    eprintln!("trickled head: closed after {took:?} ({closed:?})");
    assert!(took >= NOT_BEFORE, "cut off after {took:?}");
    assert_no_answer_or_408(&answer);
    still_serves(&server).await;
    server.kill9();
}

#[tokio::test]
async fn a_head_sent_slowly_within_the_deadline_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 2 s here, so that a head spread over about 1.2 s is well within it.
    let server = start(&dir, "2");
    let host = server.addr();
    let head = format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let started = Instant::now();
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    // Twelve pieces, 100 ms apart.
    let piece = head.len().div_ceil(12);
    for chunk in head.as_bytes().chunks(piece) {
        stream.write_all(chunk).await.expect("a piece of the head");
        stream.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, closed) = read_until_closed(&mut stream, WITHIN).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("slow head: answered after {took:?}, then {closed:?}");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after {took:?}: {answer:?}"
    );
    assert!(answer.contains("\"status\":\"healthy\""), "{answer}");
    assert_eq!(closed, Closed::Eof, "Connection: close was asked for");
    assert_eq!(server.log_count(TIMEOUT_LOG), 0, "{}", server.log_text());
    server.kill9();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let host = server.addr();
    let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    // Keep-alive works: two requests, 300 ms apart, on one connection.
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.expect("request");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("connection: close"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then idle: the next head's deadline started when the connection went
    // idle after the second answer, 300 ms ago.
    let idle_since = Instant::now() - Duration::from_millis(300);
    let (answer, closed) = read_until_closed(&mut stream, WITHIN).await;
    let idle = idle_since.elapsed();
    eprintln!("idle keep-alive connection: closed after {idle:?} idle ({closed:?})");
    assert!(idle >= NOT_BEFORE, "closed after {idle:?} idle");
    assert_no_answer_or_408(&answer);
    server.kill9();
}

#[tokio::test]
async fn fifty_stalled_connections_give_their_descriptors_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let fds_before = server.open_fds();
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        stream
            .write_all(b"POST /api/v1/convert HT")
            .await
            .expect("half a request line");
        streams.push(stream);
    }
    // The server holds them for now...
    let deadline = Instant::now() + WITHIN;
    while server.open_fds() < fds_before + 50 {
        assert!(
            Instant::now() < deadline,
            "the server never held the 50 connections: {} fds, {fds_before} before",
            server.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and closes every one after the timeout.
    for stream in &mut streams {
        let (answer, _) = read_until_closed(stream, WITHIN).await;
        assert_no_answer_or_408(&answer);
    }
    server.wait_open_fds(fds_before + 2, WITHIN).await;
    wait_log(&server, TIMEOUT_LOG, 50).await;
    still_serves(&server).await;
    server.kill9();
}

/// `Max open files` soft limit of a process, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a Max open files line")
}

/// Sets the soft `RLIMIT_NOFILE` of a running process (util-linux `prlimit`).
fn set_soft_nofile(pid: u32, soft: u64) {
    let status = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={soft}:")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

#[tokio::test]
async fn running_out_of_descriptors_does_not_stop_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, TIMEOUT);
    let pid = server.pid();
    let soft = soft_nofile(pid);
    // Room for two more descriptors, then ten clients: accept fails with
    // EMFILE until the accepted ones time out and free theirs.
    set_soft_nofile(pid, server.open_fds() + 2);
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(TcpStream::connect(server.addr()).await.expect("connect"));
    }
    wait_log(&server, "accepting a connection failed", 1).await;
    set_soft_nofile(pid, soft);
    // Every client is taken in after all, and cut off by the header timeout.
    for stream in &mut streams {
        let (answer, _) = read_until_closed(stream, Duration::from_secs(30)).await;
        assert_no_answer_or_408(&answer);
    }
    still_serves(&server).await;
    assert_eq!(server.log_count("panicked"), 0, "{}", server.log_text());
    server.kill9();
}

#[tokio::test]
async fn a_stalled_client_holds_up_shutdown_no_longer_than_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The grace period stays at its default, 30 s.
    let server = start(&dir, TIMEOUT);
    let mut stalled = TcpStream::connect(server.addr()).await.expect("connect");
    stalled
        .write_all(b"POST /api/v1/convert HT")
        .await
        .expect("half a request line");
    // And one that has sent nothing (hyper closes those at once on shutdown).
    let _silent = TcpStream::connect(server.addr()).await.expect("connect");
    // Let the server take both in before it is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || server.terminate(WITHIN))
        .await
        .expect("terminate");
    let took = started.elapsed();
    eprintln!("shutdown with a stalled client took {took:?}");
    assert!(exit.success(), "opusgate exited with {exit}");
    let (answer, _) = read_until_closed(&mut stalled, WITHIN).await;
    assert_no_answer_or_408(&answer);
}
