//! The connection to Redis (one server through redis-rs's
//! `ConnectionManager`, or a Cluster through its async cluster client),
//! made in the background until it succeeds, and every command run under
//! the command timeout and the circuit breaker, with its failures counted
//! and logged (rate-limited, never with the password).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisResult, ScriptInvocation};

use super::breaker::Breaker;
use super::{Counters, SharedConfig};
use crate::ratelimit::WarnLimiter;
use crate::stats::bump;

/// How long the background connector waits between attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// How often a repeated failure of the shared tier is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A connection to a single server or to a Cluster; cheap to clone (both
/// are handles to one multiplexed connection that reconnects by itself).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    async fn invoke<T: FromRedisValue>(self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Conn::Single(mut c) => script.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => script.invoke_async(&mut c).await,
        }
    }
}

/// The shared tier is not usable for this command: not connected yet, its
/// circuit is open, or the command failed or timed out (already counted and
/// logged). The caller goes on without the shared tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip;

/// The client: the connection once made, the breaker, and the counters.
pub(crate) struct Client {
    config: SharedConfig,
    conn: RwLock<Option<Conn>>,
    breaker: Breaker,
    pub(crate) counters: Arc<Counters>,
    warn: WarnLimiter,
}

impl Client {
    pub(crate) fn new(config: SharedConfig, counters: Arc<Counters>) -> Client {
        Client {
            config,
            conn: RwLock::new(None),
            breaker: Breaker::default(),
            counters,
            warn: WarnLimiter::new(WARN_EVERY),
        }
    }

    pub(crate) fn config(&self) -> &SharedConfig {
        &self.config
    }

    fn connection(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a connection has been made.
    pub(crate) fn connected(&self) -> bool {
        self.conn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the shared tier is in use: connected, and (a single server)
    /// its circuit not tripped.
    pub(crate) fn up(&self) -> bool {
        self.connected() && (self.config.cluster || !self.breaker.any_tripped())
    }

    /// Circuits open right now (hash slots in a Cluster).
    pub(crate) fn open_circuits(&self) -> u64 {
        self.breaker.open_circuits()
    }

    /// Connects, retrying every [`RECONNECT_EVERY`] until it succeeds (the
    /// instance serves with its own tiers meanwhile); then, as long as the
    /// tier exists, probes a tripped circuit of a single server every
    /// [`RECONNECT_EVERY`] (a `PING` once the breaker lets one through), so
    /// that an idle instance also sees Redis come back. A Cluster's
    /// circuits, one per hash slot, are probed by their own traffic.
    pub(crate) async fn maintain(self: Arc<Self>) {
        loop {
            match tokio::time::timeout(self.config.timeout * 4, self.connect()).await {
                Ok(Ok(conn)) => {
                    *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                    tracing::info!(
                        url = %self.config.redacted_url(),
                        cluster = self.config.cluster,
                        "shared tier connected"
                    );
                    break;
                }
                Ok(Err(error)) => self.warn_down(&self.config.scrub(&error.to_string())),
                Err(_) => self.warn_down("connecting timed out"),
            }
            if Arc::strong_count(&self) == 1 {
                return;
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
        // This task's handle is the last one once the tier is dropped.
        while Arc::strong_count(&self) > 1 {
            tokio::time::sleep(RECONNECT_EVERY).await;
            if !self.config.cluster && self.breaker.any_tripped() {
                let _ = self.query::<String>(0, &redis::cmd("PING")).await;
            }
        }
    }

    fn warn_down(&self, why: &str) {
        if let Some(attempts) = self.warn.record() {
            tracing::warn!(
                url = %self.config.redacted_url(),
                error = why,
                attempts,
                "shared tier unreachable; serving from this instance's tiers and retrying every second"
            );
        }
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let timeout = self.config.timeout;
        if self.config.cluster {
            let client = redis::cluster::ClusterClient::builder(self.config.seeds())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .min_retry_wait(10)
                .max_retry_wait(100)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(self.config.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
    }

    /// Runs one command of circuit `circuit` under the timeout and the breaker.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        circuit: u16,
        cmd: &Cmd,
    ) -> Result<T, Skip> {
        self.run(circuit, |conn| conn.query(cmd)).await
    }

    /// Runs one script of circuit `circuit` under the timeout and the breaker.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        circuit: u16,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Skip> {
        self.run(circuit, |conn| conn.invoke(script)).await
    }

    async fn run<'a, T, F, Fut>(&self, circuit: u16, op: F) -> Result<T, Skip>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let Some(conn) = self.connection() else {
            return Err(Skip);
        };
        if !self.breaker.allow(circuit) {
            return Err(Skip);
        }
        let why = match tokio::time::timeout(self.config.timeout, op(conn)).await {
            Ok(Ok(value)) => {
                self.breaker.success(circuit);
                return Ok(value);
            }
            Ok(Err(error)) => self.config.scrub(&error.to_string()),
            Err(_) => format!(
                "no answer within shared.timeout_ms ({} ms)",
                self.config.timeout.as_millis()
            ),
        };
        bump(&self.counters.errors);
        let opened = self.breaker.failure(circuit);
        if opened || self.warn.record().is_some() {
            tracing::warn!(
                error = why,
                circuit_opened = opened,
                "shared tier command failed; going on without it"
            );
        }
        Err(Skip)
    }
}
