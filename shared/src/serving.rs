//! The served model: a [`ModelRunner`] behind a supervisor that probes it, heals it and rolls out changes.
//!
//! ```text
//! every probe interval:
//!   manifest or model file changed on disk? ──► load + verify + golden samples ──ok──► swap in (counted)
//!                                                                   └─fails──► keep serving the previous
//!                                                                              model, unready, counted
//!   golden samples through the serving runner, each within `stuck_after`:
//!     no answer in time, or `max_consecutive_errors` failed calls ──► rebuild the sessions (counted)
//!     wrong answer or over the latency budget ──► unready, logged with the sample and score (counted)
//! ```
//!
//! Failure classes and their recovery actions:
//! - stuck inference (a call does not return within `stuck_after`) → rebuild the sessions; the stuck
//!   worker thread is abandoned (ONNX Runtime cannot be interrupted), the new one serves.
//! - failing inference (`max_consecutive_errors` calls in a row fail inside ONNX Runtime) → rebuild.
//! - a new model that fails to load or fails its golden samples → keep serving the previous model; the
//!   process reports unready until the files on disk are fixed, because it is not running what its
//!   manifest declares.
//! - a model that answers golden samples wrongly or slowly → unready (nothing to rebuild to: the files
//!   are the problem, or the machine is overloaded).
//!
//! Every occurrence is logged with the action taken and counted ([`ModelCounters`]).

use crate::admin::Readiness;
use crate::manifest::Manifest;
use crate::runner::{InferError, ModelRunner, RunnerConfig, RunnerError, Score};
use bytes::Bytes;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the served model is probed and healed (`[model.probe]` in both tiers' configuration).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// How often the golden samples run and the files on disk are checked for changes.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Longest a golden sample may take (queueing included) for the model to count as ready.
    #[serde(default = "default_budget", with = "humantime_serde")]
    pub latency_budget: Duration,
    /// A call without an answer after this long counts as stuck: the sessions are rebuilt.
    #[serde(default = "default_stuck", with = "humantime_serde")]
    pub stuck_after: Duration,
    /// This many failed inference calls in a row rebuild the sessions.
    #[serde(default = "default_errors")]
    pub max_consecutive_errors: u32,
    /// Load a changed manifest or model file without a restart.
    #[serde(default = "default_reload")]
    pub reload: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_budget() -> Duration {
    Duration::from_millis(500)
}
fn default_stuck() -> Duration {
    Duration::from_secs(10)
}
fn default_errors() -> u32 {
    3
}
fn default_reload() -> bool {
    true
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            latency_budget: default_budget(),
            stuck_after: default_stuck(),
            max_consecutive_errors: default_errors(),
            reload: default_reload(),
        }
    }
}

/// What the supervisor has done, for metrics and tests. All counters only grow.
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Probes run.
    pub probes: AtomicU64,
    /// Probes with a wrong golden answer.
    pub probe_wrong: AtomicU64,
    /// Probes over the latency budget.
    pub probe_slow: AtomicU64,
    /// Session rebuilds.
    pub rebuilds: AtomicU64,
    /// Model changes loaded.
    pub reloads: AtomicU64,
    /// Model changes refused.
    pub reload_failures: AtomicU64,
    /// Inference calls failed inside ONNX Runtime.
    pub inference_errors: AtomicU64,
    /// Slowest golden sample of the last probe, µs.
    pub last_probe_us: AtomicU64,
}

/// What identifies the files a model was loaded from, to notice changes.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    manifest: Vec<u8>,
    model: Option<(u64, Option<SystemTime>)>,
}

/// Reads the fingerprint on a blocking thread: the supervisor runs on the async runtime.
async fn fingerprint_async(manifest_path: PathBuf) -> Fingerprint {
    let fallback = Fingerprint {
        manifest: Vec::new(),
        model: None,
    };
    tokio::task::spawn_blocking(move || fingerprint(&manifest_path))
        .await
        .unwrap_or(fallback)
}

