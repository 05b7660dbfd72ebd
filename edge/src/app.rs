//! The edge process, wired in one place.
//!
//! ```text
//!  camera × N ──► FrameQueue (drop oldest) ──► prescreen (ModelRunner threads)
//!                                               │ pass ───────────────────────────────┐
//!                                               │ suspect / audit                      │
//!                                               ▼                                      ▼
//!                                  intake: outbox append (grouped commits) ──► decisions ──► sink (JSON lines)
//!                                               │ wake                          │  ▲         ▲
//!                                               ▼                               │  │         │
//!                       uplink: outbox.due ──► MQTT publish (QoS 1)     local ◄─┘  │         │ barrier
//!                          ▲  link: MQTT event loop ──► verdicts ──► settle: outbox.lookup ─┘         │
//!                          └─ wake ─────────────────────────────── outbox.ack once the sink wrote ───┘
//! ```
//!
//! A frame the broker refuses (a PUBACK reason code seen by the link, or too large for the broker, seen by
//! the uplink) goes to the settle stage as a refusal: decided locally, then deleted after the barrier.
//!
//! Beside the flow: the shared skeleton (model supervisor, admin endpoint, systemd notify;
//! `tierline_shared::service::Skeleton`), the health watcher (outbox disk headroom, link), heartbeats, and
//! model updates when `updates.url` is set (registry target ──► verify, download, golden samples, shadow on
//! live frames ──► swap of the served model; `crate::updates`).
//!
//! [`App::build`] does everything that can fail before a frame is taken (config, model and golden samples,
//! outbox, cameras, admin listener); [`App::run`] spawns every stage under one [`Supervisor`], in flow
//! order, joined by bounded channels. Any stage that fails, panics or ends while its inputs are open stops
//! the edge with an error naming it, after the same drain as a requested shutdown:
//! cameras, prescreen and uplink stop; the intake commits what it holds; the link closes; the settle stage
//! and the decision stage then finish (whatever still waits is decided locally) and the sink flushes.

