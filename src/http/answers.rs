//! One memory budget for answers (`limits.max_inflight_answer_bytes`): the
//! bytes of WAV held by the responses being sent at once.
//!
//! What is counted is what a response in flight keeps alive:
//! - a **whole value** held as the answer's buffer ([`HeldValue`]) counts
//!   its full length, once per key however many answers send it: an answer
//!   for a key already in flight is given the same buffer
//!   ([`AnswerBudget::shared`]), as identical answers always shared one.
//!   A buffer the memory tier also holds counts too: the memory tier may
//!   evict it while it is still being sent, and from then on only the
//!   answer keeps it, so counting it is what keeps the bound true (the same
//!   bytes may then be counted by both `cache.memory_bytes` and this
//!   budget, which errs on the safe side);
//! - a **chunk** of an answer streamed from its disk record
//!   ([`AnswerBudget::take`]): at most [`CHUNK`] bytes, counted from the
//!   read until the server has written it to the socket.
//!
//! The count lives in a guard inside each buffer (`Bytes::from_owner`), so
//! it is given back when the server drops the buffer: when the answer is
//! written, or its connection ends (a client gone, a write timeout).
//!
//! A whole value is held only if it fits now ([`AnswerBudget::hold`]) with
//! a reserve of an eighth of the budget left free for chunks, so that
//! answers held whole for slow readers cannot starve the streamed ones. A
//! value still on disk is read into memory only after its length is
//! reserved ([`AnswerBudget::admit`], asked by the store before the read):
//! deciding first and reserving after the read would let concurrent
//! answers all read whole at once. An answer that would cross the budget
//! is streamed from disk instead (by `answer_body`), and only an answer
//! with no disk record waits for room ([`AnswerBudget::hold_within`],
//! [`ANSWER_WAIT`]) before 503 `overloaded`.
//! A chunk waits for room as long as it takes: the budget comes back as
//! other answers are written, or cut off by the write timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use opusgate_cache::Key;
use tokio::sync::Notify;

use crate::stats::{self, names};

/// Bytes of one chunk of an answer streamed from disk (less for a budget
/// smaller than that).
pub const CHUNK: u64 = 64 * 1024;

/// How long an answer with no disk record waits for room to be held whole
/// before it is refused (503 `overloaded`).
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The budget's figures for `/api/v1/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerSnapshot {
    /// The budget, in bytes.
    pub budget_bytes: u64,
    /// Bytes held by answers in flight now.
    pub inflight_bytes: u64,
    /// The most bytes held at once since start.
    pub peak_bytes: u64,
    /// Answers streamed from their disk record because holding them whole
    /// would have crossed the budget.
    pub streamed: u64,
    /// Answers refused (503) because they could neither be held whole nor
    /// streamed from disk.
    pub rejected: u64,
}

#[derive(Default)]
struct Count {
    inflight: u64,
    peak: u64,
}

struct Inner {
    budget: u64,
    /// Left free by whole values, for chunks.
    reserve: u64,
    count: Mutex<Count>,
    /// Woken whenever bytes are given back.
    room: Notify,
    /// The whole values held by answers in flight, by key.
    held: Mutex<HashMap<Key, Weak<HeldValue>>>,
    streamed: AtomicU64,
    rejected: AtomicU64,
}

