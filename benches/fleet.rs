//! Fleet: four release `opusgate` instances on loopback, run side by side
//! with and without a shared Redis tier on the same workloads, and the
//! failure drills, printed as the tables of SCALING.md (not in CI).
//!
//! ```sh
//! cargo bench --bench fleet
//! FLEET_ZIPF_REQUESTS=4000 cargo bench --bench fleet
//! ```
//!
//! - conversions (summed `cache.misses`) for 50 simultaneous identical
//!   uploads of a new 10 s clip spread round-robin, and for a Zipf(1.0)
//!   repeat workload over 500 clips (`opusgate loadtest` with four `--url`s);
//! - backend calls for 50 identical `translate_audio` requests (a stand-in
//!   backend on loopback);
//! - latency of a 10 s clip answered `hit-shared`, `hit-disk` and
//!   `hit-memory` (p50/p95 over 100 clips);
//! - drills: Redis killed under load, restarted, hung (SIGSTOP), and the
//!   lock holder killed mid-conversion: 5xx counts and the time each takes;
//! - a value over `max_value_bytes` (a 300 s clip, 9.6 MB): conversions.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use opusgate::loadtest::{prepare_clips, run_load, LoadtestArgs};
use reqwest::multipart::{Form, Part};
use support::backend::Backend;
use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::ogg::reserial;
use support::process::{store_dir, ServerProcess};
use support::redis::RedisServer;

