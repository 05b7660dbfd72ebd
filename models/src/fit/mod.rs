//! `fit`: an anomaly prescreen for a new surface from good frames only (a new line has no defect samples on
//! day one).
//!
//! ```text
//! good frames ─► split: fit frames │ holdout frames (every k-th)
//! trunk manifest ─► trunk ONNX cut at its feature layers (graph.rs)
//! fit frames ─► runtime preprocessing (tiles) ─► features ─► per-location Gaussians (gauss.rs)
//! trunk + Gaussians ─► anomaly ONNX (PaDiM distance: score + map)
//! holdout frames ─► raw frame scores (worst tile) ─► threshold at the target false-alarm rate
//! ─► manifest (`kind = "anomaly"`, normalization) + golden frames ─► loaded and checked by the runtime
//! ```
//!
//! The features come from a trunk given by its manifest (by default the reference prescreen's, trained on
//! other surfaces), cut at the layer its head pools (or `--layer`); its input settings and tiling carry over,
//! so the anomaly model sees the frame exactly as the trunk did.

pub mod gauss;
pub mod graph;
pub mod proto;

use crate::dataset;
use crate::report::{Z95, wilson_lower};
use graph::{LayerShape, Trunk};
use ort::session::Session;
use ort::value::TensorRef;
use prost::Message;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tierline_shared::manifest::{InputType, Layout, Manifest};
use tierline_shared::preprocess::Preprocessor;

/// The fewest good frames `fit` accepts.
pub const MIN_FRAMES: usize = 20;

/// What to fit.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Folder of good frames.
    pub frames: PathBuf,
    /// Manifest of the model whose trunk gives the features.
    pub trunk: PathBuf,
    /// Trunk tensors to take features from (empty: the layer its head pools).
    pub layers: Vec<String>,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Directory for the model, manifest and golden frames.
    pub out: PathBuf,
    /// Share of good frames the prescreen may flag.
    pub target_false_alarms: f64,
    /// Share of the good frames kept out of the fit to set the threshold.
    pub holdout: f64,
    /// Covariance regularization, times the mean variance.
    pub ridge: f64,
}

