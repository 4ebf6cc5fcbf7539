//! A fleet of real `opusgate` processes on a shared tier in real Redis,
//! when things fail: a lock holder killed mid-conversion hands the
//! conversion to a survivor, Redis stopped or hung mid-load costs no 5xx
//! and is used again once back, an instance started with Redis down serves
//! and joins later, and the Redis password never shows in the stats,
//! /metrics or the log. The harness is `support::fleet`.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::clips::{clip, fresh_wav};
use support::fleet::{
    all_up, assert_answer, assert_stored, cache_figures, client, convert, corpus, fleet, instance,
    jobs, load, post, recover_under_traffic, shared_env, stats, summed, value_key, wait_done,
    wait_shared_up, with, Instance,
};
use support::http::Api;
use support::redis::RedisServer;

/// The key's hex digits in a lock's Redis key, `og:v1:{<hex>}:wav:lock`.
fn hex_of_lock(lock: &str) -> &str {
    lock.strip_prefix("og:v1:{")
        .and_then(|rest| rest.strip_suffix("}:wav:lock"))
        .unwrap_or_else(|| panic!("not a lock key: {lock}"))
}

/// Polls Redis (blocking, every millisecond) for a lock key not in
/// `known`: the key and the PID in its token, `<pid>@<hostname>/<16 hex>`.
fn wait_new_lock(redis: &RedisServer, known: &[String], limit: Duration) -> (String, u32) {
    let mut conn = redis.connect();
    let deadline = Instant::now() + limit;
    loop {
        let keys = conn.cmd(&["KEYS", "og:v1:*:wav:lock"]).expect("KEYS");
        let support::redis::Reply::Array(Some(keys)) = keys else {
            panic!("KEYS gave {keys:?}");
        };
        let new = keys.iter().map(|k| k.text()).find(|k| !known.contains(k));
        if let Some(lock) = new {
            let token = conn.cmd(&["GET", &lock]).expect("GET lock").text();
            let pid = token
                .split_once('@')
                .and_then(|(pid, _)| pid.parse().ok())
                .unwrap_or_else(|| panic!("lock token {token:?} of {lock} names no PID"));
            return (lock, pid);
        }
        assert!(
            Instant::now() < deadline,
            "no new lock in Redis within {limit:?} (known: {known:?})"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lock_holder_hands_the_conversion_to_a_survivor() {
    // Ten minutes of audio (the longest accepted by default): 19 MB of WAV,
    // about 0.6 s to convert even for the debug build (libopus itself is an
    // optimized system library), 6 s to encode here.
    let upload = Arc::new(clip(600.0, 1401));
    let expected = fresh_wav(&upload);
    let redis = RedisServer::start();
    let env = with(
        shared_env(&redis.url()),
        &[
            ("OPUSGATE_SHARED__LEASE_SECONDS", "2"),
            ("OPUSGATE_SHARED__MAX_VALUE_BYTES", "67108864"),
            // Values of 10 to 29 MB go through a debug build's Redis client
            // on a busy machine: more than the default 500 ms at times.
            ("OPUSGATE_SHARED__TIMEOUT_MS", "5000"),
            ("OPUSGATE_CONVERSION__WORKERS", "1"),
            ("OPUSGATE_CONVERSION__MAX_CONCURRENT", "1"),
        ],
    );
    let mut instances: Vec<Option<Instance>> = fleet(3, &env).into_iter().map(Some).collect();
    let c = client();
    for at in instances.iter().flatten() {
        wait_shared_up(&c, at, true, Duration::from_secs(15), None).await;
    }

    // First each instance's one conversion slot is taken by a conversion
    // of its own (the same clip at another rate: another key), so that the
    // holder of the clip's lock waits for its slot, then converts: the lock
    // is held for a second or so, long enough to see it and kill its holder.
    let blockers: Vec<_> = instances
        .iter()
        .flatten()
        .zip(["?rate=8000", "?rate=12000", "?rate=24000"])
        .map(|(at, query)| {
            tokio::spawn(post(
                c.clone(),
                at.base().to_owned(),
                query,
                Arc::clone(&upload),
            ))
        })
        .collect();
    let mut known = Vec::new();
    for _ in 0..3 {
        let (lock, _) =
            tokio::task::block_in_place(|| wait_new_lock(&redis, &known, Duration::from_secs(20)));
        known.push(lock);
    }

    // The clip, twice on each instance.
    let requests: Vec<(u32, _)> = instances
        .iter()
        .flatten()
        .flat_map(|at| [at, at])
        .map(|at| {
            let task = tokio::spawn(post(
                c.clone(),
                at.base().to_owned(),
                "",
                Arc::clone(&upload),
            ));
            (at.server.pid(), task)
        })
        .collect();
    let (lock, holder_pid) =
        tokio::task::block_in_place(|| wait_new_lock(&redis, &known, Duration::from_secs(20)));
    let hex = hex_of_lock(&lock).to_owned();
    let holder = instances
        .iter()
        .position(|i| i.as_ref().is_some_and(|i| i.server.pid() == holder_pid))
        .unwrap_or_else(|| panic!("the lock {lock} is held by PID {holder_pid}: no instance"));
    instances[holder].take().expect("the holder").server.kill9();
    let killed_at = Instant::now();
    assert!(
        redis.get(&value_key(&hex)).is_none(),
        "the holder published before it was killed: the test did not kill it in time"
    );

    let survivors: Vec<&Instance> = instances.iter().flatten().collect();
    let mut blocker_misses = 0;
    for (i, blocker) in blockers.into_iter().enumerate() {
        let outcome = blocker.await.expect("blocker task");
        if i == holder {
            continue;
        }
        let answer = outcome.unwrap_or_else(|e| panic!("blocker {i}: {e}"));
        assert_eq!(answer.status, 200, "blocker {i}");
        assert_eq!(answer.cache, "miss", "blocker {i}");
        blocker_misses += 1;
    }
    let mut tally = BTreeMap::<String, usize>::new();
    for (pid, request) in requests {
        let outcome = request.await.expect("request task");
        if pid == holder_pid {
            continue;
        }
        let answer = outcome.unwrap_or_else(|e| panic!("a survivor's request: {e}"));
        assert_eq!(
            answer.status,
            200,
            "a survivor's request: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(
            answer.body == *expected,
            "a survivor answered other bytes ({})",
            answer.cache
        );
        assert_eq!(answer.key, hex, "the clip's key is the locked one");
        *tally.entry(answer.cache).or_insert(0) += 1;
    }
    let answered_after = killed_at.elapsed();
    let figures = cache_figures(&c, &survivors, None).await;
    let misses = summed(&c, &survivors, "/cache/misses", None).await;
    assert_eq!(
        misses.checked_sub(blocker_misses),
        Some(1),
        "conversions of the clip among the survivors (their {blocker_misses} blockers aside); \
         X-Cache {tally:?}{figures}"
    );
    assert_eq!(tally.get("miss"), Some(&1), "{tally:?}{figures}");
    let takeovers = summed(&c, &survivors, "/shared/lock_takeovers", None).await;
    assert!(takeovers >= 1, "no lock takeover counted{figures}");
    assert_stored(
        redis.get(&value_key(&hex)),
        &hex,
        &expected,
        "after the takeover",
    );
    eprintln!("takeover: all answered {answered_after:?} after the kill; X-Cache {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_or_hung_mid_load_costs_no_5xx() {
    let mut redis = RedisServer::start();
    let env = with(
        shared_env(&redis.url()),
        &[
            ("OPUSGATE_SHARED__LEASE_SECONDS", "2"),
            ("OPUSGATE_SHARED__TIMEOUT_MS", "200"),
        ],
    );
    let instances = fleet(2, &env);
    let c = client();
    all_up(&c, &instances).await;
    let [a, b] = &instances[..] else {
        unreachable!()
    };
    let both = [a, b];
    let bases: Vec<String> = both.iter().map(|i| i.base().to_owned()).collect();
    let clips = corpus(80, 1500);

    // Redis killed after the first 8 of 40 requests.
    let done = Arc::new(AtomicUsize::new(0));
    let running = tokio::spawn(load(
        c.clone(),
        bases.clone(),
        clips.clone(),
        jobs(0, 40),
        done.clone(),
    ));
    wait_done(&done, 8).await;
    tokio::task::block_in_place(|| redis.kill9());
    let seen = running.await.expect("load task");
    assert!(seen.wrong.is_empty(), "with Redis killed: {:?}", seen.wrong);
    for at in both {
        let s = wait_shared_up(&c, at, false, Duration::from_secs(5), None).await;
        assert!(
            s["shared"]["errors"].as_u64().unwrap() >= 1,
            "{}",
            s["shared"]
        );
        assert!(
            s["shared"]["fallbacks"].as_u64().unwrap() >= 1,
            "{}",
            s["shared"]
        );
    }

    // Back on the same port (empty): the instances use it again.
    tokio::task::block_in_place(|| redis.restart());
    let mut seed = 1700;
    let recovered = recover_under_traffic(&c, &both, &mut seed, Duration::from_secs(10)).await;
    let upload = clip(1.0, 1690);
    let expected = fresh_wav(&upload);
    assert_answer(
        &convert(&c, a, &upload).await,
        "miss",
        &expected,
        "A after the restart",
    );
    assert_answer(
        &convert(&c, b, &upload).await,
        "hit-shared",
        &expected,
        "B after the restart",
    );

    // Redis hung (SIGSTOP) after the first 6 of 32 requests.
    let errors_before = summed(&c, &both, "/shared/errors", None).await;
    done.store(0, Ordering::SeqCst);
    let running = tokio::spawn(load(
        c.clone(),
        bases.clone(),
        clips.clone(),
        jobs(40, 32),
        done.clone(),
    ));
    wait_done(&done, 6).await;
    redis.pause();
    let hung_at = Instant::now();
    let seen_hung = running.await.expect("load task");
    let hung_for = hung_at.elapsed();
    let errors_hung = summed(&c, &both, "/shared/errors", None).await - errors_before;
    redis.resume();
    assert!(
        seen_hung.wrong.is_empty(),
        "with Redis hung: {:?}",
        seen_hung.wrong
    );
    assert!(
        errors_hung >= 1,
        "no command timed out while Redis was hung"
    );
    let recovered_hung = recover_under_traffic(&c, &both, &mut seed, Duration::from_secs(10)).await;
    eprintln!(
        "killed: {:?}; up again {recovered:?} after the restart; hung: {:?} ({hung_for:?} to finish, \
         {errors_hung} timeouts); up again {recovered_hung:?} after SIGCONT",
        seen.cache, seen_hung.cache
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_with_redis_down_serves_and_joins_later() {
    let port = RedisServer::unused_port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = instance(&shared_env(&url));
    let c = client();
    let ready = c.get(a.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200, "/readyz with Redis down");
    let s = stats(&c, &a, None).await;
    assert_eq!(s["shared"]["enabled"], true, "{}", s["shared"]);
    assert_eq!(s["shared"]["up"], false, "{}", s["shared"]);
    let upload = clip(1.0, 1801);
    assert_answer(
        &convert(&c, &a, &upload).await,
        "miss",
        &fresh_wav(&upload),
        "Redis down",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.server.log_count("shared tier unreachable") == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning that the shared tier is unreachable; log:\n{}",
            a.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats(&c, &a, None).await["shared"]["up"], false);

    let redis = tokio::task::block_in_place(|| RedisServer::start_on(port, &[]));
    let started = Instant::now();
    wait_shared_up(&c, &a, true, Duration::from_secs(10), None).await;
    let joined = started.elapsed();
    let b = instance(&shared_env(&url));
    wait_shared_up(&c, &b, true, Duration::from_secs(15), None).await;
    let upload = clip(1.0, 1802);
    let expected = fresh_wav(&upload);
    let first = convert(&c, &a, &upload).await;
    assert_answer(&first, "miss", &expected, "A once Redis is up");
    assert_answer(
        &convert(&c, &b, &upload).await,
        "hit-shared",
        &expected,
        "B",
    );
    assert_stored(
        redis.get(&value_key(&first.key)),
        &first.key,
        &expected,
        "A's value",
    );
    eprintln!("joined {joined:?} after Redis started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_never_shows() {
    const PASSWORD: &str = "s3cret-pw";
    const WRONG: &str = "wr0ng-pw-x";
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]);
    assert!(redis.url().contains(PASSWORD));
    let right = fleet(2, &shared_env(&redis.url()));
    let wrong_url = format!("redis://:{WRONG}@127.0.0.1:{}", redis.port());
    let wrong = instance(&shared_env(&wrong_url));
    let c = client();
    all_up(&c, &right).await;

    let upload = clip(1.0, 2101);
    let expected = fresh_wav(&upload);
    assert_answer(
        &convert(&c, &right[0], &upload).await,
        "miss",
        &expected,
        "right 1",
    );
    assert_answer(
        &convert(&c, &right[1], &upload).await,
        "hit-shared",
        &expected,
        "right 2",
    );
    assert_answer(
        &convert(&c, &wrong, &upload).await,
        "miss",
        &expected,
        "wrong password",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while wrong.server.log_count("shared tier unreachable") == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning that the shared tier is unreachable; log:\n{}",
            wrong.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = stats(&c, &wrong, None).await;
    assert_eq!(
        s["shared"]["up"], false,
        "with a wrong password: {}",
        s["shared"]
    );

    for (at, url) in [
        (&right[0], redis.url()),
        (&right[1], redis.url()),
        (&wrong, wrong_url.clone()),
    ] {
        let s = stats(&c, at, None).await;
        let redacted = url.replace(PASSWORD, "***").replace(WRONG, "***");
        assert_eq!(s["shared"]["url"], redacted.as_str());
        let metrics = at.metrics(&c).await;
        assert!(
            metrics.contains("opusgate_shared_up"),
            "no opusgate_shared_up in /metrics"
        );
        let log = at.server.log_text();
        for secret in [PASSWORD, WRONG] {
            assert!(
                !s.to_string().contains(secret),
                "{secret} in the stats: {s}"
            );
            assert!(!metrics.contains(secret), "{secret} in /metrics");
            assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        }
    }
}
