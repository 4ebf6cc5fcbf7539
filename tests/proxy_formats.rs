//! Proxy mode's `upstream.convert`: which uploads `/v1/audio/*` converts to
//! 16 kHz mono WAV before forwarding them, and which go to the backend as
//! they came, under `all` (the default), `opus` and `none`, judged by what
//! the stand-in backend received; uploads in no accepted format; and the
//! answer store never handing the answer about a converted upload to the
//! same upload forwarded as it came, or the other way round. Fixtures: the
//! project's Ogg Opus sample clip, and a WAV and a WebM Opus file made by
//! ffmpeg.

mod support;

use std::path::Path;
use std::process::Command;

use opusgate::config::{Config, UpstreamConvert};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::backend::{Backend, Field};
use support::clips::{clip, fresh_wav, wav_info};
use support::http::{header, Api as _};
use support::proxy::*;
use support::server::{data_dir, TestServer};
use support::tools::{require_tool, run};

/// Seconds of the ffmpeg fixtures.
const SECONDS: f64 = 1.5;

/// A proxy-mode config in `dir` against `backend` converting as `mode`.
fn config(dir: &Path, backend: &Backend, mode: UpstreamConvert) -> Config {
    let mut config = proxy_config(dir, backend);
    config.upstream.convert = mode;
    config
}

/// A transcription form whose file part is `bytes` named `name` of `mime`.
fn form(bytes: &[u8], name: &str, mime: &str) -> Form {
    let part = Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap();
    Form::new().part("file", part).text("language", "en")
}

/// The `file` field the backend received last.
fn received_file(backend: &Backend) -> Field {
    backend
        .last()
        .fields
        .into_iter()
        .find(|f| f.name == "file")
        .expect("the backend received no file")
}

/// Runs ffmpeg making `out` from a 440 Hz tone of [`SECONDS`] at 44.1 kHz
/// stereo, with the output options `args`; returns its bytes.
fn ffmpeg_tone(dir: &Path, out: &str, args: &[&str]) -> Vec<u8> {
    require_tool("ffmpeg");
    let path = dir.join(out);
    let tone = format!("sine=frequency=440:duration={SECONDS}:sample_rate=44100");
    run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(&tone)
        .args(["-ac", "2"])
        .args(args)
        .arg(&path));
    std::fs::read(&path).expect("ffmpeg output")
}

/// A 44.1 kHz stereo PCM WAV made by ffmpeg.
fn ffmpeg_wav(dir: &Path) -> Vec<u8> {
    ffmpeg_tone(dir, "tone.wav", &["-c:a", "pcm_s16le"])
}

/// A WebM with an Opus track made by ffmpeg (what MediaRecorder records).
fn ffmpeg_webm_opus(dir: &Path) -> Vec<u8> {
    ffmpeg_tone(dir, "tone.webm", &["-c:a", "libopus", "-b:a", "48k"])
}

/// Asserts that the backend got a 16 kHz mono 16-bit WAV named `audio.wav`
/// of about `seconds`, and returns its bytes.
fn assert_got_wav(backend: &Backend, seconds: f64, what: &str) -> Vec<u8> {
    let file = received_file(backend);
    assert_eq!(file.file_name.as_deref(), Some("audio.wav"), "{what}");
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"), "{what}");
    let (frames, rate, channels) = wav_info(&file.data);
    assert_eq!((rate, channels), (16_000, 1), "{what}");
    let expected = seconds * 16_000.0;
    assert!(
        (frames as f64 - expected).abs() <= expected * 0.01,
        "{what}: {frames} frames for {seconds} s"
    );
    file.data
}

/// Asserts that the backend got `bytes` as they were sent, name and type
/// included.
fn assert_got_as_sent(backend: &Backend, bytes: &[u8], name: &str, mime: &str, what: &str) {
    let file = received_file(backend);
    assert!(file.data == bytes, "{what}: the backend got other bytes");
    assert_eq!(file.file_name.as_deref(), Some(name), "{what}");
    assert_eq!(file.content_type.as_deref(), Some(mime), "{what}");
}

/// Asserts a 415 `unsupported_format` in OpenAI's shape.
async fn assert_unsupported(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 415, "{what}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_format", "{what}: {v}");
}

/// Bytes in no accepted format: a JSON document.
const NOT_AUDIO: &[u8] = b"{\"not\": \"audio\"}";

