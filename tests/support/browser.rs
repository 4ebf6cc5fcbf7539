//! A real headless Chromium for the tests that drive a page: Debian's
//! `chromium` and `chromedriver` (CI installs both), chromedriver started as
//! a child process on a free loopback port and killed (by its PID) on drop,
//! and one W3C WebDriver session through fantoccini.
//!
//! [`Browser::start`] answers `Ok(None)`, with the reason printed, when
//! chromium or chromedriver is not installed; the test then skips. Besides
//! the fantoccini [`Client`], a [`Browser`] reads chromedriver's logs (the
//! page's console, [`Browser::console_entries`], and every request the page
//! made, [`Browser::requested_urls`]), runs Chrome DevTools Protocol
//! commands ([`Browser::cdp`]) and saves screenshots.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::Url;
use serde_json::{json, Value};

/// Why the browser could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver did not start, or a file could not be written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// chromedriver did not answer `/status` as ready in time.
    #[error("chromedriver on port {0} was not ready within 20 s")]
    NotReady(u16),
    /// chromedriver refused to open a session (Chromium did not start).
    #[error("opening a WebDriver session: {0}")]
    Session(#[from] fantoccini::error::NewSessionError),
    /// A WebDriver command failed.
    #[error("WebDriver command: {0}")]
    Command(#[from] fantoccini::error::CmdError),
}

/// Flags every session gets: headless, and nothing that reaches out to the
/// network on the browser's own account (updates, sync, first-run pages).
/// `--no-sandbox` because CI runs as root, where Chromium's sandbox refuses
/// to start.
const BASE_ARGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
];

/// The first of `names` found as an executable file in `$PATH` (or given
/// as a path by `env` when set).
fn find_executable(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A free port on 127.0.0.1 (bound, read and released).
fn free_port() -> Result<u16, BrowserError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| BrowserError::Io("binding a free port".into(), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| BrowserError::Io("reading the free port".into(), e))?
        .port();
    Ok(port)
}

/// chromedriver's legacy log command (`POST /session/{id}/se/log`), which
/// chromedriver still serves in W3C mode: the entries of one log type
/// (`browser`, `performance`) since the last call.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "type": self.0 }).to_string()))
    }
}

/// chromedriver's Chrome DevTools Protocol passthrough
/// (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.0.to_string()))
    }
}

/// One entry of the page's console (chromedriver's `browser` log).
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    /// `SEVERE` (errors), `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// The text as the console shows it (with its source URL first).
    pub message: String,
}

/// A headless Chromium session; chromedriver is killed when it drops.
pub struct Browser {
    client: Option<Client>,
    /// The session's id, to end it from `drop` when `close` was not called.
    session: Option<String>,
    port: u16,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and opens a session of headless Chromium with
    /// [`BASE_ARGS`] and `extra_args` (e.g. `--window-size=1440,900`, or
    /// `--use-fake-device-for-media-stream`), with the page's console and
    /// network logged. `Ok(None)` (the reason printed) when chromium or
    /// chromedriver is not installed; `CHROME_BIN` and `CHROMEDRIVER` name
    /// them when they are not in `$PATH`.
    pub async fn start(extra_args: &[&str]) -> Result<Option<Browser>, BrowserError> {
        let Some(chrome) = find_executable(
            "CHROME_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        ) else {
            eprintln!(
                "SKIPPED: no chromium ($CHROME_BIN, or chromium, chromium-browser or google-chrome \
                 in $PATH; apt-get install chromium chromium-driver, as .ci/run does)"
            );
            return Ok(None);
        };
        let Some(driver_path) = find_executable("CHROMEDRIVER", &["chromedriver"]) else {
            eprintln!(
                "SKIPPED: no chromedriver ($CHROMEDRIVER, or chromedriver in $PATH; \
                 apt-get install chromium-driver, as .ci/run does)"
            );
            return Ok(None);
        };
        let port = free_port()?;
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BrowserError::Io(format!("starting {}", driver_path.display()), e))?;
        // From here on, dropping `browser` kills chromedriver.
        let mut browser = Browser {
            client: None,
            session: None,
            port,
            driver,
        };
        browser.wait_ready(port).await?;

