//! The on-disk formats: a value record in its own file under
//! [`VALUES_DIR`] and its recency entry in sled's `META_TREE`, with the
//! checks run on every read.
//!
//! # Value record (a file: `<disk_path>/values/<2 hex>/<64 hex>`)
//!
//! One file per key, named by the key's 64 lowercase hex characters, in a
//! subdirectory named by its first two (see [`value_path`]). The file holds
//! exactly one record:
//!
//! | offset | size | field                                         |
//! |-------:|-----:|-----------------------------------------------|
//! | 0      | 1    | format version, [`FORMAT_VERSION`] (2)        |
//! | 1      | 8    | value length, u64 big-endian                  |
//! | 9      | 32   | SHA-256 of the key's 32 bytes, then the value |
//! | 41     | len  | the value bytes                               |
//!
//! A record is accepted only if it is at least [`HEADER_LEN`] bytes, the
//! version is known, the length field equals the number of bytes after the
//! header, and the SHA-256 of the key it is read for followed by those bytes
//! equals the stored digest. Flipping any byte of a record therefore makes
//! it fail (a flip in the digest or the value fails the checksum; in the
//! length or the version, the framing), and so does a file cut short or
//! grown. Because the digest covers the key, a whole record moved, copied or
//! restored under another key's file name fails too: it is never served as
//! that key's value.
//!
//! Format 1 (same layout, digest over the value alone) is no longer read:
//! its records are dropped at open (see `Writer::reconcile`), so a cache
//! written by an older version starts with an empty disk tier.
//!
//! Files are written to `<64 hex>.tmp` beside their final name and renamed
//! into place, so a reader sees a whole record or none.
//!
//! # Recency entry (`META_TREE`, sled key = the 32 raw key bytes)
//!
//! | offset | size | field                                         |
//! |-------:|-----:|-----------------------------------------------|
//! | 0      | 8    | recency sequence number, u64 big-endian       |
//! | 8      | 8    | value length, u64 big-endian                  |
//!
//! Higher sequence numbers are more recently used. The entry is written
//! after its file and updated on disk hits, so the disk tier's byte
//! accounting and eviction order can be rebuilt at open from this small
//! tree and a listing of the value files (see `Writer::reconcile` in the
//! `writer` module for how the two are reconciled after a crash).
//!
//! Values live outside sled because sled 0.34 keeps roughly as much memory
//! as was written to it, whatever its cache setting: with values inside it,
//! the disk tier's capacity was also a memory cost.

use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::key::Key;

/// Directory, inside the store's `disk_path`, of the value files.
pub const VALUES_DIR: &str = "values";
/// Name of the sled tree that held the value records before they moved to
/// files; dropped at open if a database still has it.
pub(crate) const LEGACY_VALUES_TREE: &str = "opusgate-cache.values.v1";
/// Name of the sled tree holding the recency entries. Its suffix follows
/// the record format (the entries themselves are unchanged since format 1):
/// a database last opened by a version writing format 1 records has only
/// [`LEGACY_META_TREE`], so its files all come up unindexed at open and each
/// has its version checked.
pub(crate) const META_TREE: &str = "opusgate-cache.meta.v2";
/// Name of the recency tree of the versions writing format 1 records;
/// dropped at open (see `Writer::reconcile`).
pub(crate) const LEGACY_META_TREE: &str = "opusgate-cache.meta.v1";
/// The record format version written by this crate.
pub const FORMAT_VERSION: u8 = 2;
/// Record format versions this crate wrote before [`FORMAT_VERSION`]: found
/// at open, such a record is dropped as outdated rather than as damaged.
const OLD_VERSIONS: std::ops::RangeInclusive<u8> = 1..=1;
/// Bytes before the value in a record.
pub const HEADER_LEN: usize = 1 + 8 + 32;
/// Length of a recency entry.
pub const META_LEN: usize = 16;

/// Why a stored record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than a header.
    #[error("record of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// The version byte is not one this crate reads.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The version byte is one an earlier version of this crate wrote (whose
    /// checksum did not cover the key); this crate no longer reads it.
    #[error("record of the outdated format version {0}")]
    OldVersion(u8),
    /// The length field disagrees with the bytes present.
    #[error("length field says {header} bytes, record holds {actual}")]
    LengthMismatch {
        /// Length in the header.
        header: u64,
        /// Bytes after the header.
        actual: u64,
    },
    /// The SHA-256 of the key and value differs from the stored one: the
    /// record is damaged, or was written for another key.
    #[error("checksum mismatch")]
    ChecksumMismatch,
}

/// The file holding the record for `key` in a store whose `disk_path` is
/// `disk_path`.
pub fn value_path(disk_path: &Path, key: &Key) -> PathBuf {
    let hex = key.to_hex();
    disk_path.join(VALUES_DIR).join(&hex[..2]).join(hex)
}

/// SHA-256 over the key's 32 bytes, then the value: the digest a record
/// of `value` under `key` stores.
fn digest(key: &Key, value: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update(value);
    hasher.finalize().into()
}

/// The header of the record for `value` under `key`.
pub fn header(key: &Key, value: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = FORMAT_VERSION;
    header[1..9].copy_from_slice(&(value.len() as u64).to_be_bytes());
    header[9..].copy_from_slice(&digest(key, value));
    header
}

