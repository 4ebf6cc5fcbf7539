//! The disk tier and the filesystem under it, against the real binary on
//! small tmpfs mounts: the capacity at open is what the filesystem can
//! hold, a restart on a full filesystem makes room and serves, and a first
//! start on a full filesystem runs on memory.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::clips::{clip, fresh_wav};
use support::http::Api as _;
use support::process::{store_dir, ServerProcess};
use support::tmpfs::try_mount;

/// (free bytes for an unprivileged writer, size in bytes) of the filesystem
/// holding `path`, from `stat -f`.
fn fs_space(path: &Path) -> (u64, u64) {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %b %S"])
        .arg(path)
        .output()
        .expect("run stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    (n[0] * n[2], n[1] * n[2])
}

/// What the disk tier leaves free on a filesystem of `size` bytes.
fn headroom(size: u64) -> u64 {
    (size / 20).min(64 << 20)
}

/// Writes a junk file under `dir` until the filesystem has no byte left.
fn fill_up(dir: &Path) {
    let mut junk = std::fs::File::create(dir.join("junk")).expect("junk file");
    let block = vec![0xA5u8; 4096];
    while junk.write_all(&block).is_ok() {}
    while junk.write_all(&[0]).is_ok() {}
    let _ = junk.sync_all();
}

/// The value of `/metrics`' `name{store="…"}` series.
async fn store_gauge(
    server: &ServerProcess,
    client: &reqwest::Client,
    name: &str,
    store: &str,
) -> f64 {
    let text = server.metrics(client).await;
    let prefix = format!("{name}{{store=\"{store}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

async fn readyz(server: &ServerProcess, client: &reqwest::Client) -> u16 {
    client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

/// A restart on a filesystem with 0 bytes free (the disk tier filled it up
/// to its effective capacity, then a junk file took the rest): the server
/// starts, the audio store deletes its least recently used value files
/// until its index opens, keeps its disk tier with a capacity below the
/// configured one, and serves.
#[tokio::test]
async fn a_restart_on_a_full_filesystem_starts_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let Some(mount) = try_mount(&store, "4m") else {
        return;
    };
    let client = reqwest::Client::new();
    let configured = 1u64 << 30;
    let env = [
        ("OPUSGATE_CACHE__MEMORY_BYTES", (64u64 << 20).to_string()),
        ("OPUSGATE_CACHE__DISK_BYTES", configured.to_string()),
        (
            "OPUSGATE_UPSTREAM__CACHE_DISK_BYTES",
            (1u64 << 20).to_string(),
        ),
    ];
    // About 6.4 MB of WAV for a 4 MiB filesystem.
    let uploads: Vec<Vec<u8>> = (0..80).map(|i| clip(2.5, 1300 + i)).collect();
    let expected: Vec<Vec<u8>> = uploads.iter().map(|u| fresh_wav(u)).collect();

    let server = ServerProcess::start(&store, &env);
    for (i, upload) in uploads.iter().enumerate() {
        let (status, _, body) = server.convert(&client, upload).await;
        assert_eq!(status, 200, "clip {i}");
        assert_eq!(body, expected[i], "clip {i}");
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let first = server
        .wait_stats(&client, Duration::from_secs(60), "the disk writes", |s| {
            n(&s["cache"]["disk"]["entries"])
                + n(&s["cache"]["evictions"]["disk"])
                + n(&s["cache"]["disk_write_failures"])
                >= uploads.len() as u64
        })
        .await;
    let first_capacity = n(&first["cache"]["disk"]["capacity_bytes"]);
    assert!(first_capacity < configured, "{first}");
    assert!(
        n(&first["cache"]["evictions"]["disk"]) + n(&first["cache"]["disk_write_failures"]) > 0,
        "the disk tier never filled: {first}"
    );
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "first run exited with {exit}");
    fill_up(&store);
    assert_eq!(fs_space(&store).0, 0, "the filesystem is full");

    let server = ServerProcess::start(&store, &env);
    assert_eq!(readyz(&server, &client).await, 200);
    let stats = server.stats(&client).await;
    eprintln!(
        "after the restart: {}\nupstream: {}",
        stats["cache"], stats["upstream"]["cache"]
    );
    // What this implementation does: room is made, the disk tier stays.
    let disk = &stats["cache"]["disk"];
    assert_eq!(disk["enabled"], true, "{stats}");
    assert!(n(&disk["capacity_bytes"]) < first_capacity, "{stats}");
    assert!(n(&disk["bytes"]) <= n(&disk["capacity_bytes"]), "{stats}");
    assert!(n(&disk["entries"]) > 0, "{stats}");
    for line in server.log_text().lines() {
        if line.contains("opusgate-cache") {
            eprintln!("{line}");
        }
    }
    assert_eq!(
        server.log_count("filesystem full at open"),
        1,
        "{}",
        server.log_text()
    );
    assert_eq!(
        store_gauge(&server, &client, "opusgate_store_disk_enabled", "audio").await,
        1.0
    );
    // Every clip answers with its exact bytes (from disk or converted again).
    for (i, upload) in uploads.iter().enumerate() {
        let (status, cache, body) = server.convert(&client, upload).await;
        assert_eq!(status, 200, "clip {i}");
        assert_eq!(body, expected[i], "clip {i} ({cache})");
    }
    assert_eq!(readyz(&server, &client).await, 200);
    assert_eq!(server.log_count("panicked"), 0, "{}", server.log_text());
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit after a full restart: {exit}");
    drop(mount);
}

/// A first start on a filesystem with 0 bytes free: neither store can open
/// its index and there is no value file to delete, so both run on memory
/// only, say so in the stats and the metrics, and the server is ready.
#[tokio::test]
async fn a_first_start_on_a_full_filesystem_runs_on_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let Some(mount) = try_mount(&store, "1m") else {
        return;
    };
    fill_up(&store);
    let client = reqwest::Client::new();
    let server = ServerProcess::start(&store, &[]);
    assert_eq!(readyz(&server, &client).await, 200);
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["disk"]["enabled"], false, "{stats}");
    assert_eq!(stats["cache"]["disk"]["capacity_bytes"], 0, "{stats}");
    assert_eq!(
        stats["upstream"]["cache"]["disk"]["enabled"], false,
        "{stats}"
    );
    for store in ["audio", "upstream"] {
        assert_eq!(
            store_gauge(&server, &client, "opusgate_store_disk_enabled", store).await,
            0.0,
            "{store}"
        );
    }
    assert_eq!(
        server.log_count("runs on memory only"),
        2,
        "{}",
        server.log_text()
    );
    let upload = clip(1.0, 1400);
    let (status, cache, body) = server.convert(&client, &upload).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(body, fresh_wav(&upload));
    let (status, cache, _) = server.convert(&client, &upload).await;
    assert_eq!((status, cache.as_str()), (200, "hit-memory"));
    let stats = server.stats(&client).await;
    assert_eq!(stats["cache"]["disk_write_failures"], 0, "{stats}");
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit on memory only: {exit}");
    drop(mount);
}

/// The disk tier's capacity at open is min(disk_bytes, used + free -
/// headroom) of its filesystem, as the stats report it and the log explains.
#[tokio::test]
async fn the_disk_capacity_at_open_is_what_the_filesystem_can_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_dir(dir.path());
    let Some(mount) = try_mount(&store, "16m") else {
        return;
    };
    // Someone else's 8 MiB on the same filesystem.
    std::fs::write(store.join("other"), vec![7u8; 8 << 20]).expect("other file");
    let (free, size) = fs_space(&store);
    let configured = 1u64 << 30;
    let client = reqwest::Client::new();
    let server = ServerProcess::start(
        &store,
        &[
            ("OPUSGATE_CACHE__DISK_BYTES", configured.to_string()),
            (
                "OPUSGATE_UPSTREAM__CACHE_DISK_BYTES",
                (1u64 << 20).to_string(),
            ),
        ],
    );
    let stats = server.stats(&client).await;
    let capacity = stats["cache"]["disk"]["capacity_bytes"]
        .as_u64()
        .expect("capacity");
    // The audio store is opened first, on a store directory holding
    // nothing of its own: used = 0.
    assert_eq!(capacity, configured.min(free - headroom(size)), "{stats}");
    // The upstream store's 1 MiB fits: not lowered.
    assert_eq!(
        stats["upstream"]["cache"]["disk"]["capacity_bytes"],
        1u64 << 20,
        "{stats}"
    );
    let line = server
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("disk tier capacity lowered"))
        })
        .expect("the capacity was lowered and logged");
    eprintln!("{line}");
    assert_eq!(line["configured_bytes"], configured);
    assert_eq!(line["effective_bytes"], capacity);
    assert_eq!(line["fs_size_bytes"], size);
    assert_eq!(line["fs_free_bytes"], free);
    assert_eq!(line["store_bytes"], 0);
    assert_eq!(line["headroom_bytes"], headroom(size));
    assert_eq!(server.log_count("disk tier capacity lowered"), 1);
    let exit = server.terminate(Duration::from_secs(60));
    assert!(exit.success());
    drop(mount);
}
