//! The prescreen stage: scores camera frames with the edge model and routes them.
//!
//! - defect score ≥ threshold → suspect: to the outbox intake (forwarded, decision waits for the cloud);
//! - below → pass: decided at once; with probability `audit_rate` also forwarded as an audit sample;
//! - unreadable image → rejected at once as a precaution, logged with the camera and file, counted.
//!
//! Every frame taken from the queue gets the next sequence number and is registered with the decision stage
//! at once, before it is scored: its deadline runs from capture whatever the model does. Scoring runs on the model runner's
//! threads; up to `concurrency` frames are in flight so the runner can batch.

use crate::camera::{self, CapturedFrame};
use crate::decisions::{Action, Captured, Event, Input, Pending, Source};
use crate::intake::Forward;
use crate::outbox::{OutboxError, Record, SeqAllocator};
use crate::provenance::{CaptureClock, Provenance};
use crate::stats::{self, EdgeStats};
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;
use tierline_shared::runner::{InferError, Score};
use tierline_shared::serving::ServedModel;
use tierline_shared::wire::{self, ForwardReason};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of the prescreen stage.
pub struct PrescreenSettings {
    /// Edge id.
    pub edge_id: String,
    /// Suspect threshold overriding the serving model's manifest (unset: the manifest's, which a model
    /// change may move).
    pub threshold: Option<f32>,
    /// Audit sampling rate.
    pub audit_rate: f64,
    /// Audit sampling seed.
    pub audit_seed: u64,
    /// Frames scored concurrently.
    pub concurrency: usize,
    /// Largest image the wire accepts.
    pub max_image_bytes: usize,
}

