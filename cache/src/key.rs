//! Content addresses: the fixed-size [`Key`] every value is stored under, how
//! one is derived from input and parameter bytes, and its hex text form.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain tag hashed before anything else, so that keys of this crate never
/// collide with a plain SHA-256 of some other framing of the same bytes.
const DERIVE_DOMAIN: &[u8] = b"opusgate-cache/key/v1\0";

/// A content address: a 32-byte SHA-256 digest chosen by the caller.
///
/// `Display` and `Debug` both print the 64-character lowercase hex form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// Length in bytes of a key.
    pub const LEN: usize = 32;

    /// SHA-256 over a domain tag, the length of `params` (u64 big-endian),
    /// `params`, then `input`.
    ///
    /// Prefixing the parameter length makes the framing unambiguous: moving
    /// bytes from the end of `params` to the start of `input` changes the key.
    pub fn derive(input: &[u8], params: &[u8]) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(DERIVE_DOMAIN);
        hasher.update((params.len() as u64).to_be_bytes());
        hasher.update(params);
        hasher.update(input);
        Key(hasher.finalize().into())
    }

    /// Wraps a digest computed elsewhere.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw 32 bytes (also the sled key of its recency entry).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 64 lowercase hex characters; anything else (uppercase,
    /// other lengths, non-hex) is `None`, so that one key has one URL.
    pub fn from_hex(s: &str) -> Option<Key> {
        let text = s.as_bytes();
        if text.len() != 2 * Self::LEN {
            return None;
        }
        if !text
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Key(bytes))
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 * Key::LEN];
        hex::encode_to_slice(self.0, &mut buf)
            .expect("the buffer is exactly twice the key's length");
        f.write_str(std::str::from_utf8(&buf).expect("hex digits are ASCII, hence UTF-8"))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 32]> for Key {
    fn from(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_matches_a_manual_sha256_of_the_framing() {
        let mut manual = Sha256::new();
        manual.update(b"opusgate-cache/key/v1\0");
        manual.update(3u64.to_be_bytes());
        manual.update(b"p=1");
        manual.update(b"input");
        let expected: [u8; 32] = manual.finalize().into();
        assert_eq!(Key::derive(b"input", b"p=1").as_bytes(), &expected);
    }

    #[test]
    fn framing_is_unambiguous() {
        assert_ne!(Key::derive(b"bc", b"a"), Key::derive(b"c", b"ab"));
        assert_ne!(Key::derive(b"", b"ab"), Key::derive(b"ab", b""));
    }

    #[test]
    fn hex_round_trip_and_display() {
        let key = Key::derive(b"x", b"y");
        let text = key.to_hex();
        assert_eq!(text.len(), 64);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(Key::from_hex(&text), Some(key));
        assert_eq!(format!("{key}"), text);
        assert_eq!(format!("{key:?}"), text);
    }

    #[test]
    fn from_hex_rejects_bad_text() {
        let good = "00".repeat(32);
        assert_eq!(Key::from_hex(&good), Some(Key::from_bytes([0; 32])));
        assert_eq!(Key::from_hex(&"AB".repeat(32)), None);
        assert_eq!(Key::from_hex(&"0".repeat(63)), None);
        assert_eq!(Key::from_hex(&"0".repeat(65)), None);
        assert_eq!(Key::from_hex(&"g0".repeat(32)), None);
        assert_eq!(Key::from_hex(""), None);
        // 64 bytes but not 64 characters.
        assert_eq!(Key::from_hex(&"é".repeat(32)), None);
    }
}
