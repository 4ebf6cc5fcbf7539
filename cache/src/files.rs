//! The value files of the disk tier: one record file per key (layout in
//! [`crate::record`]), written whole under a temporary name and renamed into
//! place, read back whole, removed, made durable, and listed at open.
//!
//! Only the writer thread creates, renames and removes files; readers on
//! tokio's blocking pool only open and read them. A reader that opens a file
//! just before the writer removes or replaces it still reads the whole old
//! record (POSIX keeps an open file's data), which is a valid record of the
//! same key.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::key::Key;
use crate::record::{self, VALUES_DIR};

/// Suffix of a file being written, renamed away once complete.
const TMP_SUFFIX: &str = ".tmp";

/// What a listing at open found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The key the file is named by.
    pub key: Key,
    /// The file's length in bytes (the whole record).
    pub record_len: u64,
}

/// The directory of value files.
#[derive(Debug, Clone)]
pub(crate) struct ValueFiles {
    disk_path: PathBuf,
}

impl ValueFiles {
    /// Creates the values directory and its 256 subdirectories if missing.
    pub(crate) fn open(disk_path: &Path) -> io::Result<ValueFiles> {
        let root = disk_path.join(VALUES_DIR);
        for shard in 0..=255u8 {
            fs::create_dir_all(root.join(format!("{shard:02x}")))?;
        }
        Ok(ValueFiles {
            disk_path: disk_path.to_owned(),
        })
    }

    /// The record file of `key`.
    pub(crate) fn path(&self, key: &Key) -> PathBuf {
        record::value_path(&self.disk_path, key)
    }

    /// Writes the record of `value` under `key`: header and value into
    /// `<name>.tmp`, then renamed over `<name>`. Not synced (see
    /// [`ValueFiles::sync`]). On failure no partial file stays under the
    /// final name, and the temporary file is removed.
    pub(crate) fn write(&self, key: &Key, value: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let tmp = tmp_path(&path);
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&record::header(key, value))?;
            file.write_all(value)
        });
        if let Err(error) = written.and_then(|()| fs::rename(&tmp, &path)) {
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        Ok(())
    }

    /// The whole record file for `key`, or `None` if there is none.
    pub(crate) fn read(&self, key: &Key) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The value length the record file for `key` declares, checked against
    /// the file's length without reading the value; `Ok(None)` if there is
    /// no file.
    pub(crate) fn read_framing(
        &self,
        key: &Key,
    ) -> io::Result<Option<Result<u64, record::RecordError>>> {
        let mut file = match File::open(self.path(key)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let record_len = file.metadata()?.len();
        // The version and length fields, or as much as the file has.
        let mut head = Vec::with_capacity(9);
        (&mut file).take(9).read_to_end(&mut head)?;
        Ok(Some(record::check_framing(&head, record_len)))
    }

    /// Removes the record file for `key`; a missing file is not an error.
    pub(crate) fn remove(&self, key: &Key) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Makes the record files of `keys` (those still present) and their
    /// directory entries durable (fsync).
    pub(crate) fn sync(&self, keys: &HashSet<Key>) -> io::Result<()> {
        let mut dirs = HashSet::new();
        for key in keys {
            let path = self.path(key);
            match File::open(&path) {
                Ok(file) => file.sync_all()?,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            if let Some(dir) = path.parent() {
                dirs.insert(dir.to_owned());
            }
        }
        for dir in dirs {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Every record file, with its length. Leftovers of interrupted writes
    /// (`.tmp` files) and files that are not named like a record in its
    /// right subdirectory are removed (the directory is this store's alone);
    /// the second result counts them.
    pub(crate) fn list(&self) -> io::Result<(Vec<Listed>, u64)> {
        let mut listed = Vec::new();
        let mut removed = 0;
        for shard in fs::read_dir(self.disk_path.join(VALUES_DIR))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let key = name.to_str().and_then(Key::from_hex);
                match key {
                    Some(key)
                        if entry.file_type()?.is_file()
                            && shard.file_name().to_str() == Some(&key.to_hex()[..2]) =>
                    {
                        listed.push(Listed {
                            key,
                            record_len: entry.metadata()?.len(),
                        });
                    }
                    _ => {
                        let path = entry.path();
                        let gone = if entry.file_type()?.is_dir() {
                            fs::remove_dir_all(&path)
                        } else {
                            fs::remove_file(&path)
                        };
                        if gone.is_ok() {
                            removed += 1;
                        }
                    }
                }
            }
        }
        Ok((listed, removed))
    }
}

/// `<path>.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HEADER_LEN;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path()).unwrap();
        assert_eq!(files.read(&key(1)).unwrap(), None);
        files.write(&key(1), b"hello").unwrap();
        let record = files.read(&key(1)).unwrap().unwrap();
        assert_eq!(record, record::encode(&key(1), b"hello"));
        assert_eq!(files.read_framing(&key(1)).unwrap(), Some(Ok(5)));
        files.write(&key(1), b"bye").unwrap();
        assert_eq!(
            files.read(&key(1)).unwrap(),
            Some(record::encode(&key(1), b"bye"))
        );
        files.sync(&[key(1), key(2)].into_iter().collect()).unwrap();
        files.remove(&key(1)).unwrap();
        files.remove(&key(1)).unwrap();
        assert_eq!(files.read(&key(1)).unwrap(), None);
        assert_eq!(files.read_framing(&key(1)).unwrap(), None);
    }

    #[test]
    fn framing_of_a_grown_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path()).unwrap();
        files.write(&key(3), b"abc").unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(files.path(&key(3)))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(
            files.read_framing(&key(3)).unwrap(),
            Some(Err(record::RecordError::LengthMismatch {
                header: 3,
                actual: 4
            }))
        );
    }

    #[test]
    fn list_keeps_records_and_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path()).unwrap();
        files.write(&key(1), b"one").unwrap();
        files.write(&key(2), b"two!").unwrap();
        let shard = dir.path().join(VALUES_DIR).join("01");
        fs::write(tmp_path(&files.path(&key(1))), b"half").unwrap();
        fs::write(shard.join("not-a-key"), b"x").unwrap();
        // A well-named record in the wrong subdirectory.
        fs::write(shard.join(key(9).to_hex()), b"x").unwrap();
        let (mut listed, removed) = files.list().unwrap();
        listed.sort_by_key(|l| l.key.to_hex());
        assert_eq!(
            listed,
            vec![
                Listed {
                    key: key(1),
                    record_len: (HEADER_LEN + 3) as u64
                },
                Listed {
                    key: key(2),
                    record_len: (HEADER_LEN + 4) as u64
                },
            ]
        );
        assert_eq!(removed, 3);
        assert_eq!(files.list().unwrap().1, 0);
    }
}
