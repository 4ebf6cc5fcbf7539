//! `opusgate loadtest` against in-process servers: what it counts matches
//! the server's own stats delta, it notices wrong audio, and over two
//! instances it spreads the requests and sums their stats.

mod support;

use opusgate::loadtest::{run_load, Clip, LoadtestArgs};
use serde_json::Value;
use support::clips::clip;
use support::http::Api as _;
use support::server::{config_in, data_dir, TestServer};

fn args(url: &str) -> LoadtestArgs {
    LoadtestArgs {
        url: vec![url.to_owned()],
        api_key: None,
        concurrency: 4,
        requests: Some(30),
        duration: None,
        rate: 16_000,
        channels: 1,
        files: Vec::new(),
        generate: 2,
        seconds: 2.0,
        seed: Some(42),
        repeat_ratio: Some(0.5),
        zipf: None,
        multipart: false,
        json: false,
    }
}

#[tokio::test]
async fn counts_match_the_server_stats_delta() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let args = args(&server.base);
    let clips = opusgate::loadtest::prepare_clips(&args).unwrap();
    assert_eq!(clips.len(), 2);
    let report = run_load(&args, clips, false).await.unwrap();

    assert_eq!(report.requests, 30);
    assert_eq!(report.success, 30, "{}", report.text());
    assert_eq!(report.failure, 0);
    assert_eq!(report.wrong_bodies, 0);
    assert_eq!(report.status_codes.get(&200), Some(&30));
    let server_delta = report.server.clone().expect("stats delta");
    assert_eq!(server_delta.lookups, 30);
    let outcome = |name: &str| report.cache_outcomes.get(name).copied().unwrap_or(0) as u64;
    assert_eq!(outcome("miss"), server_delta.misses);
    assert_eq!(outcome("hit-memory"), server_delta.hits_memory);
    assert_eq!(outcome("hit-disk"), server_delta.hits_disk);
    assert_eq!(outcome("coalesced"), server_delta.coalesced);
    // Two distinct clips: exactly two conversions, whatever the interleaving.
    assert_eq!(server_delta.misses, 2);
    assert_eq!(server_delta.conversions_completed, 2);
    let text = report.text();
    assert!(text.contains("concurrent users:   4"), "{text}");
    assert!(
        text.contains("success:            30, failure: 0"),
        "{text}"
    );

    // Run again: every request is now a memory hit.
    let report = run_load(
        &args,
        opusgate::loadtest::prepare_clips(&args).unwrap(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.cache_outcomes.get("hit-memory"), Some(&30));
    assert_eq!(report.server.unwrap().conversions_completed, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_body_counts_as_a_failure() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let mut args = args(&server.base);
    args.requests = Some(3);
    // Expect 48 kHz audio but ask the server for 16 kHz: every body is "wrong".
    let wrong = Clip::new(clip(1.0, 9), 48_000, 1).unwrap();
    let report = run_load(&args, vec![wrong], false).await.unwrap();
    assert_eq!(report.success, 0);
    assert_eq!(report.failure, 3);
    assert_eq!(report.wrong_bodies, 3);
    server.stop().await;
}

#[tokio::test]
async fn two_instances_share_the_requests_and_their_stats_are_summed() {
    let (dir_a, dir_b) = (data_dir(), data_dir());
    let a = TestServer::start(config_in(dir_a.path())).await;
    let b = TestServer::start(config_in(dir_b.path())).await;
    let mut args = args(&a.base);
    args.url.push(b.base.clone());
    let clips = opusgate::loadtest::prepare_clips(&args).unwrap();
    let report = run_load(&args, clips, false).await.unwrap();
    assert_eq!(report.success, 30, "{}", report.text());

    // Each instance's own stats (fresh servers: the totals are the deltas).
    let client = reqwest::Client::new();
    let own = [a.stats(&client).await, b.stats(&client).await];
    let count = |s: &Value, field: &str| s["cache"][field].as_u64().unwrap();
    for s in &own {
        assert!(count(s, "lookups") > 0, "{s}");
    }
    let summed = report.server.clone().expect("summed stats");
    assert_eq!(summed.instances, 2);
    assert_eq!(summed.lookups, 30);
    assert_eq!(
        summed.misses,
        count(&own[0], "misses") + count(&own[1], "misses")
    );
    let misses = report.cache_outcomes.get("miss").copied().unwrap_or(0);
    assert_eq!(misses as u64, summed.misses);
    // Round robin: request i went to URL i % 2.
    let urls: Vec<&str> = report.instances.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [a.base.as_str(), b.base.as_str()]);
    for (instance, s) in report.instances.iter().zip(&own) {
        assert_eq!(instance.requests, 15);
        let delta = instance.delta.as_ref().expect("instance delta");
        assert_eq!(delta["cache"]["misses"], s["cache"]["misses"]);
        assert_eq!(delta["cache"]["lookups"], s["cache"]["lookups"]);
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["server"]["misses"], summed.misses);
    assert_eq!(json["instances"][1]["url"], b.base.as_str());
    let text = report.text();
    assert!(text.contains("fleet (sum of 2):"), "{text}");
    assert!(text.contains(&b.base), "{text}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_instance_without_stats_is_named_and_the_others_summed() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    // A port nobody listens on any more.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut args = args(&server.base);
    args.url.push(dead.clone());
    args.requests = Some(4);
    let clips = opusgate::loadtest::prepare_clips(&args).unwrap();
    let report = run_load(&args, clips, false).await.unwrap();
    assert_eq!(report.success, 2, "{}", report.text());
    assert_eq!(report.status_codes.get(&0), Some(&2));
    let summed = report.server.clone().expect("the live instance's stats");
    assert_eq!((summed.instances, summed.lookups), (1, 2));
    assert!(report.instances[1].stats_error.is_some());
    let text = report.text();
    assert!(
        text.contains(&format!("{dead}: requests 2  success 0  stats unavailable")),
        "{text}"
    );
    server.stop().await;
}
