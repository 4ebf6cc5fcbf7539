//! `/metrics` hygiene, on the real binary (a fresh process, so a fresh
//! recorder: in-process servers of one test binary share theirs): every
//! family has HELP and TYPE, counters and only counters end in `_total`,
//! the series dashboards and alerts read exist at 0 from start-up, the
//! `process_*` metrics are there, and one conversion moves the right
//! counters. `promtool check metrics` runs on the same text in `.ci/run`.

mod support;

use std::collections::{BTreeMap, HashMap};

use opusgate_cache::Outcome;
use support::clips::{clip, fresh_wav};
use support::http::Api as _;
use support::process::{store_dir, ServerProcess};

/// One sample line: its name (with a histogram's suffix), labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: its HELP text, TYPE and samples.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

/// The exposition text by family, failing on anything malformed.
fn parse(text: &str) -> HashMap<String, Family> {
    let mut families: HashMap<String, Family> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (what, name, rest) = (
                words.next().unwrap_or(""),
                words
                    .next()
                    .unwrap_or_else(|| panic!("bad comment: {line}")),
                words.next().unwrap_or(""),
            );
            let family = families.entry(name.to_owned()).or_default();
            match what {
                "HELP" => {
                    assert!(family.help.is_none(), "two HELP lines: {line}");
                    assert!(!rest.trim().is_empty(), "empty HELP: {line}");
                    family.help = Some(rest.to_owned());
                }
                "TYPE" => {
                    assert!(family.kind.is_none(), "two TYPE lines: {line}");
                    family.kind = Some(rest.to_owned());
                }
                _ => panic!("bad comment: {line}"),
            }
            continue;
        }
        let sample = parse_sample(line);
        let family = family_of(&families, &sample.name)
            .unwrap_or_else(|| panic!("a sample before its TYPE line: {line}"));
        families.get_mut(&family).unwrap().samples.push(sample);
    }
    families
}

/// The family a sample belongs to: its own name, or a histogram's with
/// `_bucket`, `_sum` or `_count` taken off.
fn family_of(families: &HashMap<String, Family>, sample: &str) -> Option<String> {
    if families.get(sample).is_some_and(|f| f.kind.is_some()) {
        return Some(sample.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = sample.strip_suffix(suffix)?;
        let kind = families.get(base)?.kind.as_deref()?;
        matches!(kind, "histogram" | "summary").then(|| base.to_owned())
    })
}

/// `name{a="x",b="y"} value`.
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("bad line: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (
            name,
            parse_labels(
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}")),
                line,
            ),
        ),
        None => (series, BTreeMap::new()),
    };
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad name: {line}"
    );
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// `a="x",b="y"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels: {line}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        assert!(
            labels.insert(key.to_owned(), value).is_none(),
            "label {key} twice: {line}"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// The format rules every scrape keeps: HELP and TYPE on every family,
/// `_total` on counters and only on counters.
fn assert_hygiene(families: &HashMap<String, Family>) {
    assert!(!families.is_empty(), "no metrics at all");
    for (name, family) in families {
        let kind = family
            .kind
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert!(family.help.is_some(), "{name} has no HELP");
        assert!(!family.samples.is_empty(), "{name} has no samples");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
            "gauge" | "histogram" => {
                assert!(!name.ends_with("_total"), "{kind} {name} is named _total")
            }
            other => panic!("{name} has an unexpected type {other}"),
        }
        for sample in &family.samples {
            if kind == "counter" {
                assert!(sample.value >= 0.0, "negative counter: {sample:?}");
            }
        }
    }
}

/// The value of the series `name{labels}` (exactly those labels).
fn value(families: &HashMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let family = family_of(families, name).unwrap_or_else(|| panic!("/metrics lacks {name}"));
    families[&family]
        .samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("/metrics lacks {name}{labels:?}"))
        .value
}

fn kind<'a>(families: &'a HashMap<String, Family>, name: &str) -> &'a str {
    families
        .get(name)
        .and_then(|f| f.kind.as_deref())
        .unwrap_or_else(|| panic!("/metrics lacks the family {name}"))
}

async fn scrape(server: &ServerProcess, client: &reqwest::Client) -> HashMap<String, Family> {
    parse(&server.metrics(client).await)
}

