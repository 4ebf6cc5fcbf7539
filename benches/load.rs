//! Load scenarios of PERFORMANCE.md, side by side in one run: opusgate over
//! HTTP (server in process on 127.0.0.1:0, on its own runtime) against the
//! pure in-process decode, an ffmpeg subprocess per request (what the
//! original service ran), and a bare axum handler (the framework's ceiling).
//!
//! `cargo bench --bench load` runs every scenario; `cargo bench --bench load
//! -- cold fifty` runs those named (cold, fifty, single, hot, repeat, growth).
//! It prints Markdown rows.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opusgate::codec::{convert, ConvertOptions};
use opusgate::config::Config;
use opusgate::loadtest::{run_load, Clip, LoadtestArgs};
use serde_json::Value;
use support::background::Background;
use support::clips::clip;
use support::process::{store_dir, ServerProcess};

/// opusgate itself, in process on its own runtime, with the bench's store
/// settings; given 200 ms to open its store before the first request.
fn opusgate_server(dir: &Path) -> Background {
    let mut config = Config::default();
    config.cache.dir = dir.to_path_buf();
    config.conversion.max_queued = 4096;
    if let Ok(v) = std::env::var("BENCH_DISK_BYTES") {
        config.cache.disk_bytes = v.parse().unwrap_or(0);
    }
    let server = Background::spawn(Box::new(move |listener, stop| {
        Box::pin(async move {
            let _ = opusgate::server::run(listener, config, async move {
                let _ = stop.await;
            })
            .await;
        })
    }));
    std::thread::sleep(Duration::from_millis(200));
    server
}

/// Seeds no earlier run used, so that every clip is new to the store.
fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn pure_decode_ms(upload: &[u8]) -> f64 {
    let started = Instant::now();
    let out = convert(upload, &ConvertOptions::default()).expect("convert");
    std::hint::black_box(out.wav.len());
    started.elapsed().as_secs_f64() * 1000.0
}

fn ffmpeg_ms(upload: &[u8], dir: &Path) -> f64 {
    let input = dir.join("in.opus");
    let output = dir.join("out.wav");
    std::fs::write(&input, upload).expect("write clip");
    let started = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&input)
        .args(["-ar", "16000", "-ac", "1"])
        .arg(&output)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    started.elapsed().as_secs_f64() * 1000.0
}

async fn http_ms(client: &reqwest::Client, base: &str, upload: Vec<u8>) -> f64 {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/convert"))
        .body(upload)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.expect("body");
    started.elapsed().as_secs_f64() * 1000.0
}

fn args(
    base: &str,
    concurrency: usize,
    requests: Option<usize>,
    duration: Option<f64>,
) -> LoadtestArgs {
    LoadtestArgs {
        url: vec![base.to_owned()],
        api_key: None,
        concurrency,
        requests,
        duration,
        rate: 16_000,
        channels: 1,
        files: Vec::new(),
        generate: 1,
        seconds: 10.0,
        seed: Some(1),
        repeat_ratio: None,
        zipf: None,
        multipart: false,
        json: false,
    }
}