/// What `fit` built and measured.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Manifest written.
    pub manifest: PathBuf,
    /// Model file written.
    pub model: PathBuf,
    /// Trunk manifest used.
    pub trunk: PathBuf,
    /// Trunk tensors the features come from.
    pub layers: Vec<String>,
    /// Feature channels.
    pub channels: usize,
    /// Feature map per tile, height × width.
    pub map: [usize; 2],
    /// Good frames the Gaussians were fitted on.
    pub fit_frames: usize,
    /// Tiles those frames gave.
    pub fit_tiles: u64,
    /// Good frames kept out to set the threshold.
    pub holdout_frames: usize,
    /// Target share of good frames flagged.
    pub target_false_alarms: f64,
    /// Raw distance at which a frame is flagged.
    pub raw_threshold: f32,
    /// Holdout frames the runtime flags with the written manifest.
    pub holdout_flagged: usize,
    /// `holdout_flagged / holdout_frames`.
    pub holdout_false_alarms: f64,
    /// Wilson 95 % upper bound on that rate.
    pub holdout_false_alarms_upper_95: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The good frames of `dir`: the `good` rows of its labels.csv when it has one, else the images in it (or
/// in its `good/` subfolder), sorted by name.
pub fn good_frames(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let frames: Vec<PathBuf> = if dir.join("labels.csv").is_file() {
        let all = dataset::load(dir, None)?;
        let n = all.len();
        let good: Vec<PathBuf> = all
            .into_iter()
            .filter(|s| s.label == "good")
            .map(|s| s.path)
            .collect();
        if good.is_empty() {
            anyhow::bail!(
                "{}/labels.csv lists {n} frames and none labeled `good`; fit needs good frames",
                dir.display()
            );
        }
        good
    } else {
        let flat = image_files(dir)?;
        if flat.is_empty() && dir.join("good").is_dir() {
            image_files(&dir.join("good"))?
        } else {
            flat
        }
    };
    if frames.len() < MIN_FRAMES {
        anyhow::bail!(
            "{} holds {} good frames; fit needs at least {MIN_FRAMES} (a few hundred set the threshold well)",
            dir.display(),
            frames.len()
        );
    }
    Ok(frames)
}

fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let p = e
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
            .path();
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if p.is_file() && matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether frame `i` is held out: an even spread of `share` of the frames.
fn held_out(i: usize, share: f64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

/// A session on `model` with one thread, as the runtime's runners use; `what` and `trunk` name it in errors.
fn session(model: &proto::Model, what: &str, trunk: &Path) -> anyhow::Result<Session> {
    let env = tierline_shared::onnx::environment()?;
    let bytes = model.encode_to_vec();
    let refused = |e: String| {
        anyhow::anyhow!(
            "ONNX Runtime refused {what} built from trunk {}: {e}",
            trunk.display()
        )
    };
    Session::builder(&env)
        .map_err(|e| refused(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| refused(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| refused(e.to_string()))?
        .commit_from_memory(&bytes)
        .map_err(|e| refused(e.to_string()))
}

/// Feeds frames through sessions as the runtime preprocesses them for the trunk (decode, tiles, resize,
/// normalization).
struct Runner {
    manifest: Manifest,
    pre: Preprocessor,
    rows: Vec<f32>,
}

impl Runner {
    fn new(manifest: Manifest) -> anyhow::Result<Self> {
        if manifest.input.dtype != InputType::F32 {
            anyhow::bail!(
                "trunk {} takes {:?} input; fit needs a float32 trunk",
                manifest.path.display(),
                manifest.input.dtype
            );
        }
        let pre = Preprocessor::with_tiling(manifest.input.clone(), manifest.tiling);
        Ok(Self {
            manifest,
            pre,
            rows: Vec::new(),
        })
    }

    /// Runs `session` on one frame's rows; returns each named output as (shape, values).
    fn run(
        &mut self,
        session: &mut Session,
        frame: &Path,
        outputs: &[&str],
    ) -> anyhow::Result<Vec<(Vec<i64>, Vec<f32>)>> {
        let data = std::fs::read(frame)
            .map_err(|e| anyhow::anyhow!("cannot read frame {}: {e}", frame.display()))?;
        self.rows.clear();
        let geometries = self.pre.run_rows(&data, &mut self.rows).map_err(|e| {
            anyhow::anyhow!(
                "frame {} cannot be used: {e}; remove it from the folder",
                frame.display()
            )
        })?;
        let n = geometries.len();
        let i = &self.manifest.input;
        let shape = match i.layout {
            Layout::Nchw => [n, i.channels as usize, i.height as usize, i.width as usize],
            Layout::Nhwc => [n, i.height as usize, i.width as usize, i.channels as usize],
        };
        let failed = |e: ort::Error| {
            anyhow::anyhow!("ONNX Runtime failed on frame {}: {e}", frame.display())
        };
        let t = TensorRef::from_array_view((shape, &self.rows[..])).map_err(failed)?;
        let out = session
            .run(ort::inputs![i.name.as_str() => t])
            .map_err(failed)?;
        outputs
            .iter()
            .map(|name| {
                let v = out
                    .get(*name)
                    .ok_or_else(|| anyhow::anyhow!("the graph has no output {name}"))?;
                let (s, v) = v.try_extract_tensor::<f32>()?;
                Ok((s.to_vec(), v.to_vec()))
            })
            .collect()
    }
}

/// Fits the anomaly prescreen and writes it; `progress` gets a line now and then.
pub fn fit(o: &FitOptions, progress: &mut dyn FnMut(&str)) -> anyhow::Result<FitReport> {
    let started = Instant::now();
    if !(o.target_false_alarms > 0.0 && o.target_false_alarms < 1.0) {
        anyhow::bail!(
            "--target-false-alarms is {}; it must be strictly between 0 and 1",
            o.target_false_alarms
        );
    }
    if !(o.holdout > 0.0 && o.holdout < 1.0) {
        anyhow::bail!(
            "--holdout is {}; it must be strictly between 0 and 1",
            o.holdout
        );
    }
    if o.name.is_empty()
        || !o
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!(
            "--name {:?} must be letters, digits, '-' or '_' (it names files and MQTT topic levels)",
            o.name
        );
    }
    if o.version.is_empty()
        || o.version.starts_with('.')
        || !o
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        anyhow::bail!(
            "--version {:?} must be letters, digits, '.', '-' or '_' (it names the model file)",
            o.version
        );
    }
    if !(o.ridge.is_finite() && o.ridge >= 0.0) {
        anyhow::bail!("--ridge is {}; it must be a finite number ≥ 0", o.ridge);
    }
    let frames = good_frames(&o.frames)?;
    let held = (0..frames.len())
        .filter(|i| held_out(*i, o.holdout))
        .count();
    if held == 0 || frames.len() - held < MIN_FRAMES / 2 {
        anyhow::bail!(
            "--holdout {} of {} frames keeps {held} out of the fit and {} in it; give more frames or change \
             --holdout so that both sides have frames",
            o.holdout,
            frames.len(),
            frames.len() - held
        );
    }
    let manifest_path = o.out.join(format!("{}.toml", o.name));
    if let (Ok(a), Ok(b)) = (manifest_path.canonicalize(), o.trunk.canonicalize())
        && a == b
    {
        anyhow::bail!(
            "--name {} would overwrite the trunk's manifest {}; choose another name or --out",
            o.name,
            o.trunk.display()
        );
    }
    let trunk_manifest = Manifest::load(&o.trunk)?;
    let trunk_bytes = trunk_manifest.read_verified_model()?;
    let trunk = proto::decode(&trunk_bytes)
        .and_then(Trunk::new)
        .map_err(|e| {
            anyhow::anyhow!(
                "trunk model {} cannot be used: {e}",
                trunk_manifest.model_path().display()
            )
        })?;
    let layers = if o.layers.is_empty() {
        vec![trunk.default_layer().ok_or_else(|| {
            anyhow::anyhow!(
                "trunk {} has no global pooling node to find its feature layer by; name one with --layer (its tensors: {})",
                o.trunk.display(),
                trunk.tensors().join(", ")
            )
        })?]
    } else {
        o.layers.clone()
    };
    let mut runner = Runner::new(trunk_manifest.clone())?;

    // The layers' shapes, from the first frame.
    let trunk_err = |e: String| anyhow::anyhow!("trunk {}: {e}", o.trunk.display());
    let cut = trunk.cut(&layers).map_err(trunk_err)?;
    let mut probe = session(&cut, "the cut trunk", &o.trunk)?;
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    let shapes = runner
        .run(&mut probe, &frames[0], &names)?
        .into_iter()
        .zip(&layers)
        .map(|((s, _), l)| match s[..] {
            [_, c, h, w] if c > 0 && h > 0 && w > 0 => Ok(LayerShape {
                channels: c as usize,
                height: h as usize,
                width: w as usize,
            }),
            _ => Err(anyhow::anyhow!(
                "trunk tensor {l:?} has shape {s:?}; a feature layer is [N, C, H, W]"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(probe);
    let (shape, factors) = graph::combined_shape(&shapes).map_err(trunk_err)?;
    let locations = shape.height * shape.width;
    // The sums take channels² × locations f64 values; the model stores them again as f32.
    let statistics_bytes = shape.channels * shape.channels * locations * 8;
    if statistics_bytes > 1 << 30 {
        anyhow::bail!(
            "layers {} give {} channels on a {}×{} map: {} MB of statistics; choose a deeper layer (smaller map) \
             or fewer layers",
            layers.join(", "),
            shape.channels,
            shape.height,
            shape.width,
            statistics_bytes >> 20
        );
    }

    // Fit.
    let (fit_set, holdout): (Vec<&PathBuf>, Vec<&PathBuf>) = {
        let mut split = (Vec::new(), Vec::new());
        for (i, f) in frames.iter().enumerate() {
            if held_out(i, o.holdout) {
                split.1.push(f);
            } else {
                split.0.push(f);
            }
        }
        split
    };
    let features = graph::features_model(&trunk, &layers, &factors).map_err(trunk_err)?;
    let mut fs = session(&features, "the feature graph", &o.trunk)?;
    let feature_output = features
        .graph
        .as_ref()
        .and_then(|g| g.output.first())
        .map(|v| v.name.clone())
        .unwrap_or_default();
    let mut acc = gauss::Accumulator::new(shape.channels, locations);
    let per_tile = shape.channels * locations;
    for (k, f) in fit_set.iter().enumerate() {
        let out = runner.run(&mut fs, f, &[&feature_output])?;
        let (dims, values) = &out[0];
        if values.len() % per_tile != 0 || values.is_empty() {
            anyhow::bail!(
                "trunk {} gave features of shape {dims:?} for {}; expected [tiles, {}, {}, {}]",
                o.trunk.display(),
                f.display(),
                shape.channels,
                shape.height,
                shape.width
            );
        }
        if values.iter().any(|v| !v.is_finite()) {
            anyhow::bail!(
                "trunk {} gave non-finite features for {}; check the trunk model",
                o.trunk.display(),
                f.display()
            );
        }
        for tile in values.chunks_exact(per_tile) {
            acc.add(tile);
        }
        if (k + 1) % 50 == 0 {
            progress(&format!("fit: {}/{} frames", k + 1, fit_set.len()));
        }
    }
    drop(fs);
    let fitted = acc.finish(o.ridge).map_err(|e| anyhow::anyhow!("{e}"))?;
    let doc = format!(
        "PaDiM anomaly prescreen: Gaussians per feature location of {} (layers {}) fitted on {} good frames ({} tiles) of {}",
        trunk_manifest.name,
        layers.join(", "),
        fit_set.len(),
        fitted.samples,
        o.frames.file_name().map_or_else(
            || o.frames.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let model =
        graph::anomaly_model(&trunk, &layers, &factors, shape, &fitted, &doc).map_err(trunk_err)?;

    // Threshold from the holdout frames: the worst tile decides, as in the runtime.
    let mut ms = session(&model, "the anomaly graph", &o.trunk)?;
    let mut raw: Vec<(f32, &PathBuf)> = Vec::with_capacity(holdout.len());
    for f in &holdout {
        let out = runner.run(&mut ms, f, &[graph::SCORE])?;
        let worst = out[0].1.iter().copied().fold(f32::MIN, f32::max);
        if !worst.is_finite() {
            anyhow::bail!(
                "the anomaly score of {} is not finite; raise --ridge",
                f.display()
            );
        }
        raw.push((worst, f));
    }
    drop(ms);
    raw.sort_by(|a, b| b.0.total_cmp(&a.0));
    let allowed = (o.target_false_alarms * raw.len() as f64).floor() as usize;
    // Frames at or above the threshold are flagged: it lies above the (allowed + 1)-th highest score, and
    // halfway to the next one up when there is room.
    let raw_threshold = match (raw.get(allowed.wrapping_sub(1)), raw.get(allowed)) {
        (Some(above), Some(below)) if above.0 > below.0.next_up() => 0.5 * (above.0 + below.0),
        (_, Some(below)) => below.0.next_up(),
        _ => anyhow::bail!("no holdout frames; raise --holdout or give more frames"),
    };
    let lowest = raw.last().map_or(0.0, |r| r.0).min(raw_threshold);
    // anomalib's normalization needs max > min.
    let highest = raw
        .first()
        .map_or(raw_threshold, |r| r.0)
        .max(raw_threshold)
        .max(lowest + 1e-3);

    // Files, staged in a folder beside their place and moved there once the runtime accepts them.
    std::fs::create_dir_all(&o.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", o.out.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(&format!(".fit-{}-", o.name))
        .tempdir_in(&o.out)
        .map_err(|e| anyhow::anyhow!("cannot create a folder in {}: {e}", o.out.display()))?;
    let model_file = format!("{}-{}.onnx", o.name, o.version);
    let bytes = model.encode_to_vec();
    write(&stage.path().join(&model_file), &bytes)?;
    let golden_dir = format!("golden-{}", o.name);
    std::fs::create_dir_all(stage.path().join(&golden_dir)).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {e}",
            stage.path().join(&golden_dir).display()
        )
    })?;
    // The two most typical holdout frames are the golden goods.
    let mut goldens = Vec::new();
    for (k, (_, f)) in raw.iter().rev().take(2).enumerate() {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("jpg");
        let rel = format!("{golden_dir}/good-{k}.{ext}");
        std::fs::copy(f, stage.path().join(&rel))
            .map_err(|e| anyhow::anyhow!("cannot copy {} to {rel}: {e}", f.display()))?;
        goldens.push(rel);
    }
    let staged_manifest = stage.path().join(format!("{}.toml", o.name));
    let text = manifest_text(
        o,
        &model_file,
        &tierline_shared::bundle::archive::sha256_hex(&bytes),
        &doc,
        (lowest, highest.max(raw_threshold), raw_threshold),
        &goldens,
    )?;
    write(&staged_manifest, text.as_bytes())?;

    // The runtime's view: load, check the goldens, and count the holdout frames it flags.
    let m = Manifest::load(&staged_manifest)?;
    let rt = tierline_shared::runner::ModelRunner::start(m, Default::default())?;
    rt.check_golden_blocking().map_err(|e| {
        anyhow::anyhow!(
            "the fitted model fails its own golden good frames ({e}); with --target-false-alarms {} the \
             threshold sits among typical good frames: lower it",
            o.target_false_alarms
        )
    })?;
    let mut flagged = 0;
    for (_, f) in &raw {
        let data = std::fs::read(f)
            .map_err(|e| anyhow::anyhow!("cannot read frame {}: {e}", f.display()))?;
        if rt.score_blocking(bytes::Bytes::from(data))?.defective {
            flagged += 1;
        }
    }
    drop(rt);
    let n = raw.len();
    let rate = flagged as f64 / n as f64;
    let model_path = o.out.join(&model_file);
    let golden_path = o.out.join(&golden_dir);
    let moved = (|| -> std::io::Result<()> {
        if golden_path.exists() {
            std::fs::remove_dir_all(&golden_path)?;
        }
        std::fs::rename(stage.path().join(&golden_dir), &golden_path)?;
        std::fs::rename(stage.path().join(&model_file), &model_path)?;
        // The manifest last: it names the other two.
        std::fs::rename(&staged_manifest, &manifest_path)
    })();
    moved.map_err(|e| {
        anyhow::anyhow!("cannot move the fitted model into {}: {e}", o.out.display())
    })?;
    Ok(FitReport {
        manifest: manifest_path,
        model: model_path,
        trunk: o.trunk.clone(),
        layers,
        channels: shape.channels,
        map: [shape.height, shape.width],
        fit_frames: fit_set.len(),
        fit_tiles: fitted.samples,
        holdout_frames: n,
        target_false_alarms: o.target_false_alarms,
        raw_threshold,
        holdout_flagged: flagged,
        holdout_false_alarms: rate,
        holdout_false_alarms_upper_95: 1.0 - wilson_lower(n - flagged, n, Z95),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The manifest: the trunk's `[input]` and `[tiling]` tables verbatim, an anomaly `[output]` whose
/// normalization puts the raw threshold at 0.5, and the golden frames.
fn manifest_text(
    o: &FitOptions,
    file: &str,
    sha256: &str,
    description: &str,
    (min, max, threshold): (f32, f32, f32),
    goldens: &[String],
) -> anyhow::Result<String> {
    let trunk = &o.trunk;
    let trunk_text = std::fs::read_to_string(trunk)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", trunk.display()))?;
    let trunk_doc: toml_edit::DocumentMut = trunk_text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", trunk.display()))?;
    let mut doc = toml_edit::DocumentMut::new();
    doc["name"] = toml_edit::value(o.name.as_str());
    doc["version"] = toml_edit::value(o.version.as_str());
    doc["file"] = toml_edit::value(file);
    doc["sha256"] = toml_edit::value(sha256);
    doc["description"] = toml_edit::value(description);
    for table in ["input", "tiling"] {
        if let Some(t) = trunk_doc.get(table) {
            doc[table] = t.clone();
        }
    }
    let mut output = toml_edit::Table::new();
    output["name"] = toml_edit::value(graph::SCORE);
    output["map"] = toml_edit::value(graph::MAP);
    output["kind"] = toml_edit::value("anomaly");
    output["classes"] = toml_edit::value(toml_edit::Array::from_iter(["anomaly"]));
    output["threshold"] = toml_edit::value(0.5);
    let mut norm = toml_edit::InlineTable::new();
    norm.insert("min", f64::from(min).into());
    norm.insert("max", f64::from(max).into());
    norm.insert("image_threshold", f64::from(threshold).into());
    output["normalization"] = toml_edit::value(norm);
    doc["output"] = toml_edit::Item::Table(output);
    let mut golden = toml_edit::ArrayOfTables::new();
    for g in goldens {
        let mut t = toml_edit::Table::new();
        t["file"] = toml_edit::value(g.as_str());
        t["expect"] = toml_edit::value("good");
        golden.push(t);
    }
    doc["golden"] = toml_edit::Item::ArrayOfTables(golden);
    let text = doc.to_string();
    Ok(text)
}
