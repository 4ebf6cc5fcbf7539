//! Proxy mode against a stand-in OpenAI-protocol backend: what the backend
//! receives, answer caching and single-flight, backend failures, and the
//! original service's `translate_audio` with its own load-test script. The
//! OpenAI front (translations, models, streams, OpenAI's error shape on
//! `/v1/*`) is `tests/openai_front.rs`; the harness is `support::proxy`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::backend::{Backend, Mode};
use support::clips::clip;
use support::http::{header, translate_form, Api as _};
use support::proxy::*;
use support::server::{config_in, data_dir, TestServer};

#[tokio::test]
async fn transcriptions_forward_wav_and_fields_and_cache_the_answer() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(2.0, 31);

    let r = transcribe(&c, &server, transcription_form(&upload, None)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-upstream-cache"), "miss");
    assert_eq!(header(&r, "x-cache"), "miss", "the conversion's outcome");
    assert_eq!(header(&r, "content-type"), "application/json");
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["text"], "transcript number 1");
    assert_eq!(backend.calls(), 1);

    let got = backend.last();
    let field = |name: &str| {
        got.fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let file = field("file");
    assert_eq!(file.file_name.as_deref(), Some("audio.wav"));
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    let converted = post_convert_with_key(&c, &server, upload.clone()).await;
    assert_eq!(
        file.data, converted,
        "the backend got other bytes than /api/v1/convert serves"
    );
    assert_eq!(field("language").data, "zh".as_bytes());
    assert_eq!(field("prompt").data, "会议记录".as_bytes());
    assert_eq!(field("response_format").data, b"json");
    assert_eq!(field("model").data, b"whisper-test");
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {BACKEND_KEY}")
    );
    assert!(got.headers.get("x-api-key").is_none());
    assert!(!format!("{:?}", got.headers).contains(CLIENT_KEY));

    // The same request again: from the store, no backend call.
    let again = transcribe(&c, &server, transcription_form(&upload, None)).await;
    assert_eq!(header(&again, "x-upstream-cache"), "hit-memory");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(backend.calls(), 1);

    // A client model is forwarded as it is.
    let custom = transcribe(
        &c,
        &server,
        transcription_form(&upload, None).text("model", "large-v3"),
    )
    .await;
    assert_eq!(custom.status(), 200);
    assert_eq!(backend.calls(), 2);
    assert!(backend
        .last()
        .fields
        .iter()
        .any(|f| f.name == "model" && f.data == b"large-v3"));

    // A sampled request is never served from the store.
    for _ in 0..2 {
        let hot = transcribe(&c, &server, transcription_form(&upload, Some("0.7"))).await;
        assert_eq!(hot.status(), 200);
        assert_eq!(header(&hot, "x-upstream-cache"), "");
    }
    assert_eq!(backend.calls(), 4);

    // Which other uploads are converted or forwarded as they came
    // (`upstream.convert`) is tests/proxy_formats.rs.
    let stats = keyed_stats(&c, &server).await;
    assert_eq!(stats["upstream"]["calls"], 4);
    assert_eq!(stats["upstream"]["cache"]["hits_memory"], 1);
    server.stop().await;
}

