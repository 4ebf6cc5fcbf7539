//! The opusgate HTTP API as the tests use it, the same for both kinds of
//! test server (in process, [`super::server::TestServer`], and the real
//! binary, [`super::process::ServerProcess`]): URLs, the stats, health, a
//! conversion, polling the stats, the "still serves" check, and reading a
//! response header.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::clips::{clip, fresh_wav};

/// A response header as text ("" when absent or not text).
pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// POSTs `body` to `url` (a `/api/v1/convert` URL), failing the test when
/// no answer comes.
async fn post(client: &reqwest::Client, url: String, body: Vec<u8>) -> reqwest::Response {
    client
        .post(url)
        .body(body)
        .send()
        .await
        .expect("convert request")
}

/// POSTs `upload` to `url` (a `/api/v1/convert` URL): (status, `X-Cache`,
/// body). It owns its arguments, so that it can be spawned as a task.
pub async fn convert_at(
    client: reqwest::Client,
    url: String,
    upload: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let r = post(&client, url, upload).await;
    let status = r.status().as_u16();
    let cache = header(&r, "x-cache").to_owned();
    (status, cache, r.bytes().await.expect("body").to_vec())
}

/// A running opusgate server, of either kind: everything here needs only
/// its base URL. Bring it into scope with `use support::http::Api as _;`.
pub trait Api {
    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> &str;

    /// `base` + `path`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// `GET /api/v1/stats`.
    async fn stats(&self, client: &reqwest::Client) -> Value {
        client
            .get(self.url("/api/v1/stats"))
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats JSON")
    }

    /// `GET /metrics`: the Prometheus text (asserts 200).
    async fn metrics(&self, client: &reqwest::Client) -> String {
        let response = client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// `POST /api/v1/convert{query}` with `body` as it is.
    async fn post_convert(
        &self,
        client: &reqwest::Client,
        query: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        post(client, self.url(&format!("/api/v1/convert{query}")), body).await
    }

    /// POSTs `upload` to `/api/v1/convert`: (status, `X-Cache`, body).
    async fn convert(&self, client: &reqwest::Client, upload: &[u8]) -> (u16, String, Vec<u8>) {
        convert_at(client.clone(), self.url("/api/v1/convert"), upload.to_vec()).await
    }

    /// The status of `GET /api/v1/health`.
    async fn health(&self, client: &reqwest::Client) -> u16 {
        client
            .get(self.url("/api/v1/health"))
            .send()
            .await
            .expect("health request")
            .status()
            .as_u16()
    }

    /// Health answers and a new upload gets exactly its WAV: the server
    /// still serves.
    async fn still_serves(&self, client: &reqwest::Client, seed: u64) {
        assert_eq!(self.health(client).await, 200);
        let upload = clip(1.0, seed);
        let (status, _, body) = self.convert(client, &upload).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, fresh_wav(&upload));
    }

    /// Polls the stats until `done` holds for them (at most `limit`).
    async fn wait_stats(
        &self,
        client: &reqwest::Client,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let stats = self.stats(client).await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {what}; stats: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The original service's `translate_audio` form: the clip in
/// `audio_file`, as its clients send it.
pub fn translate_form(upload: &[u8]) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "audio_file",
        reqwest::multipart::Part::bytes(upload.to_vec())
            .file_name("segment_0001.ogg")
            .mime_str("audio/ogg")
            .expect("a valid MIME type"),
    )
}
