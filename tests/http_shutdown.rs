//! Graceful shutdown of the real binary: SIGTERM while conversions run lets
//! them finish, the clients get their WAV, the store is flushed, exit 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{clip, data_dir, header, wav_info};
use serde_json::Value;

/// Starts `opusgate serve` on an ephemeral port and returns it with its address.
fn spawn_server(dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opusgate"))
        .args(["serve", "--port", "0", "--log-format", "json"])
        .current_dir(dir)
        .env("OPUSGATE_CACHE__DIR", dir.join("store"))
        .env("OPUSGATE_CONVERSION__WORKERS", "1")
        .env("OPUSGATE_CONVERSION__MAX_CONCURRENT", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start opusgate");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("opusgate exited before listening")
            .expect("read stderr");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["message"] == "opusgate listening" {
                break v["addr"].as_str().expect("addr field").to_owned();
            }
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}

#[tokio::test]
async fn sigterm_lets_in_flight_conversions_finish() {
    let dir = data_dir();
    let (mut child, base) = spawn_server(dir.path());
    let c = reqwest::Client::new();
    let clips: Vec<Vec<u8>> = (0..3).map(|i| clip(60.0, 500 + i)).collect();
    let requests: Vec<_> = clips
        .iter()
        .cloned()
        .map(|upload| {
            let (c, url) = (c.clone(), format!("{base}/api/v1/convert"));
            tokio::spawn(async move {
                let r = c.post(url).body(upload).send().await.expect("response");
                let status = r.status().as_u16();
                let cache = header(&r, "x-cache").to_owned();
                (status, cache, r.bytes().await.expect("body"))
            })
        })
        .collect();

    // Wait until a conversion is running, then ask the server to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = c
            .get(format!("{base}/api/v1/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["conversions"]["active"].as_u64() == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "no conversion ever started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    for request in requests {
        let (status, cache, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(cache, "miss");
        assert_eq!(wav_info(&body), (960_000, 16_000, 1));
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("wait");
    assert!(exit.success(), "opusgate exited with {exit}");

    // The store was flushed: a new server answers from disk.
    let (mut child, base) = spawn_server(dir.path());
    let r = c
        .post(format!("{base}/api/v1/convert"))
        .body(clips[2].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "hit-disk");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
