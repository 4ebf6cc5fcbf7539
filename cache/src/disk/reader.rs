//! Stored values read in pieces instead of whole: [`ValueReader`], a
//! verified record file, and the disk tier's ways to hand one out (a large
//! record found by a lookup, or the record of a value a caller already holds
//! but would rather not keep in memory).
//!
//! # Verified first, then read
//!
//! A record's checksum covers the key and the whole value, so a reader is
//! handed out only after the whole record passed its checks: the framing
//! (version, and the length field against the file's length), then one
//! streaming SHA-256 pass over the key and the value in [`VERIFY_CHUNK`]
//! pieces, compared with the stored digest. A record that fails is deleted
//! and counted as corrupt exactly like a whole read that fails, and the
//! caller sees no reader: nothing of a damaged record is ever handed out.
//! (Checking while the caller reads would find the damage only at the end,
//! after the bytes were used.) The price is one more pass over the file,
//! mostly served from the page cache the second time.
//!
//! The reader keeps the file it verified open and reads only from it.
//! Record files are never changed in place: a rewrite renames a new file
//! over the name and an eviction unlinks it, and an open file keeps its
//! data, so what the reader returns is what was verified, even after the
//! record is evicted.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::DiskTier;
use crate::key::Key;
use crate::record::{self, RecordError, HEADER_LEN};
use crate::writer::Op;

/// Bytes read at a time by the verification pass.
pub const VERIFY_CHUNK: usize = 64 * 1024;
/// Bytes at the start of a value kept by its reader ([`ValueReader::head`]).
pub const HEAD_BYTES: usize = 64;

/// A stored value whose record passed every check, read from its file at
/// any offset without loading it whole. Reads are blocking I/O: run them
/// off the async threads (e.g. `tokio::task::spawn_blocking`).
#[derive(Debug)]
pub struct ValueReader {
    file: File,
    len: u64,
    head: Vec<u8>,
}

impl ValueReader {
    /// The value's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value's first bytes (up to [`HEAD_BYTES`]), read by the
    /// verification pass: a format header can be looked at without another
    /// read.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Fills `buf` with the value's bytes from `offset` on. Fails with
    /// `UnexpectedEof` if that runs past the value's end (or the file came
    /// out shorter than verified), and with the I/O error of a failed read.
    pub fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the stored value",
            ));
        }
        self.file
            .seek(SeekFrom::Start(HEADER_LEN as u64 + offset))?;
        self.file.read_exact(buf)
    }
}

/// What a lookup found: the value in memory, or a verified reader of its
/// record file (a disk record longer than the caller wanted read whole).
#[derive(Debug)]
pub enum Found {
    /// The whole value.
    Value(Bytes),
    /// The value on disk, verified, to be read in pieces.
    File(ValueReader),
}

impl Found {
    /// The value's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Found::Value(value) => value.len() as u64,
            Found::File(reader) => reader.len(),
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A record file opened and its framing checked, its value not read yet.
pub(crate) struct Framed {
    file: File,
    len: u64,
    header: Vec<u8>,
}

/// What opening a record file found.
pub(crate) enum Opened<T> {
    Missing,
    Found(T),
    Corrupt(RecordError),
}

/// Opens the record file at `path` and checks its framing (version, and
/// the length field against the file's length).
fn open_framed(path: &Path) -> io::Result<Opened<Framed>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(error) => return Err(error),
    };
    let record_len = file.metadata()?.len();
    // The header, or as much as the file has.
    let mut header = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)?;
    match record::check_framing(&header, record_len) {
        Ok(len) => Ok(Opened::Found(Framed { file, len, header })),
        Err(error) => Ok(Opened::Corrupt(error)),
    }
}

