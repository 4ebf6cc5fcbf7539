//! A fleet of real `opusgate` processes sharing a cache tier on real Redis
//! (one server, or a three-master Cluster): a clip is converted once
//! fleet-wide however many instances receive it, a value converted on one
//! instance is a hit on the others, fifty identical translations make one
//! backend call, and corrupt values in Redis are caught. The failures
//! (Redis down, killed, hung, behind a password; a dead lock holder) are
//! `tests/fleet_failures.rs`; the harness is `support::fleet`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::backend::{Backend, Mode};
use support::clips::{clip, fresh_wav};
use support::fleet::{
    all_up, assert_answer, assert_stored, cache_figures, client, convert, fifty_over, fleet,
    shared_env, stats, summed, value_key, wait_shared_up, with, Instance, SHARED_OUTCOMES,
};
use support::http::{header, translate_form, Api};
use support::redis::{RedisCluster, RedisServer};

/// The proxy test's client key and backend key.
const CLIENT_KEY: &str = "client-key";
const BACKEND_KEY: &str = "backend-secret";

/// 50 simultaneous identical uploads of a new clip spread over
/// `instances`: every answer right, exactly one conversion over the fleet,
/// 50 lookups. Returns the clip's key and its expected WAV.
async fn fifty_convert_once(instances: &[Instance], seed: u64) -> (String, Vec<u8>) {
    let c = client();
    all_up(&c, instances).await;
    let upload = clip(8.0, seed);
    let expected = fresh_wav(&upload);

    let (tally, hex) = fifty_over(&c, instances, 50, &upload, &expected).await;

    let all: Vec<&Instance> = instances.iter().collect();
    let figures = cache_figures(&c, &all, None).await;
    let misses = summed(&c, &all, "/cache/misses", None).await;
    assert_eq!(
        misses, 1,
        "conversions over the fleet; X-Cache {tally:?}{figures}"
    );
    assert_eq!(tally.get("miss"), Some(&1), "{tally:?}");
    let lookups = summed(&c, &all, "/cache/lookups", None).await;
    assert_eq!(lookups, 50, "{figures}");
    assert_eq!(
        summed(&c, &all, "/shared/errors", None).await,
        0,
        "{figures}"
    );
    (hex, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_uploads_over_four_instances_convert_once() {
    let redis = RedisServer::start();
    let instances = fleet(4, &shared_env(&redis.url()));
    let (hex, expected) = fifty_convert_once(&instances, 1101).await;
    // The value is in Redis, framed, and no lock is left behind.
    assert_stored(
        redis.get(&value_key(&hex)),
        &hex,
        &expected,
        "after the load",
    );
    assert_eq!(redis.keys("og:*"), vec![value_key(&hex)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_converted_on_one_instance_is_a_shared_hit_on_another() {
    let redis = RedisServer::start();
    let instances = fleet(3, &shared_env(&redis.url()));
    let c = client();
    all_up(&c, &instances).await;
    let [a, b, third] = &instances[..] else {
        unreachable!()
    };
    let upload = clip(3.0, 1201);
    let expected = fresh_wav(&upload);

    let first = convert(&c, a, &upload).await;
    assert_answer(&first, "miss", &expected, "A");
    let second = convert(&c, b, &upload).await;
    assert_answer(&second, "hit-shared", &expected, "B");
    assert_eq!(second.key, first.key);
    let b_stats = stats(&c, b, None).await;
    assert_eq!(b_stats["cache"]["hits_shared"], 1, "{}", b_stats["cache"]);
    assert_eq!(b_stats["cache"]["misses"], 0, "{}", b_stats["cache"]);
    assert!(b_stats["shared"]["bytes_read"].as_u64().unwrap() >= expected.len() as u64);

    // A plain lookup by key on an instance that never saw the clip.
    let r = c
        .get(third.url(&format!("/api/v1/audio/{}", first.key)))
        .send()
        .await
        .expect("audio request");
    assert_eq!(r.status(), 200, "GET /api/v1/audio on the third instance");
    assert_eq!(header(&r, "content-type"), "audio/wav");
    assert!(
        r.bytes().await.unwrap().as_ref() == expected.as_slice(),
        "GET /api/v1/audio answered other bytes"
    );
    let unknown = c
        .get(third.url(&format!("/api/v1/audio/{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "a key nobody converted");
    let third_stats = stats(&c, third, None).await;
    assert_eq!(third_stats["cache"]["computations_started"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_translations_over_the_fleet_make_one_backend_call() {
    let backend = Backend::start().await;
    // Slow enough that the 50 requests overlap on every instance.
    backend.set_mode(Mode::Slow(Duration::from_millis(500)));
    let redis = RedisServer::start();
    let env = with(
        shared_env(&redis.url()),
        &[
            ("OPUSGATE_AUTH__API_KEYS", CLIENT_KEY),
            ("OPUSGATE_UPSTREAM__URL", backend.url.as_str()),
            ("OPUSGATE_UPSTREAM__API_KEY", BACKEND_KEY),
            ("OPUSGATE_UPSTREAM__MODEL", "whisper-test"),
        ],
    );
    let instances = fleet(3, &env);
    let c = client();
    for at in &instances {
        wait_shared_up(&c, at, true, Duration::from_secs(15), Some(CLIENT_KEY)).await;
    }
    let upload = clip(2.0, 1301);

    let requests: Vec<_> = (0..50)
        .map(|i| {
            let url = instances[i % instances.len()].url("/api/v1/translate_audio");
            let (c, upload) = (c.clone(), upload.clone());
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .header("X-API-Key", CLIENT_KEY)
                    .multipart(translate_form(&upload))
                    .send()
                    .await
                    .expect("translate request");
                let status = r.status().as_u16();
                let cache = header(&r, "x-upstream-cache").to_owned();
                (status, cache, r.text().await.expect("body"))
            })
        })
        .collect();
    let mut data = Vec::new();
    let mut tally = BTreeMap::<String, usize>::new();
    for (i, request) in requests.into_iter().enumerate() {
        let (status, cache, body) = request.await.expect("request task");
        assert_eq!(status, 200, "request {i}: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(v["status"], "success", "request {i}: {body}");
        assert!(
            SHARED_OUTCOMES.contains(&cache.as_str()),
            "request {i}: unexpected X-Upstream-Cache {cache:?}"
        );
        *tally.entry(cache).or_insert(0) += 1;
        data.push(v["data"].clone());
    }
    assert_eq!(data[0]["英文"], "Hello, world", "{}", data[0]);
    assert!(
        data.iter().all(|d| *d == data[0]),
        "the answers differ: {data:?}"
    );
    let all: Vec<&Instance> = instances.iter().collect();
    let figures = cache_figures(&c, &all, Some(CLIENT_KEY)).await;
    assert_eq!(
        backend.calls(),
        1,
        "backend calls for 50 identical translations; X-Upstream-Cache {tally:?}{figures}"
    );
    assert_eq!(
        summed(&c, &all, "/upstream/calls", Some(CLIENT_KEY)).await,
        1
    );
    assert_eq!(
        summed(&c, &all, "/upstream/cache/misses", Some(CLIENT_KEY)).await,
        1,
        "{figures}"
    );
    assert_eq!(
        summed(&c, &all, "/upstream/cache/lookups", Some(CLIENT_KEY)).await,
        50,
        "{figures}"
    );
    let answers = redis.keys("og:v1:*:answer");
    assert_eq!(answers.len(), 1, "one answer in Redis: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_uploads_over_a_three_master_cluster_convert_once() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3));
    let env = with(
        shared_env(&cluster.seeds_url()),
        &[("OPUSGATE_SHARED__CLUSTER", "true")],
    );
    let instances = fleet(3, &env);
    let (hex, expected) = fifty_convert_once(&instances, 1901).await;
    let stored = tokio::task::block_in_place(|| cluster.get(&value_key(&hex)));
    assert_stored(stored, &hex, &expected, "in the cluster");
    let keys = tokio::task::block_in_place(|| cluster.keys("og:*"));
    assert_eq!(keys, vec![value_key(&hex)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_planted_in_redis_is_caught() {
    let redis = RedisServer::start();
    let instances = fleet(3, &shared_env(&redis.url()));
    let c = client();
    all_up(&c, &instances).await;
    let [a, b, third] = &instances[..] else {
        unreachable!()
    };
    let (one, two) = (clip(1.5, 2001), clip(1.5, 2002));
    let (wav_one, wav_two) = (fresh_wav(&one), fresh_wav(&two));
    let first = convert(&c, a, &one).await;
    assert_answer(&first, "miss", &wav_one, "clip one on A");
    let second = convert(&c, a, &two).await;
    assert_answer(&second, "miss", &wav_two, "clip two on A");
    let (k1, k2) = (first.key.clone(), second.key.clone());
    let framed_one = redis.get(&value_key(&k1));
    assert_stored(framed_one.clone(), &k1, &wav_one, "clip one");

    // Garbage under clip one's key; clip one's whole, valid framed value
    // under clip two's key (the checksum covers the key).
    redis.set(&value_key(&k1), b"this is not a framed WAV at all");
    redis.set(&value_key(&k2), &framed_one.unwrap());

    // A plain lookup ignores the garbage.
    let r = c
        .get(third.url(&format!("/api/v1/audio/{k1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a corrupt shared value is absent");
    let s = stats(&c, third, None).await;
    assert!(
        s["shared"]["corrupt_values"].as_u64().unwrap() >= 1,
        "{}",
        s["shared"]
    );

    // B converts both again, and its values replace the planted ones.
    assert_answer(
        &convert(&c, b, &one).await,
        "miss",
        &wav_one,
        "clip one on B",
    );
    assert_answer(
        &convert(&c, b, &two).await,
        "miss",
        &wav_two,
        "clip two on B",
    );
    let s = stats(&c, b, None).await;
    assert!(
        s["shared"]["corrupt_values"].as_u64().unwrap() >= 2,
        "both planted values are counted: {}",
        s["shared"]
    );
    assert_stored(
        redis.get(&value_key(&k1)),
        &k1,
        &wav_one,
        "clip one rewritten",
    );
    assert_stored(
        redis.get(&value_key(&k2)),
        &k2,
        &wav_two,
        "clip two rewritten",
    );
    assert_answer(
        &convert(&c, third, &one).await,
        "hit-shared",
        &wav_one,
        "clip one, third",
    );
    assert_answer(
        &convert(&c, third, &two).await,
        "hit-shared",
        &wav_two,
        "clip two, third",
    );
}
