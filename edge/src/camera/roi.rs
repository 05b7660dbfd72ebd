//! The region of interest: an optional crop rectangle per camera, applied before the model (and so also
//! to what is forwarded to the cloud and stored).

pub use crate::config::Roi;
use image::GenericImageView;

impl Roi {
    /// The rectangle clipped to a `w`×`h` picture; an error when nothing of it lies inside.
    pub(super) fn within(self, w: u32, h: u32) -> Result<(u32, u32, u32, u32), String> {
        if self.x >= w || self.y >= h || self.width == 0 || self.height == 0 {
            return Err(format!(
                "roi {}x{}+{}+{} lies outside the {w}x{h} picture; fix the camera's roi",
                self.width, self.height, self.x, self.y
            ));
        }
        Ok((
            self.x,
            self.y,
            self.width.min(w - self.x),
            self.height.min(h - self.y),
        ))
    }
}

/// Wraps decoded RGB pixels as an in-process frame ([`tierline_shared::rawframe`]), cropped to `roi` first
/// when set; `quality` is used if the frame is ever encoded.
pub fn crop_raw(
    rgb: &[u8],
    w: u32,
    h: u32,
    roi: Option<Roi>,
    quality: u8,
) -> Result<Vec<u8>, String> {
    match roi {
        None => Ok(tierline_shared::rawframe::wrap(w, h, quality, rgb)),
        Some(r) => {
            let (x, y, cw, ch) = r.within(w, h)?;
            let mut crop = Vec::with_capacity((cw * ch * 3) as usize);
            for row in y..y + ch {
                let start = ((row * w + x) * 3) as usize;
                crop.extend_from_slice(&rgb[start..start + (cw * 3) as usize]);
            }
            Ok(tierline_shared::rawframe::wrap(cw, ch, quality, &crop))
        }
    }
}

/// Crops an encoded image (JPEG or PNG) to `roi`: the crop's pixels, wrapped as an in-process frame (the
/// prescreen reads them without decoding again; a forwarded frame is encoded at `quality`).
pub fn crop_encoded(encoded: &[u8], roi: Roi, quality: u8) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(encoded).map_err(|e| format!("cannot decode: {e}"))?;
    let (w, h) = img.dimensions();
    let (x, y, cw, ch) = roi.within(w, h)?;
    let crop = img.crop_imm(x, y, cw, ch).into_rgb8();
    Ok(tierline_shared::rawframe::wrap(
        cw,
        ch,
        quality,
        crop.as_raw(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_to_the_rectangle_and_clips_at_the_edge() {
        let img = image::RgbImage::from_fn(64, 48, |x, _| image::Rgb([x as u8 * 4, 0, 0]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let out = crop_encoded(
            &jpeg,
            Roi {
                x: 32,
                y: 8,
                width: 100,
                height: 16,
            },
            95,
        )
        .unwrap();
        let (w, h, q, _) = tierline_shared::rawframe::parse(&out).unwrap();
        assert_eq!((w, h, q), (32, 16, 95));
        let forwarded = tierline_shared::rawframe::to_jpeg(&out).unwrap();
        let got = image::load_from_memory(&forwarded).unwrap();
        assert_eq!(got.dimensions(), (32, 16));
        let err = crop_encoded(
            &jpeg,
            Roi {
                x: 64,
                y: 0,
                width: 8,
                height: 8,
            },
            95,
        )
        .unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }
}
