//! Issue 12, items 6-8: `Cache-Control` follows auth (`private` when API
//! keys are configured, so that no shared cache serves key-protected audio
//! to a client without a key); an API key is text whatever it looks like,
//! from the environment of the real binary too; `/api/v1/convert` refuses
//! query parameters it does not know, or given twice.

mod support;

use serde_json::Value;
use support::clips::{clip, wav_info};
use support::http::{header, Api as _};
use support::process::{store_dir, ServerProcess};
use support::server::{config_in, data_dir, TestServer};

const PUBLIC: &str = "public, max-age=31536000, immutable";
const PRIVATE: &str = "private, max-age=31536000, immutable";

/// Every WAV answer of `server` (the conversion, the audio by key with
/// GET, HEAD, a range, and its 304) carries `cache_control`; `key` is sent
/// as `X-API-Key` when given.
async fn assert_cache_control(server: &TestServer, key: Option<&str>, cache_control: &str) {
    let c = reqwest::Client::new();
    let with_key = |request: reqwest::RequestBuilder| match key {
        Some(key) => request.header("X-API-Key", key),
        None => request,
    };
    let converted = with_key(c.post(server.url("/api/v1/convert")))
        .body(clip(1.0, 120))
        .send()
        .await
        .unwrap();
    assert_eq!(converted.status(), 200);
    assert_eq!(header(&converted, "cache-control"), cache_control);
    let etag = header(&converted, "etag").to_owned();
    let audio = server.url(header(&converted, "location"));

    let get = with_key(c.get(&audio)).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "cache-control"), cache_control);
    let head = with_key(c.head(&audio)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "cache-control"), cache_control);
    let part = with_key(c.get(&audio))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(header(&part, "cache-control"), cache_control);
    assert_eq!(part.bytes().await.unwrap().len(), 100);
    let not_modified = with_key(c.get(&audio))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(header(&not_modified, "cache-control"), cache_control);
}

#[tokio::test]
async fn cache_control_is_private_when_api_keys_are_configured() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    assert_cache_control(&server, None, PUBLIC).await;
    server.stop().await;

    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.auth.api_keys = vec!["sesame".into()];
    let server = TestServer::start(config).await;
    assert_cache_control(&server, Some("sesame"), PRIVATE).await;
    // Still refused without the key.
    let c = reqwest::Client::new();
    let refused = server.post_convert(&c, "", clip(1.0, 120)).await;
    assert_eq!(refused.status(), 401);
    server.stop().await;
}

#[test]
fn a_numeric_api_key_from_the_environment_starts_the_binary_and_is_accepted() {
    let dir = data_dir();
    let server = ServerProcess::start(
        &store_dir(dir.path()),
        &[("OPUSGATE_AUTH__API_KEYS", "12345,true,1e3,0x10,1.50".into())],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = reqwest::Client::new();
        let upload = clip(1.0, 121);
        let convert = |key: Option<&'static str>| {
            let mut request = c.post(server.url("/api/v1/convert")).body(upload.clone());
            if let Some(key) = key {
                request = request.header("X-API-Key", key);
            }
            request.send()
        };
        let ok = convert(Some("12345")).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(header(&ok, "cache-control"), PRIVATE);
        for key in ["true", "1e3", "0x10", "1.50"] {
            assert_eq!(convert(Some(key)).await.unwrap().status(), 200, "{key}");
        }
        // What figment would have made of them is no key.
        for key in ["1.5", "12346"] {
            assert_eq!(convert(Some(key)).await.unwrap().status(), 401, "{key}");
        }
        assert_eq!(convert(None).await.unwrap().status(), 401);
    });
}

/// `POST /api/v1/convert{query}`: its status and, for a 400, the JSON.
async fn refused(server: &TestServer, query: &str) -> Value {
    let c = reqwest::Client::new();
    let r = server.post_convert(&c, query, clip(1.0, 122)).await;
    assert_eq!(r.status(), 400, "{query}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_parameter", "{query}: {v}");
    v
}

#[tokio::test]
async fn unknown_or_repeated_query_parameters_are_refused() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let accepts = "/api/v1/convert accepts `rate` and `channels`, each at most once";
    for (query, name) in [
        ("?Rate=8000", "Rate"),
        ("?format=flac", "format"),
        ("?rate=8000&format=flac", "format"),
        ("?rate=8000&channels=1&CHANNELS=2", "CHANNELS"),
        ("?rate", "rate"),
        ("?=8000", ""),
        ("?r%C3%A4te=8000", "räte"),
    ] {
        let v = refused(&server, query).await;
        if query == "?rate" {
            assert_eq!(v["message"], "`rate` must be a whole number, got ``");
            continue;
        }
        assert_eq!(
            v["message"],
            format!("unknown query parameter `{name}`: {accepts}"),
            "{query}"
        );
    }
    for (query, name) in [
        ("?rate=8000&rate=16000", "rate"),
        ("?rate=8000&rate=8000", "rate"),
        ("?channels=1&rate=8000&channels=2", "channels"),
        ("?rate=8000&r%61te=8000", "rate"),
    ] {
        let v = refused(&server, query).await;
        assert_eq!(
            v["message"],
            format!("query parameter `{name}` is given more than once: {accepts}"),
            "{query}"
        );
    }

    // What is accepted: both, either, none, an empty query, names and
    // values form-decoded, empty pairs skipped.
    let c = reqwest::Client::new();
    for (query, rate, channels) in [
        ("?rate=8000&channels=2", 8_000, 2),
        ("?channels=2&rate=8000", 8_000, 2),
        ("?rate=12000", 12_000, 1),
        ("?channels=2", 16_000, 2),
        ("", 16_000, 1),
        ("?", 16_000, 1),
        ("?&", 16_000, 1),
        ("?rate=8000&", 8_000, 1),
        ("?r%61te=24000&channels=%32", 24_000, 2),
    ] {
        let r = server.post_convert(&c, query, clip(1.0, 122)).await;
        assert_eq!(r.status(), 200, "{query}");
        let (_, got_rate, got_channels) = wav_info(&r.bytes().await.unwrap());
        assert_eq!((got_rate, got_channels), (rate, channels), "{query}");
    }
    server.stop().await;
}