#[tokio::test]
async fn fifty_identical_requests_reach_the_backend_once() {
    let backend = Backend::start().await;
    backend.set_mode(Mode::Slow(Duration::from_millis(300)));
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(2.0, 32);
    let requests = (0..50).map(|_| {
        let (c, url, upload) = (
            c.clone(),
            server.url("/v1/audio/transcriptions"),
            upload.clone(),
        );
        tokio::spawn(async move {
            let r = c
                .post(url)
                .header("X-API-Key", CLIENT_KEY)
                .multipart(transcription_form(&upload, Some("0")))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    });
    let results = futures::future::join_all(requests).await;
    for result in results {
        let (status, body) = result.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"text":"transcript number 1"}"#);
    }
    assert_eq!(backend.calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn backend_failures_map_to_gateway_errors_and_are_not_stored() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(1.0, 33);
    let code = |v: &Value| v["code"].as_str().unwrap_or_default().to_owned();

    backend.set_mode(Mode::Fail500);
    let r = translate(&c, &server, translate_form(&upload)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "upstream_error");
    assert!(v["message"].as_str().unwrap().contains("500"), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("model exploded"),
        "{v}"
    );
    // The pass-through route hands the backend's own answer back.
    let r = transcribe(&c, &server, transcription_form(&upload, None)).await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("model exploded"));

    backend.set_mode(Mode::Slow(Duration::from_secs(4)));
    let r = translate(&c, &server, translate_form(&upload)).await;
    assert_eq!(r.status(), 504);
    assert_eq!(code(&r.json().await.unwrap()), "upstream_timeout");

    // Nothing was stored: with the backend healthy again, it is called.
    backend.set_mode(Mode::Ok);
    let before = backend.calls();
    let r = translate(&c, &server, translate_form(&upload)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-upstream-cache"), "miss");
    assert_eq!(backend.calls(), before + 1);
    server.stop().await;

    // A backend nobody listens on: refused, retried, 502 upstream_unavailable.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let mut config = proxy_config(dir.path(), &backend);
    config.upstream.url = dead_url;
    let server = TestServer::start(config).await;
    let r = translate(&c, &server, translate_form(&clip(1.0, 34))).await;
    assert_eq!(r.status(), 502);
    assert_eq!(code(&r.json().await.unwrap()), "upstream_unavailable");
    let stats = keyed_stats(&c, &server).await;
    assert_eq!(stats["upstream"]["calls"], 2, "one call and one retry");
    // The same failure on an OpenAI route, in OpenAI's shape.
    let r = transcribe(&c, &server, transcription_form(&clip(1.0, 34), None)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    assert_eq!(v["error"]["type"], "server_error", "{v}");
    server.stop().await;

    // No backend configured: 503, and conversion still works.
    let server = TestServer::start(config_in(dir.path())).await;
    let r = c
        .post(server.url("/api/v1/translate_audio"))
        .multipart(translate_form(&upload))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(code(&r.json().await.unwrap()), "upstream_not_configured");
    assert_eq!(server.post_convert(&c, "", upload).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn translate_audio_takes_both_language_forms_and_parses_the_reply() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(1.5, 35);

    let repeated = translate_form(&upload)
        .text("user_prompt", "请翻译")
        .text("target_languages", "英文")
        .text("target_languages", "日文");
    let r = translate(&c, &server, repeated).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-upstream-cache"), "miss");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success");
    assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["data"]["原文"], "你好，世界");
    assert_eq!(v["data"]["英文"], "Hello, world");
    assert_eq!(v["data"]["日文"], "こんにちは、世界");
    assert!(v["data"]["raw_text"]
        .as_str()
        .unwrap()
        .contains("英文：Hello"));

    let sent = backend.last().json.unwrap();
    assert_eq!(sent["temperature"], 0);
    assert_eq!(
        sent["model"], "gpt-4o-audio-test",
        "translate_audio uses chat_model"
    );
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("英文") && system.contains("日文") && system.contains("原文："),
        "{system}"
    );
    let user = &sent["messages"][1]["content"];
    assert_eq!(user[0]["text"], "请翻译");
    assert_eq!(user[1]["type"], "input_audio");
    assert_eq!(user[1]["input_audio"]["format"], "wav");
    use base64::Engine as _;
    let wav = base64::engine::general_purpose::STANDARD
        .decode(user[1]["input_audio"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        wav,
        post_convert_with_key(&c, &server, upload.clone()).await
    );

    // One comma-separated value is the same request: answered from the store.
    let comma = translate_form(&upload)
        .text("user_prompt", "请翻译")
        .text("target_languages", "英文,日文");
    let r = translate(&c, &server, comma).await;
    assert_eq!(header(&r, "x-upstream-cache"), "hit-memory");
    assert_eq!(r.json::<Value>().await.unwrap()["data"], v["data"]);
    assert_eq!(backend.calls(), 1);

    // Defaults: the original prompt and languages.
    let r = translate(&c, &server, translate_form(&clip(1.0, 36))).await;
    assert_eq!(r.status(), 200);
    let sent = backend.last().json.unwrap();
    assert_eq!(
        sent["messages"][1]["content"][0]["text"],
        "请处理下面的音频。"
    );
    server.stop().await;
}

/// The original service's load-test script (from its performance guide),
/// run with Python and aiohttp against `translate_audio`.
#[tokio::test]
async fn the_original_load_test_script_reports_fifty_successes() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let audio = dir.path().join("test_audio.opus");
    std::fs::write(&audio, clip(10.0, 37)).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seed_load_test.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .current_dir(dir.path())
        .env("OPUSGATE_URL", server.url("/api/v1/translate_audio"))
        .env("OPUSGATE_API_KEY", CLIENT_KEY)
        .output()
        .await
        .expect("python3 is required (CI installs it with aiohttp)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "script failed: {stdout}\n{stderr}");
    assert!(stdout.contains("并发用户: 50"), "{stdout}");
    assert!(stdout.contains("成功: 50, 失败: 0"), "{stdout}\n{stderr}");
    assert_eq!(
        backend.calls(),
        1,
        "50 identical requests, one backend call"
    );
    server.stop().await;
}
