//! The HTTP contract, black-box over real HTTP on 127.0.0.1:0: round trips
//! through both tiers, single-flight, the conversion limits, every error
//! code, auth, and the monitoring endpoints.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::clips::{clip, fresh_wav, wav_info};
use support::hostile::PNG;
use support::http::{convert_at, header, Api as _};
use support::server::{config_in, data_dir, TestServer};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn round_trip_through_memory_and_disk() {
    let dir = data_dir();
    let upload = clip(3.0, 1);
    let expected = fresh_wav(&upload);
    let server = TestServer::start(config_in(dir.path())).await;
    let c = client();

    let first = server.post_convert(&c, "", upload.clone()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "content-type"), "audio/wav");
    assert_eq!(header(&first, "x-cache"), "miss");
    let key = header(&first, "etag").trim_matches('"').to_owned();
    assert_eq!(key.len(), 64);
    assert!(key
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let location = header(&first, "location").to_owned();
    assert_eq!(location, format!("/api/v1/audio/{key}"));
    assert_eq!(header(&first, "x-audio-duration-ms"), "3000");
    let body = first.bytes().await.unwrap();
    assert_eq!(
        body.as_ref(),
        expected.as_slice(),
        "served WAV differs from a direct conversion"
    );
    assert_eq!(wav_info(&body), (48_000, 16_000, 1));

    let again = server.post_convert(&c, "", upload.clone()).await;
    assert_eq!(header(&again, "x-cache"), "hit-memory");
    assert_eq!(header(&again, "etag").trim_matches('"'), key);
    assert_eq!(again.bytes().await.unwrap(), body);

    // Other parameters are another key.
    let stereo = server
        .post_convert(&c, "?rate=48000&channels=2", upload.clone())
        .await;
    assert_eq!(stereo.status(), 200);
    assert_eq!(header(&stereo, "x-cache"), "miss");
    assert_ne!(header(&stereo, "etag").trim_matches('"'), key);
    assert_eq!(
        wav_info(&stereo.bytes().await.unwrap()),
        (144_000, 48_000, 2)
    );

    server.stop().await;
    let server = TestServer::start(config_in(dir.path())).await;
    let from_disk = server.post_convert(&c, "", upload.clone()).await;
    assert_eq!(header(&from_disk, "x-cache"), "hit-disk");
    assert_eq!(from_disk.bytes().await.unwrap(), body);
    let hot = server.post_convert(&c, "", upload).await;
    assert_eq!(header(&hot, "x-cache"), "hit-memory");

    let by_key = c.get(server.url(&location)).send().await.unwrap();
    assert_eq!(by_key.status(), 200);
    assert_eq!(header(&by_key, "etag"), format!("\"{key}\""));
    assert_eq!(by_key.bytes().await.unwrap(), body);

    let head = c.head(server.url(&location)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), body.len().to_string());

    let not_modified = c
        .get(server.url(&location))
        .header("If-None-Match", format!("\"{key}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert!(not_modified.bytes().await.unwrap().is_empty());

    // Reads by key are not lookups.
    let stats = server.stats(&c).await;
    assert_eq!(stats["cache"]["lookups"], 2);
    server.stop().await;
}

#[tokio::test]
async fn fifty_identical_uploads_convert_once() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let c = client();
    let upload = clip(20.0, 2);
    let requests = (0..50).map(|_| {
        tokio::spawn(convert_at(
            c.clone(),
            server.url("/api/v1/convert"),
            upload.clone(),
        ))
    });
    let results = futures::future::join_all(requests).await;
    let mut bodies = HashSet::new();
    let mut misses = 0;
    for result in results {
        let (status, cache, body) = result.unwrap();
        assert_eq!(status, 200);
        misses += usize::from(cache == "miss");
        assert!(
            ["miss", "coalesced", "hit-memory"].contains(&cache.as_str()),
            "{cache}"
        );
        bodies.insert(body);
    }
    assert_eq!(misses, 1);
    assert_eq!(bodies.len(), 1, "all 50 bodies must be identical");
    let stats = server.stats(&c).await;
    let cache = &stats["cache"];
    assert_eq!(cache["misses"], 1);
    assert_eq!(cache["lookups"], 50);
    let others = cache["coalesced"].as_u64().unwrap()
        + cache["hits_memory"].as_u64().unwrap()
        + cache["hits_disk"].as_u64().unwrap();
    assert_eq!(others, 49);
    assert_eq!(stats["conversions"]["completed"], 1);
    server.stop().await;
}

