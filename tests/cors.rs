//! CORS through the real server, as a browser would exercise it: preflights
//! (`OPTIONS` with `Origin` and `Access-Control-Request-*`) and the requests
//! after them, for an allowed origin, one not allowed, no origins
//! configured (no CORS headers at all), `*`, error and health answers, and
//! the settings start-up refuses. The browser itself is
//! `tests/browser_upload.rs`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::process::{store_dir, ServerProcess, BINARY};
use support::server::{config_in, data_dir, TestServer};

const KEY: &str = "page-key";
/// As configured: a browser sends it in lower case.
const CONFIGURED: &str = "HTTP://Page.Example:8080";
const PAGE: &str = "http://page.example:8080";

/// The headers a page's script must be able to read.
const EXPOSED: [&str; 7] = [
    "x-cache",
    "etag",
    "location",
    "x-audio-duration-ms",
    "x-upstream-cache",
    "content-range",
    "retry-after",
];

/// A server with a key, [`CONFIGURED`] allowed and a short preflight max age.
async fn keyed_server(dir: &Path) -> TestServer {
    let mut config = config_in(dir);
    config.auth.api_keys = vec![KEY.into()];
    config.cors.allowed_origins = vec![CONFIGURED.into()];
    config.cors.max_age_seconds = 120;
    config.limits.max_upload_bytes = 200_000;
    TestServer::start(config).await
}

