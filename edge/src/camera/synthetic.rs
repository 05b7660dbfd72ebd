//! Synthetic cameras: rendered surfaces with planted defects (see [`crate::synth`]); each frame carries its
//! ground truth.

use super::gate::Gate;
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
use crate::synth::{self, Truth};
use bytes::Bytes;
use tierline_shared::wire::ImageEncoding;

/// What a synthetic camera renders.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) seed: u64,
    pub(super) defect_rate: f64,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) quality: u8,
}

/// Opens synthetic sources.
pub(super) struct SyntheticConnector {
    pub(super) camera: String,
    pub(super) settings: Settings,
}

impl Connector for SyntheticConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            Ok(Box::new(SyntheticSource {
                camera: self.camera.clone(),
                settings: self.settings,
                index: 0,
            }) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        format!(
            "synthetic seed {} ({}x{})",
            self.settings.seed, self.settings.width, self.settings.height
        )
    }
}

struct SyntheticSource {
    camera: String,
    settings: Settings,
    index: u64,
}

impl FrameSource for SyntheticSource {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            let Some(take) = gate.due().await else {
                return Ok(Item::End);
            };
            let i = self.index;
            self.index += 1;
            Ok(match render(&self.camera, self.settings, i).await {
                Some((image, truth)) => Item::Frame(SourceFrame {
                    image,
                    encoding: ImageEncoding::Jpeg,
                    stream_time_us: None,
                    origin: None,
                    truth: Some(truth),
                    take,
                }),
                None => Item::Corrupt(format!("synthetic frame {i} could not be encoded")),
            })
        })
    }

    fn watched(&self) -> bool {
        false
    }
}

/// Renders frame `index` of a synthetic camera as JPEG, off the async workers.
async fn render(camera: &str, s: Settings, index: u64) -> Option<(Bytes, Truth)> {
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
