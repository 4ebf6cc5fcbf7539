//! The official OpenAI Python SDK against opusgate (the real binary, in
//! proxy mode) in front of the stand-in backend: transcriptions in every
//! response format, translations, the model list, a stream whose events
//! arrive at their own times, and opusgate's own errors as the SDK's
//! exceptions. The SDK is installed with pip into a virtual environment in a
//! temporary directory; the test is skipped (with the reason printed) only
//! when pip cannot reach the package index.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::backend::Backend;
use support::clips::clip;
use support::http::{translate_form, Api as _};
use support::process::{store_dir, ServerProcess};

const CLIENT_KEY: &str = "sdk-client-key";
const BACKEND_KEY: &str = "sdk-backend-secret";
/// Set with the old name (`OPUSGATE_UPSTREAM__MODEL`).
const LEGACY_MODEL: &str = "whisper-legacy-name";

/// What pip prints when it cannot reach the package index.
const UNREACHABLE: [&str; 8] = [
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
    "ConnectTimeoutError",
    "No route to host",
];

/// The SDK session: every call checks its answer and prints one JSON object
/// (what the Rust side checks further) on its last line.
const SCRIPT: &str = r#"
import json, os, sys, time
import openai
from openai import OpenAI

base = os.environ["OPUSGATE_BASE"] + "/v1"
clip = os.environ["CLIP"]
client = OpenAI(base_url=base, api_key=os.environ["CLIENT_KEY"], max_retries=0, timeout=30)
out = {"sdk": openai.__version__}

def transcribe(fmt, **kw):
    with open(clip, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-sdk", file=f, response_format=fmt, **kw)

r = transcribe("json")
assert r.text.startswith("transcript number "), r
r = transcribe("text")
assert isinstance(r, str) and r.startswith("transcript number "), repr(r)
r = transcribe("verbose_json")
assert r.language == "english" and r.duration == 1.5, r
assert r.segments[0].text == r.text and r.segments[0].end == 1.5, r
srt = transcribe("srt")
assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\ntranscript number "), repr(srt)
r = transcribe("vtt")
assert r.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\ntranscript number "), repr(r)
# Asked again: the same answer, from opusgate's answer store.
again = transcribe("srt")
assert again == srt, (again, srt)

def translate(fmt):
    with open(clip, "rb") as f:
        return client.audio.translations.create(model="whisper-sdk", file=f, response_format=fmt)

r = translate("json")
assert r.text.startswith("translation number "), r
r = translate("text")
assert isinstance(r, str) and r.startswith("translation number "), repr(r)
r = translate("verbose_json")
assert r.duration == 1.5 and r.text.startswith("translation number "), r
r = translate("srt")
assert r.startswith("1\n00:00:00,000 --> 00:00:01,500\ntranslation number "), repr(r)
r = translate("vtt")
assert r.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\ntranslation number "), repr(r)

ids = [m.id for m in client.models.list()]
assert ids == ["whisper-test", "gpt-4o-audio-test"], ids

started = time.monotonic()
kinds, times, text = [], [], ""
with open(clip, "rb") as f:
    stream = client.audio.transcriptions.create(model="whisper-sdk", file=f, stream=True)
    for event in stream:
        times.append(time.monotonic() - started)
        kinds.append(event.type)
        if event.type == "transcript.text.delta":
            text += event.delta
        else:
            assert event.text == text, (event.text, text)
assert kinds == ["transcript.text.delta"] * 3 + ["transcript.text.done"], kinds
gaps = [b - a for a, b in zip(times, times[1:])]
out["stream_times"] = times
assert all(0.3 < g < 0.7 for g in gaps), ("events did not arrive at their own times", times)

wrong = OpenAI(base_url=base, api_key="not-the-key", max_retries=0, timeout=30)
try:
    wrong.models.list()
    raise AssertionError("a wrong key was let in")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "unauthorized" and e.type == "authentication_error", (e.code, e.type, e.body)
    out["auth_error"] = e.body

try:
    client.post("/audio/transcriptions", cast_to=object, body={"model": "whisper-sdk"})
    raise AssertionError("a JSON body was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.code == "bad_request" and e.type == "invalid_request_error", (e.code, e.type, e.body)
    out["bad_request"] = e.body

with open(clip, "rb") as f:
    cut = f.read()
cut = cut[: len(cut) // 2]
try:
    client.audio.transcriptions.create(model="whisper-sdk", file=("cut.opus", cut))
    raise AssertionError("a truncated stream was accepted")
except openai.UnprocessableEntityError as e:
    assert e.status_code == 422 and e.code == "truncated_stream" and e.type == "invalid_request_error", (e.code, e.type, e.body)

print(json.dumps(out))
"#;

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A virtual environment under `dir` with the `openai` package: its python,
/// or `None` (the reason printed) when pip cannot reach the package index.
fn venv_with_openai(dir: &Path) -> Option<std::path::PathBuf> {
    let venv = dir.join("venv");
    let made = run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    assert!(made.status.success(), "python3 -m venv: {}", text(&made));
    let python = venv.join("bin/python");
    let started = Instant::now();
    let pip = run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "openai",
    ]));
    let took = started.elapsed();
    if !pip.status.success() {
        let said = text(&pip);
        if let Some(sign) = UNREACHABLE.iter().find(|s| said.contains(*s)) {
            println!("SKIPPED: pip could not reach the package index ({sign}):\n{said}");
            return None;
        }
        panic!("pip install openai failed: {said}");
    }
    println!("pip install openai: {:.1} s", took.as_secs_f64());
    Some(python)
}

