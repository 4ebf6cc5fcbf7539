//! The memory budget of answers (`limits.max_inflight_answer_bytes`),
//! through the real server with a 4 MiB budget and a memory tier too small
//! for the WAVs (so that they live on disk):
//! - slow readers of distinct large WAVs hold a couple of 64 KiB chunks
//!   each, not their WAVs: the bytes in flight stay under the budget (and
//!   under readers × 2 chunks), every answer is byte-exact, and the count
//!   goes back to 0;
//! - byte ranges, HEAD and `If-None-Match` work on the streamed path;
//! - a record damaged on disk is never served: 404 by key, a reconversion
//!   by upload, counted in `corrupt_records`;
//! - identical answers share one buffer, counted once;
//! - an answer that fits neither the budget nor the disk tier is 503
//!   `overloaded`.

mod support;

use std::time::Duration;

use opusgate::config::Config;
use opusgate_cache::Key;
use serde_json::Value;
use support::clips::{clip, options};
use support::http::{header, Api as _};
use support::server::{config_in, data_dir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The answer budget of most tests.
const BUDGET: u64 = 4 * MIB;
/// A streamed answer's chunk, and how many of one answer's are alive at once.
const CHUNK: u64 = 64 * KIB;
const WINDOW: u64 = 2;
/// 48 kHz stereo: 192 000 bytes of WAV a second of audio.
const QUERY: &str = "?rate=48000&channels=2";

/// Test defaults with the answer budget `budget` and a 1 MiB memory tier,
/// which none of the WAVs here fits: they are kept on disk only.
fn config(dir: &tempfile::TempDir, budget: u64) -> Config {
    let mut config = config_in(dir.path());
    config.limits.max_inflight_answer_bytes = budget;
    config.cache.memory_bytes = MIB;
    config
}

/// `(answer_budget_bytes, inflight_answer_bytes, inflight_answer_bytes_peak,
/// answers_streamed, answers_rejected_over_budget)`.
fn answers(stats: &Value) -> (u64, u64, u64, u64, u64) {
    let m = &stats["memory"];
    let n = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("memory.{k} in {stats}"))
    };
    (
        n("answer_budget_bytes"),
        n("inflight_answer_bytes"),
        n("inflight_answer_bytes_peak"),
        n("answers_streamed"),
        n("answers_rejected_over_budget"),
    )
}

/// A clip stored by the server: its upload, the WAV a fresh local
/// conversion gives, and its key.
struct Stored {
    upload: Vec<u8>,
    wav: Vec<u8>,
    key: String,
}

/// The stats once no answer bytes are in flight (at most 10 s).
async fn answers_settled(server: &TestServer, c: &reqwest::Client) -> Value {
    server
        .wait_stats(
            c,
            Duration::from_secs(10),
            "no answer bytes in flight",
            |s| answers(s).1 == 0,
        )
        .await
}

/// Makes a `seconds` clip, converts it locally, and POSTs it at [`QUERY`]:
/// a 200 with exactly the local WAV.
async fn store_clip(server: &TestServer, c: &reqwest::Client, seconds: f64, seed: u64) -> Stored {
    let (upload, wav) = tokio::task::spawn_blocking(move || {
        let upload = clip(seconds, seed);
        let wav = opusgate::codec::convert(&upload, &options(48_000, 2))
            .expect("a fresh conversion")
            .wav;
        (upload, wav)
    })
    .await
    .expect("clip");
    let r = server.post_convert(c, QUERY, upload.clone()).await;
    assert_eq!(r.status(), 200);
    let key = header(&r, "etag").trim_matches('"').to_owned();
    let body = r.bytes().await.expect("body");
    assert!(
        body[..] == wav[..],
        "the converted WAV of clip {seed} differs"
    );
    Stored { upload, wav, key }
}

/// Sends `GET path` on a raw socket with a 4 KiB receive buffer (so that
/// the server's writes stall soon when it is not read) and `Connection:
/// close`.
async fn raw_get(server: &TestServer, path: &str) -> TcpStream {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket
        .connect(addr.parse().expect("an address"))
        .await
        .expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
}

