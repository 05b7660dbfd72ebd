//! File cameras: images from a directory or a glob pattern, in name order, once or repeated, one per
//! pacing interval or per part trigger.

use super::CameraError;
use super::gate::Gate;
use super::source::{BoxFuture, Connector, FrameSource, Item, SourceError, SourceFrame};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use tierline_shared::wire::ImageEncoding;

/// Opens file sources (the list is made once, at start-up, so a wrong path fails the config check).
pub(super) struct FilesConnector {
    pub(super) camera: String,
    pub(super) files: Vec<PathBuf>,
    pub(super) repeat: bool,
    pub(super) shown: String,
}

impl Connector for FilesConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn FrameSource>, SourceError>> {
        Box::pin(async move {
            Ok(Box::new(FilesSource {
                camera: self.camera.clone(),
                files: self.files.clone(),
                repeat: self.repeat,
                next: 0,
            }) as Box<dyn FrameSource>)
        })
    }

    fn describe(&self) -> String {
        format!("files {}", self.shown)
    }
}

struct FilesSource {
    camera: String,
    files: Vec<PathBuf>,
    repeat: bool,
    next: usize,
}

impl FrameSource for FilesSource {
    fn next<'a>(&'a mut self, gate: &'a mut Gate) -> BoxFuture<'a, Result<Item, SourceError>> {
        Box::pin(async move {
            // Do not wait for a turn when there is nothing left to show.
            if !self.repeat && self.next >= self.files.len() {
                return Ok(Item::End);
            }
            let Some(take) = gate.due().await else {
                return Ok(Item::End);
            };
            Ok(
                match next(&self.camera, &self.files, self.repeat, &mut self.next).await {
                    Some((image, encoding, origin)) => Item::Frame(SourceFrame {
                        image,
                        encoding,
                        stream_time_us: None,
                        origin: Some(origin),
                        truth: None,
                        take,
                    }),
                    None => Item::End,
                },
            )
        })
    }

    fn watched(&self) -> bool {
        false
    }
}

/// The next readable file of a file camera: its bytes, encoding and path. At most one pass over the files
/// per frame: if none can be read, the camera stops instead of spinning.
async fn next(
    camera: &str,
    files: &[PathBuf],
    repeat: bool,
    next: &mut usize,
) -> Option<(Bytes, ImageEncoding, Arc<str>)> {
    for _ in 0..files.len() {
        if *next >= files.len() {
            if !repeat {
                return None;
            }
            *next = 0;
        }
        let path = files[*next].clone();
        *next += 1;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let origin: Arc<str> = path.display().to_string().into();
                return Some((bytes.into(), encoding_of(&path), origin));
            }
            Err(e) => {
                tracing::warn!(camera, file = %path.display(), error = %e, "Skipping unreadable image file.");
            }
        }
    }
    tracing::error!(camera, "No file of this camera could be read; stopping it.");
    None
}

fn encoding_of(path: &std::path::Path) -> ImageEncoding {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => ImageEncoding::Png,
        _ => ImageEncoding::Jpeg,
    }
}

fn is_image(path: &std::path::Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

pub(super) fn list(camera: &str, pattern: &str) -> Result<Vec<PathBuf>, CameraError> {
    let dir = std::path::Path::new(pattern);
    let mut files: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir)
            .map_err(|e| CameraError::Pattern {
                camera: camera.into(),
                pattern: pattern.into(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect()
    } else {
        glob::glob(pattern)
            .map_err(|e| CameraError::Pattern {
                camera: camera.into(),
                pattern: pattern.into(),
                message: e.to_string(),
            })?
            .filter_map(Result::ok)
            .filter(|p| is_image(p))
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(CameraError::NoFiles {
            camera: camera.into(),
            pattern: pattern.into(),
        });
    }
    Ok(files)
}
