//! The limits of one conversion and what has been spent of them: the
//! duration limit (summed over chained links) and the deadline. Shared by
//! the demuxer and each logical stream it reads.

use std::time::Instant;

use super::error::CodecError;
use super::page::Page;
use super::ConvertOptions;

/// Limits and running totals shared by the links of one input.
pub(crate) struct Budget {
    /// Length of the whole input in bytes.
    input_len: usize,
    max_48k: u64,
    done_48k: u64,
    limit: std::time::Duration,
    deadline: Option<Instant>,
    started: Instant,
}

impl Budget {
    /// The limits of `opts` for an input of `input_len` bytes, the clock
    /// starting now.
    pub(crate) fn new(opts: &ConvertOptions, input_len: usize) -> Budget {
        let max = opts.max_duration.as_nanos().saturating_mul(48) / 1_000_000;
        Budget {
            input_len,
            max_48k: u64::try_from(max).unwrap_or(u64::MAX),
            done_48k: 0,
            limit: opts.max_duration,
            deadline: opts.deadline,
            started: Instant::now(),
        }
    }

    /// Fails with `conversion_timeout` once the deadline has passed.
    pub(crate) fn check_deadline(&self) -> Result<(), CodecError> {
        check_deadline(self.deadline, self.started)
    }

    /// Whether nothing of the input follows `page`.
    pub(crate) fn is_last_page(&self, page: &Page<'_>) -> bool {
        page.offset.saturating_add(page.len()) >= self.input_len
    }

    /// Refuses when earlier links plus `samples` of this one exceed the limit,
    /// `slack` samples tolerated (for end trimming still to come).
    pub(crate) fn check_length(
        &self,
        samples: u64,
        slack: u64,
        at_least: bool,
    ) -> Result<(), CodecError> {
        let total = self.done_48k.saturating_add(samples);
        if total > self.max_48k.saturating_add(slack) {
            return Err(CodecError::too_long(total, at_least, self.limit));
        }
        Ok(())
    }

    /// Counts a finished link's output samples (48 kHz) against the limit.
    pub(crate) fn add_done(&mut self, samples_48k: u64) {
        self.done_48k = self.done_48k.saturating_add(samples_48k);
    }
}

/// Fails with `conversion_timeout` once `deadline` has passed.
pub(crate) fn check_deadline(
    deadline: Option<Instant>,
    started: Instant,
) -> Result<(), CodecError> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(CodecError::ConversionTimeout {
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        _ => Ok(()),
    }
}
