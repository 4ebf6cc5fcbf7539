//! What a load-test run measured, and how it is printed: the original
//! script's figures first, then latency percentiles, status codes, cache
//! outcomes and the server's own counters over the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// One request's result.
#[derive(Debug, Clone)]
pub struct Sample {
    /// HTTP status, or 0 when no answer came.
    pub status: u16,
    /// `X-Cache`, or `-`.
    pub cache: String,
    /// Time to the whole answer.
    pub latency: Duration,
    /// A 200 whose body was the expected WAV.
    pub ok: bool,
}

/// The server's counters over the run (after minus before).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServerDelta {
    /// Store lookups.
    pub lookups: u64,
    /// Memory hits.
    pub hits_memory: u64,
    /// Disk hits.
    pub hits_disk: u64,
    /// Coalesced requests.
    pub coalesced: u64,
    /// Misses.
    pub misses: u64,
    /// (hits + coalesced) / lookups over the run.
    pub hit_rate: f64,
    /// Conversions completed.
    pub conversions_completed: u64,
    /// Conversions failed.
    pub conversions_failed: u64,
    /// Conversions refused for a full queue.
    pub conversions_rejected: u64,
}

impl ServerDelta {
    /// The difference of two `/api/v1/stats` documents.
    pub fn between(before: &Value, after: &Value) -> ServerDelta {
        let d = |path: [&str; 2]| {
            let get = |v: &Value| v[path[0]][path[1]].as_u64().unwrap_or(0);
            get(after).saturating_sub(get(before))
        };
        let mut delta = ServerDelta {
            lookups: d(["cache", "lookups"]),
            hits_memory: d(["cache", "hits_memory"]),
            hits_disk: d(["cache", "hits_disk"]),
            coalesced: d(["cache", "coalesced"]),
            misses: d(["cache", "misses"]),
            hit_rate: 0.0,
            conversions_completed: d(["conversions", "completed"]),
            conversions_failed: d(["conversions", "failed"]),
            conversions_rejected: d(["conversions", "rejected_overload"]),
        };
        if delta.lookups > 0 {
            let hits = delta.hits_memory + delta.hits_disk + delta.coalesced;
            delta.hit_rate = (hits as f64 / delta.lookups as f64 * 10_000.0).round() / 10_000.0;
        }
        delta
    }
}

/// The whole report (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Simultaneous clients.
    pub concurrent_users: usize,
    /// Requests sent.
    pub requests: usize,
    /// Wall time of the run, seconds.
    pub total_time_s: f64,
    /// 200s with the expected WAV.
    pub success: usize,
    /// Everything else.
    pub failure: usize,
    /// Mean latency, seconds.
    pub mean_response_time_s: f64,
    /// Successes per second.
    pub throughput_rps: f64,
    /// Latency percentiles and maximum, milliseconds.
    pub latency_ms: BTreeMap<&'static str, f64>,
    /// Answers by status code (`0` = no answer).
    pub status_codes: BTreeMap<u16, usize>,
    /// Answers by `X-Cache`.
    pub cache_outcomes: BTreeMap<String, usize>,
    /// 200s whose body was not the expected WAV.
    pub wrong_bodies: usize,
    /// The server's counters over the run, if `/api/v1/stats` answered.
    pub server: Option<ServerDelta>,
}

fn percentile(sorted: &[Duration], pct: usize) -> f64 {
    crate::stats::nearest_rank(sorted, pct).map_or(0.0, ms)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl Report {
    /// Summarises the samples of a run.
    pub fn new(
        concurrency: usize,
        wall: Duration,
        samples: &[Sample],
        server: Option<ServerDelta>,
    ) -> Report {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let success = samples.iter().filter(|s| s.ok).count();
        let mut status_codes = BTreeMap::new();
        let mut cache_outcomes = BTreeMap::new();
        for s in samples {
            *status_codes.entry(s.status).or_insert(0) += 1;
            *cache_outcomes.entry(s.cache.clone()).or_insert(0) += 1;
        }
        let total: Duration = latencies.iter().sum();
        let mean = if samples.is_empty() {
            0.0
        } else {
            total.as_secs_f64() / samples.len() as f64
        };
        let wall_s = wall.as_secs_f64();
        let latency_ms = BTreeMap::from([
            ("p50", percentile(&latencies, 50)),
            ("p95", percentile(&latencies, 95)),
            ("p99", percentile(&latencies, 99)),
            ("max", latencies.last().copied().map_or(0.0, ms)),
        ]);
        Report {
            concurrent_users: concurrency,
            requests: samples.len(),
            total_time_s: (wall_s * 1000.0).round() / 1000.0,
            success,
            failure: samples.len() - success,
            mean_response_time_s: (mean * 10_000.0).round() / 10_000.0,
            throughput_rps: if wall_s > 0.0 {
                (success as f64 / wall_s * 100.0).round() / 100.0
            } else {
                0.0
            },
            latency_ms,
            status_codes,
            cache_outcomes,
            wrong_bodies: samples.iter().filter(|s| s.status == 200 && !s.ok).count(),
            server,
        }
    }

    /// The human-readable form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "concurrent users:   {}", self.concurrent_users);
        let _ = writeln!(out, "requests:           {}", self.requests);
        let _ = writeln!(out, "total time:         {:.2} s", self.total_time_s);
        let _ = writeln!(
            out,
            "success:            {}, failure: {}",
            self.success, self.failure
        );
        let _ = writeln!(
            out,
            "mean response time: {:.3} s",
            self.mean_response_time_s
        );
        let _ = writeln!(
            out,
            "throughput:         {:.2} requests/s",
            self.throughput_rps
        );
        let l = &self.latency_ms;
        let get = |k| l.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "latency ms:         p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
            get("p50"),
            get("p95"),
            get("p99"),
            get("max")
        );
        let codes: Vec<String> = self
            .status_codes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "status codes:       {}", codes.join(", "));
        let cache: Vec<String> = self
            .cache_outcomes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(out, "X-Cache:            {}", cache.join(", "));
        if self.wrong_bodies > 0 {
            let _ = writeln!(out, "WRONG BODIES:       {}", self.wrong_bodies);
        }
        match &self.server {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "server (delta):     lookups {}  hit rate {:.2}%  (memory {}, disk {}, coalesced {}, miss {})",
                    s.lookups,
                    s.hit_rate * 100.0,
                    s.hits_memory,
                    s.hits_disk,
                    s.coalesced,
                    s.misses
                );
                let _ = writeln!(
                    out,
                    "server conversions: completed {}  failed {}  rejected {}",
                    s.conversions_completed, s.conversions_failed, s.conversions_rejected
                );
            }
            None => {
                let _ = writeln!(out, "server (delta):     /api/v1/stats did not answer");
            }
        }
        out
    }
}
