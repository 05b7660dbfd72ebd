//! Camera sources and the frame queue between cameras and the prescreen.
//!
//! Camera frames are perishable: when the prescreen falls behind, the queue drops the *oldest* frame and
//! counts it (`frames_dropped`), so the line is always judged on recent frames.

use crate::config::{CameraConfig, SourceConfig};
use crate::stats::{self, EdgeStats};
use crate::synth::Truth;
use bytes::Bytes;
use std::path::PathBuf;

mod files;
mod queue;
mod synthetic;

pub use queue::FrameQueue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tierline_shared::wire::ImageEncoding;
use tokio_util::sync::CancellationToken;

/// Errors from setting up a camera.
#[derive(Debug, Error)]
pub enum CameraError {
    /// The file pattern is invalid.
    #[error("camera {camera}: file pattern {pattern:?} is invalid: {message}")]
    Pattern {
        /// Camera id.
        camera: String,
        /// Pattern.
        pattern: String,
        /// Problem.
        message: String,
    },
    /// No image files matched.
    #[error(
        "camera {camera}: no .jpg, .jpeg or .png files found at {pattern:?}; check the camera's `path`"
    )]
    NoFiles {
        /// Camera id.
        camera: String,
        /// Pattern.
        pattern: String,
    },
}

/// A frame as delivered by a camera.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// Camera id.
    pub camera_id: Arc<str>,
    /// When the frame was captured.
    pub captured_at: Instant,
    /// Capture time, µs since the epoch.
    pub capture_time_us: i64,
    /// Encoded image.
    pub image: Bytes,
    /// Its encoding.
    pub encoding: ImageEncoding,
    /// Ground truth, for synthetic frames.
    pub truth: Option<Truth>,
    /// Where the frame came from: the file for file cameras, the stream URL (password redacted) for
    /// streams.
    pub origin: Option<Arc<str>>,
    /// The part the frame shows, for frames taken on a trigger.
    pub part_id: Option<Arc<str>>,
    /// Where `capture_time_us` came from.
    pub clock: CaptureClock,
}

/// Where a frame's capture time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureClock {
    /// The edge's clock when the frame arrived (files, synthetic, HTTP, streams without sender reports).
    #[default]
    Arrival,
    /// The stream's own timestamp, mapped to wall time through the camera's RTCP sender reports.
    Stream,
}

impl CaptureClock {
    /// The name used in the decision log and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arrival => "arrival",
            Self::Stream => "stream",
        }
    }
}

enum Feed {
    Synthetic {
        seed: u64,
        defect_rate: f64,
        width: u32,
        height: u32,
        quality: u8,
        index: u64,
    },
    Files {
        files: Vec<PathBuf>,
        repeat: bool,
        next: usize,
    },
}

/// A camera stage: delivers frames from its source into the frame queue at its rate.
pub struct Camera {
    id: Arc<str>,
    interval: Duration,
    limit: Option<u64>,
    feed: Feed,
    queue: FrameQueue,
    stats: Arc<EdgeStats>,
}

impl Camera {
    /// Prepares a camera from its config (lists files for file cameras), feeding `queue`.
    pub fn new(
        cfg: &CameraConfig,
        queue: FrameQueue,
        stats: Arc<EdgeStats>,
    ) -> Result<Self, CameraError> {
        let source = match &cfg.source {
            SourceConfig::Synthetic {
                seed,
                defect_rate,
                width,
                height,
                jpeg_quality,
            } => Feed::Synthetic {
                seed: *seed,
                defect_rate: *defect_rate,
                width: width.get(),
                height: height.get(),
                quality: *jpeg_quality,
                index: 0,
            },
            SourceConfig::Files { path, repeat } => Feed::Files {
                files: files::list(&cfg.id, path)?,
                repeat: *repeat,
                next: 0,
            },
        };
        Ok(Self {
            id: cfg.id.as_str().into(),
            interval: Duration::from_secs_f64(1.0 / cfg.fps),
            limit: cfg.frames,
            feed: source,
            queue,
            stats,
        })
    }

    /// The camera's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Delivers frames into `queue` at the camera's rate until its limit, its files run out, or shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut delivered = 0u64;
        loop {
            if self.limit.is_some_and(|l| delivered >= l) {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(frame) = self.next_frame().await else {
                break;
            };
            delivered += 1;
            stats::inc(&self.stats.frames_captured);
            stats::add(&self.stats.bytes_captured, frame.image.len() as u64);
            self.queue.push(frame, &self.stats);
        }
        tracing::info!(camera = %self.id, frames = delivered, "Camera stopped.");
    }

    async fn next_frame(&mut self) -> Option<CapturedFrame> {
        match &mut self.feed {
            Feed::Synthetic {
                seed,
                defect_rate,
                width,
                height,
                quality,
                index,
            } => {
                let i = *index;
                *index += 1;
                let settings = synthetic::Settings {
                    seed: *seed,
                    defect_rate: *defect_rate,
                    width: *width,
                    height: *height,
                    quality: *quality,
                };
                let (jpeg, truth) = synthetic::render(&self.id, settings, i).await?;
                Some(self.frame(jpeg, ImageEncoding::Jpeg, Some(truth), None))
            }
            Feed::Files {
                files,
                repeat,
                next,
            } => {
                let (bytes, encoding, origin) = files::next(&self.id, files, *repeat, next).await?;
                Some(self.frame(bytes, encoding, None, Some(origin)))
            }
        }
    }

    fn frame(
        &self,
        image: Bytes,
        encoding: ImageEncoding,
        truth: Option<Truth>,
        origin: Option<Arc<str>>,
    ) -> CapturedFrame {
        CapturedFrame {
            camera_id: self.id.clone(),
            captured_at: Instant::now(),
            capture_time_us: tierline_shared::time::now_us(),
            image,
            encoding,
            truth,
            origin,
            part_id: None,
            clock: CaptureClock::Arrival,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> CapturedFrame {
        CapturedFrame {
            camera_id: "c".into(),
            captured_at: Instant::now(),
            capture_time_us: 0,
            image: Bytes::from(vec![n]),
            encoding: ImageEncoding::Jpeg,
            truth: None,
            origin: None,
            part_id: None,
            clock: CaptureClock::Arrival,
        }
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let stats = EdgeStats::default();
        let q = FrameQueue::new(2);
        for n in 0..5 {
            q.push(frame(n), &stats);
        }
        let rx = q.receiver();
        let kept: Vec<u8> = rx.try_iter().map(|f| f.image[0]).collect();
        assert_eq!(kept, vec![3, 4]);
        assert_eq!(stats::get(&stats.frames_dropped), 3);
    }

    #[test]
    fn empty_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = files::list("cam-9", dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cam-9") && err.contains("no .jpg"), "{err}");
    }
}
