//! One supervision tree per binary.
//!
//! Every stage of a binary (a camera, the prescreen, the uplink, the ingest, …) runs as a named task spawned
//! through a [`Supervisor`]. The supervisor instruments each with a `stage` tracing span (a child of the
//! binary's span, which carries `edge_id` or `worker`), and watches all of them:
//!
//! - a stage that returns an error or panics is a failure;
//! - a stage that returns `Ok` before shutdown is a failure too, unless its [`Ends`] policy allows it: a
//!   camera with a frame limit may finish, and a stage whose inputs come only from stages that have all
//!   finished may finish after them (the prescreen after the cameras, the intake after the prescreen).
//!
//! [`Supervisor::watch`] returns the first failure (or `Ok` on shutdown, or when every stage finished); the
//! binary then drains its stages in flow order with [`Supervisor::drain`] and [`Supervisor::finish`], and
//! exits non-zero with an error naming the stage that failed.
//!
//! With the `fault-injection` feature (tests only), `TIERLINE_FAULT=<stage>:<panic|return|error>:<after_ms>`
//! makes the named stage panic, return early, or fail `after_ms` after it was spawned, so tests can check
//! that every stage is supervised.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The error a stage may return, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long a stage that ended before shutdown may wait to be excused (its upstream stages seen ending),
/// before its ending counts as a failure. Join results of tasks that end together arrive in any order, so
/// the blame goes to the stage that ended first, by the time it ended.
const UPSTREAM_SLACK: Duration = Duration::from_millis(500);

/// Two stages that end within this of each other ended together: a stage's end time is taken just after
/// its body returned (and dropped its channel ends), so a downstream stage may finish first by microseconds.
const SAME_MOMENT: Duration = Duration::from_millis(5);

/// When a stage may end without that being a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ends {
    /// Only after shutdown was requested.
    OnShutdown,
    /// After shutdown, or once every named stage has ended (its inputs come only from them).
    After(Vec<String>),
    /// Whenever it likes (a source with a frame limit).
    Anytime,
}

impl Ends {
    /// After the named stages.
    pub fn after<I: IntoIterator<Item = S>, S: Into<String>>(stages: I) -> Self {
        Ends::After(stages.into_iter().map(Into::into).collect())
    }
}

/// What a stage's `run` may return: nothing, or a result with any error.
pub trait StageOutcome: Send + 'static {
    /// As a result.
    fn into_result(self) -> Result<(), BoxError>;
}

impl StageOutcome for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> StageOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// A stage failed; the process stops because of it.
#[derive(Debug, thiserror::Error)]
pub enum StageFailure {
    /// The stage returned an error.
    #[error("stage {stage} failed: {error}")]
    Failed {
        /// Stage name.
        stage: String,
        /// What it said.
        error: String,
    },
    /// The stage panicked.
    #[error("stage {stage} panicked: {message}; this is a bug, please report it with the log")]
    Panicked {
        /// Stage name.
        stage: String,
        /// The panic message.
        message: String,
    },
    /// The stage returned before shutdown while its inputs were still open.
    #[error(
        "stage {stage} ended before shutdown while its inputs were still open; this is a bug, please report it with the log"
    )]
    EndedEarly {
        /// Stage name.
        stage: String,
    },
}

impl StageFailure {
    /// The stage that failed.
    pub fn stage(&self) -> &str {
        match self {
            StageFailure::Failed { stage, .. }
            | StageFailure::Panicked { stage, .. }
            | StageFailure::EndedEarly { stage } => stage,
        }
    }
}

/// One step of a drain: cancel `cancel`, then wait up to `grace` for `stages` to end.
#[derive(Debug, Clone, Copy)]
pub struct Drain<'a> {
    /// The token that stops this step's stages.
    pub cancel: &'a CancellationToken,
    /// The stages to wait for.
    pub stages: &'a [&'a str],
    /// How long to wait for them.
    pub grace: Duration,
}

