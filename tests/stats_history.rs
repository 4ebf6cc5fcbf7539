//! `GET /api/v1/stats/history`: under load, the ring buffer fills one
//! point per interval up to `console.history_points` and then holds
//! exactly that many, newest last; every point is a `/api/v1/stats` object
//! whose counters never go back; a point never changes once taken; the
//! buffer's memory (its slots plus the points' text, `retained_bytes`)
//! stops growing once it is full; `since` returns only newer points; the
//! route wants the key like `/api/v1/stats`; `history_points = 0` keeps
//! none.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use support::clips::clip;
use support::http::Api as _;
use support::server::{config_in, data_dir, TestServer};

const KEY: &str = "history-test-key";

fn keyed_client() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(KEY));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A server asking for [`KEY`] that keeps `points` history points, one a
/// second.
async fn server(dir: &Path, points: usize) -> TestServer {
    let mut config = config_in(dir);
    config.auth.api_keys = vec![KEY.into()];
    config.console.history_points = points;
    config.console.history_interval_seconds = 1;
    TestServer::start(config).await
}

async fn history(server: &TestServer, query: &str) -> Value {
    let r = keyed_client()
        .get(server.url(&format!("/api/v1/stats/history{query}")))
        .send()
        .await
        .expect("history request");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    r.json().await.expect("history JSON")
}

fn points(history: &Value) -> &Vec<Value> {
    history["points"].as_array().expect("points")
}

fn time(point: &Value) -> f64 {
    point["unix_seconds"].as_f64().expect("unix_seconds")
}

/// Uploads new clips and repeats until `stop`: misses and hits.
async fn load(server_url: String, stop: Arc<AtomicBool>) {
    let http = keyed_client();
    let clips: Vec<Vec<u8>> = (0..10).map(|seed| clip(0.5, 500 + seed)).collect();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let r = http
            .post(format!("{server_url}/api/v1/convert"))
            .body(clips[i % clips.len()].clone())
            .send()
            .await
            .expect("convert");
        assert_eq!(r.status(), 200);
        i += 1;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The counters of a stats object that may only grow.
fn counters(stats: &Value) -> Vec<(&'static str, u64)> {
    let c = &stats["cache"];
    let v = &stats["conversions"];
    [
        ("cache.lookups", &c["lookups"]),
        ("cache.hits_memory", &c["hits_memory"]),
        ("cache.hits_disk", &c["hits_disk"]),
        ("cache.coalesced", &c["coalesced"]),
        ("cache.misses", &c["misses"]),
        ("cache.computations_started", &c["computations_started"]),
        ("cache.evictions.memory", &c["evictions"]["memory"]),
        ("conversions.completed", &v["completed"]),
        ("conversions.failed", &v["failed"]),
        ("conversions.rejected_overload", &v["rejected_overload"]),
        ("uptime_seconds", &stats["uptime_seconds"]),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.as_u64().unwrap_or_else(|| panic!("{name}"))))
    .collect()
}