const INSTANCES: usize = 4;
const CLIENT_KEY: &str = "fleet-bench-key";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` instances with their own stores, sharing `redis` when given.
fn fleet(
    dirs: &tempfile::TempDir,
    tag: &str,
    n: usize,
    redis: Option<&RedisServer>,
    extra: &[(&str, String)],
) -> Vec<ServerProcess> {
    (0..n)
        .map(|i| {
            let dir = dirs.path().join(format!("{tag}-{i}"));
            std::fs::create_dir_all(&dir).expect("instance dir");
            let mut env: Vec<(&str, String)> = vec![("OPUSGATE_AUTH__API_KEYS", CLIENT_KEY.into())];
            if let Some(redis) = redis {
                env.push(("OPUSGATE_SHARED__URL", redis.url()));
            }
            env.extend(extra.iter().cloned());
            ServerProcess::start(&store_dir(&dir), &env)
        })
        .collect()
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-api-key",
        reqwest::header::HeaderValue::from_static(CLIENT_KEY),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

async fn summed(client: &reqwest::Client, fleet: &[ServerProcess], path: &[&str]) -> u64 {
    let mut total = 0;
    for server in fleet {
        let mut v = server.stats(client).await;
        for p in path {
            v = v[*p].clone();
        }
        total += v.as_u64().unwrap_or(0);
    }
    total
}

/// 50 simultaneous identical uploads of a new clip, round-robin: the
/// conversions the fleet ran.
async fn fifty_identical(
    client: &reqwest::Client,
    fleet: &[ServerProcess],
    seconds: f64,
    seed: u64,
) -> u64 {
    let upload = clip(seconds, seed);
    let expected = fresh_wav(&upload);
    let before = summed(client, fleet, &["cache", "misses"]).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = fleet[i % fleet.len()].url("/api/v1/convert");
            let (client, upload) = (client.clone(), upload.clone());
            tokio::spawn(async move {
                let r = client.post(url).body(upload).send().await.expect("send");
                (r.status().as_u16(), r.bytes().await.expect("body"))
            })
        })
        .collect();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(body.as_ref(), expected.as_slice(), "wrong audio");
    }
    summed(client, fleet, &["cache", "misses"]).await - before
}

/// A Zipf(1.0) repeat workload over 500 clips through `opusgate loadtest`:
/// (requests, conversions, fleet hit rate, p50 ms, p99 ms).
async fn zipf(fleet: &[ServerProcess], requests: usize, seed: u64) -> (usize, u64, f64, f64, f64) {
    let args = LoadtestArgs {
        url: fleet.iter().map(|s| s.base.clone()).collect(),
        api_key: Some(CLIENT_KEY.into()),
        concurrency: 16,
        requests: Some(requests),
        duration: None,
        rate: 16_000,
        channels: 1,
        files: Vec::new(),
        generate: 500,
        seconds: 2.0,
        seed: Some(seed),
        repeat_ratio: None,
        zipf: Some(1.0),
        multipart: false,
        json: false,
    };
    let clips = prepare_clips(&args).expect("clips");
    let report = run_load(&args, clips, false).await.expect("load");
    assert_eq!(report.success, requests, "{}", report.text());
    let server = report.server.clone().expect("fleet stats");
    (
        requests,
        server.misses,
        server.hit_rate,
        report.latency_ms.get("p50").copied().unwrap_or(f64::NAN),
        report.latency_ms.get("p99").copied().unwrap_or(f64::NAN),
    )
}

/// 50 identical translate_audio requests over the fleet: backend calls.
async fn fifty_translations(
    client: &reqwest::Client,
    fleet: &[ServerProcess],
    backend: &Backend,
    seed: u64,
) -> u64 {
    let upload = clip(3.0, seed);
    let before = backend.calls();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = fleet[i % fleet.len()].url("/api/v1/translate_audio");
            let (client, upload) = (client.clone(), upload.clone());
            tokio::spawn(async move {
                let form = Form::new().part(
                    "audio_file",
                    Part::bytes(upload).file_name("segment_0001.ogg"),
                );
                client
                    .post(url)
                    .multipart(form)
                    .send()
                    .await
                    .expect("send")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    backend.calls() - before
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

async fn timed_convert(
    client: &reqwest::Client,
    server: &ServerProcess,
    upload: &[u8],
) -> (String, f64) {
    let started = Instant::now();
    let r = client
        .post(server.url("/api/v1/convert"))
        .body(upload.to_vec())
        .send()
        .await
        .expect("send");
    let cache = header(&r, "x-cache").to_owned();
    r.bytes().await.expect("body");
    (cache, started.elapsed().as_secs_f64() * 1000.0)
}

/// p50/p95 ms of `hit-shared`, `hit-disk` and `hit-memory` for 10 s clips.
async fn hit_latencies(
    client: &reqwest::Client,
    a: &ServerProcess,
    b: &ServerProcess,
    c: &ServerProcess,
) -> Vec<(&'static str, f64, f64)> {
    let mut shared = Vec::new();
    let mut disk = Vec::new();
    let mut memory = Vec::new();
    for k in 0..100 {
        let upload = clip(10.0, 90_000 + k);
        assert_eq!(timed_convert(client, a, &upload).await.0, "miss");
        let (cache, ms) = timed_convert(client, b, &upload).await;
        assert_eq!(cache, "hit-shared");
        shared.push(ms);
        let (cache, ms) = timed_convert(client, b, &upload).await;
        assert_eq!(cache, "hit-memory");
        memory.push(ms);
        // c's memory tier holds nothing of this size: its repeat is a disk hit.
        assert_eq!(timed_convert(client, c, &upload).await.0, "hit-shared");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (cache, ms) = timed_convert(client, c, &upload).await;
        assert_eq!(cache, "hit-disk");
        disk.push(ms);
    }
    [
        ("hit-memory", memory),
        ("hit-disk", disk),
        ("hit-shared", shared),
    ]
    .into_iter()
    .map(|(name, mut v)| {
        v.sort_by(f64::total_cmp);
        (name, percentile(&v, 50.0), percentile(&v, 95.0))
    })
    .collect()
}

/// Polls `shared.up` on `server` until it is `want`: the seconds it took.
async fn until_up(client: &reqwest::Client, server: &ServerProcess, want: bool) -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if server.stats(client).await["shared"]["up"].as_bool() == Some(want) {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f64::NAN
}

/// Sends a new upload every time (one 1 s clip under a new Ogg serial
/// number: other bytes, so a lookup in every tier and a conversion, with a
/// known answer), round-robin, for `seconds`: (answers, 5xx, wrong bytes,
/// p99 ms).
async fn background_load(
    client: reqwest::Client,
    urls: Vec<String>,
    seconds: f64,
    seed: u64,
) -> (usize, usize, usize, f64) {
    let base = clip(1.0, seed);
    let expected = fresh_wav(&base);
    let started = Instant::now();
    let (mut answers, mut errors, mut wrong) = (0, 0, 0);
    let mut latencies = Vec::new();
    let mut i = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        let upload = reserial(&base, (seed as u32).wrapping_add(i as u32 + 1));
        let t = Instant::now();
        let r = client
            .post(format!("{}/api/v1/convert", urls[i % urls.len()]))
            .body(upload)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        answers += 1;
        if status >= 500 {
            errors += 1;
        } else if body.as_ref() != expected.as_slice() {
            wrong += 1;
        }
        i += 1;
    }
    latencies.sort_by(f64::total_cmp);
    (answers, errors, wrong, percentile(&latencies, 99.0))
}

#[tokio::main]
async fn main() {
    let zipf_requests = env_usize("FLEET_ZIPF_REQUESTS", 2000);
    let dirs = tempfile::tempdir().expect("tempdir");
    let client = client();
    let backend = Backend::start().await;
    let proxy = [
        ("OPUSGATE_UPSTREAM__URL", backend.url.clone()),
        ("OPUSGATE_UPSTREAM__MODEL", "fleet-model".to_owned()),
    ];

    println!("## Work saved: {INSTANCES} instances, round-robin\n");
    println!("| workload | without shared tier | with shared tier |");
    println!("| --- | --- | --- |");
    let mut rows: Vec<(String, String, String)> = Vec::new();
    {
        let alone = fleet(&dirs, "alone", INSTANCES, None, &proxy);
        let redis = RedisServer::start();
        let shared = fleet(&dirs, "shared", INSTANCES, Some(&redis), &proxy);
        let (c1, c2) = (
            fifty_identical(&client, &alone, 10.0, 1).await,
            fifty_identical(&client, &shared, 10.0, 1).await,
        );
        rows.push((
            "50 identical uploads of a new 10 s clip: conversions".into(),
            c1.to_string(),
            c2.to_string(),
        ));
        let (t1, t2) = (
            fifty_translations(&client, &alone, &backend, 2).await,
            fifty_translations(&client, &shared, &backend, 3).await,
        );
        rows.push((
            "50 identical translate_audio: backend calls".into(),
            t1.to_string(),
            t2.to_string(),
        ));
        let (l1, l2) = (
            fifty_identical(&client, &alone, 300.0, 5).await,
            fifty_identical(&client, &shared, 300.0, 5).await,
        );
        rows.push((
            "50 identical uploads of a 300 s clip (9.6 MB WAV, over max_value_bytes): conversions"
                .into(),
            l1.to_string(),
            l2.to_string(),
        ));
        let z1 = zipf(&alone, zipf_requests, 10_000).await;
        let z2 = zipf(&shared, zipf_requests, 20_000).await;
        rows.push((
            format!(
                "Zipf(1.0) over 500 clips of 2 s, {} requests: conversions",
                z1.0
            ),
            z1.1.to_string(),
            z2.1.to_string(),
        ));
        rows.push((
            "same: fleet hit rate".into(),
            format!("{:.3}", z1.2),
            format!("{:.3}", z2.2),
        ));
        rows.push((
            "same: p50 / p99 ms".into(),
            format!("{:.1} / {:.1}", z1.3, z1.4),
            format!("{:.1} / {:.1}", z2.3, z2.4),
        ));
        for (what, a, b) in &rows {
            println!("| {what} | {a} | {b} |");
        }

        println!("\n## Latency of a 10 s clip (320 kB WAV) by outcome, 100 clips\n");
        println!("| outcome | p50 ms | p95 ms |");
        println!("| --- | --- | --- |");
        let c = fleet(
            &dirs,
            "tiny-memory",
            1,
            Some(&redis),
            &[("OPUSGATE_CACHE__MEMORY_BYTES", "1".into())],
        );
        for (name, p50, p95) in hit_latencies(&client, &shared[0], &shared[1], &c[0]).await {
            println!("| {name} | {p50:.2} | {p95:.2} |");
        }
    }

    println!("\n## Failure drills (2 instances, 1 s clips round-robin, one client)\n");
    println!("| drill | answers | 5xx | wrong | p99 ms | time |");
    println!("| --- | --- | --- | --- | --- | --- |");
    {
        let mut redis = RedisServer::start();
        let pair = fleet(
            &dirs,
            "drill",
            2,
            Some(&redis),
            &[("OPUSGATE_SHARED__TIMEOUT_MS", "200".into())],
        );
        let urls: Vec<String> = pair.iter().map(|s| s.base.clone()).collect();
        until_up(&client, &pair[0], true).await;

        let load = tokio::spawn(background_load(client.clone(), urls.clone(), 6.0, 1_000));
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.kill9();
        let down = until_up(&client, &pair[0], false).await;
        let (n, e, w, p99) = load.await.expect("load");
        println!("| Redis killed under load | {n} | {e} | {w} | {p99:.1} | `shared.up` false after {down:.2} s |");

        let load = tokio::spawn(background_load(client.clone(), urls.clone(), 6.0, 2_000));
        redis.restart();
        let up = until_up(&client, &pair[0], true).await;
        let (n, e, w, p99) = load.await.expect("load");
        println!(
            "| Redis restarted | {n} | {e} | {w} | {p99:.1} | `shared.up` true after {up:.2} s |"
        );

        let load = tokio::spawn(background_load(client.clone(), urls.clone(), 8.0, 3_000));
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.pause();
        let hung = until_up(&client, &pair[0], false).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.resume();
        let back = until_up(&client, &pair[0], true).await;
        let (n, e, w, p99) = load.await.expect("load");
        println!("| Redis hung (SIGSTOP) 3 s+ | {n} | {e} | {w} | {p99:.1} | up false after {hung:.2} s, true {back:.2} s after SIGCONT |");
    }
    {
        let redis = RedisServer::start();
        let lease = 2;
        let trio = fleet(
            &dirs,
            "holder",
            3,
            Some(&redis),
            &[("OPUSGATE_SHARED__LEASE_SECONDS", lease.to_string())],
        );
        // 240 s at 16 kHz mono is 7.7 MB: under max_value_bytes, so shared.
        let upload = clip(240.0, 4_000);
        let expected = fresh_wav(&upload);
        let started = Instant::now();
        let tasks: Vec<_> = trio
            .iter()
            .map(|s| {
                let (client, url, upload) =
                    (client.clone(), s.url("/api/v1/convert"), upload.clone());
                tokio::spawn(async move {
                    let r = client.post(url).body(upload).send().await;
                    match r {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                        ),
                        Err(_) => (0, Vec::new()),
                    }
                })
            })
            .collect();
        let holder = loop {
            let keys = redis.cli(&["--scan", "--pattern", "og:v1:*:wav:lock"]);
            if let Some(lock) = keys.lines().next() {
                let token = redis.cli(&["GET", lock]);
                let pid: u32 = token
                    .split('@')
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
                if let Some(i) = trio.iter().position(|s| s.pid() == pid) {
                    break i;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no lock appeared"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut trio = trio;
        let killed_at = started.elapsed().as_secs_f64();
        trio.remove(holder).kill9();
        let mut right = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let (status, body) = task.await.expect("task");
            if i != holder && status == 200 && body == expected {
                right += 1;
            }
        }
        let took = started.elapsed().as_secs_f64();
        let conversions = summed(&client, &trio, &["cache", "misses"]).await;
        let takeovers = summed(&client, &trio, &["shared", "lock_takeovers"]).await;
        println!(
            "| lock holder killed (240 s clip, lease {lease} s) | {right}/2 right | 0 | 0 | - | killed at {killed_at:.2} s, answered at {took:.2} s; survivors' conversions {conversions}, takeovers {takeovers} |"
        );
    }
}
