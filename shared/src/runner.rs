//! Runs one ONNX model on dedicated threads behind a bounded queue, taking batches.
//!
//! ```text
//! score(image) ──► bounded queue (capacity `queue`) ──► worker thread × `threads`
//!                                                        ├─ take up to `max_batch` jobs, waiting ≤ `max_wait`
//!                                                        ├─ decode + resize + normalize each (bad images fail alone)
//!                                                        └─ one session.run for the batch → reply per job
//! ```
//!
//! Each worker owns its own ONNX Runtime session with one intra-op thread and spinning off: on small CPUs,
//! spinning threads hurt tail latency more than they help throughput. Callers get backpressure from the
//! bounded queue: `score` waits for room.

use crate::manifest::{Manifest, ManifestError, OutputKind};
use crate::onnx::{self, OnnxError};
use crate::preprocess::{PreprocessError, Preprocessor};
use bytes::Bytes;
use ort::session::Session;
use ort::value::TensorRef;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::oneshot;

/// How a model runner schedules work.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Worker threads, each with its own session.
    pub threads: NonZeroUsize,
    /// Most images in one `session.run`.
    pub max_batch: NonZeroUsize,
    /// How long a worker waits to fill a batch once it has one job (zero: take only what is queued).
    pub max_wait: Duration,
    /// Capacity of the job queue.
    pub queue: NonZeroUsize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            threads: NonZeroUsize::MIN,
            max_batch: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            max_wait: Duration::ZERO,
            queue: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Errors from starting a runner.
#[derive(Debug, Error)]
pub enum RunnerError {
    /// The manifest or model file is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// ONNX Runtime could not be loaded.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// ONNX Runtime refused the model.
    #[error("ONNX Runtime cannot load model {path} (manifest {manifest}): {message}")]
    Session {
        /// Model file.
        path: String,
        /// Manifest file.
        manifest: String,
        /// ONNX Runtime message.
        message: String,
    },
    /// The model does not have the input or output the manifest names.
    #[error(
        "model {path} has no {what} named {name:?} (it has {found:?}); fix the manifest {manifest}"
    )]
    Signature {
        /// Model file.
        path: String,
        /// Manifest file.
        manifest: String,
        /// "input" or "output".
        what: &'static str,
        /// Name the manifest expects.
        name: String,
        /// Names the model has.
        found: Vec<String>,
    },
    /// A golden sample was misclassified or could not be scored.
    #[error(
        "model {model} {version} fails golden sample {sample}: {problem}; the model file does not behave as its manifest promises"
    )]
    Golden {
        /// Model name.
        model: String,
        /// Model version.
        version: String,
        /// Sample path.
        sample: String,
        /// What went wrong.
        problem: String,
    },
}

/// Errors from scoring one image.
#[derive(Debug, Error)]
pub enum InferError {
    /// The image could not be preprocessed.
    #[error(transparent)]
    Image(#[from] PreprocessError),
    /// ONNX Runtime failed on the batch.
    #[error("inference failed: {0}")]
    Model(String),
    /// The model output does not match the manifest.
    #[error("model output does not match the manifest: {0}")]
    Output(String),
    /// The runner has stopped.
    #[error("the model runner has stopped")]
    Stopped,
}

/// The model's judgement of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Probability that the image shows a defect, in [0, 1].
    pub defect_score: f32,
    /// `defect_score >= threshold`.
    pub defective: bool,
    /// The good class when not defective, otherwise the most likely defect class.
    pub label: String,
    /// Probability per class, in manifest order.
    pub class_scores: Vec<(String, f32)>,
}

struct Job {
    image: Bytes,
    reply: oneshot::Sender<Result<Score, InferError>>,
}

/// A fault a drill can inject into the next batch a worker runs, to exercise the recovery paths against
/// the real runtime (see [`ModelRunner::inject_fault`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The worker blocks for this long before running the batch, as a hung session would.
    Stall(Duration),
    /// The batch fails as if ONNX Runtime had returned an error.
    Fail,
}

