//! How a lookup was answered: the [`Outcome`] of `get_or_compute` (turned
//! straight into the `X-Cache` header and a metric label) and the [`Tier`]
//! that answered a plain `get`.

use std::fmt;

/// How a `get_or_compute` call was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Found in the memory tier.
    HitMemory,
    /// Found in the disk tier (and promoted into memory).
    HitDisk,
    /// Another caller had already started the computation; this caller
    /// waited for it and shares its result.
    Coalesced,
    /// Not found anywhere: this caller's request started the computation.
    Miss,
}

impl Outcome {
    /// Every outcome, in a fixed order (for pre-registering metric labels).
    pub const ALL: [Outcome; 4] = [
        Outcome::HitMemory,
        Outcome::HitDisk,
        Outcome::Coalesced,
        Outcome::Miss,
    ];

    /// `"hit-memory"`, `"hit-disk"`, `"coalesced"` or `"miss"`: used unchanged
    /// as the `X-Cache` header value and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HitMemory => "hit-memory",
            Outcome::HitDisk => "hit-disk",
            Outcome::Coalesced => "coalesced",
            Outcome::Miss => "miss",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier that answered a plain `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The in-memory tier.
    Memory,
    /// The on-disk tier (including values whose disk write is still queued).
    Disk,
}

impl Tier {
    /// `"memory"` or `"disk"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels, ["hit-memory", "hit-disk", "coalesced", "miss"]);
        for outcome in Outcome::ALL {
            assert_eq!(outcome.to_string(), outcome.as_str());
        }
        assert_eq!(Tier::Memory.to_string(), "memory");
        assert_eq!(Tier::Disk.to_string(), "disk");
    }
}
