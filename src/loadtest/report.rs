//! What a load-test run measured, and how it is printed: the original
//! script's figures first, then latency percentiles, status codes, cache
//! outcomes and the servers' own counters over the run, summed over the
//! instances, with each instance's part.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::fleet;

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
    /// The instance it went to (index in [`fleet::Fleet::urls`]).
    pub instance: usize,
}

/// The servers' counters over the run: each instance's `/api/v1/stats`
/// after minus before, summed over the instances that answered.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServerDelta {
    /// Instances whose counters are summed here.
    pub instances: usize,
    /// Store lookups.
    pub lookups: u64,
    /// Memory hits.
    pub hits_memory: u64,
    /// Disk hits.
    pub hits_disk: u64,
    /// Hits in the shared store, when the servers count them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hits_shared: Option<u64>,
    /// Coalesced requests.
    pub coalesced: u64,
    /// Requests that waited for another instance's conversion, when the
    /// servers count them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced_remote: Option<u64>,
    /// Misses: the conversions started, fleet-wide.
    pub misses: u64,
    /// (lookups - misses) / lookups over the run.
    pub hit_rate: f64,
    /// Conversions completed.
    pub conversions_completed: u64,
    /// Conversions failed.
    pub conversions_failed: u64,
    /// Conversions refused for a full queue.
    pub conversions_rejected: u64,
    /// The summed `shared` section (a boolean becomes the number of
    /// instances where it is true), when the servers have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<Value>,
    /// Every field of the stats, summed alike (see [`fleet::sum`]).
    pub stats: Value,
}

impl ServerDelta {
    /// The difference of two `/api/v1/stats` documents of one instance.
    pub fn between(before: &Value, after: &Value) -> ServerDelta {
        ServerDelta::from_sum(fleet::delta(before, after), 1)
    }

