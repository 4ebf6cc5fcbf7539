//! `[limits]`: bounds on what one request may cost, and the memory budgets
//! of the request bodies and the answers in flight.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body, in bytes.
    pub max_upload_bytes: u64,
    /// The memory budget of request bodies: the total bytes of all bodies
    /// being read (and held until their request is answered) at once. A
    /// body reserves its Content-Length (a chunked one, each chunk) before
    /// it is read; one that finds no room within a second gets 503
    /// `overloaded`, one larger than the whole budget 413.
    pub max_inflight_upload_bytes: u64,
    /// The memory budget of answers: the total bytes of WAV held by the
    /// answers being sent at once (a buffer shared by identical answers
    /// counts once). An answer that would cross it is streamed from its
    /// disk record in 64 KiB chunks instead (each chunk counted until it is
    /// written); one with no disk record waits up to a second for room,
    /// then gets 503 `overloaded`.
    pub max_inflight_answer_bytes: u64,
    /// Longest accepted audio, in seconds.
    pub max_duration_seconds: u64,
    /// Deadline of one conversion once it runs, in seconds (fractions allowed).
    pub conversion_timeout_seconds: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_upload_bytes: 33_554_432,
            max_inflight_upload_bytes: 268_435_456,
            max_inflight_answer_bytes: 268_435_456,
            max_duration_seconds: 600,
            conversion_timeout_seconds: 30.0,
        }
    }
}

impl LimitsConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_upload_bytes", self.max_upload_bytes),
            (
                "limits.max_inflight_upload_bytes",
                self.max_inflight_upload_bytes,
            ),
            (
                "limits.max_inflight_answer_bytes",
                self.max_inflight_answer_bytes,
            ),
            ("limits.max_duration_seconds", self.max_duration_seconds),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    value: "0".into(),
                    why: "must be positive".into(),
                });
            }
        }
        let timeout = self.conversion_timeout_seconds;
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 86_400.0) {
            return Err(ConfigError::Invalid {
                setting: "limits.conversion_timeout_seconds",
                value: timeout.to_string(),
                why: "must be more than 0 and at most 86400".into(),
            });
        }
        Ok(())
    }
}
