//! RTSP cameras (the `retina` crate: TCP interleaved or UDP, Basic/Digest auth): H.264 decoded with
//! OpenH264 (the `openh264` crate, built from its bundled source), H.265 with FFmpeg's decoder when the
//! edge is built with the `h265` feature ([`super::hevc`]), and MJPEG over RTP passed on as JPEG.
//!
//! Pacing saves decode work: an H.264 frame the gate refuses is not decoded at all when no other frame
//! references it (`nal_ref_idc = 0`), and is decoded but never colour-converted, cropped or encoded when
//! others do (H.265: every frame is decoded, only kept ones converted). Video decoding runs on one thread
//! per camera, off the async workers.
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
                ("video", "h265") => Some((i, Codec::H265)),
                ("video", "jpeg") => Some((i, Codec::Jpeg)),
                _ => None,
            })
            .ok_or_else(|| {
                SourceError::Codec(format!(
                    "{shown} offers {found:?}; this edge decodes H.264, H.265 and MJPEG video (set the camera's stream to one of them)"
                ))
            })?;
        #[cfg(not(feature = "h265"))]
        if let Codec::H265 = codec {
            return Err(SourceError::Codec(format!(
                "{shown} sends H.265 and this edge was built without H.265 support: set the camera's stream to H.264 or MJPEG, or build the edge with `cargo build --release -p tierline-edge --features h265` (needs Debian's libavcodec-dev, libavformat-dev and libswscale-dev)"
            )));
        }
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
            Codec::Jpeg => None,
            video => {
                Some(DecodeThread::start(video, self.roi, self.jpeg_quality, shown.clone()).await?)
            }
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
    H265,
    Jpeg,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H.264",
            Codec::H265 => "H.265",
            Codec::Jpeg => "MJPEG",
        }
    }
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
                                Err(_) => return Err(SourceError::Protocol(format!("{}: the {} decoder stopped", self.origin, d.codec.name()))),
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
                                        "{}: the {} decoder stopped",
                                        self.origin,
                                        d.codec.name()
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

/// One video decoder on its own thread; it ends when the source is dropped.
struct DecodeThread {
    codec: Codec,
    jobs: flume::Sender<Job>,
    done: flume::Receiver<Done>,
}

