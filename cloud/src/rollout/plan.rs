//! One step of a rollout, as a pure function of what the store shows: which edges a stage covers, what
//! each edge did, the gates, and the targets to set. [`super::Controller`] reads the store, calls [`step`]
//! and writes its result back under the leader lease.

use super::RolloutConfig;
use crate::audit::Estimate;
use crate::store::{EdgeRow, ModelEvent, RolloutRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use tierline_shared::wilson;

/// How far a stage reaches: a number of edges, or a share of the group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StageSize {
    /// This many edges.
    Edges(u32),
    /// This share of the group's edges, in percent (rounded up).
    Percent(f64),
}

impl FromStr for StageSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad =
            || format!("stage {s:?} is neither a number of edges (\"1\") nor a share (\"10%\")");
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "stage {s:?}: a share must be above 0 % and at most 100 %"
                ));
            }
            Ok(StageSize::Percent(p))
        } else {
            let n: u32 = s.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(format!("stage {s:?}: at least one edge"));
            }
            Ok(StageSize::Edges(n))
        }
    }
}

impl fmt::Display for StageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageSize::Edges(n) => write!(f, "{n}"),
            StageSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How many of `n` edges each stage covers, cumulatively: strictly growing (a stage that would add no edge
/// is dropped), the last always all `n`.
pub fn stage_counts(stages: &[StageSize], n: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for s in stages {
        let k = match *s {
            StageSize::Edges(k) => k as usize,
            // Rounded up, less a hair: 10 % of 30 is 3, not 3.0000000000000004 → 4.
            StageSize::Percent(p) => ((p * n as f64) / 100.0 - 1e-9).ceil().max(0.0) as usize,
        }
        .min(n);
        if k > out.last().copied().unwrap_or(0) {
            out.push(k);
        }
    }
    if out.last().copied().unwrap_or(0) < n || out.is_empty() {
        out.push(n);
    }
    out
}

/// What one edge did in a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeProgress {
    /// The stage that took it in.
    pub stage: u32,
    /// When it was targeted, µs.
    pub targeted_us: i64,
    /// When it was first seen serving the bundle, µs.
    #[serde(default)]
    pub active_us: Option<i64>,
    /// Why it failed, if it did.
    #[serde(default)]
    pub failed: Option<String>,
    /// Frames seen and forwarded (its heartbeat counters) and decision p99 (µs) when it was targeted, on
    /// the model before.
    #[serde(default)]
    pub base: Counters,
    /// The counters when it was first seen serving the bundle.
    #[serde(default)]
    pub at_active: Option<Counters>,
    /// The latest judgement of the gates (for people reading the rollout).
    #[serde(default)]
    pub note: String,
    /// It was given a target of its own (`edge/<id>`, a canary stage) rather than the group's.
    #[serde(default)]
    pub own_target: bool,
    /// Its stage timeout counts from here (later than `targeted_us` after a pause, or while it was offline
    /// at the last stage); `None`: from `targeted_us`.
    #[serde(default)]
    pub timeout_from_us: Option<i64>,
}

/// An edge's heartbeat counters at a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames seen since the edge started.
    pub seen: i64,
    /// Frames forwarded since the edge started.
    pub forwarded: i64,
    /// Decision latency p99 of the last heartbeat interval, µs (0: no decision in it).
    pub p99_us: i64,
}

impl Counters {
    fn of(e: &EdgeRow) -> Self {
        Self {
            seen: e.frames_seen,
            forwarded: e.frames_forwarded,
            p99_us: if e.decisions >= MIN_DECISIONS {
                e.decision_p99_us
            } else {
                0
            },
        }
    }
}

/// Fewest decisions in a heartbeat interval for its p99 to count (fewer: one slow frame would be the p99).
pub const MIN_DECISIONS: i64 = 20;

/// What the controller has recorded of a rollout besides its row's columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// When the group target was set (the last stage), µs.
    #[serde(default)]
    pub group_targeted_us: Option<i64>,
    /// Per edge.
    #[serde(default)]
    pub edges: BTreeMap<String, EdgeProgress>,
}

