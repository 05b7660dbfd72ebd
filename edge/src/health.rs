//! The edge's readiness checks (besides the model's, which its supervisor owns) and its metrics.
//!
//! Every `every`, the watcher reads the outbox backlog and the free space of the outbox's file system and
//! sets two checks:
//! - `outbox` (required): the outbox can grow to its full budget on this disk (free space plus what it
//!   holds covers `max_bytes`; otherwise the disk fills before the eviction policy can act), and no write
//!   to it failed since the last check.
//! - `sink` (required): the decision sink's last write succeeded. While it fails, the sink holds lines in
//!   memory and retries; the detail names the cause and how many bytes wait.
//! - `link` (not required): whether the MQTT link is up. The edge is built to work cut off from the cloud,
//!   so a down link does not make it unready; it is reported here, in the metrics and in the alert rules.

use crate::outbox::Outbox;
use crate::stats::{self, EdgeStats};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tierline_shared::admin::{self, Readiness};
use tierline_shared::metrics::{self as m, Sample};
use tokio_util::sync::CancellationToken;

/// Name of the outbox check.
pub const OUTBOX: &str = "outbox";
/// Most outbox pages returned to the file system per check (16 MiB of 4 KiB pages).
const RECLAIM_PAGES: u32 = 4096;

/// Name of the decision-sink check.
pub const SINK: &str = "sink";
/// Name of the link check.
pub use tierline_shared::admin::LINK;

/// The health watcher stage.
pub struct HealthWatch {
    /// The outbox.
    pub outbox: Outbox,
    /// Its database file (free space is measured on its file system).
    pub path: PathBuf,
    /// Its disk budget.
    pub budget: u64,
    /// Counters and gauges.
    pub stats: Arc<EdgeStats>,
    /// The checks it sets.
    pub readiness: Arc<Readiness>,
    /// How often it checks.
    pub every: Duration,
    /// The cameras, each reported as a check `camera <id>` (not required: a camera down leaves the edge
    /// ready but degraded, named in `/readyz`).
    pub cameras: Vec<Arc<crate::camera::CameraStatus>>,
}

impl HealthWatch {
    /// Refreshes the `outbox` and `link` checks and the backlog gauges until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let max_age = self.every * 4 + Duration::from_secs(5);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut errors_seen = stats::get(&self.stats.outbox_errors);
        // Check names live as long as the process; one per configured camera.
        let camera_checks: Vec<&'static str> = self
            .cameras
            .iter()
            .map(|c| &*Box::leak(format!("camera {}", c.id).into_boxed_str()))
            .collect();
        let mut ticker = admin::Ticker::new(self.every);
        while ticker.next(&shutdown).await {
            admin::set_link(
                &self.readiness,
                false,
                (
                    self.stats.link_up.load(Ordering::Relaxed),
                    self.stats.link_error.get(),
                ),
                "connected to the broker",
                "deciding locally under the offline policy, keeping suspects in the outbox",
                max_age,
            );
            self.check_outbox(&dir, &mut errors_seen, max_age).await;
            // Free pages go back to the file system (a failure here only delays it).
            if let Err(e) = self.outbox.reclaim(RECLAIM_PAGES).await {
                tracing::debug!(error = %e, "Outbox vacuum skipped.");
            }
            self.check_sink(max_age);
            for (camera, name) in self.cameras.iter().zip(&camera_checks) {
                camera.refresh_fps();
                let (ok, detail) = camera.check();
                self.readiness.set(name, false, ok, detail, max_age);
            }
        }
    }

    /// Sets the `sink` check.
    fn check_sink(&self, max_age: Duration) {
        let held = self.stats.sink_held_bytes.load(Ordering::Relaxed);
        if self.stats.sink_failing.load(Ordering::Relaxed) {
            let why = self.stats.sink_error.get().unwrap_or_default();
            self.readiness.set(
                SINK,
                true,
                false,
                format!(
                    "cannot write decisions ({why}); {held} bytes of lines held in memory and retried; free disk space or fix the sink target"
                ),
                max_age,
            );
        } else {
            self.readiness
                .set(SINK, true, true, "writing".to_string(), max_age);
        }
    }

    /// Sets the `outbox` check and the backlog gauges.
    async fn check_outbox(&self, dir: &Path, errors_seen: &mut u64, max_age: Duration) {
        let backlog = match self.outbox.backlog().await {
            Ok(b) => b,
            Err(e) => {
                self.readiness.set(
                    OUTBOX,
                    true,
                    false,
                    format!("cannot read the outbox: {e}"),
                    max_age,
                );
                return;
            }
        };
        self.stats
            .backlog_frames
            .store(backlog.frames, Ordering::Relaxed);
        self.stats
            .backlog_bytes
            .store(backlog.bytes, Ordering::Relaxed);
        self.stats.backlog_oldest_us.store(
            backlog.oldest_capture_us.unwrap_or(0).max(0) as u64,
            Ordering::Relaxed,
        );
        let dir2 = dir.to_path_buf();
        let free = tokio::task::spawn_blocking(move || fs4::available_space(&dir2)).await;
        let errors_now = stats::get(&self.stats.outbox_errors);
        let new_errors = errors_now - *errors_seen;
        *errors_seen = errors_now;
        let (ok, detail) = match free {
            Ok(Ok(free)) => {
                self.stats.disk_free.store(free, Ordering::Relaxed);
                let growth = self.budget.saturating_sub(backlog.bytes);
                if new_errors > 0 {
                    (
                        false,
                        format!(
                            "{new_errors} frame(s) could not be written to the outbox since the last check; see the log for the cause"
                        ),
                    )
                } else if free < growth {
                    (
                        false,
                        format!(
                            "{} free on {} but the outbox may still grow by {} (budget {}); free disk space or lower [outbox] max_bytes",
                            mib(free),
                            dir.display(),
                            mib(growth),
                            mib(self.budget)
                        ),
                    )
                } else {
                    (
                        true,
                        format!(
                            "{} frames ({}) held, {} free, budget {}",
                            backlog.frames,
                            mib(backlog.bytes),
                            mib(free),
                            mib(self.budget)
                        ),
                    )
                }
            }
            Ok(Err(e)) => (
                false,
                format!("cannot read free space of {}: {e}", dir.display()),
            ),
            Err(e) => (false, format!("free-space check stopped: {e}")),
        };
        self.readiness.set(OUTBOX, true, ok, detail, max_age);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The edge's metric samples now (the model's are added by the shared skeleton).
