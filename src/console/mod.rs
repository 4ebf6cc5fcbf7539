//! The built-in web console: one page at `/` (a dashboard of
//! `/api/v1/stats` and its [`history`], and a try-it panel that uploads a
//! file or a microphone recording to `/api/v1/convert`), served from the
//! binary with no build step and no request to any other origin.
//!
//! The page's HTML, CSS, script and icon are in `assets/`, embedded with
//! `include_str!`. The assets are served under names carrying a hash of
//! their content (`/console/console.<hash>.js`) with a year-long
//! `Cache-Control`; the page names them and is itself `no-cache`. The page
//! and its assets need no key (the page's own API calls send the key typed
//! into it, as `X-API-Key`) and take no body, so they sit outside auth and
//! the upload limits. `console.enabled = false` leaves them out (404).

pub mod history;

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::http::AppState;

pub use history::History;

/// One embedded file of the page.
struct Asset {
    /// The name without its hash: `console` of `console.<hash>.js`.
    stem: &'static str,
    /// The extension: `js`.
    ext: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file the page loads besides itself.
const ASSETS: [Asset; 3] = [
    Asset {
        stem: "console",
        ext: "css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/console.css"),
    },
    Asset {
        stem: "console",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/console.js"),
    },
    Asset {
        stem: "icon",
        ext: "svg",
        content_type: "image/svg+xml",
        body: include_str!("assets/icon.svg"),
    },
];

/// The page, with `{{console.css}}`, `{{console.js}}`, `{{icon.svg}}` and
/// `{{version}}` to fill in.
const PAGE_TEMPLATE: &str = include_str!("assets/index.html");

/// What the page may load and where it may connect: this origin only (and
/// `blob:` for the converted WAV it plays and offers as a download).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; media-src 'self' blob:; connect-src 'self'; \
    form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// How long a versioned asset may be kept: a year (its name changes with
/// its content).
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

impl Asset {
    /// `stem.<first 12 hex digits of the content's SHA-256>.ext`.
    fn versioned_name(&self) -> String {
        let digest = Sha256::digest(self.body.as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}.{hash}.{}", self.stem, self.ext)
    }
}

/// The assets' versioned names, in [`ASSETS`]' order (hashed once).
fn versioned_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| ASSETS.iter().map(Asset::versioned_name).collect())
}

/// The page with its assets' versioned names filled in.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut page = PAGE_TEMPLATE.replace("{{version}}", env!("CARGO_PKG_VERSION"));
        for (asset, name) in ASSETS.iter().zip(versioned_names()) {
            page = page.replace(&format!("{{{{{}.{}}}}}", asset.stem, asset.ext), name);
        }
        page
    })
}

/// The console's routes: `GET /` and `GET /console/{file}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
}

/// Headers every console answer carries.
fn common_headers(response: &mut Response, content_type: &'static str, cache: &'static str) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// `GET /`: the console page (`no-cache`: revalidated every time, so that
/// an upgrade's page names the upgrade's assets).
async fn index() -> Response {
    let mut response = page().into_response();
    common_headers(&mut response, "text/html; charset=utf-8", "no-cache");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    response
}

/// `GET /console/{file}`: an asset by its versioned name; any other name
/// (an old version's, say) is 404.
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let found = ASSETS
        .iter()
        .zip(versioned_names())
        .find(|(_, name)| **name == file);
    let Some((asset, _)) = found else {
        return Err(ApiError::not_found(format!(
            "no console asset /console/{file}"
        )));
    };
    let mut response = asset.body.into_response();
    common_headers(&mut response, asset.content_type, ASSET_CACHE_CONTROL);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_by_its_versioned_name() {
        let page = page();
        assert!(!page.contains("{{"), "a placeholder is left in the page");
        for name in versioned_names() {
            assert!(
                page.contains(&format!("/console/{name}")),
                "{name} not named"
            );
        }
    }

    #[test]
    fn versioned_names_change_with_the_content() {
        let a = Asset {
            stem: "x",
            ext: "js",
            content_type: "",
            body: "1",
        };
        let b = Asset { body: "2", ..a };
        assert_ne!(a.versioned_name(), b.versioned_name());
        assert!(a.versioned_name().starts_with("x.") && a.versioned_name().ends_with(".js"));
    }
}
