//! The stats history: every `console.history_interval_seconds` the sampler
//! ([`sample`]) takes the object `GET /api/v1/stats` serves and pushes it
//! into a ring buffer of `console.history_points` points, which
//! `GET /api/v1/stats/history` ([`history`]) hands back oldest first. The
//! buffer's slots are allocated once and each point is kept as its JSON
//! text, so its memory is bounded by its size, not by the uptime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::monitor::stats_snapshot;
use crate::http::AppState;

/// One point: when it was taken and the stats object as JSON text.
#[derive(Debug, Clone)]
struct Point {
    unix_seconds: f64,
    stats: Arc<str>,
}

/// A fixed-size ring buffer of stats snapshots; clones share it.
#[derive(Debug, Clone)]
pub struct History {
    points: Arc<Mutex<VecDeque<Point>>>,
    capacity: usize,
    interval: Duration,
}

impl History {
    /// An empty history of at most `capacity` points taken every
    /// `interval` (0 points: none are kept).
    pub fn new(capacity: usize, interval: Duration) -> History {
        History {
            points: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
            interval,
        }
    }

    /// The most points kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The time between two points.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Points held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the snapshot `stats` taken at `unix_seconds`, dropping the
    /// oldest point when the buffer is full.
    pub fn push(&self, unix_seconds: f64, stats: &Value) {
        if self.capacity == 0 {
            return;
        }
        let point = Point {
            unix_seconds: (unix_seconds * 1000.0).round() / 1000.0,
            stats: stats.to_string().into(),
        };
        let mut points = self.lock();
        while points.len() >= self.capacity {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// Bytes the buffer holds: its slots (allocated once) and the text of
    /// its points.
    pub fn retained_bytes(&self) -> usize {
        retained_bytes(&self.lock())
    }

    /// The history as `GET /api/v1/stats/history` serves it, with only the
    /// points taken after `since` (Unix seconds) when given.
    pub fn to_json(&self, since: Option<f64>) -> String {
        // Copied out (reference counts only), so that the text is built
        // without holding the lock; `retained` is of the same moment.
        let (points, retained) = {
            let held = self.lock();
            let points: Vec<Point> = held
                .iter()
                .filter(|p| since.is_none_or(|s| p.unix_seconds > s))
                .cloned()
                .collect();
            (points, retained_bytes(&held))
        };
        let text_len: usize = points.iter().map(|p| p.stats.len() + 48).sum();
        let mut out = String::with_capacity(text_len + 128);
        out.push_str(&format!(
            "{{\"interval_seconds\":{},\"capacity\":{},\"retained_bytes\":{},\"points\":[",
            self.interval.as_secs(),
            self.capacity,
            retained
        ));
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Both parts are JSON already: a finite number and an object.
            out.push_str(&format!(
                "{{\"unix_seconds\":{},\"stats\":{}}}",
                Value::from(p.unix_seconds),
                p.stats
            ));
        }
        out.push_str("]}");
        out
    }
}

/// The slots of `points` (allocated once) and the text of its points.
fn retained_bytes(points: &VecDeque<Point>) -> usize {
    points.capacity() * std::mem::size_of::<Point>()
        + points.iter().map(|p| p.stats.len()).sum::<usize>()
}

/// Now, in Unix seconds.
fn now_unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Takes a stats snapshot into `app.history` at once and then every
/// interval, until dropped (the server drops it when it stops serving).
/// With no history kept, it waits forever without sampling.
pub async fn sample(app: AppState) {
    if app.history.capacity() == 0 {
        return std::future::pending().await;
    }
    let mut ticks = tokio::time::interval(app.history.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let stats = stats_snapshot(&app).await;
        app.history.push(now_unix_seconds(), &stats);
    }
}

/// `GET /api/v1/stats/history[?since=UNIX_SECONDS]`: the stats history,
/// oldest first; with `since`, only the points taken after it.
pub async fn history(
    State(app): State<AppState>,
    pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = pairs.map_err(|e| ApiError::bad_parameter(e.body_text()))?;
    let mut since = None;
    for (name, value) in pairs {
        if name != "since" {
            return Err(ApiError::bad_parameter(format!(
                "unknown query parameter `{name}`; only `since` is accepted"
            )));
        }
        if since.is_some() {
            return Err(ApiError::bad_parameter("`since` is given twice"));
        }
        let parsed = value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "`since` must be a number of Unix seconds, got `{value}`"
                ))
            })?;
        since = Some(parsed);
    }
    let mut response = app.history.to_json(since).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_newest_points_oldest_first() {
        let h = History::new(3, Duration::from_secs(5));
        for i in 0..5 {
            h.push(f64::from(i), &json!({"n": i}));
        }
        let v: Value = serde_json::from_str(&h.to_json(None)).unwrap();
        let ns: Vec<i64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["stats"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(ns, [2, 3, 4]);
        assert_eq!(v["interval_seconds"], 5);
        assert_eq!(v["capacity"], 3);
        let since: Value = serde_json::from_str(&h.to_json(Some(3.0))).unwrap();
        assert_eq!(since["points"].as_array().unwrap().len(), 1);
        assert_eq!(since["points"][0]["unix_seconds"], 4.0);
    }

    #[test]
    fn slots_are_allocated_once() {
        let h = History::new(4, Duration::from_secs(1));
        let slots = h.lock().capacity();
        for i in 0..100 {
            h.push(f64::from(i), &json!({"n": 1}));
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.lock().capacity(), slots);
    }

    #[test]
    fn zero_points_keeps_nothing() {
        let h = History::new(0, Duration::from_secs(5));
        h.push(1.0, &json!({}));
        assert!(h.is_empty());
        assert_eq!(h.to_json(None).matches("\"points\":[]").count(), 1);
    }
}
