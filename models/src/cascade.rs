//! Scoring a labeled set with both tiers, through the runtime's own loading and scoring path: the manifests
//! are read and checked (checksum, golden samples) by [`ModelRunner`], and each image goes through the same
//! decode, resize, normalization and output interpretation as on the edge and in the cloud.

use crate::dataset::Sample;
use bytes::Bytes;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;
use tierline_shared::manifest::Manifest;
use tierline_shared::runner::{ModelRunner, RunnerConfig, RunnerError, Score};

/// Errors from scoring a set.
#[derive(Debug, Error)]
pub enum CascadeError {
    /// A model could not be loaded or fails its golden samples.
    #[error("{tier} model: {source}")]
    Model {
        /// `edge` or `cloud`.
        tier: &'static str,
        /// The runtime's error (boxed: it is large).
        source: Box<RunnerError>,
    },
    /// An image could not be read.
    #[error("cannot read image {path}: {source}")]
    Read {
        /// Image path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// An image could not be scored (the runtime would reject the frame as unreadable).
    #[error(
        "image {path} cannot be scored by the {tier} model: {message}; fix or remove it from the set"
    )]
    Score {
        /// Image path.
        path: PathBuf,
        /// `edge` or `cloud`.
        tier: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// A ground-truth label is not a class of the cloud model.
    #[error(
        "label {label:?} of {path} is not a class of the cloud model ({classes}); relabel it or use a model with that class"
    )]
    UnknownLabel {
        /// The label.
        label: String,
        /// First image with it.
        path: PathBuf,
        /// The cloud model's classes.
        classes: String,
    },
}

/// Both tiers, loaded as the runtime loads them.
pub struct Tiers {
    /// The edge prescreen.
    pub edge: ModelRunner,
    /// The cloud model.
    pub cloud: ModelRunner,
}

fn load(
    path: &Path,
    tier: &'static str,
    threads: NonZeroUsize,
) -> Result<ModelRunner, CascadeError> {
    let err = |source| CascadeError::Model {
        tier,
        source: Box::new(source),
    };
    let manifest = Manifest::load(path).map_err(|e| err(e.into()))?;
    let config = RunnerConfig {
        threads,
        ..RunnerConfig::default()
    };
    let runner = ModelRunner::start(manifest, config).map_err(err)?;
    runner.check_golden_blocking().map_err(err)?;
    Ok(runner)
}

impl Tiers {
    /// Loads both manifests, verifies the models and checks their golden samples.
    pub fn load(edge: &Path, cloud: &Path, threads: NonZeroUsize) -> Result<Self, CascadeError> {
        Ok(Self {
            edge: load(edge, "edge", threads)?,
            cloud: load(cloud, "cloud", threads)?,
        })
    }
}

/// What both tiers said about one image.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Image path.
    pub path: PathBuf,
    /// Ground truth.
    pub truth: String,
    /// The surface, when the set names it.
    pub surface: Option<String>,
    /// Encoded size: what forwarding the frame costs.
    pub bytes: u64,
    /// The prescreen's defect score.
    pub edge_score: f32,
    /// The cloud model's judgement.
    pub cloud: Score,
}

/// Scores every sample with both tiers, `workers` images at a time; results keep the sample order.
pub fn score_all(
    tiers: &Tiers,
    samples: &[Sample],
    workers: NonZeroUsize,
) -> Result<Vec<Scored>, CascadeError> {
    let classes = &tiers.cloud.manifest().output.classes;
    if let Some(s) = samples.iter().find(|s| !classes.contains(&s.label)) {
        return Err(CascadeError::UnknownLabel {
            label: s.label.clone(),
            path: s.path.clone(),
            classes: classes.join(", "),
        });
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Scored, CascadeError>>>> =
        Mutex::new((0..samples.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.get() {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sample) = samples.get(i) else { break };
                    let r = score_one(tiers, sample);
                    let failed = r.is_err();
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(samples.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let all = results.into_inner().unwrap_or_else(|e| e.into_inner());
    all.into_iter().flatten().collect()
}

fn score_one(tiers: &Tiers, sample: &Sample) -> Result<Scored, CascadeError> {
    let data = std::fs::read(&sample.path).map_err(|source| CascadeError::Read {
        path: sample.path.clone(),
        source,
    })?;
    let bytes = data.len() as u64;
    let image = Bytes::from(data);
    let fail = |tier, e: tierline_shared::runner::InferError| CascadeError::Score {
        path: sample.path.clone(),
        tier,
        message: e.to_string(),
    };
    let edge = tiers
        .edge
        .score_blocking(image.clone())
        .map_err(|e| fail("edge", e))?;
    let cloud = tiers
        .cloud
        .score_blocking(image)
        .map_err(|e| fail("cloud", e))?;
    Ok(Scored {
        path: sample.path.clone(),
        truth: sample.label.clone(),
        surface: sample.surface.clone(),
        bytes,
        edge_score: edge.defect_score,
        cloud,
    })
}
