//! Which clip each load-test request sends: round robin, a repeat ratio
//! (reuse a clip already sent with probability P, else send a fresh one), or
//! a Zipf law over the clips, as a real repeat-audio workload has.

/// A small deterministic generator (SplitMix64): enough for choosing clips,
/// and the same seed gives the same request sequence.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// How requests pick clips.
#[derive(Debug, Clone, PartialEq)]
pub enum Mix {
    /// Clip i % K for request i.
    RoundRobin,
    /// With probability `p` a clip already sent, else the next unsent one.
    Repeat(f64),
    /// Clip k with probability proportional to 1 / (k + 1)^s.
    Zipf(f64),
}

/// The sequence of clip indices for a run.
#[derive(Debug, Clone)]
pub struct Workload {
    mix: Mix,
    clips: usize,
    sent: usize,
    next: usize,
    cdf: Vec<f64>,
    rng: SplitMix,
}

impl Workload {
    /// A workload over `clips` clips (at least one).
    pub fn new(mix: Mix, clips: usize, seed: u64) -> Workload {
        let clips = clips.max(1);
        let cdf = match mix {
            Mix::Zipf(s) => {
                let mut total = 0.0;
                let mut cdf: Vec<f64> = (0..clips)
                    .map(|k| {
                        total += 1.0 / ((k + 1) as f64).powf(s);
                        total
                    })
                    .collect();
                cdf.iter_mut().for_each(|c| *c /= total);
                cdf
            }
            _ => Vec::new(),
        };
        Workload {
            mix,
            clips,
            sent: 0,
            next: 0,
            cdf,
            rng: SplitMix::new(seed),
        }
    }

    /// The clip index of the next request.
    pub fn next_clip(&mut self) -> usize {
        let clip = match self.mix {
            Mix::RoundRobin => self.next % self.clips,
            Mix::Repeat(p) => {
                if self.sent > 0 && (self.sent == self.clips || self.rng.next_f64() < p) {
                    self.rng.below(self.sent)
                } else {
                    self.sent += 1;
                    self.sent - 1
                }
            }
            Mix::Zipf(_) => {
                let u = self.rng.next_f64();
                self.cdf.partition_point(|c| *c < u).min(self.clips - 1)
            }
        };
        self.next += 1;
        clip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles() {
        let mut w = Workload::new(Mix::RoundRobin, 3, 1);
        let seq: Vec<usize> = (0..7).map(|_| w.next_clip()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn repeat_ratio_zero_sends_each_clip_once_first() {
        let mut w = Workload::new(Mix::Repeat(0.0), 4, 1);
        let seq: Vec<usize> = (0..4).map(|_| w.next_clip()).collect();
        assert_eq!(seq, [0, 1, 2, 3]);
        // Once every clip was sent, requests repeat.
        assert!(w.next_clip() < 4);
    }

    #[test]
    fn repeat_ratio_is_respected_on_average() {
        let mut w = Workload::new(Mix::Repeat(0.5), 100_000, 7);
        let n = 10_000;
        let mut fresh = 0;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..n {
            fresh += usize::from(seen.insert(w.next_clip()));
        }
        let share = fresh as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.03, "fresh share {share}");
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let mut w = Workload::new(Mix::Zipf(1.0), 500, 3);
        let mut counts = vec![0usize; 500];
        for _ in 0..20_000 {
            counts[w.next_clip()] += 1;
        }
        // Rank 1 gets about 1/H(500) ~ 14.7% of the requests, rank 2 half of that.
        let top = counts[0] as f64 / 20_000.0;
        assert!((top - 0.147).abs() < 0.02, "{top}");
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
    }
}
