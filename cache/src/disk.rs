//! The disk tier as the rest of the store sees it: opening the sled database
//! (the recency index) and the value files, verified reads run on tokio's
//! blocking pool, and the write-back queue in front of the writer thread
//! (see `writer`).
//!
//! # Eviction policy: least recently used
//!
//! Neither sled nor a directory evicts, so the tier keeps the sum of its
//! value lengths at or under its byte capacity itself, by deleting
//! least-recently-used records first, just before the write that needs the
//! room. Since room is made before a value is written, the total never
//! exceeds the capacity at all; a value larger than the whole capacity is
//! not written to disk.
//!
//! "Used" means written, read by a disk hit, or evicted from the memory tier
//! (a value leaving memory was in use until then, which a disk-only clock
//! would miss). LRU rather than oldest-first because a disk hit means the
//! value was wanted again after it fell out of memory: under oldest-first,
//! a clip that keeps being requested would still be dropped as soon as its
//! first write was the oldest, and computed again. The price is one 16-byte
//! sled write per disk hit or memory eviction, small next to reading a value.
//! The recency order lives in `META_TREE` (see [`crate::record`]) so it
//! survives restarts; a memory hit does not refresh it (that would cost a
//! disk write per hit).
//!
//! # Threads and durability
//!
//! All disk I/O runs off the async worker threads: reads on
//! `spawn_blocking`, everything that changes the files or the recency tree
//! on one dedicated writer thread. A write is queued and the caller goes
//! on; until the writer has applied it, the value stays readable from the
//! queue (reported as a disk hit), so no second computation starts
//! meanwhile. `flush` waits for the queue ahead of it and then fsyncs the
//! files written since the last flush, their directories, and sled. If
//! more than `PENDING_LIMIT_BYTES` are queued (a disk much slower than the
//! computations), further writes are dropped and counted as disk write
//! failures rather than letting memory grow without bound. The queued
//! writes, like the rest of the state this side shares with the writer
//! thread, live in `tierstate`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::files::ValueFiles;
use crate::key::Key;
use crate::record;
use crate::space::{self, VictimOrder};
use crate::stats::{add, Counters};
use crate::tierstate::Shared;
use crate::writer::{Op, Writer};

pub(crate) mod reader;

use reader::Opened;

