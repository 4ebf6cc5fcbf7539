//! Conversion and request statistics for `/api/v1/stats`, the original
//! service's monitoring endpoints, and the Prometheus metrics.
//!
//! Counters are atomics; conversion durations keep the most recent
//! [`DURATION_WINDOW`] samples for percentiles. Every Prometheus metric is
//! named in [`names`] and described (HELP, unit) in [`describe_all`]; each is
//! recorded (through the `metrics` facade) where it happens: conversions
//! here, store lookups in `service` and `upstream`, requests in `http::log`
//! (into handles resolved once, [`record_http_request`]),
//! backend calls in `upstream`, the stores' and the shared tier's figures
//! and the `process_*` metrics on a scrape ([`record_store`],
//! [`record_shared`], [`collect_process`], from `http::monitor`). The series
//! a dashboard or an alert reads exist at 0 from start-up
//! ([`register_startup_series`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

mod handles;
mod prometheus;
pub use handles::{count_cache_lookup, mark_recorder_installed, record_http_request, with_gauge};
pub use prometheus::{
    collect_process, describe_all, names, record_shared, record_store, register_startup_series,
    CONVERSION_RESULTS, UPSTREAM_RESULTS,
};

/// How many recent conversion durations percentiles are computed from.
pub const DURATION_WINDOW: usize = 4096;

/// Live conversion counters of one server.
#[derive(Debug)]
pub struct ConversionStats {
    active: AtomicU64,
    queued: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected_overload: AtomicU64,
    streams_repaired: AtomicU64,
    total_micros: AtomicU64,
    recent: Mutex<VecDeque<u32>>,
}

/// A snapshot of [`ConversionStats`], in the shape of `/api/v1/stats`'s `conversions`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConversionSnapshot {
    /// Conversions running now.
    pub active: u64,
    /// Conversions waiting for a permit now.
    pub queued: u64,
    /// Conversions that produced audio.
    pub completed: u64,
    /// Conversions that ended in an error (bad input, timeout, internal).
    pub failed: u64,
    /// Conversions refused because the wait queue was full.
    pub rejected_overload: u64,
    /// Conversions of an Ogg Opus upload whose granule positions disagreed
    /// with its packets, decoded as ffmpeg decodes it.
    pub streams_repaired: u64,
    /// Permits: conversions that may run at once.
    pub max_concurrent: u64,
    /// Threads in the conversion pool.
    pub workers: u64,
    /// `active / max_concurrent` in percent.
    pub utilization_percent: f64,
    /// Mean conversion time since start, in milliseconds.
    pub avg_ms: f64,
    /// Median of recent conversion times, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile of recent conversion times, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile of recent conversion times, in milliseconds.
    pub p99_ms: f64,
}

impl Default for ConversionStats {
    fn default() -> Self {
        ConversionStats {
            active: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected_overload: AtomicU64::new(0),
            streams_repaired: AtomicU64::new(0),
            total_micros: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(DURATION_WINDOW)),
        }
    }
}

/// Decrements a gauge when dropped, so that a cancelled or panicking
/// conversion still leaves the counts right.
#[must_use]
pub struct GaugeGuard<'a> {
    counter: &'a AtomicU64,
    metric: &'static str,
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        let now = self
            .counter
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!(self.metric).set(now as f64);
    }
}

fn enter<'a>(counter: &'a AtomicU64, metric: &'static str) -> GaugeGuard<'a> {
    let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!(metric).set(now as f64);
    GaugeGuard { counter, metric }
}

