//! Crash recovery of the real binary: `kill -9` in the middle of a 50-client
//! load of many distinct clips, at several points, each time restarted on
//! the same data directory. The store reopens without repair, and no
//! response, before or after any kill, differs by a byte from a fresh
//! conversion of its upload: no torn or stale record is ever served, from
//! `POST /api/v1/convert` or from `GET /api/v1/audio/{key}`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::clips::{clip, fresh_wav};
use support::http::{header, Api as _};
use support::process::{store_dir, ServerProcess};

const CLIENTS: usize = 50;
const CLIPS: usize = 60;

/// The uploads, their expected WAVs, and the keys the server gave them.
struct Corpus {
    uploads: Vec<Vec<u8>>,
    expected: Vec<Vec<u8>>,
    keys: Mutex<HashMap<usize, String>>,
}

/// What one round of load saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicUsize,
    hit_disk: AtomicUsize,
    /// Requests that got no answer (expected only once the server is killed).
    errors: AtomicUsize,
    /// Anything wrong: a 200 with other bytes, a status other than 200.
    wrong: Mutex<Vec<String>>,
}

fn start(dir: &Path) -> ServerProcess {
    ServerProcess::start(
        &store_dir(dir),
        &[
            ("OPUSGATE_CONVERSION__WORKERS", "2".into()),
            // A small memory tier: most repeats are answered from disk, where
            // a torn record would show.
            ("OPUSGATE_CACHE__MEMORY_BYTES", (512 * 1024).to_string()),
        ],
    )
}

/// Runs 50 clients against `server`, each sending `per_client` requests
/// (clips in a client-specific order), until `stop` is set.
async fn load(
    base: &str,
    corpus: &Arc<Corpus>,
    per_client: usize,
    offset: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    (0..CLIENTS)
        .map(|c| {
            let (client, url) = (client.clone(), format!("{base}/api/v1/convert"));
            let (corpus, stop, tally) = (Arc::clone(corpus), Arc::clone(stop), Arc::clone(tally));
            tokio::spawn(async move {
                for i in 0..per_client {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let idx = (c * 7 + i * 13 + offset) % CLIPS;
                    let sent = client
                        .post(&url)
                        .body(corpus.uploads[idx].clone())
                        .send()
                        .await;
                    let response = match sent {
                        Ok(r) => r,
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    let status = response.status().as_u16();
                    let cache = header(&response, "x-cache").to_owned();
                    let etag = header(&response, "etag").trim_matches('"').to_owned();
                    let Ok(body) = response.bytes().await else {
                        tally.errors.fetch_add(1, Ordering::SeqCst);
                        continue;
                    };
                    if status != 200 {
                        let text = String::from_utf8_lossy(&body).into_owned();
                        tally.wrong.lock().unwrap().push(format!("clip {idx}: {status} {text}"));
                    } else if body.as_ref() != corpus.expected[idx].as_slice() {
                        tally.wrong.lock().unwrap().push(format!(
                            "clip {idx}: {cache} answer of {} bytes differs from a fresh conversion",
                            body.len()
                        ));
                    } else {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                        if cache == "hit-disk" {
                            tally.hit_disk.fetch_add(1, Ordering::SeqCst);
                        }
                        corpus.keys.lock().unwrap().insert(idx, etag);
                    }
                }
            })
        })
        .collect()
}

/// Every key seen so far answers, by key, either 404 or exactly its WAV.
async fn check_by_key(server: &ServerProcess, corpus: &Corpus) -> (usize, usize) {
    let client = reqwest::Client::new();
    let keys: Vec<(usize, String)> = corpus.keys.lock().unwrap().clone().into_iter().collect();
    let (mut found, mut missing) = (0, 0);
    for (idx, key) in keys {
        let r = client
            .get(server.url(&format!("/api/v1/audio/{key}")))
            .send()
            .await
            .expect("audio by key");
        match r.status().as_u16() {
            200 => {
                let body = r.bytes().await.expect("body");
                assert_eq!(
                    body.as_ref(),
                    corpus.expected[idx].as_slice(),
                    "clip {idx} by key {key}: stored bytes differ from a fresh conversion"
                );
                found += 1;
            }
            404 => missing += 1,
            other => panic!("clip {idx} by key: status {other}"),
        }
    }
    (found, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_never_serves_a_torn_or_stale_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uploads: Vec<Vec<u8>> = (0..CLIPS)
        .map(|i| clip(2.0 + (i % 4) as f64 * 0.5, 7000 + i as u64))
        .collect();
    let expected = uploads.iter().map(|u| fresh_wav(u)).collect();
    let corpus = Arc::new(Corpus {
        uploads,
        expected,
        keys: Mutex::new(HashMap::new()),
    });

    // Kill after this many good answers in each round: early (writes of the
    // first conversions queued), mid-load and late (many records on disk).
    let mut server = start(dir.path());
    for (round, kill_after) in [1usize, 5, 60, 150].into_iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let tasks = load(&server.base, &corpus, 1000, round * 17, &stop, &tally).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while tally.ok.load(Ordering::SeqCst) < kill_after {
            assert!(Instant::now() < deadline, "round {round}: the load stalled");
            assert!(tally.wrong.lock().unwrap().is_empty(), "{:?}", tally.wrong);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("client task");
        }
        let wrong = tally.wrong.lock().unwrap().clone();
        assert!(wrong.is_empty(), "round {round}: {wrong:#?}");
        eprintln!(
            "round {round}: killed after {} good answers ({} from disk), {} cut off",
            tally.ok.load(Ordering::SeqCst),
            tally.hit_disk.load(Ordering::SeqCst),
            tally.errors.load(Ordering::SeqCst)
        );

        // Reopens on the same directory, with no repair step.
        server = start(dir.path());
        let (found, missing) = check_by_key(&server, &corpus).await;
        // What the open repaired (files whose index entry the kill lost are
        // adopted, entries whose file was gone dropped); a kill tears no
        // file, since each is renamed into place whole.
        let repaired = server.log_text();
        let repaired = repaired
            .lines()
            .find(|line| line.contains("disk tier reconciled"))
            .unwrap_or("nothing to reconcile");
        eprintln!(
            "after kill {round}: {found} stored clips intact, {missing} not stored; {repaired}"
        );
        let stats = server.stats(&reqwest::Client::new()).await;
        assert_eq!(
            stats["cache"]["corrupt_records"], 0,
            "round {round}: {stats}"
        );
    }

    // The same load to the end, against the store the kills left behind.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let tasks = load(&server.base, &corpus, 6, 5, &stop, &tally).await;
    for task in tasks {
        task.await.expect("client task");
    }
    let wrong = tally.wrong.lock().unwrap().clone();
    assert!(wrong.is_empty(), "final round: {wrong:#?}");
    assert_eq!(tally.errors.load(Ordering::SeqCst), 0, "requests failed");
    assert_eq!(tally.ok.load(Ordering::SeqCst), CLIENTS * 6);
    let client = reqwest::Client::new();
    let stats = server.stats(&client).await;
    eprintln!(
        "final round: {} good answers, {} from disk; store: {}",
        tally.ok.load(Ordering::SeqCst),
        tally.hit_disk.load(Ordering::SeqCst),
        stats["cache"]
    );
    assert!(
        stats["cache"]["hits_disk"].as_u64().unwrap_or(0) > 0,
        "the disk tier was never read: {stats}"
    );
    let (found, _) = check_by_key(&server, &corpus).await;
    assert_eq!(found, CLIPS, "every clip is stored after the final round");
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "opusgate exited with {exit}");
}