/// A model behind a bounded queue and dedicated worker threads.
pub struct ModelRunner {
    tx: flume::Sender<Job>,
    manifest: Arc<Manifest>,
    faults: Arc<std::sync::Mutex<Vec<Fault>>>,
}

impl ModelRunner {
    /// Verifies the model's checksum, creates one session per worker thread and starts the workers.
    pub fn start(manifest: Manifest, config: RunnerConfig) -> Result<Self, RunnerError> {
        let model = manifest.read_verified_model()?;
        let env = onnx::environment()?;
        let manifest = Arc::new(manifest);
        let (tx, rx) = flume::bounded::<Job>(config.queue.get());
        let faults = Arc::new(std::sync::Mutex::new(Vec::new()));
        for worker in 0..config.threads.get() {
            let session = build_session(&env, &manifest, &model)?;
            let mut w = Worker::new(session, manifest.clone(), config.clone(), faults.clone());
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("infer-{}-{worker}", manifest.name))
                .spawn(move || w.serve(rx))
                .map_err(|e| RunnerError::Session {
                    path: manifest.model_path().display().to_string(),
                    manifest: manifest.path.display().to_string(),
                    message: format!("cannot spawn worker thread: {e}"),
                })?;
        }
        Ok(Self {
            tx,
            manifest,
            faults,
        })
    }

    /// Fault drill: the next batches taken by the workers suffer `faults`, one per batch, in order.
    /// Used by tests and drills to exercise the watchdog against real sessions.
    pub fn inject_fault(&self, faults: &[Fault]) {
        if let Ok(mut f) = self.faults.lock() {
            f.extend(faults.iter().rev());
        }
    }

    /// The manifest of the running model, shared.
    pub fn manifest_arc(&self) -> Arc<Manifest> {
        self.manifest.clone()
    }

    /// Loads the manifest at `path`, verifies and starts the model, and checks its golden samples, on a
    /// blocking thread. The one way both tiers load a model.
    pub async fn load_checked(
        path: &std::path::Path,
        config: RunnerConfig,
    ) -> Result<Arc<Self>, RunnerError> {
        let path = path.to_path_buf();
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            let runner = Self::start(Manifest::load(&path)?, config)?;
            runner.check_golden_blocking()?;
            Ok(Arc::new(runner))
        })
        .await
        .map_err(|e| RunnerError::Session {
            path: shown.clone(),
            manifest: shown,
            message: format!("model loading stopped unexpectedly: {e}"),
        })?
    }

    /// The manifest of the running model.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Scores one encoded image, waiting for room in the queue.
    pub async fn score(&self, image: Bytes) -> Result<Score, InferError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_async(Job { image, reply })
            .await
            .map_err(|_| InferError::Stopped)?;
        rx.await.map_err(|_| InferError::Stopped)?
    }

    /// Scores one encoded image from a non-async context.
    pub fn score_blocking(&self, image: Bytes) -> Result<Score, InferError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { image, reply })
            .map_err(|_| InferError::Stopped)?;
        rx.blocking_recv().map_err(|_| InferError::Stopped)?
    }

    /// Scores every golden sample in the manifest and checks the answers.
    /// Returns the slowest single-sample latency.
    pub fn check_golden_blocking(&self) -> Result<Duration, RunnerError> {
        let m = &self.manifest;
        let mut slowest = Duration::ZERO;
        for g in &m.golden {
            let path = m.dir.join(&g.file);
            let fail = |problem: String| RunnerError::Golden {
                model: m.name.clone(),
                version: m.version.clone(),
                sample: path.display().to_string(),
                problem,
            };
            let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read it: {e}")))?;
            let started = Instant::now();
            let score = self
                .score_blocking(Bytes::from(bytes))
                .map_err(|e| fail(e.to_string()))?;
            slowest = slowest.max(started.elapsed());
            if !g.matches(&score) {
                return Err(fail(format!(
                    "expected {}, got {} (defect score {:.3}, threshold {:.3})",
                    g.expect, score.label, score.defect_score, m.output.threshold
                )));
            }
        }
        Ok(slowest)
    }
}

