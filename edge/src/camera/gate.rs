//! Which frames a camera keeps: pacing to a target rate below the stream's, or one frame per part trigger.
//!
//! Push sources (streams) ask [`Gate::offer`] as each frame arrives, *before* the expensive work (decode,
//! colour conversion, resize), and skip that work for frames the gate refuses. Pull sources (files,
//! synthetic, HTTP snapshots) wait in [`Gate::due`] and then take one frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A part trigger: take the next frame for this part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The part id, carried with the frame to the decision log, the outbox, the cloud and the review API.
    pub part_id: Arc<str>,
}

/// What the gate said about a kept frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Take {
    /// The part the frame belongs to (trigger mode).
    pub part_id: Option<Arc<str>>,
}

/// Pacing or trigger mode.
pub struct Gate {
    mode: Mode,
}

enum Mode {
    Paced {
        interval: Duration,
        next_due: Option<Instant>,
    },
    Triggered {
        triggers: mpsc::Receiver<Trigger>,
        waiting: VecDeque<Trigger>,
    },
}

impl Gate {
    /// Keeps at most `fps` frames per second.
    pub fn paced(fps: f64) -> Self {
        Self {
            mode: Mode::Paced {
                interval: Duration::from_secs_f64(1.0 / fps),
                next_due: None,
            },
        }
    }

    /// Keeps one frame per trigger received on `triggers`.
    pub fn triggered(triggers: mpsc::Receiver<Trigger>) -> Self {
        Self {
            mode: Mode::Triggered {
                triggers,
                waiting: VecDeque::new(),
            },
        }
    }

    /// Whether the gate runs in trigger mode.
    pub fn is_triggered(&self) -> bool {
        matches!(self.mode, Mode::Triggered { .. })
    }

    /// For a frame arriving now: keep it (`Some`) or skip it.
    pub fn offer(&mut self, now: Instant) -> Option<Take> {
        match &mut self.mode {
            Mode::Paced { interval, next_due } => {
                // A little slack, so that a 30 fps stream paced to 10 fps keeps every third frame despite
                // arrival jitter instead of drifting to every fourth.
                let slack = *interval / 8;
                match next_due {
                    Some(due) if now + slack < *due => None,
                    _ => {
                        let grid = next_due.map_or(now + *interval, |d| d + *interval);
                        *next_due = Some(grid.max(now + *interval / 2));
                        Some(Take::default())
                    }
                }
            }
            Mode::Triggered { triggers, waiting } => {
                while let Ok(t) = triggers.try_recv() {
                    waiting.push_back(t);
                }
                waiting.pop_front().map(|t| Take {
                    part_id: Some(t.part_id),
                })
            }
        }
    }

    /// For pull sources: waits until the next frame is due (the pacing interval or the next trigger).
    /// `None` when no trigger can come any more.
    pub async fn due(&mut self) -> Option<Take> {
        match &mut self.mode {
            Mode::Paced { interval, next_due } => {
                let now = Instant::now();
                let due = next_due.unwrap_or(now);
                tokio::time::sleep_until(due).await;
                // Never catch up with a burst after a slow frame: the next is due one interval on.
                let now = Instant::now();
                *next_due = Some((due + *interval).max(now));
                Some(Take::default())
            }
            Mode::Triggered { triggers, waiting } => {
                if let Some(t) = waiting.pop_front() {
                    return Some(Take {
                        part_id: Some(t.part_id),
                    });
                }
                triggers.recv().await.map(|t| Take {
                    part_id: Some(t.part_id),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_30_fps_stream_paced_to_10_keeps_every_third_frame_despite_jitter() {
        let mut gate = Gate::paced(10.0);
        let start = Instant::now() + Duration::from_secs(1);
        let mut kept = Vec::new();
        for i in 0..90u64 {
            // 33.3 ms apart, up to ±3 ms of arrival jitter.
            let at = start + Duration::from_micros(i * 33_333);
            let t = match i % 4 {
                0 => at + Duration::from_millis(3),
                1 => at - Duration::from_millis(3),
                _ => at,
            };
            if gate.offer(t).is_some() {
                kept.push(i);
            }
        }
        assert_eq!(kept.len(), 30, "kept {kept:?}");
        assert!(kept.windows(2).all(|w| w[1] - w[0] == 3), "kept {kept:?}");
    }

    #[tokio::test]
    async fn each_trigger_takes_exactly_one_frame_with_its_part_id() {
        let (tx, rx) = mpsc::channel(8);
        let mut gate = Gate::triggered(rx);
        let now = Instant::now();
        assert!(gate.offer(now).is_none(), "no trigger, no frame");
        for p in ["P-1", "P-2"] {
            tx.send(Trigger { part_id: p.into() }).await.unwrap();
        }
        let a = gate.offer(now).unwrap();
        let b = gate.offer(now).unwrap();
        assert_eq!(a.part_id.as_deref(), Some("P-1"));
        assert_eq!(b.part_id.as_deref(), Some("P-2"));
        assert!(gate.offer(now).is_none());
        tx.send(Trigger {
            part_id: "P-3".into(),
        })
        .await
        .unwrap();
        assert_eq!(gate.due().await.unwrap().part_id.as_deref(), Some("P-3"));
        drop(tx);
        assert!(gate.due().await.is_none());
    }
}
