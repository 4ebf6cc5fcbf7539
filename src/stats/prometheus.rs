//! The Prometheus side of the statistics: every metric's name ([`names`]),
//! its HELP text and unit ([`describe_all`]), the series that exist at 0
//! from start-up ([`register_startup_series`]), and the figures set on a
//! scrape from the stores, the shared tier and /proc ([`record_store`],
//! [`record_shared`], [`collect_process`]).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use opusgate_cache::{Outcome, SharedStats, StoreStats};

/// Metric names, in one place. Counters (everything that only increases)
/// end in `_total`; the rest are gauges and histograms. The `process_*`
/// metrics are named by the `metrics-process` crate ([`collect_process`]).
pub mod names {
    /// Counter: HTTP requests by route and status.
    pub const HTTP_REQUESTS: &str = "opusgate_http_requests_total";
    /// Histogram: HTTP request duration by route.
    pub const HTTP_DURATION: &str = "opusgate_http_request_duration_seconds";
    /// Counter: audio store lookups by `outcome` (each of
    /// `opusgate_cache::Outcome::ALL`).
    pub const CACHE_LOOKUPS: &str = "opusgate_cache_lookups_total";
    /// Gauge: conversions running.
    pub const CONVERSIONS_ACTIVE: &str = "opusgate_conversions_in_progress";
    /// Gauge: conversions waiting for a permit.
    pub const CONVERSIONS_QUEUED: &str = "opusgate_conversions_queued";
    /// Counter: conversions finished, by result (`ok`, `error`).
    pub const CONVERSIONS: &str = "opusgate_conversions_total";
    /// Counter: conversions refused because the wait queue was full.
    pub const CONVERSIONS_REJECTED: &str = "opusgate_conversions_rejected_total";
    /// Histogram: conversion duration.
    pub const CONVERSION_DURATION: &str = "opusgate_conversion_duration_seconds";
    /// Counter: conversions of an Ogg Opus upload whose granule positions
    /// disagreed with its packets, decoded as ffmpeg decodes it.
    pub const STREAMS_REPAIRED: &str = "opusgate_streams_repaired_total";
    /// Gauge: bytes stored, by `store` (`audio`, `upstream`) and `tier`.
    pub const STORE_BYTES: &str = "opusgate_store_bytes";
    /// Gauge: entries stored, by `store` and `tier`.
    pub const STORE_ENTRIES: &str = "opusgate_store_entries";
    /// Gauge: capacity, by `store` and `tier`.
    pub const STORE_CAPACITY: &str = "opusgate_store_capacity_bytes";
    /// Counter: evictions since start, by `store` and `tier`.
    pub const STORE_EVICTIONS: &str = "opusgate_store_evictions_total";
    /// Counter: corrupt disk records found since start, by `store`.
    pub const STORE_CORRUPT: &str = "opusgate_store_corrupt_records_total";
    /// Counter: failed disk writes since start, by `store`.
    pub const STORE_WRITE_FAILURES: &str = "opusgate_store_disk_write_failures_total";
    /// Gauge: the disk tier's space on disk (value files and the sled
    /// index), by `store`.
    pub const STORE_SIZE_ON_DISK: &str = "opusgate_store_size_on_disk_bytes";
    /// Gauge: 1 if the disk tier is in use, 0 if it could not be opened (a
    /// full filesystem; the store runs on memory only), by `store`.
    pub const STORE_DISK_ENABLED: &str = "opusgate_store_disk_enabled";
    /// Counter: backend calls by result (`ok`, `status`, `timeout`, `unavailable`).
    pub const UPSTREAM_CALLS: &str = "opusgate_upstream_calls_total";
    /// Histogram: backend call duration.
    pub const UPSTREAM_DURATION: &str = "opusgate_upstream_duration_seconds";
    /// Counter: answer-store lookups by `outcome` (each of
    /// `opusgate_cache::Outcome::ALL`).
    pub const UPSTREAM_CACHE: &str = "opusgate_upstream_cache_total";
    /// Gauge: 1 while the shared tier is in use (connected, circuit closed).
    pub const SHARED_UP: &str = "opusgate_shared_up";
    /// Counter: shared tier events since start, by `event` (`errors`,
    /// `fallbacks`, `lock_takeovers`, `lease_lost`, `skipped_too_large`,
    /// `corrupt_values`).
    pub const SHARED_EVENTS: &str = "opusgate_shared_events_total";
    /// Counter: bytes of values read from and written to the shared tier
    /// since start, by `direction` (`read`, `written`).
    pub const SHARED_BYTES: &str = "opusgate_shared_bytes_total";
    /// Gauge: bytes of request bodies reserved in the upload budget now.
    pub const UPLOAD_INFLIGHT: &str = "opusgate_upload_inflight_bytes";
    /// Counter: uploads refused for the upload budget.
    pub const UPLOAD_REJECTED: &str = "opusgate_upload_rejected_total";
    /// Gauge: bytes of answers held in the answer budget now.
    pub const ANSWER_INFLIGHT: &str = "opusgate_answer_inflight_bytes";
    /// Counter: answers streamed from disk for the answer budget.
    pub const ANSWER_STREAMED: &str = "opusgate_answer_streamed_total";
    /// Counter: answers refused for the answer budget.
    pub const ANSWER_REJECTED: &str = "opusgate_answer_rejected_total";
}

