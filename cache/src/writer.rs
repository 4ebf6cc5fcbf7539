//! The disk writer thread: the only code that changes the disk tier once the
//! store is open. It owns the [`LruIndex`] and applies writes with the
//! evictions they need, recency updates, deletions of corrupt records and
//! flushes, one at a time in the order they were queued. At open it
//! reconciles the recency tree with the value files (see
//! [`Writer::reconcile`]).
//!
//! Being the only mutator keeps the byte accounting exact without locks held
//! across I/O: the index always describes what is on disk.
//!
//! # Order of operations, and what a crash leaves
//!
//! A write removes its victims' files and then their recency entries, writes
//! the new value's file (temporary name, then rename) and then its recency
//! entry. sled makes its changes durable on its own schedule (every 500 ms)
//! or at a flush, while file operations reach the filesystem at once, so
//! after `kill -9` the two can disagree in exactly two ways, both repaired
//! by [`Writer::reconcile`] at the next open:
//! - a recency entry whose file is gone (an eviction whose entry removal was
//!   lost): the entry is dropped;
//! - a file with no recency entry (a write whose entry was lost): it is
//!   adopted if its framing is right, as the most recently used record.
//!
//! A file cut short or damaged otherwise fails its checks when read and is
//! deleted and counted; nothing unverified is ever returned. That includes a
//! whole record moved, copied or restored under another key's file name: its
//! checksum covers the key it was written for (see [`crate::record`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sled::{Batch, Db, Tree};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::files::{Listed, ValueFiles};
use crate::index::{IndexEntry, LruIndex};
use crate::key::Key;
use crate::record::{self, RecordError, HEADER_LEN, LEGACY_META_TREE, LEGACY_VALUES_TREE};
use crate::stats::{add, bump, set};
use crate::tierstate::Shared;

/// How often, at most, `size_on_disk` is refreshed while writes keep coming.
const SIZE_REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// Work for the writer thread.
pub(crate) enum Op {
    /// Write `value` under `key`, evicting as needed. `ticket` identifies the
    /// write in the pending map.
    Write { key: Key, value: Bytes, ticket: u64 },
    /// Mark `key` as just used, if it is on disk.
    Touch(Key),
    /// A reader found the record under `key` corrupt: delete it if it still
    /// is (it may have been rewritten since), then answer on `done`.
    RemoveCorrupt { key: Key, done: oneshot::Sender<()> },
    /// Make everything queued before this durable, then answer on `done`.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Answer on `done` once everything queued before this is applied
    /// (nothing made durable).
    Barrier(oneshot::Sender<()>),
}

/// The handles and index the writer thread owns.
pub(crate) struct Writer {
    db: Db,
    meta: Tree,
    files: ValueFiles,
    index: LruIndex,
    shared: Arc<Shared>,
    /// Keys whose files were written since the last flush.
    unsynced: HashSet<Key>,
    last_size_refresh: Option<Instant>,
}