#[tokio::test]
async fn fifty_distinct_uploads_stay_within_the_permits() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.conversion.workers = 2;
    config.conversion.max_concurrent = 2;
    let server = TestServer::start(config).await;
    let c = client();
    let clips: Vec<Vec<u8>> = (0..50).map(|i| clip(10.0, 100 + i)).collect();

    let done = Arc::new(AtomicBool::new(false));
    let max_active = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (c, url, done, max_active) = (
            c.clone(),
            server.url("/api/v1/concurrent-status"),
            done.clone(),
            max_active.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let v: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
                let active = v["concurrent_processing"]["active_conversions"]
                    .as_u64()
                    .unwrap();
                max_active.fetch_max(active, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let requests = clips
        .into_iter()
        .map(|upload| tokio::spawn(convert_at(c.clone(), server.url("/api/v1/convert"), upload)));
    let results = futures::future::join_all(requests).await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    for result in results {
        let (status, cache, body) = result.unwrap();
        assert_eq!(status, 200);
        assert_eq!(cache, "miss");
        assert_eq!(wav_info(&body), (160_000, 16_000, 1));
    }
    assert!(
        max_active.load(Ordering::SeqCst) <= 2,
        "more conversions ran than permits"
    );
    let stats = server.stats(&c).await;
    assert_eq!(stats["conversions"]["completed"], 50);
    assert_eq!(stats["conversions"]["max_concurrent"], 2);
    assert_eq!(stats["conversions"]["active"], 0);
    assert_eq!(stats["conversions"]["queued"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_nothing_hangs() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.conversion.workers = 1;
    config.conversion.max_concurrent = 1;
    config.conversion.max_queued = 2;
    let server = TestServer::start(config).await;
    let c = client();
    let clips: Vec<Vec<u8>> = (0..20).map(|i| clip(30.0, 1000 + i)).collect();
    let requests = clips.into_iter().map(|upload| {
        let (c, url) = (c.clone(), server.url("/api/v1/convert"));
        tokio::spawn(async move {
            let r = c.post(url).body(upload).send().await.unwrap();
            let status = r.status().as_u16();
            let retry_after = header(&r, "retry-after").to_owned();
            let body = r.bytes().await.unwrap();
            (status, retry_after, body)
        })
    });
    let results = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(requests),
    )
    .await
    .expect("the burst hung");
    let (mut ok, mut overloaded) = (0, 0);
    for result in results {
        let (status, retry_after, body) = result.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                overloaded += 1;
                assert_eq!(retry_after, "1");
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["code"], "overloaded");
                assert_eq!(v["status"], "error");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok={ok} overloaded={overloaded}"
    );
    assert_eq!(ok + overloaded, 20);
    let stats = server.stats(&c).await;
    assert_eq!(stats["conversions"]["rejected_overload"], overloaded);
    assert_eq!(stats["conversions"]["completed"], ok);
    // Health answers whatever the queue does, and a rejected clip was not stored.
    assert_eq!(server.health(&c).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn multipart_and_raw_bodies_give_the_same_key_and_bytes() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let c = client();
    let upload = clip(2.0, 3);
    let raw = server.post_convert(&c, "", upload.clone()).await;
    assert_eq!(raw.status(), 200);
    let raw_key = header(&raw, "etag").to_owned();
    let raw_body = raw.bytes().await.unwrap();

    let part = reqwest::multipart::Part::bytes(upload)
        .file_name("segment_0001.ogg")
        .mime_str("audio/ogg")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("user_prompt", "ignored")
        .part("audio_file", part);
    let multi = c
        .post(server.url("/api/v1/convert"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(multi.status(), 200);
    assert_eq!(header(&multi, "etag"), raw_key);
    assert_eq!(header(&multi, "x-cache"), "hit-memory");
    assert_eq!(multi.bytes().await.unwrap(), raw_body);
    server.stop().await;
}

async fn expect_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(
        response.status().as_u16(),
        status,
        "expected {status} {code}"
    );
    assert_eq!(header(&response, "content-type"), "application/json");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], code, "{v}");
    assert!(!v["message"].as_str().unwrap().is_empty());
}

async fn expect_get_error(
    c: &reqwest::Client,
    server: &TestServer,
    path: &str,
    status: u16,
    code: &str,
) {
    expect_error(c.get(server.url(path)).send().await.unwrap(), status, code).await;
}

#[tokio::test]
async fn every_error_code_from_a_real_request() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.max_upload_bytes = 200_000;
    config.limits.max_duration_seconds = 5;
    let server = TestServer::start(config).await;
    let c = client();
    let good = clip(2.0, 4);

    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    expect_error(
        server.post_convert(&c, "", garbage).await,
        415,
        "unsupported_format",
    )
    .await;
    let png = PNG.to_vec();
    expect_error(
        server.post_convert(&c, "", png).await,
        415,
        "unsupported_format",
    )
    .await;
    expect_error(
        server.post_convert(&c, "", Vec::new()).await,
        415,
        "unsupported_format",
    )
    .await;
    let truncated = good[..good.len() * 2 / 3].to_vec();
    expect_error(
        server.post_convert(&c, "", truncated).await,
        422,
        "truncated_stream",
    )
    .await;
    expect_error(
        server.post_convert(&c, "", vec![0u8; 200_001]).await,
        413,
        "payload_too_large",
    )
    .await;
    expect_error(
        server.post_convert(&c, "", clip(8.0, 5)).await,
        413,
        "audio_too_long",
    )
    .await;
    expect_error(
        server.post_convert(&c, "?rate=44100", good.clone()).await,
        400,
        "bad_parameter",
    )
    .await;
    expect_error(
        server.post_convert(&c, "?channels=3", good.clone()).await,
        400,
        "bad_parameter",
    )
    .await;
    expect_error(
        server.post_convert(&c, "?rate=fast", good.clone()).await,
        400,
        "bad_parameter",
    )
    .await;

    let no_field =
        reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(good.clone()));
    let r = c
        .post(server.url("/api/v1/convert"))
        .multipart(no_field)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
    let unterminated = c
        .post(server.url("/api/v1/convert"))
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"audio_file\"\r\n\r\nabc")
        .send()
        .await
        .unwrap();
    expect_error(unterminated, 400, "bad_request").await;

    expect_get_error(&c, &server, "/api/v1/audio/nothex", 400, "bad_parameter").await;
    let upper = "A".repeat(64);
    expect_get_error(
        &c,
        &server,
        &format!("/api/v1/audio/{upper}"),
        400,
        "bad_parameter",
    )
    .await;
    let unknown = "0".repeat(64);
    expect_get_error(
        &c,
        &server,
        &format!("/api/v1/audio/{unknown}"),
        404,
        "not_found",
    )
    .await;
    expect_get_error(&c, &server, "/no/such/route", 404, "not_found").await;

    // Nothing failed was stored, and the server still converts.
    let ok = server.post_convert(&c, "", good).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-cache"), "miss");
    // Five uploads reached a conversion and failed (garbage, PNG, empty,
    // truncated, too long); only the good one was stored.
    let stats = server.stats(&c).await;
    assert_eq!(stats["cache"]["computations_failed"], 5);
    assert_eq!(stats["cache"]["misses"], 6);
    assert_eq!(stats["conversions"]["failed"], 5);
    assert_eq!(stats["cache"]["memory"]["entries"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_conversion_past_its_deadline_answers_504_and_is_not_stored() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    // One microsecond: every conversion is past it at its first deadline check.
    config.limits.conversion_timeout_seconds = 0.000_001;
    let server = TestServer::start(config).await;
    let c = client();
    let upload = clip(10.0, 40);
    for _ in 0..2 {
        expect_error(
            server.post_convert(&c, "", upload.clone()).await,
            504,
            "conversion_timeout",
        )
        .await;
    }
    let stats = server.stats(&c).await;
    assert_eq!(
        stats["cache"]["misses"], 2,
        "a timed-out conversion is not stored"
    );
    assert_eq!(stats["conversions"]["failed"], 2);
    assert_eq!(stats["cache"]["memory"]["entries"], 0);
    server.stop().await;
}

#[tokio::test]
async fn api_keys_guard_everything_but_health() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.auth.api_keys = vec!["sesame".into(), "second".into()];
    let server = TestServer::start(config).await;
    let c = client();
    let upload = clip(1.0, 6);

    expect_error(
        server.post_convert(&c, "", upload.clone()).await,
        401,
        "unauthorized",
    )
    .await;
    let wrong = c
        .post(server.url("/api/v1/convert"))
        .header("X-API-Key", "sesam")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    expect_error(wrong, 401, "unauthorized").await;
    for path in [
        "/api/v1/stats",
        "/metrics",
        "/api/v1/performance",
        "/api/v1/concurrent-status",
    ] {
        expect_get_error(&c, &server, path, 401, "unauthorized").await;
    }
    let by_header = c
        .post(server.url("/api/v1/convert"))
        .header("X-API-Key", "sesame")
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let by_bearer = c
        .post(server.url("/api/v1/convert"))
        .bearer_auth("second")
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(by_bearer.status(), 200);
    for path in ["/api/v1/health", "/healthz", "/readyz"] {
        assert_eq!(
            c.get(server.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    server.stop().await;
}

fn assert_fields(v: &Value, paths: &[&str]) {
    for path in paths {
        let mut at = v;
        for part in path.split('.') {
            at = at
                .get(part)
                .unwrap_or_else(|| panic!("missing field {path} in {v}"));
        }
    }
}

/// Every sample line of Prometheus text format: `name{labels} value`.
fn assert_prometheus_text(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP") | Some(&"TYPE")),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
            }
        }
        names.insert(name.to_owned());
    }
    names
}

