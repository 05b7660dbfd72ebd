//! H.265 decoding for RTSP cameras (the `h265` feature): FFmpeg's HEVC decoder through the `ffmpeg-next`
//! crate, linked against the system's FFmpeg libraries (Debian's `libavcodec-dev`, `libavformat-dev` and
//! `libswscale-dev` to build; the matching `libavcodec59`, `libavformat59` and `libswscale6` to run).
//!
//! One decoder per camera, on the camera's decode thread, single-threaded so that a picture comes out for
//! the access unit that completed it (frame threading would hold pictures back by one per thread).

use ffmpeg_next as ffmpeg;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;

/// An H.265 decoder that turns access units (Annex B, parameter sets in band) into packed RGB pictures.
pub struct HevcDecoder {
    decoder: ffmpeg::decoder::Video,
    picture: ffmpeg::frame::Video,
    rgb: ffmpeg::frame::Video,
    /// Colour conversion for the current picture size and format.
    scaler: Option<(Pixel, u32, u32, scaling::Context)>,
}

impl HevcDecoder {
    /// Opens FFmpeg's HEVC decoder.
    pub fn new() -> Result<Self, String> {
        ffmpeg::init().map_err(|e| format!("FFmpeg could not start: {e}"))?;
        let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::HEVC).ok_or_else(|| {
            "this system's FFmpeg (libavcodec) has no H.265 decoder; install a build that has one"
                .to_string()
        })?;
        let mut context = ffmpeg::codec::context::Context::new_with_codec(codec);
        context.set_threading(ffmpeg::codec::threading::Config::count(1));
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| format!("FFmpeg's H.265 decoder did not open: {e}"))?;
        Ok(Self {
            decoder,
            picture: ffmpeg::frame::Video::empty(),
            rgb: ffmpeg::frame::Video::empty(),
            scaler: None,
        })
    }

    /// Decodes one access unit. When a picture comes out, returns its size and, with `pixels`, writes it
    /// to `rgb` as packed 8-bit RGB (`width × height × 3` bytes); without `pixels` the colour conversion is
    /// skipped. `Ok(None)`: the decoder needs more data first.
    pub fn decode(
        &mut self,
        data: &[u8],
        pixels: bool,
        rgb: &mut Vec<u8>,
    ) -> Result<Option<(u32, u32)>, String> {
        let packet = ffmpeg::Packet::copy(data);
        self.decoder
            .send_packet(&packet)
            .map_err(|e| format!("corrupt H.265 data: {e}"))?;
        let mut out = None;
        // Anything but a picture (EAGAIN: needs more input) ends the loop.
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            let (w, h) = (self.picture.width(), self.picture.height());
            if pixels {
                self.convert(w, h, rgb)?;
            }
            out = Some((w, h));
        }
        Ok(out)
    }

    fn convert(&mut self, w: u32, h: u32, rgb: &mut Vec<u8>) -> Result<(), String> {
        let format = self.picture.format();
        if !matches!(&self.scaler, Some((f, sw, sh, _)) if *f == format && *sw == w && *sh == h) {
            let scaler =
                scaling::Context::get(format, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                    .map_err(|e| format!("no conversion from {format:?} {w}x{h} to RGB: {e}"))?;
            self.scaler = Some((format, w, h, scaler));
            self.rgb = ffmpeg::frame::Video::empty();
        }
        if let Some((_, _, _, scaler)) = &mut self.scaler {
            scaler
                .run(&self.picture, &mut self.rgb)
                .map_err(|e| format!("converting a {w}x{h} picture to RGB: {e}"))?;
        }
        let (row, stride) = (w as usize * 3, self.rgb.stride(0));
        let plane = self.rgb.data(0);
        rgb.clear();
        rgb.reserve(row * h as usize);
        for y in 0..h as usize {
            rgb.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_or_no_picture_never_a_panic() {
        let mut d = HevcDecoder::new().unwrap();
        let mut rgb = Vec::new();
        for data in [
            &[0u8, 0, 0, 1, 0x40, 0x01, 0xff, 0xff][..],
            &[0xffu8; 64][..],
            &[][..],
        ] {
            if let Ok(Some(size)) = d.decode(data, true, &mut rgb) {
                panic!("a picture of {size:?} from garbage");
            }
        }
    }
}