/// Builds the record for `value` under `key`: header followed by the value.
pub fn encode(key: &Key, value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + value.len());
    record.extend_from_slice(&header(key, value));
    record.extend_from_slice(value);
    record
}

/// Checks the framing of a record of `record_len` bytes from its first
/// bytes (at least the version and length fields) and returns the value
/// length, without reading the value: the cheap check run at open on every
/// file the recency index does not account for. It involves no key: the
/// key is covered only by the checksum, which [`verify`] checks on every
/// read.
pub fn check_framing(head: &[u8], record_len: u64) -> Result<u64, RecordError> {
    if record_len < HEADER_LEN as u64 || head.len() < 9 {
        return Err(RecordError::TooShort(
            usize::try_from(record_len).unwrap_or(usize::MAX),
        ));
    }
    if OLD_VERSIONS.contains(&head[0]) {
        return Err(RecordError::OldVersion(head[0]));
    }
    if head[0] != FORMAT_VERSION {
        return Err(RecordError::UnknownVersion(head[0]));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&head[1..9]);
    let header_len = u64::from_be_bytes(len_bytes);
    let actual = record_len - HEADER_LEN as u64;
    if header_len != actual {
        return Err(RecordError::LengthMismatch {
            header: header_len,
            actual,
        });
    }
    Ok(actual)
}

/// Checks a record read from the file of `key` and returns where its value
/// lies within it.
pub fn verify(key: &Key, record: &[u8]) -> Result<Range<usize>, RecordError> {
    check_framing(record, record.len() as u64)?;
    let value = &record[HEADER_LEN..];
    if digest(key, value) != record[9..HEADER_LEN] {
        return Err(RecordError::ChecksumMismatch);
    }
    Ok(HEADER_LEN..record.len())
}

/// Builds a recency entry.
pub(crate) fn encode_meta(seq: u64, len: u64) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&len.to_be_bytes());
    out
}

/// Parses a recency entry: `(sequence, value length)`.
pub(crate) fn decode_meta(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != META_LEN {
        return None;
    }
    let mut seq = [0u8; 8];
    let mut len = [0u8; 8];
    seq.copy_from_slice(&bytes[..8]);
    len.copy_from_slice(&bytes[8..]);
    Some((u64::from_be_bytes(seq), u64::from_be_bytes(len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes([7; 32])
    }

    #[test]
    fn round_trip() {
        let value = b"hello, record".to_vec();
        let record = encode(&key(), &value);
        assert_eq!(record.len(), HEADER_LEN + value.len());
        let range = verify(&key(), &record).expect("fresh record verifies");
        assert_eq!(&record[range], &value[..]);
        let empty = encode(&key(), &[]);
        assert_eq!(verify(&key(), &empty), Ok(HEADER_LEN..HEADER_LEN));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let value: Vec<u8> = (0..100u8).collect();
        let record = encode(&key(), &value);
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(
                verify(&key(), &bad).is_err(),
                "flip at offset {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_is_bound_to_its_key() {
        let value = b"the same value".to_vec();
        let record = encode(&key(), &value);
        for other in [[8; 32], [0; 32], {
            let mut near = [7; 32];
            near[31] ^= 0x01;
            near
        }] {
            assert_eq!(
                verify(&Key::from_bytes(other), &record),
                Err(RecordError::ChecksumMismatch)
            );
        }
        // Also for the empty value, whose checksum would otherwise be the
        // same constant under every key.
        let empty = encode(&key(), &[]);
        assert_eq!(
            verify(&Key::from_bytes([8; 32]), &empty),
            Err(RecordError::ChecksumMismatch)
        );
        // The digest is SHA-256 over the 32 key bytes, then the value.
        let mut hasher = Sha256::new();
        hasher.update([7u8; 32]);
        hasher.update(&value);
        assert_eq!(&record[9..HEADER_LEN], hasher.finalize().as_slice());
        assert_eq!(record[0], 2);
    }

    #[test]
    fn a_format_1_record_is_old_not_unknown() {
        // Format 1, built by hand: version 1, length, SHA-256 of the value
        // alone, the value.
        let value = b"abc";
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&(value.len() as u64).to_be_bytes());
        v1.extend_from_slice(&Sha256::digest(value));
        v1.extend_from_slice(value);
        assert_eq!(
            check_framing(&v1, v1.len() as u64),
            Err(RecordError::OldVersion(1))
        );
        assert_eq!(verify(&key(), &v1), Err(RecordError::OldVersion(1)));
        let mut v0 = encode(&key(), value);
        v0[0] = 0;
        assert_eq!(verify(&key(), &v0), Err(RecordError::UnknownVersion(0)));
    }

    #[test]
    fn framing_errors() {
        assert_eq!(verify(&key(), b"short"), Err(RecordError::TooShort(5)));
        let mut record = encode(&key(), b"abc");
        record[0] = 9;
        assert_eq!(verify(&key(), &record), Err(RecordError::UnknownVersion(9)));
        let mut record = encode(&key(), b"abc");
        record.push(0);
        assert_eq!(
            verify(&key(), &record),
            Err(RecordError::LengthMismatch {
                header: 3,
                actual: 4
            })
        );
    }

    #[test]
    fn meta_round_trip() {
        let meta = encode_meta(7, 1 << 40);
        assert_eq!(decode_meta(&meta), Some((7, 1 << 40)));
        assert_eq!(decode_meta(&meta[..15]), None);
    }
}
