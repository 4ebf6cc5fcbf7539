//! A real browser uploading across origins: headless Chromium (Debian's,
//! through chromedriver; skipped with the reason printed where it is not
//! installed) with a fake microphone records 2 s with MediaRecorder
//! (`audio/webm;codecs=opus`) on a page served from another loopback port,
//! then `fetch`es it, with an `X-API-Key` header (so the browser sends a
//! preflight first), to an `opusgate serve` process: one that lists the
//! page's origin in `cors.allowed_origins` (200, a WAV of the recording,
//! `X-Cache` readable by the script), and one that does not (the browser
//! refuses, and the server's log shows the preflight and no upload).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::response::Html;
use axum::routing::get;
use base64::Engine as _;
use fantoccini::wd::TimeoutConfiguration;
use serde_json::{json, Value};
use support::browser::Browser;
use support::clips::wav_info;
use support::http::Api as _;
use support::process::{store_dir, ServerProcess};
use support::server::data_dir;
use support::tools::{ffmpeg_frames, require_tool};

const KEY: &str = "browser-key";

/// Milliseconds the page records.
const RECORD_MS: u64 = 2000;

const BROWSER_ARGS: [&str; 2] = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
];

/// The page: `recordClip(ms)` records the (fake) microphone into
/// `window.clip` and answers its bytes; `upload(url, key)` posts it as a
/// form with `X-API-Key` and answers what the script can read of the answer.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>upload</title>
<script>
function b64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}
async function recordClip(ms) {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const recorder = new MediaRecorder(stream, {mimeType: 'audio/webm;codecs=opus'});
  const chunks = [];
  recorder.ondataavailable = (e) => chunks.push(e.data);
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start();
  await new Promise((resolve) => setTimeout(resolve, ms));
  recorder.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  window.clip = new Blob(chunks, {type: 'audio/webm'});
  return {type: recorder.mimeType, bytes: b64(await window.clip.arrayBuffer())};
}
async function upload(url, key) {
  const form = new FormData();
  form.append('audio_file', window.clip, 'recording.webm');
  try {
    const r = await fetch(url, {method: 'POST', headers: {'X-API-Key': key}, body: form});
    const body = await r.arrayBuffer();
    return {
      status: r.status,
      contentType: r.headers.get('Content-Type'),
      xCache: r.headers.get('X-Cache'),
      etag: r.headers.get('ETag'),
      durationMs: r.headers.get('X-Audio-Duration-Ms'),
      body: b64(body),
    };
  } catch (e) {
    return {error: String(e)};
  }
}
</script>
<p>upload test page</p>
"#;

/// Serves [`PAGE`] at `/` on 127.0.0.1:0: its origin (another port, so
/// another origin, than opusgate's).
async fn page_server() -> String {
    let app = axum::Router::new().route("/", get(|| async { Html(PAGE) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An `opusgate serve` process with the key and `origins` allowed.
fn opusgate(dir: &Path, origins: &str) -> ServerProcess {
    ServerProcess::start(
        &store_dir(dir),
        &[
            ("OPUSGATE_AUTH__API_KEYS", KEY.to_owned()),
            ("OPUSGATE_CORS__ALLOWED_ORIGINS", origins.to_owned()),
        ],
    )
}

/// The request lines of a server's JSON log, once at least `at_least` are
/// there (at most 10 s).
async fn request_lines(server: &ServerProcess, at_least: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = server
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "request")
            .collect();
        if lines.len() >= at_least || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cache lookups of a server (a conversion, or an attempt at one, is one).
async fn lookups(server: &ServerProcess) -> u64 {
    let stats: Value = reqwest::Client::new()
        .get(server.url("/api/v1/stats"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["cache"]["lookups"].as_u64().unwrap()
}

fn decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_default())
        .expect("base64 from the page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_uploads_a_recording_and_one_not_allowed_is_refused() {
    require_tool("ffmpeg");
    let Some(browser) = Browser::start(&BROWSER_ARGS).await.expect("browser") else {
        return;
    };
    let origin = page_server().await;
    let (allowed_dir, refused_dir) = (data_dir(), data_dir());
    let allowed = opusgate(allowed_dir.path(), &origin);
    let refused = opusgate(refused_dir.path(), "http://elsewhere.example");
    let client = browser.client();
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(Duration::from_secs(60)),
            None,
            None,
        ))
        .await
        .unwrap();
    client.goto(&format!("{origin}/")).await.unwrap();

    let recorded = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             recordClip(arguments[0]).then(done, (e) => done({error: String(e)}));",
            vec![json!(RECORD_MS)],
        )
        .await
        .unwrap();
    assert!(recorded["error"].is_null(), "recording failed: {recorded}");
    assert!(
        recorded["type"].as_str().unwrap().starts_with("audio/webm"),
        "{recorded}"
    );
    let webm = decode(&recorded["bytes"]);
    assert!(webm.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]), "not WebM");

    let upload = |server: &ServerProcess| {
        let url = server.url("/api/v1/convert");
        async move {
            client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     upload(arguments[0], arguments[1]).then(done);",
                    vec![json!(url), json!(KEY)],
                )
                .await
                .unwrap()
        }
    };

    // Allowed: the WAV of the recording, its headers readable by the page.
    let answer = upload(&allowed).await;
    assert!(answer["error"].is_null(), "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["contentType"], "audio/wav");
    assert_eq!(answer["xCache"], "miss", "X-Cache not readable: {answer}");
    assert!(
        answer["etag"].as_str().is_some_and(|e| e.len() == 66),
        "{answer}"
    );
    let wav = decode(&answer["body"]);
    let (frames, rate, channels) = wav_info(&wav);
    assert_eq!((rate, channels), (16_000, 1));
    let webm_path = allowed_dir.path().join("recording.webm");
    std::fs::write(&webm_path, &webm).unwrap();
    let reference = ffmpeg_frames(&webm_path, 16_000) as f64;
    println!(
        "recorded {} bytes of WebM; opusgate {frames} frames, ffmpeg {reference} frames at 16 kHz",
        webm.len()
    );
    assert!(
        (frames as f64 - reference).abs() <= reference * 0.02,
        "{frames} frames where ffmpeg decodes {reference}"
    );
    let seconds = frames as f64 / 16_000.0;
    assert!(
        (1.5..=3.0).contains(&seconds),
        "{seconds} s for {RECORD_MS} ms"
    );
    let lines = request_lines(&allowed, 2).await;
    let seen: Vec<(&str, &str, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap_or_default(),
                l["cache"].as_str().unwrap_or_default(),
                l["status"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("OPTIONS", "-", 200), ("POST", "miss", 200)],
        "a preflight, then the upload"
    );

    // Not allowed: the browser refuses after the preflight; nothing converted.
    let answer = upload(&refused).await;
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("Failed to fetch"), "{answer}");
    let lines = request_lines(&refused, 1).await;
    assert_eq!(lines.len(), 1, "{}", refused.log_text());
    assert_eq!(lines[0]["method"], "OPTIONS");
    assert_eq!(lines[0]["path"], "/api/v1/convert");
    assert_eq!(
        lookups(&refused).await,
        0,
        "the refused upload was converted"
    );
    let console = browser.console_entries().await.unwrap();
    assert!(
        console.iter().any(|e| e.message.contains("CORS policy")),
        "no CORS refusal in the page's console: {console:?}"
    );
    browser.close().await.unwrap();
}
