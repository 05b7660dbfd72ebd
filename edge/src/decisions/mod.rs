//! Line decisions: every frame gets exactly one decision within its deadline, and late cloud verdicts are
//! reconciled, not lost.
//!
//! - A frame the prescreen passes is decided `pass` at once (`source: edge`). If it was also sent as an audit
//!   sample, its verdict later produces an `audit` event that says whether the prescreen missed a defect.
//! - A suspect waits for the cloud verdict until `capture + deadline`. If the verdict is in time, the decision
//!   follows it (`source: cloud`). If not, the local offline policy decides (`source: local-fallback`,
//!   `provisional: true`): fail-safe `reject`, or `quarantine` (pass and hold).
//! - A verdict that arrives after a provisional decision produces a `reconciliation` event recording whether
//!   the cloud agreed; when it did not, the event is a correction the line controller must act on.
//!
//! [`Book`] holds this state and does no I/O; it reads time from an injected [`Clock`], so tests run on
//! simulated time. [`stage::Decisions`] drives it with timers and channels.

use crate::config::OfflinePolicy;
use crate::outbox::Acked;
use crate::provenance::Provenance;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierline_shared::regions::Region;
use tierline_shared::time::{Clock, SystemClock};
use tierline_shared::wire::{ForwardReason, Verdict};

pub mod stage;

pub use tierline_shared::action::Action;

/// Who took a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The prescreen passed the frame.
    Edge,
    /// The cloud verdict arrived in time.
    Cloud,
    /// The deadline passed without a verdict; the offline policy decided.
    LocalFallback,
    /// The frame could not be read; rejected as a precaution.
    Unreadable,
    /// The prescreen had not scored the frame by its deadline (a stalled or overloaded model); the offline
    /// policy for an unknown score decided.
    Unscored,
}

/// One line of the decision sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A line decision.
    Decision {
        /// Sequence number.
        seq: u64,
        /// Frame id.
        frame_id: String,
        /// Camera id.
        camera_id: String,
        /// What to do.
        action: Action,
        /// Who decided.
        source: Source,
        /// True for local fallback decisions that a late verdict may correct.
        provisional: bool,
        /// Prescreen defect score.
        edge_score: f32,
        /// Cloud label, when the cloud decided.
        #[serde(skip_serializing_if = "Option::is_none")]
        cloud_label: Option<String>,
        /// Ground truth, for synthetic frames.
        #[serde(skip_serializing_if = "Option::is_none")]
        truth: Option<&'static str>,
        /// Capture → decision, µs.
        latency_us: u64,
        /// Capture time, µs since the epoch (the camera's wall clock).
        capture_time_us: i64,
        /// Where the frame came from: `part_id`, `origin`, `capture_clock`.
        #[serde(flatten)]
        provenance: Provenance,
        /// Why the frame could not be judged (unreadable frames), naming the file when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Where the deciding model found defects, in frame pixels (the cloud's when the cloud decided, the
        /// prescreen's otherwise); omitted when there are none.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        regions: Vec<Region>,
    },
    /// A late verdict for a frame decided locally.
    Reconciliation {
        /// Sequence number.
        seq: u64,
        /// Frame id.
        frame_id: String,
        /// The provisional local action.
        local_action: Action,
        /// The action the cloud verdict implies.
        cloud_action: Action,
        /// Cloud label.
        cloud_label: String,
        /// Whether they agree; `false` is a correction.
        agree: bool,
        /// How long after the deadline the verdict came, µs.
        late_by_us: u64,
        /// Where the cloud model found defects, in frame pixels.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        regions: Vec<Region>,
        /// Where the frame came from: `part_id`, `origin`, `capture_clock`.
        #[serde(flatten)]
        provenance: Provenance,
    },
    /// The verdict on an audit sample of a passed frame.
    Audit {
        /// Sequence number.
        seq: u64,
        /// Frame id.
        frame_id: String,
        /// Prescreen defect score.
        edge_score: f32,
        /// Cloud label.
        cloud_label: String,
        /// The prescreen passed a frame the cloud found defective.
        miss: bool,
        /// Where the cloud model found defects, in frame pixels.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        regions: Vec<Region>,
        /// Where the frame came from: `part_id`, `origin`, `capture_clock`.
        #[serde(flatten)]
        provenance: Provenance,
    },
}

