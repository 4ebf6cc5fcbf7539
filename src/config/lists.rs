//! Settings that are lists: given as a TOML list or as one comma-separated
//! string (what an environment variable can hold), and API keys, which are
//! text as written whatever they look like.

use figment::value::Value;
use serde::{Deserialize, Deserializer};

/// Accepts `["a", "b"]` or `"a,b"` (what an environment variable can hold).
pub(super) fn list_or_comma_separated<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    list_as_written(d, None)
}

/// The variable that sets `auth.api_keys`, as [`api_keys`] reads it again.
const API_KEYS_VAR: &str = "OPUSGATE_AUTH__API_KEYS";

/// `auth.api_keys`: as [`list_or_comma_separated`], and a key is text as
/// written whatever it looks like.
///
/// figment's `Env` parses a variable's value before it gets here: `12345`
/// arrives as a number, `true` as a boolean, `1.50` as the float 1.5 and
/// `007` as 7, their text lost (`1e3`, `0x10` and `12345,true` are no
/// figment number and stay text). So when a key arrives as anything but
/// text, `OPUSGATE_AUTH__API_KEYS` is read again as set, if figment makes
/// of it the very value that arrived (that variable is the last layer that
/// can set the keys). Any other key that is not text, a bare number or
/// boolean in `config.toml` (whose TOML text, `0x10`, `1_000` or `+5`, is
/// lost as well), is refused: keys are TOML strings there.
pub(super) fn api_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    list_as_written(d, Some(API_KEYS_VAR))
}

/// A list of strings, or one string of comma-separated items; items are
/// trimmed and empty ones dropped. An item that is not text is taken as
/// written in `var` (see [`api_keys`]) or refused.
fn list_as_written<'de, D: Deserializer<'de>>(
    d: D,
    var: Option<&str>,
) -> Result<Vec<String>, D::Error> {
    let value = <Value as Deserialize>::deserialize(d)?;
    let items = match text_items(&value) {
        Some(items) => items,
        None => var
            .and_then(|var| items_as_set(var, &value))
            .ok_or_else(|| serde::de::Error::custom(not_text(&value, var)))?,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A string or a character (figment's `'a'`) as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        _ => None,
    }
}

/// The items of a list of texts, or of one comma-separated text.
fn text_items(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(_, items) => items.iter().map(text).collect(),
        one => text(one).map(|s| s.split(',').map(str::to_owned).collect()),
    }
}

/// The items of `value` as written in the environment variable `var` (any
/// case, as figment matches it), if figment parses that variable into
/// `value`: a number or boolean is the variable's text (split at commas,
/// as a comma-separated text is); a list `[007, abc]` takes each number or
/// boolean as written between its commas.
fn items_as_set(var: &str, value: &Value) -> Option<Vec<String>> {
    let raw = std::env::vars_os()
        .filter(|(name, _)| name.to_string_lossy().trim().eq_ignore_ascii_case(var))
        .map(|(_, raw)| raw.to_string_lossy().into_owned())
        .find(|raw| raw.parse::<Value>().is_ok_and(|parsed| parsed == *value))?;
    let items = match value {
        Value::Bool(..) | Value::Num(..) => {
            return Some(raw.split(',').map(str::to_owned).collect())
        }
        Value::Array(_, items) => items,
        _ => return None,
    };
    let inner = raw.trim().strip_prefix('[')?.strip_suffix(']')?;
    let tokens: Vec<&str> = inner.split(',').collect();
    if tokens.len() != items.len() {
        // A quoted item holds a comma: the tokens are not the items.
        return None;
    }
    tokens
        .into_iter()
        .zip(items)
        .map(|(token, item)| match item {
            Value::Bool(..) | Value::Num(..) => token
                .parse::<Value>()
                .is_ok_and(|parsed| parsed == *item)
                .then(|| token.to_owned()),
            other => text(other),
        })
        .collect()
}

/// Why `value` is refused: its first item that is not text.
fn not_text(value: &Value, var: Option<&str>) -> String {
    let bad = match value {
        Value::Array(_, items) => items.iter().find(|v| text(v).is_none()).unwrap_or(value),
        one => one,
    };
    let found = bad.to_actual();
    match var {
        Some(_) => format!("an API key must be a string, found {found}: write it in quotes"),
        None => format!("expected a string or a list of strings, found {found}"),
    }
}
