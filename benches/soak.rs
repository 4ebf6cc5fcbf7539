//! Soak: the release binary under a steady mixed load for 20 minutes (not in
//! CI), sampling its RSS, open file descriptors and threads every 10 s. They
//! must stay flat once the caches have filled; every answer is checked (a
//! WAV byte for byte against a fresh conversion, an error for its status).
//!
//! ```sh
//! cargo bench --bench soak                       # 20 min, a sample every 10 s
//! SOAK_SECONDS=120 SOAK_SAMPLE_SECONDS=5 cargo bench --bench soak
//! ```
//!
//! The mix per request: 25 % a repeat of one of 50 clips (memory hits), 25 % a
//! new upload (a clip with a new Ogg serial number: other bytes, same audio,
//! so a real conversion whose answer is still known), 10 % one of the
//! client's last 300 new uploads again (mostly disk hits), 10 % multipart
//! uploads, 10 % hostile uploads (garbage, cut-off, too large), 10 % reads
//! by key, 10 % stats and health. The memory tier is 32 MiB and the disk
//! tier 256 MiB, so both evict throughout.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::ogg::reserial;
use support::process::{store_dir, ServerProcess};
use support::rng::XorShift;

const BASE_CLIPS: usize = 50;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    wrong: AtomicU64,
    conversions_sent: AtomicU64,
}

struct Sample {
    at_s: u64,
    rss_kb: u64,
    fds: u64,
    threads: u64,
    requests: u64,
    memory_bytes: u64,
    disk_bytes: u64,
}

fn main() {
    let total = Duration::from_secs(env_secs("SOAK_SECONDS", 1200));
    let every = Duration::from_secs(env_secs("SOAK_SAMPLE_SECONDS", 10));
    let clients = env_secs("SOAK_CLIENTS", 6) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = runtime.block_on(soak(total, every, clients));
    if !ok {
        std::process::exit(1);
    }
}