impl ConversionStats {
    /// Takes a place in the wait queue if fewer than `max` are waiting; the
    /// place is held until the guard drops. `None` means the queue is full.
    pub fn try_enter_queue(&self, max: usize) -> Option<GaugeGuard<'_>> {
        let max = max as u64;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max).then_some(q + 1)
            })
            .ok()
            .map(|previous| {
                metrics::gauge!(names::CONVERSIONS_QUEUED).set((previous + 1) as f64);
                GaugeGuard {
                    counter: &self.queued,
                    metric: names::CONVERSIONS_QUEUED,
                }
            })
    }

    /// Counts a running conversion until the guard drops.
    pub fn enter_active(&self) -> GaugeGuard<'_> {
        enter(&self.active, names::CONVERSIONS_ACTIVE)
    }

    /// Conversions waiting now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Conversions running now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a conversion refused for a full queue.
    pub fn record_rejected(&self) {
        self.rejected_overload.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CONVERSIONS_REJECTED).increment(1);
    }

    /// Counts a conversion whose Ogg stream had its granule positions
    /// repaired (once per conversion, however many streams or pages).
    pub fn record_repaired(&self) {
        self.streams_repaired.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::STREAMS_REPAIRED).increment(1);
    }

    /// Records a finished conversion and how long it ran.
    pub fn record_finished(&self, ok: bool, took: Duration) {
        let (counter, label) = if ok {
            (&self.completed, "ok")
        } else {
            (&self.failed, "error")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == DURATION_WINDOW {
                recent.pop_front();
            }
            recent.push_back(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        metrics::counter!(names::CONVERSIONS, "result" => label).increment(1);
        metrics::histogram!(names::CONVERSION_DURATION).record(took.as_secs_f64());
    }

    /// Conversions finished, with or without error.
    pub fn total(&self) -> u64 {
        self.completed.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Mean conversion time in milliseconds since start (0 with none).
    pub fn avg_ms(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        self.total_micros.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }

    /// A consistent-enough snapshot for the stats endpoint.
    pub fn snapshot(&self, max_concurrent: usize, workers: usize) -> ConversionSnapshot {
        let mut recent: Vec<u32> = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        recent.sort_unstable();
        let active = self.active();
        let max = max_concurrent as u64;
        ConversionSnapshot {
            active,
            queued: self.queued(),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rejected_overload: self.rejected_overload.load(Ordering::Relaxed),
            streams_repaired: self.streams_repaired.load(Ordering::Relaxed),
            max_concurrent: max,
            workers: workers as u64,
            utilization_percent: if max == 0 {
                0.0
            } else {
                round2(active as f64 * 100.0 / max as f64)
            },
            avg_ms: round2(self.avg_ms()),
            p50_ms: percentile_ms(&recent, 50),
            p95_ms: percentile_ms(&recent, 95),
            p99_ms: percentile_ms(&recent, 99),
        }
    }
}

/// The nearest-rank `pct` percentile of sorted samples (`None` when empty).
pub fn nearest_rank<T: Copy>(sorted: &[T], pct: usize) -> Option<T> {
    let rank = (pct * sorted.len())
        .div_ceil(100)
        .clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds.
fn percentile_ms(sorted: &[u32], pct: usize) -> f64 {
    nearest_rank(sorted, pct).map_or(0.0, |us| round2(f64::from(us) / 1000.0))
}

/// Rounds to two decimals, for readable JSON.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Requests served, for the original service's `total_requests` figures.
#[derive(Debug)]
pub struct RequestStats {
    started: Instant,
    conversion_requests: AtomicU64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            started: Instant::now(),
            conversion_requests: AtomicU64::new(0),
        }
    }
}

impl RequestStats {
    /// Counts one conversion request (whatever its answer).
    pub fn record_conversion_request(&self) {
        self.conversion_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Conversion requests since start.
    pub fn conversion_requests(&self) -> u64 {
        self.conversion_requests.load(Ordering::Relaxed)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&samples, 50), 50.0);
        assert_eq!(percentile_ms(&samples, 95), 95.0);
        assert_eq!(percentile_ms(&samples, 99), 99.0);
        assert_eq!(percentile_ms(&[], 99), 0.0);
        assert_eq!(percentile_ms(&[2500], 50), 2.5);
    }

    #[test]
    fn gauges_return_to_zero_when_guards_drop() {
        let stats = ConversionStats::default();
        {
            let _q = stats.try_enter_queue(1).unwrap();
            assert!(stats.try_enter_queue(1).is_none());
            let _a = stats.enter_active();
            assert_eq!((stats.queued(), stats.active()), (1, 1));
        }
        assert_eq!((stats.queued(), stats.active()), (0, 0));
        stats.record_finished(true, Duration::from_millis(4));
        stats.record_finished(false, Duration::from_millis(2));
        let snap = stats.snapshot(4, 2);
        assert_eq!((snap.completed, snap.failed), (1, 1));
        assert_eq!(snap.avg_ms, 3.0);
        assert_eq!(snap.p99_ms, 4.0);
    }
}
