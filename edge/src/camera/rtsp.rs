//! RTSP cameras (the `retina` crate: TCP interleaved or UDP, Basic/Digest auth): H.264 decoded with
//! OpenH264 (the `openh264` crate, built from its bundled source) and MJPEG over RTP passed on as JPEG.
//!
//! Pacing saves decode work: an H.264 frame the gate refuses is not decoded at all when no other frame
//! references it (`nal_ref_idc = 0`), and is decoded but never colour-converted, cropped or encoded when
//! others do. H.264 decoding runs on one thread per camera, off the async workers.
//!
//! Capture times come from the stream: each frame's RTP timestamp is mapped to wall time through the last
//! RTCP sender report of its stream; before the first report, frames are stamped on arrival.

use super::CaptureClock;
use super::gate::{Gate, Take};
use super::roi::Roi;
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tierline_shared::wire::ImageEncoding;
use url::Url;

pub use crate::config::RtspTransport;

/// Opens RTSP sessions.
pub struct RtspConnector {
    url: Url,
    creds: Option<Credentials>,
    shown: String,
    transport: RtspTransport,
    timeout: Duration,
    roi: Option<Roi>,
    jpeg_quality: u8,
}

impl RtspConnector {
    /// Parses `rtsp://[user:password@]host[:port]/path`.
    pub fn new(
        url: &str,
        transport: RtspTransport,
        timeout: Duration,
        roi: Option<Roi>,
        jpeg_quality: u8,
    ) -> Result<Self, String> {
        let shown = tierline_shared::redact::redact(url);
        let mut parsed =
            Url::parse(url).map_err(|e| format!("camera URL {shown:?} is invalid: {e}"))?;
        if parsed.scheme() != "rtsp" {
            return Err(format!("camera URL {shown:?} is not rtsp://"));
        }
        let creds = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| percent_decode(s);
            Credentials {
                username: decode(parsed.username()),
                password: parsed.password().map(decode).unwrap_or_default(),
            }
        });
        // retina takes the credentials apart from the URL.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        Ok(Self {
            url: parsed,
            creds,
            shown,
            transport,
            timeout,
            roi,
            jpeg_quality,
        })
    }

    async fn connect(&self) -> Result<RtspSource, SourceError> {
        let shown = &self.shown;
        let classify = |stage: &str, e: retina::Error| {
            let text = e.to_string();
            if text.contains("401") || text.contains("Unauthorized") {
                SourceError::Auth(format!("{shown}: {stage} refused: {text}"))
            } else {
                SourceError::Connection(format!("{shown}: {stage}: {text}"))
            }
        };
        let options = SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent("tierline-edge".into());
        let mut session = Session::describe(self.url.clone(), options)
            .await
            .map_err(|e| classify("DESCRIBE", e))?;
        let found: Vec<String> = session
            .streams()
            .iter()
            .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
            .collect();
        let (index, codec) = session
            .streams()
            .iter()
            .enumerate()
            .find_map(|(i, s)| match (s.media(), s.encoding_name()) {
                ("video", "h264") => Some((i, Codec::H264)),
                ("video", "jpeg") => Some((i, Codec::Jpeg)),
                _ => None,
            })
            .ok_or_else(|| {
                SourceError::Codec(format!(
                    "{shown} offers {found:?}; this edge decodes H.264 and MJPEG video (set the camera's stream to H.264 or MJPEG; H.265 is not supported)"
                ))
            })?;
        let clock_rate = session.streams()[index].clock_rate_hz();
        let transport = match self.transport {
            RtspTransport::Tcp => Transport::Tcp(Default::default()),
            RtspTransport::Udp => Transport::Udp(Default::default()),
        };
        session
            .setup(
                index,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::SIMPLE),
            )
            .await
            .map_err(|e| classify("SETUP", e))?;
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(|e| classify("PLAY", e))?;
        let demuxed = playing
            .demuxed()
            .map_err(|e| SourceError::Protocol(format!("{shown}: {e}")))?;
        let decoder = match codec {
            Codec::H264 => Some(DecodeThread::start(
                self.roi,
                self.jpeg_quality,
                shown.clone(),
            )?),
            Codec::Jpeg => None,
        };
        tracing::info!(camera_url = %shown, streams = ?found, codec = ?codec, "RTSP stream playing.");
        Ok(RtspSource {
            demuxed: Box::pin(demuxed),
            index,
            clock_rate,
            sender_report: None,
            decoder,
            origin: shown.as_str().into(),
        })
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, _)| k.into_owned())
        .next()
        .unwrap_or_default()
}

