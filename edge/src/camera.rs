//! Camera sources and the frame queue between cameras and the prescreen.
//!
//! Camera frames are perishable: when the prescreen falls behind, the queue drops the *oldest* frame and
//! counts it (`frames_dropped`), so the line is always judged on recent frames.

use crate::config::{CameraConfig, SourceConfig};
use crate::stats::{self, EdgeStats};
use crate::synth::{self, Truth};
use bytes::Bytes;
use std::path::PathBuf;
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
    /// Source file, for file cameras.
    pub origin: Option<Arc<str>>,
}

/// Bounded queue that drops the oldest frame when full.
#[derive(Clone)]
pub struct FrameQueue {
    tx: flume::Sender<CapturedFrame>,
    rx: flume::Receiver<CapturedFrame>,
}

impl FrameQueue {
    /// A queue holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = flume::bounded(capacity.max(1));
        Self { tx, rx }
    }

    /// Adds a frame, dropping (and counting) the oldest when full.
    pub fn push(&self, mut frame: CapturedFrame, stats: &EdgeStats) {
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => return,
                Err(flume::TrySendError::Full(f)) => {
                    if self.rx.try_recv().is_ok() {
                        stats::inc(&stats.frames_dropped);
                    }
                    frame = f;
                }
                Err(flume::TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// The consuming side.
    pub fn receiver(&self) -> flume::Receiver<CapturedFrame> {
        self.rx.clone()
    }
}

enum Source {
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

/// A running camera.
pub struct Camera {
    id: Arc<str>,
    interval: Duration,
    limit: Option<u64>,
    source: Source,
}

impl Camera {
    /// Prepares a camera from its config (lists files for file cameras).
    pub fn new(cfg: &CameraConfig) -> Result<Self, CameraError> {
        let source = match &cfg.source {
            SourceConfig::Synthetic {
                seed,
                defect_rate,
                width,
                height,
                jpeg_quality,
            } => Source::Synthetic {
                seed: *seed,
                defect_rate: *defect_rate,
                width: width.get(),
                height: height.get(),
                quality: *jpeg_quality,
                index: 0,
            },
            SourceConfig::Files { path, repeat } => Source::Files {
                files: list_files(&cfg.id, path)?,
                repeat: *repeat,
                next: 0,
            },
        };
        Ok(Self {
            id: cfg.id.as_str().into(),
            interval: Duration::from_secs_f64(1.0 / cfg.fps),
            limit: cfg.frames,
            source,
        })
    }

    /// Delivers frames into `queue` at the camera's rate until its limit, its files run out, or shutdown.
    pub async fn run(
        mut self,
        queue: FrameQueue,
        stats: Arc<EdgeStats>,
        shutdown: CancellationToken,
    ) {
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
            stats::inc(&stats.frames_captured);
            stats::add(&stats.bytes_captured, frame.image.len() as u64);
            queue.push(frame, &stats);
        }
        tracing::info!(camera = %self.id, frames = delivered, "Camera stopped.");
    }

    async fn next_frame(&mut self) -> Option<CapturedFrame> {
        match &mut self.source {
            Source::Synthetic {
                seed,
                defect_rate,
                width,
                height,
                quality,
                index,
            } => {
                let (seed, rate, w, h, q, i) =
                    (*seed, *defect_rate, *width, *height, *quality, *index);
                *index += 1;
                let rendered = tokio::task::spawn_blocking(move || {
                    let f = synth::render(seed, i, w, h, rate);
                    f.to_jpeg(q).map(|jpeg| (jpeg, f.truth))
                })
                .await;
                match rendered {
                    Ok(Ok((jpeg, truth))) => {
                        Some(self.frame(jpeg.into(), ImageEncoding::Jpeg, Some(truth), None))
                    }
                    Ok(Err(e)) => {
                        tracing::error!(camera = %self.id, error = %e, "Synthetic frame could not be encoded.");
                        None
                    }
                    Err(_) => None,
                }
            }
            Source::Files {
                files,
                repeat,
                next,
            } => {
                // At most one pass over the files per frame: if none can be read, the camera stops instead
                // of spinning.
                for _ in 0..files.len() {
                    if *next >= files.len() {
                        if !*repeat {
                            return None;
                        }
                        *next = 0;
                    }
                    let path = files[*next].clone();
                    *next += 1;
                    match tokio::fs::read(&path).await {
                        Ok(bytes) => {
                            let encoding = encoding_of(&path);
                            let origin: Arc<str> = path.display().to_string().into();
                            return Some(self.frame(bytes.into(), encoding, None, Some(origin)));
                        }
                        Err(e) => {
                            tracing::warn!(camera = %self.id, file = %path.display(), error = %e, "Skipping unreadable image file.");
                        }
                    }
                }
                tracing::error!(camera = %self.id, "No file of this camera could be read; stopping it.");
                None
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
        }
    }
}

fn encoding_of(path: &std::path::Path) -> ImageEncoding {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => ImageEncoding::Png,
        _ => ImageEncoding::Jpeg,
    }
}

fn is_image(path: &std::path::Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

fn list_files(camera: &str, pattern: &str) -> Result<Vec<PathBuf>, CameraError> {
    let dir = std::path::Path::new(pattern);
    let mut files: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir)
            .map_err(|e| CameraError::Pattern {
                camera: camera.into(),
                pattern: pattern.into(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect()
    } else {
        glob::glob(pattern)
            .map_err(|e| CameraError::Pattern {
                camera: camera.into(),
                pattern: pattern.into(),
                message: e.to_string(),
            })?
            .filter_map(Result::ok)
            .filter(|p| is_image(p))
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(CameraError::NoFiles {
            camera: camera.into(),
            pattern: pattern.into(),
        });
    }
    Ok(files)
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
        let err = list_files("cam-9", dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cam-9") && err.contains("no .jpg"), "{err}");
    }
}
