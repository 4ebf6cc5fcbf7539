//! The instances a load test spreads its requests over, and their
//! `/api/v1/stats`: which instance each request goes to (round robin over
//! the `--url`s), reading every instance's stats, and the generic arithmetic
//! on stats documents: one instance's delta over the run (after minus
//! before) and the field-wise sum of the deltas over the fleet.
//!
//! The arithmetic walks the JSON rather than naming fields, so counters the
//! server gains later are carried along: numbers are subtracted and summed,
//! booleans count the instances where they are true (in a sum), text stays
//! when every instance has the same, and ratios
//! (`hit_rate`, `*_rate`, `*_percent`, `avg_*`, percentiles like `p99_ms`)
//! are never subtracted or summed: `hit_rate` is recomputed from `lookups`
//! and `misses` of the same object, the others are left out.

use std::time::Duration;

use serde_json::{Map, Number, Value};

/// How long one `/api/v1/stats` read may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// The distinct instances of a run and the instance of each request.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// Distinct base URLs (no trailing `/`), in the order first given.
    pub urls: Vec<String>,
    /// For each `--url` as given, its index in `urls`.
    targets: Vec<usize>,
}

impl Fleet {
    /// The fleet of the `--url`s given. A URL given twice gets twice the
    /// requests, but its stats are read (and counted) once.
    pub fn new(given: &[String]) -> Result<Fleet, String> {
        let mut urls: Vec<String> = Vec::new();
        let mut targets = Vec::new();
        for url in given {
            let url = url.trim().trim_end_matches('/');
            if url.is_empty() {
                return Err("an empty --url".to_owned());
            }
            let index = match urls.iter().position(|u| u == url) {
                Some(index) => index,
                None => {
                    urls.push(url.to_owned());
                    urls.len() - 1
                }
            };
            targets.push(index);
        }
        if targets.is_empty() {
            return Err("no --url given".to_owned());
        }
        Ok(Fleet { urls, targets })
    }

    /// The instance (index in `urls`) that request number `request` goes to:
    /// the `--url` number `request % n`.
    pub fn instance_of(&self, request: usize) -> usize {
        self.targets[request % self.targets.len()]
    }
}

/// `GET {base}/api/v1/stats`, or why it could not be read.
pub async fn read_stats(
    client: &reqwest::Client,
    base: &str,
    api_key: Option<&str>,
) -> Result<Value, String> {
    let mut request = client
        .get(format!("{base}/api/v1/stats"))
        .timeout(STATS_TIMEOUT);
    if let Some(key) = api_key {
        request = request.header("X-API-Key", key);
    }
    let response = request.send().await.map_err(|e| with_causes(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    let stats: Value = response
        .json()
        .await
        .map_err(|e| format!("not JSON: {e}"))?;
    if stats.is_object() {
        Ok(stats)
    } else {
        Err("not a JSON object".to_owned())
    }
}

/// An error and its causes, `: `-separated (reqwest's own message does not
/// say why a connection failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = e.source();
    }
    text
}

/// Every instance's stats, in the order of `fleet.urls`.
pub async fn read_all(
    client: &reqwest::Client,
    fleet: &Fleet,
    api_key: Option<&str>,
) -> Vec<Result<Value, String>> {
    futures::future::join_all(fleet.urls.iter().map(|u| read_stats(client, u, api_key))).await
}

/// Whether a field is a ratio or an average: never subtracted or summed.
fn is_ratio(name: &str) -> bool {
    let percentile = name
        .strip_prefix('p')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(digits, _)| {
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        });
    name.ends_with("_rate") || name.ends_with("_percent") || name.starts_with("avg_") || percentile
}

fn float(x: f64) -> Value {
    Number::from_f64((x * 1e6).round() / 1e6).map_or(Value::Null, Value::Number)
}

fn sub(after: &Number, before: &Number) -> Value {
    if let (Some(a), Some(b)) = (after.as_u64(), before.as_u64()) {
        if a >= b {
            return (a - b).into();
        }
    }
    if let (Some(a), Some(b)) = (after.as_i64(), before.as_i64()) {
        if let Some(d) = a.checked_sub(b) {
            return d.into();
        }
    }
    float(after.as_f64().unwrap_or(0.0) - before.as_f64().unwrap_or(0.0))
}

