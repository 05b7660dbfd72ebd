//! Jobs that must run on one worker at a time (today: image retention), under a leader lease in the shared
//! database with a fencing token (see the lease contract in [`crate::store`]).
//!
//! Every worker is a candidate. Each tries to take or renew the lease every third of its TTL; the holder runs
//! the job when it is due. A leader that stalls past its TTL (a long pause, a lost database connection)
//! loses the lease to another worker, which gets a larger token; the stalled leader's next guarded write
//! carries the old token and is refused ([`StoreError::Fenced`]), so two leaders never both act. A worker
//! that shuts down cleanly releases its lease so another takes over at its next try.

use crate::config::RetentionConfig;
use crate::stats::CloudStats;
use crate::store::{Lease, RetentionPolicy, Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name of the retention lease.
pub const RETENTION: &str = "retention";

/// The retention stage: a candidate for the retention lease, pruning images while it holds it.
pub struct Retention {
    /// The store.
    pub store: Store,
    /// Limits and lease timing.
    pub config: RetentionConfig,
    /// This worker's id, the lease holder's name.
    pub holder: String,
    /// Counters.
    pub stats: Arc<CloudStats>,
}

impl Retention {
    /// Runs the retention candidate until `shutdown`. Idle when no retention limit is configured.
    pub async fn run(self, shutdown: CancellationToken) {
        let Retention {
            store,
            config,
            holder,
            stats,
        } = self;
        let policy = RetentionPolicy {
            max_age: config.max_age,
            max_bytes: config.max_bytes,
        };
        if policy.max_age.is_none() && policy.max_bytes.is_none() {
            shutdown.cancelled().await;
            return;
        }
        let renew_every = config.lease_ttl / 3;
        let mut held: Option<Lease> = None;
        let mut last_run: Option<tokio::time::Instant> = None;
        loop {
            let now = tierline_shared::time::now_us();
            match store
                .try_acquire_lease(RETENTION, &holder, config.lease_ttl, now)
                .await
            {
                Ok(Some(lease)) => {
                    if held.as_ref().map(|l| l.token) != Some(lease.token) {
                        tracing::info!(holder = %holder, token = lease.token, "Retention leader lease taken.");
                        last_run = None;
                    }
                    stats.leader.store(true, Ordering::Relaxed);
                    stats
                        .lease_token
                        .store(lease.token as u64, Ordering::Relaxed);
                    held = Some(lease);
                }
                Ok(None) => {
                    if held.take().is_some() {
                        tracing::warn!(holder = %holder, "Retention leader lease lost to another worker.");
                    }
                    stats.leader.store(false, Ordering::Relaxed);
                    stats.lease_token.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    // Keep the lease we think we hold: if it expired meanwhile, the fence refuses our writes.
                    tracing::warn!(error = %e, "Retention lease could not be renewed.");
                }
            }
            let mut fenced = false;
            if let Some(lease) = &held
                && last_run.is_none_or(|t| t.elapsed() >= config.interval)
            {
                last_run = Some(tokio::time::Instant::now());
                match store
                    .prune_images(lease, &policy, tierline_shared::time::now_us())
                    .await
                {
                    Ok(p) => {
                        stats.images_pruned.fetch_add(p.images, Ordering::Relaxed);
                        if p.images > 0 {
                            tracing::info!(
                                images = p.images,
                                bytes = p.bytes,
                                token = lease.token,
                                "Retention removed old images; verdicts kept."
                            );
                        }
                    }
                    Err(e @ StoreError::Fenced { .. }) => {
                        tracing::warn!(error = %e, "Retention pass refused; another worker leads now.");
                        fenced = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Retention pass failed; retrying next interval.")
                    }
                }
            }
            if fenced {
                held = None;
                stats.leader.store(false, Ordering::Relaxed);
                stats.lease_token.store(0, Ordering::Relaxed);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(renew_every.max(Duration::from_millis(100))) => {}
            }
        }
        if let Some(lease) = held {
            let _ = store.release_lease(&lease).await;
            stats.leader.store(false, Ordering::Relaxed);
            tracing::info!(holder = %holder, token = lease.token, "Retention leader lease released.");
        }
    }
}