/// A preflight of `method path` asking for `headers`, from `origin`.
async fn preflight(
    c: &reqwest::Client,
    server: &TestServer,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> reqwest::Response {
    c.request(Method::OPTIONS, server.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .unwrap()
}

/// A comma-separated header's items, lower-cased (empty when absent).
fn items(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The names of the `Access-Control-*` headers of an answer.
fn cors_headers(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// Asserts that an answer to `origin` lets the page read it and its headers.
fn assert_readable(r: &reqwest::Response, origin: &str, what: &str) {
    assert_eq!(
        header(r, "access-control-allow-origin"),
        origin,
        "{what}: {:?}",
        r.headers()
    );
    let exposed = items(r, "access-control-expose-headers");
    for name in EXPOSED {
        assert!(
            exposed.iter().any(|e| e == name),
            "{what}: {name} not exposed: {exposed:?}"
        );
    }
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "{what}: no credentials are allowed"
    );
    assert!(
        items(r, "vary").iter().any(|v| v == "origin"),
        "{what}: Vary lacks Origin"
    );
}

/// Cache lookups and conversions so far: what a handler that ran would move.
async fn work_done(c: &reqwest::Client, server: &TestServer) -> (u64, u64) {
    let stats: Value = c
        .get(server.url("/api/v1/stats"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lookups = stats["cache"]["lookups"].as_u64().unwrap();
    let started = stats["cache"]["computations_started"].as_u64().unwrap();
    (lookups, started)
}

#[tokio::test]
async fn an_allowed_origin_is_preflighted_without_a_key_and_reads_the_answer() {
    let dir = data_dir();
    let server = keyed_server(dir.path()).await;
    let c = reqwest::Client::new();

    // The preflight: answered without a key, before any handler.
    let r = preflight(
        &c,
        &server,
        "/api/v1/convert",
        PAGE,
        "POST",
        "x-api-key,content-type",
    )
    .await;
    assert!(matches!(r.status().as_u16(), 200 | 204), "{}", r.status());
    assert_eq!(header(&r, "access-control-allow-origin"), PAGE);
    let methods = items(&r, "access-control-allow-methods");
    for m in ["get", "head", "post"] {
        assert!(
            methods.iter().any(|x| x == m),
            "{m} not allowed: {methods:?}"
        );
    }
    let allowed = items(&r, "access-control-allow-headers");
    for h in [
        "x-api-key",
        "authorization",
        "content-type",
        "if-none-match",
        "range",
    ] {
        assert!(
            allowed.iter().any(|x| x == h),
            "{h} not allowed: {allowed:?}"
        );
    }
    assert_eq!(header(&r, "access-control-max-age"), "120");
    assert!(items(&r, "vary").iter().any(|v| v == "origin"));
    assert!(
        r.bytes().await.unwrap().is_empty(),
        "a preflight has no body"
    );
    assert_eq!(work_done(&c, &server).await, (0, 0));

    // The request after it: converted, and readable by the page.
    let upload = clip(1.0, 501);
    let r = c
        .post(server.url("/api/v1/convert"))
        .header("Origin", PAGE)
        .header("X-API-Key", KEY)
        .header("Content-Type", "audio/ogg")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_readable(&r, PAGE, "POST /api/v1/convert");
    assert_eq!(header(&r, "x-cache"), "miss");
    let location = header(&r, "location").to_owned();
    assert_eq!(r.bytes().await.unwrap(), fresh_wav(&upload));

    // A range of the stored WAV, with the headers a page sends for it.
    let r = preflight(
        &c,
        &server,
        &location,
        PAGE,
        "GET",
        "range,if-none-match,authorization",
    )
    .await;
    assert_eq!(header(&r, "access-control-allow-origin"), PAGE);
    let r = c
        .get(server.url(&location))
        .header("Origin", PAGE)
        .bearer_auth(KEY)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_readable(&r, PAGE, "GET audio with Range");
    assert!(header(&r, "content-range").starts_with("bytes 0-99/"));
    server.stop().await;
}

#[tokio::test]
async fn an_origin_not_allowed_gets_no_cors_headers_and_its_preflight_reaches_no_handler() {
    let dir = data_dir();
    let server = keyed_server(dir.path()).await;
    let c = reqwest::Client::new();
    let others = [
        "http://evil.example",
        "http://page.example:8081",
        "https://page.example:8080",
        "http://page.example",
        "null",
    ];
    for origin in others {
        let r = preflight(&c, &server, "/api/v1/convert", origin, "POST", "x-api-key").await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin}: {:?}",
            r.headers()
        );
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "{origin}: answered by a handler"
        );
    }
    assert_eq!(
        work_done(&c, &server).await,
        (0, 0),
        "a preflight converted"
    );

    // A request sent anyway (by a client that is no browser) is served, but
    // tells no browser that the origin may read it.
    let r = c
        .post(server.url("/api/v1/convert"))
        .header("Origin", "http://evil.example")
        .header("X-API-Key", KEY)
        .body(clip(0.5, 502))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("access-control-expose-headers").is_some());
    server.stop().await;
}

#[tokio::test]
async fn with_no_origins_configured_there_are_no_cors_headers_at_all() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    assert!(server.config.cors.allowed_origins.is_empty(), "the default");
    let c = reqwest::Client::new();

    // OPTIONS is a method the route does not take, as before CORS existed.
    let r = preflight(&c, &server, "/api/v1/convert", PAGE, "POST", "content-type").await;
    assert_eq!(r.status(), 405);
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "method_not_allowed");

    let r = c
        .post(server.url("/api/v1/convert"))
        .header("Origin", PAGE)
        .body(clip(0.5, 503))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers());
    assert!(!items(&r, "vary").iter().any(|v| v == "origin"));
    let r = c
        .get(server.url("/healthz"))
        .header("Origin", PAGE)
        .send()
        .await
        .unwrap();
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers());
    server.stop().await;
}

#[tokio::test]
async fn star_without_keys_lets_any_origin_in() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.cors.allowed_origins = vec!["*".into()];
    let server = TestServer::start(config).await;
    let c = reqwest::Client::new();
    for origin in ["http://one.example", "https://two.example:4443"] {
        let r = preflight(
            &c,
            &server,
            "/api/v1/convert",
            origin,
            "POST",
            "content-type",
        )
        .await;
        assert!(matches!(r.status().as_u16(), 200 | 204));
        assert_eq!(header(&r, "access-control-allow-origin"), "*");
        assert_eq!(header(&r, "access-control-max-age"), "600", "the default");
        let upload = clip(0.5, 504);
        let r = c
            .post(server.url("/api/v1/convert"))
            .header("Origin", origin)
            .body(upload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_readable(&r, "*", origin);
        assert_eq!(r.bytes().await.unwrap(), fresh_wav(&upload));
    }
    server.stop().await;
}