/// A forwarded frame waiting for its verdict.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Sequence number.
    pub seq: u64,
    /// Frame id.
    pub frame_id: String,
    /// Camera id.
    pub camera_id: String,
    /// Capture instant.
    pub captured_at: Instant,
    /// Capture time, µs since the epoch.
    pub capture_time_us: i64,
    /// Prescreen score.
    pub edge_score: f32,
    /// The prescreen's defect class, when it has classes and flagged one (for a per-class offline policy).
    pub edge_label: Option<String>,
    /// Ground truth if known.
    pub truth: Option<&'static str>,
    /// True for audit samples (already decided `pass`).
    pub audit: bool,
    /// Where the frame came from.
    pub provenance: Provenance,
}

/// A frame taken from the camera queue, registered before it is scored so that its deadline runs from
/// capture whatever the model does.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Sequence number.
    pub seq: u64,
    /// Frame id.
    pub frame_id: String,
    /// Camera id.
    pub camera_id: String,
    /// Capture instant.
    pub captured_at: Instant,
    /// Capture time, µs since the epoch.
    pub capture_time_us: i64,
    /// Ground truth if known.
    pub truth: Option<&'static str>,
    /// Where the frame came from.
    pub provenance: Provenance,
}

#[derive(Debug)]
enum State {
    /// Taken for scoring; the prescreen has not answered yet.
    Scoring(Captured),
    /// Decided at the deadline before the prescreen answered; whatever it answers later adds no decision.
    DecidedEarly(Action),
    /// Suspect awaiting its verdict before the deadline.
    Waiting(Pending),
    /// Decided locally; waiting for the late verdict.
    Provisional {
        pending: Pending,
        action: Action,
        deadline: Instant,
    },
    /// Audit sample awaiting its verdict.
    Audit(Pending),
}

/// Decision state, free of I/O.
#[derive(Debug)]
pub struct Book {
    rules: OfflineRules,
    deadline: Duration,
    frames: HashMap<u64, State>,
    /// Waiting suspects the outbox does not hold (see [`Book::unheld`]).
    unheld: std::collections::HashSet<u64>,
    clock: Arc<dyn Clock>,
}

/// The regions a verdict names, in frame pixels.
fn regions(v: &Verdict) -> Vec<Region> {
    v.regions.iter().map(Region::from).collect()
}