/// The bytes the points' text takes (each as the server serialized it).
fn text_bytes(history: &Value) -> u64 {
    points(history)
        .iter()
        .map(|p| p["stats"].to_string().len() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_fills_to_its_size_then_holds_it_with_bounded_memory() {
    const CAPACITY: usize = 8;
    let dir = data_dir();
    let server = server(dir.path(), CAPACITY).await;
    let live = server.stats(&keyed_client()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(server.base.clone(), stop.clone()));

    // Every point seen, by time (as bits, exact), and how it read.
    let mut seen: BTreeMap<u64, Value> = BTreeMap::new();
    let mut slots_overhead = None;
    let mut retained_when_full = Vec::new();
    let mut previous_last: Option<f64> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    // Until the buffer has turned over twice.
    while seen.len() < CAPACITY * 3 {
        assert!(
            Instant::now() < deadline,
            "only {} points in 120 s",
            seen.len()
        );
        let h = history(&server, "").await;
        assert_eq!(h["interval_seconds"], 1);
        assert_eq!(h["capacity"], CAPACITY);
        let ps = points(&h);
        // Oldest first, strictly.
        for pair in ps.windows(2) {
            assert!(time(&pair[0]) < time(&pair[1]), "out of order: {h}");
        }
        // No point was missed between two reads (the buffer overlaps the
        // previous read), so `seen` counts every point ever taken.
        if let (Some(last), Some(first)) = (previous_last, ps.first()) {
            assert!(time(first) <= last, "a gap after {last}: {h}");
        }
        for p in ps {
            match seen.get(&time(p).to_bits()) {
                // A point never changes once taken.
                Some(before) => assert_eq!(before, &p["stats"]),
                None => {
                    seen.insert(time(p).to_bits(), p["stats"].clone());
                }
            }
        }
        // The right number of points: all taken so far, up to the size.
        assert_eq!(ps.len(), seen.len().min(CAPACITY), "{h}");
        if let Some(p) = ps.last() {
            previous_last = Some(time(p));
        }
        // Memory: the slots are allocated once (the same overhead from the
        // first read on), and beyond them only the text of the points held.
        let retained = h["retained_bytes"].as_u64().expect("retained_bytes");
        let overhead = retained - text_bytes(&h);
        assert_eq!(*slots_overhead.get_or_insert(overhead), overhead);
        if ps.len() == CAPACITY {
            retained_when_full.push((retained, text_bytes(&h)));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    loader.await.expect("load");

    // Each point is the /api/v1/stats object of its time.
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut previous: Option<&Value> = None;
    for stats in seen.values() {
        assert_eq!(keys(stats), keys(&live));
        assert_eq!(keys(&stats["cache"]), keys(&live["cache"]));
        assert_eq!(keys(&stats["conversions"]), keys(&live["conversions"]));
        if let Some(before) = previous {
            for ((name, a), (_, b)) in counters(before).into_iter().zip(counters(stats)) {
                assert!(a <= b, "{name} went from {a} to {b}");
            }
        }
        previous = Some(stats);
    }
    let (first, last) = (
        seen.values().next().expect("a point"),
        seen.values().last().expect("a point"),
    );
    assert!(
        last["cache"]["lookups"].as_u64() > first["cache"]["lookups"].as_u64(),
        "the load does not show in the history"
    );
    assert!(last["cache"]["hits_memory"].as_u64() > Some(0));
    // The newest point is no newer than the stats now.
    let now = server.stats(&keyed_client()).await;
    for ((name, a), (_, b)) in counters(last).into_iter().zip(counters(&now)) {
        assert!(a <= b, "{name}: {a} in the history, {b} now");
    }
    // Full from some read on, and then never more than the slots and the
    // text of CAPACITY points.
    assert!(
        retained_when_full.len() > CAPACITY,
        "{retained_when_full:?}"
    );
    let overhead = slots_overhead.expect("read");
    for (retained, text) in &retained_when_full {
        assert_eq!(*retained, overhead + text);
    }
    server.stop().await;
}

#[tokio::test]
async fn since_returns_only_newer_points_and_bad_queries_are_refused() {
    let dir = data_dir();
    let server = server(dir.path(), 10).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let all = loop {
        let h = history(&server, "").await;
        if points(&h).len() >= 3 {
            break h;
        }
        assert!(Instant::now() < deadline, "no 3 points in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ps = points(&all);
    let since = time(&ps[ps.len() - 2]);
    let newer = history(&server, &format!("?since={since}")).await;
    let newer_times: Vec<f64> = points(&newer).iter().map(time).collect();
    assert!(!newer_times.is_empty() && newer_times.iter().all(|t| *t > since));
    assert_eq!(newer_times[0], time(&ps[ps.len() - 1]));
    let none = history(&server, "?since=99999999999").await;
    assert!(points(&none).is_empty());

    let http = keyed_client();
    for query in [
        "?since=yesterday",
        "?since=1&since=2",
        "?until=5",
        "?since=NaN",
    ] {
        let r = http
            .get(server.url(&format!("/api/v1/stats/history{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "bad_parameter", "{query}");
    }
    // Behind the key, like /api/v1/stats.
    let anonymous = reqwest::Client::new();
    for path in ["/api/v1/stats", "/api/v1/stats/history"] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn zero_points_keeps_no_history() {
    let dir = data_dir();
    let server = server(dir.path(), 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = history(&server, "").await;
    assert_eq!(h["capacity"], 0);
    assert!(points(&h).is_empty(), "{h}");
    server.stop().await;
}