use crate::camera::triggers::Triggers;
use crate::camera::{Camera, CameraError, CameraStatus, FrameQueue};
use crate::config::EdgeConfig;
use crate::decisions::stage::{Decisions, LocalRecorder};
use crate::decisions::{self, Book, OfflineRules};
use crate::health::{self, HealthWatch};
use crate::intake::Intake;
use crate::link::{Heartbeats, Link};
use crate::outbox::{Outbox, OutboxError, SeqAllocator, Undecided};
use crate::prescreen::{Prescreen, PrescreenSettings};
use crate::settle::Settle;
use crate::sink::{self, Sink};
use crate::stats::EdgeStats;
use crate::uplink::Uplink;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::config::ConfigError;
use tierline_shared::manifest::ManifestError;
use tierline_shared::runner::{RunnerConfig, RunnerError};
use tierline_shared::service::Skeleton;
use tierline_shared::serving::ServedModel;
use tierline_shared::supervisor::{Drain, Ends, StageFailure, Supervisor};
use tierline_shared::topics::EdgeAddress;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Errors that stop the edge.
#[derive(Debug, Error)]
pub enum EdgeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// A stage failed, panicked or ended early.
    #[error("edge {0}")]
    Stage(#[from] StageFailure),
    /// The admin endpoint could not start.
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
    /// Model updates are configured but cannot start (unreadable trusted keys or state).
    #[error(transparent)]
    Updates(#[from] crate::updates::UpdateError),
}

/// How often heartbeats are published.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long stages get to drain at shutdown.
const GRACE: Duration = Duration::from_secs(10);
/// Capacity of the channel into the outbox intake.
const INTAKE_CHANNEL: usize = 256;
/// Capacity of the channels into the decision stage and the sink.
const DECISION_CHANNEL: usize = 1024;
/// Capacity of the channel of verdicts from the link.
const VERDICT_CHANNEL: usize = 256;
/// Capacity of the channel of refused frames into the settle stage.
const REFUSAL_CHANNEL: usize = 256;
/// Capacity of the MQTT client's request channel: publishes do not wait for room, so it holds a full
/// in-flight window of the default size plus decision lines and presence.
const MQTT_REQUESTS: usize = 512;

/// How the prescreen's sessions are set up.
fn runner_config(config: &EdgeConfig) -> RunnerConfig {
    RunnerConfig {
        threads: config.model.threads,
        max_batch: config.model.max_batch,
        ..RunnerConfig::default()
    }
}

/// Loads the prescreen model and checks it against its golden samples: the bundle the registry last made
/// active when model updates are on and one is installed (falling back to `model.manifest` if it no longer
/// loads), else `model.manifest`.
pub async fn load_model(config: &EdgeConfig) -> Result<Arc<ServedModel>, EdgeError> {
    crate::updates::load_serving(
        &config.updates,
        &config.model.manifest,
        runner_config(config),
        config.model.probe.clone(),
    )
    .await
    .map_err(|e| match e {
        crate::updates::LoadError::Updates(e) => EdgeError::Updates(e),
        crate::updates::LoadError::Model(e) => EdgeError::Model(e),
    })
}

/// Runs the edge until `shutdown` is cancelled or a stage fails: [`App::build`] then [`App::run`].
pub async fn run(
    config: EdgeConfig,
    stats: Arc<EdgeStats>,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    App::build(config, stats).await?.run(shutdown).await
}

/// An edge that is built (model loaded, outbox open, admin endpoint bound) and ready to run.
pub struct App {
    config: EdgeConfig,
    addr: EdgeAddress,
    stats: Arc<EdgeStats>,
    model: Arc<ServedModel>,
    outbox: Outbox,
    /// Suspects a crash left undecided, read before any stage runs, so no live frame can be mistaken for
    /// one of them.
    undecided: Vec<Undecided>,
    queue: FrameQueue,
    cameras: Vec<Camera>,
    triggers: Triggers,
    skeleton: Skeleton,
    mqtt: tierline_shared::mqtt::MqttOptions,
}

impl App {
    /// Checks the config, loads the model (golden samples included), opens the outbox, prepares the
    /// cameras and binds the admin endpoint.
    pub async fn build(config: EdgeConfig, stats: Arc<EdgeStats>) -> Result<Self, EdgeError> {
        config.validate()?;
        let addr = config.address().map_err(|e| ConfigError::Field {
            field: "edge".into(),
            problem: e.to_string(),
        })?;
        let queue = FrameQueue::new(2 * config.model.max_batch.get() * config.model.threads.get());
        let mut triggers = Triggers::default();
        let cameras = config
            .cameras
            .iter()
            .map(|c| Camera::new(c, queue.clone(), stats.clone(), &mut triggers))
            .collect::<Result<Vec<_>, _>>()?;
        let statuses: Vec<Arc<CameraStatus>> = cameras.iter().map(Camera::status).collect();
        if config.updates.url.is_some() {
            // Checked before anything runs: updates that could verify nothing would only log errors.
            tierline_shared::bundle::TrustedKeys::load(&config.updates.trusted_keys)
                .map_err(crate::updates::UpdateError::from)?;
        }
        let model = load_model(&config).await?;
        config.decision.check_classes(&model.manifest())?;
        let mqtt =
            crate::link::options(&config.mqtt, &addr, &model.manifest().version).map_err(|e| {
                ConfigError::Field {
                    field: "mqtt.tls".into(),
                    problem: e.to_string(),
                }
            })?;
        let outbox = Outbox::open(&config.outbox).await?;
        let undecided = outbox.undecided_suspects().await?;
        let samples = {
            let stats = stats.clone();
            Arc::new(move || {
                let mut s = health::samples(&stats);
                for c in &statuses {
                    c.samples(&mut s);
                }
                s
            })
        };
        let skeleton = Skeleton::bind(
            model.clone(),
            &[(health::OUTBOX, true), (health::LINK, false)],
            &config.admin,
            samples,
        )
        .await
        .map_err(EdgeError::Admin)?
        .with_routes(crate::camera::triggers::routes(
            triggers.clone(),
            stats.clone(),
        ));
        Ok(Self {
            config,
            addr,
            stats,
            model,
            outbox,
            undecided,
            queue,
            cameras,
            triggers,
            skeleton,
            mqtt,
        })
    }

    /// Where the admin endpoint listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.skeleton.admin_addr()
    }

    /// The served edge model (for fault drills: [`tierline_shared::runner::ModelRunner::inject_fault`]).
    pub fn model(&self) -> Arc<ServedModel> {
        self.model.clone()
    }

    /// Runs every stage until `shutdown` or a stage failure, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let span = tracing::info_span!("edge", edge_id = %self.addr.edge_id());
        self.run_stages(shutdown).instrument(span).await
    }

    async fn run_stages(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let App {
            config,
            addr,
            stats,
            model,
            outbox,
            undecided,
            queue,
            cameras,
            triggers,
            skeleton,
            mqtt,
        } = self;
        let manifest = model.manifest();
        let model_version = manifest.version.clone();
        let rules = OfflineRules::from_config(&config.decision);
        let backlog = outbox.backlog().await?;
        tracing::info!(
            model = %manifest.name,
            version = %model_version,
            threshold = config.model.suspect_threshold.unwrap_or(manifest.output.threshold),
            backlog = backlog.frames,
            "Edge starting."
        );

        // Stop tokens, in drain order: the flow's sources first, the link after them, the admin endpoint last
        // (it answers until the edge has drained, and stops however `run` returns).
        let stop = shutdown.child_token();
        let link_stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        let _admin_guard = admin_stop.clone().drop_guard();
        let _link_guard = link_stop.clone().drop_guard();

        let (client, eventloop) = tierline_shared::mqtt::client(mqtt, MQTT_REQUESTS);
        let (publisher, tracker) = crate::link::publisher::publisher(client);
        let (refusal_tx, refusal_rx) = mpsc::channel(REFUSAL_CHANNEL);
        let (intake_tx, intake_rx) = mpsc::channel(INTAKE_CHANNEL);
        let (decision_tx, decision_rx) = mpsc::channel(DECISION_CHANNEL);
        let (sink_tx, sink_rx) = mpsc::channel(DECISION_CHANNEL);
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let (verdict_tx, verdict_rx) = mpsc::channel(VERDICT_CHANNEL);
        let (link_tx, link_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());

        let mut sup = Supervisor::new(tracing::Span::current());
        let readiness = skeleton.readiness();
        skeleton.spawn(&mut sup, &stop, &admin_stop);
        sup.spawn(
            "health",
            Ends::OnShutdown,
            HealthWatch {
                outbox: outbox.clone(),
                path: config.outbox.path.clone(),
                budget: config.outbox.max_bytes.0,
                stats: stats.clone(),
                readiness,
                every: config.admin.check_every,
                cameras: cameras.iter().map(Camera::status).collect(),
            }
            .run(stop.clone()),
        );

        // camera × N ──► frame queue
        let camera_states: Vec<Arc<CameraStatus>> = cameras.iter().map(Camera::status).collect();
        let mut camera_stages = Vec::with_capacity(cameras.len());
        for camera in cameras {
            let name = format!("camera {}", camera.id());
            sup.spawn(name.clone(), Ends::Anytime, camera.run(stop.clone()));
            camera_stages.push(name);
        }
        let frames = queue.receiver();
        drop(queue);

        // ──► sink: spawned before everything that may produce decisions.
        sup.spawn(
            "sink",
            Ends::after(["decisions"]),
            Sink {
                cfg: config.sink.clone(),
                items: sink_rx,
                publisher: publisher.clone(),
                stats: stats.clone(),
            }
            .run(),
        );
        sup.spawn(
            "local decisions",
            Ends::after(["decisions"]),
            LocalRecorder {
                outbox: outbox.clone(),
                decided: local_rx,
            }
            .run(),
        );
        // Suspects a crash left undecided are decided now, and the decision is recorded before it is emitted:
        // their deadline is past, and their verdict must find it.
        let clock: Arc<dyn tierline_shared::time::Clock> =
            Arc::new(tierline_shared::time::SystemClock);
        let restart_decisions: Vec<decisions::Event> = undecided
            .iter()
            .map(|r| decisions::decided_at_restart(r, &rules, &*clock))
            .collect();
        let recorded: Vec<(u64, decisions::Action)> = undecided
            .iter()
            .map(|r| (r.seq, decisions::restart_action(r, &rules)))
            .collect();
        outbox.record_local(&recorded).await?;
        if !undecided.is_empty() {
            tracing::warn!(
                frames = undecided.len(),
                "Suspects left undecided by a restart (the edge stopped before their deadline); decided locally now."
            );
        }
        sup.spawn(
            "decisions",
            Ends::after(["prescreen", "intake", "settle"]),
            Decisions {
                book: Book::with_clock(rules, config.decision.deadline, clock),
                at_start: restart_decisions,
                inputs: decision_rx,
                sink: sink_tx,
                local: local_tx,
                stats: stats.clone(),
            }
            .run(stop.clone()),
        );

        // frame queue ──► prescreen ──► intake ──► outbox
        sup.spawn(
            "prescreen",
            Ends::After(camera_stages),
            Prescreen {
                settings: PrescreenSettings {
                    edge_id: addr.edge_id().into(),
                    threshold: config.model.suspect_threshold,
                    audit_rate: config.decision.audit_rate,
                    audit_seed: config.decision.audit_seed,
                    concurrency: 2 * config.model.max_batch.get() * config.model.threads.get(),
                    max_image_bytes: config.mqtt.max_message_bytes,
                },
                model: model.clone(),
                seqs: SeqAllocator::new(outbox.clone()),
                frames,
                intake: intake_tx,
                decisions: decision_tx.clone(),
                stats: stats.clone(),
            }
            .run(stop.clone()),
        );
        sup.spawn(
            "intake",
            Ends::after(["prescreen"]),
            Intake {
                outbox: outbox.clone(),
                frames: intake_rx,
                decisions: decision_tx.clone(),
                uplink: wake.clone(),
                stats: stats.clone(),
                commit_batch: config.outbox.commit_batch.get(),
            }
            .run(),
        );

        // outbox ──► uplink ──► MQTT
        sup.spawn(
            "uplink",
            Ends::OnShutdown,
            Uplink {
                outbox: outbox.clone(),
                publisher: publisher.clone(),
                refusals: refusal_tx.clone(),
                addr: addr.clone(),
                model: model.clone(),
                cfg: config.outbox.clone(),
                max_message_bytes: config.mqtt.max_message_bytes,
                link: link_rx,
                wake: wake.clone(),
                stats: stats.clone(),
            }
            .run(stop.clone()),
        );
        sup.spawn(
            "heartbeats",
            Ends::OnShutdown,
            Heartbeats {
                publisher: publisher.clone(),
                addr: addr.clone(),
                outbox: outbox.clone(),
                model: model.clone(),
                stats: stats.clone(),
                every: HEARTBEAT_EVERY,
                cameras: camera_states.clone(),
                update_group: if config.updates.url.is_some() {
                    config.updates.group(&config.edge.line).to_string()
                } else {
                    String::new()
                },
            }
            .run(stop.clone()),
        );
        // registry ──► updates ──► served model (verified, golden, shadowed, swapped); the link wakes the
        // updates when the cloud announces a change of a target this edge follows
        let update_targets = if config.updates.url.is_some() {
            crate::updates::targets(&config.updates, &addr)
        } else {
            Vec::new()
        };
        let wake_updates = Arc::new(tokio::sync::Notify::new());
        if config.updates.url.is_some() {
            sup.spawn(
                "model updates",
                Ends::OnShutdown,
                crate::updates::Updates {
                    targets: update_targets.clone(),
                    role: "edge",
                    cfg: config.updates.clone(),
                    model: model.clone(),
                    runner_config: runner_config(&config),
                    counters: stats.model_updates.clone(),
                    report: Arc::new(crate::updates::MqttReport {
                        publisher: publisher.clone(),
                        addr: addr.clone(),
                    }),
                    wake: wake_updates.clone(),
                }
                .run(stop.clone()),
            );
        }

        // MQTT ──► link ──► settle ──► decisions ──► sink ──► outbox.ack
        sup.spawn(
            "link",
            Ends::OnShutdown,
            Link {
                eventloop,
                publisher,
                tracker,
                refusals: refusal_tx,
                addr,
                mqtt: config.mqtt.clone(),
                model: model.clone(),
                verdicts: verdict_tx,
                link: link_tx,
                triggers,
                update_targets,
                wake_updates,
                stats: stats.clone(),
            }
            .run(link_stop.clone()),
        );
        sup.spawn(
            "settle",
            Ends::after(["link"]),
            Settle {
                outbox: outbox.clone(),
                verdicts: verdict_rx,
                refusals: refusal_rx,
                decisions: decision_tx,
                uplink: wake,
                stats: stats.clone(),
            }
            .run(),
        );

        // Run until asked to stop or a stage fails; then drain in flow order.
        let outcome = sup
            .run(
                &shutdown,
                &[
                    Drain::of(&stop, &["prescreen", "intake"], GRACE),
                    Drain::of(&link_stop, &["decisions", "sink"], GRACE),
                    Drain::of(&admin_stop, &[], GRACE),
                ],
                GRACE,
            )
            .await;
        outbox.close().await;
        tracing::info!("Edge stopped.");
        Ok(outcome?)
    }
}