/// Checks a framed record of `key` whole (a streaming SHA-256 pass over
/// the key and the value, against the stored digest) and makes it a reader.
fn verify(framed: Framed, key: &Key) -> io::Result<Opened<ValueReader>> {
    let Framed {
        mut file,
        len,
        header,
    } = framed;
    // Whole unless the file shrank between its length and the read.
    let Some(stored) = header.get(9..HEADER_LEN) else {
        return Ok(Opened::Corrupt(RecordError::TooShort(header.len())));
    };
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    let mut chunk = vec![0u8; VERIFY_CHUNK];
    let mut head = Vec::new();
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(VERIFY_CHUNK, |l| l.min(VERIFY_CHUNK));
        match file.read_exact(&mut chunk[..want]) {
            Ok(()) => {
                if head.is_empty() {
                    head = chunk[..want.min(HEAD_BYTES)].to_vec();
                }
                hasher.update(&chunk[..want]);
            }
            // Shorter than at the framing check: damaged since.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Opened::Corrupt(RecordError::LengthMismatch {
                    header: len,
                    actual: len - left,
                }))
            }
            Err(error) => return Err(error),
        }
        left -= want as u64;
    }
    if hasher.finalize().as_slice() != stored {
        return Ok(Opened::Corrupt(RecordError::ChecksumMismatch));
    }
    Ok(Opened::Found(ValueReader { file, len, head }))
}

/// [`open_framed`], then [`verify`].
fn open_verified(path: &Path, key: &Key) -> io::Result<Opened<ValueReader>> {
    match open_framed(path)? {
        Opened::Found(framed) => verify(framed, key),
        Opened::Missing => Ok(Opened::Missing),
        Opened::Corrupt(error) => Ok(Opened::Corrupt(error)),
    }
}

impl DiskTier {
    /// For a caller that may not want the value of `key` read whole: if
    /// its record is on disk (and no write of it is queued), `whole(len)`
    /// is asked with the value's length; if it answers false, a verified
    /// reader of the record is returned. `None` otherwise: no record, a
    /// queued write, `whole` said true (the caller reads the value whole),
    /// or a corrupt record (deleted and counted). A record handed out
    /// counts as used (recency).
    pub(crate) async fn large_record(
        &self,
        key: &Key,
        whole: impl FnOnce(u64) -> bool,
    ) -> Option<ValueReader> {
        let active = self.active.as_ref()?;
        if self.shared.pending_value(key).is_some() {
            return None;
        }
        let path = active.files.path(key);
        let framed = tokio::task::spawn_blocking(move || open_framed(&path)).await;
        let framed = self.settle(key, framed).await?;
        if whole(framed.len) {
            return None;
        }
        let key = *key;
        let verified = tokio::task::spawn_blocking(move || verify(framed, &key)).await;
        self.settle(&key, verified).await
    }

    /// A verified reader of the record for `key`, whatever its length,
    /// once a write of it still queued has been applied; `None` if there is
    /// no record (never written, not written for lack of room, or corrupt:
    /// then deleted and counted).
    pub(crate) async fn value_file(&self, key: &Key) -> Option<ValueReader> {
        let active = self.active.as_ref()?;
        if self.shared.pending_value(key).is_some() {
            let (done, done_rx) = oneshot::channel();
            if active.ops.send(Op::Barrier(done)).is_err() {
                return None;
            }
            let _ = done_rx.await;
        }
        let path = active.files.path(key);
        let key = *key;
        let opened = tokio::task::spawn_blocking(move || open_verified(&path, &key)).await;
        self.settle(&key, opened).await
    }

    /// What a blocking read or open of the record of `key` found: the
    /// value or record, or `None` after deleting and counting a corrupt one,
    /// counting a failed read, or for none. A verified value or reader
    /// counts as used.
    pub(super) async fn settle<T: Settled>(
        &self,
        key: &Key,
        opened: Result<io::Result<Opened<T>>, tokio::task::JoinError>,
    ) -> Option<T> {
        let active = self.active.as_ref()?;
        let key = *key;
        match opened {
            Ok(Ok(Opened::Found(found))) => {
                if T::VERIFIED {
                    let _ = active.ops.send(Op::Touch(key));
                }
                Some(found)
            }
            Ok(Ok(Opened::Missing)) => None,
            Ok(Ok(Opened::Corrupt(error))) => {
                tracing::warn!(%key, %error, "opusgate-cache: corrupt disk record; deleting it");
                let (done, done_rx) = oneshot::channel();
                if active.ops.send(Op::RemoveCorrupt { key, done }).is_ok() {
                    let _ = done_rx.await;
                }
                None
            }
            Ok(Err(error)) => {
                self.shared.read_failed(&key, &error);
                None
            }
            Err(error) => {
                self.shared.read_failed(&key, &error);
                None
            }
        }
    }
}