fn fingerprint(manifest_path: &Path) -> Fingerprint {
    let manifest = std::fs::read(manifest_path).unwrap_or_default();
    let model = Manifest::load(manifest_path)
        .ok()
        .and_then(|m| std::fs::metadata(m.model_path()).ok())
        .map(|md| (md.len(), md.modified().ok()));
    Fingerprint { manifest, model }
}

/// Name of the readiness check the supervisor owns.
pub const CHECK: &str = "model";

/// A model served by a runner that a supervisor may replace.
pub struct ServedModel {
    current: RwLock<Arc<ModelRunner>>,
    /// The manifest watched for changes on disk: the configured one, or the last activated bundle's.
    manifest_path: Mutex<PathBuf>,
    /// A candidate scoring live frames beside the serving model ([`ServedModel::start_shadow`]).
    shadow: Mutex<Option<Arc<Shadow>>>,
    /// Counts swaps, so a rebuild or reload that took its model before an activation cannot undo it.
    generation: AtomicU64,
    runner_config: RunnerConfig,
    probe: ProbeConfig,
    loaded: Mutex<Fingerprint>,
    rollout_error: Mutex<Option<String>>,
    consecutive_errors: AtomicU32,
    errors_tripped: Notify,
    /// What the supervisor has done.
    pub counters: ModelCounters,
}

impl ServedModel {
    /// Loads, verifies and checks the model at `manifest_path`. Fails if it cannot serve: at start there
    /// is no previous model to fall back on.
    pub async fn load(
        manifest_path: &Path,
        runner_config: RunnerConfig,
        probe: ProbeConfig,
    ) -> Result<Arc<Self>, RunnerError> {
        let loaded = fingerprint_async(manifest_path.to_path_buf()).await;
        let runner = ModelRunner::load_checked(manifest_path, runner_config.clone()).await?;
        Ok(Arc::new(Self {
            current: RwLock::new(runner),
            manifest_path: Mutex::new(manifest_path.to_path_buf()),
            shadow: Mutex::new(None),
            generation: AtomicU64::new(0),
            runner_config,
            probe,
            loaded: Mutex::new(loaded),
            rollout_error: Mutex::new(None),
            consecutive_errors: AtomicU32::new(0),
            errors_tripped: Notify::new(),
            counters: ModelCounters::default(),
        }))
    }

