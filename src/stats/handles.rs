//! Metric handles resolved once instead of on every request: the
//! per-request HTTP series (`opusgate_http_requests_total` by route and
//! status, `opusgate_http_request_duration_seconds` by route), the audio
//! store's lookups by outcome, and the upload and answer budgets' gauges.
//!
//! `metrics::counter!` and its kin build a key (with owned `String` labels,
//! allocated, for the HTTP series), hash it and look it up in the
//! recorder's registry every time they run; on the memory-hit path that was
//! a measurable share of a request's CPU. Here:
//! - each thread keeps the handles of the (route, status) pairs it has
//!   seen: the first request of a pair registers its series exactly as the
//!   macros do (same names, same labels), every later one is a lookup in a
//!   small thread-local table. The table is bounded: routes are the
//!   router's own matched paths (plus `unmatched`), statuses three digits;
//! - the lookups' counters (one per outcome, all registered at start-up)
//!   and the budgets' gauges are resolved once per process.
//!
//! Handles are resolved only once the process's recorder is installed
//! ([`mark_recorder_installed`], from `http::metrics_handle`); until then
//! (a `Service` used on its own, in tests) every call goes through the
//! macros, as before, so that no handle of the no-op recorder is kept. The
//! recorder is never configured to forget idle series, so a handle stays
//! the series' own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use opusgate_cache::Outcome;

use super::names;

/// The handles of one route's series.
struct RouteSeries {
    duration: Histogram,
    /// By status code; a route answers a handful of them.
    by_status: Vec<(u16, Counter)>,
}

impl RouteSeries {
    fn new(route: &str) -> RouteSeries {
        RouteSeries {
            duration: metrics::histogram!(names::HTTP_DURATION, "route" => route.to_owned()),
            by_status: Vec::new(),
        }
    }

    fn requests(&mut self, route: &str, status: u16) -> &Counter {
        let at = match self.by_status.iter().position(|(s, _)| *s == status) {
            Some(at) => at,
            None => {
                let counter = metrics::counter!(
                    names::HTTP_REQUESTS,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                );
                self.by_status.push((status, counter));
                self.by_status.len() - 1
            }
        };
        &self.by_status[at].1
    }
}

thread_local! {
    /// This thread's handles, by route.
    static SERIES: RefCell<HashMap<Box<str>, RouteSeries>> = RefCell::new(HashMap::new());
}

/// Whether the process's recorder is installed.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Marks the process's recorder as installed: from now on handles are
/// resolved once and kept.
pub fn mark_recorder_installed() {
    INSTALLED.store(true, Ordering::Release);
}

fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// The gauges without labels kept as handles by [`with_gauge`].
const KEPT_GAUGES: [&str; 2] = [names::UPLOAD_INFLIGHT, names::ANSWER_INFLIGHT];

/// The handles resolved once per process.
struct Kept {
    /// `opusgate_cache_lookups_total`, by outcome in `Outcome::ALL`'s order.
    lookups: [Counter; Outcome::ALL.len()],
    /// [`KEPT_GAUGES`], in order.
    gauges: [Gauge; KEPT_GAUGES.len()],
}

/// The kept handles, once the recorder is installed.
fn kept() -> Option<&'static Kept> {
    static KEPT: OnceLock<Kept> = OnceLock::new();
    installed().then(|| {
        KEPT.get_or_init(|| Kept {
            lookups: Outcome::ALL.map(
                |outcome| metrics::counter!(names::CACHE_LOOKUPS, "outcome" => outcome.as_str()),
            ),
            gauges: KEPT_GAUGES.map(|name| metrics::gauge!(name)),
        })
    })
}

/// Counts one audio store lookup answered with `outcome`
/// (`opusgate_cache_lookups_total`).
pub fn count_cache_lookup(outcome: Outcome) {
    let at = Outcome::ALL.iter().position(|o| *o == outcome);
    match (kept(), at) {
        (Some(kept), Some(at)) => kept.lookups[at].increment(1),
        _ => metrics::counter!(names::CACHE_LOOKUPS, "outcome" => outcome.as_str()).increment(1),
    }
}

/// Runs `f` on the gauge `name` (no labels): a kept handle for the
/// budgets' gauges, else the facade's lookup.
pub fn with_gauge(name: &'static str, f: impl FnOnce(&Gauge)) {
    let at = KEPT_GAUGES.iter().position(|kept| *kept == name);
    match (kept(), at) {
        (Some(kept), Some(at)) => f(&kept.gauges[at]),
        _ => f(&metrics::gauge!(name)),
    }
}

/// Counts one HTTP request of `route` (its matched path, or `unmatched`)
/// answered with `status`, and records how long it took.
pub fn record_http_request(route: &str, status: u16, took: Duration) {
    let cached = installed()
        && SERIES.try_with(|series| {
            // Never contended (one thread); a failed borrow is counted uncached.
            let Ok(mut series) = series.try_borrow_mut() else {
                return false;
            };
            let route_series = match series.get_mut(route) {
                Some(found) => found,
                None => series
                    .entry(Box::from(route))
                    .or_insert_with(|| RouteSeries::new(route)),
            };
            route_series.requests(route, status).increment(1);
            route_series.duration.record(took.as_secs_f64());
            true
        }) == Ok(true);
    // Before the recorder, or a thread tearing down its locals: the
    // macros, as before.
    if !cached {
        metrics::counter!(
            names::HTTP_REQUESTS,
            "route" => route.to_owned(),
            "status" => status.to_string()
        )
        .increment(1);
        metrics::histogram!(names::HTTP_DURATION, "route" => route.to_owned())
            .record(took.as_secs_f64());
    }
}
