//! The disk tier's state shared by its async side (`disk`) and its writer
//! thread (`writer`): the counters, the capacity, the write-back queue's
//! pending writes (readable by key until the writer has applied them), and
//! the rate limiters of the failure warnings.
//!
//! Both `disk` and `writer` import this module and it imports neither, so
//! no import runs back up.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::key::Key;
use crate::ratelimit::{WarnLimiter, WARN_INTERVAL};
use crate::stats::{bump, Counters};

/// Most bytes queued for the writer before further writes are dropped. A
/// single value is always accepted into an empty queue, whatever its size.
pub(crate) const PENDING_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// State shared by the async side and the writer thread.
pub(crate) struct Shared {
    pub(crate) counters: Arc<Counters>,
    pub(crate) capacity: u64,
    pending: Mutex<PendingWrites>,
    write_warn: WarnLimiter,
    read_warn: WarnLimiter,
}

/// Writes queued but not yet applied, readable by key.
#[derive(Default)]
struct PendingWrites {
    by_key: HashMap<Key, (u64, Bytes)>,
    bytes: u64,
    next_ticket: u64,
}

impl Shared {
    /// The state of a disk tier of `capacity` bytes, with nothing queued.
    pub(crate) fn new(counters: Arc<Counters>, capacity: u64) -> Shared {
        Shared {
            counters,
            capacity,
            pending: Mutex::new(PendingWrites::default()),
            write_warn: WarnLimiter::new(WARN_INTERVAL),
            read_warn: WarnLimiter::new(WARN_INTERVAL),
        }
    }

    /// Counts a failed disk write and logs it, at most once per interval.
    pub(crate) fn write_failed(&self, key: &Key, error: &dyn Display) {
        bump(&self.counters.disk_write_failures);
        if let Some(failures) = self.write_warn.record() {
            tracing::warn!(
                %key,
                %error,
                failures_since_last_log = failures,
                "opusgate-cache: disk write failed; the value still answers from memory"
            );
        }
    }

    /// Counts a failed disk read and logs it, at most once per interval.
    pub(crate) fn read_failed(&self, key: &Key, error: &dyn Display) {
        bump(&self.counters.disk_read_failures);
        if let Some(failures) = self.read_warn.record() {
            tracing::warn!(
                %key,
                %error,
                failures_since_last_log = failures,
                "opusgate-cache: disk read failed; treated as a disk miss"
            );
        }
    }

    fn pending(&self) -> MutexGuard<'_, PendingWrites> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of the queued write for `key`, if any.
    pub(crate) fn pending_value(&self, key: &Key) -> Option<Bytes> {
        self.pending()
            .by_key
            .get(key)
            .map(|(_, value)| value.clone())
    }

    /// Number of queued writes not yet applied.
    pub(crate) fn pending_writes(&self) -> u64 {
        self.pending().by_key.len() as u64
    }

    /// Adds `value` under `key` to the pending writes (replacing an older
    /// one for the key) and returns its ticket, or `None` if the queue is
    /// not empty and would then hold more than [`PENDING_LIMIT_BYTES`].
    pub(crate) fn queue_write(&self, key: Key, value: &Bytes) -> Option<u64> {
        let len = value.len() as u64;
        let mut pending = self.pending();
        if pending.bytes > 0 && pending.bytes.saturating_add(len) > PENDING_LIMIT_BYTES {
            return None;
        }
        let ticket = pending.next_ticket;
        pending.next_ticket += 1;
        if let Some((_, old)) = pending.by_key.insert(key, (ticket, value.clone())) {
            pending.bytes -= old.len() as u64;
        }
        pending.bytes += len;
        Some(ticket)
    }

    /// Forgets the queued write `ticket` for `key` once it is applied (or
    /// failed); a newer write queued for the same key stays.
    pub(crate) fn finish_pending(&self, key: &Key, ticket: u64) {
        let mut guard = self.pending();
        let pending = &mut *guard;
        if let Entry::Occupied(entry) = pending.by_key.entry(*key) {
            if entry.get().0 == ticket {
                let (_, value) = entry.remove();
                pending.bytes -= value.len() as u64;
            }
        }
    }
}
