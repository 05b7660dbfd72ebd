//! Measurement 9: the cost of tiling. One 1080p JPEG frame scored by the shipped prescreen (128×128 grey)
//! through the model runner, whole (stretched) and cut into grids of tiles at growing counts, one inference
//! thread: milliseconds per frame and per tile, with the rows per frame.

use crate::common;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Instant;
use tierline_shared::manifest::{Manifest, TilingSpec};
use tierline_shared::runner::{ModelRunner, RunnerConfig};

/// One grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TilingRow {
    /// Tiles across × down ("1x1" is the whole frame, stretched).
    pub grid: String,
    /// Tiles per frame.
    pub tiles: u32,
    /// Source pixels per tile side (width x height), before resizing to the model.
    pub tile_size: String,
    /// Mean milliseconds per frame (decode, cut, resize, one batched inference, decode of the outputs).
    pub ms_per_frame: f64,
    /// `ms_per_frame / tiles`.
    pub ms_per_tile: f64,
}

/// Measurement 9's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TilingResults {
    /// Frame size.
    pub frame: String,
    /// Frames scored per grid.
    pub frames: u64,
    /// Model input size.
    pub model_input: String,
    /// One row per grid.
    pub rows: Vec<TilingRow>,
}

/// Runs measurement 9 with `frames` frames per grid.
pub fn run(models: &Path, frames: u64) -> anyhow::Result<TilingResults> {
    let base = Manifest::load(&models.join("prescreen.toml"))?;
    let jpegs = common::jpeg_frames(8, 1920, 1080, 0.05)?;
    let grids: [(u32, u32); 5] = [(1, 1), (2, 2), (4, 3), (8, 5), (15, 9)];
    let mut rows = Vec::new();
    for (cols, rows_n) in grids {
        let mut m = base.clone();
        let tiling = TilingSpec {
            cols,
            rows: rows_n,
            overlap: if cols == 1 { 0 } else { 16 },
        };
        m.tiling = (cols * rows_n > 1).then_some(tiling);
        let tiles = cols * rows_n;
        let size = tierline_shared::preprocess::tiles(1920, 1080, tiling)[0];
        let runner = ModelRunner::start(
            m,
            RunnerConfig {
                max_batch: NonZeroUsize::new(tiles as usize).unwrap_or(NonZeroUsize::MIN),
                ..RunnerConfig::default()
            },
        )?;
        // Warm-up, then timed.
        runner.score_blocking(jpegs[0].clone())?;
        let started = Instant::now();
        for i in 0..frames {
            runner.score_blocking(jpegs[i as usize % jpegs.len()].clone())?;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / frames as f64;
        eprintln!("tiling: {cols}x{rows_n}: {ms:.1} ms per frame");
        rows.push(TilingRow {
            grid: format!("{cols}x{rows_n}"),
            tiles,
            tile_size: format!("{}x{}", size[2], size[3]),
            ms_per_frame: ms,
            ms_per_tile: ms / f64::from(tiles),
        });
    }
    Ok(TilingResults {
        frame: "1920x1080 JPEG".into(),
        frames,
        model_input: format!("{}x{}", base.input.width, base.input.height),
        rows,
    })
}
