//! Proxy mode's test harness: a server configured against the stand-in
//! backend ([`super::backend`]) with a client key, and the forms and
//! requests the proxy tests send.

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use opusgate::config::Config;

use super::backend::Backend;
use super::http::Api as _;
use super::server::{config_in, TestServer};

/// The key clients send, and the key opusgate sends to the backend.
pub const CLIENT_KEY: &str = "client-key";
pub const BACKEND_KEY: &str = "backend-secret";

/// A server config in `dir` in proxy mode against `backend`, with the
/// client key, small timeouts and the test models.
pub fn proxy_config(dir: &std::path::Path, backend: &Backend) -> Config {
    let mut config = config_in(dir);
    config.auth.api_keys = vec![CLIENT_KEY.into()];
    config.upstream.url = backend.url.clone();
    config.upstream.api_key = BACKEND_KEY.into();
    config.upstream.transcription_model = "whisper-test".into();
    config.upstream.chat_model = "gpt-4o-audio-test".into();
    config.upstream.timeout_seconds = 2;
    config.upstream.retries = 1;
    config
}

/// The OpenAI transcription form with the clip in `file`.
pub fn transcription_form(upload: &[u8], temperature: Option<&str>) -> Form {
    let mut form = Form::new()
        .part(
            "file",
            Part::bytes(upload.to_vec())
                .file_name("segment_0001.ogg")
                .mime_str("audio/ogg")
                .unwrap(),
        )
        .text("language", "zh")
        .text("prompt", "会议记录")
        .text("response_format", "json");
    if let Some(t) = temperature {
        form = form.text("temperature", t.to_owned());
    }
    form
}

/// `POST /v1/audio/transcriptions` with the client key.
pub async fn transcribe(c: &reqwest::Client, server: &TestServer, form: Form) -> reqwest::Response {
    post_form(c, server, "/v1/audio/transcriptions", form).await
}

/// `POST path` of a multipart form with the client key.
pub async fn post_form(
    c: &reqwest::Client,
    server: &TestServer,
    path: &str,
    form: Form,
) -> reqwest::Response {
    c.post(server.url(path))
        .header("X-API-Key", CLIENT_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// `POST /api/v1/translate_audio` with the client key.
pub async fn translate(c: &reqwest::Client, server: &TestServer, form: Form) -> reqwest::Response {
    c.post(server.url("/api/v1/translate_audio"))
        .header("X-API-Key", CLIENT_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// `/api/v1/stats` with the client key.
pub async fn keyed_stats(c: &reqwest::Client, server: &TestServer) -> Value {
    c.get(server.url("/api/v1/stats"))
        .header("X-API-Key", CLIENT_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST /api/v1/convert` with the client key: the WAV (asserts 200).
pub async fn post_convert_with_key(
    c: &reqwest::Client,
    server: &TestServer,
    upload: Vec<u8>,
) -> Vec<u8> {
    let r = c
        .post(server.url("/api/v1/convert"))
        .header("X-API-Key", CLIENT_KEY)
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}
