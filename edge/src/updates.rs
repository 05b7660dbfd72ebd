//! Model updates on the edge: the shared engine (`tierline_shared::updates`) follows the edge's group target
//! (`edges/<group>`) and its own (`edge/<edge id>`, set by a canary rollout), and each step is reported to the
//! cloud over MQTT (topic `.../models`, QoS 1).

use crate::link::{Publisher, Tag};
use tierline_shared::mqtt::QoS;
use tierline_shared::topics::{EdgeAddress, TopicKind};
use tierline_shared::wire::{self, ModelEvent};

pub use tierline_shared::updates::{
    LoadError, Report, UpdateCounters, UpdateError, Updates, UpdatesConfig, bundle_dir, fetch,
    forget_active, load_serving, pick_target, prefix, startup_manifest, state,
};

/// The targets an edge follows: its group's, then its own (which wins a tie).
pub fn targets(cfg: &UpdatesConfig, addr: &EdgeAddress) -> Vec<String> {
    vec![
        format!("edges/{}", cfg.group(addr.line())),
        format!("edge/{}", addr.edge_id()),
    ]
}

/// Reports update steps to the cloud as [`ModelEvent`]s.
pub struct MqttReport {
    /// Where they are published.
    pub publisher: Publisher,
    /// This edge.
    pub addr: EdgeAddress,
}

impl Report for MqttReport {
    fn step(&self, event: &str, bundle: &str, detail: &str, serving_version: &str) {
        let msg = ModelEvent {
            protocol_version: 1,
            edge_id: self.addr.edge_id().into(),
            time_us: tierline_shared::time::now_us(),
            sha256: prefix(bundle, 64),
            event: event.into(),
            detail: prefix(detail, 4000),
            serving_version: prefix(serving_version, 128),
        };
        let sent = wire::encode(&msg, 64 << 10)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.publisher
                    .publish(
                        &self.addr.topic(TopicKind::Models),
                        QoS::AtLeastOnce,
                        false,
                        bytes,
                        Tag::Other("model event"),
                    )
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = sent {
            tracing::warn!(event, bundle, error = %e, "Model update step not reported to the cloud.");
        }
    }
}