/// The `result` labels of [`names::CONVERSIONS`].
pub const CONVERSION_RESULTS: [&str; 2] = ["ok", "error"];

/// The `result` labels of [`names::UPSTREAM_CALLS`] (set in `upstream`).
pub const UPSTREAM_RESULTS: [&str; 4] = ["ok", "status", "timeout", "unavailable"];

/// HELP text and unit of every metric, once, right after the recorder is
/// installed (`http::metrics_handle`), `process_*` included.
pub fn describe_all() {
    use names::*;
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration, from the request head to the answer's head, by route."
    );
    describe_counter!(
        CACHE_LOOKUPS,
        Unit::Count,
        "Audio store lookups by outcome (hit-memory, hit-disk, hit-shared, coalesced, coalesced-remote, miss)."
    );
    describe_gauge!(CONVERSIONS_ACTIVE, Unit::Count, "Conversions running now.");
    describe_gauge!(
        CONVERSIONS_QUEUED,
        Unit::Count,
        "Conversions waiting for a permit now."
    );
    describe_counter!(
        CONVERSIONS,
        Unit::Count,
        "Conversions finished, by result (ok, error)."
    );
    describe_counter!(
        CONVERSIONS_REJECTED,
        Unit::Count,
        "Conversions refused because the wait queue was full."
    );
    describe_histogram!(
        CONVERSION_DURATION,
        Unit::Seconds,
        "Conversion duration on the worker pool."
    );
    describe_counter!(
        STREAMS_REPAIRED,
        Unit::Count,
        "Conversions of an Ogg Opus upload whose granule positions disagreed with its packets (e.g. ffmpeg's copy of a browser's WebM), decoded as ffmpeg decodes it."
    );
    describe_gauge!(
        STORE_BYTES,
        Unit::Bytes,
        "Bytes of values stored, by store (audio, upstream) and tier (memory, disk)."
    );
    describe_gauge!(
        STORE_ENTRIES,
        Unit::Count,
        "Values stored, by store (audio, upstream) and tier (memory, disk)."
    );
    describe_gauge!(
        STORE_CAPACITY,
        Unit::Bytes,
        "Capacity in bytes, by store (audio, upstream) and tier (memory, disk)."
    );
    describe_counter!(
        STORE_EVICTIONS,
        Unit::Count,
        "Values evicted for capacity since start, by store and tier."
    );
    describe_counter!(
        STORE_CORRUPT,
        Unit::Count,
        "Disk records that failed their checks and were deleted since start, by store."
    );
    describe_counter!(
        STORE_WRITE_FAILURES,
        Unit::Count,
        "Disk writes that did not happen (I/O errors, full write-back queue) since start, by store."
    );
    describe_gauge!(
        STORE_SIZE_ON_DISK,
        Unit::Bytes,
        "The disk tier's space on disk (value files and the recency index), by store."
    );
    describe_gauge!(
        STORE_DISK_ENABLED,
        Unit::Count,
        "1 if the disk tier is in use, 0 if it could not be opened on a full filesystem (memory only), by store."
    );
    describe_counter!(
        UPSTREAM_CALLS,
        Unit::Count,
        "Backend calls by result (ok, status, timeout, unavailable), retries included."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Backend call duration, per attempt."
    );
    describe_counter!(
        UPSTREAM_CACHE,
        Unit::Count,
        "Answer store lookups (proxy mode) by outcome."
    );
    describe_gauge!(
        SHARED_UP,
        Unit::Count,
        "1 while the shared tier is in use (connected, circuit closed), else 0."
    );
    describe_counter!(
        SHARED_EVENTS,
        Unit::Count,
        "Shared tier events since start, by event (errors, fallbacks, lock_takeovers, lease_lost, skipped_too_large, corrupt_values)."
    );
    describe_counter!(
        SHARED_BYTES,
        Unit::Bytes,
        "Bytes of values read from and written to the shared tier since start, by direction."
    );
    describe_gauge!(
        UPLOAD_INFLIGHT,
        Unit::Bytes,
        "Bytes of request bodies held in the upload budget (limits.max_inflight_upload_bytes) now."
    );
    describe_counter!(
        UPLOAD_REJECTED,
        Unit::Count,
        "Uploads refused for the upload budget: 503 overloaded (no room in time) or 413 (larger than the whole budget)."
    );
    describe_gauge!(
        ANSWER_INFLIGHT,
        Unit::Bytes,
        "Bytes of WAV held by answers being sent (limits.max_inflight_answer_bytes) now: whole buffers, and chunks of answers streamed from disk."
    );
    describe_counter!(
        ANSWER_STREAMED,
        Unit::Count,
        "Answers streamed from their disk record in chunks because holding them whole would have crossed the answer budget."
    );
    describe_counter!(
        ANSWER_REJECTED,
        Unit::Count,
        "Answers refused with 503 overloaded: no room in the answer budget within a second, and no disk record to stream from."
    );
    process_collector().describe();
}