async fn soak(total: Duration, every: Duration, clients: usize) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        &store_dir(dir.path()),
        &[
            ("OPUSGATE_CACHE__MEMORY_BYTES", (32u64 << 20).to_string()),
            (
                "OPUSGATE_CACHE__DISK_BYTES",
                (env_secs("SOAK_DISK_MIB", 256) << 20).to_string(),
            ),
            ("RUST_LOG", "warn,opusgate=info".into()),
        ],
    );
    let clips: Vec<Vec<u8>> = (0..BASE_CLIPS)
        .map(|i| clip(2.0 + (i % 5) as f64, 40_000 + i as u64))
        .collect();
    let expected: Vec<Vec<u8>> = clips.iter().map(|c| fresh_wav(c)).collect();
    let clips = Arc::new(clips);
    let expected = Arc::new(expected);
    let keys: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base) = (client.clone(), server.base.clone());
            let (clips, expected, keys) = (clips.clone(), expected.clone(), keys.clone());
            let (counts, stop, failures) = (counts.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1));
                let mut next = move |m: u64| rng.below(m);
                let mut fresh = c as u32 * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let roll = next(100);
                    let idx = next(BASE_CLIPS as u64) as usize;
                    let convert = format!("{base}/api/v1/convert");
                    let outcome: Result<(), String> = async {
                        let wav_of = |r: reqwest::Response| async move {
                            let status = r.status().as_u16();
                            let etag = header(&r, "etag").trim_matches('"').to_owned();
                            let body = r.bytes().await.map_err(|e| e.to_string())?;
                            Ok::<_, String>((status, etag, body))
                        };
                        match roll {
                            0..=69 => {
                                let first_fresh = c as u32 * 1_000_000 + 1;
                                let (idx, upload) = if (35..=59).contains(&roll) {
                                    fresh += 1;
                                    counts.conversions_sent.fetch_add(1, Ordering::Relaxed);
                                    let idx = fresh as usize % BASE_CLIPS;
                                    (idx, reserial(&clips[idx], fresh))
                                } else if (25..=34).contains(&roll) && fresh >= first_fresh {
                                    // One of this client's last 300 new uploads
                                    // again: mostly gone from memory, on disk.
                                    let back = next(u64::from(fresh - first_fresh + 1).min(300));
                                    let serial = fresh - back as u32;
                                    let idx = serial as usize % BASE_CLIPS;
                                    (idx, reserial(&clips[idx], serial))
                                } else {
                                    (idx, clips[idx].clone())
                                };
                                let request = if roll >= 60 {
                                    let part = reqwest::multipart::Part::bytes(upload)
                                        .file_name("clip.ogg");
                                    client.post(&convert).multipart(
                                        reqwest::multipart::Form::new().part("audio_file", part),
                                    )
                                } else {
                                    client.post(&convert).body(upload)
                                };
                                let r = request.send().await.map_err(|e| e.to_string())?;
                                let (status, etag, body) = wav_of(r).await?;
                                if status != 200 || body.as_ref() != expected[idx].as_slice() {
                                    return Err(format!(
                                        "clip {idx}: {status}, {} bytes",
                                        body.len()
                                    ));
                                }
                                if roll < 35 {
                                    let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
                                    if keys.len() < 200 {
                                        keys.push((idx, etag));
                                    }
                                }
                            }
                            70..=79 => {
                                let (body, status) = match next(3) {
                                    0 => (vec![0x42; 5000], 415),
                                    1 => (clips[idx][..clips[idx].len() / 2].to_vec(), 422),
                                    _ => (vec![0; (32 << 20) + 1], 413),
                                };
                                let r = client.post(&convert).body(body).send().await;
                                match r {
                                    Ok(r) if r.status().as_u16() == status => {
                                        let _ = r.bytes().await;
                                    }
                                    Ok(r) => {
                                        return Err(format!("hostile: {} not {status}", r.status()))
                                    }
                                    // A 413 may close before the upload is sent.
                                    Err(_) if status == 413 => {}
                                    Err(e) => return Err(e.to_string()),
                                }
                            }
                            80..=89 => {
                                let known = {
                                    let keys = keys.lock().unwrap_or_else(|e| e.into_inner());
                                    keys.get(next(keys.len().max(1) as u64) as usize).cloned()
                                };
                                if let Some((idx, key)) = known {
                                    let r = client
                                        .get(format!("{base}/api/v1/audio/{key}"))
                                        .send()
                                        .await
                                        .map_err(|e| e.to_string())?;
                                    let (status, _, body) = wav_of(r).await?;
                                    // Evicted from both tiers is a 404, never other bytes.
                                    if status == 200 && body.as_ref() != expected[idx].as_slice() {
                                        return Err(format!("key {key}: wrong bytes"));
                                    }
                                    if status != 200 && status != 404 {
                                        return Err(format!("key {key}: {status}"));
                                    }
                                }
                            }
                            _ => {
                                let path = if roll % 2 == 0 {
                                    "/api/v1/stats"
                                } else {
                                    "/healthz"
                                };
                                let r = client
                                    .get(format!("{base}{path}"))
                                    .send()
                                    .await
                                    .map_err(|e| e.to_string())?;
                                if r.status() != 200 {
                                    return Err(format!("{path}: {}", r.status()));
                                }
                                let _ = r.bytes().await;
                            }
                        }
                        Ok(())
                    }
                    .await;
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    if let Err(why) = outcome {
                        counts.wrong.fetch_add(1, Ordering::Relaxed);
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        if f.len() < 20 {
                            f.push(why);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    println!(
        "# soak: {} s, a sample every {} s, {clients} clients",
        total.as_secs(),
        every.as_secs()
    );
    println!("t_s\trss_kib\tfds\tthreads\trequests\tmem_tier_kib\tdisk_tier_kib");
    loop {
        let stats = server.stats(&client).await;
        let sample = Sample {
            at_s: started.elapsed().as_secs(),
            rss_kb: server.rss_kb(),
            fds: server.open_fds(),
            threads: server.threads(),
            requests: counts.requests.load(Ordering::Relaxed),
            memory_bytes: stats["cache"]["memory"]["bytes"].as_u64().unwrap_or(0),
            disk_bytes: stats["cache"]["disk"]["bytes"].as_u64().unwrap_or(0),
        };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            sample.at_s,
            sample.rss_kb,
            sample.fds,
            sample.threads,
            sample.requests,
            sample.memory_bytes / 1024,
            sample.disk_bytes / 1024
        );
        samples.push(sample);
        if started.elapsed() >= total {
            break;
        }
        tokio::time::sleep(every).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let stats = server.stats(&client).await;
    println!("# final store: {}", stats["cache"]);
    println!("# final conversions: {}", stats["conversions"]);

    // Flat: over the second half, once both tiers have filled, RSS moves by
    // less than 20 MiB and fds and threads by a handful.
    let half = &samples[samples.len() / 2..];
    let span = |f: fn(&Sample) -> u64| {
        let (min, max) = half
            .iter()
            .map(f)
            .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
        (min, max)
    };
    let (rss_lo, rss_hi) = span(|s| s.rss_kb);
    let (fd_lo, fd_hi) = span(|s| s.fds);
    let (th_lo, th_hi) = span(|s| s.threads);
    let requests = counts.requests.load(Ordering::Relaxed);
    let wrong = counts.wrong.load(Ordering::Relaxed);
    println!(
        "# {requests} requests ({} new uploads), {wrong} wrong answers",
        counts.conversions_sent.load(Ordering::Relaxed)
    );
    println!(
        "# second half: RSS {rss_lo}..{rss_hi} KiB, fds {fd_lo}..{fd_hi}, threads {th_lo}..{th_hi}"
    );
    for why in failures.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("# wrong: {why}");
    }
    let flat = rss_hi - rss_lo < 20 * 1024 && fd_hi - fd_lo <= 8 && th_hi - th_lo <= 4;
    println!(
        "# verdict: {}",
        if flat && wrong == 0 {
            "FLAT, all answers right"
        } else {
            "NOT OK"
        }
    );
    server.kill9();
    flat && wrong == 0
}
