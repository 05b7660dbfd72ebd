//! HTTP MJPEG cameras: one long `GET` answered with `multipart/x-mixed-replace`, one JPEG per part.
//!
//! Pacing costs nothing here: a part the gate refuses is dropped as bytes, never decoded.

use super::gate::Gate;
use super::http::{self, Target};
use super::multipart::{self, Parser, Part};
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::wire::ImageEncoding;

/// Opens HTTP MJPEG streams.
pub struct MjpegConnector {
    /// The camera.
    pub target: Target,
    /// Time allowed to connect and get the response headers.
    pub connect_timeout: Duration,
}

impl Connector for MjpegConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            let resp = self.target.get(self.connect_timeout).await?;
            let shown = &self.target.shown;
            if !resp.status().is_success() {
                return Err(SourceError::Protocol(format!(
                    "{shown} answered HTTP {}; check the stream path",
                    resp.status().as_u16()
                )));
            }
            let ct = http::content_type(&resp);
            if !ct.starts_with("multipart/") {
                return Err(SourceError::Protocol(format!(
                    "{shown} sends {ct:?}, not an MJPEG stream (multipart/x-mixed-replace); for single images use kind = \"snapshot\""
                )));
            }
            let boundary = multipart::boundary_of(&ct).ok_or_else(|| {
                SourceError::Protocol(format!("{shown}: content type {ct:?} names no boundary"))
            })?;
            Ok(Box::new(MjpegSource {
                body: resp.into_body(),
                parser: Parser::new(&boundary),
                origin: shown.as_str().into(),
            }) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        self.target.shown.clone()
    }
}

struct MjpegSource {
    body: Incoming,
    parser: Parser,
    origin: Arc<str>,
}

impl FrameSource for MjpegSource {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            loop {
                if let Some(part) = self.parser.next_part() {
                    return Ok(match part {
                        Part::Corrupt(why) => Item::Corrupt(why),
                        Part::Body(body) => {
                            if !looks_like_jpeg(&body) {
                                Item::Corrupt(format!(
                                    "part of {} bytes is not a whole JPEG (no start or end marker)",
                                    body.len()
                                ))
                            } else {
                                match gate.offer(tokio::time::Instant::now()) {
                                    None => Item::Skipped,
                                    Some(take) => Item::Frame(SourceFrame {
                                        image: body,
                                        encoding: ImageEncoding::Jpeg,
                                        stream_time_us: None,
                                        origin: Some(self.origin.clone()),
                                        truth: None,
                                        take,
                                    }),
                                }
                            }
                        }
                    });
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.parser.feed(&data);
                        }
                    }
                    Some(Err(e)) => {
                        return Err(SourceError::Connection(format!(
                            "{}: stream broke off: {e}",
                            self.origin
                        )));
                    }
                    None => {
                        return Err(SourceError::Connection(format!(
                            "{}: the camera closed the stream",
                            self.origin
                        )));
                    }
                }
            }
        })
    }

    fn watched(&self) -> bool {
        true
    }
}

/// A JPEG starts with SOI and ends with EOI (allowing trailing padding some cameras add).
pub(super) fn looks_like_jpeg(b: &[u8]) -> bool {
    let tail = &b[b.len().saturating_sub(64)..];
    b.starts_with(&[0xFF, 0xD8]) && tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
