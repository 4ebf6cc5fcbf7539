//! A flight through the shared tier, run by the one local leader of a key
//! (so one request per key per instance talks to Redis): look the value up;
//! else take the fleet-wide lock, look once more, compute while renewing the
//! lease, and publish the value with the lock's release; else wait for the
//! holder by polling the value and the lock with a growing backoff, and take
//! the lock over when it goes away without a value (its holder died and the
//! lease expired, or it failed). A value marked too large to share is
//! computed here at once. Whenever Redis cannot be used, the flight goes on
//! as if there were no shared tier: it computes.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::Skip;
use super::{Found, SharedScope};
use crate::key::Key;
use crate::stats::bump;

/// First wait between two polls of another instance's lock.
const POLL_FIRST: Duration = Duration::from_millis(5);

/// Longest wait between two polls.
const POLL_MAX: Duration = Duration::from_millis(100);

/// How the flight was resolved.
pub(crate) enum Resolved<T> {
    /// The shared tier had the value.
    Shared(Bytes),
    /// Another instance computed it while this one waited.
    Remote(Bytes),
    /// This instance computed (with the lock, or without the shared tier).
    Computed(T),
}

impl SharedScope {
    /// Resolves `key`: from the shared tier, from another instance's
    /// computation, or by running `compute`, whose value (`value_of`) is
    /// then published for the fleet.
    pub(crate) async fn resolve<T, Fut>(
        &self,
        key: &Key,
        compute: Fut,
        value_of: fn(&T) -> Option<&Bytes>,
    ) -> Resolved<T>
    where
        Fut: Future<Output = T>,
    {
        if !self.usable() {
            self.fell_back();
            return Resolved::Computed(compute.await);
        }
        match self.get(key).await {
            Ok(Found::Value(value)) => return Resolved::Shared(value),
            Ok(Found::Nothing) => {}
            Ok(Found::TooLarge) => return Resolved::Computed(compute.await),
            Err(Skip) => {
                self.fell_back();
                return Resolved::Computed(compute.await);
            }
        }
        let give_up = Instant::now() + self.max_wait;
        let mut pause = POLL_FIRST;
        let mut waited = false;
        loop {
            let lease = match self.try_lock(key).await {
                Ok(lease) => lease,
                Err(Skip) => {
                    self.fell_back();
                    return Resolved::Computed(compute.await);
                }
            };
            if let Some(lease) = lease {
                if waited {
                    bump(&self.tier.counters().lock_takeovers);
                }
                // A holder may have published between our lookup (or last
                // poll) and the lock's release.
                match self.get(key).await {
                    Ok(Found::Value(value)) => {
                        lease.release().await;
                        return if waited {
                            Resolved::Remote(value)
                        } else {
                            Resolved::Shared(value)
                        };
                    }
                    Ok(Found::TooLarge) => {
                        lease.release().await;
                        return Resolved::Computed(compute.await);
                    }
                    Ok(Found::Nothing) | Err(Skip) => {}
                }
                let result = lease.hold_while(compute).await;
                match value_of(&result).cloned() {
                    Some(value) => lease.publish(&value).await,
                    None => lease.release().await,
                }
                return Resolved::Computed(result);
            }
            waited = true;
            if Instant::now() >= give_up {
                self.fell_back();
                tracing::warn!(
                    %key,
                    waited_ms = self.max_wait.as_millis() as u64,
                    "shared tier: another instance's lock outlived the wait; computing here"
                );
                return Resolved::Computed(compute.await);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            match self.get(key).await {
                Ok(Found::Value(value)) => return Resolved::Remote(value),
                Ok(Found::Nothing) => {}
                Ok(Found::TooLarge) => return Resolved::Computed(compute.await),
                Err(Skip) => {
                    self.fell_back();
                    return Resolved::Computed(compute.await);
                }
            }
        }
    }
}
