//! What each camera reports: counters for the metrics (label `camera`) and its state for `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tierline_shared::metrics::{self as m, Sample};

/// One camera's live state, shared by its stage and the health watcher.
#[derive(Debug)]
pub struct CameraStatus {
    /// Camera id.
    pub id: Arc<str>,
    /// The source as logs show it (URL with its password hidden, path).
    pub source: String,
    /// Frames delivered to the prescreen.
    pub frames: AtomicU64,
    /// Frames received and left out by pacing or trigger mode.
    pub skipped: AtomicU64,
    /// Frames received that could not be used.
    pub corrupt: AtomicU64,
    /// Reconnects after a failure or stall.
    pub reconnects: AtomicU64,
    /// Attempts to open the source that failed.
    pub open_failures: AtomicU64,
    /// Whether the source is connected and sending in time.
    pub up: AtomicBool,
    /// Whether the camera has finished (files without `loop`, a frame limit).
    pub ended: AtomicBool,
    last_arrival: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    rate: Mutex<(Instant, u64, f64)>,
}

impl CameraStatus {
    /// A camera not yet connected.
    pub fn new(id: Arc<str>, source: String) -> Self {
        Self {
            id,
            source,
            frames: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            open_failures: AtomicU64::new(0),
            up: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            last_arrival: Mutex::new(None),
            last_error: Mutex::new(None),
            rate: Mutex::new((Instant::now(), 0, 0.0)),
        }
    }

    /// A frame arrived (kept or not): the stream is alive.
    pub fn arrived(&self) {
        if let Ok(mut t) = self.last_arrival.lock() {
            *t = Some(Instant::now());
        }
        self.up.store(true, Ordering::Relaxed);
    }

    /// The source failed; `error` is what `/readyz` shows until it recovers.
    pub fn failed(&self, error: String) {
        self.up.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error);
        }
    }

    /// The last failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Seconds since the last frame arrived.
    pub fn last_frame_age(&self) -> Option<f64> {
        self.last_arrival
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed().as_secs_f64()))
    }

    /// Frames per second delivered since the previous call (the health watcher calls it once per check).
    pub fn refresh_fps(&self) -> f64 {
        let frames = self.frames.load(Ordering::Relaxed);
        let Ok(mut r) = self.rate.lock() else {
            return 0.0;
        };
        let (at, before, _) = *r;
        let secs = at.elapsed().as_secs_f64();
        if secs >= 0.5 {
            let fps = (frames - before) as f64 / secs;
            *r = (Instant::now(), frames, fps);
        }
        r.2
    }

    /// The last computed rate.
    pub fn fps(&self) -> f64 {
        self.rate.lock().map(|r| r.2).unwrap_or(0.0)
    }

    /// Its state, for the heartbeat.
    pub fn state(&self) -> tierline_shared::wire::pb::CameraState {
        let up = self.up.load(Ordering::Relaxed);
        tierline_shared::wire::pb::CameraState {
            camera_id: self.id.to_string(),
            up,
            ended: self.ended.load(Ordering::Relaxed),
            fps: self.fps(),
            last_frame_age_s: self.last_frame_age().unwrap_or(-1.0),
            error: if up {
                String::new()
            } else {
                self.last_error().unwrap_or_default()
            },
        }
    }

    /// One line for `/readyz`: (ok, detail).
    pub fn check(&self) -> (bool, String) {
        let frames = self.frames.load(Ordering::Relaxed);
        let age = self
            .last_frame_age()
            .map_or("no frame yet".to_string(), |a| {
                format!("last frame {a:.1} s ago")
            });
        if self.ended.load(Ordering::Relaxed) {
            return (
                true,
                format!("{}: finished after {frames} frames", self.source),
            );
        }
        if self.up.load(Ordering::Relaxed) {
            (
                true,
                format!(
                    "{}: streaming, {frames} frames delivered, {:.1} fps, {age}",
                    self.source,
                    self.fps()
                ),
            )
        } else {
            let why = self.last_error().unwrap_or_else(|| "connecting".into());
            (
                false,
                format!(
                    "{}: down ({why}); {age}; reconnecting with backoff; the other cameras are not affected",
                    self.source
                ),
            )
        }
    }

    /// This camera's metric samples.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        let id = &*self.id;
        let l = |s: Sample| s.labelled("camera", id);
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_FRAMES,
            self.frames.load(Ordering::Relaxed),
        )));
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_SKIPPED,
            self.skipped.load(Ordering::Relaxed),
        )));
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_CORRUPT,
            self.corrupt.load(Ordering::Relaxed),
        )));
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_RECONNECTS,
            self.reconnects.load(Ordering::Relaxed),
        )));
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_OPEN_FAILURES,
            self.open_failures.load(Ordering::Relaxed),
        )));
        out.push(l(Sample::gauge(&m::EDGE_CAMERA_FPS, self.fps())));
        out.push(l(Sample::gauge(
            &m::EDGE_CAMERA_LAST_FRAME_AGE,
            self.last_frame_age().unwrap_or(-1.0),
        )));
        out.push(l(Sample::of(
            &m::EDGE_CAMERA_UP,
            u64::from(self.up.load(Ordering::Relaxed)),
        )));
    }
}
