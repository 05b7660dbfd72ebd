//! Every Prometheus metric Tierline exports, in one place: name, kind and help.
//!
//! The edge and the cloud keep their figures in plain atomics and [`Latency`] histograms (`EdgeStats`,
//! `CloudStats`, the model supervisor's counters); at each scrape they turn them into [`Sample`]s of the
//! metrics below, and [`render`] writes the OpenMetrics text format with `prometheus-client`. Latencies are
//! histograms, which aggregate across edges and workers (quantile gauges do not). Counters are exported with the
//! `_total` suffix ([`Metric::exported_name`]); the README lists every exported name, and a test keeps the
//! two in step.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Whether a metric only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (exported with a `_total` suffix).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of durations in seconds (exported as `_bucket`, `_sum` and `_count` series).
    Histogram,
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    /// Name without the `_total` suffix of counters.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
}

impl Metric {
    /// The name a scrape shows.
    pub fn exported_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge | Kind::Histogram => self.name.to_string(),
        }
    }
}

/// A metric's value at scrape time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which metric.
    pub metric: &'static Metric,
    /// Its value (counters and gauges).
    pub value: f64,
    /// Its distribution (histograms).
    pub histogram: Option<Latency>,
    /// Labels (name, value), for metrics kept per camera or per edge and model; samples of one metric with
    /// different labels are exported as one family.
    pub labels: Vec<(&'static str, String)>,
}

impl Sample {
    /// A sample from an integer figure.
    pub fn of(metric: &'static Metric, value: u64) -> Self {
        Self::gauge(metric, value as f64)
    }

    /// A sample from a real figure.
    pub fn gauge(metric: &'static Metric, value: f64) -> Self {
        Self {
            metric,
            value,
            histogram: None,
            labels: Vec::new(),
        }
    }

    /// The same sample with one more label, e.g. `("camera", "cam-1")`.
    pub fn labelled(mut self, name: &'static str, value: &str) -> Self {
        self.labels.push((name, value.to_string()));
        self
    }

    /// A histogram's current state.
    pub fn histogram(metric: &'static Metric, latency: &Latency) -> Self {
        Self {
            metric,
            value: 0.0,
            histogram: Some(latency.clone()),
            labels: Vec::new(),
        }
    }
}

/// A latency histogram in seconds: buckets from 0.5 ms doubling up to about 16 s. Cheap to clone; clones
/// share the counts.
#[derive(Debug, Clone)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.0005, 2.0, 16)))
    }
}

