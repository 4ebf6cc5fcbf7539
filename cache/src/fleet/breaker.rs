//! The circuit breaker in front of Redis: after [`TRIP_AFTER`] consecutive
//! failures (errors or timeouts) of one circuit, its commands are skipped
//! for [`OPEN_FOR`]; then one command is let through, and its success closes
//! the circuit again, its failure opens it for another period.
//!
//! A single Redis server is one circuit. In a Cluster each hash slot is its
//! own circuit, so a node that is lost (or hung) only takes its own keys out
//! of the shared tier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open a circuit.
pub(crate) const TRIP_AFTER: u32 = 3;

/// How long an open circuit skips its commands before trying one again.
pub(crate) const OPEN_FOR: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Clone, Copy)]
struct Circuit {
    failures: u32,
    open_until: Option<Instant>,
}

/// Circuits by id (0 for a single server, the hash slot in a Cluster).
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    circuits: Mutex<HashMap<u16, Circuit>>,
}

impl Breaker {
    fn circuits(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Circuit>> {
        self.circuits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a command of circuit `id` may be sent now. An open circuit
    /// whose period is over lets one command through (and stays open for
    /// another period meanwhile, so only one probe goes out at a time).
    pub(crate) fn allow(&self, id: u16) -> bool {
        let now = Instant::now();
        let mut circuits = self.circuits();
        let Some(circuit) = circuits.get_mut(&id) else {
            return true;
        };
        match circuit.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                circuit.open_until = Some(now + OPEN_FOR);
                true
            }
            None => true,
        }
    }

    /// A command of circuit `id` succeeded: the circuit closes.
    pub(crate) fn success(&self, id: u16) {
        let mut circuits = self.circuits();
        if circuits.contains_key(&id) {
            circuits.remove(&id);
        }
    }

    /// A command of circuit `id` failed. Returns true when this failure
    /// opened the circuit.
    pub(crate) fn failure(&self, id: u16) -> bool {
        let mut circuits = self.circuits();
        let circuit = circuits.entry(id).or_default();
        circuit.failures = circuit.failures.saturating_add(1);
        if circuit.failures >= TRIP_AFTER {
            let opened = circuit.open_until.is_none();
            circuit.open_until = Some(Instant::now() + OPEN_FOR);
            opened
        } else {
            false
        }
    }

    /// Circuits open right now.
    pub(crate) fn open_circuits(&self) -> u64 {
        let now = Instant::now();
        self.circuits()
            .values()
            .filter(|c| c.open_until.is_some_and(|until| now < until))
            .count() as u64
    }

    /// Whether any circuit has failed at least [`TRIP_AFTER`] times in a row
    /// (open, or letting a probe through).
    pub(crate) fn any_tripped(&self) -> bool {
        self.circuits().values().any(|c| c.open_until.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_success() {
        let breaker = Breaker::default();
        assert!(breaker.allow(0));
        assert!(!breaker.failure(0));
        assert!(!breaker.failure(0));
        breaker.success(0);
        assert!(!breaker.failure(0));
        assert!(!breaker.failure(0));
        assert!(breaker.failure(0), "the third failure in a row opens it");
        assert!(!breaker.allow(0));
        assert!(breaker.allow(7), "other circuits are not affected");
        assert_eq!(breaker.open_circuits(), 1);
        assert!(breaker.any_tripped());
        breaker.success(0);
        assert!(breaker.allow(0));
        assert!(!breaker.any_tripped());
    }
}
