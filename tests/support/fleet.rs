//! The fleet tests' harness (`tests/fleet.rs`, `tests/fleet_failures.rs`):
//! [`Instance`]s of the real binary on a shared tier and their settings,
//! their stats (one, summed, polled for `shared.up`, printed for failure
//! messages), conversions and the checks of their answers, the framed
//! values they store in Redis, fifty identical uploads over a fleet, and a
//! load of distinct clips with a recovery under traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::clips::{clip, fresh_wav};
use super::http::{header, Api};
use super::process::{store_dir, ServerProcess};

/// The X-Cache values identical requests over a fleet may get (each
/// instance's memory tier holds every value, so never `hit-disk`).
pub const SHARED_OUTCOMES: [&str; 5] = [
    "miss",
    "coalesced",
    "coalesced-remote",
    "hit-shared",
    "hit-memory",
];

/// One instance of a fleet: the real binary with its own data directory.
pub struct Instance {
    pub server: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Api for Instance {
    fn base(&self) -> &str {
        &self.server.base
    }
}

/// The settings of a fleet member on the shared tier at `url`.
pub fn shared_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OPUSGATE_SHARED__URL", url.to_owned()),
        ("OPUSGATE_CACHE__MEMORY_BYTES", (128u64 << 20).to_string()),
        ("OPUSGATE_CACHE__DISK_BYTES", (256u64 << 20).to_string()),
        ("OPUSGATE_CONVERSION__WORKERS", "2".into()),
    ]
}

/// `base` with `extra` settings added (or replacing one of the same name).
pub fn with(
    mut base: Vec<(&'static str, String)>,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    for (name, value) in extra {
        base.retain(|(n, _)| n != name);
        base.push((name, (*value).to_owned()));
    }
    base
}

