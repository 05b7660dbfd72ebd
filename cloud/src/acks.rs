//! The acknowledgement stage: MQTT acknowledgements in arrival order.
//!
//! MQTT (3.1.1 §4.6, and 5.0 §4.6) requires a client to send PUBACKs in the order the PUBLISH packets
//! arrived; strict brokers disconnect a client that does not. The order is kept by [`crate::order`]; this stage sends what
//! it releases. A message whose processing failed is still released in order (without a stored verdict):
//! holding it would stall every later acknowledgement. The edge's resend timer delivers that frame again.

use crate::order::{Sequencer, Ticket};
use crate::stats::CloudStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tierline_shared::mqtt::{AsyncClient, Publish};
use tokio::sync::mpsc;

/// Capacity of the channel into the sequencer. What it holds is bounded by the broker's in-flight window.
pub const CHANNEL: usize = 4096;

/// The acknowledgement stage: acknowledges finished messages in order. `connection` is the current connection epoch
/// (set by ingest on each CONNACK): acknowledgements released for an older connection are dropped, never sent
/// with a packet id that now names another message.
pub struct Acker {
    /// The MQTT client.
    pub client: AsyncClient,
    /// Finished messages, from ingest (rejected and presence messages) and processing.
    pub finished: mpsc::Receiver<(Ticket, Publish)>,
    /// The current connection epoch, set by ingest.
    pub connection: Arc<AtomicU64>,
    /// Counters and the autoscaler's lag figures.
    pub stats: Arc<CloudStats>,
}

impl Acker {
    /// Runs until ingest and processing close their sides.
    pub async fn run(self) {
        let Acker {
            client,
            finished: mut rx,
            connection,
            stats: lag,
        } = self;
        let mut seq = Sequencer::default();
        while let Some((ticket, publish)) = rx.recv().await {
            lag.lag.finished(ticket);
            for p in seq.finished(ticket, publish) {
                if seq.epoch() != connection.load(Ordering::Acquire) {
                    continue;
                }
                if client.ack(&p).await.is_err() {
                    return;
                }
            }
        }
    }
}