        let args: Vec<&str> = BASE_ARGS.iter().chain(extra_args).copied().collect();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                "args": args,
                "perfLoggingPrefs": {"enableNetwork": true, "enablePage": false},
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal");
        };
        let capabilities: Capabilities = capabilities;
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}/"))
            .await?;
        browser.session = client.session_id().await?;
        browser.client = Some(client);
        Ok(Some(browser))
    }

    /// Waits until chromedriver's `/status` says it is ready.
    async fn wait_ready(&self, port: u16) -> Result<(), BrowserError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let status = http
                .get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await;
            if let Ok(response) = status {
                if let Ok(body) = response.json::<Value>().await {
                    if body["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(BrowserError::NotReady(port))
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close()")
    }

    /// Runs a Chrome DevTools Protocol command in the page's target.
    pub async fn cdp(&self, command: &str, params: Value) -> Result<Value, BrowserError> {
        Ok(self
            .client()
            .issue_cmd(Cdp(json!({"cmd": command, "params": params})))
            .await?)
    }

    /// Makes the viewport `width` x `height` CSS pixels; `mobile` as a
    /// phone does (the page's `<meta name="viewport">` applies).
    pub async fn set_viewport(
        &self,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> Result<(), BrowserError> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG of the viewport at `path` (its directory created).
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let png = self.client().screenshot().await?;
        write_file(path, &png)
    }

    /// Saves a PNG of the viewport at `scale` (0.5: half the width and
    /// height) at `path`, through the DevTools protocol.
    pub async fn screenshot_scaled(&self, path: &Path, scale: f64) -> Result<(), BrowserError> {
        let size = self
            .client()
            .execute(
                "return [document.documentElement.clientWidth, window.innerHeight];",
                vec![],
            )
            .await?;
        let (width, height) = (
            size[0].as_f64().unwrap_or(0.0),
            size[1].as_f64().unwrap_or(0.0),
        );
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": scale},
                }),
            )
            .await?;
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| {
                BrowserError::Io(
                    "decoding the screenshot".into(),
                    std::io::Error::other(e.to_string()),
                )
            })?;
        write_file(path, &png)
    }

    /// The page's console entries (all levels) since the last call.
    pub async fn console_entries(&self) -> Result<Vec<ConsoleEntry>, BrowserError> {
        let log = self.client().issue_cmd(GetLog("browser")).await?;
        Ok(log
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| ConsoleEntry {
                        level: e["level"].as_str().unwrap_or_default().to_owned(),
                        message: e["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The URL of every request the page sent since the last call
    /// (`Network.requestWillBeSent` in chromedriver's performance log):
    /// documents, scripts, styles, icons, fetches, media.
    pub async fn requested_urls(&self) -> Result<Vec<String>, BrowserError> {
        let log = self.client().issue_cmd(GetLog("performance")).await?;
        let mut urls = Vec::new();
        for entry in log.as_array().into_iter().flatten() {
            let Some(text) = entry["message"].as_str() else {
                continue;
            };
            let Ok(message) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let message = &message["message"];
            if message["method"] == "Network.requestWillBeSent" {
                if let Some(url) = message["params"]["request"]["url"].as_str() {
                    urls.push(url.to_owned());
                }
            }
        }
        Ok(urls)
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        self.session = None;
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BrowserError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| BrowserError::Io(format!("creating {}", dir.display()), e))?;
    }
    std::fs::write(path, bytes)
        .map_err(|e| BrowserError::Io(format!("writing {}", path.display()), e))
}

/// `DELETE /session/{id}` to chromedriver on `port`, blocking, so that a
/// test that fails before `close` still has Chromium quit.
fn delete_session_blocking(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            delete_session_blocking(self.port, &session);
        }
        // Kills chromedriver by its PID, and reaps it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
