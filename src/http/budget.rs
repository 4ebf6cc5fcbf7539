//! One memory budget for request bodies (`limits.max_inflight_upload_bytes`):
//! the total bytes of every request body being read or held at once.
//!
//! [`crate::http::form::read_body`] reserves a body's declared
//! Content-Length before reading it (a chunked body: the buffer's capacity
//! as it grows, chunk by chunk) from a semaphore counted in bytes. A
//! reservation that cannot be had within [`UPLOAD_WAIT`] is refused (503
//! `overloaded` with `Retry-After`, and what was read is dropped at once);
//! one larger than the whole budget is 413. The [`Reservation`] lives inside
//! the body's buffer (`Bytes::from_owner`), so the bytes are given back when
//! the last view of the body (a multipart field, the upload a conversion is
//! reading) is dropped: at the latest when the handler returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stats::{self, names};

/// How long a request waits for room in the budget before it is refused.
pub const UPLOAD_WAIT: Duration = Duration::from_secs(1);

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// More than the whole budget: it could never fit (413).
    TooLarge,
    /// No room within [`UPLOAD_WAIT`] (503 `overloaded`).
    Busy,
}

/// The budget's figures for `/api/v1/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// The budget, in bytes.
    pub budget_bytes: u64,
    /// Bytes reserved now.
    pub inflight_bytes: u64,
    /// The most bytes reserved at once since start.
    pub peak_bytes: u64,
    /// Uploads refused for the budget since start (503, and 413 for one
    /// larger than the whole budget).
    pub rejected: u64,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    budget: u64,
    inflight: AtomicU64,
    peak: AtomicU64,
    rejected: AtomicU64,
}

/// The shared budget; clones share it.
#[derive(Clone)]
pub struct UploadBudget(Arc<Inner>);

impl UploadBudget {
    /// A budget of `bytes` (capped at the semaphore's maximum).
    pub fn new(bytes: u64) -> UploadBudget {
        let budget = bytes.min(Semaphore::MAX_PERMITS as u64);
        UploadBudget(Arc::new(Inner {
            semaphore: Arc::new(Semaphore::new(budget as usize)),
            budget,
            inflight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }

    /// The budget, in bytes.
    pub fn budget_bytes(&self) -> u64 {
        self.0.budget
    }

    /// An empty reservation, grown with [`Reservation::grow`].
    pub fn empty(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
            bytes: 0,
        }
    }

    /// Counts a refusal.
    fn refused(&self, why: Refused) -> Refused {
        self.0.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::UPLOAD_REJECTED).increment(1);
        why
    }

    /// The figures now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        BudgetSnapshot {
            budget_bytes: self.0.budget,
            inflight_bytes: self.0.inflight.load(Ordering::Relaxed),
            peak_bytes: self.0.peak.load(Ordering::Relaxed),
            rejected: self.0.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Bytes of the budget held by one request body; given back on drop.
pub struct Reservation {
    budget: UploadBudget,
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes `more` bytes of the budget, waiting at most [`UPLOAD_WAIT`].
    /// On refusal the reservation keeps what it had (the caller drops it
    /// with the buffer).
    pub async fn grow(&mut self, more: u64) -> Result<(), Refused> {
        if more == 0 {
            return Ok(());
        }
        let inner = &self.budget.0;
        if self.bytes + more > inner.budget {
            return Err(self.budget.refused(Refused::TooLarge));
        }
        // At once when there is room (no timer for the usual case).
        let immediate = u32::try_from(more)
            .ok()
            .and_then(|n| inner.semaphore.clone().try_acquire_many_owned(n).ok());
        let got = match immediate {
            Some(got) => got,
            None => self.wait_for(more).await?,
        };
        match self.permit.as_mut() {
            Some(p) => p.merge(got),
            None => self.permit = Some(got),
        }
        self.bytes += more;
        let now = inner.inflight.fetch_add(more, Ordering::Relaxed) + more;
        inner.peak.fetch_max(now, Ordering::Relaxed);
        stats::with_gauge(names::UPLOAD_INFLIGHT, |g| g.increment(more as f64));
        Ok(())
    }

    /// `more` bytes of the budget within [`UPLOAD_WAIT`], or refused.
    async fn wait_for(&self, more: u64) -> Result<OwnedSemaphorePermit, Refused> {
        let inner = &self.budget.0;
        let acquire = async {
            // `acquire_many` takes at most u32::MAX permits at once.
            let mut permit: Option<OwnedSemaphorePermit> = None;
            let mut left = more;
            while left > 0 {
                let step = left.min(u64::from(u32::MAX)) as u32;
                let got = inner
                    .semaphore
                    .clone()
                    .acquire_many_owned(step)
                    .await
                    .expect("the budget's semaphore is never closed");
                match permit.as_mut() {
                    Some(p) => p.merge(got),
                    None => permit = Some(got),
                }
                left -= u64::from(step);
            }
            permit
        };
        match tokio::time::timeout(UPLOAD_WAIT, acquire).await {
            Ok(Some(got)) => Ok(got),
            _ => Err(self.budget.refused(Refused::Busy)),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget
                .0
                .inflight
                .fetch_sub(self.bytes, Ordering::Relaxed);
            stats::with_gauge(names::UPLOAD_INFLIGHT, |g| g.decrement(self.bytes as f64));
        }
        // The permit, dropped after the counter, gives the bytes back.
        self.permit.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserves_up_to_the_budget_and_gives_back_on_drop() {
        let budget = UploadBudget::new(10_000);
        let mut a = budget.empty();
        a.grow(6_000).await.unwrap();
        let mut b = budget.empty();
        assert_eq!(b.grow(5_000).await, Err(Refused::Busy));
        assert_eq!(b.grow(20_000).await, Err(Refused::TooLarge));
        b.grow(4_000).await.unwrap();
        assert_eq!(budget.snapshot().inflight_bytes, 10_000);
        drop(a);
        drop(b);
        let s = budget.snapshot();
        assert_eq!((s.inflight_bytes, s.peak_bytes, s.rejected), (0, 10_000, 2));
        let mut c = budget.empty();
        c.grow(10_000).await.unwrap();
    }
}
