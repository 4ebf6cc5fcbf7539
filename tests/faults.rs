//! Faults the server must survive without serving wrong audio, against the
//! real binary:
//! - bytes flipped inside stored records (and a recency entry) while the
//!   server is stopped: every damaged entry is detected on read or at open,
//!   counted, and reconverted; no damaged byte is ever served;
//! - a disk tier on a 4 MiB tmpfs that fills up: its capacity at open is
//!   lowered to what the filesystem can hold, so it fills by evictions;
//!   conversions keep succeeding, any failed disk write is counted and
//!   logged once per interval rather than per request, nothing crashes
//!   (the full filesystem at start-up is `tests/disk_space.rs`);
//! - a client uploading at 1 byte per second is cut off with 408 by the read
//!   timeout;
//! - 200 clients that disconnect right after sending leave no conversion
//!   running or queued, no connection open and no memory behind.

mod support;

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::process::{store_dir, ServerProcess};
use support::tmpfs::Tmpfs;

fn parse_key(etag_key: &str) -> opusgate_cache::Key {
    opusgate_cache::Key::from_hex(etag_key).expect("an ETag is a key")
}

/// The ways a stored record is damaged, each applied to one entry.
fn damage(kind: usize, record: &[u8]) -> Vec<u8> {
    let mut r = record.to_vec();
    let len = r.len();
    match kind {
        0 => r[len / 2] ^= 0x01,         // one bit in the middle of the WAV
        1 => r[len - 1] ^= 0x80,         // the last sample byte
        2 => r[41 + 10] ^= 0xFF,         // inside the WAV header
        3 => r[20] ^= 0x01,              // the stored SHA-256
        4 => r[0] ^= 0x01,               // the format version
        5 => r[8] ^= 0x01,               // the length field
        6 => r.truncate(len - 100),      // a torn tail
        7 => r.truncate(30),             // shorter than a header
        _ => r.extend_from_slice(b"xx"), // trailing bytes
    }
    r
}

/// A first run of the binary on `store`: converts every upload (200 each),
/// stops it (exit 0) and gives their keys, in order.
async fn convert_all_then_stop(
    store: &std::path::Path,
    client: &reqwest::Client,
    uploads: &[Vec<u8>],
) -> Vec<String> {
    let server = ServerProcess::start(store, &[]);
    let mut keys = Vec::new();
    for upload in uploads {
        let r = server.post_convert(client, "", upload.clone()).await;
        assert_eq!(r.status(), 200);
        keys.push(header(&r, "etag").trim_matches('"').to_owned());
    }
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "first run exited with {exit}");
    keys
}

#[tokio::test]
async fn flipped_bytes_in_stored_records_are_detected_counted_and_reconverted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let client = reqwest::Client::new();
    let uploads: Vec<Vec<u8>> = (0..14).map(|i| clip(1.5, 300 + i)).collect();
    let expected: Vec<Vec<u8>> = uploads.iter().map(|u| fresh_wav(u)).collect();

    let keys = convert_all_then_stop(&store, &client, &uploads).await;

    // Damage nine records in nine ways and one recency entry, server stopped.
    let damaged_values = 9;
    let disk_path = store.join("audio");
    for (i, key) in keys.iter().enumerate().take(damaged_values) {
        let path = opusgate_cache::value_path(&disk_path, &parse_key(key));
        let record = std::fs::read(&path).expect("every conversion was stored");
        std::fs::write(&path, damage(i, &record)).expect("write the damaged record");
    }
    let meta_key = parse_key(&keys[damaged_values]);
    let present = opusgate_cache::test_support::damage_index_entry(&disk_path, &meta_key)
        .expect("damage a recency entry");
    assert!(present, "entry present");
    let damaged = damaged_values + 1;

    let server = ServerProcess::start(&store, &[]);
    // Found at open: the damaged recency entry (dropped with its record)
    // and the three records whose length changed (kinds 6, 7 and 8); the
    // other six look whole until read.
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["corrupt_records"], 4, "{stats}");
    // By key: every damaged record reads as absent, the others exactly.
    for (i, key) in keys.iter().enumerate() {
        let r = client
            .get(server.url(&format!("/api/v1/audio/{key}")))
            .send()
            .await
            .expect("audio by key");
        if i < damaged {
            assert_eq!(r.status(), 404, "damaged record {i} was served by key");
        } else {
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.bytes().await.expect("body").as_ref(),
                expected[i].as_slice()
            );
        }
    }
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["corrupt_records"], damaged as u64, "{stats}");
    assert_eq!(server.log_count("corrupt disk record"), damaged_values);
    // Converting again: the damaged ones are reconverted, the rest hit.
    for (i, upload) in uploads.iter().enumerate() {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!(status, 200);
        assert_eq!(
            body, expected[i],
            "clip {i} ({cache}) differs from a fresh conversion"
        );
        if i < damaged {
            assert_eq!(cache, "miss", "damaged clip {i}");
        } else {
            assert!(cache.starts_with("hit-"), "intact clip {i}: {cache}");
        }
    }
    let stats = server.stats(&client).await;
    assert_eq!(stats["conversions"]["completed"], damaged as u64, "{stats}");
    assert_eq!(
        stats["cache"]["corrupt_records"], damaged as u64,
        "counted once each"
    );
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success());

    // The reconverted values were stored again: all hit disk now.
    let server = ServerProcess::start(&store, &[]);
    for (i, upload) in uploads.iter().enumerate() {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!((status, cache.as_str()), (200, "hit-disk"), "clip {i}");
        assert_eq!(body, expected[i]);
    }
    assert_eq!(server.stats(&client).await["cache"]["corrupt_records"], 0);
    server.kill9();
}

