//! The disk tier never fills its filesystem past a headroom, and a full
//! filesystem never stops `Store::open`. Each test mounts a small tmpfs
//! (root and mount permission needed); where that is refused, it prints why
//! and skips.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{config, value, KIB, MIB};
use opusgate_cache::{Key, Store, Tier};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason printed) where tmpfs cannot be mounted.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(at.to_owned())),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root and mount permission): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn key(n: u32) -> Key {
    Key::derive(&n.to_be_bytes(), b"full-filesystem")
}

/// (free, size) of the filesystem holding `path`.
fn fs_space(path: &Path) -> (u64, u64) {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
}

fn headroom(size: u64) -> u64 {
    (size / 20).min(64 * MIB)
}

/// Writes a junk file under `dir` until the filesystem has no byte left.
fn fill(dir: &Path) {
    let mut junk = std::fs::File::create(dir.join("junk")).expect("junk file");
    let block = vec![0xA5u8; 4096];
    loop {
        if junk.write_all(&block).is_err() {
            break;
        }
    }
    // The last partial block too.
    while junk.write_all(&[0u8]).is_ok() {}
    let _ = junk.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effective_capacity_is_what_the_filesystem_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Tmpfs::mount(dir.path(), "8m") else {
        return;
    };
    // Another writer holds 3 MiB of the 8 MiB.
    std::fs::write(dir.path().join("other"), vec![1u8; 3 * MIB as usize]).unwrap();
    let (free, size) = fs_space(dir.path());
    let store: Store<String> = Store::open(config(dir.path(), MIB, 1 << 30)).await.unwrap();
    let stats = store.stats();
    assert!(stats.disk_enabled);
    // The store held nothing: used = 0.
    assert_eq!(
        stats.disk.capacity_bytes,
        free - headroom(size),
        "{stats:?}"
    );
    assert!(stats.disk.capacity_bytes < 5 * MIB + 1);
    // Filling it stops at the effective capacity, short of the filesystem.
    for n in 0..40 {
        store.insert(key(n), value(n, 200 * KIB as usize)).await;
        store.flush().await.unwrap();
    }
    let stats = store.stats();
    assert!(stats.disk.bytes <= stats.disk.capacity_bytes, "{stats:?}");
    assert!(stats.evictions_disk > 0, "{stats:?}");
    store.close().await.unwrap();

    // Reopened with values stored: used + free - headroom is the same.
    let used_before = stats.disk.capacity_bytes;
    let store: Store<String> = Store::open(config(dir.path(), MIB, 1 << 30)).await.unwrap();
    let reopened = store.stats().disk.capacity_bytes;
    // sled's files count as used too, so it is a little higher.
    assert!(
        reopened >= used_before && reopened < used_before + MIB,
        "{used_before} then {reopened}"
    );
    store.close().await.unwrap();

    // A configured capacity below it is kept.
    let store: Store<String> = Store::open(config(dir.path(), MIB, MIB)).await.unwrap();
    assert_eq!(store.stats().disk.capacity_bytes, MIB);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_with_values_opens() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Tmpfs::mount(dir.path(), "4m") else {
        return;
    };
    let store: Store<String> = Store::open(config(dir.path(), 64 * MIB, 1 << 30))
        .await
        .unwrap();
    let first_capacity = store.stats().disk.capacity_bytes;
    for n in 0..30 {
        store.insert(key(n), value(n, 150 * KIB as usize)).await;
        let _ = store.flush().await;
    }
    let before = store.stats();
    assert!(before.disk.entries > 5, "{before:?}");
    let _ = store.close().await;
    fill(dir.path());
    assert_eq!(fs_space(dir.path()).0, 0, "the filesystem is full");

    let store: Store<String> = Store::open(config(dir.path(), 64 * MIB, 1 << 30))
        .await
        .expect("a full filesystem does not stop the open");
    let stats = store.stats();
    eprintln!("before: {before:?}\nafter: {stats:?}");
    assert!(stats.disk_enabled, "{stats:?}");
    assert!(stats.disk.capacity_bytes < first_capacity, "{stats:?}");
    assert!(stats.disk.bytes <= stats.disk.capacity_bytes, "{stats:?}");
    // The least recently used went: the newest value is still on disk.
    assert!(stats.disk.entries < before.disk.entries, "{stats:?}");
    let newest = key(29);
    assert_eq!(
        store.get(&newest).await,
        Some((value(29, 150 * KIB as usize), Tier::Disk))
    );
    // It serves: computing and storing work.
    let (got, _) = store
        .get_or_compute(key(1000), || async { Ok(value(1000, 10)) })
        .await
        .unwrap();
    assert_eq!(got, value(1000, 10));
    let _ = store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_without_values_disables_the_disk_tier() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Tmpfs::mount(dir.path(), "1m") else {
        return;
    };
    fill(dir.path());
    let store: Store<String> = Store::open(config(dir.path(), 64 * MIB, 1 << 30))
        .await
        .expect("a full filesystem does not stop the open");
    let stats = store.stats();
    assert!(!stats.disk_enabled, "{stats:?}");
    assert_eq!(stats.disk.capacity_bytes, 0);
    let (got, _) = store
        .get_or_compute(key(1), || async { Ok(value(1, 1000)) })
        .await
        .unwrap();
    assert_eq!(got, value(1, 1000));
    assert_eq!(
        store.get(&key(1)).await,
        Some((value(1, 1000), Tier::Memory))
    );
    store.flush().await.unwrap();
    assert_eq!(store.stats().disk_write_failures, 0);
    store.close().await.unwrap();
}
