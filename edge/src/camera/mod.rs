//! Cameras: one stage per camera, each owning its source, its reconnects and its watchdog, feeding the
//! frame queue between cameras and the prescreen.
//!
//! ```text
//!  Connector::open ──► FrameSource::next ──► Gate (pacing | part triggers) ──► ROI ──► FrameQueue
//!       ▲   (rtsp, mjpeg, snapshot,          │ skipped / corrupt: counted
//!       │    files, synthetic)               │ no item within no_frame_timeout (streams): stalled
//!       └── jittered exponential backoff ◄───┘ source error: logged with the camera id, in /readyz
//! ```
//!
//! A camera that is down at start-up or later never blocks start-up or the other cameras: each runs its
//! own loop, and a failure only changes its own `/readyz` line and metrics.
//!
//! Camera frames are perishable: when the prescreen falls behind, the queue drops the *oldest* frame and
//! counts it (`frames_dropped`), so the line is always judged on recent frames.

use crate::config::{CameraConfig, CameraMode, SourceConfig};
use crate::stats::{self, EdgeStats};
use crate::synth::Truth;
use bytes::Bytes;

mod files;
pub mod gate;
#[cfg(feature = "h265")]
pub mod hevc;
mod http;
mod mjpeg;
pub mod multipart;
mod queue;
pub mod roi;
pub mod rtsp;
mod snapshot;
pub mod source;
pub mod status;
mod synthetic;
pub mod triggers;
#[cfg(feature = "v4l2")]
pub mod v4l2;

