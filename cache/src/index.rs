//! The disk tier's in-memory index: for every record on disk, its length and
//! recency, ordered so that the least recently used record is found first.
//! Owned by the disk writer thread alone; mirrors `META_TREE` and the value
//! files.

use std::collections::{BTreeMap, HashMap};

use crate::key::Key;

/// One indexed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Recency: higher is more recently used.
    pub seq: u64,
    /// Value length in bytes.
    pub len: u64,
}

/// Records by key and by recency, with their total length.
#[derive(Debug, Default)]
pub(crate) struct LruIndex {
    entries: HashMap<Key, IndexEntry>,
    order: BTreeMap<u64, Key>,
    bytes: u64,
    next_seq: u64,
}

impl LruIndex {
    /// Number of records.
    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Sum of the records' value lengths.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The entry for `key`, if indexed.
    pub(crate) fn get(&self, key: &Key) -> Option<IndexEntry> {
        self.entries.get(key).copied()
    }

    /// Every indexed key, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.entries.keys()
    }

    /// A fresh sequence number, higher than any handed out or loaded.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Adds or replaces the entry for `key`.
    pub(crate) fn put(&mut self, key: Key, entry: IndexEntry) {
        self.remove(&key);
        self.next_seq = self.next_seq.max(entry.seq.saturating_add(1));
        self.order.insert(entry.seq, key);
        self.entries.insert(key, entry);
        self.bytes += entry.len;
    }

    /// Removes the entry for `key`, returning it.
    pub(crate) fn remove(&mut self, key: &Key) -> Option<IndexEntry> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.seq);
        self.bytes -= entry.len;
        Some(entry)
    }

    /// The least recently used keys, oldest first, whose removal brings the
    /// total down so that `incoming` more bytes fit within `capacity`.
    /// `keep` is never chosen (it is the key being rewritten; its current
    /// length is already discounted by the caller through `replaced`).
    pub(crate) fn victims(
        &self,
        incoming: u64,
        replaced: u64,
        capacity: u64,
        keep: Option<&Key>,
    ) -> Vec<Key> {
        let mut total = self.bytes - replaced;
        let mut victims = Vec::new();
        for key in self.order.values() {
            if total.saturating_add(incoming) <= capacity {
                break;
            }
            if Some(key) == keep {
                continue;
            }
            let entry = self
                .entries
                .get(key)
                .expect("every key in `order` is in `entries` (put and remove keep them so)");
            total -= entry.len;
            victims.push(*key);
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    #[test]
    fn accounting_and_order() {
        let mut index = LruIndex::default();
        for n in 0..4u8 {
            let seq = index.next_seq();
            index.put(key(n), IndexEntry { seq, len: 10 });
        }
        assert_eq!((index.len(), index.bytes()), (4, 40));
        // Touch key 0: now key 1 is the oldest.
        let seq = index.next_seq();
        index.put(key(0), IndexEntry { seq, len: 10 });
        assert_eq!((index.len(), index.bytes()), (4, 40));
        assert_eq!(index.victims(15, 0, 40, None), vec![key(1), key(2)]);
        assert_eq!(
            index.victims(15, 0, 40, Some(&key(1))),
            vec![key(2), key(3)]
        );
        assert!(index.victims(0, 0, 40, None).is_empty());
        // Rewriting key 3 with 20 bytes: its 10 old bytes are replaced.
        assert_eq!(index.victims(20, 10, 40, Some(&key(3))), vec![key(1)]);
        assert_eq!(index.remove(&key(2)).map(|e| e.len), Some(10));
        assert_eq!((index.len(), index.bytes()), (3, 30));
        assert_eq!(index.remove(&key(2)), None);
    }

    #[test]
    fn loaded_sequences_advance_the_counter() {
        let mut index = LruIndex::default();
        index.put(key(1), IndexEntry { seq: 41, len: 1 });
        assert_eq!(index.next_seq(), 42);
    }
}
