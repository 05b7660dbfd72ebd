//! Decoded frames inside one process: RGB pixels behind a small header, carried where encoded images are
//! (`Bytes`), so a camera that decodes video (H.264) hands the prescreen pixels instead of a JPEG it would
//! only decode again. Such a frame never leaves the process: it is encoded as JPEG (at the quality in its
//! header) before it is stored or forwarded.
//!
//! Layout: `TLRGB1`, width (u32 LE), height (u32 LE), JPEG quality (u8), then `width × height × 3` bytes.

use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;

const MAGIC: &[u8; 6] = b"TLRGB1";
const HEADER: usize = 6 + 4 + 4 + 1;

/// Wraps RGB pixels; `quality` is the JPEG quality used if the frame is ever encoded.
pub fn wrap(width: u32, height: u32, quality: u8, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + rgb.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.push(quality);
    out.extend_from_slice(rgb);
    out
}

/// A wrapped frame: (width, height, quality, pixels), or `None` for anything else (an encoded image).
pub fn parse(bytes: &[u8]) -> Option<(u32, u32, u8, &[u8])> {
    if bytes.len() < HEADER || &bytes[..6] != MAGIC {
        return None;
    }
    let w = u32::from_le_bytes(bytes[6..10].try_into().ok()?);
    let h = u32::from_le_bytes(bytes[10..14].try_into().ok()?);
    let q = bytes[14];
    let pixels = &bytes[HEADER..];
    (pixels.len() as u64 == u64::from(w) * u64::from(h) * 3).then_some((w, h, q, pixels))
}

/// Whether `bytes` is a wrapped frame.
pub fn is_raw(bytes: &[u8]) -> bool {
    parse(bytes).is_some()
}

/// Encodes a wrapped frame as JPEG at its quality.
pub fn to_jpeg(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (w, h, q, rgb) = parse(bytes).ok_or("not a decoded frame")?;
    let mut out = Vec::with_capacity(rgb.len() / 8);
    JpegEncoder::new_with_quality(&mut out, q.clamp(1, 100))
        .encode(rgb, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_parses_and_encodes() {
        let rgb = vec![200u8; 8 * 4 * 3];
        let raw = wrap(8, 4, 90, &rgb);
        assert_eq!(parse(&raw), Some((8, 4, 90, &rgb[..])));
        let jpeg = to_jpeg(&raw).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]));
        assert!(
            parse(&raw[..raw.len() - 1]).is_none(),
            "a short frame is not a frame"
        );
        assert!(parse(&jpeg).is_none());
    }
}