fn build_session(
    env: &ort::environment::Environment,
    manifest: &Manifest,
    model: &[u8],
) -> Result<Session, RunnerError> {
    let session_err = |message: String| RunnerError::Session {
        path: manifest.model_path().display().to_string(),
        manifest: manifest.path.display().to_string(),
        message,
    };
    let session = Session::builder(env)
        .map_err(|e| session_err(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| session_err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| session_err(e.to_string()))?
        .with_intra_op_spinning(false)
        .map_err(|e| session_err(e.to_string()))?
        .with_inter_op_spinning(false)
        .map_err(|e| session_err(e.to_string()))?
        .commit_from_memory(model)
        .map_err(|e| session_err(e.to_string()))?;
    let check = |what: &'static str, name: &str, names: Vec<String>| {
        if names.iter().any(|n| n == name) {
            Ok(())
        } else {
            Err(RunnerError::Signature {
                path: manifest.model_path().display().to_string(),
                manifest: manifest.path.display().to_string(),
                what,
                name: name.to_string(),
                found: names,
            })
        }
    };
    check(
        "input",
        &manifest.input.name,
        session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect(),
    )?;
    check(
        "output",
        &manifest.output.name,
        session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect(),
    )?;
    Ok(session)
}

struct Worker {
    session: Session,
    manifest: Arc<Manifest>,
    config: RunnerConfig,
    pre: Preprocessor,
    buffer: Vec<f32>,
    faults: Arc<std::sync::Mutex<Vec<Fault>>>,
}

impl Worker {
    fn new(
        session: Session,
        manifest: Arc<Manifest>,
        config: RunnerConfig,
        faults: Arc<std::sync::Mutex<Vec<Fault>>>,
    ) -> Self {
        let pre = Preprocessor::new(manifest.input.clone());
        Self {
            session,
            manifest,
            config,
            pre,
            buffer: Vec::new(),
            faults,
        }
    }

