//! Single flight: one computation per absent key however many callers ask,
//! surviving the leader's cancellation, with errors and panics shared.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{open, value, wait_until, Gate, MIB};
use opusgate_cache::{ComputeError, Key, Outcome, Tier};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_share_one_computation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let key = Key::derive(b"clip", b"params");
    let expected = value(1, 320 * 1024);
    let gate = Gate::new();

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        let gate = gate.clone();
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    Ok::<_, String>(expected)
                })
                .await
        }));
    }
    // Hold the computation until every other caller has joined it.
    wait_until("49 callers coalesced", || store.stats().coalesced == 49).await;
    assert_eq!(store.stats().in_flight, 1);
    gate.open();

    let mut misses = 0;
    let mut coalesced = 0;
    for task in tasks {
        let (got, outcome) = task.await.unwrap().unwrap();
        assert_eq!(got, expected);
        match outcome {
            Outcome::Miss => misses += 1,
            Outcome::Coalesced => coalesced += 1,
            other => panic!("unexpected outcome {other}"),
        }
    }
    assert_eq!((misses, coalesced), (1, 49));
    assert_eq!(gate.runs(), 1);
    let stats = store.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.coalesced, 49);
    assert_eq!(stats.computations_started, 1);
    assert_eq!(stats.computations_failed, 0);
    assert_eq!(stats.in_flight, 0);

    let (got, outcome) = store
        .get_or_compute(key, || async { Err::<Bytes, _>("must not run".to_owned()) })
        .await
        .unwrap();
    assert_eq!((got, outcome), (expected, Outcome::HitMemory));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_leader_does_not_cancel_the_computation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let key = Key::derive(b"clip", b"leader-goes-away");
    let expected = value(2, 32 * 1024);
    let gate = Gate::new();

    let leader = {
        let store = store.clone();
        let gate = gate.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    Ok::<_, String>(expected)
                })
                .await
        })
    };
    wait_until("the computation started", || gate.runs() == 1).await;

    let mut waiters = Vec::new();
    for _ in 0..5 {
        let store = store.clone();
        let gate = gate.clone();
        waiters.push(tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(Bytes::from_static(b"second computation"))
                })
                .await
        }));
    }
    wait_until("5 waiters coalesced", || store.stats().coalesced == 5).await;

    // The client of the caller that started the computation goes away.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(
        store.stats().in_flight,
        1,
        "the computation outlives its leader"
    );
    gate.open();

    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            (expected.clone(), Outcome::Coalesced)
        );
    }
    assert_eq!(gate.runs(), 1, "compute ran once");
    assert_eq!(
        store.get(&key).await,
        Some((expected.clone(), Tier::Memory))
    );
    let stats = store.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.computations_started, 1);
    assert_eq!(stats.coalesced, 5);
    assert_eq!(stats.in_flight, 0);

    // It also reached disk.
    store.flush().await.unwrap();
    assert_eq!(store.stats().disk.entries, 1);
    assert_eq!(store.stats().disk.bytes, expected.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_computation_with_no_waiters_is_still_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let key = Key::derive(b"clip", b"nobody-waits");
    let expected = value(3, 1000);
    let gate = Gate::new();

    let leader = {
        let store = store.clone();
        let gate = gate.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    Ok::<_, String>(expected)
                })
                .await
        })
    };
    wait_until("the computation started", || gate.runs() == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.open();
    wait_until("the computation finished", || store.stats().in_flight == 0).await;

    assert_eq!(store.get(&key).await, Some((expected, Tier::Memory)));
    assert_eq!(gate.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_reaches_every_waiter_and_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let key = Key::derive(b"clip", b"fails");
    let gate = Gate::new();

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    Err::<Bytes, _>("decoder said no".to_owned())
                })
                .await
        }));
    }
    wait_until("9 callers coalesced", || store.stats().coalesced == 9).await;
    gate.open();
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            Err(ComputeError::Failed("decoder said no".to_owned()))
        );
    }
    assert_eq!(gate.runs(), 1);
    let stats = store.stats();
    assert_eq!(stats.computations_started, 1);
    assert_eq!(stats.computations_failed, 1);
    assert_eq!((stats.misses, stats.coalesced), (1, 9));

    // Not stored anywhere, even after the disk queue drains.
    store.flush().await.unwrap();
    assert_eq!(store.get(&key).await, None);
    assert_eq!(store.stats().disk.entries, 0);

    // The next call computes again.
    let fresh = value(4, 100);
    let answer = store
        .get_or_compute(key, {
            let fresh = fresh.clone();
            move || async move { Ok::<_, String>(fresh) }
        })
        .await;
    assert_eq!(answer, Ok((fresh, Outcome::Miss)));
    assert_eq!(store.stats().computations_started, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panic_becomes_an_error_for_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let key = Key::derive(b"clip", b"panics");
    let gate = Gate::new();

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    if gate.runs() > 0 {
                        panic!("codec bug");
                    }
                    Ok::<_, String>(Bytes::new())
                })
                .await
        }));
    }
    wait_until("9 callers coalesced", || store.stats().coalesced == 9).await;
    gate.open();
    for task in tasks {
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("no waiter hangs")
            .unwrap();
        assert_eq!(result, Err(ComputeError::Panicked));
    }
    assert_eq!(gate.runs(), 1);
    let stats = store.stats();
    assert_eq!(stats.computations_failed, 1);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(store.get(&key).await, None);

    // A panic while building the future (inside the closure) too.
    let result = store
        .get_or_compute(key, || -> std::future::Ready<Result<Bytes, String>> {
            panic!("closure bug")
        })
        .await;
    assert_eq!(result, Err(ComputeError::Panicked));
    assert_eq!(store.stats().computations_failed, 2);

    // And the key still computes afterwards.
    let result = store
        .get_or_compute(key, || async { Ok::<_, String>(Bytes::from_static(b"ok")) })
        .await;
    assert_eq!(result, Ok((Bytes::from_static(b"ok"), Outcome::Miss)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_compute_independently() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 64 * MIB, 64 * MIB).await;
    let gate = Gate::new();
    let mut tasks = Vec::new();
    for n in 0..8u32 {
        let store = store.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let key = Key::derive(&n.to_be_bytes(), b"independent");
            store
                .get_or_compute(key, move || async move {
                    gate.enter().await;
                    Ok::<_, String>(value(n, 64))
                })
                .await
                .map(|(v, outcome)| (n, v, outcome))
        }));
    }
    // All eight run at once: none waits for another key's computation.
    wait_until("8 computations running", || gate.runs() == 8).await;
    assert_eq!(store.stats().in_flight, 8);
    gate.open();
    for task in tasks {
        let (n, got, outcome) = task.await.unwrap().unwrap();
        assert_eq!(got, value(n, 64));
        assert_eq!(outcome, Outcome::Miss);
    }
}