/// Reads until at least `n` bytes came (or the connection ended).
async fn read_at_least(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while got.len() < n {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    got
}

/// Reads the rest of an answer whose first bytes are `got`, to the
/// connection's clean end (at most 60 s): its status, headers and body.
async fn finish(stream: &mut TcpStream, mut got: Vec<u8>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut got)).await;
    read.expect("the answer took over 60 s")
        .expect("the connection was reset");
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, got[end + 4..].to_vec())
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_large_answers_hold_chunks_not_wavs() {
    let dir = data_dir();
    let server = TestServer::start(config(&dir, BUDGET)).await;
    let c = reqwest::Client::new();
    // Four distinct 40 s clips: 7.7 MB WAVs, each larger than the budget.
    let mut stored = Vec::new();
    for seed in 0..4 {
        stored.push(store_clip(&server, &c, 40.0, 10 + seed).await);
    }
    let after_posts = answers(&server.stats(&c).await);
    // None fits the budget whole: each POST answer was streamed from disk.
    assert_eq!(after_posts.3, 4, "{after_posts:?}");
    // Four readers take their answer's head and a little, then stall.
    let mut readers = Vec::new();
    for s in &stored {
        let mut stream = raw_get(&server, &format!("/api/v1/audio/{}", s.key)).await;
        let first = read_at_least(&mut stream, 64 * 1024).await;
        readers.push((stream, first));
    }
    // Let the server fill what the sockets take and stall on each answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = answers(&server.stats(&c).await);
    eprintln!("4 stalled readers of 7.7 MB WAVs: {during:?}");
    let (budget, inflight, peak, streamed, rejected) = during;
    assert_eq!(budget, BUDGET);
    assert!(inflight > 0, "no answer bytes in flight: {during:?}");
    assert!(
        inflight <= 4 * WINDOW * CHUNK,
        "{inflight} bytes in flight for 4 readers: more than {WINDOW} chunks each"
    );
    assert!(peak <= BUDGET, "peak {peak} over the budget {BUDGET}");
    assert_eq!((streamed, rejected), (8, 0));
    // Every answer, read to its end, is the WAV byte for byte.
    for ((mut stream, first), s) in readers.into_iter().zip(&stored) {
        let (status, headers, body) = finish(&mut stream, first).await;
        assert_eq!(status, 200);
        assert_eq!(
            find(&headers, "content-length"),
            Some(s.wav.len().to_string().as_str())
        );
        assert!(body == s.wav, "a streamed WAV differs from the conversion");
    }
    let done = answers_settled(&server, &c).await;
    let (_, _, peak, _, _) = answers(&done);
    assert!(peak <= BUDGET, "peak {peak} over the budget {BUDGET}");
    let metrics = server.metrics(&c).await;
    for family in [
        "opusgate_answer_inflight_bytes",
        "opusgate_answer_streamed_total",
        "opusgate_answer_rejected_total",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }
    server.still_serves(&c, 3).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_head_and_etags_work_on_the_streamed_path() {
    let dir = data_dir();
    let server = TestServer::start(config(&dir, BUDGET)).await;
    let c = reqwest::Client::new();
    // 30 s: a 5.76 MB WAV, larger than the budget.
    let s = store_clip(&server, &c, 30.0, 20).await;
    let total = s.wav.len();
    let url = server.url(&format!("/api/v1/audio/{}", s.key));
    let duration = opusgate::codec::wav::duration_ms(&s.wav)
        .expect("a WAV header")
        .to_string();
    let get = |range: Option<String>| {
        let mut request = c.get(&url);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };
    for (range, part) in [
        ("bytes=1000-200999".to_owned(), 1000..201_000),
        (format!("bytes={}-", total - 70_000), total - 70_000..total),
        ("bytes=-500".to_owned(), total - 500..total),
        ("bytes=0-0".to_owned(), 0..1),
    ] {
        let r = get(Some(range.clone())).await.expect("a range request");
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {}-{}/{total}", part.start, part.end - 1)
        );
        assert_eq!(header(&r, "x-audio-duration-ms"), duration);
        let body = r.bytes().await.expect("body");
        assert!(body[..] == s.wav[part.clone()], "{range}: wrong bytes");
    }
    let r = get(Some(format!("bytes={total}-"))).await.expect("416");
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), format!("bytes */{total}"));
    let r = c.head(&url).send().await.expect("HEAD");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), total.to_string());
    assert_eq!(header(&r, "x-audio-duration-ms"), duration);
    let r = c
        .get(&url)
        .header("if-none-match", format!("\"{}\"", s.key))
        .send()
        .await
        .expect("a conditional GET");
    assert_eq!(r.status(), 304);
    let r = get(None).await.expect("the whole WAV");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-audio-duration-ms"), duration);
    assert!(r.bytes().await.expect("body")[..] == s.wav[..]);
    let stats = answers_settled(&server, &c).await;
    let (_, _, peak, streamed, _) = answers(&stats);
    eprintln!("ranges on a streamed {total}-byte WAV: peak {peak}, {streamed} streamed");
    assert!(peak <= BUDGET);
    // The POST, the 4 ranges, HEAD and the whole GET; the 416 and the 304
    // are answered before the record is opened.
    assert_eq!(streamed, 7);
    server.stop().await;
}

