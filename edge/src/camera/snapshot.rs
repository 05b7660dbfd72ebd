//! HTTP snapshot cameras: `GET /snapshot.jpg` (any URL answering one image) on the pacing timer or on each
//! part trigger.

use super::gate::Gate;
use super::http::{self, Target};
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::wire::ImageEncoding;

/// Largest snapshot accepted.
const MAX_SNAPSHOT: usize = 32 << 20;

/// Prepares snapshot sources (nothing to connect until the first frame is due).
pub struct SnapshotConnector {
    /// The camera.
    pub target: Target,
    /// Time allowed for one snapshot, connect to last byte.
    pub timeout: Duration,
}

impl Connector for SnapshotConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            Ok(Box::new(SnapshotSource {
                target: self.target.clone(),
                timeout: self.timeout,
                origin: self.target.shown.as_str().into(),
            }) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        self.target.shown.clone()
    }
}

struct SnapshotSource {
    target: Target,
    timeout: Duration,
    origin: Arc<str>,
}

impl FrameSource for SnapshotSource {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            let Some(take) = gate.due().await else {
                return Ok(Item::End);
            };
            let shown = &self.target.shown;
            let fetch = async {
                let resp = self.target.get(self.timeout).await?;
                if !resp.status().is_success() {
                    return Err(SourceError::Protocol(format!(
                        "{shown} answered HTTP {}; check the snapshot path",
                        resp.status().as_u16()
                    )));
                }
                let ct = http::content_type(&resp);
                let body = http::read_body(resp.into_body(), MAX_SNAPSHOT, shown).await?;
                Ok((ct, body))
            };
            let fetched = tokio::time::timeout(self.timeout, fetch)
                .await
                .unwrap_or_else(|_| {
                    Err(SourceError::Connection(format!(
                        "{shown}: snapshot not received within {:?}",
                        self.timeout
                    )))
                });
            let (ct, body) = match fetched {
                Ok(got) => got,
                Err(error) if take.part_id.is_some() => return Ok(Item::Missed { take, error }),
                Err(e) => return Err(e),
            };
            let encoding = if body.starts_with(&[0x89, b'P', b'N', b'G']) {
                ImageEncoding::Png
            } else if body.starts_with(&[0xFF, 0xD8]) {
                if !super::mjpeg::looks_like_jpeg(&body) {
                    return Ok(Item::Corrupt(format!(
                        "snapshot of {} bytes is a truncated JPEG",
                        body.len()
                    )));
                }
                ImageEncoding::Jpeg
            } else {
                return Err(SourceError::Protocol(format!(
                    "{shown} answered {ct:?} ({} bytes), not a JPEG or PNG image; is this the camera's snapshot URL?",
                    body.len()
                )));
            };
            Ok(Item::Frame(SourceFrame {
                image: body,
                encoding,
                stream_time_us: None,
                origin: Some(self.origin.clone()),
                truth: None,
                take,
            }))
        })
    }

    fn watched(&self) -> bool {
        false
    }
}
