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

use crate::decode::{self, Tensor};
use crate::manifest::{InputType, Layout, Manifest, ManifestError};
use crate::onnx::{self, OnnxError};
use crate::preprocess::{Geometry, PreprocessError, Preprocessor};
use bytes::Bytes;
use ort::session::Session;
use ort::session::SessionOutputs;
use ort::value::{TensorElementType, TensorRef, ValueType};
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
    /// A tensor's shape or element type differs from what the manifest describes (the message names the
    /// tensor, the model's shape and the manifest's).
    #[error("{0}")]
    Shape(String),
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

pub use crate::decode::{Score, interpret};

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
    check_signature(&session, manifest)?;
    Ok(session)
}

/// Checks that the model has the tensors the manifest names, with compatible shapes and types; the error
/// names the tensor and both descriptions.
fn check_signature(session: &Session, manifest: &Manifest) -> Result<(), RunnerError> {
    use crate::manifest::{DetectionLayout, OutputKind};
    let path = manifest.model_path().display().to_string();
    let manifest_path = manifest.path.display().to_string();
    let missing = |what: &'static str, name: &str, found: Vec<String>| RunnerError::Signature {
        path: path.clone(),
        manifest: manifest_path.clone(),
        what,
        name: name.to_string(),
        found,
    };
    let mismatch = |what: &'static str, name: &str, model: String, expected: String| {
        RunnerError::Shape(format!(
            "model {path}: {what} {name:?} is {model} in the model, but the manifest {manifest_path} describes {expected}; fix the manifest (or use the model it was written for)"
        ))
    };
    let describe = |ty: &TensorElementType, shape: &[i64]| {
        let dims: Vec<String> = shape
            .iter()
            .map(|d| {
                if *d < 0 {
                    "?".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect();
        format!("[{}] {ty:?}", dims.join(", "))
    };
    // A model dimension of -1 is dynamic and fits anything.
    let fits = |model: &[i64], want: &[Option<i64>]| {
        model.len() == want.len()
            && model
                .iter()
                .zip(want)
                .all(|(m, w)| *m < 0 || w.is_none_or(|w| w == *m))
    };
    let show = |want: &[Option<i64>], ty: &str| {
        let dims: Vec<String> = want
            .iter()
            .map(|d| d.map_or("N".to_string(), |d| d.to_string()))
            .collect();
        format!("[{}] {ty}", dims.join(", "))
    };

    let i = &manifest.input;
    let input = session
        .inputs()
        .iter()
        .find(|o| o.name() == i.name)
        .ok_or_else(|| {
            missing(
                "input",
                &i.name,
                session
                    .inputs()
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect(),
            )
        })?;
    let batch = (i.batch > 0).then_some(i64::from(i.batch));
    let (c, h, w) = (
        Some(i64::from(i.channels)),
        Some(i64::from(i.height)),
        Some(i64::from(i.width)),
    );
    let want: Vec<Option<i64>> = match i.layout {
        Layout::Nchw => vec![batch, c, h, w],
        Layout::Nhwc => vec![batch, h, w, c],
    };
    let (want_ty, want_ty_name) = match i.dtype {
        InputType::F32 => (TensorElementType::Float32, "Float32"),
        InputType::F16 => (TensorElementType::Float16, "Float16"),
        InputType::U8 => (TensorElementType::Uint8, "Uint8"),
    };
    match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let batch_ok = i.batch > 0 || shape.first().is_some_and(|d| *d < 0);
            if *ty != want_ty || !fits(shape, &want) || !batch_ok {
                let mut expected = show(&want, want_ty_name);
                if !batch_ok {
                    expected.push_str(&format!(
                        " with a dynamic batch (the model's batch is fixed at {}: set input.batch = {0})",
                        shape.first().copied().unwrap_or(0)
                    ));
                }
                return Err(mismatch("input", &i.name, describe(ty, shape), expected));
            }
        }
        other => {
            return Err(mismatch(
                "input",
                &i.name,
                format!("{other:?}"),
                show(&want, want_ty_name),
            ));
        }
    }

    let o = &manifest.output;
    let c = o.classes.len() as i64;
    for name in decode::output_names(manifest) {
        let output = session
            .outputs()
            .iter()
            .find(|x| x.name() == name)
            .ok_or_else(|| {
                missing(
                    "output",
                    &name,
                    session
                        .outputs()
                        .iter()
                        .map(|x| x.name().to_string())
                        .collect(),
                )
            })?;
        let ValueType::Tensor { ty, shape, .. } = output.dtype() else {
            return Err(mismatch(
                "output",
                &name,
                format!("{:?}", output.dtype()),
                "a tensor".into(),
            ));
        };
        let numeric = matches!(
            ty,
            TensorElementType::Float32
                | TensorElementType::Float16
                | TensorElementType::Int64
                | TensorElementType::Int32
        );
        let is_map = o.map.as_deref() == Some(name.as_str());
        // The shapes each kind accepts (a model dimension of -1 fits any).
        let options: Vec<Vec<Option<i64>>> = match o.kind {
            OutputKind::Sigmoid => vec![vec![None, Some(1)], vec![None]],
            OutputKind::Softmax => vec![vec![None, Some(c)]],
            OutputKind::Anomaly if is_map => {
                vec![vec![None, Some(1), None, None], vec![None, None, None]]
            }
            OutputKind::Anomaly => vec![vec![None, Some(1)], vec![None]],
            OutputKind::Detection => match o.layout {
                Some(DetectionLayout::Yolov8) => vec![vec![None, Some(4 + c), None]],
                Some(DetectionLayout::Yolov5) => vec![vec![None, None, Some(5 + c)]],
                _ => vec![vec![None, None, Some(6)]],
            },
            OutputKind::Segmentation => vec![
                vec![None, Some(c), None, None],
                vec![None, Some(1), None, None],
                vec![None, None, None],
            ],
        };
        if !numeric || !options.iter().any(|want| fits(shape, want)) {
            let expected: Vec<String> = options.iter().map(|w| show(w, "")).collect();
            return Err(mismatch(
                "output",
                &name,
                describe(ty, shape),
                format!("{:?} output {}", o.kind, expected.join(" or ")).replace("  ", " "),
            ));
        }
    }
    Ok(())
}

