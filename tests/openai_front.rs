//! Proxy mode's OpenAI-compatible front against a stand-in backend:
//! `/v1/audio/translations` beside transcriptions, `/v1/models`, streams
//! passed through event by event and never stored, and OpenAI's error shape
//! on `/v1/*`. The rest of proxy mode is `tests/proxy.rs`.

mod support;

use std::time::{Duration, Instant};

use reqwest::multipart::Form;
use serde_json::{json, Value};
use support::backend::{Backend, Mode, MODELS, STREAM_EVENTS, STREAM_SPACING};
use support::clips::clip;
use support::http::{header, Api as _};
use support::proxy::*;
use support::server::{config_in, data_dir, TestServer};

#[tokio::test]
async fn translations_share_the_transcriptions_path_with_their_own_keys() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(1.5, 38);
    let translations = "/v1/audio/translations";

    let r = post_form(&c, &server, translations, transcription_form(&upload, None)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-upstream-cache"), "miss");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"text": "translation number 1"})
    );
    let got = backend.last();
    assert_eq!(got.path, "/v1/audio/translations");
    let field = |name: &str| got.fields.iter().find(|f| f.name == name).unwrap();
    assert_eq!(field("file").file_name.as_deref(), Some("audio.wav"));
    assert_eq!(
        field("file").data,
        post_convert_with_key(&c, &server, upload.clone()).await
    );
    assert_eq!(field("model").data, b"whisper-test", "transcription_model");
    assert_eq!(field("prompt").data, "会议记录".as_bytes());
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {BACKEND_KEY}")
    );

    // Cached on repeat.
    let r = post_form(&c, &server, translations, transcription_form(&upload, None)).await;
    assert_eq!(header(&r, "x-upstream-cache"), "hit-memory");
    assert_eq!(backend.calls(), 1);

    // The same form to transcriptions is another request (another key).
    let r = transcribe(&c, &server, transcription_form(&upload, None)).await;
    assert_eq!(header(&r, "x-upstream-cache"), "miss");
    assert_eq!(backend.last().path, "/v1/audio/transcriptions");
    assert_eq!(backend.calls(), 2);

    // The backend's own error answer comes back unchanged.
    backend.set_mode(Mode::Fail500);
    let r = post_form(
        &c,
        &server,
        translations,
        transcription_form(&upload, Some("0.5")),
    )
    .await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": {"message": "model exploded", "type": "server_error"}})
    );
    server.stop().await;
}

#[tokio::test]
async fn models_are_the_backends_asked_with_the_backend_key() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    for i in 1..=2 {
        let r = c
            .get(server.url("/v1/models"))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-upstream-cache"), "", "never stored");
        let v: Value = r.json().await.unwrap();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, MODELS, "{v}");
        assert_eq!(v["object"], "list");
        assert_eq!(backend.calls(), i, "asked every time");
        let got = backend.last();
        assert_eq!(got.path, "/v1/models");
        assert_eq!(
            got.headers["authorization"],
            format!("Bearer {BACKEND_KEY}")
        );
        assert!(!format!("{:?}", got.headers).contains(CLIENT_KEY));
    }
    server.stop().await;
}

/// `{"error":{…}}` with a non-empty type and the given code, and nothing else.
fn assert_openai_error(v: &Value, code: &str, kind: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    assert!(v["error"]["param"].is_null(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert_eq!(v["error"].as_object().unwrap().len(), 4, "{v}");
}

#[tokio::test]
async fn errors_on_v1_take_openais_shape_and_api_v1_keeps_its_own() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(1.0, 39);
    let send = |r: reqwest::RequestBuilder| async move {
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(header(&r, "content-type"), "application/json");
        (status, r.json::<Value>().await.unwrap())
    };
    let transcriptions = server.url("/v1/audio/transcriptions");

    // 401: no key, and a wrong one.
    let (status, v) = send(
        c.post(&transcriptions)
            .multipart(transcription_form(&upload, None)),
    )
    .await;
    assert_eq!(status, 401);
    assert_openai_error(&v, "unauthorized", "authentication_error");
    let (status, v) = send(c.get(server.url("/v1/models")).bearer_auth("wrong")).await;
    assert_eq!(status, 401);
    assert_openai_error(&v, "unauthorized", "authentication_error");
    // 400: no `file` field; not a form at all.
    let keyed = |r: reqwest::RequestBuilder| r.header("X-API-Key", CLIENT_KEY);
    let no_file = Form::new().text("model", "whisper-1");
    let (status, v) = send(keyed(c.post(&transcriptions)).multipart(no_file)).await;
    assert_eq!(status, 400);
    assert_openai_error(&v, "bad_request", "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`file`"),
        "{v}"
    );
    let (status, v) = send(keyed(c.post(&transcriptions)).body("not a form")).await;
    assert_eq!(status, 400);
    assert_openai_error(&v, "bad_request", "invalid_request_error");
    // 422 from the converter: Ogg Opus, cut short.
    let cut = &upload[..upload.len() / 2];
    let form = transcription_form(cut, None);
    let (status, v) = send(keyed(c.post(&transcriptions)).multipart(form)).await;
    assert_eq!(status, 422);
    assert_openai_error(&v, "truncated_stream", "invalid_request_error");
    // 404 under /v1/, and 405.
    let (status, v) = send(keyed(c.post(server.url("/v1/audio/speech")))).await;
    assert_eq!(status, 404);
    assert_openai_error(&v, "not_found", "invalid_request_error");
    let (status, v) = send(keyed(c.get(&transcriptions))).await;
    assert_eq!(status, 405);
    assert_openai_error(&v, "method_not_allowed", "invalid_request_error");
    assert_eq!(backend.calls(), 0);

    // /api/v1/* keeps opusgate's shape.
    let (status, v) = send(c.get(server.url("/api/v1/stats"))).await;
    assert_eq!(status, 401);
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], "unauthorized");
    assert!(v.get("error").is_none(), "{v}");
    let (status, v) = send(keyed(c.get(server.url("/api/v1/nope")))).await;
    assert_eq!(status, 404);
    assert_eq!(v["code"], "not_found");
    let (status, v) = send(keyed(c.post(server.url("/api/v1/translate_audio"))).body("x")).await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], "bad_request");
    server.stop().await;

    // 503 when proxy mode is off, in OpenAI's shape on /v1.
    let server = TestServer::start(config_in(dir.path())).await;
    let (status, v) = send(c.get(server.url("/v1/models"))).await;
    assert_eq!(status, 503);
    assert_openai_error(&v, "upstream_not_configured", "server_error");
    server.stop().await;
}