fn clips(uploads: &[Vec<u8>]) -> Vec<Clip> {
    uploads
        .iter()
        .map(|u| Clip::new(u.clone(), 16_000, 1).expect("clip"))
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn cold(client: &reqwest::Client, server: &Background, tmp: &Path) {
    println!("\n### 1. One clip, cold (median of 15, fresh content each time)\n");
    println!("| clip | opusgate over HTTP | pure decode | ffmpeg subprocess | HTTP / decode | ffmpeg / HTTP |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for seconds in [10.0, 60.0] {
        let (mut http, mut pure, mut ff) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..15 {
            let upload = clip(seconds, fresh_seed() + i);
            pure.push(pure_decode_ms(&upload));
            ff.push(ffmpeg_ms(&upload, tmp));
            http.push(http_ms(client, &server.base, upload).await);
        }
        let (h, p, f) = (median(http), median(pure), median(ff));
        println!(
            "| {seconds} s | {h:.2} ms | {p:.2} ms | {f:.1} ms | {:.2}x | {:.1}x |",
            h / p,
            f / h
        );
    }
}

async fn fifty_distinct(server: &Background) {
    println!("\n### 2. 50 simultaneous uploads of 50 distinct 10 s clips\n");
    let seed = fresh_seed();
    let uploads: Vec<Vec<u8>> = (0..50).map(|i| clip(10.0, seed + i)).collect();
    let decode_sum: f64 = uploads.iter().map(|u| pure_decode_ms(u)).sum();
    let bound = decode_sum / cores() as f64;
    let report = run_load(
        &args(&server.base, 50, Some(50), None),
        clips(&uploads),
        false,
    )
    .await
    .expect("load");
    let wall = report.total_time_s * 1000.0;
    println!("| all 50 done | sum of pure decodes / {} cores | ratio | success | conversions | original service |", cores());
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {wall:.1} ms | {bound:.1} ms | {:.2}x | {}/50 | {} | 6-10 s on 16 cores |",
        wall / bound,
        report.success,
        report
            .server
            .as_ref()
            .map_or(0, |s| s.conversions_completed)
    );
}

async fn single_hot_clip(server: &Background) {
    println!("\n### 3. 50 simultaneous uploads of one new 60 s clip\n");
    let upload = clip(60.0, fresh_seed());
    let one = pure_decode_ms(&upload);
    let a = args(&server.base, 50, Some(50), None);
    let cold = run_load(&a, clips(std::slice::from_ref(&upload)), false)
        .await
        .expect("load");
    let hot = run_load(&a, clips(std::slice::from_ref(&upload)), false)
        .await
        .expect("load");
    let (cold_ms, hot_ms) = (cold.total_time_s * 1000.0, hot.total_time_s * 1000.0);
    let conversions = cold.server.as_ref().map_or(0, |s| s.conversions_completed);
    println!("| wall, cold | one conversion | same 50 once cached | bound (sum) | ratio | conversions | outcomes |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {cold_ms:.1} ms | {one:.1} ms | {hot_ms:.1} ms | {:.1} ms | {:.2}x | {conversions} | {:?} |",
        one + hot_ms,
        cold_ms / (one + hot_ms),
        cold.cache_outcomes
    );
}

async fn hot(server: &Background) {
    println!("\n### 4. Hot path: memory hits of a 10 s clip at 50 connections (2 x 3 s each, alternating)\n");
    let upload = clip(10.0, fresh_seed());
    let wav = Bytes::from(
        convert(&upload, &ConvertOptions::default())
            .expect("convert")
            .wav,
    );
    let ceiling = Background::ceiling(wav.clone(), None);
    let c = clips(std::slice::from_ref(&upload));
    // Warm the store, then measure.
    let _ = run_load(&args(&server.base, 1, Some(1), None), c.clone(), false).await;
    println!("upload {} bytes, WAV {} bytes\n", upload.len(), wav.len());
    println!("| server | requests/s | p50 ms | p99 ms | success |");
    println!("| --- | --- | --- | --- | --- |");
    // Alternate A B A B so that drift on a shared machine hits both alike.
    let targets = [
        ("opusgate (hit-memory)", &server.base),
        ("axum ceiling", &ceiling.base),
    ];
    let mut totals = [(0.0, 0.0, 0.0, 0usize, 0usize); 2];
    for _round in 0..2 {
        for (i, (_, base)) in targets.iter().enumerate() {
            let report = run_load(&args(base, 50, None, Some(3.0)), c.clone(), false)
                .await
                .expect("load");
            let t = &mut totals[i];
            t.0 += report.throughput_rps / 2.0;
            t.1 += report.latency_ms["p50"] / 2.0;
            t.2 += report.latency_ms["p99"] / 2.0;
            t.3 += report.success;
            t.4 += report.requests;
        }
    }
    for ((name, _), t) in targets.iter().zip(&totals) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {}/{} |",
            t.0, t.1, t.2, t.3, t.4
        );
    }
    println!(
        "\nopusgate / ceiling: {:.1}% of requests/s, p99 {:.2}x",
        totals[0].0 / totals[1].0 * 100.0,
        totals[0].2 / totals[1].2
    );
}

