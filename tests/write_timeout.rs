//! The answer's write deadline (`server.write_timeout_seconds`), against the
//! real binary with raw TCP clients whose receive buffer is small:
//! - a client that never reads its large WAV is cut off about the timeout
//!   after its socket stopped taking bytes, logged, and its descriptor given
//!   back, while the server goes on serving others;
//! - a slow reader that keeps taking bytes for longer than the timeout is
//!   not cut off and gets its whole WAV, byte for byte;
//! - SIGTERM with a client that does not read: the process exits within the
//!   grace period when it is the shorter, and within the write timeout when
//!   that is.

mod support;

use std::time::{Duration, Instant};

use support::clips::{clip, options};
use support::http::Api as _;
use support::process::{store_dir, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What the server logs when it closes a connection for a stalled answer.
const STALL_LOG: &str = "answer made no progress";
/// The query of the large answers: 48 kHz stereo, 192 000 bytes a second.
const QUERY: &str = "?rate=48000&channels=2";

fn start(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> ServerProcess {
    let env: Vec<(&str, String)> = env.iter().map(|&(k, v)| (k, v.to_owned())).collect();
    ServerProcess::start(&store_dir(dir.path()), &env)
}

/// Connects with a 4 KiB receive buffer, so that the server's writes stall
/// soon after the client stops reading, and sends a conversion of `upload`
/// at [`QUERY`] (`Connection: close`).
async fn request_large(server: &ServerProcess, upload: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr = server.addr();
    let mut stream = socket
        .connect(addr.parse().expect("an address"))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/convert{QUERY} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        upload.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(upload).await.expect("body");
    stream
}

/// The WAV the server must answer for `upload` at [`QUERY`].
fn expected_wav(upload: &[u8]) -> Vec<u8> {
    opusgate::codec::convert(upload, &options(48_000, 2))
        .expect("a fresh conversion")
        .wav
}

/// Reads until the server closes the connection (at most `limit`): what it
/// sent, and whether it ended with a clean EOF (not a reset).
async fn read_to_end(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return false,
            }
        }
    };
    let eof = tokio::time::timeout(limit, read_all)
        .await
        .unwrap_or_else(|_| panic!("the connection was still open after {limit:?}"));
    (got, eof)
}

/// Polls the server's log until `needle` appears (at most `limit`).
async fn wait_log(server: &ServerProcess, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while server.log_count(needle) == 0 {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged within {limit:?}; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_after_the_write_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, &[("OPUSGATE_SERVER__WRITE_TIMEOUT_SECONDS", "2")]);
    // 60 s at 48 kHz stereo: an 11.5 MB WAV, far more than the socket
    // buffers on both sides hold.
    let upload = clip(60.0, 1);
    let fds_before = server.open_fds();
    let started = Instant::now();
    let mut stuck = request_large(&server, &upload).await;
    // The server holds the connection (and serves others) for now...
    let client = reqwest::Client::new();
    server.still_serves(&client, 2).await;
    drop(client);
    assert_eq!(server.log_count(STALL_LOG), 0, "{}", server.log_text());
    // ...and drops it about 2 s after its socket stopped taking bytes.
    wait_log(&server, STALL_LOG, Duration::from_secs(20)).await;
    let logged = started.elapsed();
    server
        .wait_open_fds(fds_before, Duration::from_secs(5))
        .await;
    let freed = started.elapsed();
    let (got, _) = read_to_end(&mut stuck, Duration::from_secs(5)).await;
    let full = expected_wav(&upload).len();
    eprintln!(
        "never reads: logged after {logged:?}, descriptors back after {freed:?}; \
         the client got {} of the {full} bytes",
        got.len()
    );
    assert!(
        logged >= Duration::from_millis(1900),
        "cut off after {logged:?}, before the 2 s write timeout"
    );
    assert!(
        logged < Duration::from_secs(8),
        "cut off only after {logged:?}"
    );
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &got[..got.len().min(200)]
    );
    assert!(got.len() < full, "the whole answer went through");
    server.still_serves(&reqwest::Client::new(), 3).await;
    server.kill9();
}

#[tokio::test]
async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir, &[("OPUSGATE_SERVER__WRITE_TIMEOUT_SECONDS", "2")]);
    // 20 s at 48 kHz stereo: a 3.8 MB WAV.
    let upload = clip(20.0, 4);
    let expected = expected_wav(&upload);
    let mut stream = request_large(&server, &upload).await;
    // 16 KiB every 500 ms for 5 s (2.5 times the timeout)...
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    while started.elapsed() < Duration::from_secs(5) {
        let n = stream.read(&mut buf).await.expect("a slow read");
        assert!(
            n > 0,
            "closed after {:?} of slow reading",
            started.elapsed()
        );
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let slow = got.len();
    // ...then the rest at full speed.
    let (rest, eof) = read_to_end(&mut stream, Duration::from_secs(20)).await;
    got.extend_from_slice(&rest);
    eprintln!(
        "slow reader: {slow} bytes in {:?}, then the rest: {} bytes in all",
        Duration::from_secs(5),
        got.len()
    );
    assert!(eof, "the connection was reset");
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", &got[..end]);
    assert!(got[end + 4..] == expected[..], "the WAV differs");
    assert_eq!(server.log_count(STALL_LOG), 0, "{}", server.log_text());
    server.kill9();
}

/// Sends SIGTERM to a server with a client attached that does not read
/// its answer, and returns how long the process took to exit.
async fn shutdown_with_a_stuck_reader(server: ServerProcess) -> Duration {
    let upload = clip(30.0, 5);
    let _stuck = request_large(&server, &upload).await;
    // Let the answer start and the socket fill up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .expect("terminate");
    assert!(exit.success(), "opusgate exited with {exit}");
    started.elapsed()
}

#[tokio::test]
async fn sigterm_with_a_stuck_reader_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The write timeout stays at its default, 60 s.
    let server = start(&dir, &[("OPUSGATE_SERVER__SHUTDOWN_GRACE_SECONDS", "2")]);
    let took = shutdown_with_a_stuck_reader(server).await;
    eprintln!("shutdown (grace 2 s, write timeout 60 s) took {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn sigterm_with_a_stuck_reader_exits_within_the_write_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The grace period stays at its default, 30 s.
    let server = start(&dir, &[("OPUSGATE_SERVER__WRITE_TIMEOUT_SECONDS", "2")]);
    let took = shutdown_with_a_stuck_reader(server).await;
    eprintln!("shutdown (grace 30 s, write timeout 2 s) took {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
