//! Graceful shutdown of the real binary: SIGTERM while conversions run lets
//! them finish, the clients get their WAV, the store is flushed, exit 0.

mod support;

use std::path::Path;
use std::time::Duration;

use support::clips::{clip, wav_info};
use support::http::{convert_at, header, Api as _};
use support::process::{store_dir, ServerProcess};
use support::server::data_dir;

/// Starts `opusgate serve` on an ephemeral port with one conversion at a time.
fn spawn_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(
        &store_dir(dir),
        &[
            ("OPUSGATE_CONVERSION__WORKERS", "1".into()),
            ("OPUSGATE_CONVERSION__MAX_CONCURRENT", "1".into()),
        ],
    )
}

#[tokio::test]
async fn sigterm_lets_in_flight_conversions_finish() {
    let dir = data_dir();
    let server = spawn_server(dir.path());
    let c = reqwest::Client::new();
    let clips: Vec<Vec<u8>> = (0..3).map(|i| clip(60.0, 500 + i)).collect();
    let requests: Vec<_> = clips
        .iter()
        .map(|upload| {
            tokio::spawn(convert_at(
                c.clone(),
                server.url("/api/v1/convert"),
                upload.clone(),
            ))
        })
        .collect();

    // Wait until a conversion is running, then ask the server to stop.
    server
        .wait_stats(&c, Duration::from_secs(30), "a conversion to start", |v| {
            v["conversions"]["active"].as_u64() == Some(1)
        })
        .await;
    server.sigterm();

    for request in requests {
        let (status, cache, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(cache, "miss");
        assert_eq!(wav_info(&body), (960_000, 16_000, 1));
    }
    let exit = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(exit.success(), "opusgate exited with {exit}");

    // The store was flushed: a new server answers from disk.
    let server = spawn_server(dir.path());
    let r = server.post_convert(&c, "", clips[2].clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "hit-disk");
    let _ = server.terminate(Duration::from_secs(120));
}
