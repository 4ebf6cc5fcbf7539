//! The shared tier: a Redis server or Redis Cluster that several instances
//! use as one cache, with a fleet-wide lock so that one of them computes a
//! missing value while the others wait for it.
//!
//! One [`SharedTier`] per process holds the connection, the circuit breaker
//! and the counters; each store gets a [`SharedScope`] of it, naming its
//! kind of value (`wav`, `answer`). Keys of one value share a Cluster hash
//! tag, the content address: `{prefix}:v1:{<key hex>}:{kind}` holds the
//! framed value ([`value`]), `…:{kind}:lock` the lease of the instance
//! computing it ([`lease`]). How a flight goes through the tier is in
//! [`flight`].
//!
//! The shared tier only ever saves work: when Redis is unreachable, slow or
//! refusing, each command is skipped or times out (`timeout`), the failure
//! is counted, and the caller goes on with its own tiers; after a few
//! failures in a row the tier is skipped for a while ([`breaker`]).

mod breaker;
mod client;
pub(crate) mod flight;
mod lease;
mod value;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::key::Key;
use crate::stats::{add, bump, load};
use client::{Client, Skip};

/// How to reach the shared tier and how to use it.
#[derive(Clone)]
pub struct SharedConfig {
    /// `redis://[:password@]host:port[/db]` (`rediss://` for TLS); with
    /// `cluster`, a comma-separated list of seed nodes.
    pub url: String,
    /// Whether `url` names Redis Cluster seed nodes.
    pub cluster: bool,
    /// How long a lock lives without renewal (renewed every third of it
    /// while the holder computes).
    pub lease: Duration,
    /// Deadline of one Redis command.
    pub timeout: Duration,
    /// Larger values stay in this instance's tiers.
    pub max_value_bytes: u64,
    /// First part of every key.
    pub key_prefix: String,
}

impl std::fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConfig")
            .field("url", &self.redacted_url())
            .field("cluster", &self.cluster)
            .field("lease", &self.lease)
            .field("timeout", &self.timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl SharedConfig {
    /// The URL(s) with every password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.seeds()
            .iter()
            .map(|url| redact(url).0)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The seed URLs (one unless `cluster`).
    fn seeds(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `text` with every password of the URL(s) replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for url in self.seeds() {
            if let (_, Some(password)) = redact(&url) {
                if !password.is_empty() {
                    text = text.replace(&password, "***");
                }
            }
        }
        text
    }
}

/// The URL with its password replaced by `***`, and the password.
fn redact(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let userinfo = &rest[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (format!("{user}:"), password),
        None => (String::new(), userinfo),
    };
    let redacted = format!("{}{user}***{}", &url[..scheme_end], &rest[at..]);
    (redacted, Some(password.to_owned()))
}

/// The shared tier's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The URL (or a seed) is not a Redis URL.
    #[error("shared.url: `{url}` is not a redis:// or rediss:// URL")]
    BadUrl {
        /// The offending URL, password redacted.
        url: String,
    },
    /// A setting is out of range.
    #[error("shared: {0}")]
    Config(String),
}

/// Counters of the shared tier (one set per process, over every scope).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) errors: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) lock_takeovers: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) skipped_too_large: AtomicU64,
    pub(crate) corrupt_values: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
}

/// A snapshot of the shared tier's state and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Whether a shared tier is configured.
    pub enabled: bool,
    /// Whether it is in use now: connected and (a single server) its
    /// circuit closed.
    pub up: bool,
    /// Redis commands that failed or timed out.
    pub errors: u64,
    /// Lookups and flights that went on without the shared tier (not
    /// connected, circuit open, a command failed, or waiting took too long).
    pub fallbacks: u64,
    /// Locks taken after waiting on another instance's (its lease expired,
    /// or it gave up without a value).
    pub lock_takeovers: u64,
    /// Leases found taken over by another instance when renewing.
    pub lease_lost: u64,
    /// Values not written because they exceed `max_value_bytes`.
    pub skipped_too_large: u64,
    /// Values whose framing or checksum failed (ignored, then overwritten).
    pub corrupt_values: u64,
    /// Bytes of values read from Redis.
    pub bytes_read: u64,
    /// Bytes of values written to Redis.
    pub bytes_written: u64,
    /// Circuits open right now (hash slots in a Cluster).
    pub open_circuits: u64,
}

