//! `[cors]`: which web pages (origins) may call opusgate from a browser, and
//! how long a browser may keep a preflight's answer. Off while
//! `allowed_origins` is empty: no CORS header is sent at all.
//!
//! Origins are checked at start-up and kept as a browser writes them in its
//! `Origin` header (`https://example.com`, scheme and host in lower case, no
//! default port), since the header is compared byte for byte. `*` lets any
//! page in and is refused when API keys are configured: a page on any site
//! could then use a key its user typed in.

use serde::{Deserialize, Serialize};

/// `[cors]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`, http or https) whose pages may call
    /// opusgate; `["*"]` for any page (only without API keys); empty: no
    /// CORS headers. A list or one comma-separated string.
    #[serde(deserialize_with = "super::lists::list_or_comma_separated")]
    pub allowed_origins: Vec<String>,
    /// Seconds a browser may cache a preflight's answer
    /// (`Access-Control-Max-Age`), at most [`MAX_AGE_LIMIT`].
    pub max_age_seconds: u64,
}

/// The longest `cors.max_age_seconds` accepted (a day; browsers cap it lower).
pub const MAX_AGE_LIMIT: u64 = 86_400;

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            max_age_seconds: 600,
        }
    }
}

/// Which origins get CORS headers, from [`CorsConfig::origins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// CORS is off: no CORS headers on any answer.
    Off,
    /// Every origin (`Access-Control-Allow-Origin: *`).
    Any,
    /// These origins, as a browser sends them in `Origin`.
    List(Vec<String>),
}

/// A problem with a setting: (setting, value as given, what is allowed).
pub type Problem = (&'static str, String, String);

const ORIGINS: &str = "cors.allowed_origins";

impl CorsConfig {
    /// The allowed origins, each checked and written as a browser sends it.
    pub fn origins(&self) -> Result<AllowedOrigins, Problem> {
        let origins: Vec<&str> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(AllowedOrigins::Off);
        }
        if origins.contains(&"*") {
            if origins.len() > 1 {
                return Err((
                    ORIGINS,
                    format!("{origins:?}"),
                    "`*` allows every origin and must be the only entry".into(),
                ));
            }
            return Ok(AllowedOrigins::Any);
        }
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins {
            let normal =
                normalize_origin(origin).map_err(|why| (ORIGINS, origin.to_owned(), why))?;
            if !list.contains(&normal) {
                list.push(normal);
            }
        }
        Ok(AllowedOrigins::List(list))
    }

    /// The first problem with these settings, given whether API keys are
    /// configured (`*` is refused then).
    pub fn problem(&self, api_keys_configured: bool) -> Option<Problem> {
        match self.origins() {
            Err(problem) => return Some(problem),
            Ok(AllowedOrigins::Any) if api_keys_configured => {
                return Some((
                    ORIGINS,
                    "[\"*\"]".into(),
                    "`*` would let a page on any site use the API keys (auth.api_keys is set): \
                     list the origins of your pages instead, e.g. [\"https://app.example.com\"]"
                        .into(),
                ))
            }
            Ok(_) => {}
        }
        if self.max_age_seconds > MAX_AGE_LIMIT {
            return Some((
                "cors.max_age_seconds",
                self.max_age_seconds.to_string(),
                format!("must be 0 to {MAX_AGE_LIMIT}"),
            ));
        }
        None
    }
}

/// `origin` as a browser writes it in `Origin` (scheme and host in lower
/// case, IDN hosts in punycode, no default port), or why it is no origin:
/// anything but `http(s)://host[:port]`.
pub fn normalize_origin(origin: &str) -> Result<String, String> {
    let shape = "an origin is scheme://host[:port] (http or https), e.g. https://app.example.com or http://127.0.0.1:8080";
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(shape.into());
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(format!(
            "the scheme {scheme:?} is not http or https; {shape}"
        ));
    }
    if let Some(extra) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "{:?} after the host: an origin has no path, query or fragment (browsers send {scheme}://{}); {shape}",
            &rest[extra..],
            &rest[..extra]
        ));
    }
    if rest.contains('@') {
        return Err(format!("an origin has no user or password; {shape}"));
    }
    // The URL parser of reqwest (the `url` crate) reads the host and port as
    // a browser does, and serializes the origin as the browser sends it.
    let url = reqwest::Url::parse(origin).map_err(|e| format!("{e}; {shape}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("no host; {shape}"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            ..CorsConfig::default()
        }
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let ok = |s: &str| normalize_origin(s).unwrap();
        assert_eq!(ok("https://App.Example.COM"), "https://app.example.com");
        assert_eq!(ok("HTTP://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("https://example.com:443"), "https://example.com");
        assert_eq!(ok("http://example.com:80"), "http://example.com");
        assert_eq!(ok("http://example.com:8443"), "http://example.com:8443");
        assert_eq!(ok("http://[::1]:3000"), "http://[::1]:3000");
        assert_eq!(
            ok("https://bücher.example"),
            "https://xn--bcher-kva.example"
        );
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://example.com?x",
            "https://example.com#x",
            "ftp://example.com",
            "file://",
            "null",
            "https://",
            "https://user:pw@example.com",
            "https://example.com:99999",
            "https://exa mple.com",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn star_is_alone_and_only_without_keys() {
        assert_eq!(CorsConfig::default().origins(), Ok(AllowedOrigins::Off));
        assert_eq!(CorsConfig::default().problem(true), None);
        assert_eq!(with(&["*"]).origins(), Ok(AllowedOrigins::Any));
        assert_eq!(with(&["*"]).problem(false), None);
        let (setting, _, why) = with(&["*"]).problem(true).unwrap();
        assert_eq!(setting, "cors.allowed_origins");
        assert!(why.contains("auth.api_keys"), "{why}");
        assert!(with(&["*", "https://a.example"]).problem(false).is_some());
        assert_eq!(
            with(&[
                "https://A.example",
                " https://a.example ",
                "http://b.example:81"
            ])
            .origins(),
            Ok(AllowedOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:81".into()
            ]))
        );
        let (_, value, _) = with(&["https://a.example", "https://b.example/"])
            .problem(true)
            .unwrap();
        assert_eq!(value, "https://b.example/");
        let long = CorsConfig {
            max_age_seconds: MAX_AGE_LIMIT + 1,
            ..CorsConfig::default()
        };
        assert_eq!(long.problem(false).unwrap().0, "cors.max_age_seconds");
    }
}
