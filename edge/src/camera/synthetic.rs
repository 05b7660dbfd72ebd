//! Synthetic cameras: rendered surfaces with planted defects (see [`crate::synth`]); each frame carries its
//! ground truth.

use crate::synth::{self, Truth};
use bytes::Bytes;

/// What a synthetic camera renders.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) seed: u64,
    pub(super) defect_rate: f64,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) quality: u8,
}

/// Renders frame `index` of a synthetic camera as JPEG, off the async workers.
pub(super) async fn render(camera: &str, s: Settings, index: u64) -> Option<(Bytes, Truth)> {
    let rendered = tokio::task::spawn_blocking(move || {
        let f = synth::render(s.seed, index, s.width, s.height, s.defect_rate);
        f.to_jpeg(s.quality).map(|jpeg| (jpeg, f.truth))
    })
    .await;
    match rendered {
        Ok(Ok((jpeg, truth))) => Some((jpeg.into(), truth)),
        Ok(Err(e)) => {
            tracing::error!(camera, error = %e, "Synthetic frame could not be encoded.");
            None
        }
        Err(_) => None,
    }
}