async fn repeat(tmp: &Path) {
    println!(
        "\n### 5. Repeat workload: 10,000 requests over 500 clips, Zipf s = 1.0, 50 connections\n"
    );
    let dir = tmp.join("repeat");
    std::fs::create_dir_all(&dir).expect("dir");
    // The release binary as a child process, so that its memory is its own.
    let server = ServerProcess::start(
        &store_dir(&dir),
        &[("RUST_LOG", "warn,opusgate::server=info".into())],
    );
    let seed = fresh_seed();
    let uploads: Vec<Vec<u8>> = (0..500).map(|i| clip(10.0, seed + i)).collect();
    let mut a = args(&server.base, 50, Some(10_000), None);
    a.zipf = Some(1.0);
    let report = run_load(&a, clips(&uploads), false).await.expect("load");
    let s = report.server.clone().unwrap_or_default();
    let mb = |kb: u64| kb as f64 / 1024.0;
    let (peak, now) = (mb(server.peak_rss_kb()), mb(server.rss_kb()));
    println!("| requests | success | hit rate (server) | conversions | requests/s | p99 ms | server peak RSS | server RSS after | memory tier capacity |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {:.1}% | {} | {:.0} | {:.2} | {peak:.0} MB | {now:.0} MB | {} MB |",
        report.requests,
        report.success,
        s.hit_rate * 100.0,
        s.conversions_completed,
        report.throughput_rps,
        report.latency_ms["p99"],
        Config::default().cache.memory_bytes / 1024 / 1024
    );
}

async fn growth(client: &reqwest::Client, server: &Background) {
    println!("\n### 6a. Cold conversion over HTTP against clip length (median of 3)\n");
    println!("| clip | over HTTP | pure decode | x real time (HTTP) |");
    println!("| --- | --- | --- | --- |");
    for seconds in [10.0, 60.0, 300.0] {
        let (mut http, mut pure) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let upload = clip(seconds, fresh_seed() + i);
            pure.push(pure_decode_ms(&upload));
            http.push(http_ms(client, &server.base, upload).await);
        }
        let (h, p) = (median(http), median(pure));
        println!(
            "| {seconds} s | {h:.1} ms | {p:.1} ms | {:.0}x |",
            seconds * 1000.0 / h
        );
    }
    println!("\n### 6b. Hot throughput against concurrency (10 s clip, memory hits, 3 s each)\n");
    let upload = clip(10.0, fresh_seed());
    let c = clips(std::slice::from_ref(&upload));
    let _ = run_load(&args(&server.base, 1, Some(1), None), c.clone(), false).await;
    println!("| connections | requests/s | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- |");
    for concurrency in [1, 10, 50, 200] {
        let report = run_load(
            &args(&server.base, concurrency, None, Some(3.0)),
            c.clone(),
            false,
        )
        .await
        .expect("load");
        println!(
            "| {concurrency} | {:.0} | {:.2} | {:.2} |",
            report.throughput_rps, report.latency_ms["p50"], report.latency_ms["p99"]
        );
    }
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = opusgate_server(&tmp.path().join("store"));
    let runtime = tokio::runtime::Runtime::new().expect("client runtime");
    let client = Arc::new(reqwest::Client::new());
    println!("opusgate load scenarios on {} cores", cores());
    runtime.block_on(async {
        if run("cold") {
            cold(&client, &server, tmp.path()).await;
        }
        if run("fifty") {
            fifty_distinct(&server).await;
        }
        if run("single") {
            single_hot_clip(&server).await;
        }
        if run("hot") {
            hot(&server).await;
        }
        if run("repeat") {
            repeat(tmp.path()).await;
        }
        if run("growth") {
            growth(&client, &server).await;
        }
        let stats: Option<Value> = async {
            client
                .get(format!("{}/api/v1/stats", server.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        if let Some(stats) = stats {
            println!("\nserver stats at the end: {}", stats["conversions"]);
        }
    });
}
