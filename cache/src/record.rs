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
//! | offset | size | field                                  |
//! |-------:|-----:|----------------------------------------|
//! | 0      | 1    | format version, [`FORMAT_VERSION`] (1) |
//! | 1      | 8    | value length, u64 big-endian           |
//! | 9      | 32   | SHA-256 of the value                   |
//! | 41     | len  | the value bytes                        |
//!
//! A record is accepted only if it is at least [`HEADER_LEN`] bytes, the
//! version is known, the length field equals the number of bytes after the
//! header, and the SHA-256 of those bytes equals the stored digest. Flipping
//! any byte of a record therefore makes it fail (a flip in the digest or the
//! value fails the checksum; in the length or the version, the framing), and
//! so does a file cut short or grown.
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
/// Name of the sled tree holding the recency entries.
pub(crate) const META_TREE: &str = "opusgate-cache.meta.v1";
/// The record format version written by this crate.
pub const FORMAT_VERSION: u8 = 1;
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
    /// The length field disagrees with the bytes present.
    #[error("length field says {header} bytes, record holds {actual}")]
    LengthMismatch {
        /// Length in the header.
        header: u64,
        /// Bytes after the header.
        actual: u64,
    },
    /// The SHA-256 of the value differs from the stored one.
    #[error("checksum mismatch")]
    ChecksumMismatch,
}

/// The file holding the record for `key` in a store whose `disk_path` is
/// `disk_path`.
pub fn value_path(disk_path: &Path, key: &Key) -> PathBuf {
    let hex = key.to_hex();
    disk_path.join(VALUES_DIR).join(&hex[..2]).join(hex)
}

/// The header of the record for `value`.
pub fn header(value: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = FORMAT_VERSION;
    header[1..9].copy_from_slice(&(value.len() as u64).to_be_bytes());
    header[9..].copy_from_slice(&Sha256::digest(value));
    header
}

/// Builds the record for `value`: header followed by the value.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + value.len());
    record.extend_from_slice(&header(value));
    record.extend_from_slice(value);
    record
}

/// Checks the framing of a record of `record_len` bytes from its first
/// bytes (at least the version and length fields) and returns the value
/// length, without reading the value: the cheap check run on every file at
/// open. [`verify`] does the full check on every read.
pub fn check_framing(head: &[u8], record_len: u64) -> Result<u64, RecordError> {
    if record_len < HEADER_LEN as u64 || head.len() < 9 {
        return Err(RecordError::TooShort(
            usize::try_from(record_len).unwrap_or(usize::MAX),
        ));
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

/// Checks a record and returns where its value lies within it.
pub fn verify(record: &[u8]) -> Result<Range<usize>, RecordError> {
    check_framing(record, record.len() as u64)?;
    let value = &record[HEADER_LEN..];
    if Sha256::digest(value).as_slice() != &record[9..HEADER_LEN] {
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

    #[test]
    fn round_trip() {
        let value = b"hello, record".to_vec();
        let record = encode(&value);
        assert_eq!(record.len(), HEADER_LEN + value.len());
        let range = verify(&record).expect("fresh record verifies");
        assert_eq!(&record[range], &value[..]);
        let empty = encode(&[]);
        assert_eq!(verify(&empty), Ok(HEADER_LEN..HEADER_LEN));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let value: Vec<u8> = (0..100u8).collect();
        let record = encode(&value);
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad).is_err(), "flip at offset {i} went unnoticed");
        }
    }

    #[test]
    fn framing_errors() {
        assert_eq!(verify(b"short"), Err(RecordError::TooShort(5)));
        let mut record = encode(b"abc");
        record[0] = 9;
        assert_eq!(verify(&record), Err(RecordError::UnknownVersion(9)));
        let mut record = encode(b"abc");
        record.push(0);
        assert_eq!(
            verify(&record),
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
