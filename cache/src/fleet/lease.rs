//! The fleet-wide lock on one key: `SET lock token NX PX lease` takes it,
//! the holder renews it every third of the lease while it computes, and
//! only the holder (same token) renews, releases or publishes; those three
//! are Lua scripts, so that each check-and-act is one atomic step. All keys
//! of a script share the value's hash tag, so a Cluster runs it on one node.
//!
//! Publishing writes the value and releases the lock in the same script:
//! there is never a moment when neither the lock nor the value exists.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;

use bytes::Bytes;
use redis::Script;

use super::client::Skip;
use super::{value, SharedScope};
use crate::key::Key;
use crate::stats::{add, bump};

/// `KEYS[1]` lock; `ARGV[1]` token, `ARGV[2]` lease ms: 1 if renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// `KEYS[1]` lock; `ARGV[1]` token: 1 if released.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// `KEYS[1]` value, `KEYS[2]` lock; `ARGV[1]` framed value, `ARGV[2]`
/// token: writes the value (whoever holds the lock: values are content
/// addressed, so every instance computes the same bytes), then releases the
/// lock if it is still this holder's. 1 if the lock was released.
const PUBLISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[2])
end
return 0";

/// `KEYS[1]` marker, `KEYS[2]` lock; `ARGV[1]` marker lifetime ms,
/// `ARGV[2]` token: marks the value as too large to share (every instance
/// then computes it without waiting), then releases the lock if it is still
/// this holder's.
const MARK_LOCAL: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[2])
end
return 0";

/// How long a too-large marker lives (another instance's `max_value_bytes`
/// may differ, and a restart may change it).
const LOCAL_MARK_MS: u64 = 3_600_000;

fn script(cell: &'static OnceLock<Script>, source: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(source))
}

fn renew_script() -> &'static Script {
    static CELL: OnceLock<Script> = OnceLock::new();
    script(&CELL, RENEW)
}

fn release_script() -> &'static Script {
    static CELL: OnceLock<Script> = OnceLock::new();
    script(&CELL, RELEASE)
}

fn publish_script() -> &'static Script {
    static CELL: OnceLock<Script> = OnceLock::new();
    script(&CELL, PUBLISH)
}

fn mark_local_script() -> &'static Script {
    static CELL: OnceLock<Script> = OnceLock::new();
    script(&CELL, MARK_LOCAL)
}

/// A lock this instance holds on one key.
pub(crate) struct Lease {
    scope: SharedScope,
    key: Key,
    token: String,
}

impl SharedScope {
    fn lease_ms(&self) -> u64 {
        u64::try_from(self.tier.client.config().lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the lock on `key` if nobody holds it.
    pub(crate) async fn try_lock(&self, key: &Key) -> Result<Option<Lease>, Skip> {
        let token = self.tier.token();
        let taken: Option<String> = self
            .tier
            .client
            .query(
                self.circuit(key),
                redis::cmd("SET")
                    .arg(self.lock_key(key))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lease_ms()),
            )
            .await?;
        Ok(taken.map(|_| Lease {
            scope: self.clone(),
            key: *key,
            token,
        }))
    }
}

impl Lease {
    async fn invoke(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<i64, Skip> {
        let scope = &self.scope;
        scope
            .tier
            .client
            .invoke(scope.circuit(&self.key), invocation)
            .await
    }

    /// Extends the lease; `Ok(false)` if another instance holds the lock now.
    async fn renew(&self) -> Result<bool, Skip> {
        let mut invocation = renew_script().prepare_invoke();
        invocation
            .key(self.scope.lock_key(&self.key))
            .arg(&self.token)
            .arg(self.scope.lease_ms());
        Ok(self.invoke(&invocation).await? == 1)
    }

    /// Releases the lock without a value (the computation failed).
    pub(crate) async fn release(self) {
        let mut invocation = release_script().prepare_invoke();
        invocation
            .key(self.scope.lock_key(&self.key))
            .arg(&self.token);
        let _ = self.invoke(&invocation).await;
    }

    /// Writes `value` and releases the lock in one step; a value over
    /// `max_value_bytes` is not written (counted): the key is marked as
    /// computed locally everywhere, and the lock released.
    pub(crate) async fn publish(self, value: &Bytes) {
        let counters = self.scope.tier.counters();
        let max = self.scope.tier.client.config().max_value_bytes;
        if value.len() as u64 > max {
            bump(&counters.skipped_too_large);
            tracing::debug!(key = %self.key, bytes = value.len(), max, "shared tier: value too large; kept local");
            let mut invocation = mark_local_script().prepare_invoke();
            invocation
                .key(self.scope.local_key(&self.key))
                .key(self.scope.lock_key(&self.key))
                .arg(LOCAL_MARK_MS)
                .arg(&self.token);
            let _ = self.invoke(&invocation).await;
            return;
        }
        let framed = value::frame(&self.key, value);
        let written = framed.len() as u64;
        let mut invocation = publish_script().prepare_invoke();
        invocation
            .key(self.scope.value_key(&self.key))
            .key(self.scope.lock_key(&self.key))
            .arg(framed)
            .arg(&self.token);
        if self.invoke(&invocation).await.is_ok() {
            add(&counters.bytes_written, written);
        }
    }

    /// Runs `work` while renewing the lease every third of it. A lease found
    /// taken over is counted once and not renewed again; the work goes on
    /// (its value is the same whoever publishes it).
    pub(crate) async fn hold_while<T>(&self, work: impl Future<Output = T>) -> T {
        let every = self.scope.tier.client.config().lease / 3;
        let mut work = pin!(work);
        let mut renewing = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep(every), if renewing => {
                    if let Ok(false) = self.renew().await {
                        bump(&self.scope.tier.counters().lease_lost);
                        tracing::warn!(key = %self.key, "shared tier: lost the lock while computing (lease expired); finishing anyway");
                        renewing = false;
                    }
                }
            }
        }
    }
}