#[tokio::test]
async fn stats_metrics_and_monitoring_endpoints() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let c = client();
    for seed in [7, 8, 7, 9, 8, 7] {
        assert_eq!(
            server.post_convert(&c, "", clip(1.0, seed)).await.status(),
            200
        );
    }
    let _ = server.post_convert(&c, "", b"not audio".to_vec()).await;

    let stats = server.stats(&c).await;
    assert_fields(
        &stats,
        &[
            "cache.lookups",
            "cache.hits_memory",
            "cache.hits_disk",
            "cache.coalesced",
            "cache.misses",
            "cache.hit_rate",
            "cache.memory.entries",
            "cache.memory.bytes",
            "cache.memory.capacity_bytes",
            "cache.disk.entries",
            "cache.disk.bytes",
            "cache.disk.capacity_bytes",
            "cache.disk.size_on_disk_bytes",
            "cache.evictions",
            "cache.corrupt_records",
            "conversions.active",
            "conversions.queued",
            "conversions.completed",
            "conversions.failed",
            "conversions.rejected_overload",
            "conversions.max_concurrent",
            "conversions.workers",
            "conversions.utilization_percent",
            "conversions.avg_ms",
            "conversions.p50_ms",
            "conversions.p95_ms",
            "conversions.p99_ms",
            "uptime_seconds",
        ],
    );
    let cache = &stats["cache"];
    let n = |v: &Value| v.as_u64().unwrap();
    let lookups = n(&cache["lookups"]);
    assert_eq!(
        lookups,
        n(&cache["hits_memory"])
            + n(&cache["hits_disk"])
            + n(&cache["coalesced"])
            + n(&cache["misses"])
    );
    assert_eq!(lookups, 7);
    assert_eq!(
        n(&cache["misses"]),
        4,
        "three distinct clips and one bad upload"
    );
    assert_eq!(n(&cache["hits_memory"]), 3);
    let hit_rate = cache["hit_rate"].as_f64().unwrap();
    assert!((hit_rate - 3.0 / 7.0).abs() < 1e-3, "{hit_rate}");
    assert_eq!(stats["conversions"]["completed"], 3);
    assert_eq!(stats["conversions"]["failed"], 1);
    assert!(n(&cache["memory"]["bytes"]) > 0);

    let perf: Value = c
        .get(server.url("/api/v1/performance"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_fields(
        &perf,
        &[
            "timestamp",
            "system.cpu_percent",
            "system.memory.total_gb",
            "system.memory.available_gb",
            "system.memory.used_percent",
            "process.memory_mb",
            "process.cpu_percent",
            "process.threads",
            "audio_processing.total_requests",
            "audio_processing.average_processing_time",
            "audio_processing.conversion_stats.active_conversions",
            "audio_processing.conversion_stats.total_conversions",
            "audio_processing.config.max_concurrent_conversions",
            "audio_processing.config.max_converter_workers",
            "audio_processing.config.max_upload_size_mb",
            "audio_processing.config.supported_formats",
        ],
    );
    assert_eq!(perf["audio_processing"]["total_requests"], 7);
    assert_eq!(
        perf["audio_processing"]["conversion_stats"]["total_conversions"],
        4
    );

    let status: Value = c
        .get(server.url("/api/v1/concurrent-status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_fields(
        &status,
        &[
            "timestamp",
            "concurrent_processing.active_conversions",
            "concurrent_processing.max_concurrent_conversions",
            "concurrent_processing.utilization_percent",
            "concurrent_processing.total_conversions",
            "concurrent_processing.queue_available_slots",
            "worker_pool.max_workers",
            "performance_metrics.total_requests_processed",
            "performance_metrics.average_processing_time_seconds",
        ],
    );
    assert_eq!(
        status["concurrent_processing"]["queue_available_slots"],
        256
    );

    let health: Value = c
        .get(server.url("/api/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");
    assert_fields(&health, &["timestamp", "version", "uptime"]);

    let metrics = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(header(&metrics, "content-type").starts_with("text/plain"));
    let names = assert_prometheus_text(&metrics.text().await.unwrap());
    for name in [
        "opusgate_http_requests_total",
        "opusgate_cache_lookups_total",
        "opusgate_conversion_duration_seconds_bucket",
        "opusgate_conversions_in_progress",
        "opusgate_conversions_queued",
        "opusgate_store_bytes",
        "opusgate_store_entries",
    ] {
        assert!(names.contains(name), "/metrics lacks {name}");
    }
    server.stop().await;
}
