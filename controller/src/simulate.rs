//! Dry runs: what would enforcement have done with the traffic of a recent
//! window, judged against the current baseline?
//!
//! Pure: the history, the baseline and the threat lists in, a report out.
//! The engine keeps the history (bounded in count and age) and runs this
//! on `vigilctl baseline simulate`. Depends on `model`, `baseline`,
//! `detect` and `inventory`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::detect::{self, Input, Threats};
use crate::inventory::Inventory;
use crate::model::{Action, Direction, Mode, NodeId, Observation, WorkloadId};
use crate::snapshot::label;

/// Observations kept for dry runs, at most.
pub const HISTORY_MAX: usize = 100_000;

/// One reported observation, with when and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Unix seconds.
    pub at: u64,
    /// The reporting workload (shared by the observations of one report).
    pub reporter: Arc<WorkloadId>,
    /// What it reported.
    pub obs: Observation,
}

/// A bounded, time-windowed history of observations.
#[derive(Debug, Default)]
pub struct History {
    seen: VecDeque<Seen>,
    /// How long observations are kept, seconds.
    pub retention: u64,
}

impl History {
    /// An empty history keeping observations for `retention` seconds.
    pub fn new(retention: u64) -> Self {
        History {
            seen: VecDeque::new(),
            retention,
        }
    }

    /// Records an observation (counted ones only: a live stream's later
    /// reports add bytes, not verdicts), dropping the oldest past the caps.
    pub fn push(&mut self, seen: Seen) {
        if seen.obs.count == 0 {
            return;
        }
        let oldest = seen.at.saturating_sub(self.retention);
        while self
            .seen
            .front()
            .is_some_and(|s| s.at < oldest || self.seen.len() >= HISTORY_MAX)
        {
            self.seen.pop_front();
        }
        self.seen.push_back(seen);
    }

    /// The oldest time still kept when the newest is `now`.
    pub fn oldest(&self, now: u64) -> u64 {
        now.saturating_sub(self.retention)
    }

    /// Observations since `since` (unix seconds).
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Seen> {
        self.seen.iter().filter(move |s| s.at >= since)
    }

    /// How many observations are kept.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// One thing enforcement would have done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WouldDo {
    /// Alert kind, e.g. `unknown_egress`.
    pub kind: String,
    /// `blocked` or `flagged` (what enforcement would have done).
    pub action: Action,
    /// `ns/name` of the workload.
    pub workload: String,
    /// The destination (or caller) the alert would name.
    pub destination: String,
    /// Requests it would have hit.
    pub count: u64,
}

/// The report of a dry run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Simulation {
    /// Observations replayed.
    pub observations: usize,
    /// Unix seconds of the window's start.
    pub since: u64,
    /// What enforcement would have blocked or flagged, most hits first.
    pub results: Vec<WouldDo>,
}

/// Replays `history` since `since` (of `namespace` only, when given)
/// against `baseline` in enforcement.
pub fn simulate(
    history: &History,
    since: u64,
    namespace: Option<&str>,
    baseline: &Baseline,
    inventory: &Inventory,
    threats: &dyn Threats,
) -> Simulation {
    let mode = Mode::Enforcement { alert_only: false };
    let mut found: BTreeMap<(String, String, String), (Action, u64)> = BTreeMap::new();
    let mut replayed = 0;
    for seen in history.since(since) {
        if namespace.is_some_and(|ns| ns != seen.reporter.namespace) {
            continue;
        }
        replayed += 1;
        let me = NodeId::Workload(WorkloadId::clone(&seen.reporter));
        let edge = match seen.obs.direction {
            Direction::Outbound => (me, inventory.destination(&seen.reporter, &seen.obs)),
            Direction::Inbound if seen.obs.source.is_none() => (NodeId::Internet, me),
            Direction::Inbound => continue,
        };
        let about = match seen.obs.direction {
            Direction::Outbound => label(&edge.1),
            Direction::Inbound => label(&edge.0),
        };
        let baseline_edge = (
            inventory.baseline_node(&edge.0),
            inventory.baseline_node(&edge.1),
        );
        let input = Input::new(mode, baseline, threats, &baseline_edge, &about, &seen.obs);
        for finding in detect::judge(&input, false).findings {
            let key = (
                finding.verdict.kind.as_str().to_owned(),
                seen.reporter.to_string(),
                finding.about,
            );
            let entry = found.entry(key).or_insert((finding.verdict.action, 0));
            entry.1 = entry.1.saturating_add(seen.obs.count);
        }
    }
    let mut results: Vec<WouldDo> = found
        .into_iter()
        .map(|((kind, workload, destination), (action, count))| WouldDo {
            kind,
            action,
            workload,
            destination,
            count,
        })
        .collect();
    results.sort_by_key(|r| std::cmp::Reverse(r.count));
    Simulation {
        observations: replayed,
        since,
        results,
    }
}

/// Parses a window such as `90s`, `30m`, `1h`, `2h30m` or `1d` into
/// seconds (at most the 31 days a history could hold).
pub fn parse_window(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a time window: use e.g. 30m, 1h, 2h30m or 1d");
    if text.is_empty() {
        return Err(bad());
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 || total > 31 * 86_400 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::NoThreats;

    #[test]
    fn windows_parse_like_durations() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("2h30m", 9000),
            ("1d", 86_400),
        ] {
            assert_eq!(parse_window(text), Ok(secs), "{text}");
        }
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "0m",
            "40d",
            "-1h",
            "99999999999999999999h",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
    use crate::model::outbound;

    fn seen(at: u64, ns: &str, authority: &str) -> Seen {
        Seen {
            at,
            reporter: WorkloadId::new(ns, "nb").unwrap().into(),
            obs: outbound(authority, None, 2),
        }
    }

    #[test]
    fn a_dry_run_reports_what_enforcement_would_block() {
        let mut history = History::new(3600);
        history.push(seen(100, "lab", "pypi.org:443"));
        history.push(seen(200, "lab", "pool.example:3333"));
        history.push(seen(300, "lab", "pool.example:3333"));
        history.push(seen(300, "prod", "other.example:443"));
        let mut baseline = Baseline::default();
        let nb = NodeId::Workload(WorkloadId::new("lab", "nb").unwrap());
        baseline.learn_edge(&(nb, NodeId::External("pypi.org:443".into())));
        let inventory = Inventory::default();
        let report = simulate(
            &history,
            150,
            Some("lab"),
            &baseline,
            &inventory,
            &NoThreats,
        );
        assert_eq!(report.observations, 2);
        assert_eq!(
            report.results,
            vec![WouldDo {
                kind: "unknown_egress".into(),
                action: Action::Blocked,
                workload: "lab/nb".into(),
                destination: "pool.example:3333".into(),
                count: 4,
            }]
        );
        let all = simulate(&history, 0, None, &baseline, &inventory, &NoThreats);
        assert_eq!(all.observations, 4);
        assert_eq!(all.results.len(), 2);
    }

    #[test]
    fn the_history_is_bounded_in_age() {
        let mut history = History::new(100);
        history.push(seen(10, "lab", "a:1"));
        history.push(seen(50, "lab", "a:1"));
        history.push(seen(200, "lab", "a:1"));
        assert_eq!(history.len(), 1, "older than the retention are gone");
        let mut live = seen(300, "lab", "a:1");
        live.obs.count = 0;
        history.push(live);
        assert_eq!(
            history.len(),
            1,
            "a live stream's progress is not a new request"
        );
    }
}