/// sled's own page cache. sled holds only the recency tree (48 bytes an
/// entry), so a small cache covers it; its 1 GiB default is far too much.
pub(crate) const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How long `open` waits for another handle (in this process or a previous
/// one that is exiting) to release sled's lock on the database.
pub(crate) const OPEN_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Handle to the disk tier: enabled, or disabled (memory only) because it
/// could not be opened on a full filesystem.
pub(crate) struct DiskTier {
    shared: Arc<Shared>,
    active: Option<Active>,
    exited: Mutex<Option<oneshot::Receiver<()>>>,
}

/// The files and writer queue of an enabled disk tier.
struct Active {
    files: ValueFiles,
    ops: mpsc::UnboundedSender<Op>,
}

/// Why one attempt at opening failed: the error and, if the database opened
/// far enough to read it, the recency order (oldest first).
type OpenFailure = (StoreError, Option<Vec<Key>>);

impl DiskTier {
    /// Opens (creating if missing) the database and values directory at
    /// `path`, with a capacity of at most `configured` bytes and at most
    /// what the filesystem can hold (see `space`), rebuilds and reconciles
    /// the accounting (see `writer`), evicts down to the capacity if needed
    /// and starts the writer thread.
    ///
    /// On a full filesystem it deletes least recently used value files until
    /// the database opens; if it still does not, the tier is disabled (the
    /// store runs memory only) rather than failing.
    pub(crate) async fn open(
        path: PathBuf,
        configured: u64,
        counters: Arc<Counters>,
    ) -> Result<DiskTier, StoreError> {
        let sizing_path = path.clone();
        let sizing =
            tokio::task::spawn_blocking(move || size_capacity(&sizing_path, configured)).await?;
        let (capacity, headroom) = match sizing {
            Ok(sizing) => sizing,
            Err(error) if space::is_no_space(&error) => (configured, 0),
            Err(error) => return Err(error),
        };
        let shared = Arc::new(Shared::new(counters, capacity));
        let mut started = Instant::now();
        let (writer, files) = loop {
            let attempt_path = path.clone();
            let attempt_shared = Arc::clone(&shared);
            let result =
                tokio::task::spawn_blocking(move || open_blocking(&attempt_path, attempt_shared))
                    .await?;
            match result {
                Ok(opened) => break opened,
                Err((error, _)) if is_lock_busy(&error) && started.elapsed() < OPEN_LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((error, order)) if space::is_no_space(&error) => {
                    let room_path = path.clone();
                    // At least one file, and enough for sled to get going.
                    let target = headroom.max(1 << 20);
                    let order_used = if order.is_some() {
                        VictimOrder::Index
                    } else {
                        VictimOrder::Mtime
                    };
                    let freed = tokio::task::spawn_blocking(move || {
                        space::make_room(&room_path, order.as_deref(), target)
                    })
                    .await?;
                    match freed {
                        Ok((files, bytes)) if files > 0 => {
                            add(&shared.counters.evictions_disk, files);
                            tracing::warn!(
                                path = %path.display(),
                                %error,
                                files,
                                bytes,
                                order = order_used.as_str(),
                                "opusgate-cache: filesystem full at open; deleted the least \
                                 recently used value files to make room"
                            );
                            started = Instant::now();
                        }
                        freed => {
                            let freed_error = freed.err().map(|e| e.to_string());
                            tracing::error!(
                                path = %path.display(),
                                %error,
                                make_room_error = freed_error,
                                "opusgate-cache: the disk tier cannot be opened on a full \
                                 filesystem and holds no value file left to delete; it is \
                                 disabled and the store runs on memory only"
                            );
                            return Ok(DiskTier::disabled(shared));
                        }
                    }
                }
                Err((error, _)) => return Err(error),
            }
        };
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("opusgate-cache-disk".to_owned())
            .spawn(move || writer.run(ops_rx, exited_tx))?;
        Ok(DiskTier {
            shared,
            active: Some(Active { files, ops }),
            exited: Mutex::new(Some(exited_rx)),
        })
    }

    /// A disk tier that stores nothing (memory only).
    fn disabled(shared: Arc<Shared>) -> DiskTier {
        DiskTier {
            shared,
            active: None,
            exited: Mutex::new(None),
        }
    }

    /// Whether the tier is enabled (it opened).
    pub(crate) fn enabled(&self) -> bool {
        self.active.is_some()
    }

    /// The capacity in bytes of values: the effective one (see `space`), 0
    /// when disabled.
    pub(crate) fn capacity(&self) -> u64 {
        if self.enabled() {
            self.shared.capacity
        } else {
            0
        }
    }

    /// A callback marking a key as just used on disk (for memory evictions).
    pub(crate) fn toucher(&self) -> impl Fn(Key) + Send + Sync + 'static {
        let ops = self.active.as_ref().map(|active| active.ops.clone());
        move |key| {
            if let Some(ops) = &ops {
                let _ = ops.send(Op::Touch(key));
            }
        }
    }

    /// The verified value under `key`, from the write-back queue or its file.
    /// A corrupt record is deleted (and counted) before this returns `None`.
    pub(crate) async fn get(&self, key: &Key) -> Option<Bytes> {
        let active = self.active.as_ref()?;
        if let Some(value) = self.shared.pending_value(key) {
            return Some(value);
        }
        let key = *key;
        let files = active.files.clone();
        let read = tokio::task::spawn_blocking(move || read_blocking(&files, &key)).await;
        self.settle(&key, read).await
    }

    /// Queues `value` to be written under `key`; returns at once. Values
    /// larger than the disk capacity are not written.
    pub(crate) fn enqueue_write(&self, key: Key, value: Bytes) {
        let Some(active) = &self.active else {
            return;
        };
        let len = value.len() as u64;
        if len > self.shared.capacity {
            return;
        }
        let Some(ticket) = self.shared.queue_write(key, &value) else {
            self.shared
                .write_failed(&key, &"write-back queue full; write dropped");
            return;
        };
        if active.ops.send(Op::Write { key, value, ticket }).is_err() {
            self.shared.finish_pending(&key, ticket);
            self.shared.write_failed(&key, &StoreError::WriterStopped);
        }
    }

    /// Number of queued writes not yet applied.
    pub(crate) fn pending_writes(&self) -> u64 {
        self.shared.pending_writes()
    }

    /// Waits for every write queued so far, then fsyncs the files written
    /// and sled.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let Some(active) = &self.active else {
            return Ok(());
        };
        let (done, done_rx) = oneshot::channel();
        active
            .ops
            .send(Op::Flush(done))
            .map_err(|_| StoreError::WriterStopped)?;
        done_rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// The signal the writer thread sends once it has released the database
    /// (taken once, by `close`).
    pub(crate) fn take_exit_signal(&self) -> Option<oneshot::Receiver<()>> {
        self.exited.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The effective capacity (logging when it is below `configured`) and the
/// filesystem's headroom, after creating `path` if missing. A filesystem
/// whose space cannot be read leaves the configured capacity.
fn size_capacity(path: &Path, configured: u64) -> Result<(u64, u64), StoreError> {
    std::fs::create_dir_all(path)?;
    let measured = space::fs_space(path).and_then(|fs| Ok((fs, space::store_usage(path)?)));
    let (fs, used) = match measured {
        Ok(measured) => measured,
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "opusgate-cache: cannot read the filesystem's free space; \
                 the disk tier keeps its configured capacity"
            );
            return Ok((configured, 0));
        }
    };
    let headroom = space::headroom(fs.size);
    let effective = space::effective_capacity(configured, used, fs);
    if effective < configured {
        tracing::warn!(
            path = %path.display(),
            configured_bytes = configured,
            effective_bytes = effective,
            store_bytes = used,
            fs_free_bytes = fs.free,
            fs_size_bytes = fs.size,
            headroom_bytes = headroom,
            "opusgate-cache: disk tier capacity lowered to what the filesystem can hold \
             (store + free - headroom)"
        );
    }
    Ok((effective, headroom))
}