impl Latency {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

macro_rules! metrics {
    ($( $(#[$doc:meta])* $id:ident = ($name:literal, $kind:ident, $help:literal); )*) => {
        $(
            $(#[$doc])*
            pub static $id: Metric = Metric { name: $name, kind: Kind::$kind, help: $help };
        )*
        /// Every metric, in declaration order.
        pub static ALL: &[&Metric] = &[$(&$id),*];
    };
}

metrics! {
    // Both tiers: the served model and its supervisor.
    /// Golden-sample probes run.
    MODEL_PROBES = ("tierline_model_probes", Counter, "Golden-sample probes run against the served model.");
    /// Probes with a wrong answer.
    MODEL_PROBE_WRONG = ("tierline_model_probe_wrong_answers", Counter, "Probes where a golden sample got a wrong answer.");
    /// Probes over the latency budget.
    MODEL_PROBE_SLOW = ("tierline_model_probe_over_budget", Counter, "Probes where a golden sample took longer than the latency budget.");
    /// Inference sessions rebuilt by the watchdog.
    MODEL_REBUILDS = ("tierline_model_session_rebuilds", Counter, "Inference sessions rebuilt after the watchdog found them stuck or failing.");
    /// New model versions rolled out.
    MODEL_RELOADS = ("tierline_model_reloads", Counter, "Model files or manifests changed on disk and loaded.");
    /// Model changes refused (the previous model keeps serving).
    MODEL_RELOAD_FAILURES = ("tierline_model_reload_failures", Counter, "Model changes refused because the new model failed to load or failed its golden samples; the previous model keeps serving.");
    /// Inference calls that failed.
    MODEL_INFERENCE_ERRORS = ("tierline_model_inference_errors", Counter, "Inference calls that failed inside ONNX Runtime.");
    /// Slowest golden sample in the last probe.
    MODEL_PROBE_SECONDS = ("tierline_model_probe_latency_seconds", Gauge, "Slowest golden sample of the last probe, in seconds.");
    /// Whether the process is ready.
    READY = ("tierline_ready", Gauge, "1 when every required readiness check passes, else 0.");

    // Edge.
    /// Frames delivered by cameras.
    EDGE_FRAMES_CAPTURED = ("tierline_edge_frames_captured", Counter, "Frames delivered by the cameras.");
    /// Frames dropped by backpressure.
    EDGE_FRAMES_DROPPED = ("tierline_edge_frames_dropped", Counter, "Frames dropped (oldest first) because the prescreen fell behind.");
    /// Per camera.
    EDGE_CAMERA_FRAMES = ("tierline_edge_camera_frames", Counter, "Frames a camera delivered to the prescreen (label camera).");
    /// Per camera.
    EDGE_CAMERA_SKIPPED = ("tierline_edge_camera_frames_skipped", Counter, "Frames a camera received and left out, by pacing or because no part trigger was waiting (label camera).");
    /// Per camera.
    EDGE_CAMERA_CORRUPT = ("tierline_edge_camera_decode_errors", Counter, "Frames a camera received that could not be used: corrupt NAL units, truncated JPEG parts (label camera).");
    /// Per camera.
    EDGE_CAMERA_RECONNECTS = ("tierline_edge_camera_reconnects", Counter, "Times a camera's source failed or stalled and was reconnected (label camera).");
    /// Per camera.
    EDGE_CAMERA_OPEN_FAILURES = ("tierline_edge_camera_open_failures", Counter, "Attempts to open a camera's source that failed: unreachable, login refused, not a camera, a codec the edge cannot decode (label camera; the reason is in /readyz and the log).");
    /// Per camera.
    EDGE_CAMERA_FPS = ("tierline_edge_camera_fps", Gauge, "Frames per second a camera delivered over the last health interval (label camera).");
    /// Per camera.
    EDGE_CAMERA_LAST_FRAME_AGE = ("tierline_edge_camera_last_frame_age_seconds", Gauge, "Seconds since a camera's source last sent a frame, kept or skipped (label camera; -1 before the first).");
    /// Per camera.
    EDGE_CAMERA_UP = ("tierline_edge_camera_up", Gauge, "1 while a camera's source is connected and sending frames in time (label camera).");
    /// Part triggers.
    EDGE_TRIGGERS = ("tierline_edge_triggers", Counter, "Part triggers received (MQTT or HTTP) and handed to a camera in trigger mode.");
    /// Part triggers refused.
    EDGE_TRIGGERS_REFUSED = ("tierline_edge_triggers_refused", Counter, "Part triggers refused: malformed, naming no camera in trigger mode, or arriving while the camera's trigger queue was full.");
    /// Encoded bytes captured.
    EDGE_BYTES_CAPTURED = ("tierline_edge_bytes_captured", Counter, "Image bytes delivered by the cameras: encoded images, or RGB pixels for frames the edge decoded itself (H.264, ROI crops).");
    /// Unreadable frames.
    EDGE_FRAMES_UNREADABLE = ("tierline_edge_frames_unreadable", Counter, "Frames the prescreen could not read (rejected as a precaution).");
    /// Frames passed at the edge.
    EDGE_FRAMES_PASSED = ("tierline_edge_frames_passed", Counter, "Frames passed by the prescreen.");
    /// Suspects forwarded.
    EDGE_FRAMES_SUSPECT = ("tierline_edge_frames_suspect", Counter, "Frames accepted into the outbox as suspects.");
    /// Audit samples forwarded.
    EDGE_FRAMES_AUDIT = ("tierline_edge_frames_audit", Counter, "Passed frames accepted into the outbox as audit samples.");
    /// Bytes accepted into the outbox.
    EDGE_BYTES_FORWARDED = ("tierline_edge_bytes_forwarded", Counter, "Image bytes accepted into the outbox.");
    /// Publishes including resends.
    EDGE_PUBLISHES = ("tierline_edge_publishes", Counter, "Frame publishes handed to MQTT, resends included.");
    /// Verdicts received.
    EDGE_VERDICTS = ("tierline_edge_verdicts", Counter, "Cloud verdicts received.");
    /// Line decisions of every kind.
    EDGE_DECISIONS = ("tierline_edge_decisions", Counter, "Line decisions emitted, one per frame.");
    /// Suspect decisions from the cloud.
    EDGE_DECISIONS_CLOUD = ("tierline_edge_decisions_cloud", Counter, "Suspect decisions taken from a cloud verdict within the deadline.");
    /// Suspect decisions by local fallback.
    EDGE_DECISIONS_FALLBACK = ("tierline_edge_decisions_fallback", Counter, "Suspect decisions taken locally because the deadline passed (offline policy).");
    /// Late verdicts reconciled.
    EDGE_RECONCILIATIONS = ("tierline_edge_reconciliations", Counter, "Late verdicts matched to a local decision.");
    /// Reconciliations where the cloud disagreed.
    EDGE_DISAGREEMENTS = ("tierline_edge_disagreements", Counter, "Reconciliations where the cloud disagreed with the local decision.");
    /// Audit samples the cloud found defective.
    EDGE_AUDIT_MISSES = ("tierline_edge_audit_misses", Counter, "Audit samples the cloud found defective (prescreen misses).");
    /// Outbox evictions.
    EDGE_EVICTIONS = ("tierline_edge_outbox_evictions", Counter, "Records evicted from the outbox to stay within its disk budget.");
    /// Frames the broker refused.
    EDGE_FRAMES_REFUSED = ("tierline_edge_frames_refused", Counter, "Frames the broker refused (PUBACK reason code, or larger than its maximum packet size): decided locally with the reason and dropped from the outbox, not resent.");
    /// Other messages the broker refused.
    EDGE_PUBLISHES_REFUSED = ("tierline_edge_publishes_refused", Counter, "Decision lines, presence and heartbeat messages the broker refused in its PUBACK (check its ACL for this edge).");
    /// Outbox write failures.
    EDGE_OUTBOX_ERRORS = ("tierline_edge_outbox_errors", Counter, "Frames that could not be written to the outbox.");
    /// Model bundles that became the serving model.
    EDGE_MODEL_UPDATES_APPLIED = ("tierline_edge_model_updates_applied", Counter, "Model bundles from the registry that became the serving model (upgrades and rollbacks).");
    /// Model bundles refused.
    EDGE_MODEL_UPDATES_REJECTED = ("tierline_edge_model_updates_rejected", Counter, "Model bundles refused: untrusted or altered statement, downgrade, hash mismatch, golden samples or shadow gates failed; the serving model kept serving.");
    /// Failed checks of the model target.
    EDGE_MODEL_UPDATE_ERRORS = ("tierline_edge_model_update_errors", Counter, "Checks of the model target that failed for the network or the disk (tried again at the next check).");
    /// Frames the model was too far behind to score.
    EDGE_FRAMES_UNSCORED = ("tierline_edge_frames_unscored", Counter, "Frames taken while the model was too far behind to score them; decided at their deadline under the offline policy.");
    /// Decisions taken before a score.
    EDGE_DECISIONS_UNSCORED = ("tierline_edge_decisions_unscored", Counter, "Frames decided at their deadline before the prescreen scored them (offline policy for an unknown score).");
    /// Sink write failures.
    EDGE_SINK_ERRORS = ("tierline_edge_sink_errors", Counter, "Failed decision-sink write attempts (the sink holds lines and retries).");
    /// Sink backlog.
    EDGE_SINK_HELD_BYTES = ("tierline_edge_sink_held_bytes", Gauge, "Bytes of decision lines held in memory because the sink cannot write.");
    /// Sink state.
    EDGE_SINK_FAILING = ("tierline_edge_sink_failing", Gauge, "1 while the decision sink cannot write.");
    /// Verdicts for another frame than the one held.
    EDGE_VERDICTS_MISMATCHED = ("tierline_edge_verdicts_mismatched", Counter, "Verdicts refused because they name another outbox incarnation or image than the frame held under their seq.");
    /// Link reconnects.
    EDGE_LINK_CONNECTS = ("tierline_edge_link_connects", Counter, "MQTT connections established (1 + reconnects).");
    /// Link state.
    EDGE_LINK_UP = ("tierline_edge_link_up", Gauge, "1 while the MQTT link is up.");
    /// Backlog frames.
    EDGE_BACKLOG_FRAMES = ("tierline_edge_backlog_frames", Gauge, "Frames in the outbox waiting for a verdict.");
    /// Backlog bytes.
    EDGE_BACKLOG_BYTES = ("tierline_edge_backlog_bytes", Gauge, "Image bytes in the outbox.");
    /// Oldest backlog age.
    EDGE_BACKLOG_AGE = ("tierline_edge_backlog_oldest_age_seconds", Gauge, "Age of the oldest frame in the outbox, in seconds (0 when empty).");
    /// Free disk space for the outbox.
    EDGE_DISK_FREE = ("tierline_edge_outbox_disk_free_bytes", Gauge, "Free space on the outbox's file system, in bytes.");
    /// Decision latency of suspects.
    EDGE_DECISION_LATENCY = ("tierline_edge_decision_latency_seconds", Histogram, "Capture-to-decision latency of suspects (from a cloud verdict or the local fallback), in seconds.");
    /// Outbox commit latency.
    EDGE_OUTBOX_COMMIT = ("tierline_edge_outbox_commit_seconds", Histogram, "Time to commit one group of forwarded frames to the outbox (with its fsync under sync = full), in seconds.");

    // Cloud.
    /// Frame messages received.
    CLOUD_FRAMES_RECEIVED = ("tierline_cloud_frames_received", Counter, "Frame messages received, duplicates and rejects included.");
    /// Verdicts stored.
    CLOUD_VERDICTS_STORED = ("tierline_cloud_verdicts_stored", Counter, "Verdicts stored for the first time.");
    /// Duplicate deliveries.
    CLOUD_DUPLICATES = ("tierline_cloud_duplicates", Counter, "Deliveries of frames that already had a verdict, answered from the store.");
    /// Key collisions with another image.
    CLOUD_IDENTITY_CONFLICTS = ("tierline_cloud_identity_conflicts", Counter, "Frames that arrived under the key of a stored frame with another image; stored and judged as different frames.");
    /// Verdicts published.
    CLOUD_VERDICTS_PUBLISHED = ("tierline_cloud_verdicts_published", Counter, "Verdicts published, re-publications included.");
    /// Verdicts the broker refused.
    CLOUD_VERDICTS_REFUSED = ("tierline_cloud_verdicts_refused", Counter, "Verdicts the broker refused in its PUBACK (its ACL does not let this worker write the edge's verdict topic).");
    /// Unreadable frames.
    CLOUD_UNREADABLE = ("tierline_cloud_frames_unreadable", Counter, "Frames whose image could not be read (stored with an error verdict).");
    /// Malformed messages rejected.
    CLOUD_REJECTED_MALFORMED = ("tierline_cloud_rejected_malformed", Counter, "Messages rejected as malformed, oversized or of an unknown protocol version.");
    /// Forged messages rejected.
    CLOUD_REJECTED_FORGED = ("tierline_cloud_rejected_forged", Counter, "Messages rejected because the envelope's edge does not match the topic.");
    /// Processing failures.
    CLOUD_FAILURES = ("tierline_cloud_failures", Counter, "Frames left without a verdict because inference or storage failed (the edge resends them).");
    /// Link state.
    CLOUD_LINK_UP = ("tierline_cloud_link_up", Gauge, "1 while connected and subscribed.");
    /// Inference latency per frame.
    CLOUD_INFERENCE_LATENCY = ("tierline_cloud_inference_latency_seconds", Histogram, "Time a frame spends in inference (waiting for a batch plus the batch run), in seconds; its _count is the number of frames scored.");
    /// Store commit latency.
    CLOUD_STORE_COMMIT = ("tierline_cloud_store_commit_seconds", Histogram, "Time to store one group of verdicts (one transaction, with the database's fsync), in seconds.");
    /// Grouped commits.
    CLOUD_STORE_TRANSACTIONS = ("tierline_cloud_store_transactions", Counter, "Verdict store transactions; verdicts stored divided by this is the mean group size.");
    /// Presence updates.
    CLOUD_PRESENCE_UPDATES = ("tierline_cloud_presence_updates", Counter, "Edge presence and heartbeat messages recorded in the edges table.");
    /// Leader lease.
    CLOUD_LEADER = ("tierline_cloud_leader", Gauge, "1 while this worker holds the retention leader lease.");
    /// Fencing token.
    CLOUD_LEASE_TOKEN = ("tierline_cloud_lease_token", Gauge, "Fencing token of the lease this worker holds (0 when none).");
    /// Retention.
    CLOUD_IMAGES_PRUNED = ("tierline_cloud_images_pruned", Counter, "Stored images removed by retention on this worker (verdicts stay).");
    /// Rollout controller lease.
    CLOUD_ROLLOUT_LEADER = ("tierline_cloud_rollout_leader", Gauge, "1 while this worker holds the rollout controller's lease.");
    /// Unfinished rollouts.
    CLOUD_ROLLOUTS_ACTIVE = ("tierline_cloud_rollouts_active", Gauge, "Unfinished model rollouts (running, paused or rolling back), as the rollout controller last saw them (0 on other workers).");
    /// Rolled-back rollouts.
    CLOUD_ROLLOUTS_ROLLED_BACK = ("tierline_cloud_rollouts_rolled_back", Counter, "Model rollouts this worker rolled back, stopped by their gates or by an operator.");
    /// Full-model bundles from the registry that became the serving model.
    CLOUD_MODEL_UPDATES_APPLIED = ("tierline_cloud_model_updates_applied", Counter, "Full-model bundles from the registry (target workers/<group>) that became this worker's serving model (upgrades and rollbacks).");
    /// Full-model bundles refused.
    CLOUD_MODEL_UPDATES_REJECTED = ("tierline_cloud_model_updates_rejected", Counter, "Full-model bundles refused: untrusted or altered statement, downgrade, hash mismatch, golden samples or shadow gates failed; the serving model kept serving.");
    /// Failed checks of the workers' model target.
    CLOUD_MODEL_UPDATE_ERRORS = ("tierline_cloud_model_update_errors", Counter, "Checks of the workers' model target that failed for the network or the disk (tried again at the next check).");
    /// Autoscaling signal.
    CLOUD_IN_FLIGHT = ("tierline_cloud_in_flight_frames", Gauge, "Frames this worker holds without a verdict (received, not yet acknowledged).");
    /// Audit samples per edge and prescreen version.
    CLOUD_AUDIT_SAMPLES = ("tierline_cloud_audit_samples", Gauge, "Audit samples (random frames the prescreen passed) judged by the cloud within audit.window (labels edge, model_version).");
    /// Audit samples the cloud found defective.
    CLOUD_AUDIT_MISSES = ("tierline_cloud_audit_misses", Gauge, "Audit samples the cloud judged defective: frames the prescreen passed and should not have (labels edge, model_version).");
    /// Lower Wilson bound of the prescreen's miss rate.
    CLOUD_AUDIT_MISS_RATE_LOWER = ("tierline_cloud_audit_miss_rate_lower95", Gauge, "Wilson 95 % lower bound of the share of passed frames the cloud finds defective (labels edge, model_version); above the target, the prescreen misses too much.");
    /// Upper Wilson bound of the prescreen's miss rate.
    CLOUD_AUDIT_MISS_RATE_UPPER = ("tierline_cloud_audit_miss_rate_upper95", Gauge, "Wilson 95 % upper bound of the share of passed frames the cloud finds defective (labels edge, model_version); below the target, the prescreen is shown to meet it.");
    /// The configured target.
    CLOUD_AUDIT_MISS_RATE_TARGET = ("tierline_cloud_audit_miss_rate_target", Gauge, "The configured most share of passed frames the cloud may find defective (audit.miss_rate_target).");
    /// Autoscaling signal.
    CLOUD_OLDEST_UNPROCESSED = ("tierline_cloud_oldest_unprocessed_age_seconds", Gauge, "How long the oldest frame this worker holds has waited, in seconds (0 when none).");
}

/// One scrape's samples, as a `prometheus-client` collector.
#[derive(Debug)]
struct Snapshot(Vec<Sample>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // One family per metric: labelled samples of a metric are written under one descriptor.
        let mut done = std::collections::HashSet::new();
        for (i, s) in self.0.iter().enumerate() {
            let m = s.metric;
            if !done.insert(m.name) {
                continue;
            }
            let family: Vec<&Sample> = self.0[i..]
                .iter()
                .filter(|o| std::ptr::eq(o.metric, m))
                .collect();
            let metric_type = match m.kind {
                Kind::Counter => ConstCounter::new(0.0).metric_type(),
                Kind::Gauge => ConstGauge::new(0.0).metric_type(),
                Kind::Histogram => Histogram::new(std::iter::empty()).metric_type(),
            };
            let descriptor = encoder.encode_descriptor(m.name, m.help, None, metric_type)?;
            let labelled: Vec<&Sample> = family
                .iter()
                .copied()
                .filter(|s| !s.labels.is_empty())
                .collect();
            if labelled.is_empty() {
                encode_value(s, descriptor)?;
            } else {
                let mut descriptor = descriptor;
                for l in labelled {
                    let labels: Vec<(&str, &str)> =
                        l.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    encode_value(l, descriptor.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes one sample's value.
fn encode_value(
    s: &Sample,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match s.metric.kind {
        Kind::Counter => ConstCounter::new(s.value.max(0.0)).encode(encoder),
        Kind::Gauge => ConstGauge::new(s.value).encode(encoder),
        Kind::Histogram => match &s.histogram {
            Some(Latency(h)) => h.encode(encoder),
            None => Ok(()),
        },
    }
}

/// Writes `samples` in the OpenMetrics text format.
pub fn render(samples: Vec<Sample>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(samples)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_total_and_gauges_as_is() {
        let text = render(vec![
            Sample::of(&EDGE_FRAMES_CAPTURED, 42),
            Sample::gauge(&EDGE_BACKLOG_AGE, 1.5),
            Sample::histogram(&EDGE_DECISION_LATENCY, &{
                let l = Latency::default();
                l.observe(std::time::Duration::from_millis(3));
                l
            }),
        ]);
        assert!(
            text.contains("# TYPE tierline_edge_frames_captured counter"),
            "{text}"
        );
        assert!(
            text.contains("tierline_edge_frames_captured_total 42"),
            "{text}"
        );
        assert!(
            text.contains("tierline_edge_backlog_oldest_age_seconds 1.5"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tierline_edge_decision_latency_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("tierline_edge_decision_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("tierline_edge_decision_latency_seconds_bucket{le=\"0.004\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn names_are_unique_and_prometheus_safe() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "duplicate metric {}", m.name);
            assert!(m.name.starts_with("tierline_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(
                !m.name.ends_with("_total"),
                "{}: the suffix is added on export",
                m.name
            );
        }
    }

    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let missing: Vec<String> = ALL
            .iter()
            .map(|m| m.exported_name())
            .filter(|n| !readme.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "metrics missing from README.md: {missing:?}"
        );
    }
}