pub use queue::FrameQueue;
use source::{Connector, FrameSource, Item, SourceError, SourceFrame};
pub use status::CameraStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    /// The camera URL or its settings are unusable.
    #[error("camera {camera}: {message}")]
    Setup {
        /// Camera id.
        camera: String,
        /// Problem, naming the setting.
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

/// A camera stage: opens its source, keeps it open (reconnecting with backoff after failures and stalls)
/// and delivers the frames its gate keeps into the frame queue.
pub struct Camera {
    id: Arc<str>,
    cfg: CameraConfig,
    connector: Box<dyn Connector>,
    gate: gate::Gate,
    queue: FrameQueue,
    stats: Arc<EdgeStats>,
    status: Arc<CameraStatus>,
    last_time_us: i64,
}

impl Camera {
    /// Prepares a camera from its config (lists files for file cameras, parses URLs), feeding `queue`.
    /// Nothing here touches the network: a camera that is down cannot delay start-up.
    pub fn new(
        cfg: &CameraConfig,
        queue: FrameQueue,
        stats: Arc<EdgeStats>,
        triggers: &mut triggers::Triggers,
    ) -> Result<Self, CameraError> {
        let setup = |message: String| CameraError::Setup {
            camera: cfg.id.clone(),
            message,
        };
        let connector: Box<dyn Connector> = match &cfg.source {
            SourceConfig::Synthetic {
                seed,
                defect_rate,
                width,
                height,
                jpeg_quality,
            } => Box::new(synthetic::SyntheticConnector {
                camera: cfg.id.clone(),
                settings: synthetic::Settings {
                    seed: *seed,
                    defect_rate: *defect_rate,
                    width: width.get(),
                    height: height.get(),
                    quality: *jpeg_quality,
                },
            }),
            SourceConfig::Files { path, repeat } => Box::new(files::FilesConnector {
                camera: cfg.id.clone(),
                files: files::list(&cfg.id, path)?,
                repeat: *repeat,
                shown: path.clone(),
            }),
            SourceConfig::Rtsp { url, transport } => Box::new(
                rtsp::RtspConnector::new(
                    url,
                    *transport,
                    cfg.connect_timeout,
                    cfg.roi,
                    cfg.encode_quality,
                )
                .map_err(setup)?,
            ),
            SourceConfig::Mjpeg { url } => Box::new(mjpeg::MjpegConnector {
                target: http::Target::parse(url).map_err(setup)?,
                connect_timeout: cfg.connect_timeout,
            }),
            SourceConfig::Snapshot { url } => Box::new(snapshot::SnapshotConnector {
                target: http::Target::parse(url).map_err(setup)?,
                timeout: cfg.connect_timeout,
            }),
            #[cfg(feature = "v4l2")]
            SourceConfig::V4l2 {
                device,
                width,
                height,
                format,
            } => Box::new(v4l2::V4l2Connector {
                device: device.clone(),
                width: *width,
                height: *height,
                format: *format,
                roi: cfg.roi,
                quality: cfg.encode_quality,
            }),
            #[cfg(not(feature = "v4l2"))]
            SourceConfig::V4l2 { device, .. } => {
                return Err(setup(format!(
                    "{device}: this edge was built without V4L2 support; build it with `cargo build --release -p tierline-edge --features v4l2` (needs Debian's libclang-dev)"
                )));
            }
        };
        let id: Arc<str> = cfg.id.as_str().into();
        let gate = match cfg.mode {
            CameraMode::Continuous => gate::Gate::paced(cfg.fps),
            CameraMode::Trigger => gate::Gate::triggered(triggers.register(&cfg.id)),
        };
        let status = Arc::new(CameraStatus::new(id.clone(), connector.describe()));
        Ok(Self {
            id,
            cfg: cfg.clone(),
            connector,
            gate,
            queue,
            stats,
            status,
            last_time_us: i64::MIN,
        })
    }

    /// The camera's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its live state, for `/readyz` and the metrics.
    pub fn status(&self) -> Arc<CameraStatus> {
        self.status.clone()
    }

    /// Delivers frames until its limit, the end of its files, or shutdown; never returns on a source
    /// failure (it reconnects).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff =
            tierline_shared::mqtt::Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut delivered = 0u64;
        'session: loop {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.connector.open() => r,
            };
            let mut source = match opened {
                Ok(s) => s,
                Err(e) => {
                    self.status.open_failures.fetch_add(1, Ordering::Relaxed);
                    self.failed(&e, false);
                    if !sleep(backoff.next_delay(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if !source.watched() {
                // Pulled sources have nothing to wait for; they are up until a request fails.
                self.status.up.store(true, Ordering::Relaxed);
            }
            loop {
                if self.cfg.frames.is_some_and(|l| delivered >= l) {
                    self.status.ended.store(true, Ordering::Relaxed);
                    break 'session;
                }
                let watched = source.watched();
                let timeout = self.cfg.no_frame_timeout;
                let item = tokio::select! {
                    _ = shutdown.cancelled() => break 'session,
                    r = next_item(&mut *source, &mut self.gate, watched, timeout) => r,
                };
                match item {
                    Ok(Item::Frame(f)) => {
                        self.status.arrived();
                        backoff.reset();
                        let clock = source.clock();
                        let crops = source.crops();
                        if self.deliver(f, clock, crops).await {
                            delivered += 1;
                        }
                    }
                    Ok(Item::Skipped) => {
                        self.status.arrived();
                        self.status.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Item::Corrupt(why)) => {
                        self.status.arrived();
                        self.status.corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(camera = %self.id, source = %self.status.source, problem = %why, "Camera frame unusable; skipped, the stream continues.");
                    }
                    Ok(Item::Missed { take, error }) => {
                        // A part was triggered and no picture could be taken: the part still gets a decision
                        // (the prescreen rejects an empty image as unreadable, naming the cause).
                        self.missed(take, &error);
                        self.failed(&error, true);
                        break;
                    }
                    Ok(Item::End) => {
                        self.status.ended.store(true, Ordering::Relaxed);
                        break 'session;
                    }
                    Err(e) => {
                        self.failed(&e, true);
                        break;
                    }
                }
            }
            drop(source);
            if !sleep(backoff.next_delay(), &shutdown).await {
                break;
            }
        }
        tracing::info!(camera = %self.id, frames = delivered, "Camera stopped.");
    }

    fn failed(&self, e: &SourceError, reconnect: bool) {
        if reconnect {
            self.status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(camera = %self.id, source = %self.status.source, error = %e, "Camera source failed; reconnecting after a backoff. The other cameras are not affected.");
        self.status.failed(e.to_string());
    }

    fn missed(&mut self, take: gate::Take, error: &SourceError) {
        let frame = SourceFrame {
            image: Bytes::new(),
            encoding: ImageEncoding::Jpeg,
            stream_time_us: None,
            origin: Some(format!("no picture taken ({error})").into()),
            truth: None,
            take,
        };
        let frame = self.stamp(frame, CaptureClock::Arrival);
        stats::inc(&self.stats.frames_captured);
        self.queue.push(frame, &self.stats);
    }

    /// Applies the ROI, stamps the frame and queues it. False when the frame could not be used.
    async fn deliver(&mut self, mut f: SourceFrame, clock: CaptureClock, crops: bool) -> bool {
        if let (Some(roi), false) = (self.cfg.roi, crops) {
            let (image, quality) = (f.image.clone(), self.cfg.encode_quality);
            match tokio::task::spawn_blocking(move || roi::crop_encoded(&image, roi, quality)).await
            {
                Ok(Ok(raw)) => {
                    f.image = raw.into();
                    f.encoding = ImageEncoding::Jpeg;
                }
                Ok(Err(why)) => {
                    self.status.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(camera = %self.id, problem = %why, "Frame could not be cropped to the camera's roi; skipped.");
                    return false;
                }
                Err(_) => return false,
            }
        }
        let clock = if f.stream_time_us.is_some() {
            clock
        } else {
            CaptureClock::Arrival
        };
        let frame = self.stamp(f, clock);
        self.status.frames.fetch_add(1, Ordering::Relaxed);
        stats::inc(&self.stats.frames_captured);
        stats::add(&self.stats.bytes_captured, frame.image.len() as u64);
        self.queue.push(frame, &self.stats);
        true
    }

    /// Capture time: the stream's where it has one, else now; never earlier than the previous frame's.
    fn stamp(&mut self, f: SourceFrame, clock: CaptureClock) -> CapturedFrame {
        let mut t = f
            .stream_time_us
            .unwrap_or_else(tierline_shared::time::now_us);
        if t <= self.last_time_us {
            t = self.last_time_us + 1;
        }
        self.last_time_us = t;
        CapturedFrame {
            camera_id: self.id.clone(),
            captured_at: Instant::now(),
            capture_time_us: t,
            image: f.image,
            encoding: f.encoding,
            truth: f.truth,
            origin: f.origin,
            part_id: f.take.part_id,
            clock,
        }
    }
}

/// The source's next item; for watched sources, silence beyond `timeout` is a stall.
async fn next_item(
    source: &mut dyn FrameSource,
    gate: &mut gate::Gate,
    watched: bool,
    timeout: Duration,
) -> Result<Item, SourceError> {
    if !watched {
        return source.next(gate).await;
    }
    match tokio::time::timeout(timeout, source.next(gate)).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Connection(format!(
            "no frame for {timeout:?}: the stream is stalled (connection open, nothing sent); raise no_frame_timeout for slow cameras or long GOPs"
        ))),
    }
}

/// Sleeps `d` unless shut down first (then false).
async fn sleep(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
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
