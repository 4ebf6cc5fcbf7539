//! Room on the disk tier's filesystem: the effective capacity at open (never
//! more than the filesystem can hold, with a headroom left free), and making
//! room on a filesystem that is already full when the store opens.
//!
//! The effective capacity is `min(disk_bytes, used + free - headroom)`:
//! `used` is what the store's files take now (allocated blocks, all of which
//! the store could give back), `free` what `statvfs` says an unprivileged
//! writer may still allocate, and the headroom 5 % of the filesystem's size,
//! at most 64 MiB. It is computed once, at open; other writers on the same
//! filesystem (another store among them) can still fill it later, which the
//! writer survives (the write fails and is counted).

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::StoreError;
use crate::key::Key;
use crate::record::{self, VALUES_DIR};

/// Share of the filesystem's size left free: 1/20 (5 %).
const HEADROOM_DIVISOR: u64 = 20;
/// Most headroom left free, on a large filesystem.
pub(crate) const HEADROOM_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What `statvfs` says about the filesystem holding the disk tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsSpace {
    /// Bytes an unprivileged writer may still allocate (`f_bavail`).
    pub free: u64,
    /// The filesystem's size in bytes (`f_blocks`).
    pub size: u64,
}

/// The space of the filesystem holding `path`.
pub(crate) fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let st = rustix::fs::statvfs(path)?;
    let block = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    Ok(FsSpace {
        free: st.f_bavail.saturating_mul(block),
        size: st.f_blocks.saturating_mul(block),
    })
}

/// The room left free on a filesystem of `size` bytes.
pub(crate) fn headroom(size: u64) -> u64 {
    (size / HEADROOM_DIVISOR).min(HEADROOM_MAX_BYTES)
}

/// `min(configured, used + free - headroom)`.
pub(crate) fn effective_capacity(configured: u64, used: u64, space: FsSpace) -> u64 {
    configured.min(
        used.saturating_add(space.free)
            .saturating_sub(headroom(space.size)),
    )
}

/// Bytes allocated to the files under `path` (recursively; symlinks are not
/// followed). A directory that does not exist holds 0.
pub(crate) fn store_usage(path: &Path) -> io::Result<u64> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        let meta = match entry.path().symlink_metadata() {
            Ok(meta) => meta,
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if meta.is_dir() {
            total = total.saturating_add(store_usage(&entry.path())?);
        } else if meta.is_file() {
            total = total.saturating_add(meta.blocks().saturating_mul(512));
        }
    }
    Ok(total)
}

/// Whether `error` means the filesystem (or a quota) is full.
pub(crate) fn is_no_space(error: &StoreError) -> bool {
    let io = match error {
        StoreError::Sled(sled::Error::Io(io)) | StoreError::Io(io) => io,
        _ => return false,
    };
    matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || io.to_string().contains("No space left on device")
}

/// How the victims of [`make_room`] were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VictimOrder {
    /// Least recently used first, by the recency index.
    Index,
    /// Oldest modification time first (the index could not be read).
    Mtime,
}

impl VictimOrder {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VictimOrder::Index => "recency index",
            VictimOrder::Mtime => "file modification time",
        }
    }
}

/// Deletes value files under `disk_path`, least recently used first by
/// `order` (keys oldest first, from the recency index) when given, then the
/// files it does not list by oldest modification time, until at least
/// `target` bytes (allocated) are freed or none is left. Returns the files
/// and bytes freed. Their recency entries, if any, are dropped at the next
/// open (an entry without a file).
pub(crate) fn make_room(
    disk_path: &Path,
    order: Option<&[Key]>,
    target: u64,
) -> io::Result<(u64, u64)> {
    let mut by_mtime = list_value_files(disk_path)?;
    by_mtime.sort_by_key(|(_, mtime, _)| *mtime);
    let mut candidates: Vec<PathBuf> = Vec::with_capacity(by_mtime.len());
    if let Some(order) = order {
        candidates.extend(order.iter().map(|key| record::value_path(disk_path, key)));
    }
    candidates.extend(by_mtime.into_iter().map(|(path, _, _)| path));
    let (mut files, mut bytes) = (0u64, 0u64);
    for path in candidates {
        if bytes >= target {
            break;
        }
        let Ok(meta) = path.symlink_metadata() else {
            continue; // Gone already (listed twice, or never there).
        };
        if !meta.is_file() {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                files += 1;
                bytes = bytes.saturating_add(meta.blocks().saturating_mul(512).max(1));
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok((files, bytes))
}

/// Every file under `values/`, with its modification time and length.
fn list_value_files(disk_path: &Path) -> io::Result<Vec<(PathBuf, SystemTime, u64)>> {
    let mut out = Vec::new();
    let shards = match fs::read_dir(disk_path.join(VALUES_DIR)) {
        Ok(shards) => shards,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(out),
        Err(error) => return Err(error),
    };
    for shard in shards {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(shard.path())? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((entry.path(), mtime, meta.len()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_5_percent_at_most_64_mib() {
        assert_eq!(headroom(4 << 20), (4 << 20) / 20);
        assert_eq!(headroom(100 << 30), HEADROOM_MAX_BYTES);
    }

    #[test]
    fn effective_capacity_is_the_smaller() {
        let space = FsSpace {
            free: 1_000_000,
            size: 4_000_000,
        };
        // used + free - headroom = 500_000 + 1_000_000 - 200_000.
        assert_eq!(effective_capacity(u64::MAX, 500_000, space), 1_300_000);
        assert_eq!(effective_capacity(1_000, 500_000, space), 1_000);
        let full = FsSpace {
            free: 0,
            size: 4_000_000,
        };
        assert_eq!(effective_capacity(u64::MAX, 100_000, full), 0);
    }

    #[test]
    fn usage_counts_allocated_file_blocks() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(store_usage(&dir.path().join("missing")).unwrap(), 0);
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), vec![1u8; 10_000]).unwrap();
        let used = store_usage(dir.path()).unwrap();
        assert!(used >= 10_000, "{used}");
    }

    #[test]
    fn make_room_deletes_index_order_then_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let files = crate::files::ValueFiles::open(dir.path()).unwrap();
        let keys: Vec<Key> = (1..=4u8).map(|n| Key::from_bytes([n; 32])).collect();
        for key in &keys {
            files.write(key, &[0u8; 8192]).unwrap();
        }
        // The index says key 3 is the oldest: it goes first.
        let (n, bytes) = make_room(dir.path(), Some(&keys[2..3]), 1).unwrap();
        assert_eq!(n, 1);
        assert!(bytes > 0);
        assert!(files.read(&keys[2]).unwrap().is_none());
        // Without an order, everything goes to free a lot.
        let (n, _) = make_room(dir.path(), None, u64::MAX).unwrap();
        assert_eq!(n, 3);
        assert!(list_value_files(dir.path()).unwrap().is_empty());
    }
}