/// The process's handle on the shared tier; cheap to clone.
#[derive(Clone)]
pub struct SharedTier {
    client: Arc<Client>,
    /// This instance in lock tokens: `pid@host`.
    instance: Arc<str>,
    tokens: Arc<(RandomState, AtomicU64)>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("config", self.client.config())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl SharedTier {
    /// Checks the settings and starts connecting in the background: the
    /// tier is usable once connected ([`SharedStats::up`]), and until then
    /// every lookup goes on without it. Needs a tokio runtime.
    pub fn start(config: SharedConfig) -> Result<SharedTier, SharedError> {
        let seeds = config.seeds();
        if seeds.is_empty() || (!config.cluster && seeds.len() > 1) {
            return Err(SharedError::BadUrl {
                url: config.redacted_url(),
            });
        }
        for seed in &seeds {
            if !(seed.starts_with("redis://") || seed.starts_with("rediss://"))
                || redis::parse_redis_url(seed).is_none()
            {
                return Err(SharedError::BadUrl {
                    url: redact(seed).0,
                });
            }
        }
        if config.lease < Duration::from_millis(300) {
            return Err(SharedError::Config(
                "lease_seconds must be at least 1".into(),
            ));
        }
        if config.timeout.is_zero() {
            return Err(SharedError::Config("timeout_ms must be more than 0".into()));
        }
        let client = Arc::new(Client::new(config, Arc::default()));
        tokio::spawn(Arc::clone(&client).maintain());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        Ok(SharedTier {
            client,
            instance: format!("{}@{host}", std::process::id()).into(),
            tokens: Arc::new((RandomState::new(), AtomicU64::new(0))),
        })
    }

    /// A view of the tier for one kind of value (`wav`, `answer`): waiters
    /// give up on another instance's lock after `max_wait` and compute.
    pub fn scope(&self, kind: &str, max_wait: Duration) -> SharedScope {
        SharedScope {
            tier: self.clone(),
            kind: kind.into(),
            max_wait,
        }
    }

    /// The state and counters.
    pub fn stats(&self) -> SharedStats {
        let c = &self.client.counters;
        SharedStats {
            enabled: true,
            up: self.client.up(),
            errors: load(&c.errors),
            fallbacks: load(&c.fallbacks),
            lock_takeovers: load(&c.lock_takeovers),
            lease_lost: load(&c.lease_lost),
            skipped_too_large: load(&c.skipped_too_large),
            corrupt_values: load(&c.corrupt_values),
            bytes_read: load(&c.bytes_read),
            bytes_written: load(&c.bytes_written),
            open_circuits: self.client.open_circuits(),
        }
    }

    /// A lock token no other lock holder has: `pid@host/<random>`, so that
    /// an operator (or a test) can tell which instance holds a lock.
    fn token(&self) -> String {
        let (state, seq) = &*self.tokens;
        let mut hasher = state.build_hasher();
        hasher.write_u64(seq.fetch_add(1, Ordering::Relaxed));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        format!("{}/{:016x}", self.instance, hasher.finish())
    }

    fn counters(&self) -> &Counters {
        &self.client.counters
    }
}

/// What the shared tier holds for a key.
pub(crate) enum Found {
    /// A whole value.
    Value(Bytes),
    /// Nothing (or a value that failed its check).
    Nothing,
    /// The marker of a value too large to share: compute it here.
    TooLarge,
}

/// One store's view of the shared tier.
#[derive(Clone, Debug)]
pub struct SharedScope {
    tier: SharedTier,
    kind: Arc<str>,
    max_wait: Duration,
}

impl SharedScope {
    fn value_key(&self, key: &Key) -> String {
        let prefix = &self.tier.client.config().key_prefix;
        format!("{prefix}:v1:{{{}}}:{}", key.to_hex(), self.kind)
    }

    fn lock_key(&self, key: &Key) -> String {
        format!("{}:lock", self.value_key(key))
    }

    /// The marker of a value too large for the shared tier: while it
    /// exists, every instance computes the value itself, without the lock
    /// (waiting for a holder whose value will not be shared would only
    /// make the instances compute one after the other).
    fn local_key(&self, key: &Key) -> String {
        format!("{}:local", self.value_key(key))
    }

    /// The breaker circuit of `key`: its hash slot in a Cluster, else 0.
    fn circuit(&self, key: &Key) -> u16 {
        if self.tier.client.config().cluster {
            crc16::State::<crc16::XMODEM>::calculate(key.to_hex().as_bytes()) % 16384
        } else {
            0
        }
    }

    /// What Redis holds for `key` (value and marker in one `MGET`: they
    /// share a hash slot). A value that fails its check is counted and
    /// reads as absent (the next computation overwrites it).
    pub(crate) async fn get(&self, key: &Key) -> Result<Found, Skip> {
        let (framed, local): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .tier
            .client
            .query(
                self.circuit(key),
                redis::cmd("MGET")
                    .arg(self.value_key(key))
                    .arg(self.local_key(key)),
            )
            .await?;
        let Some(framed) = framed else {
            return Ok(if local.is_some() {
                Found::TooLarge
            } else {
                Found::Nothing
            });
        };
        add(&self.tier.counters().bytes_read, framed.len() as u64);
        match value::unframe(key, framed) {
            Some(value) => Ok(Found::Value(value)),
            None => {
                bump(&self.tier.counters().corrupt_values);
                tracing::warn!(%key, kind = %self.kind, "shared tier: a value failed its check; ignored");
                Ok(Found::Nothing)
            }
        }
    }

    /// Counts a lookup or flight that went on without the shared tier.
    fn fell_back(&self) {
        bump(&self.tier.counters().fallbacks);
    }

    /// Whether a shared tier lookup is worth trying at all.
    fn usable(&self) -> bool {
        self.tier.client.connected()
    }

    /// A plain lookup (no lock, no computation), counted as a fallback when
    /// the tier could not be asked.
    pub(crate) async fn lookup(&self, key: &Key) -> Option<Bytes> {
        if !self.usable() {
            return None;
        }
        match self.get(key).await {
            Ok(Found::Value(value)) => Some(value),
            Ok(Found::Nothing | Found::TooLarge) => None,
            Err(Skip) => {
                self.fell_back();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let (url, password) = redact("redis://:s3cret@127.0.0.1:6379/0");
        assert_eq!(url, "redis://:***@127.0.0.1:6379/0");
        assert_eq!(password.as_deref(), Some("s3cret"));
        let (url, _) = redact("rediss://user:pw@host:6380");
        assert_eq!(url, "rediss://user:***@host:6380");
        assert_eq!(redact("redis://127.0.0.1:6379").0, "redis://127.0.0.1:6379");
        let config = SharedConfig {
            url: "redis://:pw-one@h1:1,redis://:pw-two@h2:2".into(),
            cluster: true,
            lease: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
            max_value_bytes: 1,
            key_prefix: "og".into(),
        };
        assert_eq!(config.redacted_url(), "redis://:***@h1:1,redis://:***@h2:2");
        assert_eq!(
            config.scrub("auth pw-one failed, then pw-two"),
            "auth *** failed, then ***"
        );
        assert!(!format!("{config:?}").contains("pw-"));
    }
}