/// The shared budget; clones share it.
#[derive(Clone)]
pub struct AnswerBudget(Arc<Inner>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl AnswerBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> AnswerBudget {
        AnswerBudget(Arc::new(Inner {
            budget: bytes,
            reserve: bytes / 8,
            count: Mutex::new(Count::default()),
            room: Notify::new(),
            held: Mutex::new(HashMap::new()),
            streamed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }

    /// The budget, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.0.budget
    }

    /// The bytes of one chunk of a streamed answer: [`CHUNK`], or the
    /// whole budget if smaller.
    pub fn chunk_bytes(&self) -> u64 {
        CHUNK.min(self.0.budget).max(1)
    }

    /// The figures now.
    pub fn snapshot(&self) -> AnswerSnapshot {
        let count = lock(&self.0.count);
        AnswerSnapshot {
            budget_bytes: self.0.budget,
            inflight_bytes: count.inflight,
            peak_bytes: count.peak,
            streamed: self.0.streamed.load(Ordering::Relaxed),
            rejected: self.0.rejected.load(Ordering::Relaxed),
        }
    }

    /// Whether a value of `len` bytes may be read into memory whole for an
    /// answer of `key` (asked by the store before it reads a disk record):
    /// yes for a key an answer in flight holds (its buffer will be shared),
    /// yes if `len` bytes fit now, leaving the reserve for chunks free:
    /// then they are reserved into `reserved`, for [`AnswerBudget::hold`];
    /// no otherwise (the answer is streamed).
    pub fn admit(&self, key: &Key, len: u64, reserved: &mut Option<Grant>) -> bool {
        if self.shared(key).is_some() {
            return true;
        }
        *reserved = self.try_take(len, self.0.reserve);
        reserved.is_some()
    }

    /// The buffer of `key` an answer in flight holds, if any.
    pub fn shared(&self, key: &Key) -> Option<Arc<HeldValue>> {
        lock(&self.0.held).get(key).and_then(Weak::upgrade)
    }

    /// Holds `value` as the answer buffer of `key`: the one an answer in
    /// flight already holds for the key (then `value` is dropped), else
    /// `value` itself, in the bytes [`AnswerBudget::admit`] reserved for
    /// it (`reserved`) or, without them, if it fits in the budget now,
    /// leaving the reserve for chunks free. Gives `value` back if it does
    /// not fit.
    pub fn hold(
        &self,
        key: Key,
        value: Bytes,
        reserved: Option<Grant>,
    ) -> Result<Arc<HeldValue>, Bytes> {
        let mut held = lock(&self.0.held);
        if let Some(shared) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        let len = value.len() as u64;
        let grant = match reserved {
            Some(grant) if grant.bytes == len => Some(grant),
            _ => self.try_take(len, self.0.reserve),
        };
        let Some(grant) = grant else {
            return Err(value);
        };
        let value = Arc::new(HeldValue {
            key,
            value,
            budget: self.clone(),
            _grant: grant,
        });
        held.insert(key, Arc::downgrade(&value));
        Ok(value)
    }

    /// [`AnswerBudget::hold`], waiting up to `wait` for room; at once
    /// `Err` for a value that could never fit.
    pub async fn hold_within(
        &self,
        key: Key,
        value: Bytes,
        wait: Duration,
    ) -> Result<Arc<HeldValue>, Bytes> {
        if value.len() as u64 > self.0.budget.saturating_sub(self.0.reserve) {
            return Err(value);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut value = value;
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.hold(key, value, None) {
                Ok(held) => return Ok(held),
                Err(back) => value = back,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(value);
            }
        }
    }

    /// Reserves `bytes` (at most the budget) for a chunk, waiting for room
    /// as long as it takes.
    pub async fn take(&self, bytes: u64) -> Grant {
        let bytes = bytes.min(self.0.budget);
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(grant) = self.try_take(bytes, 0) {
                return grant;
            }
            room.await;
        }
    }

    /// Counts an answer streamed from disk for the budget.
    pub fn count_streamed(&self) {
        self.0.streamed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::ANSWER_STREAMED).increment(1);
    }

    /// Counts an answer refused for the budget.
    pub fn count_rejected(&self) {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::ANSWER_REJECTED).increment(1);
    }

    /// `bytes` of the budget if they fit with `keep_free` bytes left over.
    fn try_take(&self, bytes: u64, keep_free: u64) -> Option<Grant> {
        let mut count = lock(&self.0.count);
        let after = count.inflight.checked_add(bytes)?;
        if after.checked_add(keep_free)? > self.0.budget {
            return None;
        }
        count.inflight = after;
        count.peak = count.peak.max(after);
        drop(count);
        stats::with_gauge(names::ANSWER_INFLIGHT, |g| g.increment(bytes as f64));
        Some(Grant {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes of the answer budget; given back on drop.
pub struct Grant {
    budget: AnswerBudget,
    bytes: u64,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let inner = &self.budget.0;
        let mut count = lock(&inner.count);
        count.inflight = count.inflight.saturating_sub(self.bytes);
        drop(count);
        stats::with_gauge(names::ANSWER_INFLIGHT, |g| g.decrement(self.bytes as f64));
        inner.room.notify_waiters();
    }
}

/// A whole value held by the answers of its key in flight, counted once.
pub struct HeldValue {
    key: Key,
    value: Bytes,
    budget: AnswerBudget,
    _grant: Grant,
}

impl HeldValue {
    /// The value.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// `range` of the value as a buffer that keeps this value (and its
    /// count in the budget) alive until the last view of it is dropped.
    /// `None` if the range is not within the value.
    pub fn view(self: &Arc<Self>, range: std::ops::Range<usize>) -> Option<Bytes> {
        self.value.get(range.clone())?;
        Some(Bytes::from_owner(View {
            held: Arc::clone(self),
            range,
        }))
    }
}

impl Drop for HeldValue {
    fn drop(&mut self) {
        // Forget the key unless another answer holds a newer buffer for it;
        // the grant, dropped after this, gives the bytes back.
        let mut held = lock(&self.budget.0.held);
        if held
            .get(&self.key)
            .is_some_and(|entry| entry.strong_count() == 0)
        {
            held.remove(&self.key);
        }
    }
}

/// A range of a held value, as the owner of a response's `Bytes`.
struct View {
    held: Arc<HeldValue>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // Checked in `HeldValue::view`.
        self.held.value.get(self.range.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn whole_values_fit_with_the_reserve_and_are_shared_by_key() {
        // 8000 bytes: whole values may take 7000, the reserve is 1000.
        let budget = AnswerBudget::new(8000);
        let a = budget
            .hold(key(1), Bytes::from(vec![1u8; 4000]), None)
            .ok()
            .unwrap();
        // The same key again: the buffer in flight, nothing more counted.
        let mut reserved = None;
        assert!(budget.admit(&key(1), 4000, &mut reserved) && reserved.is_none());
        let again = budget
            .hold(key(1), Bytes::from(vec![1u8; 4000]), None)
            .ok()
            .unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(budget.snapshot().inflight_bytes, 4000);
        // Another key of 3500 would eat into the reserve.
        assert!(!budget.admit(&key(2), 3500, &mut reserved) && reserved.is_none());
        let refused = budget.hold(key(2), Bytes::from(vec![2u8; 3500]), None);
        assert_eq!(refused.err().map(|b| b.len()), Some(3500));
        // 3000 fit, reserved before the value is read, then held in them.
        assert!(budget.admit(&key(2), 3000, &mut reserved) && reserved.is_some());
        assert_eq!(budget.snapshot().inflight_bytes, 7000);
        let b = budget
            .hold(key(2), Bytes::from(vec![2u8; 3000]), reserved)
            .ok()
            .unwrap();
        assert_eq!(budget.snapshot().inflight_bytes, 7000);
        // A view keeps its value alive after the handles are gone.
        let view = b.view(10..20).unwrap();
        assert!(b.view(10..3001).is_none());
        drop((a, again, b));
        assert_eq!(budget.snapshot().inflight_bytes, 3000);
        assert_eq!(&view[..], &[2u8; 10]);
        drop(view);
        let s = budget.snapshot();
        assert_eq!((s.inflight_bytes, s.peak_bytes), (0, 7000));
        assert!(budget.shared(&key(1)).is_none() && budget.shared(&key(2)).is_none());
    }

    #[tokio::test]
    async fn chunks_may_use_the_reserve_and_wait_for_room() {
        let budget = AnswerBudget::new(8000);
        let held = budget
            .hold(key(1), Bytes::from(vec![0u8; 7000]), None)
            .ok()
            .unwrap();
        let first = budget.take(1000).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1000).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a chunk went over the budget");
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(budget.snapshot().inflight_bytes, 8000);
        drop((held, second));
        let s = budget.snapshot();
        assert_eq!((s.inflight_bytes, s.peak_bytes), (0, 8000));
    }

    #[tokio::test]
    async fn a_held_value_waits_for_room_or_gives_up() {
        let budget = AnswerBudget::new(8000);
        let chunk = budget.take(5000).await;
        let never = budget
            .hold_within(key(9), Bytes::from(vec![0u8; 7001]), Duration::from_secs(5))
            .await;
        assert!(never.is_err(), "larger than the room whole values ever get");
        let late = budget
            .hold_within(
                key(1),
                Bytes::from(vec![0u8; 3000]),
                Duration::from_millis(50),
            )
            .await;
        assert!(late.is_err());
        let budget2 = budget.clone();
        let waiting = tokio::spawn(async move {
            budget2
                .hold_within(
                    key(1),
                    Bytes::from(vec![0u8; 3000]),
                    Duration::from_secs(10),
                )
                .await
                .is_ok()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(chunk);
        assert!(waiting.await.unwrap());
        assert_eq!(budget.snapshot().inflight_bytes, 0);
    }
}
