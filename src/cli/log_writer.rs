//! Where `opusgate serve`'s log lines go: standard error, without the
//! process-wide lock of `std::io::Stderr`.
//!
//! `std::io::stderr` takes one lock per line and holds it across the
//! `write` system call: on the memory-hit path, with the threads that log
//! queueing on the lock and on the file's own lock in the kernel, a
//! measurable share of a request's CPU. So every line goes to the kernel in
//! one `write` on a duplicate of descriptor 2 (same open file, same offset,
//! same flags), which keeps it whole: a `write` of at most `PIPE_BUF` bytes
//! to a pipe is atomic, and a regular file's offset moves atomically with
//! each `write`. Anything longer is written alone, under a lock that short
//! lines take shared: it never waits unless such a write is under way. Each
//! line is written as soon as it is formatted (nothing is kept back, so a
//! `kill -9` loses no line already logged).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{OnceLock, RwLock};

use tracing_subscriber::fmt::MakeWriter;

/// The longest write that other lines may run beside: `PIPE_BUF` on Linux
/// (and the least POSIX allows).
const ATOMIC_WRITE_BYTES: usize = 4096;

/// Standard error for the log (see the module comment).
#[derive(Debug)]
struct Output {
    /// A duplicate of descriptor 2; `None` if it could not be made (then
    /// every line goes through `std::io::stderr`, as before).
    file: Option<File>,
    /// Shared by short writes, exclusive for long ones.
    long_write: RwLock<()>,
}

impl Output {
    /// Writes `bytes` whole, beside other short writes if it is short.
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let Some(mut file) = self.file.as_ref() else {
            return io::stderr().write_all(bytes);
        };
        // A poisoned lock guards nothing but the order of bytes.
        if bytes.len() <= ATOMIC_WRITE_BYTES {
            let _shared = self.long_write.read().unwrap_or_else(|e| e.into_inner());
            file.write_all(bytes)
        } else {
            let _alone = self.long_write.write().unwrap_or_else(|e| e.into_inner());
            file.write_all(bytes)
        }
    }
}

/// The process's log output, once [`LogWriter::stderr`] has made it.
static OUTPUT: OnceLock<Output> = OnceLock::new();

/// The log's writer (see the module comment).
#[derive(Clone, Copy, Debug)]
pub struct LogWriter {
    output: &'static Output,
}

impl LogWriter {
    /// The writer of this process's standard error (one per process: later
    /// calls share the first one's).
    pub fn stderr() -> LogWriter {
        let output = OUTPUT.get_or_init(|| Output {
            file: io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(File::from),
            long_write: RwLock::new(()),
        });
        LogWriter { output }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            output: self.output,
        }
    }
}

/// One log line on its way (tracing-subscriber writes each line whole,
/// with one `write_all`).
#[derive(Debug)]
pub struct Line {
    output: &'static Output,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_to(path: &std::path::Path) -> &'static Output {
        Box::leak(Box::new(Output {
            file: Some(File::create(path).unwrap()),
            long_write: RwLock::new(()),
        }))
    }

    fn line(output: &'static Output, text: &str) {
        Line { output }.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_of_any_length_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let output = output_to(&path);
        let short = "a short line\n".to_owned();
        let long = format!("{}\n", "x".repeat(3 * ATOMIC_WRITE_BYTES));
        std::thread::scope(|scope| {
            for text in [&short, &long, &short, &long] {
                scope.spawn(move || {
                    for _ in 0..50 {
                        line(output, text);
                    }
                });
            }
        });
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 200);
        assert!(lines
            .iter()
            .all(|l| *l == short.trim_end() || *l == long.trim_end()));
    }
}
