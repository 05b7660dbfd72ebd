//! Processing: for each checked frame, dedup → infer → store → publish verdict → acknowledge the MQTT message.
//!
//! - Dedup: a frame that already has a stored verdict is answered with that verdict (so the edge gets its
//!   acknowledgement) and counted as a duplicate; the model does not run again.
//! - Infer: the full model, batched by the runner. An unreadable image gets an error verdict (`label =
//!   "unreadable"`), which is stored and sent like any other, so the edge can let go of the frame.
//! - Store: grouped with the verdicts of other frames ready at the same moment (one transaction, see
//!   [`crate::commit`]), idempotent on `(edge_id, incarnation, seq)` and the image hash; if another worker stored first, its
//!   verdict wins and is sent. A delivery whose key is stored with another image is a different frame:
//!   stored beside it, judged, counted (`identity_conflicts`) and logged.
//! - Acknowledge: after the verdict is stored, in arrival order. If inference or storage fails, no verdict is
//!   stored or sent and the failure is counted; the message is still acknowledged in its turn (holding it
//!   would stall every later acknowledgement), and the edge, which has no verdict, resends the frame after its
//!   timeout. Two deliveries of one frame processed at the same moment may both run the model; the store
//!   keeps the first verdict and both replies carry it.

use crate::commit::Commits;
use crate::ingest::Job;
use crate::order::Ticket;
use crate::stats::{self, CloudStats};
use crate::store::{Store, Stored};
use std::sync::Arc;
use tierline_shared::mqtt::{AsyncClient, Publish, QoS};
use tierline_shared::runner::InferError;
use tierline_shared::serving::ServedModel;
use tierline_shared::topics::TopicKind;
use tierline_shared::wire::{self, ClassScore, Verdict};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

/// Label of verdicts on frames that could not be read.
pub const UNREADABLE: &str = "unreadable";

/// Shared state of the processing stage.
pub struct Processor {
    /// The full model.
    pub model: Arc<ServedModel>,
    /// Verdict store (lookups).
    pub store: Store,
    /// Grouped verdict commits.
    pub commits: Commits,
    /// MQTT client for verdicts and acks.
    pub client: AsyncClient,
    /// Largest message.
    pub max_message_bytes: usize,
    /// Counters.
    pub stats: Arc<CloudStats>,
    /// Finished messages, acknowledged in arrival order.
    pub acks: mpsc::Sender<(Ticket, Publish)>,
}

/// The processing stage.
pub struct Processing {
    /// What each job needs.
    pub processor: Arc<Processor>,
    /// Checked frames, from ingest.
    pub jobs: mpsc::Receiver<Job>,
    /// Most jobs in flight.
    pub concurrency: usize,
}