impl<'a> Drain<'a> {
    /// Cancel `cancel`, then wait up to `grace` for `stages`.
    pub fn of(cancel: &'a CancellationToken, stages: &'a [&'a str], grace: Duration) -> Self {
        Self {
            cancel,
            stages,
            grace,
        }
    }
}

/// How a stage's task ended, and when.
type Exit = (Arc<str>, Result<(), BoxError>, Instant);

/// Spawns and watches the stages of one binary.
pub struct Supervisor {
    span: tracing::Span,
    tasks: JoinSet<Exit>,
    names: HashMap<Id, Arc<str>>,
    policies: HashMap<Arc<str>, Ends>,
    /// Stages that ended as allowed (on shutdown, or as their policy permits), with the time they ended.
    ended: HashMap<Arc<str>, Instant>,
    running: HashSet<Arc<str>>,
    /// Stages that ended before shutdown and are not (yet) excused, with the time they ended.
    early: Vec<(Arc<str>, Instant)>,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor whose stages' spans are children of `span`.
    pub fn new(span: tracing::Span) -> Self {
        Self {
            span,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            policies: HashMap::new(),
            ended: HashMap::new(),
            running: HashSet::new(),
            early: Vec::new(),
            shutting_down: false,
        }
    }

    /// Spawns stage `name` (unique within this supervisor) with its end policy.
    pub fn spawn<F>(&mut self, name: impl Into<String>, ends: Ends, stage: F)
    where
        F: Future + Send + 'static,
        F::Output: StageOutcome,
    {
        let name: Arc<str> = Arc::from(name.into());
        let span = tracing::info_span!(parent: &self.span, "stage", stage = %name);
        let fut = faults::wrap(&name, async move { stage.await.into_result() });
        let task_name = name.clone();
        let handle = self.tasks.spawn(
            async move {
                let (result, fault_at) = fut.await;
                (task_name, result, fault_at.unwrap_or_else(Instant::now))
            }
            .instrument(span),
        );
        self.names.insert(handle.id(), name.clone());
        self.policies.insert(name.clone(), ends);
        self.running.insert(name);
    }

    /// Whether stage `name` is still running.
    pub fn is_running(&self, name: &str) -> bool {
        self.running.contains(name)
    }