    /// The runner serving now.
    pub fn runner(&self) -> Arc<ModelRunner> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The manifest of the model serving now.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.runner().manifest_arc()
    }

    /// Scores one encoded image with the serving model, counting failures for the watchdog. While a shadow
    /// runs, the image is also handed to the candidate, off this call's path.
    pub async fn score(&self, image: Bytes) -> Result<Score, InferError> {
        let shadow = self.shadow.lock().ok().and_then(|s| s.clone());
        // A clone of `Bytes` shares the buffer.
        let result = self.runner().score(image.clone()).await;
        self.observe(&result);
        if let (Some(shadow), Ok(score)) = (shadow, &result) {
            shadow.observe(score.defective, image);
        }
        result
    }

    /// Serves `runner` from now on, loaded from the manifest at `manifest_path` (which the reload check
    /// watches from now on). The caller has verified it and checked its golden samples.
    pub async fn activate(&self, runner: Arc<ModelRunner>, manifest_path: &Path) {
        let fingerprint = fingerprint_async(manifest_path.to_path_buf()).await;
        if let Ok(mut l) = self.loaded.lock() {
            *l = fingerprint;
        }
        if let Ok(mut p) = self.manifest_path.lock() {
            *p = manifest_path.to_path_buf();
        }
        if let Ok(mut e) = self.rollout_error.lock() {
            *e = None;
        }
        self.swap(runner);
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts scoring the next `frames` live frames with `candidate` as well (replacing any shadow running),
    /// without letting it affect a decision. Wait for [`Shadow::finished`], then read [`Shadow::report`].
    pub fn start_shadow(&self, candidate: Arc<ModelRunner>, frames: u64) -> Arc<Shadow> {
        let shadow = Arc::new(Shadow {
            candidate,
            want: frames.max(1),
            taken: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            agreed: AtomicU64::new(0),
            serving_defective: AtomicU64::new(0),
            candidate_defective: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            done: Notify::new(),
        });
        if let Ok(mut s) = self.shadow.lock() {
            *s = Some(shadow.clone());
        }
        shadow
    }

    /// Stops the shadow, if one runs.
    pub fn stop_shadow(&self) {
        if let Ok(mut s) = self.shadow.lock() {
            *s = None;
        }
    }

    fn observe(&self, result: &Result<Score, InferError>) {
        match result {
            Err(InferError::Model(_)) => {
                self.counters
                    .inference_errors
                    .fetch_add(1, Ordering::Relaxed);
                let n = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.probe.max_consecutive_errors.max(1) {
                    self.errors_tripped.notify_one();
                }
            }
            Ok(_) => self.consecutive_errors.store(0, Ordering::Relaxed),
            // Bad images and output mismatches are not the session's health.
            Err(_) => {}
        }
    }

    fn swap(&self, runner: Arc<ModelRunner>) {
        self.swap_if(None, runner);
    }

    /// Swaps `runner` in, unless `expected` is given and another swap happened since that generation
    /// (then the runner is dropped and `false` returned).
    fn swap_if(&self, expected: Option<u64>, runner: Arc<ModelRunner>) -> bool {
        let mut current = match self.current.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if expected.is_some_and(|g| g != self.generation.load(Ordering::Relaxed)) {
            return false;
        }
        *current = runner;
        self.generation.fetch_add(1, Ordering::Relaxed);
        drop(current);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        true
    }

    /// Probes, heals and reloads until `shutdown`, reporting the `model` readiness check.
    pub async fn supervise(
        self: Arc<Self>,
        readiness: Arc<Readiness>,
        shutdown: CancellationToken,
    ) {
        // A check not refreshed within this is stale: the supervisor itself is stuck.
        let max_age = self.probe.interval * 3 + self.probe.stuck_after * 2;
        let mut tick = tokio::time::interval(self.probe.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let errors = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                _ = self.errors_tripped.notified() => true,
            };
            if errors {
                let n = self.consecutive_errors.load(Ordering::Relaxed);
                self.rebuild(&format!("{n} inference calls in a row failed"))
                    .await;
            }
            if self.probe.reload {
                self.reload_if_changed().await;
            }
            let (ok, detail) = self.probe_once().await;
            let detail = match self.rollout_error.lock().ok().and_then(|e| e.clone()) {
                Some(e) => format!(
                    "{detail}; the model on disk was refused and the previous one keeps serving: {e}"
                ),
                None => detail,
            };
            let rollout_ok = self
                .rollout_error
                .lock()
                .map(|e| e.is_none())
                .unwrap_or(false);
            readiness.set(CHECK, true, ok && rollout_ok, detail, max_age);
        }
    }

    /// Runs the golden samples once through the serving runner. Returns (passed, detail).
    pub async fn probe_once(&self) -> (bool, String) {
        let runner = self.runner();
        let m = runner.manifest_arc();
        self.counters.probes.fetch_add(1, Ordering::Relaxed);
        let mut slowest = Duration::ZERO;
        for g in &m.golden {
            let path = m.dir.join(&g.file);
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return (
                        false,
                        format!(
                            "cannot read golden sample {}: {e}; restore it next to the manifest",
                            path.display()
                        ),
                    );
                }
            };
            let started = Instant::now();
            let result =
                tokio::time::timeout(self.probe.stuck_after, runner.score(bytes.clone())).await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            let score = match result {
                Err(_) => {
                    self.rebuild(&format!(
                        "golden sample {} got no answer within {:?}",
                        path.display(),
                        self.probe.stuck_after
                    ))
                    .await;
                    return (
                        false,
                        format!(
                            "inference was stuck ({} got no answer within {:?}); sessions rebuilt",
                            path.display(),
                            self.probe.stuck_after
                        ),
                    );
                }
                Ok(r) => {
                    self.observe(&r);
                    match r {
                        Ok(s) => s,
                        Err(e) => {
                            return (
                                false,
                                format!("golden sample {} failed: {e}", path.display()),
                            );
                        }
                    }
                }
            };
            if !g.matches(&score) {
                self.counters.probe_wrong.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    model = %m.name, version = %m.version, sample = %path.display(),
                    expected = %g.expect, got = %score.label, score = score.defect_score,
                    action = "report unready",
                    "Golden sample answered wrongly."
                );
                return (
                    false,
                    format!(
                        "{} {} answers golden sample {} wrongly: expected {}, got {} (defect score {:.3})",
                        m.name,
                        m.version,
                        path.display(),
                        g.expect,
                        score.label,
                        score.defect_score
                    ),
                );
            }
            if took > self.probe.latency_budget {
                self.counters.probe_slow.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    model = %m.name, sample = %path.display(), took_ms = took.as_secs_f64() * 1e3,
                    budget_ms = self.probe.latency_budget.as_secs_f64() * 1e3,
                    action = "report unready",
                    "Golden sample over the latency budget."
                );
                return (
                    false,
                    format!(
                        "{} {} took {:.1} ms on golden sample {} (budget {:.1} ms)",
                        m.name,
                        m.version,
                        took.as_secs_f64() * 1e3,
                        path.display(),
                        self.probe.latency_budget.as_secs_f64() * 1e3
                    ),
                );
            }
        }
        self.counters
            .last_probe_us
            .store(slowest.as_micros() as u64, Ordering::Relaxed);
        (
            true,
            format!(
                "{} {}: {} golden samples pass, slowest {:.1} ms (budget {:.1} ms)",
                m.name,
                m.version,
                m.golden.len(),
                slowest.as_secs_f64() * 1e3,
                self.probe.latency_budget.as_secs_f64() * 1e3
            ),
        )
    }

    /// Replaces the serving sessions with fresh ones from the same manifest.
    async fn rebuild(&self, reason: &str) {
        let generation = self.generation.load(Ordering::Relaxed);
        let manifest = (*self.manifest()).clone();
        let config = self.runner_config.clone();
        let started = tokio::task::spawn_blocking(move || {
            let runner = ModelRunner::start(manifest, config)?;
            runner.check_golden_blocking()?;
            Ok::<_, RunnerError>(Arc::new(runner))
        })
        .await;
        self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        match started {
            Ok(Ok(runner)) => {
                if self.swap_if(Some(generation), runner) {
                    tracing::warn!(
                        reason,
                        action = "rebuilt the inference sessions",
                        "Model watchdog fired."
                    );
                } else {
                    tracing::warn!(
                        reason,
                        action = "none: another model was swapped in meanwhile",
                        "Model watchdog fired."
                    );
                }
            }
            Ok(Err(e)) => tracing::error!(
                reason, error = %e, action = "rebuild failed; keeping the current sessions",
                "Model watchdog fired."
            ),
            Err(e) => tracing::error!(
                reason, error = %e, action = "rebuild failed; keeping the current sessions",
                "Model watchdog fired."
            ),
        }
    }

    /// Loads the files on disk if they changed since the last attempt.
    async fn reload_if_changed(&self) {
        // Read before the path: an activation after this point changes the generation, so a reload of the
        // path it replaced cannot undo it.
        let generation = self.generation.load(Ordering::Relaxed);
        let Some(path) = self.manifest_path.lock().ok().map(|p| p.clone()) else {
            return;
        };
        let now = fingerprint_async(path.clone()).await;
        let changed = self.loaded.lock().map(|l| *l != now).unwrap_or(false);
        if !changed {
            return;
        }
        if let Ok(mut l) = self.loaded.lock() {
            *l = now;
        }
        let before = self.manifest();
        match ModelRunner::load_checked(&path, self.runner_config.clone()).await {
            Ok(runner) => {
                let after = runner.manifest_arc();
                if !self.swap_if(Some(generation), runner) {
                    // An activation swapped another model in while this one loaded: it stands.
                    return;
                }
                if let Ok(mut e) = self.rollout_error.lock() {
                    *e = None;
                }
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    manifest = %path.display(), from = %before.version, to = %after.version,
                    sha256 = %after.sha256, action = "now serving the new model",
                    "Model change loaded."
                );
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    manifest = %path.display(), error = %e, serving = %before.version,
                    action = "kept serving the previous model",
                    "Model change refused."
                );
                if let Ok(mut slot) = self.rollout_error.lock() {
                    *slot = Some(e.to_string());
                }
            }
        }
    }
}

