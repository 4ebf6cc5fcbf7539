//! `[shared]`: the shared tier of a fleet of instances on Redis (one server
//! or a Cluster). Off while `url` is empty.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[shared]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedConfig {
    /// `redis://[:password@]host:port[/db]` (`rediss://` for TLS); empty:
    /// no shared tier. With `cluster`, comma-separated seed nodes.
    pub url: String,
    /// Whether `url` lists Redis Cluster seed nodes.
    pub cluster: bool,
    /// Seconds a conversion lock lives without renewal (renewed every third
    /// of it while converting); a dead holder's lock is taken over after it.
    pub lease_seconds: u64,
    /// Deadline of one Redis command, ms; past it the request goes on
    /// without the shared tier.
    pub timeout_ms: u64,
    /// Values larger than this stay in this instance's tiers.
    pub max_value_bytes: u64,
    /// First part of every Redis key.
    pub key_prefix: String,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            url: String::new(),
            cluster: false,
            lease_seconds: 10,
            timeout_ms: 500,
            max_value_bytes: 8_388_608,
            key_prefix: "og".into(),
        }
    }
}

impl SharedConfig {
    /// The store crate's settings, or `None` when the shared tier is off.
    pub fn tier(&self) -> Option<opusgate_cache::SharedConfig> {
        (!self.url.trim().is_empty()).then(|| opusgate_cache::SharedConfig {
            url: self.url.trim().to_owned(),
            cluster: self.cluster,
            lease: Duration::from_secs(self.lease_seconds),
            timeout: Duration::from_millis(self.timeout_ms),
            max_value_bytes: self.max_value_bytes,
            key_prefix: self.key_prefix.clone(),
        })
    }

    /// `url` with its password(s) replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.tier()
            .map(|tier| tier.redacted_url())
            .unwrap_or_default()
    }

    /// The first problem with these settings: (setting, value, why).
    pub fn problem(&self) -> Option<(&'static str, String, String)> {
        let tier = self.tier()?;
        let seeds: Vec<&str> = tier.url.split(',').map(str::trim).collect();
        let schemes_ok = seeds
            .iter()
            .all(|s| s.starts_with("redis://") || s.starts_with("rediss://"));
        if !schemes_ok || seeds.iter().any(|s| s.is_empty()) {
            return Some((
                "shared.url",
                tier.redacted_url(),
                "must be redis://[:password@]host:port[/db] or rediss://…; with shared.cluster, a comma-separated list of them".into(),
            ));
        }
        if !self.cluster && seeds.len() > 1 {
            return Some((
                "shared.url",
                tier.redacted_url(),
                "lists several servers: set shared.cluster = true for a Redis Cluster".into(),
            ));
        }
        if self.lease_seconds == 0 || self.lease_seconds > 3600 {
            return Some((
                "shared.lease_seconds",
                self.lease_seconds.to_string(),
                "must be 1 to 3600".into(),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Some((
                "shared.timeout_ms",
                self.timeout_ms.to_string(),
                "must be 1 to 60000".into(),
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && !self.key_prefix.contains(['{', '}'])
            && !self.key_prefix.contains(char::is_whitespace);
        if !prefix_ok {
            return Some((
                "shared.key_prefix",
                self.key_prefix.clone(),
                "must be non-empty, without braces or spaces".into(),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        assert_eq!(SharedConfig::default().tier().map(|_| ()), None);
        assert_eq!(SharedConfig::default().problem(), None);
        let on = |url: &str, cluster| SharedConfig {
            url: url.into(),
            cluster,
            ..SharedConfig::default()
        };
        assert_eq!(on("redis://127.0.0.1:6379", false).problem(), None);
        assert_eq!(
            on("redis://127.0.0.1:7000,redis://127.0.0.1:7001", true).problem(),
            None
        );
        let (setting, value, _) = on("http://:hunter2@h:1", false).problem().unwrap();
        assert_eq!(setting, "shared.url");
        assert!(!value.contains("hunter2"), "{value}");
        assert!(on("redis://a:1,redis://b:2", false).problem().is_some());
    }
}