#[tokio::test]
async fn a_full_disk_costs_the_disk_tier_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let mount = Tmpfs::mount(&store, "4m");
    let client = reqwest::Client::new();
    // About 9 MB of WAV for a 4 MiB filesystem.
    let uploads: Vec<Vec<u8>> = (0..60).map(|i| clip(2.5, 900 + i)).collect();
    let expected: Vec<Vec<u8>> = uploads.iter().map(|u| fresh_wav(u)).collect();

    let mut server = ServerProcess::start(
        &store,
        &[
            ("OPUSGATE_CACHE__MEMORY_BYTES", (64u64 << 20).to_string()),
            ("OPUSGATE_CACHE__DISK_BYTES", (1u64 << 30).to_string()),
            (
                "OPUSGATE_UPSTREAM__CACHE_DISK_BYTES",
                (1u64 << 20).to_string(),
            ),
        ],
    );
    let started = Instant::now();
    for (i, upload) in uploads.iter().enumerate() {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!(status, 200, "clip {i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(cache, "miss");
        assert_eq!(body, expected[i], "clip {i}");
    }
    // Wait for the writer to get through its queue: every value written
    // or its write failed.
    let stats = server
        .wait_stats(&client, Duration::from_secs(60), "the disk writes", |s| {
            let n = |v: &Value| v.as_u64().unwrap_or(0);
            n(&s["cache"]["disk"]["entries"])
                + n(&s["cache"]["evictions"]["disk"])
                + n(&s["cache"]["disk_write_failures"])
                >= uploads.len() as u64
        })
        .await;
    // The disk tier's effective capacity is what the 4 MiB can hold less a
    // headroom: it evicts at that capacity, and whatever does not fit after
    // all (sled's own files) fails and is counted.
    let failures = stats["cache"]["disk_write_failures"].as_u64().unwrap_or(0);
    let evictions = stats["cache"]["evictions"]["disk"].as_u64().unwrap_or(0);
    assert!(
        failures + evictions > 0,
        "the 4 MiB disk never filled: {stats}"
    );
    assert!(
        stats["cache"]["disk"]["capacity_bytes"]
            .as_u64()
            .unwrap_or(0)
            < 4 << 20,
        "{stats}"
    );
    // Everything still answers, from memory, exactly.
    for (i, upload) in uploads.iter().enumerate() {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!((status, cache.as_str()), (200, "hit-memory"), "clip {i}");
        assert_eq!(body, expected[i], "clip {i}");
    }
    // New conversions still work on a full disk.
    let late = clip(1.0, 999);
    let (status, _, body) = server.convert(&client, &late).await;
    assert_eq!(status, 200);
    assert_eq!(body, fresh_wav(&late));
    let stats = server.stats(&client).await;
    let failures = stats["cache"]["disk_write_failures"].as_u64().unwrap_or(0);
    // One warning per 10 s interval, carrying the count, not one per failure.
    let warnings = server.log_count("disk write failed");
    let intervals = started.elapsed().as_secs() / 10 + 1;
    eprintln!(
        "{failures} disk write failures, {warnings} warnings; store: {}",
        stats["cache"]
    );
    assert!(
        (warnings >= 1 || failures == 0) && warnings as u64 <= intervals,
        "{warnings} warnings for {failures} failures in {intervals} intervals"
    );
    assert!(server.alive(), "the server died on a full disk");
    assert_eq!(server.health(&client).await, 200);
    assert_eq!(server.log_count("panicked"), 0, "{}", server.log_text());
    // Shutdown neither hangs nor fails: every answer was sent, and a final
    // flush that finds no room is logged, not turned into an exit status.
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit on a full disk: {exit}");
    drop(mount);
}

