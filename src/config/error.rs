//! Errors of loading the configuration, named as the user wrote them: the
//! original service's variable (`PORT (server.port): …`), the `OPUSGATE_`
//! variable, or the key path in the file, never figment's internal names.

use figment::error::Kind;
use figment::Metadata;

/// A setting that could not be read or is out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable does not parse into the setting's
    /// type, or names a setting that does not exist.
    #[error("configuration: {message}")]
    Parse {
        /// What is wrong, naming what the user wrote: the variable
        /// (`PORT (server.port): …`, `OPUSGATE_SERVER__PROT (server.prot): …`)
        /// or the key and the file (`server.prot in config.toml: …`).
        message: String,
        /// figment's own error.
        #[source]
        source: Box<figment::Error>,
    },
    /// A value parsed but is not allowed.
    #[error("configuration: {setting} = {value}: {why}")]
    Invalid {
        /// `section.key` of the setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: String,
    },
}

/// The original service's environment names and the settings they set.
pub(super) const LEGACY_ENV: [(&str, &str); 5] = [
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("MAX_UPLOAD_SIZE", "limits.max_upload_bytes"),
    (
        "MAX_CONCURRENT_AUDIO_CONVERSIONS",
        "conversion.max_concurrent",
    ),
    ("AUDIO_CONVERTER_WORKERS", "conversion.workers"),
];

/// The prefix of `OPUSGATE_<SECTION>__<KEY>`.
pub(super) const ENV_PREFIX: &str = "OPUSGATE_";

/// The metadata of the two environment layers, to tell which one a value
/// that failed came from.
pub(super) struct EnvLayers {
    pub(super) legacy: Metadata,
    pub(super) prefixed: Metadata,
}

impl ConfigError {
    /// Rewords figment's error (every one it holds) to name what the user
    /// wrote: the environment variable, or the key path and the file.
    pub(super) fn parse(error: figment::Error, layers: &EnvLayers) -> ConfigError {
        let message = error
            .clone()
            .into_iter()
            .map(|e| describe(&e, layers))
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError::Parse {
            message,
            source: Box::new(error),
        }
    }
}

/// One figment error as `VAR (section.key): what` for the environment, or
/// `section.key in FILE: what` for the file.
fn describe(e: &figment::Error, layers: &EnvLayers) -> String {
    let mut path = e.path.clone();
    if let Kind::UnknownField(name, _) = &e.kind {
        if path.last() != Some(name) {
            path.push(name.clone());
        }
    }
    let setting = path.join(".");
    let what = match &e.kind {
        Kind::UnknownField(_, expected) => with_expected("unknown key".into(), expected),
        Kind::UnknownVariant(found, expected) => {
            with_expected(format!("unknown value {found:?}"), expected)
        }
        kind => kind.to_string(),
    };
    let Some(md) = &e.metadata else {
        return if setting.is_empty() {
            what
        } else {
            format!("{setting}: {what}")
        };
    };
    if *md == layers.legacy {
        format!("{} ({setting}): {what}", legacy_var(&setting))
    } else if *md == layers.prefixed {
        format!("{} ({setting}): {what}", prefixed_vars(&path))
    } else {
        // The file (its path, relative to the working directory when shorter).
        let place = md
            .source
            .as_ref()
            .map_or_else(|| md.name.to_string(), ToString::to_string);
        if setting.is_empty() {
            format!("{place}: {what}")
        } else {
            format!("{setting} in {place}: {what}")
        }
    }
}

fn with_expected(what: String, expected: &[&str]) -> String {
    if expected.is_empty() {
        what
    } else {
        format!("{what}; expected one of {}", expected.join(", "))
    }
}

/// The environment's variable names, as spelled there.
fn env_names() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    names.sort();
    names
}

/// The original service's variable that sets `setting`, as spelled in the
/// environment.
fn legacy_var(setting: &str) -> String {
    let Some((name, _)) = LEGACY_ENV
        .iter()
        .find(|(_, s)| setting == *s || setting.starts_with(&format!("{s}.")))
    else {
        return "environment".into();
    };
    env_names()
        .into_iter()
        .find(|n| n.trim().eq_ignore_ascii_case(name))
        .unwrap_or_else(|| (*name).into())
}

/// The `OPUSGATE_` variables, as spelled in the environment, that set `path`
/// or something under it, for the longest prefix of `path` that any does
/// (an unknown section is reported at the section, not at the variable's key).
fn prefixed_vars(path: &[String]) -> String {
    let names = env_names();
    for len in (1..=path.len()).rev() {
        let var = format!("{ENV_PREFIX}{}", path[..len].join("__")).to_ascii_uppercase();
        let nested = format!("{var}__");
        let found: Vec<&str> = names
            .iter()
            .filter(|n| {
                let n = n.trim().to_ascii_uppercase();
                n == var || n.starts_with(&nested)
            })
            .map(String::as_str)
            .collect();
        if !found.is_empty() {
            return found.join(", ");
        }
    }
    format!("{ENV_PREFIX}{}", path.join("__")).to_ascii_uppercase()
}