impl Connector for RtspConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.connect())
                .await
                .map_err(|_| {
                    SourceError::Connection(format!(
                        "{}: no RTSP answer within {:?}",
                        self.shown, self.timeout
                    ))
                })?
                .map(|s| Box::new(s) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    H264,
    Jpeg,
}

struct RtspSource {
    demuxed: Pin<Box<Demuxed>>,
    index: usize,
    clock_rate: u32,
    /// The last sender report: (wall time µs, RTP timestamp).
    sender_report: Option<(i64, u32)>,
    decoder: Option<DecodeThread>,
    origin: Arc<str>,
}

impl RtspSource {
    /// Wall time of an RTP timestamp, through the last sender report.
    fn wall_time(&self, rtp: i64) -> Option<i64> {
        let (wall, at) = self.sender_report?;
        let ticks = i64::from((rtp as u32).wrapping_sub(at) as i32);
        Some(wall + ticks * 1_000_000 / i64::from(self.clock_rate.max(1)))
    }
}

/// Seconds between the NTP epoch (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn ntp_to_unix_us(ntp: u64) -> i64 {
    let secs = (ntp >> 32).saturating_sub(NTP_UNIX_OFFSET);
    let frac = ((ntp & 0xFFFF_FFFF) * 1_000_000) >> 32;
    (secs * 1_000_000 + frac) as i64
}

impl FrameSource for RtspSource {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            loop {
                // Decoded frames first.
                if let Some(Ok(done)) = self.decoder.as_ref().map(|d| d.done.try_recv()) {
                    return Ok(done.into_item(&self.origin));
                }
                let next = match &mut self.decoder {
                    Some(d) => {
                        tokio::select! {
                            biased;
                            done = d.done.recv_async() => match done {
                                Ok(done) => return Ok(done.into_item(&self.origin)),
                                Err(_) => return Err(SourceError::Protocol(format!("{}: the H.264 decoder stopped", self.origin))),
                            },
                            item = self.demuxed.next() => item,
                        }
                    }
                    None => self.demuxed.next().await,
                };
                let item = match next {
                    None => {
                        return Err(SourceError::Connection(format!(
                            "{}: the camera ended the stream",
                            self.origin
                        )));
                    }
                    Some(Err(e)) => {
                        return Err(SourceError::Connection(format!("{}: {e}", self.origin)));
                    }
                    Some(Ok(item)) => item,
                };
                match item {
                    CodecItem::Rtcp(pkt) if pkt.stream_id() == self.index => {
                        for p in pkt.pkts() {
                            if let Ok(Some(sr)) = p.as_sender_report() {
                                self.sender_report = Some((
                                    ntp_to_unix_us(sr.ntp_timestamp().0),
                                    sr.rtp_timestamp(),
                                ));
                            }
                        }
                    }
                    CodecItem::VideoFrame(frame) if frame.stream_id() == self.index => {
                        let time = self.wall_time(frame.timestamp().timestamp());
                        let take = gate.offer(tokio::time::Instant::now());
                        match &mut self.decoder {
                            None => {
                                let Some(take) = take else {
                                    return Ok(Item::Skipped);
                                };
                                let data = Bytes::from(frame.into_data());
                                if !super::mjpeg::looks_like_jpeg(&data) {
                                    return Ok(Item::Corrupt(format!(
                                        "RTP JPEG frame of {} bytes is incomplete",
                                        data.len()
                                    )));
                                }
                                return Ok(Item::Frame(SourceFrame {
                                    image: data,
                                    encoding: ImageEncoding::Jpeg,
                                    stream_time_us: time,
                                    origin: Some(self.origin.clone()),
                                    truth: None,
                                    take,
                                }));
                            }
                            Some(d) => {
                                if take.is_none() && frame.is_disposable() {
                                    // Nothing references it: not even decoded.
                                    return Ok(Item::Skipped);
                                }
                                let keep = take.is_some();
                                let job = Job {
                                    data: frame.into_data(),
                                    keep: take.map(|t| (t, time)),
                                };
                                if d.jobs.send_async(job).await.is_err() {
                                    return Err(SourceError::Protocol(format!(
                                        "{}: the H.264 decoder stopped",
                                        self.origin
                                    )));
                                }
                                if !keep {
                                    return Ok(Item::Skipped);
                                }
                                // A kept frame comes back from the decoder thread.
                            }
                        }
                    }
                    _ => {}
                }
            }
        })
    }

    fn watched(&self) -> bool {
        true
    }

    fn crops(&self) -> bool {
        self.decoder.is_some()
    }

    fn clock(&self) -> CaptureClock {
        if self.sender_report.is_some() {
            CaptureClock::Stream
        } else {
            CaptureClock::Arrival
        }
    }
}