impl Progress {
    /// Parses the row's JSON (empty when unreadable).
    pub fn parse(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }
    /// As JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// A target change the step asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    /// `edge/<id>` or `edges/<group>`.
    pub target: String,
    /// The bundle.
    pub sha256: String,
    /// A rollback.
    pub rollback: bool,
    /// Recorded with the change.
    pub why: String,
}

/// What one step decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Targets to set, in order, before the row is written.
    pub targets: Vec<TargetChange>,
    /// The row to write (state, stage, progress, reason).
    pub row: RolloutRow,
    /// An event to record with it (name, detail), if something happened worth one.
    pub event: Option<(String, String)>,
}

/// What the store shows at this step.
pub struct Observed<'a> {
    /// Every known edge.
    pub edges: &'a [EdgeRow],
    /// Events about the rolled-out bundle since the rollout started.
    pub events: &'a [ModelEvent],
    /// Audit estimates per edge and prescreen version (since the rollout started).
    pub audits: &'a [Estimate],
    /// Now, µs.
    pub now_us: i64,
}

fn us(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The group's edges at the start, in rollout order: online ones first (canaries should be able to answer),
/// then by id.
pub fn members(edges: &[EdgeRow], group: &str) -> Vec<String> {
    let mut m: Vec<&EdgeRow> = edges.iter().filter(|e| e.update_group == group).collect();
    m.sort_by(|a, b| b.online.cmp(&a.online).then(a.edge_id.cmp(&b.edge_id)));
    m.into_iter().map(|e| e.edge_id.clone()).collect()
}

/// One step of a `running` or `rolling-back` rollout; other states do not change.
pub fn step(row: &RolloutRow, cfg: &RolloutConfig, seen: &Observed<'_>) -> Step {
    match row.state.as_str() {
        "running" => run(row, cfg, seen),
        "rolling-back" => roll_back(row),
        _ => Step {
            targets: vec![],
            row: row.clone(),
            event: None,
        },
    }
}

/// Sends every edge the rollout reached back to the previous bundle.
fn roll_back(row: &RolloutRow) -> Step {
    let progress = Progress::parse(&row.progress);
    let why = format!("rollout {} rolled back: {}", row.id, row.reason);
    let mut targets: Vec<TargetChange> = progress
        .edges
        .iter()
        .filter(|(_, p)| p.own_target)
        .map(|(id, _)| TargetChange {
            target: format!("edge/{id}"),
            sha256: row.previous.clone(),
            rollback: true,
            why: why.clone(),
        })
        .collect();
    if progress.group_targeted_us.is_some() {
        // The group target goes back too; set last, it is then the newest for edges with no canary target.
        targets.push(TargetChange {
            target: format!("edges/{}", row.grp),
            sha256: row.previous.clone(),
            rollback: true,
            why: why.clone(),
        });
    }
    let mut next = row.clone();
    next.state = "rolled-back".into();
    Step {
        targets,
        row: next,
        event: Some((
            "rolled-back".into(),
            format!(
                "every edge of edges/{} sent back to {} ({}): {}",
                row.grp, row.previous_version, row.previous, row.reason
            ),
        )),
    }
}

fn run(row: &RolloutRow, cfg: &RolloutConfig, seen: &Observed<'_>) -> Step {
    let now = seen.now_us;
    let stages: Vec<StageSize> = serde_json::from_str(&row.stages).unwrap_or_default();
    let members: Vec<String> = serde_json::from_str(&row.members).unwrap_or_default();
    let counts = stage_counts(&stages, members.len());
    let last = counts.len() - 1;
    let stage = (row.stage.max(0) as usize).min(last);
    let mut progress = Progress::parse(&row.progress);
    let mut targets = Vec::new();
    let by_id: BTreeMap<&str, &EdgeRow> =
        seen.edges.iter().map(|e| (e.edge_id.as_str(), e)).collect();
    let mut event: Option<(String, String)> = None;

    // 1. Take in the stage's edges.
    for id in members.iter().take(counts[stage]) {
        if progress.edges.contains_key(id) {
            continue;
        }
        let base = by_id
            .get(id.as_str())
            .map(|e| Counters::of(e))
            .unwrap_or_default();
        progress.edges.insert(
            id.clone(),
            EdgeProgress {
                stage: stage as u32,
                targeted_us: now,
                base,
                own_target: stage < last,
                ..EdgeProgress::default()
            },
        );
        if stage < last {
            targets.push(TargetChange {
                target: format!("edge/{id}"),
                sha256: row.sha256.clone(),
                rollback: false,
                why: format!("rollout {} stage {} (canary)", row.id, stage + 1),
            });
        }
    }
    if stage == last && progress.group_targeted_us.is_none() {
        progress.group_targeted_us = Some(now);
        targets.push(TargetChange {
            target: format!("edges/{}", row.grp),
            sha256: row.sha256.clone(),
            rollback: false,
            why: format!("rollout {} stage {} (every edge)", row.id, stage + 1),
        });
    }

    // 2. What each edge did, and its gates.
    let soak = us(cfg.soak);
    let timeout = us(cfg.stage_timeout);
    let mut failures: Vec<String> = Vec::new();
    let mut ready = true;
    for (id, p) in progress.edges.iter_mut() {
        let edge = by_id.get(id.as_str()).copied();
        let online = edge.is_some_and(|e| e.online);
        if p.failed.is_none()
            && let Some(e) = seen
                .events
                .iter()
                .find(|e| e.subject == *id && e.event == "rejected" && e.at_us >= p.targeted_us)
        {
            p.failed = Some(format!("refused the bundle: {}", e.detail));
        }
        if p.active_us.is_none() && p.failed.is_none() {
            let reported = seen
                .events
                .iter()
                .any(|e| e.subject == *id && e.event == "active" && e.at_us >= p.targeted_us);
            let serving = edge.is_some_and(|e| e.edge_model_version == row.version);
            if reported && serving {
                p.active_us = Some(now);
                p.at_active = edge.map(Counters::of);
            }
        }
        if p.failed.is_none() && p.active_us.is_none() && p.stage as usize == last && !online {
            // Cut off at the last stage: it follows the group target when it is back, and its timeout
            // counts from then.
            p.note = "offline; follows the group target when back".into();
            p.timeout_from_us = Some(now);
        }
        if p.failed.is_none()
            && p.active_us.is_none()
            && now - p.timeout_from_us.unwrap_or(p.targeted_us) > timeout
        {
            if p.stage as usize == last && !online {
                p.note = "offline; follows the group target when back".into();
            } else {
                p.failed = Some(format!(
                    "did not report the bundle active within {} ({})",
                    humantime::format_duration(cfg.stage_timeout),
                    if online { "online" } else { "offline" }
                ));
            }
        }
        if let (Some(active_us), None, Some(edge)) = (p.active_us, &p.failed, edge) {
            match judge(p, edge, row, cfg, seen.audits) {
                Judgement::Fail(why) => p.failed = Some(why),
                Judgement::Pending(note) => {
                    p.note = note;
                    if p.stage as usize == stage {
                        ready = false;
                    }
                }
                Judgement::Pass(note) => {
                    p.note = note;
                    if p.stage as usize == stage && now - active_us < soak {
                        ready = false;
                    }
                }
            }
        } else if p.failed.is_none()
            && p.stage as usize == stage
            && (online || p.stage as usize != last)
        {
            ready = false;
        }
        if let Some(why) = &p.failed {
            failures.push(format!("{id} {why}"));
        }
    }

    let mut next = row.clone();
    next.stage = stage as i64;
    if failures.len() >= cfg.max_failed_edges.max(1) as usize {
        next.state = "rolling-back".into();
        next.reason = format!(
            "{} of {} edges failed (at most {} allowed): {}",
            failures.len(),
            progress.edges.len(),
            cfg.max_failed_edges.max(1) - 1,
            failures.join("; ")
        );
        event = Some(("gate-failed".into(), next.reason.clone()));
    } else if ready {
        if stage == last {
            next.state = "done".into();
            next.reason = format!(
                "every online edge of edges/{} serves {} and passed its gates",
                row.grp, row.version
            );
            event = Some(("done".into(), next.reason.clone()));
        } else {
            next.stage = stage as i64 + 1;
            next.stage_started_us = now;
            next.reason = format!(
                "stage {} passed; stage {} of {} takes {} of {} edges",
                stage + 1,
                stage + 2,
                counts.len(),
                counts[stage + 1],
                members.len()
            );
            event = Some(("stage".into(), next.reason.clone()));
        }
    }
    next.progress = progress.to_json();
    Step {
        targets,
        row: next,
        event,
    }
}

enum Judgement {
    Fail(String),
    Pending(String),
    Pass(String),
}

/// The gates of an edge serving the bundle: forwarded share, decision latency p99, audit misses.
fn judge(
    p: &EdgeProgress,
    edge: &EdgeRow,
    row: &RolloutRow,
    cfg: &RolloutConfig,
    audits: &[Estimate],
) -> Judgement {
    let now = Counters::of(edge);
    let Some(start) = p.at_active else {
        return Judgement::Pending("waiting for its heartbeat".into());
    };
    // Counters restart with the edge: judge from its restart then.
    let (seen, forwarded) = if now.seen >= start.seen {
        (now.seen - start.seen, now.forwarded - start.forwarded)
    } else {
        (now.seen, now.forwarded)
    };
    if let Some(a) = audits
        .iter()
        .find(|a| a.edge_id == edge.edge_id && a.model_version == row.version)
        && a.audits >= cfg.min_audits
        && a.lower95 > cfg.max_audit_miss_rate
    {
        return Judgement::Fail(format!(
            "audit samples: the cloud found {} of {} passed frames defective (miss rate at least {:.2} %, \
             above {:.2} %)",
            a.misses,
            a.audits,
            100.0 * a.lower95,
            100.0 * cfg.max_audit_miss_rate
        ));
    }
    // The heartbeat that first showed the bundle covers the swap (and the shadow before it): latency is
    // judged from the heartbeats after it.
    if seen > 0 && now.p99_us > 0 && p.base.p99_us > 0 {
        let allowed = p.base.p99_us as f64 * cfg.max_latency_ratio + us(cfg.latency_slack) as f64;
        if now.p99_us as f64 > allowed {
            return Judgement::Fail(format!(
                "decision latency p99 {:.1} ms, was {:.1} ms (at most {:.1} ms allowed)",
                now.p99_us as f64 / 1e3,
                p.base.p99_us as f64 / 1e3,
                allowed / 1e3
            ));
        }
    }
    if (seen as u64) < cfg.min_frames {
        return Judgement::Pending(format!(
            "{seen} of {} frames on the new model",
            cfg.min_frames
        ));
    }
    // Both shares are samples: the gate fails only when the new share is above the allowed one with 95 %
    // confidence on both sides (Wilson bounds), so a canary judged on few frames is not failed by chance.
    let share = forwarded as f64 / seen as f64;
    let before = if p.base.seen > 0 {
        p.base.forwarded as f64 / p.base.seen as f64
    } else {
        0.0
    };
    let count = |k: i64, n: i64| (k.clamp(0, n.max(0)) as u64, n.max(0) as u64);
    let (k0, n0) = count(p.base.forwarded, p.base.seen);
    let before_high = if n0 > 0 {
        wilson::interval(k0, n0, wilson::Z95).1
    } else {
        0.0
    };
    let (k1, n1) = count(forwarded, seen);
    let share_low = wilson::interval(k1, n1, wilson::Z95).0;
    let allowed = before_high * cfg.max_forward_ratio + cfg.forward_slack;
    if share_low > allowed {
        return Judgement::Fail(format!(
            "forwards {:.1} % of frames (at least {:.1} %), was {:.1} % (at most {:.1} %): at most {:.1} % \
             allowed",
            100.0 * share,
            100.0 * share_low,
            100.0 * before,
            100.0 * before_high,
            100.0 * allowed
        ));
    }
    Judgement::Pass(format!(
        "forwards {:.1} % of {seen} frames (was {:.1} %)",
        100.0 * share,
        100.0 * before
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_grow_and_end_with_every_edge() {
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| x.parse().unwrap())
                .collect::<Vec<StageSize>>()
        };
        let plan = s(&["1", "10%", "100%"]);
        assert_eq!(stage_counts(&plan, 3), vec![1, 3]);
        assert_eq!(stage_counts(&plan, 50), vec![1, 5, 50]);
        assert_eq!(stage_counts(&plan, 30), vec![1, 3, 30]);
        assert_eq!(stage_counts(&plan, 1), vec![1]);
        assert_eq!(stage_counts(&plan, 0), vec![0]);
        assert_eq!(stage_counts(&s(&["2", "50%"]), 10), vec![2, 5, 10]);
        for bad in ["0", "0%", "101%", "ten", "-1"] {
            assert!(bad.parse::<StageSize>().is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;
    use std::time::Duration;

    const S: i64 = 1_000_000;

    fn cfg() -> RolloutConfig {
        RolloutConfig {
            soak: Duration::from_secs(10),
            stage_timeout: Duration::from_secs(100),
            min_frames: 100,
            ..RolloutConfig::default()
        }
    }

    fn edge(id: &str, version: &str, seen: i64, forwarded: i64) -> EdgeRow {
        EdgeRow {
            edge_id: id.into(),
            site: "p".into(),
            line: "l".into(),
            online: true,
            last_seen_us: 0,
            backlog_frames: 0,
            oldest_backlog_age_ms: 0,
            edge_model_version: version.into(),
            frames_seen: seen,
            frames_forwarded: forwarded,
            cameras_json: "[]".into(),
            update_group: "g".into(),
            decision_p99_us: 20_000,
            decisions: 50,
        }
    }

    fn event(subject: &str, event: &str, at_us: i64) -> ModelEvent {
        ModelEvent {
            id: 0,
            at_us,
            actor: subject.into(),
            subject: subject.into(),
            sha256: "new".into(),
            event: event.into(),
            detail: "why".into(),
        }
    }

    fn row() -> RolloutRow {
        RolloutRow {
            id: 7,
            grp: "g".into(),
            name: "prescreen".into(),
            sha256: "new".into(),
            version: "2".into(),
            previous: "old".into(),
            previous_version: "1".into(),
            state: "running".into(),
            stage: 0,
            stage_started_us: 0,
            stages: serde_json::to_string(&[StageSize::Edges(1), StageSize::Percent(100.0)])
                .unwrap(),
            members: serde_json::to_string(&["a", "b", "c"]).unwrap(),
            progress: "{}".into(),
            reason: String::new(),
            created_by: "ops".into(),
            created_us: 0,
            updated_us: 0,
            rev: 0,
        }
    }

    fn at(r: &RolloutRow, edges: &[EdgeRow], events: &[ModelEvent], now_us: i64) -> Step {
        step(
            r,
            &cfg(),
            &Observed {
                edges,
                events,
                audits: &[],
                now_us,
            },
        )
    }

    fn targets(s: &Step) -> Vec<(String, String, bool)> {
        s.targets
            .iter()
            .map(|t| (t.target.clone(), t.sha256.clone(), t.rollback))
            .collect()
    }

    #[test]
    fn a_healthy_canary_moves_the_rollout_on_after_the_soak() {
        let old = [edge("a", "1", 1000, 50), edge("b", "1", 1000, 50)];
        // Stage 1 takes in the first member only, with a target of its own.
        let s1 = at(&row(), &old, &[], 0);
        assert_eq!(targets(&s1), [("edge/a".into(), "new".into(), false)]);
        assert_eq!(s1.row.stage, 0);
        assert!(s1.event.is_none());
        // Active (reported and in its heartbeat): counters start there.
        let active = [edge("a", "2", 1100, 55), edge("b", "1", 1100, 55)];
        let events = [event("a", "active", S)];
        let s2 = at(&s1.row, &active, &events, 2 * S);
        assert!(s2.targets.is_empty() && s2.event.is_none(), "{s2:?}");
        // Enough frames, forwarding like before, but within the soak: waits.
        let judged = [edge("a", "2", 1300, 65), edge("b", "1", 1300, 65)];
        let s3 = at(&s2.row, &judged, &events, 5 * S);
        assert!(s3.event.is_none(), "{s3:?}");
        // After the soak: the last stage sets the group target, for everyone.
        let s4 = at(&s3.row, &judged, &events, 13 * S);
        assert_eq!(s4.event.as_ref().unwrap().0, "stage");
        assert_eq!(s4.row.stage, 1);
        let s5 = at(&s4.row, &judged, &events, 14 * S);
        assert_eq!(targets(&s5), [("edges/g".into(), "new".into(), false)]);
    }

    #[test]
    fn a_refusal_or_a_forwarding_jump_rolls_everything_back() {
        let old = [edge("a", "1", 1000, 50)];
        let s1 = at(&row(), &old, &[], 0);
        let s2 = at(&s1.row, &old, &[event("a", "rejected", S)], 2 * S);
        assert_eq!(s2.row.state, "rolling-back");
        assert!(
            s2.row.reason.contains("a refused the bundle"),
            "{}",
            s2.row.reason
        );
        let s3 = at(&s2.row, &old, &[], 3 * S);
        assert_eq!(s3.row.state, "rolled-back");
        assert_eq!(targets(&s3), [("edge/a".into(), "old".into(), true)]);

        // Active, then forwarding 40 % where it forwarded 5 %.
        let events = [event("a", "active", S)];
        let s2 = at(&s1.row, &[edge("a", "2", 1100, 55)], &events, 2 * S);
        let s3 = at(&s2.row, &[edge("a", "2", 1300, 135)], &events, 3 * S);
        assert_eq!(s3.row.state, "rolling-back", "{s3:?}");
        assert!(
            s3.row.reason.contains("forwards 40.0 %"),
            "{}",
            s3.row.reason
        );
    }

    #[test]
    fn a_slower_canary_fails_its_latency_gate_but_not_for_the_swap() {
        let old = [edge("a", "1", 1000, 50)];
        let s1 = at(&row(), &old, &[], 0);
        let events = [event("a", "active", S)];
        // The heartbeat that shows the swap is slow: not judged.
        let mut swapped = edge("a", "2", 1100, 55);
        swapped.decision_p99_us = 900_000;
        let s2 = at(&s1.row, &[swapped], &events, 2 * S);
        assert_eq!(s2.row.state, "running", "{s2:?}");
        // The next one is as slow: 2 × 20 ms + 50 ms allowed.
        let mut slow = edge("a", "2", 1150, 57);
        slow.decision_p99_us = 200_000;
        let s3 = at(&s2.row, &[slow], &events, 3 * S);
        assert_eq!(s3.row.state, "rolling-back", "{s3:?}");
        assert!(
            s3.row.reason.contains("latency p99 200.0 ms"),
            "{}",
            s3.row.reason
        );
    }

    #[test]
    fn an_edge_offline_at_the_last_stage_waits_and_its_timeout_starts_when_it_is_back() {
        // A one-stage rollout (everything at once) to a, b (b offline).
        let mut r = row();
        r.stages = serde_json::to_string(&[StageSize::Percent(100.0)]).unwrap();
        r.members = serde_json::to_string(&["a", "b"]).unwrap();
        let mut b = edge("b", "1", 1000, 50);
        b.online = false;
        let a_old = edge("a", "1", 1000, 50);
        let s1 = at(&r, &[a_old, b.clone()], &[], 0);
        assert_eq!(targets(&s1), [("edges/g".into(), "new".into(), false)]);
        let events = [event("a", "active", S)];
        let a_new = |seen, fwd| edge("a", "2", seen, fwd);
        let s2 = at(&s1.row, &[a_new(1100, 55), b.clone()], &events, 2 * S);
        // Long past the timeout, b still offline: a passes, b waits; the rollout is done.
        let s3 = at(&s2.row, &[a_new(1300, 65), b.clone()], &events, 200 * S);
        assert_eq!(s3.row.state, "done", "{s3:?}");
        // Were it still running when b comes back, b's timeout would count from then.
        let mut running = s2.row.clone();
        running.progress = at(&s2.row, &[a_new(1100, 55), b.clone()], &events, 150 * S)
            .row
            .progress;
        b.online = true;
        let s4 = at(&running, &[a_new(1100, 55), b], &events, 160 * S);
        assert_eq!(s4.row.state, "running", "{s4:?}");
    }

    #[test]
    fn a_silent_canary_fails_at_the_stage_timeout() {
        let old = [edge("a", "1", 1000, 50)];
        let s1 = at(&row(), &old, &[], 0);
        let s2 = at(&s1.row, &old, &[], 50 * S);
        assert_eq!(s2.row.state, "running");
        let s3 = at(&s2.row, &old, &[], 101 * S);
        assert_eq!(s3.row.state, "rolling-back");
        assert!(
            s3.row.reason.contains("did not report"),
            "{}",
            s3.row.reason
        );
    }
}
