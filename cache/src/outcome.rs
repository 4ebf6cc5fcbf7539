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
    /// Found in the shared tier (and copied into memory and disk).
    HitShared,
    /// Another caller had already started the computation; this caller
    /// waited for it and shares its result.
    Coalesced,
    /// Another instance of the fleet was computing it (it held the
    /// fleet-wide lock); this caller waited for its value.
    CoalescedRemote,
    /// Not found anywhere: this instance computed it for this caller.
    Miss,
}

impl Outcome {
    /// Every outcome, in a fixed order (for pre-registering metric labels).
    pub const ALL: [Outcome; 6] = [
        Outcome::HitMemory,
        Outcome::HitDisk,
        Outcome::HitShared,
        Outcome::Coalesced,
        Outcome::CoalescedRemote,
        Outcome::Miss,
    ];

    /// `"hit-memory"`, `"hit-disk"`, `"hit-shared"`, `"coalesced"`,
    /// `"coalesced-remote"` or `"miss"`: used unchanged as the `X-Cache`
    /// header value and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HitMemory => "hit-memory",
            Outcome::HitDisk => "hit-disk",
            Outcome::HitShared => "hit-shared",
            Outcome::Coalesced => "coalesced",
            Outcome::CoalescedRemote => "coalesced-remote",
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
    /// The shared tier (the value is now in memory and on disk too).
    Shared,
}

impl Tier {
    /// `"memory"`, `"disk"` or `"shared"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Shared => "shared",
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
        assert_eq!(
            labels,
            [
                "hit-memory",
                "hit-disk",
                "hit-shared",
                "coalesced",
                "coalesced-remote",
                "miss"
            ]
        );
        for outcome in Outcome::ALL {
            assert_eq!(outcome.to_string(), outcome.as_str());
        }
        assert_eq!(Tier::Memory.to_string(), "memory");
        assert_eq!(Tier::Disk.to_string(), "disk");
    }
}
