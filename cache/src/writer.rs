//! The disk writer thread: the only code that changes the sled trees once the
//! store is open. It owns the [`LruIndex`], applies writes with the evictions
//! they need, recency updates, deletions of corrupt records and flushes, one
//! at a time in the order they were queued.
//!
//! Being the only mutator keeps the byte accounting exact without locks held
//! across sled calls: the index always describes what is in the trees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, IVec, Tree};
use tokio::sync::{mpsc, oneshot};

use crate::disk::Shared;
use crate::index::{IndexEntry, LruIndex};
use crate::key::Key;
use crate::record;
use crate::stats::{add, bump, set};

/// How often, at most, `size_on_disk` is refreshed while writes keep coming.
const SIZE_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// Work for the writer thread.
pub(crate) enum Op {
    /// Write `value` under `key`, evicting as needed. `ticket` identifies the
    /// write in the pending map.
    Write { key: Key, value: Bytes, ticket: u64 },
    /// Mark `key` as just used, if it is on disk.
    Touch(Key),
    /// Delete the record under `key` if it still holds exactly `seen` (the
    /// bytes a reader found corrupt), then answer on `done`.
    RemoveCorrupt {
        key: Key,
        seen: IVec,
        done: oneshot::Sender<()>,
    },
    /// Make everything queued before this durable, then answer on `done`.
    Flush(oneshot::Sender<Result<(), sled::Error>>),
}

/// The sled handles and index the writer thread owns.
pub(crate) struct Writer {
    pub(crate) db: Db,
    pub(crate) values: Tree,
    pub(crate) meta: Tree,
    pub(crate) index: LruIndex,
    pub(crate) shared: Arc<Shared>,
    pub(crate) last_size_refresh: Option<Instant>,
}

