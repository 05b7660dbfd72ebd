//! Turning encoded camera images into model input tensors, exactly as the manifest asks:
//! decode (JPEG/PNG) → grey or RGB → antialiased bilinear resize to the model size (`fast_image_resize`, about
//! 20× faster than `image::imageops` on 1080p frames) → `pixel / 255` → `(x - mean) / std` → NCHW or NHWC.

use crate::manifest::{InputSpec, Layout};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use thiserror::Error;

/// Errors from preprocessing one image.
#[derive(Debug, Error)]
pub enum PreprocessError {
    /// The bytes are not a decodable image.
    #[error("image ({len} bytes) cannot be decoded: {message}")]
    Decode {
        /// Encoded length.
        len: usize,
        /// Decoder message.
        message: String,
    },
    /// The image has no pixels or is implausibly large.
    #[error("image is {width}x{height} pixels, outside 1..=16384 per side")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Resizing failed.
    #[error("resizing the image failed: {0}")]
    Resize(String),
}

/// Reusable preprocessing state for one model input spec.
pub struct Preprocessor {
    spec: InputSpec,
    resizer: Resizer,
    options: ResizeOptions,
}

impl Preprocessor {
    /// A preprocessor for `spec`.
    pub fn new(spec: InputSpec) -> Self {
        Self {
            spec,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        }
    }

    /// Number of f32 values one image occupies in the input tensor.
    pub fn tensor_len(&self) -> usize {
        (self.spec.channels * self.spec.width * self.spec.height) as usize
    }

    /// Decodes `encoded` and writes its normalized tensor into `out` (length [`Self::tensor_len`]).
    pub fn run(&mut self, encoded: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
        let decoded = match crate::rawframe::parse(encoded) {
            // Pixels a camera decoded already (H.264): no second decode.
            Some((w, h, _, rgb)) => image::RgbImage::from_raw(w, h, rgb.to_vec())
                .map(image::DynamicImage::ImageRgb8)
                .ok_or(PreprocessError::BadSize {
                    width: w,
                    height: h,
                })?,
            None => {
                check_complete(encoded)?;
                image::load_from_memory(encoded).map_err(|e| PreprocessError::Decode {
                    len: encoded.len(),
                    message: e.to_string(),
                })?
            }
        };
        let (w, h) = (decoded.width(), decoded.height());
        if w == 0 || h == 0 || w > 16384 || h > 16384 {
            return Err(PreprocessError::BadSize {
                width: w,
                height: h,
            });
        }
        let channels = self.spec.channels as usize;
        let (pixels, pixel_type) = if channels == 1 {
            (decoded.into_luma8().into_raw(), PixelType::U8)
        } else {
            (decoded.into_rgb8().into_raw(), PixelType::U8x3)
        };
        let src = Image::from_vec_u8(w, h, pixels, pixel_type)
            .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        let mut dst = Image::new(self.spec.width, self.spec.height, pixel_type);
        self.resizer
            .resize(&src, &mut dst, &self.options)
            .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        normalize(&self.spec, dst.buffer(), out);
        Ok(())
    }
}

/// Refuses a JPEG without its end-of-image marker: the decoder would otherwise fill the missing part
/// with grey and the model would judge a picture the camera never took.
fn check_complete(encoded: &[u8]) -> Result<(), PreprocessError> {
    let is_jpeg = encoded.starts_with(&[0xFF, 0xD8]);
    if is_jpeg {
        let tail = &encoded[encoded.len().saturating_sub(64)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(PreprocessError::Decode {
                len: encoded.len(),
                message: "JPEG is truncated (no end-of-image marker)".into(),
            });
        }
    }
    Ok(())
}

/// Writes interleaved 8-bit pixels into `out` as normalized floats in the spec's layout.
fn normalize(spec: &InputSpec, pixels: &[u8], out: &mut [f32]) {
    let channels = spec.channels as usize;
    let plane = (spec.width * spec.height) as usize;
    let scale: Vec<f32> = spec.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let offset: Vec<f32> = spec
        .mean
        .iter()
        .zip(&spec.std)
        .map(|(m, s)| m / s)
        .collect();
    for (i, px) in pixels.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            let x = f32::from(v) * scale[c] - offset[c];
            let idx = match spec.layout {
                Layout::Nchw => c * plane + i,
                Layout::Nhwc => i * channels + c,
            };
            out[idx] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Layout;

    fn spec(channels: u32, layout: Layout) -> InputSpec {
        InputSpec {
            name: "image".into(),
            layout,
            channels,
            width: 4,
            height: 2,
            mean: vec![0.5; channels as usize],
            std: vec![0.25; channels as usize],
        }
    }

    fn png(width: u32, height: u32, value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(width, height, image::Luma([value]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn normalizes_a_flat_image() {
        let mut p = Preprocessor::new(spec(1, Layout::Nchw));
        let mut out = vec![0.0; p.tensor_len()];
        p.run(&png(40, 20, 255), &mut out).unwrap();
        // (1.0 - 0.5) / 0.25 = 2.0
        assert!(out.iter().all(|v| (v - 2.0).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn grey_is_replicated_for_rgb_models_in_both_layouts() {
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let mut p = Preprocessor::new(spec(3, layout));
            let mut out = vec![9.0; p.tensor_len()];
            p.run(&png(8, 4, 0), &mut out).unwrap();
            assert!(out.iter().all(|v| (v + 2.0).abs() < 1e-5), "{layout:?}");
        }
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let img = image::GrayImage::from_pixel(32, 32, image::Luma([90]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let mut p = Preprocessor::new(spec(1, Layout::Nchw));
        let mut out = vec![0.0; p.tensor_len()];
        p.run(&jpeg, &mut out).unwrap();
        let err = p.run(&jpeg[..jpeg.len() - 10], &mut out).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn corrupt_bytes_are_a_decode_error() {
        let mut p = Preprocessor::new(spec(1, Layout::Nchw));
        let mut out = vec![0.0; p.tensor_len()];
        let mut bytes = png(8, 8, 10);
        bytes.truncate(bytes.len() / 2);
        let err = p.run(&bytes, &mut out).unwrap_err();
        assert!(matches!(err, PreprocessError::Decode { .. }), "{err}");
        let err = p.run(b"definitely not an image", &mut out).unwrap_err();
        assert!(err.to_string().contains("cannot be decoded"));
    }
}