impl Writer {
    /// The writer for an opened database and values directory, with its
    /// index rebuilt and reconciled (see [`Writer::reconcile`]).
    pub(crate) fn open(
        db: Db,
        files: ValueFiles,
        shared: Arc<Shared>,
    ) -> Result<Writer, StoreError> {
        let meta = db.open_tree(record::META_TREE)?;
        let mut writer = Writer {
            db,
            meta,
            files,
            index: LruIndex::default(),
            shared,
            unsynced: HashSet::new(),
            last_size_refresh: None,
        };
        writer.reconcile()?;
        writer.refresh_size_on_disk();
        Ok(writer)
    }

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
        if let Err(error) = self.flush() {
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
            Op::RemoveCorrupt { key, done } => {
                if let Err(error) = self.remove_corrupt(key) {
                    self.shared.write_failed(&key, &error);
                }
                let _ = done.send(());
            }
            Op::Flush(done) => {
                let _ = done.send(self.flush());
            }
            Op::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Writes one record, evicting the least recently used records first so
    /// that the total never exceeds the capacity. The victims go before the
    /// new file is written: on a nearly full filesystem it needs their room.
    fn write(&mut self, key: Key, value: &Bytes) -> Result<(), StoreError> {
        let len = value.len() as u64;
        let capacity = self.shared.capacity;
        if len > capacity {
            return Ok(());
        }
        let replaced = self.index.get(&key).map_or(0, |e| e.len);
        let victims = self.index.victims(len, replaced, capacity, Some(&key));
        self.evict(&victims)?;
        self.files.write(&key, value)?;
        let seq = self.index.next_seq();
        if let Err(error) = self
            .meta
            .insert(&key.as_bytes()[..], &record::encode_meta(seq, len)[..])
        {
            // Unindexed, the file would be adopted at the next open anyway;
            // removing it keeps the accounting exact now.
            if replaced == 0 {
                let _ = self.files.remove(&key);
            }
            return Err(error.into());
        }
        self.index.put(key, IndexEntry { seq, len });
        self.unsynced.insert(key);
        self.publish_accounting();
        Ok(())
    }

    /// Deletes `victims` (files, then recency entries) and counts them as
    /// evictions. A victim whose file cannot be removed stays indexed and
    /// the first such error is returned, after the others are applied.
    fn evict(&mut self, victims: &[Key]) -> Result<(), StoreError> {
        if victims.is_empty() {
            return Ok(());
        }
        let mut first_error = None;
        let mut removed = Vec::with_capacity(victims.len());
        for victim in victims {
            match self.files.remove(victim) {
                Ok(()) => removed.push(*victim),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        self.forget(&removed)?;
        add(&self.shared.counters.evictions_disk, removed.len() as u64);
        match first_error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Drops the recency entries and index entries of `keys` (whose files
    /// are gone).
    fn forget(&mut self, keys: &[Key]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for key in keys {
            batch.remove(&key.as_bytes()[..]);
        }
        self.meta.apply_batch(batch)?;
        for key in keys {
            self.index.remove(key);
            self.unsynced.remove(key);
        }
        self.publish_accounting();
        Ok(())
    }

    /// Moves `key` to the most recently used end, on disk and in the index.
    fn touch(&mut self, key: Key) -> Result<(), StoreError> {
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

    /// Deletes a record a reader found corrupt, if it still fails its checks
    /// (a write may have replaced it since the read), and counts it once.
    fn remove_corrupt(&mut self, key: Key) -> Result<(), StoreError> {
        let Some(record) = self.files.read(&key)? else {
            // Already deleted (by an earlier report), or removed by hand.
            if self.index.get(&key).is_some() {
                self.forget(&[key])?;
            }
            return Ok(());
        };
        if record::verify(&key, &record).is_ok() {
            return Ok(());
        }
        self.files.remove(&key)?;
        bump(&self.shared.counters.corrupt_records);
        self.forget(&[key])
    }

    /// fsyncs the files written since the last flush, then sled.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.files.sync(&self.unsynced)?;
        self.unsynced.clear();
        self.db.flush()?;
        Ok(())
    }

    /// Rebuilds the index at open from the recency tree and the listing of
    /// value files, and makes them agree:
    /// - an unreadable recency entry is dropped with its file (counted as a
    ///   corrupt record);
    /// - an indexed file whose length is not its entry's is deleted (corrupt);
    /// - an entry with no file is dropped;
    /// - a file with no entry is adopted if its framing is right (corrupt
    ///   and deleted if not), deleted without being counted if it is a record
    ///   of an outdated format (see below);
    /// - leftovers of interrupted writes are removed;
    /// - then records are evicted down to the capacity (it may have shrunk).
    ///
    /// A database from before values moved to files still holds them in
    /// sled; that tree is dropped (the cache starts empty).
    ///
    /// A database last opened by a version writing format 1 records (whose
    /// checksum did not cover the key) has its recency entries in
    /// [`LEGACY_META_TREE`]: that tree is dropped and this version's own
    /// recency tree emptied (it can hold stale entries if the database went
    /// from this version back to an older one and forward again), so that
    /// every file comes up unindexed and has its framing, the version among
    /// it, checked: format 1 records are deleted there and then, and the disk
    /// tier starts cold. Outside an upgrade, the open reads no file the index
    /// accounts for; a format 1 file planted under an indexed key fails its
    /// checks on read instead and is counted as corrupt like any record that
    /// should not be there.
    fn reconcile(&mut self) -> Result<(), StoreError> {
        let tree_names = self.db.tree_names();
        let has_tree = |tree: &str| tree_names.iter().any(|name| name == tree.as_bytes());
        if has_tree(LEGACY_VALUES_TREE) {
            self.db.drop_tree(LEGACY_VALUES_TREE)?;
            tracing::info!("opusgate-cache: dropped the values kept in sled by an older version");
        }
        if has_tree(LEGACY_META_TREE) {
            self.db.drop_tree(LEGACY_META_TREE)?;
            self.meta.clear()?;
            tracing::info!(
                "opusgate-cache: database last used by a version writing format 1 records; \
                 checking the format of every record file"
            );
        }
        let mut corrupt = 0u64;
        // Records of an outdated format deleted below. Deliberately not
        // counted in `corrupt_records`: they are not damaged, only written
        // by an older version, and an upgrade drops every one of them at
        // once; counting them would raise the corruption counter (and any
        // alert on it) by the size of the cache on every upgrade. They are
        // reported in the "reconciled" log line below (`outdated`).
        let mut outdated = 0u64;
        let mut unreadable = HashSet::new();
        let mut bad_entries = Batch::default();
        for item in self.meta.iter() {
            let (key_bytes, entry_bytes) = item?;
            let key = <[u8; 32]>::try_from(key_bytes.as_ref())
                .ok()
                .map(Key::from_bytes);
            match (key, record::decode_meta(&entry_bytes)) {
                (Some(key), Some((seq, len))) => self.index.put(key, IndexEntry { seq, len }),
                (key, _) => {
                    tracing::warn!(
                        key = key.map(|k| k.to_hex()),
                        "opusgate-cache: unreadable recency entry; deleting it and its record"
                    );
                    bad_entries.remove(key_bytes);
                    unreadable.extend(key);
                    corrupt += 1;
                }
            }
        }
        self.meta.apply_batch(bad_entries)?;

        let (listed, leftovers) = self.files.list()?;
        let mut present = HashSet::with_capacity(listed.len());
        let mut adopted = Vec::new();
        for Listed { key, record_len } in listed {
            if unreadable.contains(&key) {
                self.files.remove(&key)?;
                continue;
            }
            let framing = match self.index.get(&key) {
                Some(entry) if record_len == HEADER_LEN as u64 + entry.len => {
                    present.insert(key);
                    continue;
                }
                Some(entry) => Err(format!(
                    "file of {record_len} bytes, its entry says a {}-byte value",
                    entry.len
                )),
                None => match self.files.read_framing(&key)? {
                    Some(Ok(len)) => Ok(len),
                    Some(Err(RecordError::OldVersion(_))) => {
                        // Unindexed, so there is no recency entry to drop.
                        self.files.remove(&key)?;
                        outdated += 1;
                        continue;
                    }
                    Some(Err(error)) => Err(error.to_string()),
                    None => continue,
                },
            };
            match framing {
                Ok(len) => {
                    present.insert(key);
                    adopted.push((key, len));
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "opusgate-cache: corrupt disk record; deleting it");
                    self.files.remove(&key)?;
                    corrupt += 1;
                }
            }
        }
        let missing: Vec<Key> = self
            .index
            .keys()
            .filter(|key| !present.contains(key))
            .copied()
            .collect();
        self.forget(&missing)?;
        let mut entries = Batch::default();
        for (key, len) in &adopted {
            let seq = self.index.next_seq();
            entries.insert(&key.as_bytes()[..], &record::encode_meta(seq, *len)[..]);
            self.index.put(*key, IndexEntry { seq, len: *len });
        }
        self.meta.apply_batch(entries)?;
        add(&self.shared.counters.corrupt_records, corrupt);
        if corrupt + outdated + leftovers > 0 || !missing.is_empty() || !adopted.is_empty() {
            tracing::info!(
                adopted = adopted.len(),
                entries_without_file = missing.len(),
                corrupt,
                outdated,
                leftovers,
                "opusgate-cache: disk tier reconciled at open"
            );
        }
        let victims = self.index.victims(0, 0, self.shared.capacity, None);
        self.evict(&victims)?;
        self.publish_accounting();
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

    /// Refreshes the size-on-disk gauge: the record files (values and
    /// headers) plus sled's own files.
    fn refresh_size_on_disk(&mut self) {
        let files = self.index.bytes() + self.index.len() * HEADER_LEN as u64;
        // Best effort: a failed stat of sled's files leaves them out.
        let sled = self.db.size_on_disk().unwrap_or(0);
        set(&self.shared.counters.disk_size_on_disk, files + sled);
        self.last_size_refresh = Some(Instant::now());
    }
}