/// The request log lines the server wrote so far.
fn request_lines(server: &ServerProcess) -> Vec<Value> {
    server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["message"] == "request")
        .collect()
}

/// The request log lines once `done` holds of them (request lines are
/// written just after their answers), or what there is after 10 s.
async fn request_lines_when(server: &ServerProcess, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = request_lines(server);
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a log line names a 64-hex-digit audio key.
fn names_a_key(line: &Value) -> bool {
    let key = line["key"].as_str().unwrap_or_default();
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_talks_to_opusgate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start().await;
    let server = ServerProcess::start(
        &store_dir(dir.path()),
        &[
            ("OPUSGATE_AUTH__API_KEYS", CLIENT_KEY.to_owned()),
            ("OPUSGATE_UPSTREAM__URL", backend.url.clone()),
            ("OPUSGATE_UPSTREAM__API_KEY", BACKEND_KEY.to_owned()),
            ("OPUSGATE_UPSTREAM__MODEL", LEGACY_MODEL.to_owned()),
        ],
    );

    // Without the SDK: the old setting name still sets the transcription
    // model; translate_audio uses the chat model's default; their log lines
    // name the audio's key and the answer store's outcome.
    let c = reqwest::Client::new();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(clip(1.0, 4102)).file_name("a.ogg"),
    );
    let r = c
        .post(server.url("/v1/audio/transcriptions"))
        .bearer_auth(CLIENT_KEY)
        .multipart(form)
        .send()
        .await
        .expect("transcription");
    assert_eq!(r.status(), 200);
    let last = backend.last();
    let model = last.fields.iter().find(|f| f.name == "model");
    assert_eq!(
        model.map(|f| f.data.as_slice()),
        Some(LEGACY_MODEL.as_bytes())
    );
    let r = c
        .post(server.url("/api/v1/translate_audio"))
        .bearer_auth(CLIENT_KEY)
        .multipart(translate_form(&clip(1.0, 4103)))
        .send()
        .await
        .expect("translate_audio");
    assert_eq!(r.status(), 200);
    assert_eq!(
        backend.last().json.expect("JSON")["model"],
        "gpt-4o-audio-preview"
    );
    const PATHS: [&str; 2] = ["/v1/audio/transcriptions", "/api/v1/translate_audio"];
    let lines = request_lines_when(&server, |lines| {
        PATHS.iter().all(|p| lines.iter().any(|v| v["path"] == *p))
    })
    .await;
    for path in PATHS {
        let line = lines
            .iter()
            .find(|v| v["path"] == path)
            .unwrap_or_else(|| panic!("no log line for {path}: {lines:?}"));
        assert!(names_a_key(line), "{line}");
        assert_eq!(line["cache"], "miss", "{line}");
        assert_eq!(line["upstream_cache"], "miss", "{line}");
    }

    let Some(python) = venv_with_openai(dir.path()) else {
        return;
    };
    let before = backend.received.lock().unwrap().len();
    let clip_path = dir.path().join("clip.opus");
    std::fs::write(&clip_path, clip(1.5, 4101)).expect("write the clip");
    let script = dir.path().join("session.py");
    std::fs::write(&script, SCRIPT).expect("write the script");

    let started = Instant::now();
    let session = tokio::process::Command::new(&python)
        .arg(&script)
        .env("OPUSGATE_BASE", &server.base)
        .env("CLIENT_KEY", CLIENT_KEY)
        .env("CLIP", &clip_path)
        .output();
    let session = tokio::time::timeout(Duration::from_secs(60), session)
        .await
        .expect("the SDK session took over 60 s")
        .expect("run the SDK session");
    let said = text(&session);
    assert!(session.status.success(), "the SDK session failed: {said}");
    println!("SDK session: {:.1} s", started.elapsed().as_secs_f64());
    let summary: Value = String::from_utf8_lossy(&session.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary: {said}"));
    println!(
        "openai {} ; stream events at {} s",
        summary["sdk"], summary["stream_times"]
    );
    assert_eq!(summary["auth_error"]["type"], "authentication_error");
    assert_eq!(summary["bad_request"]["code"], "bad_request");

    // What the backend got: converted audio, the SDK's model, our key.
    let received = backend.received.lock().unwrap()[before..].to_vec();
    let audio: Vec<_> = received
        .iter()
        .filter(|r| r.path.starts_with("/v1/audio/"))
        .collect();
    // json, text, verbose_json, srt, vtt for each of transcriptions and
    // translations, and the stream (the repeated srt came from the store).
    assert_eq!(
        audio.len(),
        11,
        "{:?}",
        received.iter().map(|r| r.path).collect::<Vec<_>>()
    );
    for r in &audio {
        let field = |name: &str| r.fields.iter().find(|f| f.name == name);
        let file = field("file").expect("a file field");
        assert_eq!(file.file_name.as_deref(), Some("audio.wav"));
        assert_eq!(
            field("model").map(|f| f.data.as_slice()),
            Some(&b"whisper-sdk"[..])
        );
        assert_eq!(r.headers["authorization"], format!("Bearer {BACKEND_KEY}"));
    }
    let stream = audio
        .last()
        .and_then(|r| r.fields.iter().find(|f| f.name == "stream"));
    assert!(
        stream.is_some_and(|f| f.data.eq_ignore_ascii_case(b"true")),
        "{stream:?}"
    );

    // Every SDK transcription's log line names its audio's key, and the
    // answer store's outcome where the store was asked.
    let sdk_transcriptions = |lines: &[Value]| {
        lines
            .iter()
            .filter(|v| v["path"] == "/v1/audio/transcriptions" && v["status"] == 200)
            .count()
    };
    let lines = request_lines_when(&server, |lines| sdk_transcriptions(lines) >= 8).await;
    let transcriptions: Vec<&Value> = lines
        .iter()
        .filter(|v| v["path"] == "/v1/audio/transcriptions" && v["status"] == 200)
        .collect();
    assert_eq!(
        transcriptions.len(),
        8,
        "the first, and 7 by the SDK: {lines:?}"
    );
    for line in &transcriptions {
        assert!(names_a_key(line), "{line}");
        assert_ne!(line["cache"], "-", "{line}");
    }
    let outcomes: Vec<&str> = transcriptions
        .iter()
        .filter_map(|v| v["upstream_cache"].as_str())
        .collect();
    assert!(outcomes.contains(&"hit-memory"), "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == "-").count(),
        1,
        "only the stream bypassed the store: {outcomes:?}"
    );
    drop(server);
}
