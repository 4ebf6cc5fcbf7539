//! How a value is framed in the shared tier: a header like the disk
//! records' (format, length, checksum), whose checksum also covers the key,
//! so that a value planted or copied under another key is caught on read.
//!
//! `MAGIC (4) | length u64 BE (8) | SHA-256(key || value) (32) | value`

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::key::Key;

/// Format tag of a shared value (version 1).
const MAGIC: &[u8; 4] = b"OGS1";

/// Length of the header before the value.
pub(crate) const HEADER_LEN: usize = 4 + 8 + 32;

fn digest(key: &Key, value: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update(value);
    hasher.finalize().into()
}

/// The framed bytes stored in Redis for `value` under `key`.
pub(crate) fn frame(key: &Key, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(value.len() as u64).to_be_bytes());
    out.extend_from_slice(&digest(key, value));
    out.extend_from_slice(value);
    out
}

/// The value inside `framed` if its header and checksum hold for `key`.
pub(crate) fn unframe(key: &Key, framed: Vec<u8>) -> Option<Bytes> {
    if framed.len() < HEADER_LEN || &framed[..4] != MAGIC {
        return None;
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&framed[4..12]);
    if u64::from_be_bytes(length) != (framed.len() - HEADER_LEN) as u64 {
        return None;
    }
    let whole = digest(key, &framed[HEADER_LEN..]) == framed[12..HEADER_LEN];
    whole.then(|| Bytes::from(framed).slice(HEADER_LEN..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_damage() {
        let key = Key::from_bytes([7; 32]);
        let other = Key::from_bytes([8; 32]);
        let framed = frame(&key, b"RIFF....WAVE");
        assert_eq!(
            unframe(&key, framed.clone()).as_deref(),
            Some(&b"RIFF....WAVE"[..])
        );
        // The same bytes under another key: the checksum covers the key.
        assert_eq!(unframe(&other, framed.clone()), None);
        let mut flipped = framed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(unframe(&key, flipped), None);
        assert_eq!(unframe(&key, framed[..framed.len() - 1].to_vec()), None);
        assert_eq!(unframe(&key, b"OGS1".to_vec()), None);
        assert_eq!(unframe(&key, frame(&key, b"")).as_deref(), Some(&b""[..]));
    }
}
