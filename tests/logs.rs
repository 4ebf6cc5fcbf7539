//! The real binary's text log when standard error is not a terminal (here a
//! pipe, as for a file): no ANSI escape codes, even with a colour-capable
//! `TERM`, and request durations with at most 2 decimals.

mod support;

use std::time::{Duration, Instant};

use support::http::Api as _;
use support::process::{store_dir, ServerProcess};
use support::server::data_dir;

#[tokio::test]
async fn text_log_off_a_terminal_has_no_escape_codes_and_short_durations() {
    let dir = data_dir();
    let server = ServerProcess::start_with_log_format(
        &store_dir(dir.path()),
        &[
            // What a terminal would have: colour is refused for the pipe alone.
            ("TERM", "xterm-256color".into()),
            ("NO_COLOR", String::new()),
        ],
        "text",
    );
    let client = reqwest::Client::new();
    assert_eq!(server.health(&client).await, 200);
    server.still_serves(&client, 7).await;

    // The request lines are written after the answers; wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let request_lines = || {
        server
            .log_text()
            .lines()
            .filter(|l| l.contains(" ms="))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    while request_lines().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no request lines; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let log = server.log_text();
    assert!(!log.contains('\x1b'), "escape codes in the log:\n{log}");
    assert!(log.contains("opusgate listening addr="), "{log}");
    for line in request_lines() {
        // Written directly by the binary, in tracing-subscriber's text layout.
        assert!(
            line.contains("  INFO opusgate::request: request method=")
                && line.contains(" route=\"")
                && line.contains(" status="),
            "{line}"
        );
        let ms = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("ms="))
            .unwrap_or_else(|| panic!("no ms= field: {line}"));
        let value: f64 = ms.parse().unwrap_or_else(|_| panic!("ms={ms}: {line}"));
        assert!(value >= 0.0, "{line}");
        let decimals = ms.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 2, "ms={ms} has {decimals} decimals: {line}");
    }
}
