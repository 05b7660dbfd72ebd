//! Grouped verdict commits: one transaction (one fsync) for the verdicts that are ready together.
//!
//! Every processing task hands its frame and verdict to this stage and waits for the outcome, so a verdict is
//! still published only after it is stored. The stage takes whatever is waiting (up to [`GROUP`]) and
//! stores it in one transaction ([`Store::store_many`]); under load the groups grow by themselves, and a lone
//! verdict is committed at once, never held for company. If a group's transaction fails, each of its
//! verdicts is tried alone, so one frame the database refuses fails only itself.

use crate::stats::{self, CloudStats};
use crate::store::{Store, StoreError, Stored};
use std::sync::Arc;
use tierline_shared::wire::{FrameEnvelope, Verdict};
use tokio::sync::{mpsc, oneshot};

/// Most verdicts in one transaction.
pub const GROUP: usize = 64;

/// A verdict waiting for its commit.
struct Pending {
    frame: Arc<FrameEnvelope>,
    verdict: Verdict,
    done: oneshot::Sender<Result<Stored, StoreError>>,
}

/// The processing tasks' handle on the commit stage. Cheap to clone.
#[derive(Clone)]
pub struct Commits {
    tx: mpsc::Sender<Pending>,
}

/// Why a verdict was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The database refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The commit stage has stopped (the worker is shutting down).
    #[error("the verdict commit stage has stopped (shutting down); the edge resends the frame")]
    Stopped,
}

impl Commits {
    /// Stores `verdict` for `frame` in the next group; returns once it is committed.
    pub async fn store(
        &self,
        frame: Arc<FrameEnvelope>,
        verdict: Verdict,
    ) -> Result<Stored, CommitError> {
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Pending {
                frame,
                verdict,
                done,
            })
            .await
            .map_err(|_| CommitError::Stopped)?;
        outcome
            .await
            .map_err(|_| CommitError::Stopped)?
            .map_err(Into::into)
    }
}

/// The commit stage.
pub struct Committer {
    /// Where verdicts go.
    pub store: Store,
    /// Counters (commit latency, group sizes).
    pub stats: Arc<CloudStats>,
    rx: mpsc::Receiver<Pending>,
}

/// A commit stage and the handle that feeds it.
pub fn stage(store: Store, stats: Arc<CloudStats>) -> (Committer, Commits) {
    let (tx, rx) = mpsc::channel(GROUP * 4);
    (Committer { store, stats, rx }, Commits { tx })
}

impl Committer {
    /// Runs until every [`Commits`] handle is dropped and what they sent is stored.
    pub async fn run(mut self) {
        let mut group = Vec::with_capacity(GROUP);
        while self.rx.recv_many(&mut group, GROUP).await > 0 {
            let started = std::time::Instant::now();
            let items: Vec<(&FrameEnvelope, &Verdict)> =
                group.iter().map(|p| (&*p.frame, &p.verdict)).collect();
            let outcome = self.store.store_many(&items).await;
            drop(items);
            self.stats.store_commit.observe(started.elapsed());
            stats::inc(&self.stats.store_transactions);
            match outcome {
                Ok(stored) => {
                    for (p, s) in group.drain(..).zip(stored) {
                        let _ = p.done.send(Ok(s));
                    }
                }
                Err(e) if group.len() == 1 => {
                    if let Some(p) = group.pop() {
                        let _ = p.done.send(Err(e));
                    }
                }
                Err(e) => {
                    tracing::warn!(verdicts = group.len(), error = %e, "Grouped verdict commit failed; storing each alone.");
                    for p in group.drain(..) {
                        let alone = self.store.store(&p.frame, &p.verdict).await;
                        let _ = p.done.send(alone);
                    }
                }
            }
        }
    }
}
