//! Rate limiting for repeated warnings: a failing disk can fail every write,
//! and the log should get one line per interval carrying the count, not one
//! line per failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated warning is logged at most.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one event through per interval and counts the ones held back.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last_logged: Option<Instant>,
    since_last_log: u64,
}

impl WarnLimiter {
    /// A limiter letting one event through per `interval`.
    pub(crate) fn new(interval: Duration) -> WarnLimiter {
        WarnLimiter {
            interval,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// Records one event. Returns `Some(n)` when this event should be logged,
    /// `n` being the number of events since the last logged one, this one
    /// included; `None` while the interval since the last log has not passed.
    pub(crate) fn record(&self) -> Option<u64> {
        self.record_at(Instant::now())
    }

    fn record_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.since_last_log += 1;
        let due = match state.last_logged {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= self.interval,
        };
        if !due {
            return None;
        }
        let count = state.since_last_log;
        state.since_last_log = 0;
        state.last_logged = Some(now);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_log_per_interval_with_the_count() {
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.record_at(t0), Some(1));
        assert_eq!(limiter.record_at(t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.record_at(t0 + Duration::from_secs(9)), None);
        assert_eq!(limiter.record_at(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(limiter.record_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limiter.record_at(t0 + Duration::from_secs(25)), Some(2));
    }
}
