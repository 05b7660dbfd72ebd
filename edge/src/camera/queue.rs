//! The frame queue between the cameras and the prescreen. Camera frames are perishable: when the prescreen
//! falls behind, the queue drops the *oldest* frame and counts it (`frames_dropped`).

use super::CapturedFrame;
use crate::stats::{self, EdgeStats};

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