/// Starts one instance, blocking until it listens.
fn start_instance(env: &[(&'static str, String)]) -> Instance {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&store_dir(dir.path()), env);
    Instance { server, _dir: dir }
}

/// Starts one instance (blocking until it listens; tests run on the
/// multi-threaded runtime).
pub fn instance(env: &[(&'static str, String)]) -> Instance {
    tokio::task::block_in_place(|| start_instance(env))
}

/// Starts `n` instances with the same settings, at once.
pub fn fleet(n: usize, env: &[(&'static str, String)]) -> Vec<Instance> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let starting: Vec<_> = (0..n).map(|_| s.spawn(|| start_instance(env))).collect();
            starting
                .into_iter()
                .map(|h| h.join().expect("an instance started"))
                .collect()
        })
    })
}

/// An HTTP client with a 60 s timeout per request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// `GET /api/v1/stats`, with the client key when given.
pub async fn stats(c: &reqwest::Client, at: &Instance, key: Option<&str>) -> Value {
    let mut request = c.get(at.url("/api/v1/stats"));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    let response = request.send().await.expect("stats request");
    assert_eq!(response.status(), 200, "stats of {}", at.base());
    response.json().await.expect("stats JSON")
}

/// The sum of one stats figure (a JSON pointer) over `instances`.
pub async fn summed(
    c: &reqwest::Client,
    instances: &[&Instance],
    pointer: &str,
    key: Option<&str>,
) -> u64 {
    let mut total = 0;
    for at in instances {
        let s = stats(c, at, key).await;
        total += s
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no number at {pointer} in {s}"));
    }
    total
}

/// Polls `at`'s stats until `shared.up` is `up` (at most `limit`).
pub async fn wait_shared_up(
    c: &reqwest::Client,
    at: &Instance,
    up: bool,
    limit: Duration,
    key: Option<&str>,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = stats(c, at, key).await;
        if s["shared"]["up"] == up {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "shared.up of {} did not become {up} within {limit:?}; stats: {}\nlog:\n{}",
            at.base(),
            s["shared"],
            at.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every instance is connected to the shared tier.
pub async fn all_up(c: &reqwest::Client, instances: &[Instance]) {
    for at in instances {
        wait_shared_up(c, at, true, Duration::from_secs(15), None).await;
    }
}

/// A conversion's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub cache: String,
    /// The ETag without quotes: the key's 64 hex digits.
    pub key: String,
    pub body: Vec<u8>,
}

/// `POST /api/v1/convert{query}` of `upload` at `base`; `Err` when no
/// answer comes (the instance died).
pub async fn post(
    c: reqwest::Client,
    base: String,
    query: &'static str,
    upload: Arc<Vec<u8>>,
) -> Result<Answer, String> {
    let response = c
        .post(format!("{base}/api/v1/convert{query}"))
        .body(upload.to_vec())
        .send()
        .await
        .map_err(|e| format!("{base}: no answer: {e}"))?;
    let status = response.status().as_u16();
    let cache = header(&response, "x-cache").to_owned();
    let key = header(&response, "etag").trim_matches('"').to_owned();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{base}: body cut: {e}"))?
        .to_vec();
    Ok(Answer {
        status,
        cache,
        key,
        body,
    })
}

/// Converts `upload` on `at`, failing the test when no answer comes.
pub async fn convert(c: &reqwest::Client, at: &Instance, upload: &[u8]) -> Answer {
    post(
        c.clone(),
        at.base().to_owned(),
        "",
        Arc::new(upload.to_vec()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Fails unless `answer` is a 200 with exactly `expected` and X-Cache `cache`.
pub fn assert_answer(answer: &Answer, cache: &str, expected: &[u8], what: &str) {
    assert_eq!(
        answer.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        answer.body == expected,
        "{what}: other bytes than a fresh conversion"
    );
    assert_eq!(answer.cache, cache, "{what}: X-Cache");
}

/// The Redis key of a WAV, from its key's hex digits.
pub fn value_key(hex: &str) -> String {
    format!("og:v1:{{{hex}}}:wav")
}

/// The 32 bytes of a key's 64 hex digits.
fn unhex(hex: &str) -> Vec<u8> {
    assert_eq!(hex.len(), 64, "a key has 64 hex digits: {hex:?}");
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// `OGS1 | length u64 BE | SHA-256(key bytes || value) | value`.
pub fn framed(hex: &str, value: &[u8]) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(unhex(hex));
    digest.update(value);
    let mut out = b"OGS1".to_vec();
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(&digest.finalize());
    out.extend_from_slice(value);
    out
}

/// Fails unless Redis holds exactly the framed `wav` under its key.
pub fn assert_stored(stored: Option<Vec<u8>>, hex: &str, wav: &[u8], what: &str) {
    let stored = stored.unwrap_or_else(|| panic!("{what}: Redis has no {}", value_key(hex)));
    assert!(
        stored == framed(hex, wav),
        "{what}: the value in Redis ({} bytes, starts {:?}) is not the framed WAV ({} bytes)",
        stored.len(),
        String::from_utf8_lossy(&stored[..stored.len().min(4)]),
        wav.len() + 44
    );
}

/// `n` concurrent conversions of `upload` spread round-robin over
/// `instances`: checks every answer (200, exactly `expected`, an X-Cache of
/// [`SHARED_OUTCOMES`]) and returns the X-Cache tally and the key.
pub async fn fifty_over(
    c: &reqwest::Client,
    instances: &[Instance],
    n: usize,
    upload: &[u8],
    expected: &[u8],
) -> (BTreeMap<String, usize>, String) {
    let upload = Arc::new(upload.to_vec());
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let base = instances[i % instances.len()].base().to_owned();
            tokio::spawn(post(c.clone(), base, "", Arc::clone(&upload)))
        })
        .collect();
    let mut tally = BTreeMap::new();
    let mut keys = Vec::new();
    for (i, request) in requests.into_iter().enumerate() {
        let answer = request
            .await
            .expect("request task")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            answer.status,
            200,
            "request {i} to {} (X-Cache {:?}): {}",
            instances[i % instances.len()].base(),
            answer.cache,
            String::from_utf8_lossy(&answer.body)
        );
        assert!(
            answer.body == expected,
            "request {i} ({}): other bytes than a fresh conversion",
            answer.cache
        );
        if !SHARED_OUTCOMES.contains(&answer.cache.as_str()) {
            let all: Vec<&Instance> = instances.iter().collect();
            panic!(
                "request {i} to {}: unexpected X-Cache {:?}{}",
                instances[i % instances.len()].base(),
                answer.cache,
                cache_figures(c, &all, None).await
            );
        }
        *tally.entry(answer.cache).or_insert(0) += 1;
        keys.push(answer.key);
    }
    keys.dedup();
    assert_eq!(keys.len(), 1, "one clip, one key: {keys:?}");
    (tally, keys.remove(0))
}

/// The cache figures of every instance, for failure messages.
pub async fn cache_figures(
    c: &reqwest::Client,
    instances: &[&Instance],
    key: Option<&str>,
) -> String {
    let mut out = String::new();
    for at in instances {
        let s = stats(c, at, key).await;
        out.push_str(&format!(
            "\n{} (PID {}): cache {} upstream {} shared {}",
            at.base(),
            at.server.pid(),
            s["cache"],
            s["upstream"],
            s["shared"]
        ));
        let log = at.server.log.lock().unwrap_or_else(|e| e.into_inner());
        for line in log.iter().filter(|l| l.contains("shared tier")) {
            out.push_str(&format!("\n    {line}"));
        }
    }
    out
}

/// Distinct short clips and their expected WAVs.
pub type Corpus = Arc<Vec<(Arc<Vec<u8>>, Vec<u8>)>>;

/// `n` distinct 0.6 s clips, seeds from `first_seed` on, with their WAVs.
pub fn corpus(n: usize, first_seed: u64) -> Corpus {
    Arc::new(
        (0..n as u64)
            .map(|i| {
                let upload = clip(0.6, first_seed + i);
                let expected = fresh_wav(&upload);
                (Arc::new(upload), expected)
            })
            .collect(),
    )
}

/// What a load saw: its answers' X-Cache values and everything wrong
/// (no answer, a status other than 200, other bytes).
#[derive(Debug, Default)]
pub struct Seen {
    pub cache: BTreeMap<String, usize>,
    pub wrong: Vec<String>,
}

/// Runs `jobs` (instance, clip) four at a time, counting finished requests
/// in `done`.
pub async fn load(
    c: reqwest::Client,
    bases: Vec<String>,
    clips: Corpus,
    jobs: Vec<(usize, usize)>,
    done: Arc<AtomicUsize>,
) -> Seen {
    let answers: Vec<_> = futures::stream::iter(jobs.into_iter().enumerate())
        .map(|(n, (at, clip))| {
            let (c, base, clips, done) =
                (c.clone(), bases[at].clone(), clips.clone(), done.clone());
            async move {
                let answer = post(c, base, "", Arc::clone(&clips[clip].0)).await;
                done.fetch_add(1, Ordering::SeqCst);
                (n, clip, answer)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut seen = Seen::default();
    for (n, clip, answer) in answers {
        match answer {
            Err(e) => seen.wrong.push(format!("request {n}: {e}")),
            Ok(a) if a.status != 200 => seen.wrong.push(format!(
                "request {n}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )),
            Ok(a) if a.body != clips[clip].1 => {
                seen.wrong
                    .push(format!("request {n} ({}): other bytes", a.cache));
            }
            Ok(a) => *seen.cache.entry(a.cache).or_insert(0) += 1,
        }
    }
    seen
}

/// `count` jobs over two instances: distinct clips from `first` on, every
/// fourth request a repeat of an earlier clip on the other instance.
pub fn jobs(first: usize, count: usize) -> Vec<(usize, usize)> {
    (0..count)
        .map(|j| {
            if j % 4 == 3 {
                ((j + 1) % 2, first + j - 2)
            } else {
                (j % 2, first + j)
            }
        })
        .collect()
}

/// Waits until `done` reaches `n` (at most 60 s).
pub async fn wait_done(done: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends a new clip to each instance (each answer checked) until both say
/// `shared.up` (at most `limit`); how long it took.
pub async fn recover_under_traffic(
    c: &reqwest::Client,
    instances: &[&Instance],
    seed: &mut u64,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all_up = true;
        for at in instances {
            let upload = clip(0.5, *seed);
            *seed += 1;
            let answer = convert(c, at, &upload).await;
            assert_eq!(answer.status, 200, "while Redis recovers");
            assert!(answer.body == fresh_wav(&upload), "while Redis recovers");
            all_up &= stats(c, at, None).await["shared"]["up"] == true;
        }
        if all_up {
            return started.elapsed();
        }
        if started.elapsed() >= limit {
            panic!(
                "the shared tier was not up again within {limit:?} of Redis being back{}",
                cache_figures(c, instances, None).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