/// The prescreen stage: its settings and what it reads from and writes to.
pub struct Prescreen {
    /// Settings.
    pub settings: PrescreenSettings,
    /// The served edge model.
    pub model: Arc<ServedModel>,
    /// Sequence numbers for accepted frames.
    pub seqs: SeqAllocator,
    /// Frames from the cameras.
    pub frames: flume::Receiver<CapturedFrame>,
    /// Frames to forward, to the outbox intake.
    pub intake: mpsc::Sender<Forward>,
    /// Immediate decisions, to the decision stage.
    pub decisions: mpsc::Sender<Input>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

impl Prescreen {
    /// Runs until shutdown (or the camera queue closes), finishing frames already being scored.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), OutboxError> {
        // Never fails: an outbox that cannot number frames makes them local decisions (`SeqAllocator`).
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.settings.audit_seed);
        let mut scoring: JoinSet<(u64, CapturedFrame, Result<Score, InferError>)> = JoinSet::new();
        // Frames taken from the camera queue and registered, waiting for a free scoring slot. Frames are taken
        // as they come, so each is registered within moments of capture and a stalled model delays no
        // deadline: the decision stage decides a frame locally when its deadline passes unscored. Beyond
        // `held` waiting frames the oldest is not scored at all (it keeps its registration, and so its
        // decision at the deadline), counted in `frames_unscored`.
        let mut waiting: VecDeque<(u64, CapturedFrame)> = VecDeque::new();
        let held = self.settings.concurrency.max(1) * 4;
        let mut open = true;
        while open || !scoring.is_empty() || !waiting.is_empty() {
            while scoring.len() < self.settings.concurrency {
                let Some((seq, frame)) = waiting.pop_front() else {
                    break;
                };
                let model = self.model.clone();
                scoring.spawn(async move {
                    let r = model.score(frame.image.clone()).await;
                    (seq, frame, r)
                });
            }
            tokio::select! {
                // Finish scored frames before taking new ones.
                biased;
                Some(done) = scoring.join_next(), if !scoring.is_empty() => {
                    // A scoring task that panicked leaves its frame to its deadline.
                    let Ok((seq, frame, result)) = done else { continue };
                    self.route(&mut rng, seq, frame, result).await;
                }
                frame = self.frames.recv_async(), if open => match frame {
                    Ok(frame) => {
                        let seq = self.seqs.next().await;
                        let _ = self
                            .decisions
                            .send(Input::Captured(Captured {
                                seq,
                                frame_id: wire::frame_id(&self.settings.edge_id, seq),
                                camera_id: frame.camera_id.to_string(),
                                captured_at: frame.captured_at,
                                capture_time_us: frame.capture_time_us,
                                truth: frame.truth.map(|t| t.as_str()),
                                provenance: provenance(&frame),
                            }))
                            .await;
                        waiting.push_back((seq, frame));
                        if waiting.len() > held && waiting.pop_front().is_some() {
                            stats::inc(&self.stats.frames_unscored);
                        }
                    }
                    Err(_) => open = false,
                },
                _ = shutdown.cancelled(), if open => open = false,
            }
        }
        Ok(())
    }

    /// Decides or forwards one scored frame.
    async fn route(
        &self,
        rng: &mut rand::rngs::SmallRng,
        seq: u64,
        frame: CapturedFrame,
        result: Result<Score, InferError>,
    ) {
        let (s, intake, decisions, stats) =
            (&self.settings, &self.intake, &self.decisions, &*self.stats);
        let frame_id = wire::frame_id(&s.edge_id, seq);
        let truth = frame.truth.map(|t| t.as_str());
        let provenance = provenance(&frame);
        let immediate = |action,
                         source,
                         edge_score,
                         detail: Option<String>,
                         regions: Vec<tierline_shared::regions::Region>| {
            Input::Immediate(Event::Decision {
                seq,
                frame_id: frame_id.clone(),
                camera_id: frame.camera_id.to_string(),
                action,
                source,
                provisional: false,
                edge_score,
                cloud_label: None,
                truth,
                latency_us: u64::try_from(frame.captured_at.elapsed().as_micros())
                    .unwrap_or(u64::MAX),
                capture_time_us: frame.capture_time_us,
                provenance: provenance.clone(),
                detail,
                regions,
            })
        };
        let score = match result {
            Ok(score) => score,
            Err(e) => {
                stats::inc(&stats.frames_unreadable);
                tracing::warn!(
                    camera = %frame.camera_id,
                    file = frame.origin.as_deref().unwrap_or("-"),
                    seq,
                    error = %e,
                    "Frame could not be scored; rejecting it as a precaution. Check the camera's image output."
                );
                let detail = format!("{}: {e}", frame.origin.as_deref().unwrap_or("camera frame"));
                let _ = decisions
                    .send(immediate(
                        Action::Reject,
                        Source::Unreadable,
                        1.0,
                        Some(detail),
                        Vec::new(),
                    ))
                    .await;
                return;
            }
        };
        let suspect = s
            .threshold
            .map_or(score.defective, |t| score.defect_score >= t);
        let audit = !suspect && s.audit_rate > 0.0 && rng.random_bool(s.audit_rate);
        if !suspect {
            stats::inc(&stats.frames_passed);
            let _ = decisions
                .send(immediate(
                    Action::Pass,
                    Source::Edge,
                    score.defect_score,
                    None,
                    score.regions.clone(),
                ))
                .await;
            if !audit {
                return;
            }
        }
        // A frame the camera decoded itself (H.264) is encoded once, here, when it is forwarded.
        let (image, encoding) = if tierline_shared::rawframe::is_raw(&frame.image) {
            let raw = frame.image.clone();
            match tokio::task::spawn_blocking(move || tierline_shared::rawframe::to_jpeg(&raw))
                .await
            {
                Ok(Ok(jpeg)) => (bytes::Bytes::from(jpeg), wire::ImageEncoding::Jpeg),
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e,
                        _ => "the encoder stopped".to_string(),
                    };
                    tracing::error!(camera = %frame.camera_id, seq, error = %why, "Decoded frame could not be encoded for forwarding; it is decided locally.");
                    stats::inc(&stats.outbox_errors);
                    if suspect {
                        let _ = decisions
                            .send(immediate(
                                Action::Reject,
                                Source::LocalFallback,
                                score.defect_score,
                                Some(format!("frame could not be encoded: {why}")),
                                score.regions.clone(),
                            ))
                            .await;
                    }
                    return;
                }
            }
        } else {
            (frame.image.clone(), frame.encoding)
        };
        if image.len() + 4096 > s.max_image_bytes {
            // Checked before the frame is accepted, so nothing unsendable enters the outbox.
            tracing::error!(
                camera = %frame.camera_id,
                seq,
                bytes = image.len(),
                limit = s.max_image_bytes,
                "Frame too large to forward; it is decided locally. Lower the camera resolution or JPEG quality, or raise mqtt.max_message_bytes."
            );
            stats::inc(&stats.outbox_errors);
            if suspect {
                let detail = format!("frame of {} bytes exceeds the message limit", image.len());
                let _ = decisions
                    .send(immediate(
                        Action::Reject,
                        Source::LocalFallback,
                        score.defect_score,
                        Some(detail),
                        score.regions.clone(),
                    ))
                    .await;
            }
            return;
        }
        let reason = if suspect {
            ForwardReason::Suspect
        } else {
            ForwardReason::Audit
        };
        let pending = Pending {
            seq,
            frame_id: frame_id.clone(),
            camera_id: frame.camera_id.to_string(),
            captured_at: frame.captured_at,
            capture_time_us: frame.capture_time_us,
            edge_score: score.defect_score,
            edge_label: score.defective.then(|| score.label.clone()),
            truth,
            audit,
            provenance: provenance.clone(),
        };
        if crate::outbox::is_volatile(seq) {
            // The outbox cannot number frames (see `SeqAllocator`): nothing is stored or forwarded, and a
            // suspect is decided locally at its deadline under the offline policy.
            stats::inc(&stats.outbox_errors);
            if suspect {
                let _ = decisions.send(Input::Forwarded(pending)).await;
            }
            return;
        }
        let forward = Forward {
            record: Record {
                seq,
                frame_id,
                camera_id: frame.camera_id.to_string(),
                capture_time_us: frame.capture_time_us,
                reason,
                score: score.defect_score,
                encoding: encoding as i32,
                image: image.to_vec(),
                attempts: 0,
                local_action: None,
                image_sha256: wire::image_sha256(&image),
                provenance,
                edge_label: pending.edge_label.clone().unwrap_or_default(),
            },
            pending,
        };
        let _ = intake.send(forward).await;
    }
}

/// Where a camera frame came from, as the decision log, the outbox and the wire record it.
pub fn provenance(frame: &CapturedFrame) -> Provenance {
    Provenance {
        part_id: frame.part_id.clone(),
        origin: frame.origin.clone(),
        clock: match frame.clock {
            camera::CaptureClock::Arrival => CaptureClock::Arrival,
            camera::CaptureClock::Stream => CaptureClock::Stream,
        },
    }
}
