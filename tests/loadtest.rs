//! `opusgate loadtest` against an in-process server: what it counts matches
//! the server's own stats delta, and it notices wrong audio.

mod support;

use opusgate::loadtest::{run_load, Clip, LoadtestArgs};
use support::clips::clip;
use support::server::{config_in, data_dir, TestServer};

fn args(url: &str) -> LoadtestArgs {
    LoadtestArgs {
        url: url.to_owned(),
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