/// Creates, at 0, every series a dashboard or an alert reads, so that a
/// fresh instance exposes them before their first event: lookups of both
/// stores by outcome, conversions by result, rejected and repaired,
/// conversions in progress and queued, backend calls by result, and the two
/// unlabelled duration histograms. Called once, where the recorder is installed.
pub fn register_startup_series() {
    for outcome in Outcome::ALL {
        metrics::counter!(names::CACHE_LOOKUPS, "outcome" => outcome.as_str()).increment(0);
        metrics::counter!(names::UPSTREAM_CACHE, "outcome" => outcome.as_str()).increment(0);
    }
    for result in CONVERSION_RESULTS {
        metrics::counter!(names::CONVERSIONS, "result" => result).increment(0);
    }
    metrics::counter!(names::CONVERSIONS_REJECTED).increment(0);
    metrics::counter!(names::STREAMS_REPAIRED).increment(0);
    metrics::counter!(names::UPLOAD_REJECTED).increment(0);
    metrics::counter!(names::ANSWER_STREAMED).increment(0);
    metrics::counter!(names::ANSWER_REJECTED).increment(0);
    for result in UPSTREAM_RESULTS {
        metrics::counter!(names::UPSTREAM_CALLS, "result" => result).increment(0);
    }
    // `increment(0)`, not `set(0)`: a gauge another server of this process
    // (tests) already raised keeps its value.
    metrics::gauge!(names::CONVERSIONS_ACTIVE).increment(0.0);
    metrics::gauge!(names::CONVERSIONS_QUEUED).increment(0.0);
    metrics::gauge!(names::UPLOAD_INFLIGHT).increment(0.0);
    metrics::gauge!(names::ANSWER_INFLIGHT).increment(0.0);
    // A registered histogram is rendered (empty) from the next upkeep on.
    let _ = metrics::histogram!(names::CONVERSION_DURATION);
    let _ = metrics::histogram!(names::UPSTREAM_DURATION);
}

/// Sets a store's figures on a scrape: tier gauges, and its cumulative
/// counts as counters (absolute values, which never go down). `store` is
/// `audio` or `upstream`.
pub fn record_store(store: &'static str, s: &StoreStats) {
    for (tier, t, evictions) in [
        ("memory", s.memory, s.evictions_memory),
        ("disk", s.disk, s.evictions_disk),
    ] {
        metrics::gauge!(names::STORE_BYTES, "store" => store, "tier" => tier).set(t.bytes as f64);
        metrics::gauge!(names::STORE_ENTRIES, "store" => store, "tier" => tier)
            .set(t.entries as f64);
        metrics::gauge!(names::STORE_CAPACITY, "store" => store, "tier" => tier)
            .set(t.capacity_bytes as f64);
        metrics::counter!(names::STORE_EVICTIONS, "store" => store, "tier" => tier)
            .absolute(evictions);
    }
    metrics::counter!(names::STORE_CORRUPT, "store" => store).absolute(s.corrupt_records);
    metrics::counter!(names::STORE_WRITE_FAILURES, "store" => store)
        .absolute(s.disk_write_failures);
    metrics::gauge!(names::STORE_SIZE_ON_DISK, "store" => store)
        .set(s.disk_size_on_disk_bytes as f64);
    let enabled = if s.disk_enabled { 1.0 } else { 0.0 };
    metrics::gauge!(names::STORE_DISK_ENABLED, "store" => store).set(enabled);
}

/// Sets the shared tier's figures on a scrape (all 0 without one).
pub fn record_shared(s: &SharedStats) {
    metrics::gauge!(names::SHARED_UP).set(if s.up { 1.0 } else { 0.0 });
    for (event, value) in [
        ("errors", s.errors),
        ("fallbacks", s.fallbacks),
        ("lock_takeovers", s.lock_takeovers),
        ("lease_lost", s.lease_lost),
        ("skipped_too_large", s.skipped_too_large),
        ("corrupt_values", s.corrupt_values),
    ] {
        metrics::counter!(names::SHARED_EVENTS, "event" => event).absolute(value);
    }
    for (direction, value) in [("read", s.bytes_read), ("written", s.bytes_written)] {
        metrics::counter!(names::SHARED_BYTES, "direction" => direction).absolute(value);
    }
}

/// The `process_*` metrics' collector (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_virtual_memory_max_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_threads`, `process_start_time_seconds`).
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::LazyLock<metrics_process::Collector> =
        std::sync::LazyLock::new(metrics_process::Collector::default);
    &COLLECTOR
}

/// Sets the `process_*` metrics from /proc, on a scrape.
pub fn collect_process() {
    process_collector().collect();
}