/// Flips one byte in the middle of the value of `key`'s record file.
fn damage(config: &Config, key: &str) {
    let key = Key::from_hex(key).expect("a key");
    let path = opusgate_cache::value_path(&config.cache.audio_dir(), &key);
    let mut record = std::fs::read(&path).expect("the record file");
    let middle = record.len() / 2;
    record[middle] ^= 0x10;
    std::fs::write(&path, &record).expect("write the record back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_never_served() {
    let dir = data_dir();
    let server = TestServer::start(config(&dir, BUDGET)).await;
    let c = reqwest::Client::new();
    let s = store_clip(&server, &c, 25.0, 30).await;
    let corrupt = |stats: &Value| stats["cache"]["corrupt_records"].as_u64();
    // Damaged while on disk only: by key, it is gone (404), counted once.
    damage(&server.config, &s.key);
    let url = server.url(&format!("/api/v1/audio/{}", s.key));
    let r = c.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), 404);
    let r = c
        .get(&url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("a range");
    assert_eq!(r.status(), 404);
    assert_eq!(corrupt(&server.stats(&c).await), Some(1));
    // By upload, it is converted again, exactly.
    let r = server.post_convert(&c, QUERY, s.upload.clone()).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-cache")), (200, "miss"));
    assert!(r.bytes().await.expect("body")[..] == s.wav[..]);
    // Damaged again (the new record): the same upload finds it damaged on
    // its way to being streamed, and converts again.
    damage(&server.config, &s.key);
    let r = server.post_convert(&c, QUERY, s.upload.clone()).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-cache")), (200, "miss"));
    assert!(r.bytes().await.expect("body")[..] == s.wav[..]);
    let stats = server.stats(&c).await;
    assert_eq!(corrupt(&stats), Some(2), "{stats}");
    // The good record it wrote answers by key.
    let r = c.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body")[..] == s.wav[..]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_answers_share_one_buffer() {
    let dir = data_dir();
    // A 64 MiB budget and memory tier: an 11.5 MB WAV is held whole.
    let mut config = config(&dir, 64 * MIB);
    config.cache.memory_bytes = 64 * MIB;
    let server = TestServer::start(config).await;
    let c = reqwest::Client::new();
    let s = store_clip(&server, &c, 60.0, 40).await;
    let len = s.wav.len() as u64;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut stream = raw_get(&server, &format!("/api/v1/audio/{}", s.key)).await;
        let first = read_at_least(&mut stream, 64 * 1024).await;
        readers.push((stream, first));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = answers(&server.stats(&c).await);
    eprintln!("3 stalled readers of one {len}-byte WAV: {during:?}");
    // One buffer for the three, counted once; nothing streamed.
    assert_eq!((during.1, during.3), (len, 0), "{during:?}");
    for (mut stream, first) in readers {
        let (status, _, body) = finish(&mut stream, first).await;
        assert_eq!(status, 200);
        assert!(body == s.wav);
    }
    let done = answers_settled(&server, &c).await;
    assert_eq!(answers(&done).2, len, "the peak is one WAV");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_no_room_and_no_disk_record_is_503() {
    let dir = data_dir();
    // The memory tier holds the WAV, the disk tier is too small for it.
    let mut config = config(&dir, BUDGET);
    config.cache.memory_bytes = 64 * MIB;
    config.cache.disk_bytes = MIB;
    let server = TestServer::start(config).await;
    let c = reqwest::Client::new();
    // 25 s: a 4.8 MB WAV, over the budget.
    let upload = clip(25.0, 50);
    for path in ["convert", "convert again"] {
        let r = server.post_convert(&c, QUERY, upload.clone()).await;
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(header(&r, "retry-after"), "1");
        let v: Value = r.json().await.expect("JSON");
        assert_eq!(v["code"], "overloaded");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("limits.max_inflight_answer_bytes"),
            "{message}"
        );
    }
    let stats = server.stats(&c).await;
    let (_, inflight, peak, streamed, rejected) = answers(&stats);
    assert_eq!(
        (inflight, peak, streamed, rejected),
        (0, 0, 0, 2),
        "{stats}"
    );
    // The conversion ran once and its WAV is kept in memory.
    assert_eq!(stats["cache"]["misses"].as_u64(), Some(1), "{stats}");
    server.still_serves(&c, 5).await;
    server.stop().await;
}
