//! The console tests' page driving: the server and key they use, a load
//! for the charts, and in the browser: waiting on a script, reading and
//! clicking elements, the hit rate shown, Convert and its answer, playing
//! the WAV, the key typed in, console and origin checks, Tab, screenshots.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use crate::support::browser::{Browser, ConsoleEntry};
use crate::support::http::Api as _;
use crate::support::server::{config_in, TestServer};

pub const KEY: &str = "console-test-key";

/// A client that sends the key, as the page does.
pub fn keyed_client() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(KEY));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A server that asks for [`KEY`], with a history point every second
/// (`points` of them kept).
pub async fn keyed_server(dir: &Path, points: usize) -> TestServer {
    let mut config = config_in(dir);
    config.auth.api_keys = vec![KEY.into()];
    config.console.history_interval_seconds = 1;
    config.console.history_points = points;
    TestServer::start(config).await
}

/// Uploads from `clips` in turn (each new one a miss, then hits) until
/// `stop` is set; the figures and charts then have something to show.
pub async fn load(base: String, clips: Vec<Vec<u8>>, stop: Arc<AtomicBool>) {
    let http = keyed_client();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let upload = clips[(i * 7 / 5) % clips.len()].clone();
        let r = http
            .post(format!("{base}/api/v1/convert"))
            .body(upload)
            .send()
            .await
            .expect("load request");
        assert_eq!(r.status(), 200);
        i += 1;
        tokio::time::sleep(Duration::from_millis(40 + (i as u64 % 5) * 30)).await;
    }
}

