//! The on-disk formats: a value record in [`VALUES_TREE`] and its recency
//! entry in [`META_TREE`], with the checks run on every read.
//!
//! # Value record (`VALUES_TREE`, sled key = the 32 raw key bytes)
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
//! value fails the checksum; in the length or the version, the framing).
//!
//! # Recency entry (`META_TREE`, same sled key)
//!
//! | offset | size | field                                         |
//! |-------:|-----:|-----------------------------------------------|
//! | 0      | 8    | recency sequence number, u64 big-endian       |
//! | 8      | 8    | value length, u64 big-endian                  |
//!
//! Higher sequence numbers are more recently used. The entry is written in
//! the same sled transaction as its record and updated on disk hits, so the
//! disk tier's byte accounting and eviction order can be rebuilt at open by
//! scanning this small tree alone.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// Name of the sled tree holding the value records.
pub const VALUES_TREE: &str = "opusgate-cache.values.v1";
/// Name of the sled tree holding the recency entries.
pub const META_TREE: &str = "opusgate-cache.meta.v1";
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

/// Builds the record for `value`: header followed by the value.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + value.len());
    record.push(FORMAT_VERSION);
    record.extend_from_slice(&(value.len() as u64).to_be_bytes());
    record.extend_from_slice(&Sha256::digest(value));
    record.extend_from_slice(value);
    record
}

/// Checks a record and returns where its value lies within it.
pub fn verify(record: &[u8]) -> Result<Range<usize>, RecordError> {
    if record.len() < HEADER_LEN {
        return Err(RecordError::TooShort(record.len()));
    }
    if record[0] != FORMAT_VERSION {
        return Err(RecordError::UnknownVersion(record[0]));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&record[1..9]);
    let header_len = u64::from_be_bytes(len_bytes);
    let actual = (record.len() - HEADER_LEN) as u64;
    if header_len != actual {
        return Err(RecordError::LengthMismatch {
            header: header_len,
            actual,
        });
    }
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
