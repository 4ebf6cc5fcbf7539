//! Ogg Opus whose granule positions disagree with their packets, as ffmpeg
//! writes them when it turns a browser's MediaRecorder WebM into Ogg (the
//! WebM's millisecond timestamps jitter, and the Ogg muxer takes each page's
//! granule from its last packet's timestamp): converted through the real
//! server exactly as ffmpeg decodes them (length at 48 and 16 kHz, samples
//! within 1 LSB of ffmpeg's libopus decode), answered as a cache miss, and
//! counted once per conversion in `conversions.streams_repaired` of
//! `/api/v1/stats` and `opusgate_streams_repaired_total` of `/metrics`, with
//! a warning naming the key in the log; a cache hit and an intact file do
//! not count.
//!
//! The fixtures are made here by ffmpeg: a WebM whose timestamps jitter by a
//! millisecond (the `setts` bitstream filter), from a clip with Chrome's
//! MediaRecorder layout (60 ms packets, pre-skip 0) and from ffmpeg's own
//! WebM (20 ms packets, first block at -7 ms), then `ffmpeg -i in.webm -c:a
//! copy out.opus` and a plain `ffmpeg -i in.webm out.opus`. ffmpeg is
//! required (CI installs it); a missing tool fails the test with a message.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use opusgate::codec::head::packet_samples_48k;
use opusgate::codec::sample::speech_pcm;
use serde_json::Value;
use support::clips::{diff, parse_wav, write_wav};
use support::http::{header, Api as _};
use support::ogg::{pages, write_pages};
use support::process::{store_dir, ServerProcess};
use support::tools::{require_tool, run};

/// Runs ffmpeg quietly with `args`, failing the test unless it succeeds.
fn ffmpeg(args: &[&str]) -> Vec<u8> {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args))
    .stdout
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// `setts` expression moving every `every`-th packet (from the first
/// `every`-th) 1 ms early, as MediaRecorder's capture clock does. ffmpeg's
/// Ogg muxer ends its first page after 1 s of packets, and a granule is the
/// timestamp of the page's last packet plus its duration and the pre-skip:
/// `every` is picked to move that packet (the 17th of 60 ms, the 50th of
/// 20 ms).
fn jitter(every: u32) -> String {
    format!("setts=ts=PTS-if(eq(mod(N\\,{every})\\,0)*gt(N\\,0)\\,1\\,0)")
}

/// `bytes` with the OpusHead's pre-skip set to `pre_skip`.
fn with_pre_skip(bytes: &[u8], pre_skip: u16) -> Vec<u8> {
    let mut p = pages(bytes);
    assert!(p[0].body.starts_with(b"OpusHead"), "not an Ogg Opus file");
    p[0].body[10..12].copy_from_slice(&pre_skip.to_le_bytes());
    write_pages(&p)
}

/// The first audio page's granule position and the samples its packets
/// hold, read here from the pages (a page completes packets where a lacing
/// value is below 255; it starts with a continued packet when flagged).
fn first_audio_page(bytes: &[u8]) -> (u64, u64) {
    let p = pages(bytes);
    let page = &p[2];
    assert_eq!(page.flags & 1, 0, "the first audio page continues a packet");
    let (mut at, mut len, mut samples) = (0usize, 0usize, 0u64);
    for &lace in &page.lacing {
        len += usize::from(lace);
        if lace < 255 {
            let packet = &page.body[at..at + len];
            if !packet.is_empty() {
                samples += u64::from(packet_samples_48k(packet).expect("a valid TOC"));
            }
            (at, len) = (at + len, 0);
        }
    }
    (page.granule, samples)
}

/// The MediaRecorder-like files: (name, path), each made by ffmpeg from a
/// WebM with jittering timestamps.
fn fixtures(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let speech = dir.join("speech.wav");
    write_wav(
        &speech,
        48000,
        1,
        &speech_pcm(48000 * 4 + 1234, 48000, 1, 31),
    );
    let path = |name: &str| dir.join(name);

    // Chrome's layout: 60 ms packets, an OpusHead with pre-skip 0 (and so
    // no CodecDelay in the WebM), first block at 0.
    let ogg60 = path("chrome-like.ogg.opus");
    ffmpeg(&[
        "-i",
        arg(&speech),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-frame_duration",
        "60",
        arg(&ogg60),
    ]);
    let bytes = std::fs::read(&ogg60).expect("the 60 ms clip");
    std::fs::write(&ogg60, with_pre_skip(&bytes, 0)).expect("write");
    let webm60 = path("chrome-like.webm");
    ffmpeg(&[
        "-i",
        arg(&ogg60),
        "-c:a",
        "copy",
        "-bsf:a",
        &jitter(4),
        arg(&webm60),
    ]);
    let copy60 = path("chrome-like.copy.opus");
    ffmpeg(&["-i", arg(&webm60), "-c:a", "copy", arg(&copy60)]);
    let reencoded60 = path("chrome-like.reencoded.opus");
    ffmpeg(&["-i", arg(&webm60), arg(&reencoded60)]);

    // ffmpeg's own WebM: 20 ms packets, CodecDelay 6.5 ms so its first
    // block is at -7 ms, kept by -copyts.
    let webm20 = path("ffmpeg.webm");
    ffmpeg(&[
        "-i",
        arg(&speech),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-bsf:a",
        &jitter(7),
        arg(&webm20),
    ]);
    let copy20 = path("ffmpeg-copyts.copy.opus");
    ffmpeg(&["-copyts", "-i", arg(&webm20), "-c:a", "copy", arg(&copy20)]);
    vec![
        ("chrome-like, stream copy", copy60),
        ("chrome-like, re-encoded", reencoded60),
        ("ffmpeg WebM with -copyts, stream copy", copy20),
    ]
}

