//! The cloud worker, wired in one place.
//!
//! ```text
//!  MQTT ($share/<group>/tierline/v1/+/+/+/frames, manual acks)
//!    └─► ingest: topic, size, version, edge-id checks ─► bounded queue ─► processing × concurrency:
//!            dedup (store lookup) ─► infer (ModelRunner, batched) ─► store (grouped commits, idempotent on
//!            edge_id, incarnation, seq)
//!            ─► publish verdict to tierline/v1/<site>/<line>/<edge>/verdicts ─► acks (in arrival order)
//!    └─► presence / heartbeats ─► bounded queue ─► presence: edges table
//!  retention candidate: leader lease (fencing token) ─► prune old images (verdicts stay)
//!  rollout controller: its own leader lease ─► stages, gates (heartbeats, edges' update reports, audit
//!      estimates) ─► targets per edge and per group, or every edge back (fenced writes)
//!  audit estimate: store (audit samples per edge and prescreen version) ─► miss rate, Wilson bounds ─► metrics
//!  review API (gRPC): store ◄── ListFrames, GetFrame, SubmitReview, WatchVerdicts, ListEdges
//!  review console (HTTP, `console.listen`): store ◄── queue, frame pages, reviews from signed-in reviewers
//!  model registry (gRPC `Models`, operators): signed bundles checked ─► store; targets ─► store
//!  bundle server (HTTP, `registry.listen`): store ─► bundle downloads (byte ranges) for edges and workers
//!  target announcer: store (model targets) ─► retained MQTT tierline/targets/v1/<target>/<model> (wakes edges)
//!  model updates (`updates.url`): registry target workers/<group> ─► download, verify, golden samples,
//!      shadow on live frames ─► swap of the served full model; steps ─► store (model events)
//! ```
//!
//! Beside the flow: the shared skeleton (model supervisor, admin endpoint, systemd notify;
//! `tierline_shared::service::Skeleton`) and the health watcher (link, database).
//!
//! [`App::build`] does everything that can fail before a message is taken (config, model and golden samples,
//! store, listeners); [`App::run`] spawns every stage under one [`Supervisor`]. Any stage that fails, panics
//! or ends while its inputs are open stops the worker with an error naming it, after the same drain as a
//! requested shutdown: ingest stops accepting; processing finishes the frames in hand (their verdicts and
//! acks still go out through the event loop), within a grace period; then the connection closes and the
//! background stages stop.

