//! Byte ranges on `GET|HEAD /api/v1/audio/{key}`: 206 with exactly the
//! asked-for slice of the stored WAV, 416 past the end, the whole WAV for
//! what the server ignores (invalid or several ranges, a stale `If-Range`),
//! and `If-None-Match` still answering 304 first.

mod support;

use serde_json::Value;
use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::server::{config_in, data_dir, TestServer};

/// A server with one converted clip: (server, its data directory, the
/// audio URL, the WAV the server stored).
async fn stored_clip(seed: u64) -> (TestServer, tempfile::TempDir, String, Vec<u8>) {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let upload = clip(2.0, seed);
    let wav = fresh_wav(&upload);
    let converted = server
        .post_convert(&reqwest::Client::new(), "", upload)
        .await;
    assert_eq!(converted.status(), 200);
    assert_eq!(header(&converted, "accept-ranges"), "bytes");
    let location = header(&converted, "location").to_owned();
    assert_eq!(converted.bytes().await.expect("body"), wav);
    assert!(wav.len() > 2_000, "a 2 s clip is {} bytes", wav.len());
    let url = server.url(&location);
    (server, dir, url, wav)
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = c.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("audio request")
}

/// A 206 with bytes `first..=last` of `wav`.
async fn expect_part(response: reqwest::Response, wav: &[u8], first: usize, last: usize) {
    let total = wav.len();
    assert_eq!(response.status(), 206, "bytes {first}-{last}");
    assert_eq!(
        header(&response, "content-range"),
        format!("bytes {first}-{last}/{total}")
    );
    assert_eq!(
        header(&response, "content-length"),
        (last - first + 1).to_string()
    );
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    assert_eq!(header(&response, "content-type"), "audio/wav");
    assert_eq!(header(&response, "etag").len(), 66);
    let body = response.bytes().await.expect("body");
    assert!(
        body.as_ref() == &wav[first..=last],
        "the 206 body is not bytes {first}-{last} of the WAV"
    );
}

/// A 200 with all of `wav`.
async fn expect_whole(response: reqwest::Response, wav: &[u8], what: &str) {
    assert_eq!(response.status(), 200, "{what}");
    assert_eq!(header(&response, "content-range"), "", "{what}");
    assert_eq!(header(&response, "accept-ranges"), "bytes", "{what}");
    assert_eq!(
        header(&response, "content-length"),
        wav.len().to_string(),
        "{what}"
    );
    let body = response.bytes().await.expect("body");
    assert!(
        body.as_ref() == wav,
        "{what}: the body is not the whole WAV"
    );
}

#[tokio::test]
async fn a_single_range_answers_206_with_exactly_its_bytes() {
    let (server, _dir, url, wav) = stored_clip(501).await;
    let c = reqwest::Client::new();
    let total = wav.len();

    expect_whole(get(&c, &url, &[]).await, &wav, "no Range").await;
    // The first bytes (the WAV header and more), the middle, the last 500,
    // from an offset to the end, and an end past the end (cut at the end).
    expect_part(get(&c, &url, &[("range", "bytes=0-99")]).await, &wav, 0, 99).await;
    expect_part(
        get(&c, &url, &[("range", "bytes=1000-1999")]).await,
        &wav,
        1000,
        1999,
    )
    .await;
    expect_part(
        get(&c, &url, &[("range", "bytes=-500")]).await,
        &wav,
        total - 500,
        total - 1,
    )
    .await;
    expect_part(
        get(&c, &url, &[("range", "bytes=100-")]).await,
        &wav,
        100,
        total - 1,
    )
    .await;
    let past = format!("bytes={}-{}", total - 10, total + 1000);
    expect_part(
        get(&c, &url, &[("range", &past)]).await,
        &wav,
        total - 10,
        total - 1,
    )
    .await;

    // HEAD: the same headers, no body.
    let head = c
        .head(&url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("HEAD request");
    assert_eq!(head.status(), 206);
    assert_eq!(
        header(&head, "content-range"),
        format!("bytes 0-99/{total}")
    );
    assert_eq!(header(&head, "content-length"), "100");
    assert_eq!(header(&head, "accept-ranges"), "bytes");
    assert!(head.bytes().await.expect("HEAD body").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_range_past_the_end_is_416_and_bad_or_multiple_ranges_are_ignored() {
    let (server, _dir, url, wav) = stored_clip(502).await;
    let c = reqwest::Client::new();
    let total = wav.len();

    for value in ["bytes=999999-", &format!("bytes={total}-")] {
        let refused = get(&c, &url, &[("range", value)]).await;
        assert_eq!(refused.status(), 416, "{value}");
        assert_eq!(
            header(&refused, "content-range"),
            format!("bytes */{total}")
        );
        assert_eq!(header(&refused, "content-type"), "application/json");
        let error: Value = refused.json().await.expect("a JSON error");
        assert_eq!(error["status"], "error");
        assert_eq!(error["code"], "range_not_satisfiable");
    }

    for value in [
        "bytes=abc",
        "bytes=99-0",
        "lines=0-9",
        "bytes=0-1,5-9",
        "bytes=0-99, 200-299, 1000-",
    ] {
        expect_whole(get(&c, &url, &[("range", value)]).await, &wav, value).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn if_range_and_if_none_match_decide_before_the_range() {
    let (server, _dir, url, wav) = stored_clip(503).await;
    let c = reqwest::Client::new();
    let etag = header(&get(&c, &url, &[]).await, "etag").to_owned();

    let matching = get(&c, &url, &[("range", "bytes=0-99"), ("if-range", &etag)]).await;
    expect_part(matching, &wav, 0, 99).await;
    let other = format!("\"{}\"", "0".repeat(64));
    let weak = format!("W/{etag}");
    for if_range in [
        other.as_str(),
        weak.as_str(),
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        let stale = get(&c, &url, &[("range", "bytes=0-99"), ("if-range", if_range)]).await;
        expect_whole(stale, &wav, if_range).await;
    }

    // If-None-Match still answers 304, with or without a Range.
    for headers in [
        vec![("if-none-match", etag.as_str())],
        vec![("if-none-match", etag.as_str()), ("range", "bytes=0-99")],
    ] {
        let unchanged = get(&c, &url, &headers).await;
        assert_eq!(unchanged.status(), 304);
        assert_eq!(header(&unchanged, "etag"), etag);
        assert!(unchanged.bytes().await.expect("body").is_empty());
    }
    server.stop().await;
}