impl Processing {
    /// Processes jobs until ingest closes its side, then waits for those in flight.
    pub async fn run(self) {
        let Processing {
            processor,
            mut jobs,
            concurrency,
        } = self;
        let permits = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        while let Some(job) = jobs.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let p = processor.clone();
            tracker.spawn(async move {
                p.handle(job).await;
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

impl Processor {
    async fn handle(&self, job: Job) {
        let Job {
            publish,
            ticket,
            addr,
            frame,
        } = job;
        let started = std::time::Instant::now();
        let frame = Arc::new(frame);
        let (edge_id, seq) = (frame.edge_id.clone(), frame.seq);
        tracing::debug!(edge_id = %edge_id, seq, age_us = tierline_shared::time::now_us() - frame.capture_time_us, "Frame processing starts.");
        if let Some(verdict) = self.verdict_for(&frame).await {
            tracing::debug!(edge_id = %edge_id, seq, age_us = tierline_shared::time::now_us() - frame.capture_time_us, "Verdict stored.");
            match wire::encode(&verdict, self.max_message_bytes) {
                Ok(bytes) => {
                    if self
                        .client
                        .publish(
                            addr.topic(TopicKind::Verdicts),
                            QoS::AtLeastOnce,
                            false,
                            bytes,
                        )
                        .await
                        .is_ok()
                    {
                        stats::inc(&self.stats.verdicts_published);
                    }
                }
                Err(e) => {
                    tracing::error!(edge_id = %edge_id, seq, error = %e, "Verdict cannot be encoded.")
                }
            }
        }
        // Released in arrival order, also after a failure (see `acks`): the edge resends what failed.
        let _ = self.acks.send((ticket, publish)).await;
        tracing::debug!(edge_id = %edge_id, seq, took_us = started.elapsed().as_micros() as u64, "Frame done.");
    }

    /// The stored verdict for a frame: the existing one for a duplicate, else a new one. `None` when
    /// inference or storage failed (logged and counted).
    async fn verdict_for(&self, frame: &Arc<wire::FrameEnvelope>) -> Option<Verdict> {
        let (edge_id, seq) = (frame.edge_id.as_str(), frame.seq);
        match self.store.lookup(frame).await {
            Ok(Some(existing)) => {
                stats::inc(&self.stats.duplicates);
                tracing::debug!(
                    edge_id,
                    seq,
                    "Duplicate delivery; re-sending the stored verdict."
                );
                Some(existing)
            }
            Ok(None) => {
                let v = self.judge(frame).await?;
                match self.commits.store(frame.clone(), v).await {
                    Ok(Stored::New(v)) => {
                        stats::inc(&self.stats.verdicts_stored);
                        Some(v)
                    }
                    Ok(Stored::Existing(v)) => {
                        stats::inc(&self.stats.duplicates);
                        Some(v)
                    }
                    Ok(Stored::Conflict(v)) => {
                        stats::inc(&self.stats.verdicts_stored);
                        stats::inc(&self.stats.identity_conflicts);
                        tracing::warn!(
                            edge_id,
                            seq,
                            incarnation = %frame.incarnation,
                            image_sha256 = %hex::encode(&frame.image_sha256),
                            "A frame arrived under the key of a stored frame with another image (an edge outbox restored from an old copy?); stored and judged as a different frame."
                        );
                        Some(v)
                    }
                    Err(e) => {
                        self.fail(edge_id, seq, &e.to_string());
                        None
                    }
                }
            }
            Err(e) => {
                self.fail(edge_id, seq, &e.to_string());
                None
            }
        }
    }

    /// Runs the model. `None` when the model failed (already logged and counted).
    async fn judge(&self, frame: &wire::FrameEnvelope) -> Option<Verdict> {
        let manifest = self.model.manifest();
        let mut v = Verdict {
            protocol_version: wire::PROTOCOL_VERSION,
            edge_id: frame.edge_id.clone(),
            seq: frame.seq,
            frame_id: frame.frame_id.clone(),
            cloud_model_version: manifest.version.clone(),
            verdict_time_us: tierline_shared::time::now_us(),
            ..Verdict::default()
        };
        let started = std::time::Instant::now();
        let scored = self.model.score(frame.image.clone().into()).await;
        self.stats.inference_latency.observe(started.elapsed());
        match scored {
            Ok(score) => {
                v.regions = score.regions.iter().map(Into::into).collect();
                v.label = score.label;
                v.defective = score.defective;
                v.defect_score = score.defect_score;
                v.scores = score
                    .class_scores
                    .into_iter()
                    .map(|(class_name, probability)| ClassScore {
                        class_name,
                        probability,
                    })
                    .collect();
            }
            Err(InferError::Image(e)) => {
                stats::inc(&self.stats.unreadable);
                tracing::warn!(edge_id = %frame.edge_id, seq = frame.seq, error = %e, "Frame image unreadable; storing an error verdict.");
                v.label = UNREADABLE.into();
                v.defective = true;
                v.defect_score = 1.0;
                v.error = e.to_string();
            }
            Err(e) => {
                self.fail(&frame.edge_id, frame.seq, &e.to_string());
                return None;
            }
        }
        v.verdict_time_us = tierline_shared::time::now_us();
        Some(v)
    }

    fn fail(&self, edge_id: &str, seq: u64, error: &str) {
        stats::inc(&self.stats.failures);
        tracing::error!(
            edge_id,
            seq,
            error,
            "Frame not processed; no verdict sent, the edge will resend it."
        );
    }
}