fn add(a: &Number, b: &Number) -> Value {
    if let Some(s) = a
        .as_u64()
        .zip(b.as_u64())
        .and_then(|(a, b)| a.checked_add(b))
    {
        return s.into();
    }
    if let Some(s) = a
        .as_i64()
        .zip(b.as_i64())
        .and_then(|(a, b)| a.checked_add(b))
    {
        return s.into();
    }
    float(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))
}

fn delta_walk(before: &Value, after: &Value) -> Value {
    match (before, after) {
        (_, Value::Object(a)) => Value::Object(
            a.iter()
                .filter(|(k, _)| *k == "hit_rate" || !is_ratio(k))
                .map(|(k, v)| {
                    // A placeholder, filled in by `recompute_rates`.
                    let d = if k == "hit_rate" {
                        Value::Null
                    } else {
                        delta_walk(before.get(k).unwrap_or(&Value::Null), v)
                    };
                    (k.clone(), d)
                })
                .collect(),
        ),
        (Value::Number(b), Value::Number(a)) => sub(a, b),
        // A counter that was not there before started from zero.
        (_, after) => after.clone(),
    }
}

/// Sets every `hit_rate` from `lookups` and `misses` of the same object
/// (hits are lookups that were not misses), or removes it without them.
fn recompute_rates(value: &mut Value) {
    let Value::Object(map) = value else { return };
    if map.contains_key("hit_rate") {
        let count = |k: &str| map.get(k).and_then(Value::as_u64);
        match (count("lookups"), count("misses")) {
            (Some(lookups), Some(misses)) => {
                let rate = if lookups == 0 {
                    0.0
                } else {
                    lookups.saturating_sub(misses) as f64 / lookups as f64
                };
                map.insert("hit_rate".to_owned(), float((rate * 1e4).round() / 1e4));
            }
            _ => {
                map.remove("hit_rate");
            }
        }
    }
    map.values_mut().for_each(recompute_rates);
}

/// One instance's stats over the run: every number after minus before (a
/// field missing before counts from zero; other values as they are after),
/// ratios and averages left out but `hit_rate`, recomputed.
pub fn delta(before: &Value, after: &Value) -> Value {
    let mut d = delta_walk(before, after);
    recompute_rates(&mut d);
    d
}

/// `value` with every boolean as 0 or 1, to start a sum with.
fn countable(value: &Value) -> Value {
    match value {
        Value::Bool(b) => u64::from(*b).into(),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), countable(v))).collect())
        }
        other => other.clone(),
    }
}

fn add_into(sum: &mut Value, value: &Value) {
    match (sum, value) {
        (Value::Object(s), Value::Object(v)) => {
            for (k, x) in v {
                match s.get_mut(k) {
                    Some(acc) => add_into(acc, x),
                    None => {
                        s.insert(k.clone(), countable(x));
                    }
                }
            }
        }
        (Value::Number(s), Value::Number(x)) => {
            let total = add(s, x);
            if let Value::Number(n) = total {
                *s = n;
            }
        }
        (Value::Number(s), Value::Bool(b)) => {
            let total = add(s, &Number::from(u64::from(*b)));
            if let Value::Number(n) = total {
                *s = n;
            }
        }
        // Text that differs between instances means nothing fleet-wide.
        (sum @ Value::String(_), x) if sum != x => *sum = Value::Null,
        // Same text, arrays, or a field whose kind differs between
        // instances: the first instance's value stays.
        _ => {}
    }
}

