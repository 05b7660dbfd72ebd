//! V4L2 cameras (USB and CSI, Linux), through the `v4l` crate: memory-mapped capture on a thread of its own
//! (the driver's `DQBUF` blocks), MJPEG passed on as JPEG or YUYV converted to RGB pixels for the kept frames
//! only. Built with the `v4l2` cargo feature (its bindings are generated with bindgen and need libclang).

use super::gate::Gate;
use super::roi::Roi;
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
pub use crate::config::V4l2Format;
use bytes::Bytes;
use std::sync::Arc;
use tierline_shared::wire::ImageEncoding;
use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

/// Opens a V4L2 device.
pub struct V4l2Connector {
    /// Device path, e.g. `/dev/video0`.
    pub device: String,
    /// Requested size.
    pub width: u32,
    /// Requested size.
    pub height: u32,
    /// Requested pixel format.
    pub format: V4l2Format,
    /// Crop applied to YUYV frames here (JPEG frames are cropped by the camera stage).
    pub roi: Option<Roi>,
    /// JPEG quality if a converted frame is forwarded.
    pub quality: u8,
}

enum Captured {
    Frame(Vec<u8>),
    Failed(String),
}

impl Connector for V4l2Connector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            let (tx, rx) = flume::bounded::<Captured>(2);
            let (ready_tx, ready_rx) = flume::bounded::<Result<(u32, u32), SourceError>>(1);
            let (path, w, h, format) = (self.device.clone(), self.width, self.height, self.format);
            std::thread::Builder::new()
                .name("v4l2-capture".into())
                .spawn(move || capture(path, w, h, format, tx, ready_tx))
                .map_err(|e| SourceError::Connection(format!("capture thread: {e}")))?;
            let (width, height) = ready_rx.recv_async().await.map_err(|_| {
                SourceError::Connection(format!("{}: capture thread ended", self.device))
            })??;
            Ok(Box::new(V4l2Source {
                frames: rx,
                format: self.format,
                width,
                height,
                roi: self.roi,
                quality: self.quality,
                origin: self.device.as_str().into(),
            }) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        self.device.clone()
    }
}

fn capture(
    path: String,
    w: u32,
    h: u32,
    format: V4l2Format,
    tx: flume::Sender<Captured>,
    ready: flume::Sender<Result<(u32, u32), SourceError>>,
) {
    let dev = match Device::with_path(&path) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(SourceError::Connection(format!(
                "cannot open {path}: {e}; check the device path and that the edge's user may read it (group `video`)"
            ))));
            return;
        }
    };
    let fourcc = match format {
        V4l2Format::Mjpeg => FourCC::new(b"MJPG"),
        V4l2Format::Yuyv => FourCC::new(b"YUYV"),
    };
    let set = dev.format().and_then(|mut f| {
        f.width = w;
        f.height = h;
        f.fourcc = fourcc;
        dev.set_format(&f)
    });
    let got = match set {
        Ok(f) if f.fourcc == fourcc => f,
        Ok(f) => {
            let _ = ready.send(Err(SourceError::Codec(format!(
                "{path} offers {} instead of {fourcc}; set format = \"mjpeg\" or \"yuyv\" to one the camera supports",
                f.fourcc
            ))));
            return;
        }
        Err(e) => {
            let _ = ready.send(Err(SourceError::Protocol(format!(
                "{path}: cannot set {w}x{h} {fourcc}: {e}"
            ))));
            return;
        }
    };
    let mut stream = match v4l::io::mmap::Stream::with_buffers(&dev, Type::VideoCapture, 4) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(SourceError::Protocol(format!(
                "{path}: cannot start capture: {e}"
            ))));
            return;
        }
    };
    let _ = ready.send(Ok((got.width, got.height)));
    loop {
        let item = match stream.next() {
            Ok((buf, meta)) => {
                let used = (meta.bytesused as usize).min(buf.len());
                Captured::Frame(buf[..used].to_vec())
            }
            Err(e) => Captured::Failed(format!("{path}: capture failed: {e}")),
        };
        let failed = matches!(item, Captured::Failed(_));
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

struct V4l2Source {
    frames: flume::Receiver<Captured>,
    format: V4l2Format,
    width: u32,
    height: u32,
    roi: Option<Roi>,
    quality: u8,
    origin: Arc<str>,
}

impl FrameSource for V4l2Source {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            let data = match self.frames.recv_async().await {
                Ok(Captured::Frame(d)) => d,
                Ok(Captured::Failed(why)) => return Err(SourceError::Connection(why)),
                Err(_) => {
                    return Err(SourceError::Connection(format!(
                        "{}: capture stopped",
                        self.origin
                    )));
                }
            };
            let Some(take) = gate.offer(tokio::time::Instant::now()) else {
                return Ok(Item::Skipped);
            };
            let image = match self.format {
                V4l2Format::Mjpeg => {
                    if !super::mjpeg::looks_like_jpeg(&data) {
                        return Ok(Item::Corrupt(format!(
                            "frame of {} bytes is not a whole JPEG",
                            data.len()
                        )));
                    }
                    Bytes::from(data)
                }
                V4l2Format::Yuyv => {
                    let (w, h, roi, q) = (self.width, self.height, self.roi, self.quality);
                    let converted = tokio::task::spawn_blocking(move || {
                        let rgb = yuyv_to_rgb(&data, w, h)?;
                        super::roi::crop_raw(&rgb, w, h, roi, q)
                    })
                    .await
                    .map_err(|e| SourceError::Protocol(e.to_string()))?;
                    match converted {
                        Ok(raw) => Bytes::from(raw),
                        Err(why) => return Ok(Item::Corrupt(why)),
                    }
                }
            };
            Ok(Item::Frame(SourceFrame {
                image,
                encoding: ImageEncoding::Jpeg,
                stream_time_us: None,
                origin: Some(self.origin.clone()),
                truth: None,
                take,
            }))
        })
    }

    fn watched(&self) -> bool {
        true
    }

    fn crops(&self) -> bool {
        self.format == V4l2Format::Yuyv
    }
}

/// YUYV 4:2:2 (BT.601, limited range) to interleaved RGB.
pub fn yuyv_to_rgb(yuyv: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let (w, h) = (w as usize, h as usize);
    if yuyv.len() < w * h * 2 {
        return Err(format!(
            "YUYV frame of {} bytes is short of {w}x{h}",
            yuyv.len()
        ));
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    let px = |y: u8, u: u8, v: u8, out: &mut Vec<u8>| {
        let c = (i32::from(y) - 16) * 298;
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
        out.extend_from_slice(&[
            clamp(c + 409 * e),
            clamp(c - 100 * d - 208 * e),
            clamp(c + 516 * d),
        ]);
    };
    for q in yuyv[..w * h * 2].chunks_exact(4) {
        px(q[0], q[1], q[3], &mut rgb);
        px(q[2], q[1], q[3], &mut rgb);
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_grey_white_and_black_convert() {
        // Y = 16 is black, 235 white, U = V = 128 no colour.
        let rgb = yuyv_to_rgb(&[16, 128, 235, 128], 2, 1).unwrap();
        assert_eq!(rgb, vec![0, 0, 0, 255, 255, 255]);
        assert!(yuyv_to_rgb(&[0; 3], 2, 1).is_err());
    }
}