/// One job's rows in the batch being run.
struct Pending {
    job: Job,
    geometries: Vec<Geometry>,
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
        let pre = Preprocessor::with_tiling(manifest.input.clone(), manifest.tiling);
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
        // A batch counts rows: a tiled frame brings all its tiles, and never shares a batch it would overfill
        // unless it is the batch's first frame.
        let per_image = self.pre.rows_per_image();
        let max_images = (self.config.max_batch.get() / per_image).max(1);
        let mut batch: Vec<Job> = Vec::with_capacity(max_images);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            let deadline = Instant::now() + self.config.max_wait;
            while batch.len() < max_images {
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
        self.buffer.clear();
        let mut ready: Vec<Pending> = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match self.pre.run_rows(&job.image, &mut self.buffer) {
                Ok(geometries) => ready.push(Pending { job, geometries }),
                Err(e) => {
                    let _ = job.reply.send(Err(e.into()));
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        let geometries: Vec<Vec<Geometry>> = ready.iter().map(|p| p.geometries.clone()).collect();
        let scored = self
            .infer(geometries.iter().map(Vec::len).sum())
            .and_then(|outputs| {
                decode::decode(&self.manifest, &outputs, &geometries)
                    .map_err(|e| InferError::Output(e.to_string()))
            });
        match scored {
            Ok(scores) => {
                for (p, score) in ready.into_iter().zip(scores) {
                    let _ = p.job.reply.send(Ok(score));
                }
            }
            Err(e) => {
                tracing::error!(model = %self.manifest.name, batch = ready.len(), error = %e, "Inference failed.");
                for p in ready {
                    let _ = p.job.reply.send(Err(InferError::Model(e.to_string())));
                }
            }
        }
    }

    /// Runs `rows` rows of `self.buffer` (in chunks of the model's fixed batch, when it has one) and returns
    /// the outputs the manifest reads, `rows` rows each.
    fn infer(&mut self, rows: usize) -> Result<Vec<Tensor>, InferError> {
        let fault = self.faults.lock().ok().and_then(|mut f| f.pop());
        match fault {
            Some(Fault::Stall(d)) => std::thread::sleep(d),
            Some(Fault::Fail) => {
                return Err(InferError::Model("injected fault (drill)".into()));
            }
            None => {}
        }
        let per = self.pre.tensor_len();
        let chunk = match self.manifest.input.batch {
            0 => rows,
            n => n as usize,
        };
        let names = decode::output_names(&self.manifest);
        let mut merged: Vec<Tensor> = Vec::new();
        let mut done = 0;
        while done < rows {
            let real = chunk.min(rows - done);
            let mut input = self.buffer[done * per..(done + real) * per].to_vec();
            input.resize(chunk * per, 0.0);
            let outputs = self.run_session(&input, chunk, &names)?;
            for (k, mut t) in outputs.into_iter().enumerate() {
                let row_len = t.values.len() / chunk.max(1);
                t.values.truncate(real * row_len);
                match merged.get_mut(k) {
                    Some(m) => {
                        m.values.extend_from_slice(&t.values);
                        m.shape[0] += real as i64;
                    }
                    None => {
                        t.shape[0] = real as i64;
                        merged.push(t);
                    }
                }
            }
            done += real;
        }
        Ok(merged)
    }

    fn run_session(
        &mut self,
        input: &[f32],
        n: usize,
        names: &[String],
    ) -> Result<Vec<Tensor>, InferError> {
        let i = &self.manifest.input;
        let shape = match i.layout {
            Layout::Nchw => [n, i.channels as usize, i.height as usize, i.width as usize],
            Layout::Nhwc => [n, i.height as usize, i.width as usize, i.channels as usize],
        };
        let model_err = |e: ort::Error| InferError::Model(e.to_string());
        let outputs = match i.dtype {
            InputType::F32 => {
                let t = TensorRef::from_array_view((shape, input)).map_err(model_err)?;
                self.session.run(ort::inputs![i.name.as_str() => t])
            }
            InputType::F16 => {
                let half: Vec<half::f16> = input.iter().map(|v| half::f16::from_f32(*v)).collect();
                let t = TensorRef::from_array_view((shape, &half[..])).map_err(model_err)?;
                self.session.run(ort::inputs![i.name.as_str() => t])
            }
            InputType::U8 => {
                let bytes: Vec<u8> = input
                    .iter()
                    .map(|v| v.round().clamp(0.0, 255.0) as u8)
                    .collect();
                let t = TensorRef::from_array_view((shape, &bytes[..])).map_err(model_err)?;
                self.session.run(ort::inputs![i.name.as_str() => t])
            }
        }
        .map_err(model_err)?;
        names.iter().map(|name| extract(&outputs, name)).collect()
    }
}

/// One named output as floats, whatever its numeric type.
fn extract(outputs: &SessionOutputs<'_>, name: &str) -> Result<Tensor, InferError> {
    let out = outputs
        .get(name)
        .ok_or_else(|| InferError::Output(format!("no output {name:?}")))?;
    let err = |e: ort::Error| InferError::Output(format!("output {name:?}: {e}"));
    let (shape, values): (Vec<i64>, Vec<f32>) = if let Ok((s, v)) = out.try_extract_tensor::<f32>()
    {
        (s.to_vec(), v.to_vec())
    } else if let Ok((s, v)) = out.try_extract_tensor::<half::f16>() {
        (s.to_vec(), v.iter().map(|x| x.to_f32()).collect())
    } else if let Ok((s, v)) = out.try_extract_tensor::<i64>() {
        (s.to_vec(), v.iter().map(|x| *x as f32).collect())
    } else {
        let (s, v) = out.try_extract_tensor::<i32>().map_err(err)?;
        (s.to_vec(), v.iter().map(|x| *x as f32).collect())
    };
    Ok(Tensor { shape, values })
}
