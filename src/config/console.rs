//! `[console]`: the built-in web console at `/` and the stats history
//! (`GET /api/v1/stats/history`) its charts are drawn from.

use serde::{Deserialize, Serialize};

/// The most history points that may be kept (a day at one a second).
pub const MAX_HISTORY_POINTS: usize = 86_400;

/// `[console]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Whether `/` serves the console (its page and assets); off, they are
    /// 404. The history is kept and served either way.
    pub enabled: bool,
    /// Size of the stats history ring buffer, in points: 180 at the
    /// default interval is the last 15 minutes. 0 keeps no history.
    pub history_points: usize,
    /// Seconds between two history points.
    pub history_interval_seconds: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            history_points: 180,
            history_interval_seconds: 5,
        }
    }
}

impl ConsoleConfig {
    /// The first problem with these settings: (setting, value, why).
    pub fn problem(&self) -> Option<(&'static str, String, String)> {
        if self.history_points > MAX_HISTORY_POINTS {
            return Some((
                "console.history_points",
                self.history_points.to_string(),
                format!("must be at most {MAX_HISTORY_POINTS}"),
            ));
        }
        if !(1..=3600).contains(&self.history_interval_seconds) {
            return Some((
                "console.history_interval_seconds",
                self.history_interval_seconds.to_string(),
                "must be from 1 to 3600".into(),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_fine_and_bad_values_name_their_setting() {
        assert_eq!(ConsoleConfig::default().problem(), None);
        let off = ConsoleConfig {
            history_points: 0,
            ..ConsoleConfig::default()
        };
        assert_eq!(off.problem(), None);
        let huge = ConsoleConfig {
            history_points: MAX_HISTORY_POINTS + 1,
            ..ConsoleConfig::default()
        };
        assert_eq!(huge.problem().map(|p| p.0), Some("console.history_points"));
        for seconds in [0, 3601] {
            let bad = ConsoleConfig {
                history_interval_seconds: seconds,
                ..ConsoleConfig::default()
            };
            assert_eq!(
                bad.problem().map(|p| p.0),
                Some("console.history_interval_seconds")
            );
        }
    }
}