/// Waits until the history holds `n` points.
pub async fn wait_history_points(server: &TestServer, n: usize) {
    let http = keyed_client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let history: Value = http
            .get(server.url("/api/v1/stats/history"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if history["points"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the history never held {n} points"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- In a browser ------------------------------------------------------

/// Text with no-break spaces made plain, as a person reads it.
pub fn plain(text: &str) -> String {
    text.replace(['\u{a0}', '\u{202f}'], " ")
}

/// Runs `script` (a function body that `return`s a value) until it returns
/// something truthy, and returns that; fails the test after 30 s.
pub async fn wait_js(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = client.execute(script, vec![]).await.expect(what);
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the element `id`.
pub async fn text(client: &Client, id: &str) -> String {
    let element = client.find(Locator::Id(id)).await.expect(id);
    plain(&element.text().await.expect(id))
}

pub async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect(css);
}

/// What the console shows for the hit rate of `stats`: a percentage with
/// one decimal, or a dash before the first lookup.
pub fn shown_rate(stats: &Value) -> String {
    match stats["cache"]["lookups"].as_u64() {
        Some(0) => "–".into(),
        _ => format!(
            "{:.1} %",
            stats["cache"]["hit_rate"].as_f64().unwrap_or(-1.0) * 100.0
        ),
    }
}

/// Waits until the page's hit rate is the one `/api/v1/stats` gives now.
pub async fn wait_hit_rate_matches(client: &Client, server: &TestServer) -> f64 {
    let http = keyed_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.stats(&http).await;
        let rate = stats["cache"]["hit_rate"].as_f64().expect("hit_rate");
        let element = client.find(Locator::Id("hit-rate")).await.unwrap();
        let value = element
            .attr("data-value")
            .await
            .unwrap()
            .unwrap_or_default();
        let shown = plain(&element.text().await.unwrap());
        if value.parse::<f64>().ok() == Some(rate) && shown == shown_rate(&stats) {
            return rate;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows {shown:?} ({value}), /api/v1/stats says {rate}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Presses Convert and waits for its answer: (status line, `X-Cache`).
pub async fn convert_in_page(client: &Client) -> (String, String) {
    // Marks the previous answer, so that the wait sees the new one.
    client
        .execute(
            "document.getElementById('res-status').textContent = '';",
            vec![],
        )
        .await
        .unwrap();
    click(client, "#convert").await;
    wait_js(
        client,
        "the answer to Convert",
        "const b = document.getElementById('convert'); \
         return !b.disabled && document.getElementById('res-status').textContent;",
    )
    .await;
    (
        text(client, "res-status").await,
        text(client, "res-cache").await,
    )
}

/// Plays the converted WAV in the page's `<audio>`: (its duration in ms,
/// the `X-Audio-Duration-Ms` the page received), once it has played.
pub async fn play(client: &Client) -> (f64, f64) {
    let played = client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const a = document.getElementById('player');
               const finish = () => done({ duration: a.duration, time: a.currentTime, error: a.error && a.error.message });
               a.muted = true;
               a.addEventListener('timeupdate', () => { if (a.currentTime > 0) finish(); });
               a.addEventListener('error', finish);
               a.play().catch((e) => done({ error: String(e) }));"#,
            vec![],
        )
        .await
        .expect("playing the WAV");
    assert!(played["error"].is_null(), "the WAV did not play: {played}");
    assert!(played["time"].as_f64().unwrap_or(0.0) > 0.0, "{played}");
    let duration_ms = played["duration"].as_f64().expect("duration") * 1000.0;
    let announced = client
        .find(Locator::Id("res-duration"))
        .await
        .unwrap()
        .attr("data-ms")
        .await
        .unwrap()
        .and_then(|v| v.parse::<f64>().ok())
        .expect("X-Audio-Duration-Ms");
    (duration_ms, announced)
}

/// Fails on any console entry, of any level, unless `allowed`.
pub fn assert_no_console_errors(
    entries: &[ConsoleEntry],
    when: &str,
    allowed: impl Fn(&ConsoleEntry) -> bool,
) {
    let bad: Vec<&ConsoleEntry> = entries.iter().filter(|e| !allowed(e)).collect();
    assert!(bad.is_empty(), "console errors {when}: {bad:#?}");
}

/// Fails unless every URL is this server's (or a `blob:`/`data:` URL of
/// the page's own), and none is `/favicon.ico`.
pub fn assert_same_origin(urls: &[String], base: &str) {
    assert!(!urls.is_empty(), "no request was logged");
    for url in urls {
        let own = url == base || url.starts_with(&format!("{base}/"));
        let local = url.starts_with("blob:") || url.starts_with("data:");
        assert!(own || local, "the page requested {url}, not on {base}");
        assert!(!url.ends_with("/favicon.ico"), "the page asked for {url}");
    }
}

/// Where the screenshots go: `target/console/`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console")
}

/// Flags of every console session: the fake microphone, allowed without a
/// prompt, and a desktop window.
pub const BROWSER_ARGS: [&str; 3] = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--window-size=1440,900",
];

/// Opens the console, checks what it shows without a key, types the key
/// and waits until the figures come. Returns the URLs requested so far.
pub async fn open_with_key(browser: &Browser, server: &TestServer) -> Vec<String> {
    let client = browser.client();
    client
        .goto(&server.url("/"))
        .await
        .expect("open the console");
    // Without a key the page says that it needs one.
    let health = wait_js(
        client,
        "the key notice",
        "const n = document.getElementById('notice'); return !n.hidden && n.textContent;",
    )
    .await;
    assert!(
        health
            .as_str()
            .unwrap_or_default()
            .contains("needs an API key"),
        "{health}"
    );
    // The only errors so far: the page's one try without a key (401).
    let before = browser.console_entries().await.unwrap();
    assert_no_console_errors(&before, "before the key", |e| e.message.contains("401"));

    let key = client.find(Locator::Id("key")).await.unwrap();
    key.send_keys(KEY).await.unwrap();
    click(client, "#key-form button[type=submit]").await;
    wait_hit_rate_matches(client, server).await;
    // The key is in sessionStorage only, never in the URL or localStorage.
    let storage = client
        .execute(
            "return [sessionStorage.getItem('opusgate.apiKey'), localStorage.length, location.href];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(storage[0], KEY);
    assert_eq!(storage[1], 0);
    assert!(
        !storage[2].as_str().unwrap_or_default().contains(KEY),
        "{storage}"
    );
    browser.requested_urls().await.unwrap()
}

/// The end of a session opened with [`open_with_key`]: every request the
/// page made (`urls`, and those since) went to the console's own origin, its
/// console logged no error, and the browser and the server stop.
pub async fn close_with_key(browser: Browser, server: TestServer, mut urls: Vec<String>) {
    urls.extend(browser.requested_urls().await.unwrap());
    assert_same_origin(&urls, &server.base);
    assert_no_console_errors(
        &browser.console_entries().await.unwrap(),
        "after the key",
        |_| false,
    );
    browser.close().await.unwrap();
    server.stop().await;
}

/// Screenshots at 1440 and 375 px, light and dark, and the README's; at
/// 375 px, no horizontal scroll.
pub async fn screenshots(browser: &Browser) {
    let client = browser.client();
    let out = screenshot_dir();
    for (width, height, mobile) in [(1440, 900, false), (375, 812, true)] {
        browser.set_viewport(width, height, mobile).await.unwrap();
        for scheme in ["light", "dark"] {
            browser
                .cdp(
                    "Emulation.setEmulatedMedia",
                    json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
                )
                .await
                .unwrap();
            // Charts are redrawn for the new width.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let fit = client
                .execute(
                    "window.scrollTo(0, 0); \
                     return [document.documentElement.scrollWidth, window.innerWidth, \
                             getComputedStyle(document.body).backgroundColor];",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(fit[1], width, "viewport {fit}");
            assert!(
                fit[0].as_u64() <= fit[1].as_u64(),
                "horizontal scroll at {width} px ({scheme}): {fit}"
            );
            let dark_background = fit[2] != "rgb(246, 247, 249)";
            assert_eq!(dark_background, scheme == "dark", "{scheme}: {fit}");
            browser
                .screenshot(&out.join(format!("console-{width}-{scheme}.png")))
                .await
                .unwrap();
            client
                .execute("document.getElementById('try').scrollIntoView();", vec![])
                .await
                .unwrap();
            browser
                .screenshot(&out.join(format!("console-{width}-{scheme}-try.png")))
                .await
                .unwrap();
            client
                .execute("window.scrollTo(0, 0);", vec![])
                .await
                .unwrap();
            if width == 1440 && scheme == "light" {
                let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
                browser.screenshot_scaled(&readme, 0.75).await.unwrap();
                let size = std::fs::metadata(&readme).unwrap().len();
                assert!(size < 150_000, "docs/console.png is {size} bytes");
            }
        }
    }
    browser.set_viewport(1440, 900, false).await.unwrap();
}

/// The `<dd>` of the fact named `name` in the `<dl id=list>`.
pub async fn fact(client: &Client, list: &str, name: &str) -> String {
    let value = client
        .execute(
            "const [list, name] = arguments; \
             for (const div of document.getElementById(list).children) { \
               if (div.querySelector('dt').textContent === name) return div.querySelector('dd').textContent; \
             } return null;",
            vec![json!(list), json!(name)],
        )
        .await
        .unwrap();
    plain(
        value
            .as_str()
            .unwrap_or_else(|| panic!("no fact {name} in #{list}")),
    )
}

/// The id of the focused element after each of `presses` Tab presses from
/// the top of the page.
pub async fn tab_order(client: &Client, presses: usize) -> Vec<String> {
    let mut reached = Vec::new();
    client
        .execute("document.activeElement.blur(); window.focus();", vec![])
        .await
        .unwrap();
    for _ in 0..presses {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        client.perform_actions(tab).await.expect("press Tab");
        let id = client
            .execute("return document.activeElement.id;", vec![])
            .await
            .unwrap();
        reached.push(id.as_str().unwrap_or_default().to_owned());
    }
    reached
}