/// One access unit for the decoder; `keep` says whether to turn the picture into a frame.
struct Job {
    data: Vec<u8>,
    keep: Option<(Take, Option<i64>)>,
}

/// What the decoder thread hands back for a kept frame: its pixels, wrapped
/// ([`tierline_shared::rawframe`]); they are encoded as JPEG only if the frame is forwarded.
enum Done {
    Frame {
        jpeg: Bytes,
        take: Take,
        time: Option<i64>,
    },
    Corrupt(String),
}

impl Done {
    fn into_item(self, origin: &Arc<str>) -> Item {
        match self {
            Done::Frame { jpeg, take, time } => Item::Frame(SourceFrame {
                image: jpeg,
                encoding: ImageEncoding::Jpeg,
                stream_time_us: time,
                origin: Some(origin.clone()),
                truth: None,
                take,
            }),
            Done::Corrupt(why) => Item::Corrupt(why),
        }
    }
}

/// One H.264 decoder on its own thread; it ends when the source is dropped.
struct DecodeThread {
    jobs: flume::Sender<Job>,
    done: flume::Receiver<Done>,
}

impl DecodeThread {
    fn start(roi: Option<Roi>, quality: u8, shown: String) -> Result<Self, SourceError> {
        let (jobs, job_rx) = flume::bounded::<Job>(8);
        let (done_tx, done) = flume::bounded::<Done>(8);
        let decoder = openh264::decoder::Decoder::new()
            .map_err(|e| SourceError::Codec(format!("{shown}: OpenH264 decoder: {e}")))?;
        std::thread::Builder::new()
            .name("h264-decode".into())
            .spawn(move || decode_loop(decoder, job_rx, done_tx, roi, quality))
            .map_err(|e| SourceError::Codec(format!("{shown}: decoder thread: {e}")))?;
        Ok(Self { jobs, done })
    }
}

fn decode_loop(
    mut decoder: openh264::decoder::Decoder,
    jobs: flume::Receiver<Job>,
    done: flume::Sender<Done>,
    roi: Option<Roi>,
    quality: u8,
) {
    use openh264::formats::YUVSource;
    let mut rgb = Vec::new();
    while let Ok(job) = jobs.recv() {
        let result = match decoder.decode(&job.data) {
            Ok(Some(yuv)) => match &job.keep {
                Some(_) => {
                    let (w, h) = yuv.dimensions();
                    rgb.resize(w * h * 3, 0);
                    yuv.write_rgb8(&mut rgb);
                    Some(super::roi::crop_raw(&rgb, w as u32, h as u32, roi, quality))
                }
                None => None,
            },
            // The picture is not complete yet (or was dropped by the decoder).
            Ok(None) => job
                .keep
                .as_ref()
                .map(|_| Err("the decoder gave no picture for this access unit".to_string())),
            Err(e) => Some(Err(format!("corrupt H.264 data: {e}"))),
        };
        let out = match (result, job.keep) {
            (Some(Ok(jpeg)), Some((take, time))) => Done::Frame {
                jpeg: jpeg.into(),
                take,
                time,
            },
            (Some(Err(why)), _) => Done::Corrupt(why),
            _ => continue,
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_times_map_to_unix_time() {
        // 2024-01-01T00:00:00Z is 1_704_067_200 s after the Unix epoch; half a second in fraction bits.
        let ntp = ((1_704_067_200u64 + NTP_UNIX_OFFSET) << 32) | (1u64 << 31);
        assert_eq!(ntp_to_unix_us(ntp), 1_704_067_200_500_000);
    }

    #[test]
    fn credentials_leave_the_url_and_the_password_is_hidden() {
        let c = RtspConnector::new(
            "rtsp://admin:p%40ss@10.0.0.5:554/stream1",
            RtspTransport::Tcp,
            Duration::from_secs(1),
            None,
            90,
        )
        .unwrap();
        assert_eq!(c.url.as_str(), "rtsp://10.0.0.5:554/stream1");
        let creds = c.creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "p@ss")
        );
        assert!(
            !c.shown.contains("p%40ss") && c.shown.contains("***"),
            "{}",
            c.shown
        );
    }
}