/// POSTs a `stream=true` transcription and reads its events as they come:
/// (each event's text, when it arrived), the response's headers checked.
async fn stream_events(
    c: &reqwest::Client,
    server: &TestServer,
    upload: &[u8],
) -> Vec<(String, Instant)> {
    let form = transcription_form(upload, None).text("stream", "true");
    let mut r = transcribe(c, server, form).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    assert_eq!(header(&r, "x-upstream-cache"), "", "never stored");
    let mut events = Vec::new();
    let mut pending = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        let now = Instant::now();
        pending.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = pending.find("\n\n") {
            events.push((pending[..end].to_owned(), now));
            pending.drain(..end + 2);
        }
    }
    assert!(
        pending.is_empty(),
        "a partial event at the end: {pending:?}"
    );
    events
}

#[tokio::test]
async fn streams_arrive_event_by_event_and_are_never_stored() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let server = TestServer::start(proxy_config(dir.path(), &backend)).await;
    let c = reqwest::Client::new();
    let upload = clip(1.0, 40);

    for round in 1..=2u64 {
        let started = Instant::now();
        let events = stream_events(&c, &server, &upload).await;
        let sent = backend.sent();
        let sent = &sent[sent.len() - STREAM_EVENTS..];
        assert_eq!(events.len(), STREAM_EVENTS, "{events:?}");
        let lags: Vec<Duration> = events
            .iter()
            .zip(sent)
            .map(|((_, arrived), sent)| arrived.saturating_duration_since(*sent))
            .collect();
        let offsets: Vec<f64> = events
            .iter()
            .map(|(_, at)| at.duration_since(started).as_secs_f64())
            .collect();
        println!(
            "stream round {round}: events at {offsets:.3?} s, lag behind the backend {lags:?}"
        );
        for (i, lag) in lags.iter().enumerate() {
            assert!(
                *lag < Duration::from_millis(300),
                "event {i} arrived {lag:?} after the backend sent it"
            );
        }
        assert!(
            sent[STREAM_EVENTS - 1] - sent[0] >= STREAM_SPACING * 3 - Duration::from_millis(10),
            "the backend spaced its events"
        );
        let last: Value =
            serde_json::from_str(events[STREAM_EVENTS - 1].0.trim_start_matches("data: ")).unwrap();
        assert_eq!(last["type"], "transcript.text.done");
        assert_eq!(last["text"], format!("transcript number {round}"));
        assert_eq!(
            backend.calls(),
            round,
            "a repeat is not served from the store"
        );
        let got = backend.last();
        let stream = got.fields.iter().find(|f| f.name == "stream").unwrap();
        assert_eq!(stream.data, b"true");
    }

    // A refusal before the first byte is the backend's, as it is.
    backend.set_mode(Mode::Fail500);
    let form = transcription_form(&upload, None).text("stream", "true");
    let r = transcribe(&c, &server, form).await;
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("model exploded"));
    server.stop().await;
}

#[tokio::test]
async fn a_stream_holds_its_backend_permit_until_it_ends_or_is_dropped() {
    let backend = Backend::start().await;
    let dir = data_dir();
    let mut config = proxy_config(dir.path(), &backend);
    config.upstream.max_concurrent = 1;
    let server = TestServer::start(config).await;
    let c = reqwest::Client::new();
    let upload = clip(1.0, 41);
    let stream_form = || transcription_form(&upload, None).text("stream", "true");
    // A sampled request: never stored, so it always needs the permit.
    let other = || transcription_form(&upload, Some("0.9"));

    // While a stream runs, another backend call waits for its end.
    let started = Instant::now();
    let mut streaming = transcribe(&c, &server, stream_form()).await;
    assert!(streaming.chunk().await.unwrap().is_some());
    let waiting = {
        let (c, url, form) = (c.clone(), server.url("/v1/audio/transcriptions"), other());
        tokio::spawn(async move {
            let r = c
                .post(url)
                .header("X-API-Key", CLIENT_KEY)
                .multipart(form)
                .send()
                .await;
            (r.map(|r| r.status().as_u16()).unwrap_or(0), Instant::now())
        })
    };
    while streaming.chunk().await.unwrap().is_some() {}
    let stream_ended = Instant::now();
    let (status, answered) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        answered >= stream_ended - Duration::from_millis(50),
        "answered {:?} before the stream ended",
        stream_ended - answered
    );
    assert!(stream_ended - started >= STREAM_SPACING * 3 - Duration::from_millis(50));

    // A stream whose client goes away gives its permit back.
    let mut dropped = transcribe(&c, &server, stream_form()).await;
    assert!(dropped.chunk().await.unwrap().is_some());
    drop(dropped);
    let asked = Instant::now();
    let r = transcribe(&c, &server, other()).await;
    assert_eq!(r.status(), 200);
    let took = asked.elapsed();
    assert!(
        took < STREAM_SPACING * 2,
        "the permit came back {took:?} after the client left"
    );
    server.stop().await;
}
