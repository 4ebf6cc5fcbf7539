//! The built-in web console at `/`: its page and assets over HTTP (headers,
//! versioned names, no key needed, `console.enabled = false`), and the page
//! driven in a real headless Chromium (chromedriver, fantoccini): a key
//! typed in, the hit rate shown equal to `/api/v1/stats`'s, a file chosen
//! and converted (`miss`, then `hit-memory`), the WAV played with the
//! duration the server announced, a recording from Chromium's fake
//! microphone converted the same way, no request to another origin, no
//! console error once the key is in, Tab reaching every control, no
//! horizontal scroll at 375 px, and screenshots at 375 and 1440 px (light
//! and dark) under `target/console/`, the README's at `docs/console.png`;
//! a wrong key and an API error (its code and message) shown as such; and
//! proxy mode's backend calls and answer store.
//!
//! The browser tests skip, saying why, only where chromium or chromedriver
//! is not installed.

#[path = "console/page.rs"]
mod page;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::Locator;
use serde_json::Value;

use page::{
    click, close_with_key, convert_in_page, fact, keyed_client, keyed_server, load, open_with_key,
    plain, play, screenshots, shown_rate, tab_order, text, wait_history_points,
    wait_hit_rate_matches, wait_js, BROWSER_ARGS, KEY,
};
use support::backend::Backend;
use support::browser::Browser;
use support::clips::{clip, music};
use support::http::{header, Api as _};
use support::proxy::{proxy_config, transcription_form};
use support::server::{config_in, data_dir, TestServer};
use support::tools::{opusenc, require_tool};

