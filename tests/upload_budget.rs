//! The memory budget of request bodies (`limits.max_inflight_upload_bytes`):
//! concurrent slow uploads never hold more than the budget, refused ones are
//! 503 `overloaded` with `Retry-After`, accepted ones convert byte-exact; one
//! upload larger than the budget is 413; a chunked body is reserved as it
//! grows; a multipart upload is held once, not copied.

mod support;

use std::time::{Duration, Instant};

use opusgate::codec::{encode_sample, SampleOptions};
use serde_json::Value;
use support::clips::fresh_wav;
use support::http::Api as _;
use support::server::{config_in, data_dir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const BUDGET: u64 = 8 * MIB;

/// A valid Ogg Opus upload of about 2 MiB (48 kHz stereo at 510 kbit/s CBR).
fn big_clip(seed: u64) -> Vec<u8> {
    let upload = encode_sample(&SampleOptions {
        seconds: 33.0,
        rate: 48_000,
        channels: 2,
        bitrate: 510_000,
        vbr: false,
        dtx: false,
        seed,
        ..SampleOptions::default()
    })
    .expect("sample clip");
    assert!(upload.len() as u64 >= 2 * MIB, "{} bytes", upload.len());
    upload
}

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.max_inflight_upload_bytes = BUDGET;
    config.limits.max_upload_bytes = 16 * MIB;
    let server = TestServer::start(config).await;
    (dir, server)
}

fn memory(stats: &Value) -> (u64, u64, u64, u64) {
    let m = &stats["memory"];
    let n = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("memory.{k} in {stats}"))
    };
    (
        n("upload_budget_bytes"),
        n("inflight_upload_bytes"),
        n("inflight_upload_bytes_peak"),
        n("rejected_over_budget"),
    )
}