#[tokio::test]
async fn errors_and_health_answers_carry_the_cors_headers() {
    let dir = data_dir();
    let server = keyed_server(dir.path()).await;
    let c = reqwest::Client::new();
    let from_page = |r: reqwest::RequestBuilder| r.header("Origin", PAGE);
    let keyed = |r: reqwest::RequestBuilder| r.header("Origin", PAGE).header("X-API-Key", KEY);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no key",
            from_page(c.post(server.url("/api/v1/convert"))).body(clip(0.5, 505)),
            401,
            "unauthorized",
        ),
        (
            "no key, OpenAI route",
            from_page(c.get(server.url("/v1/models"))),
            401,
            "unauthorized",
        ),
        (
            "too large",
            keyed(c.post(server.url("/api/v1/convert"))).body(vec![0u8; 200_001]),
            413,
            "payload_too_large",
        ),
        (
            "not audio",
            keyed(c.post(server.url("/api/v1/convert"))).body(png),
            415,
            "unsupported_format",
        ),
        (
            "no backend",
            keyed(c.get(server.url("/v1/models"))),
            503,
            "upstream_not_configured",
        ),
        (
            "no route",
            keyed(c.get(server.url("/api/v1/nothing"))),
            404,
            "not_found",
        ),
        (
            "wrong method",
            keyed(c.get(server.url("/api/v1/convert"))),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, request, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_readable(&r, PAGE, what);
        let v: Value = r.json().await.unwrap();
        let got = v["code"].as_str().or_else(|| v["error"]["code"].as_str());
        assert_eq!(got, Some(code), "{what}: {v}");
    }
    for path in ["/healthz", "/readyz", "/api/v1/health"] {
        let r = from_page(c.get(server.url(path))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_readable(&r, PAGE, path);
    }
    server.stop().await;
}

/// Runs `opusgate serve` with `env` and expects it to refuse to start:
/// (exit code, standard error).
fn refused_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = data_dir();
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--port", "0"])
        .current_dir(dir.path())
        .env("OPUSGATE_CACHE__DIR", store_dir(dir.path()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start opusgate");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("opusgate started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("opusgate output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn star_with_keys_or_a_malformed_origin_stops_start_up() {
    let (code, stderr) = refused_start(&[
        ("OPUSGATE_AUTH__API_KEYS", "k1"),
        ("OPUSGATE_CORS__ALLOWED_ORIGINS", "*"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cors.allowed_origins"), "{stderr}");
    assert!(stderr.contains("auth.api_keys"), "{stderr}");

    for (origin, says) in [
        ("https://app.example/", "path"),
        ("app.example", "scheme://host"),
        ("ftp://app.example", "http or https"),
        ("https://app.example,*", "only entry"),
    ] {
        let (code, stderr) = refused_start(&[("OPUSGATE_CORS__ALLOWED_ORIGINS", origin)]);
        assert_eq!(code, Some(2), "{origin}: {stderr}");
        assert!(
            stderr.contains("cors.allowed_origins"),
            "{origin}: {stderr}"
        );
        assert!(stderr.contains(says), "{origin}: {stderr}");
    }
    let (code, stderr) = refused_start(&[("OPUSGATE_CORS__MAX_AGE_SECONDS", "100000")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cors.max_age_seconds"), "{stderr}");
}

#[tokio::test]
async fn the_binary_takes_origins_from_the_environment() {
    let dir = data_dir();
    let env = [
        ("OPUSGATE_AUTH__API_KEYS", KEY.to_owned()),
        (
            "OPUSGATE_CORS__ALLOWED_ORIGINS",
            "http://a.example, HTTPS://B.example:443".to_owned(),
        ),
        ("OPUSGATE_CORS__MAX_AGE_SECONDS", "30".to_owned()),
    ];
    let server = ServerProcess::start(&store_dir(dir.path()), &env);
    let c = reqwest::Client::new();
    for (origin, allowed) in [
        ("http://a.example", true),
        ("https://b.example", true),
        ("http://c.example", false),
    ] {
        let r = c
            .request(Method::OPTIONS, server.url("/api/v1/convert"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key")
            .send()
            .await
            .unwrap();
        let expected = if allowed { origin } else { "" };
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            expected,
            "{origin}"
        );
        assert_eq!(header(&r, "access-control-max-age"), "30");
    }
    // The three preflights are logged like any request, and none converted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines: Vec<Value> = server
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "request")
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 3, "{}", server.log_text());
    for line in lines {
        assert_eq!(line["method"], "OPTIONS", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["cache"], "-", "{line}");
        assert_eq!(line["key"], "-", "{line}");
    }
}