/// The field-wise sum of instance deltas: numbers added, booleans counted
/// (the number of instances where true), text kept when the same on every
/// instance (else null), `hit_rate` recomputed from the summed `lookups`
/// and `misses`.
pub fn sum<'a>(deltas: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut total = Value::Object(Map::new());
    for d in deltas {
        add_into(&mut total, d);
    }
    recompute_rates(&mut total);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(lookups: u64, misses: u64, shared: u64, up: bool) -> Value {
        json!({
            "cache": {"lookups": lookups, "misses": misses, "hits_memory": lookups - misses - shared,
                      "hits_shared": shared, "hit_rate": 0.5, "memory": {"entries": misses}},
            "conversions": {"completed": misses, "avg_ms": 12.5, "p99_ms": 30.0, "utilization_percent": 50.0},
            "shared": {"enabled": true, "up": up, "errors": 1, "bytes_written": 100 * misses,
                       "url": format!("redis://{lookups}")},
            "upstream": {"cache": {"lookups": 0, "misses": 0, "hit_rate": 0.0}},
            "uptime_seconds": 7,
        })
    }

    #[test]
    fn round_robin_over_the_given_urls_reads_each_instance_once() {
        let given = ["http://a/".to_owned(), "http://b".into(), "http://a".into()];
        let fleet = Fleet::new(&given).unwrap();
        assert_eq!(fleet.urls, ["http://a", "http://b"]);
        let seq: Vec<usize> = (0..6).map(|i| fleet.instance_of(i)).collect();
        assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
        assert!(Fleet::new(&[]).is_err());
        assert!(Fleet::new(&[" / ".to_owned()]).is_err());
    }

    #[test]
    fn delta_subtracts_numbers_and_recomputes_the_hit_rate() {
        let d = delta(&stats(10, 4, 0, true), &stats(30, 6, 5, false));
        assert_eq!(d["cache"]["lookups"], 20);
        assert_eq!(d["cache"]["misses"], 2);
        assert_eq!(d["cache"]["hits_shared"], 5);
        assert_eq!(d["cache"]["hit_rate"], 0.9);
        assert_eq!(d["cache"]["memory"]["entries"], 2);
        assert_eq!(d["shared"]["up"], false);
        assert_eq!(d["shared"]["errors"], 0);
        assert_eq!(d["upstream"]["cache"]["hit_rate"], 0.0);
        let conversions = d["conversions"].as_object().unwrap();
        assert_eq!(conversions.keys().collect::<Vec<_>>(), ["completed"]);
        // A counter new since `before` counts from zero; a gauge may go down.
        let d = delta(
            &json!({"cache": {}}),
            &json!({"cache": {"hits_shared": 3}, "x": -1}),
        );
        assert_eq!(d["cache"]["hits_shared"], 3);
        assert_eq!(delta(&json!({"g": 5}), &json!({"g": 2}))["g"], -3);
    }

    #[test]
    fn sum_adds_fields_counts_booleans_and_recomputes_the_hit_rate() {
        let a = delta(&stats(0, 0, 0, true), &stats(10, 5, 0, true));
        let b = delta(&stats(0, 0, 0, true), &stats(30, 1, 9, false));
        let mut c = b.clone();
        c["cache"].as_object_mut().unwrap().remove("hits_shared");
        c["cache"]["coalesced_remote"] = json!(2);
        let s = sum([&a, &b, &c]);
        assert_eq!(s["cache"]["lookups"], 70);
        assert_eq!(s["cache"]["misses"], 7);
        assert_eq!(s["cache"]["hits_shared"], 9);
        assert_eq!(s["cache"]["coalesced_remote"], 2);
        assert_eq!(s["cache"]["hit_rate"], 0.9);
        assert_eq!(s["shared"]["enabled"], 3);
        assert_eq!(s["shared"]["up"], 1);
        assert_eq!(s["shared"]["bytes_written"], 700);
        assert_eq!(s["shared"]["url"], Value::Null);
        assert_eq!(sum([&b, &c])["shared"]["url"], "redis://30");
        assert_eq!(s["uptime_seconds"], 0);
        assert_eq!(sum([]), json!({}));
    }

    #[test]
    fn ratios_are_recognised_by_name() {
        for name in [
            "hit_rate",
            "utilization_percent",
            "avg_ms",
            "p50_ms",
            "p999_ms",
        ] {
            assert!(is_ratio(name), "{name}");
        }
        for name in ["misses", "pending", "p_value", "rate", "bytes_read"] {
            assert!(!is_ratio(name), "{name}");
        }
    }
}