/// An answer read off a raw socket: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        v["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The answer in `buf` once it is whole (it has a Content-Length).
fn parse(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")?
        .1
        .parse()
        .ok()?;
    let body = buf.get(end + 4..end + 4 + length)?.to_vec();
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// POSTs to `path` over a raw socket: the head (with `content_length`
/// declared, or chunked when `None`), then `body` in `chunk`-byte pieces
/// with `pause` between them, while the answer is read (an early refusal
/// is read while the body is still being sent).
async fn slow_post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    content_length: Option<usize>,
    body: Vec<u8>,
    chunk: usize,
    pause: Duration,
) -> Answer {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = match content_length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let chunked = content_length.is_none();
    let sending = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for piece in body.chunks(chunk) {
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                writer.write_all(piece).await?;
                writer.write_all(b"\r\n").await?;
            } else {
                writer.write_all(piece).await?;
            }
            tokio::time::sleep(pause).await;
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(writer)
    });
    let mut buf = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    let answer = loop {
        if let Some(answer) = parse(&buf) {
            break answer;
        }
        match reader.read(&mut piece).await {
            Ok(0) | Err(_) => {
                break parse(&buf).unwrap_or_else(|| {
                    panic!("no whole answer: {:?}", String::from_utf8_lossy(&buf))
                })
            }
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    };
    sending.abort();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_stay_within_the_budget() {
    let started = Instant::now();
    let (_dir, server) = server().await;
    let c = reqwest::Client::new();
    // Four distinct clips, five requests each, all in flight together.
    let clips: Vec<Vec<u8>> = futures::future::join_all(
        (0..4u64).map(|seed| tokio::task::spawn_blocking(move || big_clip(100 + seed))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let expected: Vec<Vec<u8>> = clips.iter().map(|u| fresh_wav(u)).collect();
    let size = clips[0].len();
    let server = std::sync::Arc::new(server);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let server = server.clone();
            let upload = clips[i % 4].clone();
            tokio::spawn(async move {
                let n = upload.len();
                slow_post(
                    &server,
                    "/api/v1/convert",
                    "audio/ogg",
                    Some(n),
                    upload,
                    128 * 1024,
                    Duration::from_millis(60),
                )
                .await
            })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap();
        match answer.status {
            200 => {
                assert_eq!(answer.body, expected[i % 4], "upload {i} is not byte-exact");
                accepted += 1;
            }
            503 => {
                assert_eq!(answer.code(), "overloaded");
                assert_eq!(answer.header("retry-after"), Some("1"));
                refused += 1;
            }
            other => panic!(
                "upload {i}: {other} {}",
                String::from_utf8_lossy(&answer.body)
            ),
        }
    }
    let stats = server
        .wait_stats(&c, Duration::from_secs(5), "the budget empty", |s| {
            memory(s).1 == 0
        })
        .await;
    let (budget, inflight, peak, rejected) = memory(&stats);
    eprintln!(
        "{size}-byte uploads: {accepted} accepted, {refused} refused; peak {peak} of {budget}; {:?}",
        started.elapsed()
    );
    assert_eq!((budget, inflight), (BUDGET, 0));
    assert!(peak <= BUDGET, "peak {peak} over the budget");
    assert!(
        peak >= 2 * size as u64,
        "peak {peak}: uploads were not in flight together"
    );
    assert!(
        accepted >= 1 && refused >= 1,
        "{accepted} accepted, {refused} refused"
    );
    assert_eq!(rejected, refused as u64);
    let metrics = server.metrics(&c).await;
    assert!(metrics.contains("opusgate_upload_inflight_bytes"));
    assert!(metrics.contains("opusgate_upload_rejected_total"));
    server.still_serves(&c, 7).await;
}

#[tokio::test]
async fn an_upload_larger_than_the_budget_is_413() {
    let (_dir, server) = server().await;
    let c = reqwest::Client::new();
    // Under max_upload_bytes (16 MiB), over the budget (8 MiB).
    let declared = (BUDGET + 1) as usize;
    let answer = slow_post(
        &server,
        "/api/v1/convert",
        "audio/ogg",
        Some(declared),
        vec![0u8; 64 * 1024],
        64 * 1024,
        Duration::ZERO,
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.code(), "payload_too_large");
    let body = String::from_utf8_lossy(&answer.body);
    assert!(body.contains("limits.max_inflight_upload_bytes"), "{body}");
    let (_, inflight, peak, rejected) = memory(&server.stats(&c).await);
    assert_eq!((inflight, peak, rejected), (0, 0, 1));
    server.still_serves(&c, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_is_reserved_as_it_grows() {
    let (_dir, server) = server().await;
    let c = reqwest::Client::new();
    let upload = tokio::task::spawn_blocking(|| big_clip(200)).await.unwrap();
    let expected = fresh_wav(&upload);
    let size = upload.len() as u64;
    let server = std::sync::Arc::new(server);
    let sending = {
        let server = server.clone();
        let upload = upload.clone();
        tokio::spawn(async move {
            slow_post(
                &server,
                "/api/v1/convert",
                "audio/ogg",
                None,
                upload,
                64 * 1024,
                Duration::from_millis(20),
            )
            .await
        })
    };
    // Part of the body is reserved while it arrives, not all of it at once.
    let partial = server
        .wait_stats(&c, Duration::from_secs(10), "a partial reservation", |s| {
            let inflight = memory(s).1;
            inflight > 0 && inflight < size
        })
        .await;
    let answer = sending.await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, expected);
    let (_, inflight, peak, _) = memory(&server.stats(&c).await);
    eprintln!(
        "chunked {size} bytes: {} reserved part-way, peak {peak}",
        memory(&partial).1
    );
    assert_eq!(inflight, 0);
    // The buffer's capacity is reserved: at most double the body.
    assert!(
        peak >= size && peak <= 2 * size,
        "peak {peak} for {size} bytes"
    );
}

#[tokio::test]
async fn a_multipart_upload_is_held_once() {
    let (_dir, server) = server().await;
    let c = reqwest::Client::new();
    let upload = tokio::task::spawn_blocking(|| big_clip(300)).await.unwrap();
    let expected = fresh_wav(&upload);
    let form = reqwest::multipart::Form::new().part(
        "audio_file",
        reqwest::multipart::Part::bytes(upload.clone())
            .file_name("big.ogg")
            .mime_str("audio/ogg")
            .unwrap(),
    );
    let r = c
        .post(server.url("/api/v1/convert"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), expected);
    let (_, inflight, peak, _) = memory(&server.stats(&c).await);
    let size = upload.len() as u64;
    eprintln!("multipart of a {size}-byte file: peak {peak}");
    assert_eq!(inflight, 0);
    // The form's framing is a few hundred bytes.
    assert!(
        peak >= size && peak <= size + 4096,
        "peak {peak} for {size} bytes"
    );
}
