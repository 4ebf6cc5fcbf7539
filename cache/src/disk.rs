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
use crate::record::{self, RecordError};
use crate::stats::Counters;
use crate::tierstate::Shared;
use crate::writer::{Op, Writer};

/// sled's own page cache. sled holds only the recency tree (48 bytes an
/// entry), so a small cache covers it; its 1 GiB default is far too much.
pub(crate) const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How long `open` waits for another handle (in this process or a previous
/// one that is exiting) to release sled's lock on the database.
pub(crate) const OPEN_LOCK_WAIT: Duration = Duration::from_secs(5);

/// What a blocking read found.
enum Read {
    Missing,
    Found(Bytes),
    Corrupt(RecordError),
}

/// Handle to the disk tier.
pub(crate) struct DiskTier {
    shared: Arc<Shared>,
    files: ValueFiles,
    ops: mpsc::UnboundedSender<Op>,
    exited: Mutex<Option<oneshot::Receiver<()>>>,
}

impl DiskTier {
    /// Opens (creating if missing) the database and values directory at
    /// `path`, rebuilds and reconciles the accounting (see `writer`), evicts
    /// down to `capacity` if needed and starts the writer thread.
    pub(crate) async fn open(
        path: PathBuf,
        capacity: u64,
        counters: Arc<Counters>,
    ) -> Result<DiskTier, StoreError> {
        let shared = Arc::new(Shared::new(counters, capacity));
        let started = Instant::now();
        let (writer, files) = loop {
            let attempt_path = path.clone();
            let attempt_shared = Arc::clone(&shared);
            let result =
                tokio::task::spawn_blocking(move || open_blocking(&attempt_path, attempt_shared))
                    .await?;
            match result {
                Ok(opened) => break opened,
                Err(error) if is_lock_busy(&error) && started.elapsed() < OPEN_LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("opusgate-cache-disk".to_owned())
            .spawn(move || writer.run(ops_rx, exited_tx))?;
        Ok(DiskTier {
            shared,
            files,
            ops,
            exited: Mutex::new(Some(exited_rx)),
        })
    }

    /// A callback marking a key as just used on disk (for memory evictions).
    pub(crate) fn toucher(&self) -> impl Fn(Key) + Send + Sync + 'static {
        let ops = self.ops.clone();
        move |key| {
            let _ = ops.send(Op::Touch(key));
        }
    }

    /// The verified value under `key`, from the write-back queue or its file.
    /// A corrupt record is deleted (and counted) before this returns `None`.
    pub(crate) async fn get(&self, key: &Key) -> Option<Bytes> {
        if let Some(value) = self.shared.pending_value(key) {
            return Some(value);
        }
        let key = *key;
        let files = self.files.clone();
        let read = tokio::task::spawn_blocking(move || read_blocking(&files, &key)).await;
        match read {
            Ok(Ok(Read::Missing)) => None,
            Ok(Ok(Read::Found(value))) => {
                let _ = self.ops.send(Op::Touch(key));
                Some(value)
            }
            Ok(Ok(Read::Corrupt(error))) => {
                tracing::warn!(%key, %error, "opusgate-cache: corrupt disk record; deleting it");
                let (done, done_rx) = oneshot::channel();
                if self.ops.send(Op::RemoveCorrupt { key, done }).is_ok() {
                    let _ = done_rx.await;
                }
                None
            }
            Ok(Err(error)) => {
                self.shared.read_failed(&key, &error);
                None
            }
            Err(error) => {
                self.shared.read_failed(&key, &error);
                None
            }
        }
    }

    /// Queues `value` to be written under `key`; returns at once. Values
    /// larger than the disk capacity are not written.
    pub(crate) fn enqueue_write(&self, key: Key, value: Bytes) {
        let len = value.len() as u64;
        if len > self.shared.capacity {
            return;
        }
        let Some(ticket) = self.shared.queue_write(key, &value) else {
            self.shared
                .write_failed(&key, &"write-back queue full; write dropped");
            return;
        };
        if self.ops.send(Op::Write { key, value, ticket }).is_err() {
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
        let (done, done_rx) = oneshot::channel();
        self.ops
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

fn open_blocking(path: &Path, shared: Arc<Shared>) -> Result<(Writer, ValueFiles), StoreError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES)
        .open()?;
    let files = ValueFiles::open(path)?;
    let writer = Writer::open(db, files.clone(), shared)?;
    Ok((writer, files))
}

fn read_blocking(files: &ValueFiles, key: &Key) -> std::io::Result<Read> {
    let Some(record) = files.read(key)? else {
        return Ok(Read::Missing);
    };
    match record::verify(key, &record) {
        Ok(range) => Ok(Read::Found(Bytes::from(record).slice(range))),
        Err(error) => Ok(Read::Corrupt(error)),
    }
}

/// Whether sled failed only because another handle holds its file lock.
pub(crate) fn is_lock_busy(error: &StoreError) -> bool {
    matches!(error, StoreError::Sled(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
}