pub fn samples(s: &EdgeStats) -> Vec<Sample> {
    let c = |metric, v: &std::sync::atomic::AtomicU64| Sample::of(metric, stats::get(v));
    let oldest = s.backlog_oldest_us.load(Ordering::Relaxed);
    let age = if oldest == 0 {
        0.0
    } else {
        (tierline_shared::time::now_us() as f64 - oldest as f64).max(0.0) / 1e6
    };
    vec![
        c(&m::EDGE_FRAMES_CAPTURED, &s.frames_captured),
        c(&m::EDGE_FRAMES_DROPPED, &s.frames_dropped),
        c(&m::EDGE_BYTES_CAPTURED, &s.bytes_captured),
        c(&m::EDGE_FRAMES_UNREADABLE, &s.frames_unreadable),
        c(&m::EDGE_FRAMES_PASSED, &s.frames_passed),
        c(&m::EDGE_FRAMES_SUSPECT, &s.frames_suspect),
        c(&m::EDGE_FRAMES_AUDIT, &s.frames_audit),
        c(&m::EDGE_BYTES_FORWARDED, &s.bytes_forwarded),
        c(&m::EDGE_PUBLISHES, &s.publishes),
        c(&m::EDGE_VERDICTS, &s.verdicts),
        c(&m::EDGE_DECISIONS, &s.decisions),
        c(&m::EDGE_DECISIONS_CLOUD, &s.decisions_cloud),
        c(&m::EDGE_DECISIONS_FALLBACK, &s.decisions_fallback),
        c(&m::EDGE_RECONCILIATIONS, &s.reconciliations),
        c(&m::EDGE_DISAGREEMENTS, &s.disagreements),
        c(&m::EDGE_AUDIT_MISSES, &s.audit_misses),
        c(&m::EDGE_EVICTIONS, &s.evictions),
        c(&m::EDGE_FRAMES_REFUSED, &s.frames_refused),
        c(&m::EDGE_PUBLISHES_REFUSED, &s.publishes_refused),
        c(&m::EDGE_OUTBOX_ERRORS, &s.outbox_errors),
        c(&m::EDGE_VERDICTS_MISMATCHED, &s.verdicts_mismatched),
        c(&m::EDGE_FRAMES_UNSCORED, &s.frames_unscored),
        c(&m::EDGE_MODEL_UPDATES_APPLIED, &s.model_updates.applied),
        c(&m::EDGE_MODEL_UPDATES_REJECTED, &s.model_updates.rejected),
        c(&m::EDGE_MODEL_UPDATE_ERRORS, &s.model_updates.errors),
        c(&m::EDGE_TRIGGERS, &s.triggers),
        c(&m::EDGE_TRIGGERS_REFUSED, &s.triggers_refused),
        c(&m::EDGE_DECISIONS_UNSCORED, &s.decisions_unscored),
        c(&m::EDGE_SINK_ERRORS, &s.sink_errors),
        c(&m::EDGE_SINK_HELD_BYTES, &s.sink_held_bytes),
        Sample::of(
            &m::EDGE_SINK_FAILING,
            u64::from(s.sink_failing.load(Ordering::Relaxed)),
        ),
        c(&m::EDGE_LINK_CONNECTS, &s.link_connects),
        Sample::of(
            &m::EDGE_LINK_UP,
            u64::from(s.link_up.load(Ordering::Relaxed)),
        ),
        c(&m::EDGE_BACKLOG_FRAMES, &s.backlog_frames),
        c(&m::EDGE_BACKLOG_BYTES, &s.backlog_bytes),
        Sample::gauge(&m::EDGE_BACKLOG_AGE, age),
        c(&m::EDGE_DISK_FREE, &s.disk_free),
        Sample::histogram(&m::EDGE_DECISION_LATENCY, &s.decision_latency),
        Sample::histogram(&m::EDGE_OUTBOX_COMMIT, &s.outbox_commit),
    ]
}
