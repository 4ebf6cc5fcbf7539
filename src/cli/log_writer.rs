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
//! lines take shared: it never waits unless such a write is under way.
//!
//! A `write` per line was still a large share of a memory hit's cost beyond
//! reading, hashing and sending (PERFORMANCE.md), so the runtime's worker
//! threads gather their lines below `warn` (the request lines) and write
//! them in one `write`: when the worker has no more work and parks
//! ([`park`], the runtime's `on_thread_park`), when they reach
//! [`BATCH_BYTES`], or when the oldest is [`BATCH_AGE`] old at the next
//! line. An idle server thus writes a request's line just after its answer;
//! a busy one, a batch every few milliseconds (tens of lines). A `warn` or
//! `error` line is written at once, after the lines its thread gathered. A
//! worker that stops writes what it gathered (its thread-local batch is
//! flushed as the thread ends, so SIGTERM loses nothing), and every other
//! thread writes each line at once; a `kill -9` loses at most the lines of
//! the last [`BATCH_AGE`] (or [`BATCH_BYTES`]) of each worker. A thread
//! gathers only once it has parked, so only the runtime's workers do.
//! (A writer thread fed by the workers cost more than the writes it saved:
//! waking it is dearer on this kind of machine than a `write`.)

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};

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
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            output: self.output,
            // `Level` orders ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

/// A batch this large is written at once.
pub const BATCH_BYTES: usize = 16 * 1024;

/// A batch whose oldest line is this old is written with the next line.
pub const BATCH_AGE: Duration = Duration::from_millis(2);

/// The lines a worker thread gathered (see the module comment).
struct Batch {
    bytes: Vec<u8>,
    /// When the oldest line was gathered.
    since: Option<Instant>,
    /// The thread has parked: it is a runtime worker, which gathers.
    gathering: bool,
    /// Where the lines go.
    output: Option<&'static Output>,
}

impl Batch {
    /// Writes what was gathered.
    fn flush(&mut self) {
        if let (Some(output), false) = (self.output, self.bytes.is_empty()) {
            let _ = output.write(&self.bytes);
        }
        self.bytes.clear();
        self.since = None;
    }
}

impl Drop for Batch {
    /// A thread that ends writes what it gathered.
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch {
        bytes: Vec::new(),
        since: None,
        gathering: false,
        output: None,
    }) };
}

/// The runtime's `on_thread_park`: writes what this worker gathered, and
/// from now on lets it gather.
pub fn park() {
    let _ = BATCH.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.gathering = true;
            b.flush();
        }
    });
}

/// One log line on its way (tracing-subscriber writes each line whole,
/// with one `write_all`).
#[derive(Debug)]
pub struct Line {
    output: &'static Output,
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match put(self.output, self.urgent, |batch| {
            batch.extend_from_slice(buf)
        }) {
            None => Ok(()),
            Some(_) => self.output.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one line below `warn`, made by `make` (which appends the line,
/// newline included), as the log's writer writes a `tracing` line: into this
/// thread's batch, made in place, when the thread gathers; at once
/// otherwise.
pub fn write_line(make: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
    let output = LogWriter::stderr().output;
    match put(output, false, make) {
        None => Ok(()),
        Some(make) => {
            let mut line = Vec::with_capacity(512);
            make(&mut line);
            output.write(&line)
        }
    }
}

/// Has `make` append a line to this thread's batch, unless the line is
/// `urgent` or the thread does not gather (or its batch is gone or busy):
/// then what was gathered is written and `make` is handed back, for the
/// caller to write its line at once.
fn put<F: FnOnce(&mut Vec<u8>)>(output: &'static Output, urgent: bool, make: F) -> Option<F> {
    let mut make = Some(make);
    let _ = BATCH.try_with(|batch| {
        let Ok(mut batch) = batch.try_borrow_mut() else {
            return;
        };
        if urgent || !batch.gathering {
            batch.flush();
            return;
        }
        batch.output = Some(output);
        if let Some(make) = make.take() {
            make(&mut batch.bytes);
        }
        let now = Instant::now();
        let since = *batch.since.get_or_insert(now);
        if batch.bytes.len() >= BATCH_BYTES || now.duration_since(since) >= BATCH_AGE {
            batch.flush();
        }
    });
    make
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

    /// A line as tracing-subscriber writes it: `urgent` for `warn` and
    /// `error` (written at once), else one a worker may gather.
    fn written(output: &'static Output, urgent: bool, text: &str) {
        Line { output, urgent }.write_all(text.as_bytes()).unwrap();
    }

    fn lines_in(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_worker_gathers_its_lines_until_it_parks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let output = output_to(&path);
        let in_thread = path.clone();
        std::thread::spawn(move || {
            let path = in_thread;
            // Before its first park a thread writes at once.
            written(output, false, "before\n");
            assert_eq!(lines_in(&path), ["before"]);
            park();
            written(output, false, "one\n");
            written(output, false, "two\n");
            assert_eq!(lines_in(&path), ["before"], "held until the park");
            park();
            assert_eq!(lines_in(&path), ["before", "one", "two"]);
            // A warning goes at once, after what was gathered.
            written(output, false, "three\n");
            written(output, true, "warning\n");
            assert_eq!(
                lines_in(&path),
                ["before", "one", "two", "three", "warning"]
            );
            // A full batch is written without a park.
            let long = format!("{}\n", "z".repeat(BATCH_BYTES));
            written(output, false, &long);
            assert_eq!(lines_in(&path).len(), 6);
            // An old batch is written with the next line.
            written(output, false, "old\n");
            std::thread::sleep(BATCH_AGE * 2);
            written(output, false, "new\n");
            assert_eq!(lines_in(&path)[6..], ["old", "new"]);
            // What is left when the thread ends is written.
            written(output, false, "last\n");
        })
        .join()
        .unwrap();
        assert_eq!(lines_in(&path).last().map(String::as_str), Some("last"));
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
                        written(output, true, text);
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