/// Labelled counters a fresh instance has at 0: (name, label, its values).
const AT_ZERO: &[(&str, &str, &[&str])] = &[
    ("opusgate_conversions_total", "result", &["ok", "error"]),
    (
        "opusgate_upstream_calls_total",
        "result",
        &["ok", "status", "timeout", "unavailable"],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_exposes_every_series_described_and_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&store_dir(dir.path()), &[]);
    let client = reqwest::Client::new();

    let fresh = scrape(&server, &client).await;
    assert_hygiene(&fresh);

    for outcome in Outcome::ALL {
        let outcome = [("outcome", outcome.as_str())];
        assert_eq!(value(&fresh, "opusgate_cache_lookups_total", &outcome), 0.0);
        assert_eq!(
            value(&fresh, "opusgate_upstream_cache_total", &outcome),
            0.0
        );
    }
    for (name, label, values) in AT_ZERO {
        for v in *values {
            assert_eq!(value(&fresh, name, &[(label, v)]), 0.0, "{name}{{{v}}}");
        }
    }
    for name in [
        "opusgate_conversions_rejected_total",
        "opusgate_streams_repaired_total",
        "opusgate_conversions_in_progress",
        "opusgate_conversions_queued",
        "opusgate_conversion_duration_seconds_count",
        "opusgate_upstream_duration_seconds_count",
        "opusgate_shared_up",
    ] {
        assert_eq!(value(&fresh, name, &[]), 0.0, "{name}");
    }
    for (name, expected) in [
        ("opusgate_cache_lookups_total", "counter"),
        ("opusgate_upstream_cache_total", "counter"),
        ("opusgate_conversions_total", "counter"),
        ("opusgate_conversions_rejected_total", "counter"),
        ("opusgate_streams_repaired_total", "counter"),
        ("opusgate_upstream_calls_total", "counter"),
        ("opusgate_conversions_in_progress", "gauge"),
        ("opusgate_conversions_queued", "gauge"),
        ("opusgate_conversion_duration_seconds", "histogram"),
        ("opusgate_upstream_duration_seconds", "histogram"),
        ("opusgate_store_bytes", "gauge"),
        ("opusgate_store_entries", "gauge"),
        ("opusgate_store_capacity_bytes", "gauge"),
        ("opusgate_store_size_on_disk_bytes", "gauge"),
        ("opusgate_store_evictions_total", "counter"),
        ("opusgate_store_corrupt_records_total", "counter"),
        ("opusgate_store_disk_write_failures_total", "counter"),
        ("opusgate_shared_up", "gauge"),
        ("opusgate_shared_events_total", "counter"),
        ("opusgate_shared_bytes_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(kind(&fresh, name), expected, "the type of {name}");
    }
    // The names they had as gauges are gone.
    for old in [
        "opusgate_store_evictions",
        "opusgate_store_corrupt_records",
        "opusgate_store_disk_write_failures",
        "opusgate_shared_events",
        "opusgate_shared_bytes",
    ] {
        assert!(!fresh.contains_key(old), "{old} is still exposed");
    }
    // Both stores, by tier.
    for store in ["audio", "upstream"] {
        for tier in ["memory", "disk"] {
            let labels = [("store", store), ("tier", tier)];
            assert!(value(&fresh, "opusgate_store_capacity_bytes", &labels) > 0.0);
            assert_eq!(value(&fresh, "opusgate_store_entries", &labels), 0.0);
            assert_eq!(
                value(&fresh, "opusgate_store_evictions_total", &labels),
                0.0
            );
        }
        assert_eq!(
            value(
                &fresh,
                "opusgate_store_corrupt_records_total",
                &[("store", store)]
            ),
            0.0
        );
    }
    let rss = value(&fresh, "process_resident_memory_bytes", &[]);
    assert!(rss > 1e6, "process_resident_memory_bytes {rss}");
    assert!(value(&fresh, "process_open_fds", &[]) > 0.0);
    assert!(value(&fresh, "process_start_time_seconds", &[]) > 1.6e9);

    // One conversion, then the same upload again.
    let upload = clip(1.0, 61);
    for expected in ["miss", "hit-memory"] {
        let (status, cache, body) = server.convert(&client, &upload).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(cache, expected);
        assert_eq!(body, fresh_wav(&upload));
    }
    let after = scrape(&server, &client).await;
    assert_hygiene(&after);
    for outcome in Outcome::ALL {
        let expected = match outcome {
            Outcome::Miss | Outcome::HitMemory => 1.0,
            _ => 0.0,
        };
        assert_eq!(
            value(
                &after,
                "opusgate_cache_lookups_total",
                &[("outcome", outcome.as_str())]
            ),
            expected,
            "lookups {outcome}"
        );
    }
    assert_eq!(
        value(&after, "opusgate_conversions_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        value(&after, "opusgate_conversions_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(
        value(&after, "opusgate_conversion_duration_seconds_count", &[]),
        1.0
    );
    // An intact stream is not a repaired one.
    assert_eq!(value(&after, "opusgate_streams_repaired_total", &[]), 0.0);
    assert_eq!(
        value(
            &after,
            "opusgate_store_entries",
            &[("store", "audio"), ("tier", "memory")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "opusgate_http_requests_total",
            &[("route", "/api/v1/convert"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(kind(&after, "opusgate_http_requests_total"), "counter");
    assert_eq!(
        kind(&after, "opusgate_http_request_duration_seconds"),
        "histogram"
    );
}