use crate::acks::{self, Acker};
use crate::api::ReviewApi;
use crate::commit;
use crate::config::CloudConfig;
use crate::console::Console;
use crate::health::{self, HealthWatch};
use crate::ingest::Ingest;
use crate::leader::Retention;
use crate::presence::PresenceRecorder;
use crate::process::{Processing, Processor};
use crate::registry::Registry;
use crate::registry::server::BundleServer;
use crate::stats::CloudStats;
use crate::store::{Images, Store, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::manifest::ManifestError;
use tierline_shared::runner::{RunnerConfig, RunnerError};
use tierline_shared::service::Skeleton;
use tierline_shared::serving::ServedModel;
use tierline_shared::supervisor::{Drain, Ends, StageFailure, Supervisor};
use tierline_shared::updates;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
    /// The review console failed.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// Model updates are configured but cannot start (unreadable trusted keys or state).
    #[error(transparent)]
    Updates(#[from] updates::UpdateError),
    /// A trusted model signing key cannot be read.
    #[error("registry.trusted_keys: {0}")]
    TrustedKeys(#[from] tierline_shared::bundle::BundleError),
    /// The bundle server failed.
    #[error(transparent)]
    BundleServer(#[from] crate::registry::server::ServerError),
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] tierline_shared::tls::TlsError),
    /// A stage failed, panicked or ended early; restarting the worker is the recovery.
    #[error("cloud worker {0}")]
    Stage(#[from] StageFailure),
}

/// How long processing gets to finish the frames in hand at shutdown.
const PROCESSING_GRACE: Duration = Duration::from_secs(5);
/// How long the other stages get to stop.
const GRACE: Duration = Duration::from_secs(2);
/// How often the model targets are read for their retained announcements.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// Capacity of the MQTT client's request channel.
const MQTT_REQUESTS: usize = 256;

/// How the full model is run.
fn runner_config(config: &CloudConfig) -> RunnerConfig {
    RunnerConfig {
        threads: config.model.threads,
        max_batch: config.model.max_batch,
        max_wait: config.model.max_wait,
        queue: config.cloud.concurrency,
    }
}

/// Loads the full model and checks it against its golden samples: the bundle the registry last made active
/// when model updates are on and one is installed (falling back to `model.manifest` if it no longer loads),
/// else `model.manifest`.
pub async fn load_model(config: &CloudConfig) -> Result<Arc<ServedModel>, CloudError> {
    updates::load_serving(
        &config.updates,
        &config.model.manifest,
        runner_config(config),
        config.model.probe.clone(),
    )
    .await
    .map_err(|e| match e {
        updates::LoadError::Updates(e) => CloudError::Updates(e),
        updates::LoadError::Model(e) => CloudError::Model(e),
    })
}

/// Runs the cloud worker until `shutdown` is cancelled or a stage fails: [`App::build`] then [`App::run`].
pub async fn run(
    config: CloudConfig,
    stats: Arc<CloudStats>,
    shutdown: CancellationToken,
) -> Result<(), CloudError> {
    App::build(config, stats).await?.run(shutdown).await
}

/// A worker that is built (model loaded, store open, listeners bound) and ready to run.
pub struct App {
    config: CloudConfig,
    stats: Arc<CloudStats>,
    model: Arc<ServedModel>,
    store: Store,
    api: Option<ReviewApi>,
    console: Option<Console>,
    bundles: Option<BundleServer>,
    skeleton: Skeleton,
    mqtt: tierline_shared::mqtt::MqttOptions,
}

impl App {
    /// Checks the config, loads the model (golden samples included), opens the store and binds the review
    /// API and the admin endpoint.
    pub async fn build(config: CloudConfig, stats: Arc<CloudStats>) -> Result<Self, CloudError> {
        config.validate()?;
        if config.updates.url.is_some() {
            // Checked before anything runs: updates that could verify nothing would only log errors.
            tierline_shared::bundle::TrustedKeys::load(&config.updates.trusted_keys)
                .map_err(updates::UpdateError::from)?;
        }
        let model = load_model(&config).await?;
        let images = Images::open_with(
            &config.store.images_setting(),
            &config.store.image_options(),
        )
        .map_err(StoreError::from)?;
        tracing::info!(images = %images.describe(), "Stored images are kept in {}.", images.describe());
        let store = Store::open(&config.store.url, config.store.keep_images)
            .await?
            .with_worker(&config.cloud.worker_id)
            .with_images(images);
        let mut mqtt = config
            .mqtt
            .options(&format!("tierline-cloud-{}", config.cloud.worker_id))?;
        mqtt.set_manual_acks(true);
        // A clean session: a worker that goes away must not hoard frames at the broker. Frames it held
        // unacknowledged are delivered again by the edges' resend timers.
        mqtt.set_clean_start(true);
        let trusted = tierline_shared::bundle::TrustedKeys::load(&config.registry.trusted_keys)?;
        let registry = Registry::new(store.clone(), trusted);
        let api = if config.api.enabled {
            Some(
                ReviewApi::bind(config.api.clone(), store.clone())
                    .await?
                    .with_registry(registry)
                    .with_audit(config.audit.clone())
                    .with_rollouts(config.rollouts.clone()),
            )
        } else {
            None
        };
        let bundles = match config.registry.listen {
            Some(listen) => Some(BundleServer::bind(listen, store.clone()).await?),
            None => None,
        };
        let console = match config.console.listen {
            Some(_) => Some(
                Console::bind(&config.console, &config.api.credentials()?, store.clone()).await?,
            ),
            None => None,
        };
        let samples = {
            let stats = stats.clone();
            Arc::new(move || health::samples(&stats))
        };
        let skeleton = Skeleton::bind(
            model.clone(),
            &[(health::LINK, true), (health::DATABASE, true)],
            &config.admin,
            samples,
        )
        .await
        .map_err(CloudError::Admin)?;
        Ok(Self {
            config,
            stats,
            model,
            store,
            api,
            console,
            bundles,
            skeleton,
            mqtt,
        })
    }

    /// Where the admin endpoint listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.skeleton.admin_addr()
    }

    /// Where the review API listens, if enabled.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(ReviewApi::addr)
    }

    /// Where the review console listens, if enabled.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(Console::addr)
    }

    /// Where the bundle server listens, if enabled.
    pub fn bundles_addr(&self) -> Option<SocketAddr> {
        self.bundles.as_ref().map(BundleServer::addr)
    }

    /// Runs every stage until `shutdown` or a stage failure, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), CloudError> {
        let span = tracing::info_span!("cloud", worker = %self.config.cloud.worker_id);
        self.run_stages(shutdown).instrument(span).await
    }

    async fn run_stages(self, shutdown: CancellationToken) -> Result<(), CloudError> {
        let App {
            config,
            stats,
            model,
            store,
            api,
            console,
            bundles,
            skeleton,
            mqtt,
        } = self;
        tracing::info!(
            group = %config.cloud.group,
            model = %model.manifest().name,
            version = %model.manifest().version,
            store = %store.url(),
            "Cloud worker starting."
        );
        // Stop tokens, in drain order: ingest stops accepting; once processing finished the frames in hand the
        // connection closes; then the background stages and, last, the admin endpoint.
        let stop = shutdown.child_token();
        let drained = CancellationToken::new();
        let background = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        let _guards = [&drained, &background, &admin_stop].map(|t| t.clone().drop_guard());

        let (client, eventloop) = tierline_shared::mqtt::client(mqtt, MQTT_REQUESTS);
        let concurrency = config.cloud.concurrency.get();
        let (job_tx, job_rx) = mpsc::channel(concurrency);
        let (ack_tx, ack_rx) = mpsc::channel(acks::CHANNEL);
        let (presence_tx, presence_rx) = mpsc::channel(crate::presence::CHANNEL);
        let connection = Arc::new(AtomicU64::new(0));

        let mut sup = Supervisor::new(tracing::Span::current());
        let readiness = skeleton.readiness();
        skeleton.spawn(&mut sup, &background, &admin_stop);
        sup.spawn(
            "health",
            Ends::OnShutdown,
            HealthWatch {
                store: store.clone(),
                stats: stats.clone(),
                readiness,
                every: config.admin.check_every,
            }
            .run(background.clone()),
        );

        // registry (workers/<group>) ──► updates ──► served model (verified, golden, shadowed, swapped); the
        // target announcer wakes them when a workers/... target changes
        let wake_updates = Arc::new(tokio::sync::Notify::new());
        if config.updates.url.is_some() {
            sup.spawn(
                "model updates",
                Ends::OnShutdown,
                updates::Updates {
                    targets: vec![crate::updates::target(&config.updates)],
                    role: "worker",
                    cfg: config.updates.clone(),
                    model: model.clone(),
                    runner_config: runner_config(&config),
                    counters: stats.model_updates.clone(),
                    report: Arc::new(crate::updates::StoreReport::start(
                        store.clone(),
                        config.cloud.worker_id.clone(),
                    )),
                    wake: wake_updates.clone(),
                }
                .run(stop.clone()),
            );
        }

        // MQTT ──► ingest ──► processing ──► acks; ingest ──► presence
        sup.spawn(
            "ingest",
            Ends::OnShutdown,
            Ingest {
                eventloop,
                client: client.clone(),
                mqtt: config.mqtt.clone(),
                group: config.cloud.group.clone(),
                jobs: job_tx,
                acks: ack_tx.clone(),
                presence: presence_tx,
                connection: connection.clone(),
                stats: stats.clone(),
                drained: drained.clone(),
            }
            .run(stop.clone()),
        );
        let (committer, commits) = commit::stage(store.clone(), stats.clone());
        sup.spawn(
            "verdict commits",
            Ends::after(["processing"]),
            committer.run(),
        );
        sup.spawn(
            "processing",
            Ends::after(["ingest"]),
            Processing {
                processor: Arc::new(Processor {
                    model,
                    store: store.clone(),
                    commits,
                    client: client.clone(),
                    max_message_bytes: config.mqtt.max_message_bytes,
                    stats: stats.clone(),
                    acks: ack_tx,
                }),
                jobs: job_rx,
                concurrency,
            }
            .run(),
        );
        sup.spawn(
            "acknowledgement",
            Ends::after(["ingest", "processing"]),
            Acker {
                client: client.clone(),
                finished: ack_rx,
                connection: connection.clone(),
                stats: stats.clone(),
            }
            .run(),
        );
        sup.spawn(
            "presence",
            Ends::after(["ingest"]),
            PresenceRecorder {
                store: store.clone(),
                updates: presence_rx,
                max_bytes: config.mqtt.max_message_bytes,
                stats: stats.clone(),
            }
            .run(),
        );

        // Beside the flow: retention under the leader lease, and the review API.
        sup.spawn(
            "retention",
            Ends::OnShutdown,
            Retention {
                store: store.clone(),
                config: config.retention.clone(),
                holder: config.cloud.worker_id.clone(),
                stats: stats.clone(),
            }
            .run(background.clone()),
        );
        sup.spawn(
            "rollout controller",
            Ends::OnShutdown,
            crate::rollout::Controller {
                store: store.clone(),
                config: config.rollouts.clone(),
                holder: config.cloud.worker_id.clone(),
                stats: stats.clone(),
            }
            .run(background.clone()),
        );
        // store (targets) ──► retained announcements, so edges learn of a change at once
        sup.spawn(
            "target announcer",
            Ends::OnShutdown,
            crate::registry::announce::Announcer {
                store: store.clone(),
                client: client.clone(),
                connection: connection.clone(),
                every: ANNOUNCE_EVERY,
                wake_workers: wake_updates.clone(),
            }
            .run(stop.clone()),
        );
        sup.spawn(
            "audit estimate",
            Ends::OnShutdown,
            crate::audit::AuditWatch {
                store: store.clone(),
                config: config.audit.clone(),
                stats: stats.clone(),
            }
            .run(background.clone()),
        );
        if let Some(api) = api {
            sup.spawn("review API", Ends::OnShutdown, api.run(background.clone()));
        }
        if let Some(console) = console {
            sup.spawn(
                "review console",
                Ends::OnShutdown,
                console.run(background.clone()),
            );
        }
        if let Some(bundles) = bundles {
            sup.spawn(
                "bundle server",
                Ends::OnShutdown,
                bundles.run(background.clone()),
            );
        }

        // Run until asked to stop or a stage fails; then drain in flow order.
        let outcome = sup
            .run(
                &shutdown,
                &[
                    Drain::of(&stop, &["processing"], PROCESSING_GRACE),
                    Drain::of(&drained, &["ingest"], GRACE),
                    Drain::of(&background, &[], GRACE),
                    Drain::of(&admin_stop, &[], GRACE),
                ],
                GRACE,
            )
            .await;
        store.close().await;
        tracing::info!("Cloud worker stopped.");
        Ok(outcome?)
    }
}
