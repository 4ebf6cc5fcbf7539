//! Single flight: the map of computations in progress, so that concurrent
//! callers for one absent key share one computation.
//!
//! The first caller to find no entry for a key becomes the leader: it gets a
//! [`Publisher`] (moved into the spawned task that runs the computation, so
//! the result no longer depends on the leader's own future) and a receiver.
//! Later callers get a receiver only. The task publishes exactly one
//! [`FlightResult`] and removes the entry; if the task disappears without
//! publishing (dropped by a runtime shutting down), the `Publisher`'s drop
//! removes the entry and the receivers see the channel closed.
//!
//! Generic over the computations' error type `E`: a store runs computations
//! of one error type, and every caller of a flight gets a clone of its error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use crate::key::Key;

/// Where the flight's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The computation produced it.
    Computed,
    /// The task's re-check found it in memory (stored by a flight that ended
    /// between the leader's own lookups and its taking the slot).
    Memory,
    /// The task's re-check found it on disk.
    Disk,
    /// The shared tier had it.
    Shared,
    /// Another instance computed it while the task waited for its lock.
    Remote,
}

/// The one result of a flight, shared by all its callers.
#[derive(Clone)]
pub(crate) enum FlightResult<E> {
    /// The value and where it came from.
    Value(Bytes, Source),
    /// The computation's error.
    Failed(E),
    /// The computation panicked.
    Panicked,
}

type Slot<E> = watch::Receiver<Option<FlightResult<E>>>;

struct Entry<E> {
    id: u64,
    result: Slot<E>,
}

struct FlightMap<E> {
    by_key: HashMap<Key, Entry<E>>,
    next_id: u64,
}

/// The computations in progress, by key.
pub(crate) struct Flights<E> {
    map: Mutex<FlightMap<E>>,
}

/// A caller's place in a flight.
pub(crate) enum Joined<E> {
    /// A flight was already running: wait on this.
    Waiter(Waiter<E>),
    /// No flight was running: this caller starts one.
    Leader(Publisher<E>, Waiter<E>),
}

/// Waits for a flight's result.
pub(crate) struct Waiter<E> {
    result: Slot<E>,
}

/// The right and duty to publish a flight's result. Dropping it unpublished
/// ends the flight with a closed channel.
pub(crate) struct Publisher<E> {
    flights: Arc<Flights<E>>,
    key: Key,
    id: u64,
    /// `Some` until `publish` (which consumes the publisher) takes it, so
    /// that `drop` can tell an unpublished flight.
    sender: Option<watch::Sender<Option<FlightResult<E>>>>,
}

impl<E> Default for Flights<E> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(FlightMap {
                by_key: HashMap::new(),
                next_id: 0,
            }),
        }
    }
}

impl<E> Flights<E> {
    fn map(&self) -> MutexGuard<'_, FlightMap<E>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the flight for `key`, starting one if none runs. The check and
    /// the insertion happen under one lock, so exactly one caller leads.
    pub(crate) fn join(self: &Arc<Self>, key: Key) -> Joined<E> {
        let mut map = self.map();
        if let Some(entry) = map.by_key.get(&key) {
            return Joined::Waiter(Waiter {
                result: entry.result.clone(),
            });
        }
        let id = map.next_id;
        map.next_id += 1;
        let (sender, result) = watch::channel(None);
        map.by_key.insert(
            key,
            Entry {
                id,
                result: result.clone(),
            },
        );
        let publisher = Publisher {
            flights: Arc::clone(self),
            key,
            id,
            sender: Some(sender),
        };
        Joined::Leader(publisher, Waiter { result })
    }

    /// Number of flights in progress.
    pub(crate) fn len(&self) -> u64 {
        self.map().by_key.len() as u64
    }

    fn remove(&self, key: &Key, id: u64) {
        let mut map = self.map();
        if map.by_key.get(key).is_some_and(|entry| entry.id == id) {
            map.by_key.remove(key);
        }
    }
}

impl<E> Publisher<E> {
    /// The key this flight computes.
    pub(crate) fn key(&self) -> Key {
        self.key
    }

    /// Ends the flight: removes it from the map, then hands `result` to
    /// every receiver. Callers arriving after the removal look the key up
    /// afresh (a value is stored before it is published).
    pub(crate) fn publish(mut self, result: FlightResult<E>) {
        self.flights.remove(&self.key, self.id);
        let sender = self
            .sender
            .take()
            .expect("only publish takes the sender, and it consumes the publisher");
        sender.send_replace(Some(result));
    }
}

impl<E> Drop for Publisher<E> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.flights.remove(&self.key, self.id);
        }
    }
}

impl<E: Clone> Waiter<E> {
    /// The flight's result, or `None` if the flight ended without one.
    pub(crate) async fn wait(mut self) -> Option<FlightResult<E>> {
        match self.result.wait_for(Option::is_some).await {
            Ok(result) => result.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(result: Option<FlightResult<String>>) -> Option<Bytes> {
        match result {
            Some(FlightResult::Value(v, _)) => Some(v),
            _ => None,
        }
    }

    #[tokio::test]
    async fn one_leader_then_waiters_share_the_result() {
        let flights = Arc::new(Flights::<String>::default());
        let key = Key::from_bytes([1; 32]);
        let Joined::Leader(publisher, leader) = flights.join(key) else {
            panic!("first caller must lead");
        };
        let Joined::Waiter(waiter) = flights.join(key) else {
            panic!("second caller must wait");
        };
        assert_eq!(flights.len(), 1);
        publisher.publish(FlightResult::Value(
            Bytes::from_static(b"v"),
            Source::Computed,
        ));
        assert_eq!(flights.len(), 0);
        assert_eq!(value(leader.wait().await), Some(Bytes::from_static(b"v")));
        assert_eq!(value(waiter.wait().await), Some(Bytes::from_static(b"v")));
        // The flight is over: the next caller leads a new one.
        assert!(matches!(flights.join(key), Joined::Leader(..)));
    }

    #[tokio::test]
    async fn dropped_publisher_closes_the_flight() {
        let flights = Arc::new(Flights::<String>::default());
        let key = Key::from_bytes([2; 32]);
        let Joined::Leader(publisher, leader) = flights.join(key) else {
            panic!("first caller must lead");
        };
        drop(publisher);
        assert_eq!(flights.len(), 0);
        assert!(leader.wait().await.is_none());
    }
}