impl DecodeThread {
    /// Starts the thread and opens the decoder on it (FFmpeg's conversion state may not move between
    /// threads).
    async fn start(
        codec: Codec,
        roi: Option<Roi>,
        quality: u8,
        shown: String,
    ) -> Result<Self, SourceError> {
        let (jobs, job_rx) = flume::bounded::<Job>(8);
        let (done_tx, done) = flume::bounded::<Done>(8);
        let (opened_tx, opened) = flume::bounded::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("video-decode".into())
            .spawn(move || match VideoDecoder::new(codec) {
                Ok(decoder) => {
                    let _ = opened_tx.send(Ok(()));
                    decode_loop(decoder, job_rx, done_tx, roi, quality);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| SourceError::Codec(format!("{shown}: decoder thread: {e}")))?;
        match opened.recv_async().await {
            Ok(Ok(())) => Ok(Self { codec, jobs, done }),
            Ok(Err(e)) => Err(SourceError::Codec(format!("{shown}: {e}"))),
            Err(_) => Err(SourceError::Codec(format!(
                "{shown}: the {} decoder thread ended at start",
                codec.name()
            ))),
        }
    }
}

/// The decoder behind a camera's decode thread.
enum VideoDecoder {
    H264(Box<openh264::decoder::Decoder>),
    #[cfg(feature = "h265")]
    H265(Box<super::hevc::HevcDecoder>),
}

impl VideoDecoder {
    fn new(codec: Codec) -> Result<Self, String> {
        match codec {
            #[cfg(feature = "h265")]
            Codec::H265 => Ok(Self::H265(Box::new(super::hevc::HevcDecoder::new()?))),
            Codec::H264 => openh264::decoder::Decoder::new()
                .map(|d| Self::H264(Box::new(d)))
                .map_err(|e| format!("OpenH264 decoder: {e}")),
            other => Err(format!("no decoder for {}", other.name())),
        }
    }

    /// Decodes one access unit. When a picture comes out, returns its size and, with `pixels`, writes it
    /// to `rgb` as packed RGB. `Ok(None)`: no picture yet.
    fn decode(
        &mut self,
        data: &[u8],
        pixels: bool,
        rgb: &mut Vec<u8>,
    ) -> Result<Option<(u32, u32)>, String> {
        match self {
            Self::H264(decoder) => {
                use openh264::formats::YUVSource;
                match decoder.decode(data) {
                    Ok(Some(yuv)) => {
                        let (w, h) = yuv.dimensions();
                        if pixels {
                            rgb.resize(w * h * 3, 0);
                            yuv.write_rgb8(rgb);
                        }
                        Ok(Some((w as u32, h as u32)))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(format!("corrupt H.264 data: {e}")),
                }
            }
            #[cfg(feature = "h265")]
            Self::H265(decoder) => decoder.decode(data, pixels, rgb),
        }
    }
}

fn decode_loop(
    mut decoder: VideoDecoder,
    jobs: flume::Receiver<Job>,
    done: flume::Sender<Done>,
    roi: Option<Roi>,
    quality: u8,
) {
    let mut rgb = Vec::new();
    while let Ok(job) = jobs.recv() {
        let result = match decoder.decode(&job.data, job.keep.is_some(), &mut rgb) {
            Ok(Some((w, h))) => job
                .keep
                .as_ref()
                .map(|_| super::roi::crop_raw(&rgb, w, h, roi, quality)),
            // The picture is not complete yet (or was dropped by the decoder).
            Ok(None) => job
                .keep
                .as_ref()
                .map(|_| Err("the decoder gave no picture for this access unit".to_string())),
            Err(e) => Some(Err(e)),
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

    /// Real H.264 access units from OpenH264's encoder, the first one (the IDR with SPS/PPS) and a P frame.
    fn encoded_frames() -> Vec<Vec<u8>> {
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        let (w, h) = (64usize, 48usize);
        let mut encoder = openh264::encoder::Encoder::new().unwrap();
        (0..2)
            .map(|i| {
                let rgb: Vec<u8> = (0..w * h * 3).map(|p| (p * 7 + i * 31) as u8).collect();
                let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (w, h)));
                encoder.encode(&yuv).unwrap().to_vec()
            })
            .collect()
    }

    #[test]
    fn corrupt_h264_nal_units_are_errors_or_no_picture_never_a_panic() {
        let frames = encoded_frames();
        let mut rgb = Vec::new();
        let mut clean = VideoDecoder::new(Codec::H264).unwrap();
        assert_eq!(
            clean.decode(&frames[0], true, &mut rgb).unwrap(),
            Some((64, 48))
        );
        assert_eq!(rgb.len(), 64 * 48 * 3);
        // Bytes after the start code of each unit flipped in turn (up to 400 spread over the unit), on a
        // fresh decoder and, for the P frame, on one that holds the picture it refers to; then cut short.
        for (n, frame) in frames.iter().enumerate() {
            let step = (frame.len() / 400).max(1);
            for at in (4..frame.len()).step_by(step) {
                let mut bad = frame.clone();
                bad[at] ^= 0xA5;
                let mut d = VideoDecoder::new(Codec::H264).unwrap();
                if n > 0 {
                    let _ = d.decode(&frames[0], false, &mut rgb);
                }
                if let Ok(Some((w, h))) = d.decode(&bad, true, &mut rgb) {
                    assert_eq!(rgb.len(), w as usize * h as usize * 3);
                }
            }
            for len in (0..frame.len()).step_by(step) {
                let mut d = VideoDecoder::new(Codec::H264).unwrap();
                let _ = d.decode(&frame[..len], true, &mut rgb);
            }
        }
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
