//! WebM/Matroska with Opus, as ffmpeg and browsers write it, converted through
//! the real server (`POST /api/v1/convert` on 127.0.0.1) and compared with
//! ffmpeg's decoding of the same file: at 48 kHz within 1 LSB of
//! `ffmpeg -c:a libopus` (libopus, as the server decodes) and of the same
//! length; at 8, 12, 16 and 24 kHz the length within one sample of ffmpeg's
//! default decoding (`-ar RATE -ac 1`).
//!
//! Fixtures are encoded here by ffmpeg's libopus from the clips of
//! tests/support/clips.rs, and rewritten by tests/support/webm.rs into what
//! ffmpeg does not write: a browser's layout (unknown-size Segment and
//! Clusters, no Duration, no Cues), BlockGroups, and Xiph, EBML and
//! fixed-size lacing. The BlockGroup and lacing rewrites are checked to
//! decode in ffmpeg exactly as the file they came from. Cut recordings and hostile files get the right
//! answer, never a 500.
//!
//! ffmpeg is required (CI installs it); a missing tool fails the test saying
//! so.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use opusgate::codec::sample::speech_pcm;
use serde_json::Value;
use support::clips::{clip, diff, music, parse_wav, Wav};
use support::http::Api as _;
use support::server::{config_in, data_dir, TestServer};
use support::tools::{ffmpeg_frames, require_tool, run};
use support::webm::{
    count, el, elements, ffmpeg_libopus_48k, ffmpeg_webm, uint, unknown, Lacing, Mux, OpusTrack,
    BLOCK_GROUP, CLUSTER, CUES, DISCARD_PADDING, DURATION, EBML, INFO, SEGMENT, SIMPLE_BLOCK,
};

/// The output rates below 48 kHz, where lengths are compared.
const LOWER_RATES: [u32; 4] = [8000, 12000, 16000, 24000];

async fn server() -> (TestServer, reqwest::Client, tempfile::TempDir) {
    require_tool("ffmpeg");
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    (server, reqwest::Client::new(), dir)
}

/// POSTs `body` at `rate` and `channels`: the status and the body.
async fn post(
    server: &TestServer,
    c: &reqwest::Client,
    body: Vec<u8>,
    rate: u32,
    channels: u8,
) -> (u16, Vec<u8>) {
    let r = server
        .post_convert(c, &format!("?rate={rate}&channels={channels}"), body)
        .await;
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body").to_vec())
}

/// The server's WAV for `body` (which must convert).
async fn wav(server: &TestServer, c: &reqwest::Client, body: &[u8], rate: u32, ch: u8) -> Wav {
    let (status, bytes) = post(server, c, body.to_vec(), rate, ch).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let w = parse_wav(&bytes);
    assert_eq!((w.rate, w.channels), (rate, u16::from(ch)));
    w
}