    /// The figures of `sum`, a [`fleet::sum`] of `instances` deltas.
    pub fn from_sum(sum: Value, instances: usize) -> ServerDelta {
        let get = |a: &str, b: &str| sum.get(a).and_then(|v| v.get(b)).and_then(Value::as_u64);
        let d = |a: &str, b: &str| get(a, b).unwrap_or(0);
        ServerDelta {
            instances,
            lookups: d("cache", "lookups"),
            hits_memory: d("cache", "hits_memory"),
            hits_disk: d("cache", "hits_disk"),
            hits_shared: get("cache", "hits_shared"),
            coalesced: d("cache", "coalesced"),
            coalesced_remote: get("cache", "coalesced_remote"),
            misses: d("cache", "misses"),
            hit_rate: sum
                .get("cache")
                .and_then(|c| c.get("hit_rate"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            conversions_completed: d("conversions", "completed"),
            conversions_failed: d("conversions", "failed"),
            conversions_rejected: d("conversions", "rejected_overload"),
            shared: sum.get("shared").filter(|s| s.is_object()).cloned(),
            stats: sum,
        }
    }
}

/// One instance's part of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceReport {
    /// Its base URL.
    pub url: String,
    /// Requests sent to it.
    pub requests: usize,
    /// Its 200s with the expected WAV.
    pub success: usize,
    /// Its stats over the run (see [`fleet::delta`]), or null when they
    /// could not be read.
    pub delta: Option<Value>,
    /// Why its stats could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_error: Option<String>,
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
    /// Answers by `X-Cache`, whatever its values.
    pub cache_outcomes: BTreeMap<String, usize>,
    /// 200s whose body was not the expected WAV.
    pub wrong_bodies: usize,
    /// The servers' counters over the run, summed over the instances whose
    /// `/api/v1/stats` answered (none if none did).
    pub server: Option<ServerDelta>,
    /// Each instance's requests and stats over the run.
    pub instances: Vec<InstanceReport>,
}

fn percentile(sorted: &[Duration], pct: usize) -> f64 {
    crate::stats::nearest_rank(sorted, pct).map_or(0.0, ms)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl Report {
    /// Summarises the samples of a run; `stats` has, for each instance,
    /// its URL and its stats delta over the run or why it could not be read.
    pub fn new(
        concurrency: usize,
        wall: Duration,
        samples: &[Sample],
        stats: Vec<(String, Result<Value, String>)>,
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
            server: summed(&stats),
            instances: instances(samples, stats),
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
        self.server_text(&mut out);
        out
    }

    fn server_text(&self, out: &mut String) {
        let fleet = self.instances.len() > 1;
        if let Some(s) = &self.server {
            let label = if fleet {
                format!("fleet (sum of {}):", s.instances)
            } else {
                "server (delta):".to_owned()
            };
            let optional = |name: &str, n: Option<u64>| n.map(|n| format!(", {name} {n}"));
            let _ = writeln!(
                out,
                "{label:<19} lookups {}  hit rate {:.2}%  (memory {}, disk {}{}, coalesced {}{}, miss {})",
                s.lookups,
                s.hit_rate * 100.0,
                s.hits_memory,
                s.hits_disk,
                optional("shared", s.hits_shared).unwrap_or_default(),
                s.coalesced,
                optional("coalesced-remote", s.coalesced_remote).unwrap_or_default(),
                s.misses
            );
            let _ = writeln!(
                out,
                "server conversions: completed {}  failed {}  rejected {}",
                s.conversions_completed, s.conversions_failed, s.conversions_rejected
            );
            let shared = s.shared.as_ref().and_then(Value::as_object);
            if shared.is_some_and(|s| s.get("enabled").and_then(Value::as_u64) == Some(0)) {
                let _ = writeln!(out, "shared store:       not enabled");
            } else if let Some(shared) = shared {
                let fields: Vec<String> = shared
                    .iter()
                    .filter(|(_, v)| v.is_number())
                    .map(|(k, v)| match k.as_str() {
                        "enabled" | "up" => format!("{k} {v}/{}", s.instances),
                        _ => format!("{k} {v}"),
                    })
                    .collect();
                let _ = writeln!(out, "shared store:       {}", fields.join("  "));
            }
        }
        if fleet {
            if self.server.is_none() {
                let _ = writeln!(out, "fleet:              no /api/v1/stats answered");
            }
            let _ = writeln!(out, "instances:          {}", self.instances.len());
        }
        for i in &self.instances {
            match (&i.stats_error, fleet) {
                (Some(e), false) => {
                    let _ = writeln!(
                        out,
                        "server (delta):     /api/v1/stats of {} did not answer: {e}",
                        i.url
                    );
                }
                (Some(e), true) => {
                    let _ = writeln!(
                        out,
                        "  {}: requests {}  success {}  stats unavailable: {e}",
                        i.url, i.requests, i.success
                    );
                }
                (None, true) => {
                    let one = i.delta.clone().map(|d| ServerDelta::from_sum(d, 1));
                    let one = one.unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {}: requests {}  success {}  lookups {}  miss {}  hit rate {:.2}%",
                        i.url,
                        i.requests,
                        i.success,
                        one.lookups,
                        one.misses,
                        one.hit_rate * 100.0
                    );
                }
                (None, false) => {}
            }
        }
    }
}

/// The sum of the deltas that could be read, if any could.
fn summed(stats: &[(String, Result<Value, String>)]) -> Option<ServerDelta> {
    let deltas: Vec<&Value> = stats.iter().filter_map(|(_, d)| d.as_ref().ok()).collect();
    (!deltas.is_empty())
        .then(|| ServerDelta::from_sum(fleet::sum(deltas.iter().copied()), deltas.len()))
}

fn instances(
    samples: &[Sample],
    stats: Vec<(String, Result<Value, String>)>,
) -> Vec<InstanceReport> {
    stats
        .into_iter()
        .enumerate()
        .map(|(index, (url, delta))| {
            let mine = samples.iter().filter(|s| s.instance == index);
            let (delta, stats_error) = match delta {
                Ok(d) => (Some(d), None),
                Err(e) => (None, Some(e)),
            };
            InstanceReport {
                url,
                requests: mine.clone().count(),
                success: mine.filter(|s| s.ok).count(),
                delta,
                stats_error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(instance: usize, cache: &str) -> Sample {
        Sample {
            status: 200,
            cache: cache.to_owned(),
            latency: Duration::from_millis(5),
            ok: true,
            instance,
        }
    }

    #[test]
    fn a_fleet_report_sums_the_instances_and_names_the_silent_one() {
        let stats = |misses: u64, shared: u64| {
            json!({"cache": {"lookups": 2, "misses": misses, "hits_shared": shared, "hit_rate": null},
                   "shared": {"up": true, "errors": 1}})
        };
        let samples = [
            sample(0, "miss"),
            sample(1, "hit-shared"),
            sample(2, "coalesced-remote"),
            sample(0, "hit-memory"),
        ];
        let report = Report::new(
            4,
            Duration::from_secs(1),
            &samples,
            vec![
                ("http://a".into(), Ok(fleet::sum([&stats(2, 0)]))),
                ("http://b".into(), Ok(fleet::sum([&stats(0, 2)]))),
                ("http://c".into(), Err("connection refused".into())),
            ],
        );
        let s = report.server.clone().unwrap();
        assert_eq!((s.instances, s.lookups, s.misses), (2, 4, 2));
        assert_eq!((s.hits_shared, s.coalesced_remote), (Some(2), None));
        assert_eq!(s.hit_rate, 0.5);
        assert_eq!(s.shared, Some(json!({"up": 2, "errors": 2})));
        assert_eq!(report.cache_outcomes.get("hit-shared"), Some(&1));
        assert_eq!(report.cache_outcomes.get("coalesced-remote"), Some(&1));
        let requests: Vec<usize> = report.instances.iter().map(|i| i.requests).collect();
        assert_eq!(requests, [2, 1, 1]);
        let text = report.text();
        assert!(text.contains("fleet (sum of 2):   lookups 4"), "{text}");
        assert!(text.contains("shared 2, coalesced 0, miss 2)"), "{text}");
        assert!(
            text.contains("shared store:       errors 2  up 2/2"),
            "{text}"
        );
        assert!(
            text.contains("http://c: requests 1  success 1  stats unavailable: connection refused"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["server"]["hits_shared"], 2);
        assert!(json["server"].get("coalesced_remote").is_none());
        assert_eq!(json["instances"][2]["stats_error"], "connection refused");
        assert_eq!(json["instances"][2]["delta"], Value::Null);
    }

    #[test]
    fn one_silent_server_is_named() {
        let report = Report::new(
            1,
            Duration::from_secs(1),
            &[sample(0, "miss")],
            vec![("http://a".into(), Err("HTTP 401".into()))],
        );
        assert!(report.server.is_none());
        let text = report.text();
        assert!(
            text.contains("server (delta):     /api/v1/stats of http://a did not answer: HTTP 401"),
            "{text}"
        );
    }
}