    fn serve(&mut self, rx: flume::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.config.max_batch.get());
        while let Ok(first) = rx.recv() {
            batch.push(first);
            let deadline = Instant::now() + self.config.max_wait;
            while batch.len() < self.config.max_batch.get() {
                let next = if self.config.max_wait.is_zero() {
                    rx.try_recv().ok()
                } else {
                    rx.recv_deadline(deadline).ok()
                };
                match next {
                    Some(job) => batch.push(job),
                    None => break,
                }
            }
            self.run_batch(&mut batch);
        }
    }

    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let per_image = self.pre.tensor_len();
        self.buffer.clear();
        let mut ready: Vec<Job> = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            let start = self.buffer.len();
            self.buffer.resize(start + per_image, 0.0);
            match self.pre.run(&job.image, &mut self.buffer[start..]) {
                Ok(()) => ready.push(job),
                Err(e) => {
                    self.buffer.truncate(start);
                    let _ = job.reply.send(Err(e.into()));
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        match self.infer(ready.len()) {
            Ok(scores) => {
                for (job, score) in ready.into_iter().zip(scores) {
                    let _ = job.reply.send(Ok(score));
                }
            }
            Err(e) => {
                tracing::error!(model = %self.manifest.name, batch = ready.len(), error = %e, "Inference failed.");
                for job in ready {
                    let _ = job.reply.send(Err(InferError::Model(e.to_string())));
                }
            }
        }
    }

    fn infer(&mut self, n: usize) -> Result<Vec<Score>, InferError> {
        let fault = self.faults.lock().ok().and_then(|mut f| f.pop());
        match fault {
            Some(Fault::Stall(d)) => std::thread::sleep(d),
            Some(Fault::Fail) => {
                return Err(InferError::Model("injected fault (drill)".into()));
            }
            None => {}
        }
        let i = &self.manifest.input;
        let shape = match i.layout {
            crate::manifest::Layout::Nchw => {
                [n, i.channels as usize, i.height as usize, i.width as usize]
            }
            crate::manifest::Layout::Nhwc => {
                [n, i.height as usize, i.width as usize, i.channels as usize]
            }
        };
        let tensor = TensorRef::from_array_view((shape, &self.buffer[..]))
            .map_err(|e| InferError::Model(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![i.name.as_str() => tensor])
            .map_err(|e| InferError::Model(e.to_string()))?;
        let out = outputs.get(&self.manifest.output.name).ok_or_else(|| {
            InferError::Output(format!("no output {:?}", self.manifest.output.name))
        })?;
        let (_, values) = out
            .try_extract_tensor::<f32>()
            .map_err(|e| InferError::Output(e.to_string()))?;
        interpret(&self.manifest, values, n)
    }
}

/// Turns raw output values for `n` images into scores, following the manifest's output spec.
pub fn interpret(manifest: &Manifest, values: &[f32], n: usize) -> Result<Vec<Score>, InferError> {
    let o = &manifest.output;
    let per_image = match o.kind {
        OutputKind::Sigmoid => 1,
        OutputKind::Softmax => o.classes.len(),
    };
    if values.len() != n * per_image {
        return Err(InferError::Output(format!(
            "expected {per_image} values per image for {n} images, got {} values",
            values.len()
        )));
    }
    let defect_class = 1 - o.good_class.min(1);
    values
        .chunks_exact(per_image)
        .map(|v| {
            let probs: Vec<f32> = match o.kind {
                OutputKind::Sigmoid => {
                    let p = v[0];
                    let mut probs = vec![0.0; 2];
                    probs[o.good_class] = 1.0 - p;
                    probs[defect_class] = p;
                    probs
                }
                OutputKind::Softmax => v.to_vec(),
            };
            if probs.iter().any(|p| !p.is_finite()) {
                return Err(InferError::Output(format!("non-finite output {probs:?}")));
            }
            let defect_score = (1.0 - probs[o.good_class]).clamp(0.0, 1.0);
            let defective = defect_score >= o.threshold;
            let label_idx = if defective {
                (0..probs.len())
                    .filter(|&c| c != o.good_class)
                    .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                    .unwrap_or(defect_class)
            } else {
                o.good_class
            };
            Ok(Score {
                defect_score,
                defective,
                label: o.classes[label_idx].clone(),
                class_scores: o.classes.iter().cloned().zip(probs).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(kind: &str, classes: &str, good: usize, threshold: f32) -> Manifest {
        let text = format!(
            r#"name = "m"
version = "1"
file = "m.onnx"
sha256 = "{}"
[input]
name = "image"
layout = "nchw"
channels = 1
width = 8
height = 8
mean = [0.5]
std = [0.25]
[output]
name = "out"
kind = "{kind}"
classes = {classes}
good_class = {good}
threshold = {threshold}
"#,
            "0".repeat(64)
        );
        Manifest::parse(&text, Path::new("m.toml")).unwrap()
    }

    #[test]
    fn sigmoid_scores_map_to_labels() {
        let m = manifest("sigmoid", r#"["good", "defect"]"#, 0, 0.5);
        let s = interpret(&m, &[0.1, 0.9], 2).unwrap();
        assert_eq!((s[0].label.as_str(), s[0].defective), ("good", false));
        assert_eq!((s[1].label.as_str(), s[1].defective), ("defect", true));
        assert!((s[1].defect_score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn softmax_label_is_the_best_defect_class_when_defective() {
        let m = manifest("softmax", r#"["good", "spot", "scratch"]"#, 0, 0.3);
        // good wins the argmax, but the defect mass (0.45) is over the threshold.
        let s = interpret(&m, &[0.55, 0.15, 0.30], 1).unwrap();
        assert!(s[0].defective);
        assert_eq!(s[0].label, "scratch");
    }

    #[test]
    fn wrong_output_size_is_an_error() {
        let m = manifest("softmax", r#"["good", "spot", "scratch"]"#, 0, 0.5);
        assert!(interpret(&m, &[0.5, 0.5], 1).is_err());
    }
}