/// The server's error answer for `body`: status and code.
async fn error(server: &TestServer, c: &reqwest::Client, body: Vec<u8>) -> (u16, String, String) {
    let (status, bytes) = post(server, c, body, 16000, 1).await;
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{status}: not a JSON error: {bytes:02x?}"));
    (
        status,
        v["code"].as_str().unwrap_or_default().to_owned(),
        v["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Compares the server's conversions of the file at `path` (of `channels`
/// channels) with ffmpeg's: at 48 kHz every sample (within `lsb`, 1 for
/// mono and stereo; a 5.1 file is compared downmixed to stereo), and the
/// lengths at the lower rates.
async fn check(server: &TestServer, c: &reqwest::Client, path: &Path, channels: u8, lsb: i32) {
    let body = std::fs::read(path).expect("fixture");
    let out = channels.min(2);
    let reference = ffmpeg_libopus_48k(path, (channels > 2).then_some(2));
    let ours = wav(server, c, &body, 48000, out).await;
    assert_eq!(
        ours.samples.len(),
        reference.len(),
        "{}: 48 kHz length differs from ffmpeg's libopus decoding",
        path.display()
    );
    assert!(!reference.is_empty(), "{}: no audio", path.display());
    let (max, snr) = diff(&reference, &ours.samples);
    assert!(
        max <= lsb,
        "{}: differs from ffmpeg's libopus decoding by up to {max} LSB (SNR {snr:.1} dB)",
        path.display()
    );
    for rate in LOWER_RATES {
        let ours = wav(server, c, &body, rate, 1).await.frames();
        let theirs = ffmpeg_frames(path, rate);
        assert!(
            ours.abs_diff(theirs) <= 1,
            "{} at {rate} Hz: {ours} frames, ffmpeg {theirs}",
            path.display()
        );
    }
}

/// Writes `bytes` to `<dir>/<name>.webm`.
fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.webm"));
    std::fs::write(&path, bytes).expect("write fixture");
    path
}

/// An ffmpeg-written WebM has its usual layout: Duration, Cues, SimpleBlocks,
/// and a DiscardPadding exactly when `padded`.
fn assert_ffmpeg_layout(path: &Path, padded: bool) {
    let b = std::fs::read(path).expect("fixture");
    assert_eq!(
        (
            count(&b, DURATION),
            count(&b, CUES) > 0,
            count(&b, SIMPLE_BLOCK) > 10
        ),
        (1, true, true),
        "{}",
        path.display()
    );
    assert_eq!(
        count(&b, DISCARD_PADDING),
        usize::from(padded),
        "{}: DiscardPadding",
        path.display()
    );
}

#[tokio::test]
async fn ffmpeg_webm_mono_and_stereo_at_20_and_60_ms() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let speech = speech_pcm(41_117, 16000, 1, 11);
    let stereo = music(96_005, 48000, 2, 3);
    let files = [
        (
            ffmpeg_webm(d, "mono20", 16000, 1, &speech, &["-b:a", "24k"]),
            1,
        ),
        (
            ffmpeg_webm(
                d,
                "mono60",
                16000,
                1,
                &speech,
                &[
                    "-b:a",
                    "16k",
                    "-application",
                    "voip",
                    "-frame_duration",
                    "60",
                ],
            ),
            1,
        ),
        (
            ffmpeg_webm(d, "stereo20", 48000, 2, &stereo, &["-b:a", "96k"]),
            2,
        ),
        (
            ffmpeg_webm(
                d,
                "stereo60",
                48000,
                2,
                &stereo,
                &["-b:a", "64k", "-frame_duration", "60"],
            ),
            2,
        ),
    ];
    for (path, channels) in &files {
        assert_ffmpeg_layout(path, true);
        let track = OpusTrack::read(&std::fs::read(path).expect("fixture"));
        assert_eq!(track.channels(), *channels);
        assert!(track.last_padding.is_some_and(|p| p > 0));
        check(&server, &c, path, *channels, 1).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn without_discard_padding_and_the_sample_clip_remuxed() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // 312 samples of pre-skip plus these fill exactly 100 frames of 20 ms:
    // nothing to trim at the end, so ffmpeg writes no DiscardPadding.
    let pcm = music(100 * 960 - 312, 48000, 2, 9);
    let exact = ffmpeg_webm(dir.path(), "exact", 48000, 2, &pcm, &["-b:a", "64k"]);
    assert_ffmpeg_layout(&exact, false);
    check(&server, &c, &exact, 2, 1).await;
    // The project's sample clip (Ogg Opus) remuxed into WebM by ffmpeg.
    let ogg = dir.path().join("clip.opus");
    std::fs::write(&ogg, clip(3.7, 21)).expect("clip");
    let remuxed = dir.path().join("clip.webm");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&ogg)
        .args(["-c:a", "copy"])
        .arg(&remuxed));
    check(&server, &c, &remuxed, 1, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn surround_5_1_channel_mapping_family_1() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pcm = music(72_011, 48000, 6, 5);
    let path = ffmpeg_webm(
        dir.path(),
        "surround",
        48000,
        6,
        &pcm,
        &["-b:a", "256k", "-mapping_family", "1"],
    );
    let track = OpusTrack::read(&std::fs::read(&path).expect("fixture"));
    assert_eq!(
        (track.head[9], track.head[18]),
        (6, 1),
        "a 6-channel family 1 head"
    );
    // Downmixed to stereo, by ffmpeg and by the server: two roundings.
    check(&server, &c, &path, 6, 2).await;
    server.stop().await;
}

#[tokio::test]
async fn browser_layout_and_ffmpeg_live_output() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let stereo = music(70_001, 48000, 2, 4);
    let speech = speech_pcm(30_011, 16000, 1, 8);
    let sources = [
        (
            ffmpeg_webm(d, "st20", 48000, 2, &stereo, &["-b:a", "96k"]),
            2,
        ),
        (
            ffmpeg_webm(
                d,
                "mo60",
                16000,
                1,
                &speech,
                &["-b:a", "16k", "-frame_duration", "60"],
            ),
            1,
        ),
    ];
    for (source, channels) in &sources {
        let track = OpusTrack::read(&std::fs::read(source).expect("fixture"));
        let browser = Mux::browser().write(&track);
        // Unknown-size Segment and Clusters, no Duration, no Cues.
        let segment = [unknown(SEGMENT)].concat();
        let at = browser
            .windows(segment.len())
            .position(|w| w == segment)
            .expect("an unknown-size Segment");
        assert!(at > 0);
        let clusters = browser
            .windows(12)
            .filter(|w| *w == unknown(CLUSTER))
            .count();
        assert_eq!(clusters, track.frames.len().div_ceil(50));
        assert!(browser.windows(2).all(|w| w != [0x44, 0x89]), "no Duration");
        let path = save(d, &format!("browser{channels}"), &browser);
        check(&server, &c, &path, *channels, 1).await;
    }
    // ffmpeg's own live output: an unknown-size Segment, no Duration, no Cues.
    let live = ffmpeg_webm(d, "live", 48000, 2, &stereo, &["-b:a", "64k", "-live", "1"]);
    let b = std::fs::read(&live).expect("fixture");
    let seg = elements(&b)
        .into_iter()
        .find(|e| e.id == SEGMENT)
        .expect("a Segment");
    assert_eq!(b[seg.start + 4], 0x01, "an 8-byte size field");
    assert!(
        b[seg.start + 5..seg.start + 12].iter().all(|&x| x == 0xFF),
        "unknown size"
    );
    assert_eq!((count(&b, DURATION), count(&b, CUES)), (0, 0));
    check(&server, &c, &live, 2, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn block_groups_and_every_lacing() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pcm = music(80_021, 48000, 2, 6);
    let vbr = ffmpeg_webm(d, "vbr", 48000, 2, &pcm, &["-b:a", "96k"]);
    // Hard CBR: every frame the same size, as fixed-size lacing needs.
    let cbr = ffmpeg_webm(d, "cbr", 48000, 2, &pcm, &["-b:a", "64k", "-vbr", "off"]);
    let variants = [
        (&vbr, "groups", true, Lacing::None, 1),
        (&vbr, "xiph", false, Lacing::Xiph, 4),
        (&vbr, "ebml", false, Lacing::Ebml, 3),
        (&vbr, "ebml_groups", true, Lacing::Ebml, 7),
        (&cbr, "fixed", false, Lacing::Fixed, 5),
    ];
    for (source, name, block_groups, lacing, frames_per_block) in variants {
        let track = OpusTrack::read(&std::fs::read(source).expect("fixture"));
        assert!(track.last_padding.is_some());
        let mux = Mux {
            unknown_sizes: name.len() % 2 == 0,
            duration_ms: None,
            block_groups,
            lacing,
            frames_per_block,
            blocks_per_cluster: 9,
            last_padding: track.last_padding,
        };
        let bytes = mux.write(&track);
        if block_groups {
            assert!(count(&bytes, BLOCK_GROUP) > 10);
            assert_eq!(count(&bytes, SIMPLE_BLOCK), 0);
        }
        let path = save(d, name, &bytes);
        // The rewrite decodes in ffmpeg exactly as the original does.
        assert!(
            ffmpeg_libopus_48k(&path, None) == ffmpeg_libopus_48k(source, None),
            "{name}: ffmpeg decodes the rewrite differently"
        );
        check(&server, &c, &path, 2, 1).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn recordings_cut_short() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pcm = music(150_007, 48000, 2, 2);
    // A Cluster every 500 ms (ffmpeg's default for audio is 5 s).
    let source = ffmpeg_webm(
        d,
        "long",
        48000,
        2,
        &pcm,
        &["-b:a", "64k", "-cluster_time_limit", "500"],
    );
    let whole = std::fs::read(&source).expect("fixture");
    // Without its final Cluster (the Segment's size says more follows):
    // every complete block is decoded.
    let last_cluster = elements(&whole)
        .into_iter()
        .filter(|e| e.id == CLUSTER)
        .map(|e| e.start)
        .max()
        .expect("Clusters");
    let short = save(d, "short", &whole[..last_cluster]);
    check(&server, &c, &short, 2, 1).await;
    let full = wav(&server, &c, &whole, 48000, 2).await.frames();
    let cut = wav(&server, &c, &whole[..last_cluster], 48000, 2)
        .await
        .frames();
    assert!(cut < full, "the last Cluster is gone: {cut} of {full}");
    // A live recording stopped in the middle of a block: refused as cut off,
    // unless the server is lenient, which decodes what ffmpeg decodes.
    let track = OpusTrack::read(&whole);
    let browser = Mux::browser().write(&track);
    let mid_block = &browser[..browser.len() - track.frames.last().expect("frames").len() / 2];
    let (status, code, message) = error(&server, &c, mid_block.to_vec()).await;
    assert_eq!(
        (status, code.as_str()),
        (422, "truncated_stream"),
        "{message}"
    );
    server.stop().await;
    let data = data_dir();
    let mut config = config_in(data.path());
    config.conversion.lenient = true;
    let lenient = TestServer::start(config).await;
    let path = save(d, "mid_block", mid_block);
    check(&lenient, &c, &path, 2, 1).await;
    lenient.stop().await;
}

#[tokio::test]
async fn hostile_webm_files_get_the_right_4xx() {
    let (server, c, _data) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pcm = music(20_011, 48000, 2, 1);
    let source = ffmpeg_webm(d, "src", 48000, 2, &pcm, &["-b:a", "64k"]);
    let good = std::fs::read(&source).expect("fixture");
    let track = OpusTrack::read(&good);
    let browser = Mux::browser().write(&track);
    let header = el(EBML, &el(0x4282, b"webm"));

    // A Duration of ten hours on a 1 kB file: refused before decoding.
    let liar = Mux {
        duration_ms: Some(10.0 * 3600.0 * 1000.0),
        ..Mux::browser()
    };
    let mut few = track.clone();
    few.frames.truncate(3);
    let liar = liar.write(&few);
    assert!(liar.len() <= 1024, "{} bytes", liar.len());
    // A SimpleBlock claiming 2^50 bytes in the browser file.
    // The first SimpleBlock of the browser file claiming 2^50 + 2^26 bytes
    // (`high` 4), or 2^26.
    let huge_block = |high: u8| {
        let first = elements(&browser)
            .into_iter()
            .find(|e| e.id == SIMPLE_BLOCK)
            .expect("a SimpleBlock");
        let mut b = browser[..=first.start].to_vec();
        b.extend_from_slice(&[0x01, high, 0, 0, 0x04, 0, 0, 0]);
        b.extend_from_slice(&browser[first.data.start..]);
        b
    };
    // The EBML header claiming 2^56 - 2 bytes.
    let mut huge_header = vec![0x1A, 0x45, 0xDF, 0xA3, 0x01];
    huge_header.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
    huge_header.extend_from_slice(&good[5..]);
    // A Segment with Info and no Tracks.
    let no_tracks = [
        header.clone(),
        el(SEGMENT, &el(INFO, &uint(0x2AD7B1, 1_000_000))),
    ]
    .concat();
    // Vorbis in WebM, from ffmpeg.
    let vorbis = d.join("vorbis.webm");
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(d.join("src.wav"))
        .args(["-c:a", "libvorbis"])
        .arg(&vorbis));
    let vorbis = std::fs::read(&vorbis).expect("vorbis fixture");
    let mut garbage = good[..48].to_vec();
    garbage.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        ("duration of ten hours", liar, 413, "audio_too_long", "10 h"),
        (
            "EBML magic only",
            good[..4].to_vec(),
            422,
            "truncated_stream",
            "",
        ),
        (
            "cut in the EBML header",
            good[..20].to_vec(),
            422,
            "truncated_stream",
            "",
        ),
        (
            "cut in the Tracks",
            good[..300].to_vec(),
            422,
            "truncated_stream",
            "",
        ),
        (
            "SimpleBlock of 2^50 bytes",
            huge_block(0x04),
            422,
            "invalid_stream",
            "4 GiB",
        ),
        (
            "SimpleBlock of 64 MiB",
            huge_block(0),
            422,
            "truncated_stream",
            "",
        ),
        (
            "huge EBML header size",
            huge_header,
            422,
            "invalid_stream",
            "",
        ),
        (
            "no Tracks",
            no_tracks,
            415,
            "unsupported_format",
            "no Opus track",
        ),
        (
            "Vorbis in WebM",
            vorbis,
            415,
            "unsupported_format",
            "A_VORBIS",
        ),
        (
            "garbage in the Segment",
            garbage,
            422,
            "invalid_stream|truncated_stream",
            "",
        ),
    ];
    for (what, body, status, code, says) in cases {
        let (got_status, got_code, message) = error(&server, &c, body).await;
        assert_eq!(got_status, status, "{what}: {got_code}: {message}");
        assert!(
            code.split('|').any(|c| c == got_code),
            "{what}: {got_code}: {message}"
        );
        assert!(message.contains(says), "{what}: {message}");
    }
    server.still_serves(&c, 5).await;
    server.stop().await;
}