    /// Waits for shutdown or the first failure. Returns `Ok` on shutdown, or when every stage ended as its
    /// policy allows.
    pub async fn watch(&mut self, shutdown: &CancellationToken) -> Result<(), StageFailure> {
        loop {
            let slack = self.early.iter().map(|(_, at)| *at + UPSTREAM_SLACK).min();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.shutting_down = true;
                    return Ok(());
                }
                // A stage that ended early stays excused only while its upstream may still be seen ending.
                _ = sleep_until(slack), if slack.is_some() => {
                    if let Some(stage) = self.overdue() {
                        return Err(StageFailure::EndedEarly { stage: stage.to_string() });
                    }
                }
                joined = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    let Some(joined) = joined else { continue };
                    if let Some(failure) = self.account(joined) {
                        return Err(failure);
                    }
                    if self.tasks.is_empty() && self.early.is_empty() {
                        return Ok(());
                    }
                }
                else => return Ok(()),
            }
        }
    }

    /// After shutdown began: waits up to `grace` for the named stages to end (stages ending meanwhile are
    /// accounted too). Returns failures seen while waiting; stages that did not end are logged.
    pub async fn drain(&mut self, stages: &[&str], grace: Duration) -> Vec<StageFailure> {
        self.shutting_down = true;
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        while stages.iter().any(|s| self.running.contains(*s)) {
            tokio::select! {
                joined = self.tasks.join_next_with_id() => match joined {
                    Some(joined) => failures.extend(self.account(joined)),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let late: Vec<&str> = stages.iter().copied().filter(|s| self.running.contains(*s)).collect();
                    tracing::warn!(parent: &self.span, stages = ?late, grace = ?grace, "Stages did not finish draining in time.");
                    break;
                }
            }
        }
        failures
    }

    /// Waits up to `grace` for every remaining stage, then aborts the rest. Returns failures seen.
    pub async fn finish(mut self, grace: Duration) -> Vec<StageFailure> {
        let all: Vec<String> = self.running.iter().map(|s| s.to_string()).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let failures = self.drain(&refs, grace).await;
        if !self.running.is_empty() {
            let left: Vec<&str> = self.running.iter().map(|s| &**s).collect();
            tracing::warn!(parent: &self.span, stages = ?left, "Aborting stages that did not stop.");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        failures
    }

    /// Runs the binary to its end: waits for `shutdown` or the first failure, then drains in `steps`
    /// order (each cancels its token, then waits up to its grace for the named stages), then waits up to
    /// `grace` for every other stage. Returns the failure that stopped the binary, else the first one seen
    /// while draining; the others are logged.
    pub async fn run(
        mut self,
        shutdown: &CancellationToken,
        steps: &[Drain<'_>],
        grace: Duration,
    ) -> Result<(), StageFailure> {
        let failure = self.watch(shutdown).await.err();
        if let Some(e) = &failure {
            tracing::error!(parent: &self.span, error = %e, "A stage failed; draining the others, then stopping.");
        }
        let mut later = Vec::new();
        for step in steps {
            step.cancel.cancel();
            later.extend(self.drain(step.stages, step.grace).await);
        }
        later.extend(self.finish(grace).await);
        for e in &later {
            tracing::error!(error = %e, "A stage failed while draining.");
        }
        match failure.or_else(|| later.into_iter().next()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Accounts one ended task; returns a failure if its ending is one.
    fn account(
        &mut self,
        joined: Result<(Id, Exit), tokio::task::JoinError>,
    ) -> Option<StageFailure> {
        let (name, result, ended_at) = match joined {
            Ok((id, (name, result, ended_at))) => {
                self.names.remove(&id);
                (name, result, ended_at)
            }
            Err(e) => {
                let name = self
                    .names
                    .remove(&e.id())
                    .unwrap_or_else(|| Arc::from("unknown"));
                self.running.remove(&name);
                if e.is_cancelled() {
                    self.ended.insert(name, Instant::now());
                    return None;
                }
                let message = panic_message(e.into_panic());
                tracing::error!(parent: &self.span, stage = %name, panic = %message, "Stage panicked.");
                return Some(StageFailure::Panicked {
                    stage: name.to_string(),
                    message,
                });
            }
        };
        self.running.remove(&name);
        match result {
            Err(error) => {
                tracing::error!(parent: &self.span, stage = %name, error = %error, "Stage failed.");
                Some(StageFailure::Failed {
                    stage: name.to_string(),
                    error: error.to_string(),
                })
            }
            Ok(()) if self.shutting_down => {
                self.ended.insert(name, ended_at);
                None
            }
            Ok(()) if excused(self.policies.get(&name), &self.ended, ended_at) => {
                tracing::info!(parent: &self.span, stage = %name, "Stage finished.");
                self.ended.insert(name, ended_at);
                self.excuse_waiting();
                None
            }
            Ok(()) => {
                // Not excused (yet): its upstream may still be seen ending (join results arrive in any
                // order). Otherwise, after the slack, the stage that ended first takes the blame.
                self.early.push((name, ended_at));
                None
            }
        }
    }

    /// Excuses waiting stages whose upstream has now ended as allowed, until nothing changes.
    fn excuse_waiting(&mut self) {
        loop {
            let Some(i) = self
                .early
                .iter()
                .position(|(s, at)| excused(self.policies.get(s), &self.ended, *at))
            else {
                return;
            };
            let (stage, at) = self.early.remove(i);
            tracing::info!(parent: &self.span, stage = %stage, "Stage finished.");
            self.ended.insert(stage, at);
        }
    }

    /// Once a stage that ended before shutdown stayed unexcused for the slack: the stage that ended first.
    fn overdue(&mut self) -> Option<Arc<str>> {
        let now = Instant::now();
        if !self.early.iter().any(|(_, at)| now >= *at + UPSTREAM_SLACK) {
            return None;
        }
        let first = self
            .early
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(i, _)| i)?;
        let (stage, _) = self.early.remove(first);
        tracing::error!(parent: &self.span, stage = %stage, "Stage ended before shutdown.");
        Some(stage)
    }
}

/// A named point where a test may crash the process: with the `fault-injection` feature and
/// `TIERLINE_CRASH_AT=<name>`, the process aborts there (`std::process::abort`: like `kill -9`, no destructor
/// runs and nothing is flushed). Compiled to nothing without the feature.
pub fn crash_point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var("TIERLINE_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("crash point {name}: aborting");
        std::process::abort();
    }
    let _ = name;
}

/// Whether a stage that ended at `at` with `policy` is excused: every stage feeding it ended as allowed, and
/// no later than [`SAME_MOMENT`] after it (a stage that ended clearly before its upstream closed the
/// upstream's output; it is not excused by that upstream ending).
fn excused(policy: Option<&Ends>, ended: &HashMap<Arc<str>, Instant>, at: Instant) -> bool {
    match policy {
        Some(Ends::After(up)) => up.iter().all(|u| {
            ended
                .get(u.as_str())
                .is_some_and(|t| *t <= at + SAME_MOMENT)
        }),
        Some(Ends::Anytime) => true,
        _ => false,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".into()
    }
}

#[cfg(feature = "fault-injection")]
mod faults {
    use super::BoxError;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::{Duration, Instant};

    /// How the stage ended, and when an injected fault landed.
    type Outcome = (Result<(), BoxError>, Option<Instant>);

    /// Where and how to inject a fault, from `TIERLINE_FAULT=<stage>:<panic|return|error>:<after_ms>`.
    fn planned(stage: &str) -> Option<(String, Duration)> {
        let spec = std::env::var("TIERLINE_FAULT").ok()?;
        let mut parts = spec.splitn(3, ':');
        let (target, kind) = (parts.next()?, parts.next()?);
        let after = parts.next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
        (target == stage).then(|| (kind.to_string(), Duration::from_millis(after)))
    }

    /// The stage, or the stage with the planned fault. With a fault, also the instant it landed: taken before
    /// the stage is dropped (which closes its channels and may end its neighbours), so the supervisor can
    /// tell the cause from the consequences.
    pub(super) fn wrap(
        stage: &str,
        fut: impl Future<Output = Result<(), BoxError>> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let Some((kind, after)) = planned(stage) else {
            return Box::pin(async move { (fut.await, None) });
        };
        tracing::warn!(stage, kind = %kind, after = ?after, "Fault injection planned for this stage.");
        let stage = stage.to_string();
        Box::pin(async move {
            let mut fut = std::pin::pin!(fut);
            tokio::select! {
                r = &mut fut => return (r, None),
                _ = tokio::time::sleep(after) => {}
            }
            let at = Instant::now();
            match kind.as_str() {
                "panic" => panic!("fault injected into stage {stage}"),
                "return" => (Ok(()), Some(at)),
                _ => (
                    Err(format!("fault injected into stage {stage}").into()),
                    Some(at),
                ),
            }
        })
    }
}

#[cfg(not(feature = "fault-injection"))]
mod faults {
    use super::BoxError;
    use std::future::Future;
    use std::time::Instant;

    /// The stage as it is (fault injection is compiled out). Not an `async fn`: the returned future must not
    /// borrow `_stage`.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn wrap(
        _stage: &str,
        fut: impl Future<Output = Result<(), BoxError>> + Send + 'static,
    ) -> impl Future<Output = (Result<(), BoxError>, Option<Instant>)> + Send + 'static {
        async move { (fut.await, None) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup() -> Supervisor {
        Supervisor::new(tracing::Span::none())
    }

    #[tokio::test]
    async fn an_error_names_the_stage() {
        let mut s = sup();
        let stop = CancellationToken::new();
        let st = stop.clone();
        s.spawn("quiet", Ends::OnShutdown, async move {
            st.cancelled().await;
        });
        s.spawn("broken", Ends::OnShutdown, async {
            Err::<(), _>(std::io::Error::other("disk on fire"))
        });
        let e = s.watch(&stop).await.unwrap_err();
        assert_eq!(e.stage(), "broken");
        assert!(e.to_string().contains("disk on fire"), "{e}");
        stop.cancel();
        assert!(s.finish(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn a_panic_and_an_early_return_are_failures() {
        let stop = CancellationToken::new();
        let mut s = sup();
        s.spawn("p", Ends::OnShutdown, async {
            if true {
                panic!("boom");
            }
        });
        let e = s.watch(&stop).await.unwrap_err();
        assert!(
            matches!(&e, StageFailure::Panicked { stage, message } if stage == "p" && message == "boom"),
            "{e}"
        );
        let mut s = sup();
        s.spawn("r", Ends::OnShutdown, async {});
        let e = s.watch(&stop).await.unwrap_err();
        assert!(matches!(&e, StageFailure::EndedEarly { stage } if stage == "r"));
    }

    #[tokio::test]
    async fn a_stage_may_end_after_its_upstream() {
        let stop = CancellationToken::new();
        let mut s = sup();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
        s.spawn("source", Ends::Anytime, async move {
            let _ = tx.send(1).await;
        });
        s.spawn("sink", Ends::after(["source"]), async move {
            while rx.recv().await.is_some() {}
        });
        assert!(s.watch(&stop).await.is_ok(), "both ended as allowed");

        // The same downstream stage ending while its upstream runs is a failure.
        let mut s = sup();
        let st = stop.clone();
        s.spawn(
            "source",
            Ends::OnShutdown,
            async move { st.cancelled().await },
        );
        s.spawn("sink", Ends::after(["source"]), async {});
        let e = s.watch(&stop).await.unwrap_err();
        assert_eq!(e.stage(), "sink");
    }

    #[tokio::test]
    async fn a_stage_ending_because_its_consumer_ended_does_not_take_the_blame() {
        let stop = CancellationToken::new();
        let mut s = sup();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
        // The consumer ends early; the producer then ends because its output closed.
        s.spawn("consumer", Ends::after(["producer"]), async move {
            let _ = rx.recv().await;
        });
        s.spawn("producer", Ends::OnShutdown, async move {
            let _ = tx.send(1).await;
            tx.closed().await;
            // Like a stage that finds its output closed at its next send. (Two stages ending within
            // microseconds of each other cannot be told apart by their end times.)
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        let e = s.watch(&stop).await.unwrap_err();
        assert_eq!(e.stage(), "consumer");
    }

    #[tokio::test]
    async fn endings_during_shutdown_are_not_failures_but_errors_are() {
        let stop = CancellationToken::new();
        let mut s = sup();
        let st = stop.clone();
        s.spawn("a", Ends::OnShutdown, async move { st.cancelled().await });
        let st = stop.clone();
        s.spawn("b", Ends::OnShutdown, async move {
            st.cancelled().await;
            Err::<(), _>("flush failed")
        });
        stop.cancel();
        assert!(s.watch(&stop).await.is_ok());
        let failures = s.drain(&["a"], Duration::from_secs(1)).await;
        let rest = s.finish(Duration::from_secs(1)).await;
        let all: Vec<String> = failures
            .iter()
            .chain(&rest)
            .map(|f| f.stage().to_string())
            .collect();
        assert_eq!(all, vec!["b".to_string()]);
    }

    #[tokio::test]
    async fn finish_aborts_a_stage_that_does_not_stop() {
        let stop = CancellationToken::new();
        let mut s = sup();
        s.spawn("stuck", Ends::OnShutdown, std::future::pending::<()>());
        stop.cancel();
        assert!(s.watch(&stop).await.is_ok());
        assert!(s.finish(Duration::from_millis(50)).await.is_empty());
    }
}