fn open_blocking(path: &Path, shared: Arc<Shared>) -> Result<(Writer, ValueFiles), OpenFailure> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(|error| (error.into(), None))?;
    let files = ValueFiles::open(path).map_err(|error| (error.into(), recency_order(&db)))?;
    match Writer::open(db.clone(), files.clone(), shared) {
        Ok(writer) => Ok((writer, files)),
        Err(error) => {
            let order = space::is_no_space(&error)
                .then(|| recency_order(&db))
                .flatten();
            Err((error, order))
        }
    }
}

/// The keys of the recency tree, least recently used first, if readable.
fn recency_order(db: &sled::Db) -> Option<Vec<Key>> {
    if !db
        .tree_names()
        .iter()
        .any(|name| name == record::META_TREE.as_bytes())
    {
        return None;
    }
    let meta = db.open_tree(record::META_TREE).ok()?;
    let mut entries = Vec::new();
    for item in meta.iter() {
        let (key_bytes, entry_bytes) = item.ok()?;
        let key = <[u8; 32]>::try_from(key_bytes.as_ref()).ok()?;
        if let Some((seq, _)) = record::decode_meta(&entry_bytes) {
            entries.push((seq, Key::from_bytes(key)));
        }
    }
    entries.sort_unstable_by_key(|(seq, _)| *seq);
    Some(entries.into_iter().map(|(_, key)| key).collect())
}

fn read_blocking(files: &ValueFiles, key: &Key) -> std::io::Result<Opened<Bytes>> {
    let Some(record) = files.read(key)? else {
        return Ok(Opened::Missing);
    };
    match record::verify(key, &record) {
        Ok(range) => Ok(Opened::Found(Bytes::from(record).slice(range))),
        Err(error) => Ok(Opened::Corrupt(error)),
    }
}

/// Whether sled failed only because another handle holds its file lock.
pub(crate) fn is_lock_busy(error: &StoreError) -> bool {
    matches!(error, StoreError::Sled(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
}
