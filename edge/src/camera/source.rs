//! The [`FrameSource`] trait every camera kind implements, and what a source hands the camera stage.
//!
//! A source is opened by the camera stage (which owns reconnects, backoff and the no-frame watchdog) and then
//! asked for its next [`Item`] again and again. Sources that push frames (streams) report every frame that
//! arrives, kept or not, so the watchdog sees the stream alive even while pacing or trigger mode keeps
//! nothing; sources that pull frames (files, synthetic, HTTP snapshots) wait on the [`Gate`] themselves.

use super::CaptureClock;
use super::gate::{Gate, Take};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use thiserror::Error;
use tierline_shared::wire::ImageEncoding;

/// A boxed future, as the object-safe [`FrameSource`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A frame a source took, before the camera stage stamps it.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// Encoded image.
    pub image: Bytes,
    /// Its encoding.
    pub encoding: ImageEncoding,
    /// Capture time, µs since the epoch, when the source knows it (stream timestamps); else the camera
    /// stage stamps the arrival time.
    pub stream_time_us: Option<i64>,
    /// Where the frame came from (file path, redacted URL).
    pub origin: Option<Arc<str>>,
    /// Ground truth, for synthetic frames.
    pub truth: Option<crate::synth::Truth>,
    /// What the gate said when the frame was taken (the part id in trigger mode).
    pub take: Take,
}

/// What a source yields.
#[derive(Debug)]
pub enum Item {
    /// A frame to judge.
    Frame(SourceFrame),
    /// A frame arrived and was left out (by pacing or because no trigger was waiting); proves the stream
    /// alive. Decode work was skipped where the codec allows.
    Skipped,
    /// A frame arrived but could not be used (corrupt NAL unit, truncated JPEG part): counted and logged;
    /// the stream continues.
    Corrupt(String),
    /// A part was triggered but no picture could be taken (a snapshot request failed): the part still gets
    /// a decision, and the source reconnects.
    Missed {
        /// The trigger that found no picture.
        take: Take,
        /// Why.
        error: SourceError,
    },
    /// The source has no more frames (files without `loop`): the camera stops.
    End,
}

/// Why a source failed; the camera stage logs it with the camera id, reports it in `/readyz` and
/// reconnects after a backoff.
#[derive(Debug, Error, Clone)]
pub enum SourceError {
    /// Cannot connect or the connection broke.
    #[error("{0}")]
    Connection(String),
    /// The server refused the credentials.
    #[error("{0}; check the user and password in the camera URL")]
    Auth(String),
    /// The server answered, but not as a camera of this kind would.
    #[error("{0}")]
    Protocol(String),
    /// The stream uses a codec this source cannot decode.
    #[error("{0}")]
    Codec(String),
}

/// A camera source: opened by the camera stage, then asked for items until it fails or ends.
pub trait FrameSource: Send {
    /// The next item. `gate` decides which frames are kept (pacing, triggers).
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>>;

    /// Whether silence from this source means a stalled camera (streams: yes; pulled sources wait on their
    /// gate and time their own requests).
    fn watched(&self) -> bool;

    /// Whether the source applies the camera's ROI itself (decoded streams crop before encoding).
    fn crops(&self) -> bool {
        false
    }

    /// Where this source's capture times come from.
    fn clock(&self) -> CaptureClock {
        CaptureClock::Arrival
    }
}

/// Opens a source; the camera stage calls it at start and after every failure.
pub trait Connector: Send + Sync {
    /// Connects (or prepares) a new source.
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>>;

    /// What to show in logs (a URL with its password hidden, a path).
    fn describe(&self) -> String;
}
