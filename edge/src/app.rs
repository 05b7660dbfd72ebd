//! The edge process, wired in one place.
//!
//! ```text
//!  camera × N ──► FrameQueue (drop oldest) ──► prescreen (ModelRunner threads)
//!                                               │ pass ───────────────────────────────┐
//!                                               │ suspect / audit                      │
//!                                               ▼                                      ▼
//!                                  intake: outbox append (grouped commits) ──► decisions ──► sink (JSON lines)
//!                                               │ wake                                 ▲
//!                                               ▼                                      │
//!                       uplink: outbox.due ──► MQTT publish (QoS 1)                    │
//!  link: MQTT event loop ──► verdicts ──► acknowledge: decisions + outbox.ack ─────────┘
//! ```
//!
//! Beside the flow: the model supervisor (golden probes, watchdog, hot reload; `tierline_shared::serving`),
//! the health watcher (outbox disk headroom, link; `health`) and the admin endpoint serving `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! Every arrow is a bounded channel. Shutdown: the token stops the cameras, the prescreen, the uplink and the
//! link; the intake and acknowledgement stages then drain and close, which lets the decision stage decide
//! whatever still waits (locally) and the sink flush.

use crate::camera::{Camera, CameraError, FrameQueue};
use crate::config::EdgeConfig;
use crate::decisions::{self, Book};
use crate::outbox::{Outbox, OutboxError};
use crate::stats::EdgeStats;
use crate::{health, intake, link, prescreen, sink, uplink};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::admin::{self, Admin, Readiness};
use tierline_shared::manifest::ManifestError;
use tierline_shared::runner::{RunnerConfig, RunnerError};
use tierline_shared::serving::ServedModel;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors that stop the edge.
#[derive(Debug, Error)]
pub enum EdgeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] tierline_shared::config::ConfigError),
    /// The model manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The model could not be started or fails its golden samples.
    #[error(transparent)]
    Model(#[from] RunnerError),
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A camera could not be set up.
    #[error(transparent)]
    Camera(#[from] CameraError),
    /// The decision sink failed.
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    /// A stage panicked.
    #[error("edge stage panicked: {0}")]
    Panicked(String),
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
}

/// Completes only if the stage fails (error or panic); a stage that finishes normally (e.g. the prescreen
/// after the cameras reached their frame limits) leaves the rest running.
async fn failure_of<E: Into<EdgeError>>(task: tokio::task::JoinHandle<Result<(), E>>) -> EdgeError {
    match task.await {
        Ok(Err(e)) => e.into(),
        Err(e) if e.is_panic() => EdgeError::Panicked(e.to_string()),
        _ => std::future::pending().await,
    }
}

/// How often heartbeats are published.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Loads the prescreen model and checks it against its golden samples.
pub async fn load_model(config: &EdgeConfig) -> Result<Arc<ServedModel>, EdgeError> {
    let runner_config = RunnerConfig {
        threads: config.model.threads,
        max_batch: config.model.max_batch,
        ..RunnerConfig::default()
    };
    Ok(ServedModel::load(
        &config.model.manifest,
        runner_config,
        config.model.probe.clone(),
    )
    .await?)
}

/// Runs the edge until `shutdown` is cancelled or every camera has finished and every frame is decided.
pub async fn run(
    config: EdgeConfig,
    stats: Arc<EdgeStats>,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    config.validate()?;
    let addr = config
        .address()
        .map_err(|e| tierline_shared::config::ConfigError::Field {
            field: "edge".into(),
            problem: e.to_string(),
        })?;
    let cameras = config
        .cameras
        .iter()
        .map(Camera::new)
        .collect::<Result<Vec<_>, _>>()?;
    let runner = load_model(&config).await?;
    let manifest = runner.manifest();
    let model_version = manifest.version.clone();
    let threshold = config
        .model
        .suspect_threshold
        .unwrap_or(manifest.output.threshold);
    let mqtt_options = link::options(&config.mqtt, &addr, &model_version).map_err(|e| {
        tierline_shared::config::ConfigError::Field {
            field: "mqtt.tls".into(),
            problem: e.to_string(),
        }
    })?;
    let outbox = Outbox::open(&config.outbox).await?;
    let backlog = outbox.backlog().await?;
    // Read before any stage runs, so no live frame can be mistaken for one a crash left undecided.
    let undecided = outbox.undecided_suspects().await?;
    let rules = decisions::OfflineRules::from_config(&config.decision);
    tracing::info!(
        edge_id = addr.edge_id(),
        model = %manifest.name,
        version = %model_version,
        threshold,
        backlog = backlog.frames,
        "Edge starting."
    );

    let (client, eventloop) = tierline_shared::mqtt::client(mqtt_options, 64);
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();

    // Health: the model supervisor, the outbox and link watcher, and the admin endpoint.
    let readiness = Arc::new(Readiness::expecting(&[
        (tierline_shared::serving::CHECK, true),
        (health::OUTBOX, true),
        (health::LINK, false),
    ]));
    let admin_stop = CancellationToken::new();
    // The endpoint answers until the edge has drained, and stops however `run` returns.
    let _admin_guard = admin_stop.clone().drop_guard();
    tasks.spawn(runner.clone().supervise(readiness.clone(), stop.clone()));
    tasks.spawn(health::watch(
        health::OutboxWatch {
            outbox: outbox.clone(),
            path: config.outbox.path.clone(),
            budget: config.outbox.max_bytes.0,
        },
        stats.clone(),
        readiness.clone(),
        config.admin.check_every,
        stop.clone(),
    ));
    if config.admin.enabled {
        let (s, m) = (stats.clone(), runner.clone());
        let samples = Arc::new(move || health::samples(&s, &m));
        let (bound, _task) = admin::serve(
            config.admin.listen,
            Admin {
                readiness: readiness.clone(),
                samples,
            },
            admin_stop.clone(),
        )
        .await
        .map_err(EdgeError::Admin)?;
        let _ = stats.admin_addr.set(bound);
    }
    tasks.spawn(tierline_shared::systemd::notify(
        readiness.clone(),
        stop.clone(),
    ));
    let queue = FrameQueue::new(2 * config.model.max_batch.get() * config.model.threads.get());
    let (intake_tx, intake_rx) = mpsc::channel(256);
    let (decision_tx, decision_rx) = mpsc::channel(1024);
    let (sink_tx, sink_rx) = mpsc::channel(1024);
    let (verdict_tx, verdict_rx) = mpsc::channel(256);
    let (link_tx, link_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let (local_tx, local_rx) = mpsc::channel(1024);

    let cameras_done = TaskTracker::new();
    for cam in cameras {
        cameras_done.spawn(cam.run(queue.clone(), stats.clone(), stop.clone()));
    }
    cameras_done.close();

    let settings = prescreen::PrescreenSettings {
        edge_id: addr.edge_id().into(),
        threshold: config.model.suspect_threshold,
        audit_rate: config.decision.audit_rate,
        audit_seed: config.decision.audit_seed,
        concurrency: 2 * config.model.max_batch.get() * config.model.threads.get(),
        max_image_bytes: config.mqtt.max_message_bytes,
    };
    let frames = queue.receiver();
    drop(queue);
    let prescreen_stop = stop.clone();
    let prescreen = tasks.spawn(prescreen::run(
        settings,
        runner,
        prescreen::SeqAllocator::new(outbox.clone()),
        frames,
        intake_tx,
        decision_tx.clone(),
        stats.clone(),
        prescreen_stop,
    ));
    tasks.spawn(intake::run(
        outbox.clone(),
        intake_rx,
        decision_tx.clone(),
        wake.clone(),
        stats.clone(),
        config.outbox.commit_batch.get(),
    ));
    // The sink first: everything after it may produce decisions.
    let sink = tasks.spawn(sink::run(config.sink.clone(), sink_rx, client.clone()));
    let restart_tx = decision_tx.clone();
    let acks = tasks.spawn(uplink::acknowledge(outbox.clone(), verdict_rx, decision_tx));
    tasks.spawn(decisions::record_local(outbox.clone(), local_rx));
    tasks.spawn(decisions::run(
        Book::new(rules.clone(), config.decision.deadline),
        decision_rx,
        sink_tx,
        local_tx,
        stats.clone(),
        stop.clone(),
    ));
    // Suspects a crash left undecided (read before any stage started) are decided now, and the decision is
    // recorded before it is emitted: their deadline is past, and their verdict must find it.
    let recorded: Vec<(u64, &str)> = undecided
        .iter()
        .map(|r| (r.seq, rules.action(r.score).as_str()))
        .collect();
    outbox.record_local(&recorded).await?;
    if !undecided.is_empty() {
        tracing::warn!(
            frames = undecided.len(),
            "Suspects left undecided by a restart (the edge stopped before their deadline); decided locally now."
        );
    }
    for r in undecided {
        let e = decisions::decided_at_restart(&r, &rules);
        restart_tx
            .send(decisions::Input::Immediate(e))
            .await
            .map_err(|_| EdgeError::Panicked("decision stage closed".into()))?;
    }
    drop(restart_tx);
    let uplink = tasks.spawn(uplink::run(
        outbox.clone(),
        client.clone(),
        addr.clone(),
        model_version.clone(),
        config.outbox.clone(),
        config.mqtt.max_message_bytes,
        link_rx,
        wake,
        stats.clone(),
        stop.clone(),
    ));
    tasks.spawn(link::heartbeats(
        client.clone(),
        addr.clone(),
        outbox.clone(),
        model_version.clone(),
        stats.clone(),
        HEARTBEAT_EVERY,
        stop.clone(),
    ));
    let link_stop = CancellationToken::new();
    let link_task = tokio::spawn(link::run(
        eventloop,
        client,
        addr,
        config.mqtt.clone(),
        model_version,
        verdict_tx,
        link_tx,
        stats.clone(),
        link_stop.clone(),
    ));
    tasks.close();

    // Stop on request, or on a stage failing.
    let failure = tokio::select! {
        _ = stop.cancelled() => None,
        e = failure_of(prescreen) => Some(e),
        e = failure_of(uplink) => Some(e),
        e = failure_of(acks) => Some(e),
        e = failure_of(sink) => Some(e),
    };
    if let Some(e) = &failure {
        tracing::error!(error = %e, "Edge stage failed; shutting down.");
    }
    stop.cancel();
    cameras_done.wait().await;
    link_stop.cancel();
    let _ = link_task.await;
    tasks.wait().await;
    outbox.close().await;
    tracing::info!("Edge stopped.");
    failure.map_or(Ok(()), Err)
}