#[tokio::test]
async fn all_converts_every_accepted_format_and_refuses_the_rest() {
    let dir = data_dir();
    let backend = Backend::start().await;
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::All)).await;
    assert_eq!(
        Config::default().upstream.convert,
        UpstreamConvert::All,
        "the default"
    );
    let c = reqwest::Client::new();

    // Ogg Opus: exactly what /api/v1/convert serves.
    let opus = clip(1.0, 601);
    let r = transcribe(&c, &server, form(&opus, "a.ogg", "audio/ogg")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "miss");
    let got = assert_got_wav(&backend, 1.0, "ogg opus");
    assert_eq!(got, fresh_wav(&opus));

    // A 44.1 kHz stereo WAV: resampled and downmixed, as /api/v1/convert does.
    let wav = ffmpeg_wav(dir.path());
    let r = transcribe(&c, &server, form(&wav, "tone.wav", "audio/wav")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let got = assert_got_wav(&backend, SECONDS, "wav");
    assert_ne!(got, wav);
    assert_eq!(got, post_convert_with_key(&c, &server, wav.clone()).await);

    // Translations take the same path.
    let r = post_form(
        &c,
        &server,
        "/v1/audio/translations",
        form(&wav, "tone.wav", "audio/wav"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(backend.last().path, "/v1/audio/translations");
    assert_got_wav(&backend, SECONDS, "wav translation");

    // No accepted format: refused, the backend never asked.
    let calls = backend.calls();
    let r = transcribe(&c, &server, form(NOT_AUDIO, "x.json", "application/json")).await;
    assert_unsupported(r, "json").await;
    assert_eq!(backend.calls(), calls);
    server.stop().await;
}

#[tokio::test]
async fn opus_converts_ogg_and_webm_opus_and_forwards_other_formats_as_they_came() {
    let dir = data_dir();
    let backend = Backend::start().await;
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::Opus)).await;
    let c = reqwest::Client::new();

    let opus = clip(1.0, 602);
    let r = transcribe(&c, &server, form(&opus, "a.ogg", "audio/ogg")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(assert_got_wav(&backend, 1.0, "ogg opus"), fresh_wav(&opus));

    let wav = ffmpeg_wav(dir.path());
    let r = transcribe(&c, &server, form(&wav, "tone.wav", "audio/x-wav")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "", "not converted");
    assert_got_as_sent(&backend, &wav, "tone.wav", "audio/x-wav", "wav");

    let calls = backend.calls();
    let r = transcribe(&c, &server, form(NOT_AUDIO, "x.json", "application/json")).await;
    assert_unsupported(r, "json").await;
    assert_eq!(backend.calls(), calls);

    // WebM Opus, what browsers record.
    let webm = ffmpeg_webm_opus(dir.path());
    let r = transcribe(&c, &server, form(&webm, "rec.webm", "audio/webm")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_got_wav(&backend, SECONDS, "webm opus");
    server.stop().await;
}

#[tokio::test]
async fn none_forwards_every_upload_as_it_came() {
    let dir = data_dir();
    let backend = Backend::start().await;
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::None)).await;
    let c = reqwest::Client::new();
    let opus = clip(1.0, 603);
    let wav = ffmpeg_wav(dir.path());
    let uploads: [(&[u8], &str, &str); 3] = [
        (&opus, "segment_0001.ogg", "audio/ogg"),
        (&wav, "tone.wav", "audio/wav"),
        (NOT_AUDIO, "x.json", "application/json"),
    ];
    for (bytes, name, mime) in uploads {
        let r = transcribe(&c, &server, form(bytes, name, mime)).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(header(&r, "x-cache"), "", "{name}: not converted");
        assert_eq!(header(&r, "x-upstream-cache"), "miss", "{name}");
        assert_got_as_sent(&backend, bytes, name, mime, name);
    }
    assert_eq!(backend.calls(), 3);
    let stats = keyed_stats(&c, &server).await;
    assert_eq!(stats["cache"]["lookups"], 0, "nothing converted");
    server.stop().await;
}

#[tokio::test]
async fn a_converted_upload_and_the_same_upload_as_it_came_never_share_an_answer() {
    let dir = data_dir();
    let backend = Backend::start().await;
    let c = reqwest::Client::new();
    let opus = clip(1.0, 604);
    let send = |server: &TestServer| {
        let (c, url) = (c.clone(), server.url("/v1/audio/transcriptions"));
        let upload = form(&opus, "a.ogg", "audio/ogg");
        async move {
            let r = c
                .post(url)
                .header("X-API-Key", CLIENT_KEY)
                .multipart(upload)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let cache = header(&r, "x-upstream-cache").to_owned();
            (cache, r.json::<Value>().await.unwrap())
        }
    };

    // Forwarded as it came: stored.
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::None)).await;
    let (cache, raw_answer) = send(&server).await;
    assert_eq!(cache, "miss");
    assert_got_as_sent(&backend, &opus, "a.ogg", "audio/ogg", "none");
    server.stop().await;

    // The same store, now converting: another request, the backend asked.
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::All)).await;
    let (cache, wav_answer) = send(&server).await;
    assert_eq!(cache, "miss", "the answer about the Ogg file was reused");
    assert_ne!(wav_answer, raw_answer);
    assert_eq!(assert_got_wav(&backend, 1.0, "all"), fresh_wav(&opus));
    assert_eq!(backend.calls(), 2);
    let (cache, again) = send(&server).await;
    assert_eq!((cache.as_str(), &again), ("hit-memory", &wav_answer));
    server.stop().await;

    // `opus` converts it too: the converted answer, from disk.
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::Opus)).await;
    let (cache, answer) = send(&server).await;
    assert_eq!((cache.as_str(), &answer), ("hit-disk", &wav_answer));
    server.stop().await;

    // And `none` again: the answer about the Ogg file as it came.
    let server = TestServer::start(config(dir.path(), &backend, UpstreamConvert::None)).await;
    let (cache, answer) = send(&server).await;
    assert_eq!((cache.as_str(), &answer), ("hit-disk", &raw_answer));
    assert_eq!(backend.calls(), 2);
    server.stop().await;
}