impl Writer {
    /// Processes ops until every sender is gone, then flushes, releases the
    /// database (and with it sled's file lock) and signals `exited`.
    pub(crate) fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>, exited: oneshot::Sender<()>) {
        while let Some(op) = ops.blocking_recv() {
            let force_refresh = matches!(op, Op::Flush(_));
            self.apply(op);
            if force_refresh || ops.is_empty() || self.size_refresh_due() {
                self.refresh_size_on_disk();
            }
        }
        if let Err(error) = self.db.flush() {
            tracing::warn!(%error, "opusgate-cache: final flush of the disk tier failed");
        }
        drop(self);
        let _ = exited.send(());
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Write { key, value, ticket } => {
                if let Err(error) = self.write(key, &value) {
                    self.shared.write_failed(&key, &error);
                }
                self.shared.finish_pending(&key, ticket);
            }
            Op::Touch(key) => {
                if let Err(error) = self.touch(key) {
                    self.shared.write_failed(&key, &error);
                }
            }
            Op::RemoveCorrupt { key, seen, done } => {
                if let Err(error) = self.remove_corrupt(key, &seen) {
                    self.shared.write_failed(&key, &error);
                }
                let _ = done.send(());
            }
            Op::Flush(done) => {
                let result = self.db.flush().map(|_| ());
                let _ = done.send(result);
            }
        }
    }

    /// Writes one record, evicting the least recently used records first so
    /// that the total never exceeds the capacity.
    fn write(&mut self, key: Key, value: &Bytes) -> Result<(), sled::Error> {
        let len = value.len() as u64;
        let capacity = self.shared.capacity;
        if len > capacity {
            return Ok(());
        }
        let replaced = self.index.get(&key).map_or(0, |e| e.len);
        let victims = self.index.victims(len, replaced, capacity, Some(&key));
        let seq = self.index.next_seq();
        let record: IVec = record::encode(value).into();
        let meta = record::encode_meta(seq, len);
        let key_bytes = key.as_bytes();
        transact(&self.values, &self.meta, |values, metas| {
            for victim in &victims {
                values.remove(&victim.as_bytes()[..])?;
                metas.remove(&victim.as_bytes()[..])?;
            }
            values.insert(&key_bytes[..], record.clone())?;
            metas.insert(&key_bytes[..], &meta[..])?;
            Ok(())
        })?;
        for victim in &victims {
            self.index.remove(victim);
        }
        add(&self.shared.counters.evictions_disk, victims.len() as u64);
        self.index.put(key, IndexEntry { seq, len });
        self.publish_accounting();
        Ok(())
    }

    /// Moves `key` to the most recently used end, on disk and in the index.
    fn touch(&mut self, key: Key) -> Result<(), sled::Error> {
        let Some(entry) = self.index.get(&key) else {
            return Ok(());
        };
        let seq = self.index.next_seq();
        self.meta.insert(
            &key.as_bytes()[..],
            &record::encode_meta(seq, entry.len)[..],
        )?;
        self.index.put(key, IndexEntry { seq, ..entry });
        Ok(())
    }

    /// Deletes a record found corrupt, unless it changed since it was read.
    fn remove_corrupt(&mut self, key: Key, seen: &IVec) -> Result<(), sled::Error> {
        let key_bytes = key.as_bytes();
        let removed = transact(&self.values, &self.meta, |values, metas| {
            match values.get(&key_bytes[..])? {
                Some(current) if current == *seen => {
                    values.remove(&key_bytes[..])?;
                    metas.remove(&key_bytes[..])?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
        if removed {
            bump(&self.shared.counters.corrupt_records);
            self.index.remove(&key);
            self.publish_accounting();
        }
        Ok(())
    }

    fn publish_accounting(&self) {
        set(&self.shared.counters.disk_entries, self.index.len());
        set(&self.shared.counters.disk_bytes, self.index.bytes());
    }

    fn size_refresh_due(&self) -> bool {
        match self.last_size_refresh {
            None => true,
            Some(at) => at.elapsed() >= SIZE_REFRESH_INTERVAL,
        }
    }

    pub(crate) fn refresh_size_on_disk(&mut self) {
        // Best effort: a failed stat leaves the previous figure.
        if let Ok(size) = self.db.size_on_disk() {
            set(&self.shared.counters.disk_size_on_disk, size);
        }
        self.last_size_refresh = Some(Instant::now());
    }
}

/// Runs `body` as one sled transaction over the values and meta trees.
pub(crate) fn transact<T>(
    values: &Tree,
    meta: &Tree,
    body: impl Fn(
        &sled::transaction::TransactionalTree,
        &sled::transaction::TransactionalTree,
    ) -> Result<T, ConflictableTransactionError<()>>,
) -> Result<T, sled::Error> {
    (values, meta)
        .transaction(|(v, m)| body(v, m))
        .map_err(|error| match error {
            TransactionError::Storage(error) => error,
            TransactionError::Abort(()) => {
                sled::Error::Unsupported("opusgate-cache: transaction aborted".to_owned())
            }
        })
}

/// Builds the index from the meta tree at open, dropping entries that cannot
/// be read (with their records, counted as corrupt) and evicting down to
/// `capacity` (the capacity may have shrunk since the last run).
pub(crate) fn load_index(
    values: &Tree,
    meta: &Tree,
    capacity: u64,
    shared: &Shared,
) -> Result<LruIndex, sled::Error> {
    let mut index = LruIndex::default();
    let mut unreadable = Vec::new();
    for item in meta.iter() {
        let (key_bytes, entry_bytes) = item?;
        let key = <[u8; 32]>::try_from(key_bytes.as_ref())
            .ok()
            .map(Key::from_bytes);
        match (key, record::decode_meta(&entry_bytes)) {
            (Some(key), Some((seq, len))) => index.put(key, IndexEntry { seq, len }),
            _ => unreadable.push(key_bytes),
        }
    }
    for key_bytes in &unreadable {
        transact(values, meta, |v, m| {
            v.remove(key_bytes.as_ref())?;
            m.remove(key_bytes.as_ref())?;
            Ok(())
        })?;
    }
    add(&shared.counters.corrupt_records, unreadable.len() as u64);

    let victims = index.victims(0, 0, capacity, None);
    transact(values, meta, |v, m| {
        for victim in &victims {
            v.remove(&victim.as_bytes()[..])?;
            m.remove(&victim.as_bytes()[..])?;
        }
        Ok(())
    })?;
    for victim in &victims {
        index.remove(victim);
    }
    add(&shared.counters.evictions_disk, victims.len() as u64);
    set(&shared.counters.disk_entries, index.len());
    set(&shared.counters.disk_bytes, index.bytes());
    Ok(index)
}