#[tokio::test]
async fn a_client_sending_1_byte_per_second_gets_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        &store_dir(dir.path()),
        &[("OPUSGATE_SERVER__REQUEST_READ_TIMEOUT_SECONDS", "2".into())],
    );
    let addr = server.addr();
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .write_all(
                format!(
                    "POST /api/v1/convert HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("headers");
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("read timeout");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // One byte a second, reading between bytes, for at most 20 s.
        for i in 0..20 {
            if stream.write_all(b"O").is_err() && i > 0 {
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("slow client");
    let took = started.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "answer after {took:?}: {answer:?}"
    );
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "cut off after {took:?} with a 2 s read timeout"
    );
    // The server goes on serving.
    let client = reqwest::Client::new();
    let upload = clip(1.0, 5);
    let (status, _, body) = server.convert(&client, &upload).await;
    assert_eq!(status, 200);
    assert_eq!(body, fresh_wav(&upload));
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_vanishing_clients_leak_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&store_dir(dir.path()), &[]);
    let client = reqwest::Client::new();
    let uploads: Vec<Vec<u8>> = (0..200).map(|i| clip(1.0, 2000 + i)).collect();
    // Warm up, then measure.
    let (status, _, _) = server.convert(&client, &clip(1.0, 1)).await;
    assert_eq!(status, 200);
    let (rss_before, fds_before) = (server.rss_kb(), server.open_fds());

    let addr = server.addr();
    let senders: Vec<_> = uploads
        .iter()
        .cloned()
        .map(|upload| {
            let addr = addr.clone();
            tokio::task::spawn_blocking(move || {
                let mut stream = TcpStream::connect(&addr).expect("connect");
                let head = format!(
                    "POST /api/v1/convert HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
                    upload.len()
                );
                stream.write_all(head.as_bytes()).expect("headers");
                stream.write_all(&upload).expect("body");
                // Gone without reading the answer.
                drop(stream);
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    // The server has closed all 200 connections (which proves it has seen
    // them), and whatever conversion was started has finished.
    server
        .wait_open_fds(fds_before + 5, Duration::from_secs(120))
        .await;
    let stats = server
        .wait_stats(
            &client,
            Duration::from_secs(120),
            "the pipeline to drain",
            |s| {
                s["conversions"]["active"] == 0
                    && s["conversions"]["queued"] == 0
                    && s["cache"]["in_flight"] == 0
            },
        )
        .await;
    let conversions = &stats["conversions"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let started = n(&stats["cache"]["computations_started"]);
    assert_eq!(
        n(&conversions["completed"]) + n(&conversions["failed"]),
        started,
        "every conversion started has ended: {stats}"
    );
    assert_eq!(n(&conversions["failed"]), 0, "{stats}");
    // The conversions that ran were stored, with the right bytes.
    let mut stored = 0;
    for upload in &uploads {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!(status, 200);
        assert_eq!(body, fresh_wav(upload));
        stored += usize::from(cache.starts_with("hit-"));
    }
    eprintln!(
        "{} conversions ran for 200 vanished clients, {stored} of 200 were stored",
        started - 1
    );
    // Connections are closed; memory is the stored WAVs and little more.
    let fds_after = server.open_fds();
    assert!(
        fds_after <= fds_before + 5,
        "open fds {fds_before} -> {fds_after}"
    );
    let rss_after = server.rss_kb();
    let stored_kb = n(&server.stats(&client).await["cache"]["memory"]["bytes"]) / 1024;
    eprintln!("RSS {rss_before} -> {rss_after} KiB, {stored_kb} KiB of WAV in memory");
    assert!(
        rss_after <= rss_before + stored_kb + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB ({stored_kb} KiB stored)"
    );
    server.kill9();
}

/// A whole record file copied, with the server stopped, onto another clip's
/// path: its checksum covers the key it was written for, so the copy is
/// caught on read (404 by key), deleted and counted, and the clip it landed
/// on is converted again with its own bytes; the original still hits.
#[tokio::test]
async fn a_record_copied_onto_another_clips_path_is_not_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let client = reqwest::Client::new();
    // Clips of one duration, so that the copy's length matches B's index
    // entry and the open cannot tell from lengths alone.
    let uploads = [clip(1.5, 700), clip(1.5, 701)];
    let expected: Vec<Vec<u8>> = uploads.iter().map(|u| fresh_wav(u)).collect();
    assert_eq!(expected[0].len(), expected[1].len());
    assert_ne!(expected[0], expected[1]);

    let keys = convert_all_then_stop(&store, &client, &uploads).await;

    let disk_path = store.join("audio");
    let [a_path, b_path] =
        [&keys[0], &keys[1]].map(|key| opusgate_cache::value_path(&disk_path, &parse_key(key)));
    std::fs::copy(&a_path, &b_path).expect("copy A's record onto B's path");

    let server = ServerProcess::start(&store, &[]);
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["corrupt_records"], 0, "{stats}");
    let r = client
        .get(server.url(&format!("/api/v1/audio/{}", keys[1])))
        .send()
        .await
        .expect("audio by key");
    assert_eq!(r.status(), 404, "A's record was served as B");
    assert!(!b_path.exists(), "the copy is deleted");
    let (status, cache, body) = server.convert(&client, &uploads[1]).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body, expected[1]);
    let (status, cache, body) = server.convert(&client, &uploads[0]).await;
    assert_eq!((status, cache.as_str()), (200, "hit-disk"));
    assert_eq!(body, expected[0]);
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["corrupt_records"], 1, "{stats}");
    assert_eq!(server.log_count("corrupt disk record"), 1);
    server.kill9();
}