/// Little-endian 16-bit samples.
fn s16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

async fn repaired_count(server: &ServerProcess, client: &reqwest::Client) -> (u64, f64) {
    let stats = server.stats(client).await;
    let in_stats = stats["conversions"]["streams_repaired"]
        .as_u64()
        .unwrap_or_else(|| panic!("no conversions.streams_repaired in {stats}"));
    let metrics = server.metrics(client).await;
    let in_metrics = metrics
        .lines()
        .find_map(|l| l.strip_prefix("opusgate_streams_repaired_total "))
        .unwrap_or_else(|| panic!("no opusgate_streams_repaired_total in\n{metrics}"))
        .trim()
        .parse()
        .expect("a number");
    (in_stats, in_metrics)
}

/// The repair warnings in the server's log, as (key, what was repaired).
fn repair_warnings(server: &ServerProcess) -> Vec<(String, String)> {
    server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "repaired an Ogg Opus stream")
        .map(|v| {
            assert_eq!(v["level"], "WARN", "{v}");
            (
                v["key"].as_str().unwrap_or_default().to_owned(),
                v["repaired"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediarecorder_files_copied_by_ffmpeg_decode_as_ffmpeg_decodes_them() {
    require_tool("ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = fixtures(dir.path());
    let server = ServerProcess::start(&store_dir(dir.path()), &[]);
    let client = reqwest::Client::new();
    assert_eq!(repaired_count(&server, &client).await, (0, 0.0));

    let mut expected = 0u64;
    for (name, path) in &files {
        let upload = std::fs::read(path).expect("fixture");
        // The situation being repaired: the first audio page claims fewer
        // samples than its packets hold (RFC 7845 4.5 forbids it; opusgate
        // answered 422 invalid_stream).
        let (granule, samples) = first_audio_page(&upload);
        assert!(
            granule < samples,
            "{name}: granule {granule}, {samples} samples"
        );

        // 48 kHz: the length and samples of ffmpeg's libopus decode.
        let reference = s16(&ffmpeg(&[
            "-c:a",
            "libopus",
            "-i",
            arg(path),
            "-ar",
            "48000",
            "-ac",
            "1",
            "-f",
            "s16le",
            "-",
        ]));
        let r = server
            .post_convert(&client, "?rate=48000&channels=1", upload.clone())
            .await;
        assert_eq!(header(&r, "x-cache"), "miss", "{name}");
        let status = r.status().as_u16();
        let etag = header(&r, "etag").trim_matches('"').to_owned();
        let body = r.bytes().await.expect("body").to_vec();
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        let ours = parse_wav(&body);
        assert_eq!(ours.frames(), reference.len(), "{name}: length at 48 kHz");
        let (max, snr) = diff(&reference, &ours.samples);
        assert!(
            max <= 1,
            "{name}: up to {max} LSB from ffmpeg (SNR {snr:.1} dB)"
        );
        expected += 1;
        assert_eq!(
            repaired_count(&server, &client).await,
            (expected, expected as f64),
            "{name}: one repaired conversion"
        );
        let warnings = repair_warnings(&server);
        let (key, what) = warnings.last().expect("a repair warning");
        assert_eq!(warnings.len() as u64, expected, "{name}");
        assert_eq!(*key, etag, "{name}: the warning names the key");
        assert!(
            what.contains(&format!(
                "the first audio page (byte {}) has granule {granule}, less than the {samples} samples",
                pages(&upload)[..2].iter().map(|p| p.len()).sum::<usize>()
            )),
            "{name}: {what}"
        );

        // The same again is a hit, which converts nothing and counts nothing.
        let r = server
            .post_convert(&client, "?rate=48000&channels=1", upload.clone())
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-cache"), "hit-memory", "{name}");
        assert_eq!(r.bytes().await.expect("body").to_vec(), body);
        assert_eq!(
            repaired_count(&server, &client).await,
            (expected, expected as f64)
        );

        // The default 16 kHz mono: ffmpeg's length (its native decoder and
        // resampler) within one sample; another conversion, another count.
        let at16 = ffmpeg(&[
            "-i",
            arg(path),
            "-ar",
            "16000",
            "-ac",
            "1",
            "-f",
            "s16le",
            "-",
        ])
        .len()
            / 2;
        let (status, cache, body) = server.convert(&client, &upload).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(cache, "miss");
        let frames = parse_wav(&body).frames();
        assert!(
            frames.abs_diff(at16) <= 1,
            "{name}: {frames} frames at 16 kHz, ffmpeg {at16}"
        );
        expected += 1;
        assert_eq!(
            repaired_count(&server, &client).await,
            (expected, expected as f64)
        );
    }

    // An intact file (ffmpeg's Ogg Opus straight from PCM) is not repaired.
    let intact = dir.path().join("intact.opus");
    ffmpeg(&[
        "-i",
        arg(&dir.path().join("speech.wav")),
        "-c:a",
        "libopus",
        arg(&intact),
    ]);
    let upload = std::fs::read(&intact).expect("intact");
    let (granule, samples) = first_audio_page(&upload);
    assert!(granule >= samples);
    let (status, cache, _) = server.convert(&client, &upload).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(
        repaired_count(&server, &client).await,
        (expected, expected as f64)
    );
    assert_eq!(repair_warnings(&server).len() as u64, expected);
    server.kill9();
}