/// A candidate model scoring live frames beside the serving one; nothing it says reaches a decision.
pub struct Shadow {
    candidate: Arc<ModelRunner>,
    want: u64,
    taken: AtomicU64,
    scored: AtomicU64,
    agreed: AtomicU64,
    serving_defective: AtomicU64,
    candidate_defective: AtomicU64,
    errors: AtomicU64,
    done: Notify,
}

/// What a shadow run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowReport {
    /// Frames both models judged (or the candidate failed on).
    pub frames: u64,
    /// Frames on which both called the image defective, or both did not.
    pub agreed: u64,
    /// Frames the serving model called defective (suspects it forwarded).
    pub serving_defective: u64,
    /// Frames the candidate called defective (suspects it would have forwarded).
    pub candidate_defective: u64,
    /// Frames the candidate failed to score.
    pub errors: u64,
}

impl ShadowReport {
    /// Share of frames on which both agreed (0 when none was judged).
    pub fn agreement(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.agreed as f64 / self.frames as f64
        }
    }
}

impl Shadow {
    fn observe(self: Arc<Self>, serving_defective: bool, image: Bytes) {
        if self.taken.fetch_add(1, Ordering::Relaxed) >= self.want {
            return;
        }
        tokio::spawn(async move {
            match self.candidate.score(image).await {
                Ok(s) => {
                    if s.defective == serving_defective {
                        self.agreed.fetch_add(1, Ordering::Relaxed);
                    }
                    if s.defective {
                        self.candidate_defective.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if serving_defective {
                self.serving_defective.fetch_add(1, Ordering::Relaxed);
            }
            if self.scored.fetch_add(1, Ordering::Relaxed) + 1 >= self.want {
                self.done.notify_one();
            }
        });
    }

    /// Frames asked for.
    pub fn frames(&self) -> u64 {
        self.want
    }

    /// Returns once the candidate has judged every frame asked for.
    pub async fn finished(&self) {
        while self.scored.load(Ordering::Relaxed) < self.want {
            self.done.notified().await;
        }
    }

    /// What it saw so far.
    pub fn report(&self) -> ShadowReport {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        ShadowReport {
            frames: g(&self.scored),
            agreed: g(&self.agreed),
            serving_defective: g(&self.serving_defective),
            candidate_defective: g(&self.candidate_defective),
            errors: g(&self.errors),
        }
    }
}

impl ServedModel {
    /// The supervisor's metric samples.
    pub fn samples(&self) -> Vec<crate::metrics::Sample> {
        use crate::metrics::{self as m, Sample};
        let c = &self.counters;
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        vec![
            Sample::of(&m::MODEL_PROBES, g(&c.probes)),
            Sample::of(&m::MODEL_PROBE_WRONG, g(&c.probe_wrong)),
            Sample::of(&m::MODEL_PROBE_SLOW, g(&c.probe_slow)),
            Sample::of(&m::MODEL_REBUILDS, g(&c.rebuilds)),
            Sample::of(&m::MODEL_RELOADS, g(&c.reloads)),
            Sample::of(&m::MODEL_RELOAD_FAILURES, g(&c.reload_failures)),
            Sample::of(&m::MODEL_INFERENCE_ERRORS, g(&c.inference_errors)),
            Sample::gauge(&m::MODEL_PROBE_SECONDS, g(&c.last_probe_us) as f64 / 1e6),
        ]
    }
}