/// The asset URLs (`/console/…`) a page names.
fn asset_paths(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|part| part.starts_with("/console/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_page_and_its_versioned_assets_need_no_key() {
    let dir = data_dir();
    let server = keyed_server(dir.path(), 180).await;
    let anonymous = reqwest::Client::new();

    let page = anonymous.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let csp = header(&page, "content-security-policy").to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = page.text().await.unwrap();
    assert!(
        page.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert!(page.contains(r#"<link rel="icon" href="/console/icon."#));
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"));

    let assets = asset_paths(&page);
    let kinds: Vec<&str> = assets.iter().filter_map(|p| p.rsplit('.').next()).collect();
    for kind in ["css", "js", "svg"] {
        assert!(
            kinds.contains(&kind),
            "no .{kind} asset named in {assets:?}"
        );
    }
    for path in &assets {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "cache-control"),
            "public, max-age=31536000, immutable",
            "{path}"
        );
        let expected = match path.rsplit('.').next() {
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            _ => "image/svg+xml",
        };
        assert_eq!(header(&r, "content-type"), expected, "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert!(!r.bytes().await.unwrap().is_empty(), "{path}");
    }
    // Another version's name (or none) is not served.
    for path in ["/console/console.000000000000.js", "/console/console.js"] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    // The figures behind the page still need the key.
    for path in ["/api/v1/stats", "/api/v1/stats/history"] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = keyed_client().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // HEAD answers the page's headers too.
    let head = anonymous.head(server.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "cache-control"), "no-cache");
    server.stop().await;
}

#[tokio::test]
async fn an_operator_can_turn_the_console_off() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.console.enabled = false;
    let server = TestServer::start(config).await;
    let client = reqwest::Client::new();
    let page = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    let page = client.get(server.url("/")).send().await.unwrap();
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    // The history is an API of its own and stays.
    let history = client
        .get(server.url("/api/v1/stats/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_figures_and_converts_a_chosen_file() {
    require_tool("opusenc");
    let Some(browser) = Browser::start(&BROWSER_ARGS).await.expect("browser") else {
        return;
    };
    let dir = data_dir();
    // Charts over the last 30 s.
    let server = keyed_server(dir.path(), 30).await;
    let http = keyed_client();
    // Some traffic before the page opens: a miss and a hit.
    let earlier = clip(1.0, 41);
    assert_eq!(server.convert(&http, &earlier).await.0, 200);
    assert_eq!(server.convert(&http, &earlier).await.1, "hit-memory");

    let urls = open_with_key(&browser, &server).await;
    let client = browser.client();
    assert_eq!(
        wait_hit_rate_matches(client, &server).await,
        0.5,
        "one miss, one hit"
    );
    let stats = server.stats(&http).await;
    let permits = stats["conversions"]["max_concurrent"].as_u64().unwrap();
    assert!(
        text(client, "active")
            .await
            .ends_with(&format!("/ {permits}")),
        "{}",
        text(client, "active").await
    );

    // A 48 kHz stereo file from opusenc, converted at 48 kHz stereo.
    let frames = 48_000 * 3 / 2;
    let file = opusenc(
        dir.path(),
        "upload",
        48_000,
        2,
        &music(frames, 48_000, 2, 7),
        &[],
    );
    client
        .find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    wait_js(
        client,
        "the chosen file",
        "return !document.getElementById('convert').disabled;",
    )
    .await;
    for (id, value) in [("rate", "48000"), ("channels", "2")] {
        click(client, &format!("#{id} option[value='{value}']")).await;
    }
    let (status, cache) = convert_in_page(client).await;
    assert_eq!((status.as_str(), cache.as_str()), ("200 OK", "miss"));
    let (status, cache) = convert_in_page(client).await;
    assert_eq!((status.as_str(), cache.as_str()), ("200 OK", "hit-memory"));
    // The same upload over HTTP: the key and duration the page showed.
    let bytes = std::fs::read(&file).unwrap();
    let direct = server
        .post_convert(&http, "?rate=48000&channels=2", bytes)
        .await;
    assert_eq!(header(&direct, "x-cache"), "hit-memory");
    let key = header(&direct, "etag").trim_matches('"').to_owned();
    assert_eq!(text(client, "res-key").await, key);
    let announced: f64 = header(&direct, "x-audio-duration-ms").parse().unwrap();

    let (played_ms, page_ms) = play(client).await;
    assert_eq!(page_ms, announced);
    assert!(
        (played_ms - announced).abs() <= 1.0,
        "<audio> says {played_ms} ms, X-Audio-Duration-Ms {announced}"
    );
    // opusenc's input was 1.5 s; the WAV is that long.
    assert!((announced - 1500.0).abs() <= 1.0, "{announced} ms");
    let download = client
        .execute(
            "const a = document.getElementById('download'); return [a.href, a.download];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        download[0].as_str().unwrap().starts_with("blob:"),
        "{download}"
    );
    assert!(
        download[1].as_str().unwrap().ends_with(".wav"),
        "{download}"
    );

    // Some load, until the history holds 24 points (of 30).
    let stop = Arc::new(AtomicBool::new(false));
    let clips: Vec<Vec<u8>> = (0..12).map(|seed| clip(0.5, 100 + seed)).collect();
    let loader = tokio::spawn(load(server.base.clone(), clips, stop.clone()));
    wait_history_points(&server, 24).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.expect("the load");

    // The dashboard follows: hit rate, and the charts.
    wait_hit_rate_matches(client, &server).await;
    wait_js(
        client,
        "the lookups chart",
        "return document.querySelector('#chart-lookups polygon, #chart-lookups rect') !== null;",
    )
    .await;
    wait_js(
        client,
        "the hit rate chart",
        "return document.querySelector('#chart-hit path, #chart-hit circle') !== null;",
    )
    .await;
    let tiers = text(client, "tiers").await;
    assert!(
        tiers.contains("Memory") && tiers.contains("of 64.0 MiB"),
        "{tiers}"
    );

    // Keyboard: Tab reaches every control.
    let reached = tab_order(client, 40).await;
    for id in [
        "key",
        "key-forget",
        "file",
        "record",
        "rate",
        "channels",
        "convert",
        "player",
        "download",
    ] {
        assert!(
            reached.iter().any(|r| r == id),
            "Tab never reaches #{id}: {reached:?}"
        );
    }

    screenshots(&browser).await;
    close_with_key(browser, server, urls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_records_from_the_microphone_and_converts_it() {
    let Some(browser) = Browser::start(&BROWSER_ARGS).await.expect("browser") else {
        return;
    };
    let dir = data_dir();
    let server = keyed_server(dir.path(), 180).await;
    let urls = open_with_key(&browser, &server).await;
    let client = browser.client();

    click(client, "#record").await;
    wait_js(
        client,
        "the recording to start",
        "return document.getElementById('record').getAttribute('aria-pressed') === 'true';",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    click(client, "#record").await;
    let described = wait_js(
        client,
        "the recording",
        "const d = document.getElementById('input-desc').textContent; \
         return d.startsWith('Recording') && d;",
    )
    .await;
    let described = plain(described.as_str().unwrap_or_default());
    eprintln!("recorded: {described}");

    let (status, cache) = convert_in_page(client).await;
    let error = text(client, "try-error").await;
    assert_eq!(
        (status.as_str(), cache.as_str()),
        ("200 OK", "miss"),
        "the recording ({described}) was refused: {error}"
    );
    let (status, cache) = convert_in_page(client).await;
    assert_eq!((status.as_str(), cache.as_str()), ("200 OK", "hit-memory"));
    let (played_ms, announced) = play(client).await;
    assert!(
        (played_ms - announced).abs() <= 1.0,
        "<audio> says {played_ms} ms, X-Audio-Duration-Ms {announced}"
    );
    // At least most of the 2 s recorded.
    assert!(
        announced >= 1000.0,
        "a 2 s recording converted to {announced} ms"
    );
    wait_hit_rate_matches(client, &server).await;

    close_with_key(browser, server, urls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_when_the_key_is_wrong_and_shows_the_apis_errors() {
    let Some(browser) = Browser::start(&BROWSER_ARGS).await.expect("browser") else {
        return;
    };
    let dir = data_dir();
    let server = keyed_server(dir.path(), 180).await;
    let client = browser.client();
    client.goto(&server.url("/")).await.unwrap();
    let key = client.find(Locator::Id("key")).await.unwrap();
    key.send_keys("not-the-key").await.unwrap();
    click(client, "#key-form button[type=submit]").await;
    let notice = wait_js(
        client,
        "the refused key",
        "const n = document.getElementById('notice'); \
         return n.textContent.includes('refused') && n.textContent;",
    )
    .await;
    assert!(
        notice.as_str().unwrap().contains("refused this API key"),
        "{notice}"
    );
    assert_eq!(text(client, "health").await, "Up; key needed for figures");

    key.clear().await.unwrap();
    key.send_keys(KEY).await.unwrap();
    click(client, "#key-form button[type=submit]").await;
    wait_hit_rate_matches(client, &server).await;
    assert!(
        client
            .find(Locator::Id("notice"))
            .await
            .unwrap()
            .attr("hidden")
            .await
            .unwrap()
            .is_some(),
        "the notice stays after the right key"
    );

    // Not audio: the API's code and message are shown.
    let not_audio = dir.path().join("notes.txt");
    std::fs::write(&not_audio, "these are not audio bytes, just some text\n").unwrap();
    client
        .find(Locator::Id("file"))
        .await
        .unwrap()
        .send_keys(&not_audio.display().to_string())
        .await
        .unwrap();
    wait_js(
        client,
        "the chosen file",
        "return !document.getElementById('convert').disabled;",
    )
    .await;
    let (status, cache) = convert_in_page(client).await;
    assert_eq!(status, "415 Unsupported Media Type");
    assert_eq!(cache, "–");
    let error = text(client, "try-error").await;
    // The same upload over HTTP: the page shows its code and message.
    let direct = server
        .post_convert(&keyed_client(), "", std::fs::read(&not_audio).unwrap())
        .await;
    let body: Value = direct.json().await.unwrap();
    assert_eq!(
        error,
        format!(
            "{}: {}",
            body["code"].as_str().unwrap(),
            body["message"].as_str().unwrap()
        )
    );
    assert!(error.starts_with("unsupported_format: "), "{error}");
    assert!(
        client
            .find(Locator::Id("player-box"))
            .await
            .unwrap()
            .attr("hidden")
            .await
            .unwrap()
            .is_some(),
        "no player for an error"
    );
    browser.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_proxy_modes_backend_calls_and_answer_store() {
    let Some(browser) = Browser::start(&BROWSER_ARGS).await.expect("browser") else {
        return;
    };
    let backend = Backend::start().await;
    let dir = data_dir();
    let mut config = proxy_config(dir.path(), &backend);
    config.auth.api_keys = vec![KEY.into()];
    config.console.history_interval_seconds = 1;
    let server = TestServer::start(config).await;
    // The same deterministic transcription twice: one backend call, then
    // an answer from the store.
    let upload = clip(1.0, 77);
    for _ in 0..2 {
        let r = keyed_client()
            .post(server.url("/v1/audio/transcriptions"))
            .multipart(transcription_form(&upload, None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(backend.calls(), 1);

    let urls = open_with_key(&browser, &server).await;
    let client = browser.client();
    wait_js(
        client,
        "the proxy section",
        "return !document.getElementById('proxy').hidden;",
    )
    .await;
    let stats = server.stats(&keyed_client()).await;
    let upstream = &stats["upstream"];
    assert_eq!(upstream["calls"], 1);
    assert_eq!(
        fact(client, "proxy-facts", "Backend calls").await,
        upstream["calls"].to_string()
    );
    assert_eq!(
        fact(client, "proxy-facts", "Backend errors").await,
        upstream["errors"].to_string()
    );
    let cache = &upstream["cache"];
    assert_eq!(
        fact(client, "proxy-facts", "hit-memory / hit-disk").await,
        format!("{} / {}", cache["hits_memory"], cache["hits_disk"])
    );
    assert_eq!(
        fact(client, "proxy-facts", "coalesced / miss").await,
        format!("{} / {}", cache["coalesced"], cache["misses"])
    );
    assert_eq!(cache["hits_memory"], 1);
    assert_eq!(
        fact(client, "proxy-facts", "Answer store hit rate").await,
        shown_rate(upstream)
    );
    // No shared tier configured: its section stays hidden.
    let shared_hidden = client
        .execute("return document.getElementById('shared').hidden;", vec![])
        .await
        .unwrap();
    assert_eq!(shared_hidden, true);

    close_with_key(browser, server, urls).await;
}
