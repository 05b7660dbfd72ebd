//! The cloud worker, wired in one place.
//!
//! ```text
//!  MQTT ($share/<group>/tierline/v1/+/+/+/frames, manual acks)
//!    └─► ingest: topic, size, version, edge-id checks ─► bounded queue ─► process × concurrency:
//!            dedup (store lookup) ─► infer (ModelRunner, batched) ─► store (idempotent on edge_id, seq)
//!            ─► publish verdict to tierline/v1/<site>/<line>/<edge>/verdicts ─► acks (in arrival order)
//!    └─► presence / heartbeats ─► bounded queue ─► presence: edges table
//!  retention candidate: leader lease (fencing token) ─► prune old images (verdicts stay)
//!  review API (gRPC): store ◄── ListFrames, GetFrame, SubmitReview, WatchVerdicts, ListEdges
//! ```
//!
//! Beside the flow: the model supervisor (golden probes, watchdog, hot reload; `tierline_shared::serving`),
//! the health watcher (link, database; `health`) and the admin endpoint serving `/healthz`, `/readyz` and
//! `/metrics`.
//!
//! Shutdown: stop accepting new messages, finish the frames in flight (their verdicts and acks still go out
//! through the event loop), then disconnect.

use crate::config::CloudConfig;
use crate::process::{self, Processor};
use crate::stats::CloudStats;
use crate::store::{Store, StoreError};
use crate::{acks, health, ingest};
use std::sync::Arc;
use thiserror::Error;
use tierline_shared::admin::{self, Admin, Readiness};
use tierline_shared::manifest::ManifestError;
use tierline_shared::runner::{RunnerConfig, RunnerError};
use tierline_shared::serving::ServedModel;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Errors that stop the cloud worker.
#[derive(Debug, Error)]
pub enum CloudError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] tierline_shared::config::ConfigError),
    /// The model manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The model could not be started or fails its golden samples.
    #[error(transparent)]
    Model(#[from] RunnerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The review API failed.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] tierline_shared::tls::TlsError),
    /// A stage ended unexpectedly.
    #[error("cloud stage {0} ended unexpectedly; restarting the worker is the recovery")]
    Stage(&'static str),
}

/// Loads the full model and checks it against its golden samples.
pub async fn load_model(config: &CloudConfig) -> Result<Arc<ServedModel>, CloudError> {
    let runner_config = RunnerConfig {
        threads: config.model.threads,
        max_batch: config.model.max_batch,
        max_wait: config.model.max_wait,
        queue: config.cloud.concurrency,
    };
    Ok(ServedModel::load(
        &config.model.manifest,
        runner_config,
        config.model.probe.clone(),
    )
    .await?)
}

/// Runs the cloud worker until `shutdown` is cancelled.
pub async fn run(
    config: CloudConfig,
    stats: Arc<CloudStats>,
    shutdown: CancellationToken,
) -> Result<(), CloudError> {
    config.validate()?;
    let runner = load_model(&config).await?;
    let store = Store::open(&config.store.url, config.store.keep_images)
        .await?
        .with_worker(&config.cloud.worker_id);
    tracing::info!(
        worker = %config.cloud.worker_id,
        group = %config.cloud.group,
        model = %runner.manifest().name,
        version = %runner.manifest().version,
        store = %store.url(),
        "Cloud worker starting."
    );
    let mut options = config
        .mqtt
        .options(&format!("tierline-cloud-{}", config.cloud.worker_id))?;
    options.set_manual_acks(true);
    // A clean session: a worker that goes away must not hoard frames at the broker. Frames it held
    // unacknowledged are delivered again by the edges' resend timers.
    options.set_clean_session(true);
    let (client, eventloop) = tierline_shared::mqtt::client(options, 256);
    let concurrency = config.cloud.concurrency.get();
    let (job_tx, job_rx) = mpsc::channel(concurrency);
    let (ack_tx, ack_rx) = mpsc::channel(acks::CHANNEL);
    let (presence_tx, presence_rx) = mpsc::channel(crate::presence::CHANNEL);
    let presence = tokio::spawn(crate::presence::run(
        store.clone(),
        presence_rx,
        config.mqtt.max_message_bytes,
        stats.clone(),
    ));
    // Not a child of `shutdown`: background stages stop after the frames in hand are finished, and their
    // ending must not look like a failure to the select below.
    let background = CancellationToken::new();
    let retention = tokio::spawn(crate::leader::run_retention(
        store.clone(),
        config.retention.clone(),
        config.cloud.worker_id.clone(),
        stats.clone(),
        background.clone(),
    ));
    let mut api = if config.api.enabled {
        tokio::spawn(crate::api::serve(
            config.api.clone(),
            store.clone(),
            stats.clone(),
            background.clone(),
        ))
    } else {
        tokio::spawn(std::future::pending::<Result<(), crate::api::ApiError>>())
    };
    let processor = Arc::new(Processor {
        runner,
        store: store.clone(),
        client: client.clone(),
        max_message_bytes: config.mqtt.max_message_bytes,
        stats: stats.clone(),
        acks: ack_tx.clone(),
    });
    // Health: the model supervisor, the link and database watcher, and the admin endpoint.
    let readiness = Arc::new(Readiness::expecting(&[
        (tierline_shared::serving::CHECK, true),
        (health::LINK, true),
        (health::DATABASE, true),
    ]));
    let admin_stop = CancellationToken::new();
    let _admin_guard = admin_stop.clone().drop_guard();
    let watchers = shutdown.child_token();
    let _watchers_guard = watchers.clone().drop_guard();
    tokio::spawn(
        processor
            .runner
            .clone()
            .supervise(readiness.clone(), watchers.clone()),
    );
    tokio::spawn(health::watch(
        store.clone(),
        stats.clone(),
        readiness.clone(),
        config.admin.check_every,
        watchers.clone(),
    ));
    if config.admin.enabled {
        let (s, m) = (stats.clone(), processor.runner.clone());
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
        .map_err(CloudError::Admin)?;
        let _ = stats.admin_addr.set(bound);
    }
    tokio::spawn(tierline_shared::systemd::notify(
        readiness.clone(),
        watchers.clone(),
    ));
    let connection = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut acker = tokio::spawn(acks::run(
        client.clone(),
        ack_rx,
        connection.clone(),
        stats.clone(),
    ));
    let drained = CancellationToken::new();
    let stop = shutdown.child_token();
    let mut ingest = tokio::spawn(ingest::run(
        eventloop,
        client,
        config.mqtt.clone(),
        config.cloud.group.clone(),
        job_tx,
        ack_tx,
        presence_tx,
        connection,
        stats,
        stop.clone(),
        drained.clone(),
    ));
    // Processing ends when ingest stops accepting (on shutdown) and the queue is empty.
    let processing = tokio::spawn(process::run(processor, job_rx, concurrency));
    // Run until asked to stop; a stage that ends on its own is a failure the supervisor must see.
    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        _ = &mut ingest => Some(CloudError::Stage("ingest")),
        _ = &mut acker => Some(CloudError::Stage("acknowledgement")),
        r = &mut api => Some(match r {
            Ok(Err(e)) => CloudError::Api(e),
            _ => CloudError::Stage("review API"),
        }),
    };
    if let Some(e) = &failure {
        tracing::error!(error = %e, "Cloud worker failing.");
        stop.cancel();
    }
    // Ingest has dropped its queue sender: processing finishes what is queued, within a grace period.
    let grace = tokio::time::sleep(std::time::Duration::from_secs(5));
    tokio::pin!(grace);
    let mut processing = processing;
    tokio::select! {
        _ = &mut processing => {}
        _ = &mut grace => {}
    }
    drained.cancel();
    if !ingest.is_finished() {
        let _ = ingest.await;
    }
    processing.abort();
    acker.abort();
    background.cancel();
    let _ = retention.await;
    if !api.is_finished() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut api).await;
    }
    api.abort();
    presence.abort();
    store.close().await;
    tracing::info!("Cloud worker stopped.");
    failure.map_or(Ok(()), Err)
}
