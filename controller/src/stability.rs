//! Learning stability: how long since a namespace's baseline last grew, and
//! how much it grew recently, so a platform team can see when learning is
//! done ("stable for 2h13m").
//!
//! Pure: growth events and a clock in, a [`Stability`] out. Depends on
//! `model` only.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::rfc3339;

/// The window "recent growth" counts over, seconds.
pub const RECENT_SECS: u64 = 3600;
/// Growth events kept per namespace (beyond them the count saturates).
const KEPT: usize = 1024;

/// When a namespace's baseline grew.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Growth {
    /// Unix seconds of the latest growth (0: never).
    pub last: u64,
    /// Unix seconds of recent growth events, oldest first (bounded).
    pub recent: VecDeque<u64>,
}

impl Growth {
    /// Records `n` items learned at `now`.
    pub fn grew(&mut self, now: u64, n: usize) {
        if n == 0 {
            return;
        }
        self.last = now;
        for _ in 0..n.min(KEPT) {
            if self.recent.len() == KEPT {
                self.recent.pop_front();
            }
            self.recent.push_back(now);
        }
        self.prune(now);
    }

    fn prune(&mut self, now: u64) {
        let oldest = now.saturating_sub(RECENT_SECS);
        while self.recent.front().is_some_and(|&t| t < oldest) {
            self.recent.pop_front();
        }
    }
}

/// A namespace's learning stability, as the API and `vigilctl status`
/// show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stability {
    /// RFC 3339 time the baseline last grew, `null` if it never did.
    pub last_growth: Option<String>,
    /// Seconds since then.
    pub stable_secs: Option<u64>,
    /// Items (workloads, edges, endpoints) learned in the last hour.
    pub learned_last_hour: usize,
    /// "stable for 2h13m", "growing: 12 learned in the last hour", or
    /// "nothing learned yet".
    pub summary: String,
}

/// `secs` as `2h13m`, `5m`, `40s`, `3d4h`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

/// The stability of a namespace that grew as `growth` says, at `now`.
pub fn stability(growth: &Growth, now: u64) -> Stability {
    if growth.last == 0 {
        return Stability {
            summary: "nothing learned yet".into(),
            ..Stability::default()
        };
    }
    let oldest = now.saturating_sub(RECENT_SECS);
    let recent = growth.recent.iter().filter(|&&t| t >= oldest).count();
    let stable = now.saturating_sub(growth.last);
    let summary = if stable >= 60 {
        format!("stable for {}", human(stable))
    } else {
        format!("growing: {recent} learned in the last hour")
    };
    Stability {
        last_growth: Some(rfc3339(growth.last)),
        stable_secs: Some(stable),
        learned_last_hour: recent,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stability_says_how_long_the_baseline_has_not_grown() {
        let mut g = Growth::default();
        assert_eq!(stability(&g, 100).summary, "nothing learned yet");
        g.grew(1000, 3);
        g.grew(1010, 2);
        let s = stability(&g, 1020);
        assert_eq!((s.learned_last_hour, s.stable_secs), (5, Some(10)));
        assert_eq!(s.summary, "growing: 5 learned in the last hour");
        let s = stability(&g, 1010 + 2 * 3600 + 13 * 60);
        assert_eq!(s.summary, "stable for 2h13m");
        assert_eq!(s.learned_last_hour, 0);
        g.grew(5000, 5000);
        assert_eq!(g.recent.len(), 1024, "bounded");
    }

    #[test]
    fn durations_read_like_a_human_wrote_them() {
        for (secs, text) in [
            (5, "5s"),
            (300, "5m"),
            (7980, "2h13m"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
        ] {
            assert_eq!(human(secs), text);
        }
    }
}