fn cloud_action(v: &Verdict) -> Action {
    if v.defective || !v.error.is_empty() {
        Action::Reject
    } else {
        Action::Pass
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The offline policy: what a suspect without a verdict gets at its deadline, by the prescreen's defect
/// class first (when the prescreen has classes and a rule names the class), then by score band.
#[derive(Debug, Clone)]
pub struct OfflineRules {
    default: OfflinePolicy,
    bands: Vec<(f32, OfflinePolicy)>,
    classes: HashMap<String, OfflinePolicy>,
}

impl OfflineRules {
    /// Rules from the decision config (bands validated there: increasing `below`).
    pub fn from_config(c: &crate::config::DecisionConfig) -> Self {
        Self {
            default: c.offline_policy,
            bands: c.score_bands.iter().map(|b| (b.below, b.policy)).collect(),
            classes: c
                .class_policies
                .iter()
                .map(|p| (p.class.clone(), p.policy))
                .collect(),
        }
    }

    /// The provisional action for a suspect with prescreen score `score` and defect class `class`.
    pub fn action(&self, score: f32, class: Option<&str>) -> Action {
        let by_class = class.and_then(|c| self.classes.get(c)).copied();
        let policy = by_class.unwrap_or_else(|| {
            self.bands
                .iter()
                .find(|(below, _)| score < *below)
                .map_or(self.default, |(_, p)| *p)
        });
        match policy {
            OfflinePolicy::Reject => Action::Reject,
            OfflinePolicy::PassAndQuarantine => Action::Quarantine,
        }
    }
}

impl From<OfflinePolicy> for OfflineRules {
    fn from(default: OfflinePolicy) -> Self {
        Self {
            default,
            bands: Vec::new(),
            classes: HashMap::new(),
        }
    }
}

/// Whether the cloud's action confirms a provisional local one. A quarantined part passed the line and is
/// held: the cloud agrees if it finds it good.
fn agrees(local: Action, cloud: Action) -> bool {
    match local {
        Action::Quarantine => cloud == Action::Pass,
        other => other == cloud,
    }
}

impl Book {
    /// An empty book on the machine's clock.
    pub fn new(rules: impl Into<OfflineRules>, deadline: Duration) -> Self {
        Self::with_clock(rules, deadline, Arc::new(SystemClock))
    }

    /// An empty book reading time from `clock`.
    pub fn with_clock(
        rules: impl Into<OfflineRules>,
        deadline: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            rules: rules.into(),
            deadline,
            frames: HashMap::new(),
            unheld: Default::default(),
            clock,
        }
    }

    /// The book's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The deadline of a frame captured at `captured_at`.
    pub fn deadline_of(&self, captured_at: Instant) -> Instant {
        captured_at + self.deadline
    }

    /// Frames still waiting for a decision or a verdict.
    pub fn open(&self) -> usize {
        self.frames.len()
    }

    /// Registers a frame taken for scoring: from now on its deadline runs ([`Book::expire`]).
    pub fn captured(&mut self, c: Captured) {
        self.frames.insert(c.seq, State::Scoring(c));
    }

    /// A decision the prescreen took at once (pass, unreadable, refused). Returns it unless the frame was
    /// already decided at its deadline while the prescreen had not answered.
    pub fn immediate(&mut self, e: Event) -> Option<Event> {
        if let Event::Decision { seq, .. } = &e {
            match self.frames.remove(seq) {
                Some(State::DecidedEarly(_)) => return None,
                Some(State::Scoring(_)) | None => {}
                // Not a frame being scored: leave it as it was.
                Some(other) => {
                    self.frames.insert(*seq, other);
                }
            }
        }
        Some(e)
    }

    /// Registers a forwarded frame. Suspects wait; audits were decided `pass` by the caller. A suspect
    /// already decided at its deadline (the prescreen answered late) waits for its verdict as a local
    /// decision would. Returns whether the frame still needs a deadline timer.
    pub fn insert(&mut self, p: Pending) -> bool {
        let seq = p.seq;
        let (state, timer) = match self.frames.remove(&seq) {
            _ if p.audit => (State::Audit(p), false),
            Some(State::DecidedEarly(action)) => {
                let deadline = self.deadline_of(p.captured_at);
                (
                    State::Provisional {
                        pending: p,
                        action,
                        deadline,
                    },
                    false,
                )
            }
            _ => (State::Waiting(p), true),
        };
        self.frames.insert(seq, state);
        timer
    }

    /// The outbox does not hold `seq` (evicted, refused, or its write failed): no verdict can be counted on.
    /// An audit or provisional entry is forgotten at once; a waiting suspect is still decided at its deadline
    /// (or by a verdict, if one was sent before and comes in time), but finally, not provisionally, so
    /// nothing waits for a reconciliation that cannot come. Keeps the book bounded.
    pub fn unheld(&mut self, seq: u64) {
        match self.frames.get(&seq) {
            Some(State::Waiting(_)) => {
                self.unheld.insert(seq);
            }
            Some(_) => {
                self.frames.remove(&seq);
            }
            None => {}
        }
    }

    /// The broker refused `seq` (or would: too large), so no verdict can come. A waiting suspect is decided
    /// now, locally and for good, with `reason` in the decision's detail; a provisional decision stands and
    /// an audit sample is forgotten, as for a frame the outbox does not hold ([`Book::unheld`]).
    pub fn refused(&mut self, seq: u64, reason: &str) -> Option<Event> {
        if !matches!(self.frames.get(&seq), Some(State::Waiting(_))) {
            self.unheld(seq);
            return None;
        }
        let Some(State::Waiting(p)) = self.frames.remove(&seq) else {
            return None;
        };
        self.unheld.remove(&seq);
        let action = self.rules.action(p.edge_score, p.edge_label.as_deref());
        let detail = format!("{reason}; decided locally for good");
        Some(final_local(seq, p, action, self.clock.now(), detail))
    }

    /// The deadline of `seq` passed: decide locally if still waiting, or still being scored.
    pub fn expire(&mut self, seq: u64) -> Option<Event> {
        let now = self.clock.now();
        if matches!(self.frames.get(&seq), Some(State::Scoring(_))) {
            let Some(State::Scoring(c)) = self.frames.remove(&seq) else {
                return None;
            };
            // No score: the policy for an unknown score (the default, above every band).
            let action = self.rules.action(f32::INFINITY, None);
            self.frames.insert(seq, State::DecidedEarly(action));
            return Some(Event::Decision {
                seq,
                frame_id: c.frame_id,
                camera_id: c.camera_id,
                action,
                source: Source::Unscored,
                provisional: false,
                edge_score: 1.0,
                cloud_label: None,
                truth: c.truth,
                latency_us: micros(now.saturating_duration_since(c.captured_at)),
                capture_time_us: c.capture_time_us,
                provenance: c.provenance,
                detail: Some("the prescreen had not answered by the deadline".into()),
                regions: Vec::new(),
            });
        }
        if !matches!(self.frames.get(&seq), Some(State::Waiting(_))) {
            return None;
        }
        let Some(State::Waiting(p)) = self.frames.remove(&seq) else {
            return None;
        };
        let action = self.rules.action(p.edge_score, p.edge_label.as_deref());
        if self.unheld.remove(&seq) {
            let detail = "not held by the outbox: decided locally for good".to_string();
            return Some(final_local(seq, p, action, now, detail));
        }
        let event = Event::Decision {
            seq,
            frame_id: p.frame_id.clone(),
            camera_id: p.camera_id.clone(),
            action,
            source: Source::LocalFallback,
            provisional: true,
            edge_score: p.edge_score,
            cloud_label: None,
            truth: p.truth,
            latency_us: micros(now.saturating_duration_since(p.captured_at)),
            capture_time_us: p.capture_time_us,
            provenance: p.provenance.clone(),
            detail: None,
            regions: Vec::new(),
        };
        let deadline = self.deadline_of(p.captured_at);
        self.frames.insert(
            seq,
            State::Provisional {
                pending: p,
                action,
                deadline,
            },
        );
        Some(event)
    }

    /// A verdict arrived now. Returns the event it causes: none for repeated verdicts, and for frames from
    /// before a restart a reconciliation if the outbox remembered a local decision (`known`).
    pub fn verdict(&mut self, v: &Verdict, known: Option<&Acked>) -> Option<Event> {
        let now = self.clock.now();
        self.unheld.remove(&v.seq);
        let Some(state) = self.frames.remove(&v.seq) else {
            let known = known?;
            if known.reason == ForwardReason::Audit {
                // An audit sample from before a restart: its outcome still counts.
                return Some(Event::Audit {
                    seq: v.seq,
                    frame_id: v.frame_id.clone(),
                    edge_score: known.score,
                    cloud_label: v.label.clone(),
                    miss: cloud_action(v) == Action::Reject,
                    provenance: known.provenance.clone(),
                    regions: regions(v),
                });
            }
            let local = known.local_action?;
            let cloud = cloud_action(v);
            let deadline_us = known.capture_time_us + micros(self.deadline) as i64;
            return Some(Event::Reconciliation {
                seq: v.seq,
                frame_id: v.frame_id.clone(),
                local_action: local,
                cloud_action: cloud,
                cloud_label: v.label.clone(),
                agree: agrees(local, cloud),
                late_by_us: (self.clock.wall_us() - deadline_us).max(0) as u64,
                provenance: known.provenance.clone(),
                regions: regions(v),
            });
        };
        match state {
            State::Waiting(p) => Some(Event::Decision {
                seq: v.seq,
                frame_id: p.frame_id,
                camera_id: p.camera_id,
                action: cloud_action(v),
                source: Source::Cloud,
                provisional: false,
                edge_score: p.edge_score,
                cloud_label: Some(v.label.clone()),
                truth: p.truth,
                latency_us: micros(now.saturating_duration_since(p.captured_at)),
                capture_time_us: p.capture_time_us,
                provenance: p.provenance,
                detail: None,
                regions: regions(v),
            }),
            State::Provisional {
                pending,
                action,
                deadline,
            } => {
                let cloud = cloud_action(v);
                let agree = agrees(action, cloud);
                Some(Event::Reconciliation {
                    seq: v.seq,
                    frame_id: pending.frame_id,
                    local_action: action,
                    cloud_action: cloud,
                    cloud_label: v.label.clone(),
                    agree,
                    late_by_us: micros(now.saturating_duration_since(deadline)),
                    provenance: pending.provenance,
                    regions: regions(v),
                })
            }
            // A verdict cannot come before the frame was forwarded; keep the state as it was.
            state @ (State::Scoring(_) | State::DecidedEarly(_)) => {
                self.frames.insert(v.seq, state);
                None
            }
            State::Audit(p) => Some(Event::Audit {
                seq: v.seq,
                frame_id: p.frame_id,
                edge_score: p.edge_score,
                cloud_label: v.label.clone(),
                miss: cloud_action(v) == Action::Reject,
                provenance: p.provenance,
                regions: regions(v),
            }),
        }
    }

    /// Decides every frame still waiting, at shutdown. Provisional and audit entries are dropped.
    pub fn drain(&mut self) -> Vec<Event> {
        let waiting: Vec<u64> = self
            .frames
            .iter()
            .filter(|(_, s)| matches!(s, State::Waiting(_) | State::Scoring(_)))
            .map(|(k, _)| *k)
            .collect();
        waiting
            .into_iter()
            .filter_map(|seq| self.expire(seq))
            .collect()
    }
}

/// What the decision stage hands to the sink.
#[derive(Debug)]
pub enum SinkItem {
    /// An event to write.
    Event(Event),
    /// Fired once every event before it has been written (handed to the operating system). The outbox forgets
    /// a frame only after its verdict's event passed such a barrier, so a crash cannot lose the event.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

impl SinkItem {
    /// The event to write, or `None` for a barrier, which this call answers. The sink calls it in order,
    /// after writing (and flushing) every earlier event.
    pub fn into_event(self) -> Option<Event> {
        match self {
            SinkItem::Event(e) => Some(e),
            SinkItem::Barrier(done) => {
                let _ = done.send(());
                None
            }
        }
    }
}

/// Inputs of the decision stage.
#[derive(Debug)]
pub enum Input {
    /// A frame decided immediately (passed, or unreadable).
    Immediate(Event),
    /// A forwarded frame accepted by the outbox.
    Forwarded(Pending),
    /// A verdict from the cloud, with what the outbox remembered about the frame.
    Verdict(Verdict, Option<Acked>),
    /// Fires once every event caused by the inputs before it has been written by the sink.
    Written(tokio::sync::oneshot::Sender<()>),
    /// Forwarded frames the outbox does not hold: evicted, refused, or not written ([`Book::unheld`]).
    Unheld(Vec<u64>),
    /// A forwarded frame the broker refused, and why ([`Book::refused`]).
    Refused(u64, String),
    /// A frame taken for scoring ([`Book::captured`]).
    Captured(Captured),
}

/// A final local decision of a waiting suspect that can get no verdict, decided `now`.
fn final_local(seq: u64, p: Pending, action: Action, now: Instant, detail: String) -> Event {
    Event::Decision {
        seq,
        frame_id: p.frame_id,
        camera_id: p.camera_id,
        action,
        source: Source::LocalFallback,
        provisional: false,
        edge_score: p.edge_score,
        cloud_label: None,
        truth: p.truth,
        latency_us: micros(now.saturating_duration_since(p.captured_at)),
        capture_time_us: p.capture_time_us,
        provenance: p.provenance,
        detail: Some(detail),
        regions: Vec::new(),
    }
}

/// A stored edge label as a class for the offline rules ("" is none).
fn label(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The offline action for a suspect a crash left undecided.
pub fn restart_action(r: &crate::outbox::Undecided, rules: &OfflineRules) -> Action {
    rules.action(r.score, label(&r.edge_label))
}

/// The decision for a suspect that a crash left undecided past its deadline.
pub fn decided_at_restart(
    r: &crate::outbox::Undecided,
    rules: &OfflineRules,
    clock: &dyn Clock,
) -> Event {
    let action = restart_action(r, rules);
    Event::Decision {
        seq: r.seq,
        frame_id: r.frame_id.clone(),
        camera_id: r.camera_id.clone(),
        action,
        source: Source::LocalFallback,
        provisional: true,
        edge_score: r.score,
        cloud_label: None,
        truth: None,
        latency_us: (clock.wall_us() - r.capture_time_us).max(0) as u64,
        capture_time_us: r.capture_time_us,
        provenance: r.provenance.clone(),
        detail: Some("decided at restart: the edge stopped before this frame's deadline".into()),
        regions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierline_shared::time::ManualClock;

    /// A book on a manual clock, with the instant of "capture".
    fn book(
        rules: impl Into<OfflineRules>,
        deadline: Duration,
    ) -> (Book, Arc<ManualClock>, Instant) {
        let clock = Arc::new(ManualClock::new());
        let t0 = clock.now();
        (Book::with_clock(rules, deadline, clock.clone()), clock, t0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pending(seq: u64, at: Instant, audit: bool) -> Pending {
        Pending {
            seq,
            frame_id: format!("e-{seq}"),
            camera_id: "c".into(),
            captured_at: at,
            capture_time_us: 0,
            edge_score: 0.9,
            edge_label: None,
            truth: None,
            audit,
            provenance: Provenance::default(),
        }
    }

    fn verdict(seq: u64, defective: bool) -> Verdict {
        Verdict {
            seq,
            defective,
            label: if defective { "spot" } else { "good" }.into(),
            ..Verdict::default()
        }
    }

    #[test]
    fn a_refused_suspect_is_decided_at_once_and_for_good() {
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        b.insert(pending(1, t0, false));
        b.insert(pending(2, t0, false));
        b.insert(pending(3, t0, true));
        clock.advance(ms(10));
        let Some(Event::Decision {
            provisional,
            source,
            detail,
            latency_us,
            ..
        }) = b.refused(1, "the broker refused the frame: not authorized")
        else {
            panic!("a waiting suspect that is refused is decided");
        };
        assert!(!provisional);
        assert_eq!(source, Source::LocalFallback);
        assert_eq!(latency_us, 10_000);
        assert!(detail.unwrap().contains("not authorized"));
        // Its deadline passes without a second decision.
        clock.advance(ms(100));
        assert!(b.expire(1).is_none());
        // A provisional decision stands; the entry leaves the book, as does a refused audit sample.
        assert!(matches!(
            b.expire(2),
            Some(Event::Decision {
                provisional: true,
                ..
            })
        ));
        assert!(b.refused(2, "refused").is_none());
        assert!(b.refused(3, "refused").is_none());
        assert!(b.verdict(&verdict(2, true), None).is_none());
        assert!(b.verdict(&verdict(3, true), None).is_none());
    }

    #[test]
    fn frames_the_outbox_does_not_hold_leave_the_book() {
        // Refused audit samples, suspects evicted before their deadline and suspects evicted after their
        // provisional decision: none of them can get a verdict, so none may stay in the book.
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        for seq in 0..3000u64 {
            b.insert(pending(seq, t0, seq % 3 == 0));
            if seq % 3 != 2 {
                b.unheld(seq);
            }
        }
        clock.advance(ms(100));
        for seq in 0..3000u64 {
            if let Some(Event::Decision { provisional, .. }) = b.expire(seq) {
                assert_eq!(
                    provisional,
                    seq % 3 == 2,
                    "seq {seq}: only a held suspect is decided provisionally"
                );
            }
        }
        for seq in (2..3000u64).step_by(3) {
            b.unheld(seq);
        }
        assert_eq!(
            b.open(),
            0,
            "the book holds nothing that can no longer be settled"
        );
    }

    #[test]
    fn verdict_in_time_decides_and_later_expiry_is_ignored() {
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        b.insert(pending(1, t0, false));
        clock.advance(ms(10));
        let e = b.verdict(&verdict(1, true), None).unwrap();
        assert!(matches!(
            e,
            Event::Decision {
                action: Action::Reject,
                source: Source::Cloud,
                provisional: false,
                latency_us: 10_000,
                capture_time_us: 0,
                ..
            }
        ));
        clock.advance(ms(90));
        assert!(b.expire(1).is_none());
        assert!(
            b.verdict(&verdict(1, true), None).is_none(),
            "a duplicate verdict causes nothing"
        );
        assert_eq!(b.open(), 0);
    }

    #[test]
    fn late_verdict_reconciles_with_the_fallback() {
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        b.insert(pending(2, t0, false));
        clock.advance(ms(100));
        let e = b.expire(2).unwrap();
        assert!(matches!(
            e,
            Event::Decision {
                action: Action::Reject,
                source: Source::LocalFallback,
                provisional: true,
                ..
            }
        ));
        clock.advance(ms(250));
        let e = b.verdict(&verdict(2, false), None).unwrap();
        assert_eq!(
            e,
            Event::Reconciliation {
                seq: 2,
                frame_id: "e-2".into(),
                local_action: Action::Reject,
                cloud_action: Action::Pass,
                cloud_label: "good".into(),
                agree: false,
                late_by_us: 250_000,
                provenance: Provenance::default(),
                regions: Vec::new(),
            }
        );
    }

    #[test]
    fn quarantine_policy_and_audits() {
        let (mut b, clock, t0) = book(OfflinePolicy::PassAndQuarantine, ms(1));
        b.insert(pending(3, t0, false));
        clock.advance(ms(1));
        let e = b.expire(3).unwrap();
        assert!(matches!(
            e,
            Event::Decision {
                action: Action::Quarantine,
                ..
            }
        ));
        b.insert(pending(4, t0, true));
        assert!(b.expire(4).is_none(), "audits were decided already");
        let e = b.verdict(&verdict(4, true), None).unwrap();
        assert!(matches!(e, Event::Audit { miss: true, .. }));
    }

    #[test]
    fn verdict_after_a_restart_reconciles_from_the_outbox() {
        let (mut b, clock, _) = book(OfflinePolicy::Reject, ms(100));
        let known = Acked {
            seq: 9,
            local_action: Some(Action::Reject),
            capture_time_us: clock.wall_us(),
            image_sha256: Vec::new(),
            reason: ForwardReason::Suspect,
            score: 0.9,
            provenance: Provenance::default(),
        };
        clock.advance(ms(400));
        let e = b.verdict(&verdict(9, false), Some(&known)).unwrap();
        assert!(matches!(
            e,
            Event::Reconciliation {
                local_action: Action::Reject,
                cloud_action: Action::Pass,
                agree: false,
                late_by_us: 300_000,
                ..
            }
        ));
        let undecided = Acked {
            local_action: None,
            ..known.clone()
        };
        assert!(b.verdict(&verdict(9, false), Some(&undecided)).is_none());
        // An audit sample from before the restart: its outcome is reported, a miss as a miss.
        let audit = Acked {
            local_action: None,
            reason: ForwardReason::Audit,
            score: 0.2,
            ..known
        };
        assert!(matches!(
            b.verdict(&verdict(9, true), Some(&audit)),
            Some(Event::Audit { miss: true, .. })
        ));
    }

    #[test]
    fn score_bands_choose_the_policy() {
        let rules = OfflineRules {
            default: OfflinePolicy::Reject,
            bands: vec![(0.7, OfflinePolicy::PassAndQuarantine)],
            classes: HashMap::new(),
        };
        assert_eq!(rules.action(0.6, None), Action::Quarantine);
        assert_eq!(rules.action(0.7, None), Action::Reject);
        assert_eq!(
            OfflineRules::from(OfflinePolicy::PassAndQuarantine).action(0.99, None),
            Action::Quarantine
        );
    }

    #[test]
    fn a_class_rule_comes_before_the_score_bands() {
        let rules = OfflineRules {
            default: OfflinePolicy::PassAndQuarantine,
            bands: vec![(0.7, OfflinePolicy::PassAndQuarantine)],
            classes: [
                ("crack".to_string(), OfflinePolicy::Reject),
                ("stain".to_string(), OfflinePolicy::PassAndQuarantine),
            ]
            .into(),
        };
        // A weak crack is rejected although its band would quarantine it.
        assert_eq!(rules.action(0.55, Some("crack")), Action::Reject);
        assert_eq!(rules.action(0.99, Some("stain")), Action::Quarantine);
        // Classes without a rule, and suspects without a class, follow the bands.
        assert_eq!(rules.action(0.55, Some("spot")), Action::Quarantine);
        assert_eq!(rules.action(0.55, None), Action::Quarantine);
    }

    #[test]
    fn drain_decides_everything_waiting() {
        let (mut b, _, t0) = book(OfflinePolicy::Reject, Duration::from_secs(60));
        for s in 0..5 {
            b.insert(pending(s, t0, s == 4));
        }
        assert_eq!(b.drain().len(), 4);
    }

    #[test]
    fn every_line_says_where_its_frame_came_from() {
        use crate::provenance::CaptureClock;
        let from = Provenance::from_text("P-9", "/data/l1/9.png", CaptureClock::Stream);
        let with = |mut p: Pending| {
            p.provenance = from.clone();
            p
        };
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        // A cloud decision, a local fallback and its correction, an audit outcome, an unscored decision.
        b.insert(with(pending(1, t0, false)));
        b.insert(with(pending(2, t0, false)));
        b.insert(with(pending(3, t0, true)));
        b.captured(Captured {
            provenance: from.clone(),
            ..captured(4, t0)
        });
        let mut events = vec![b.verdict(&verdict(1, true), None).unwrap()];
        clock.advance(ms(100));
        events.push(b.expire(2).unwrap());
        events.push(b.expire(4).unwrap());
        events.push(b.verdict(&verdict(2, false), None).unwrap());
        events.push(b.verdict(&verdict(3, false), None).unwrap());
        // After a restart: a reconciliation from what the outbox kept, and a decision at restart.
        let known = Acked {
            seq: 5,
            local_action: Some(Action::Reject),
            capture_time_us: 0,
            image_sha256: Vec::new(),
            reason: ForwardReason::Suspect,
            score: 0.9,
            provenance: from.clone(),
        };
        events.push(b.verdict(&verdict(5, false), Some(&known)).unwrap());
        let undecided = crate::outbox::Undecided {
            seq: 6,
            frame_id: "e-6".into(),
            camera_id: "c".into(),
            capture_time_us: 0,
            score: 0.9,
            provenance: from.clone(),
            edge_label: String::new(),
        };
        events.push(decided_at_restart(&undecided, &b.rules, &*clock));
        assert_eq!(events.len(), 7);
        for e in &events {
            let line = serde_json::to_value(e).unwrap();
            assert_eq!(line["part_id"], "P-9", "{line}");
            assert_eq!(line["origin"], "/data/l1/9.png", "{line}");
            assert_eq!(line["capture_clock"], "stream", "{line}");
        }
        // A frame without part or origin: those keys are left out, the clock is still named.
        let (mut b, _, t0) = book(OfflinePolicy::Reject, ms(100));
        b.insert(pending(7, t0, false));
        let line = serde_json::to_value(b.verdict(&verdict(7, true), None).unwrap()).unwrap();
        assert!(
            line.get("part_id").is_none() && line.get("origin").is_none(),
            "{line}"
        );
        assert_eq!(line["capture_clock"], "arrival");
        assert_eq!(line["event"], "decision");
    }

    fn captured(seq: u64, at: Instant) -> Captured {
        Captured {
            seq,
            frame_id: format!("e-{seq}"),
            camera_id: "c".into(),
            captured_at: at,
            capture_time_us: 0,
            truth: None,
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn a_frame_the_prescreen_has_not_answered_is_decided_at_its_deadline() {
        let (mut b, clock, t0) = book(OfflinePolicy::Reject, ms(100));
        b.captured(captured(1, t0));
        b.captured(captured(2, t0));
        b.captured(captured(3, t0));
        // Frame 1 is scored in time and passed: the deadline then finds nothing to do.
        let pass = Event::Decision {
            seq: 1,
            frame_id: "e-1".into(),
            camera_id: "c".into(),
            action: Action::Pass,
            source: Source::Edge,
            provisional: false,
            edge_score: 0.1,
            cloud_label: None,
            truth: None,
            latency_us: 10_000,
            capture_time_us: 0,
            provenance: Provenance::default(),
            detail: None,
            regions: Vec::new(),
        };
        assert_eq!(b.immediate(pass.clone()), Some(pass.clone()));
        clock.advance(ms(100));
        assert!(b.expire(1).is_none());
        // Frames 2 and 3 are still being scored at their deadline: decided locally, once.
        for seq in [2, 3] {
            assert!(matches!(
                b.expire(seq),
                Some(Event::Decision {
                    action: Action::Reject,
                    source: Source::Unscored,
                    provisional: false,
                    latency_us: 100_000,
                    ..
                })
            ));
        }
        // The prescreen answers late: frame 2 passes (no second decision), frame 3 is a suspect and is
        // forwarded; its verdict reconciles the early decision.
        let mut late_pass = pass;
        if let Event::Decision { seq, .. } = &mut late_pass {
            *seq = 2;
        }
        assert!(b.immediate(late_pass).is_none(), "no second decision");
        assert!(!b.insert(pending(3, t0, false)), "no second deadline");
        assert!(matches!(
            b.verdict(&verdict(3, false), None),
            Some(Event::Reconciliation {
                local_action: Action::Reject,
                cloud_action: Action::Pass,
                agree: false,
                ..
            })
        ));
        assert_eq!(b.open(), 0, "nothing left behind");
    }
}