/// What [`DiskTier::settle`] hands back: a value read whole, a framed
/// record or a verified one.
pub(super) trait Settled {
    /// Whether handing it out counts as a use of the record.
    const VERIFIED: bool;
}

impl Settled for Framed {
    const VERIFIED: bool = false;
}

impl Settled for ValueReader {
    const VERIFIED: bool = true;
}

impl Settled for Bytes {
    const VERIFIED: bool = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::ValueFiles;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    fn stored(dir: &Path, key: &Key, value: &[u8]) -> std::path::PathBuf {
        let files = ValueFiles::open(dir).unwrap();
        files.write(key, value).unwrap();
        files.path(key)
    }

    fn found<T>(opened: Opened<T>) -> T {
        match opened {
            Opened::Found(found) => found,
            _ => panic!("no record"),
        }
    }

    #[test]
    fn a_verified_record_reads_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let value: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let path = stored(dir.path(), &key(1), &value);
        let mut reader = found(open_verified(&path, &key(1)).unwrap());
        assert_eq!(reader.len(), value.len() as u64);
        assert_eq!(reader.head(), &value[..HEAD_BYTES]);
        let mut buf = vec![0u8; 70_000];
        reader.read_exact_at(100_000, &mut buf).unwrap();
        assert_eq!(buf, value[100_000..170_000]);
        reader.read_exact_at(0, &mut buf[..10]).unwrap();
        assert_eq!(buf[..10], value[..10]);
        let past = reader.read_exact_at(199_999, &mut buf[..2]).unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
        // Evicted while open: the reader still has the verified bytes.
        std::fs::remove_file(&path).unwrap();
        reader.read_exact_at(199_990, &mut buf[..10]).unwrap();
        assert_eq!(buf[..10], value[199_990..]);
    }

    #[test]
    fn framing_tells_the_length_before_the_value_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = stored(dir.path(), &key(2), b"twelve bytes");
        let framed = found(open_framed(&path).unwrap());
        assert_eq!(framed.len, 12);
        assert_eq!(
            found(verify(framed, &key(2)).unwrap()).head(),
            b"twelve bytes"
        );
        let missing = dir.path().join("nothing");
        assert!(matches!(open_framed(&missing).unwrap(), Opened::Missing));
    }

    #[test]
    fn every_damage_is_found_before_any_byte_is_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let value: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        let path = stored(dir.path(), &key(3), &value);
        let good = std::fs::read(&path).unwrap();
        // A flip in the last byte, the middle, the digest, the version and
        // the length; the record under another key; cut short; grown.
        for at in [good.len() - 1, good.len() / 2, 20, 0, 8] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(open_verified(&path, &key(3)).unwrap(), Opened::Corrupt(_)),
                "a flip at {at} went unnoticed"
            );
        }
        std::fs::write(&path, &good).unwrap();
        assert!(matches!(
            open_verified(&path, &key(4)).unwrap(),
            Opened::Corrupt(RecordError::ChecksumMismatch)
        ));
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            open_verified(&path, &key(3)).unwrap(),
            Opened::Corrupt(RecordError::LengthMismatch { .. })
        ));
        std::fs::write(&path, &good[..10]).unwrap();
        assert!(matches!(
            open_verified(&path, &key(3)).unwrap(),
            Opened::Corrupt(RecordError::TooShort(10))
        ));
        let mut grown = good.clone();
        grown.push(0);
        std::fs::write(&path, &grown).unwrap();
        assert!(matches!(
            open_verified(&path, &key(3)).unwrap(),
            Opened::Corrupt(RecordError::LengthMismatch { .. })
        ));
    }
}
