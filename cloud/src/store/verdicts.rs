//! Verdicts: storing a frame with its verdict exactly once per `(edge_id, incarnation, seq)` and image,
//! answering a frame delivered again with the verdict already stored, and counting verdicts.
//!
//! A delivery is a duplicate only when its key *and* its image hash match a stored frame. One whose key is
//! stored with another image (an edge outbox restored from an old copy numbers new frames with old seqs) is a
//! different frame: it is stored under the incarnation `<incarnation>#<first 16 hex digits of its hash>`,
//! judged, and reported as [`Stored::Conflict`]; its verdict still names the wire incarnation and its own hash.

use super::models::INSERT_MODEL_VERSION;
use super::{Images, Pool, Store, StoreError};
use sqlx::FromRow;
use tierline_shared::action::Action;
use tierline_shared::regions::Region;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Verdict};

/// The outcome of storing a verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The verdict was stored now.
    New(Verdict),
    /// A verdict for this frame already existed; this is it.
    Existing(Verdict),
    /// The frame's key was stored with another image: this frame was stored now beside it, under the
    /// conflict key, with this verdict.
    Conflict(Verdict),
}

/// The stored incarnation of a frame whose key is already taken by another image.
fn conflict_incarnation(frame: &FrameEnvelope) -> String {
    let hash = hex::encode(&frame.image_sha256);
    format!(
        "{}#{}",
        frame.incarnation,
        hash.get(..16).unwrap_or(hash.as_str())
    )
}

#[derive(FromRow)]
struct VerdictRow {
    cloud_model_version: String,
    label: String,
    defective: bool,
    defect_score: f64,
    scores_json: String,
    error: String,
    verdict_time_us: i64,
    frame_id: String,
    image_sha256: Vec<u8>,
    regions_json: String,
}

/// Inserts a frame, or counts a delivery of the same image under the same key. Affects no row when the key
/// is stored with another image.
const INSERT_FRAME: &str = "INSERT INTO frames (edge_id, seq, frame_id, site, line, camera_id, capture_time_us, reason, edge_score, edge_model_version, image_encoding, image, image_bytes, received_us, edge_local_action, incarnation, image_sha256, part_id, origin, capture_clock, image_ref)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
     ON CONFLICT (edge_id, incarnation, seq) DO UPDATE SET deliveries = frames.deliveries + 1,
       edge_local_action = CASE WHEN excluded.edge_local_action != '' THEN excluded.edge_local_action ELSE frames.edge_local_action END
     WHERE frames.image_sha256 = excluded.image_sha256";

const INSERT_VERDICT: &str = "INSERT INTO verdicts (edge_id, seq, cloud_model_version, label, defective, defect_score, scores_json, error, verdict_time_us, worker_id, incarnation, image_sha256, regions_json)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (edge_id, incarnation, seq) DO NOTHING";

const SELECT_VERDICT: &str = "SELECT v.cloud_model_version, v.label, v.defective, v.defect_score, v.scores_json, v.error, v.verdict_time_us, f.frame_id, v.image_sha256, v.regions_json
     FROM verdicts v JOIN frames f ON f.edge_id = v.edge_id AND f.incarnation = v.incarnation AND f.seq = v.seq
     WHERE v.edge_id = $1 AND v.incarnation = $2 AND v.seq = $3";

/// Whether a frame is stored under this key (or its conflict key) with the same image.
const FRAME_EXISTS: &str = "SELECT COUNT(*) FROM frames
     WHERE edge_id = $1 AND seq = $2 AND (incarnation = $3 OR incarnation = $4) AND image_sha256 = $5";

/// Counts a delivery of a stored frame: same key (or its conflict key) and the same image.
const COUNT_DELIVERY: &str = "UPDATE frames SET deliveries = deliveries + 1,
     edge_local_action = CASE WHEN $1 != '' THEN $1 ELSE edge_local_action END
     WHERE edge_id = $2 AND seq = $3 AND (incarnation = $4 OR incarnation = $5) AND image_sha256 = $6
     RETURNING incarnation";

impl Store {
    /// The stored verdict of this frame (same key, same image), counting this delivery. The edge's local
    /// action, if it decided locally meanwhile, is recorded too.
    pub async fn lookup(&self, frame: &FrameEnvelope) -> Result<Option<Verdict>, StoreError> {
        let (edge_id, seq) = (frame.edge_id.as_str(), frame.seq);
        let edge_local_action = tierline_shared::action::local_action(frame)
            .map(Action::as_str)
            .unwrap_or_default();
        let conflict_key = conflict_incarnation(frame);
        let row: Option<VerdictRow> = on_pool!(self, |pool| {
            // Most deliveries are new frames: a plain read says so without taking the write lock, which the
            // grouped verdict commits hold (on SQLite every transaction below would wait for them in turn).
            // A frame stored after this read is caught by `store`, which is idempotent.
            let stored: i64 = sqlx::query_scalar(FRAME_EXISTS)
                .bind(edge_id)
                .bind(seq as i64)
                .bind(&frame.incarnation)
                .bind(&conflict_key)
                .bind(&frame.image_sha256)
                .fetch_one(pool)
                .await
                .map_err(self.err("lookup"))?;
            if stored == 0 {
                return Ok(None);
            }
            let mut tx = pool.begin().await.map_err(self.err("lookup"))?;
            // The write comes first: on SQLite a transaction that reads and then writes cannot wait for the
            // write lock (it fails at once with "database is locked" when another worker wrote meanwhile),
            // while one that starts by writing waits up to the busy timeout. A frame row exists exactly when
            // its verdict does (both are stored in one transaction).
            let counted: Option<String> = sqlx::query_scalar(COUNT_DELIVERY)
                .bind(edge_local_action)
                .bind(edge_id)
                .bind(seq as i64)
                .bind(&frame.incarnation)
                .bind(&conflict_key)
                .bind(&frame.image_sha256)
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err("lookup"))?;
            let found: Option<VerdictRow> = match counted {
                Some(stored_as) => sqlx::query_as(SELECT_VERDICT)
                    .bind(edge_id)
                    .bind(&stored_as)
                    .bind(seq as i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(self.err("lookup"))?,
                None => None,
            };
            tx.commit().await.map_err(self.err("lookup"))?;
            found
        });
        Ok(row.map(|r| to_verdict(frame, r)))
    }

    /// Stores the frame and its verdict unless a verdict for this frame (same key, same image) exists already.
    /// A frame whose key is stored with another image is stored beside it ([`Stored::Conflict`]).
    pub async fn store(
        &self,
        frame: &FrameEnvelope,
        verdict: &Verdict,
    ) -> Result<Stored, StoreError> {
        let mut stored = self.store_many(&[(frame, verdict)]).await?;
        Ok(stored.remove(0))
    }

    /// [`Store::store`] for several frames in one transaction (one commit, one fsync): all are stored, or
    /// none. Outcomes are in the order of `items`; a frame given twice is stored once and the second gets
    /// [`Stored::Existing`].
    pub async fn store_many(
        &self,
        items: &[(&FrameEnvelope, &Verdict)],
    ) -> Result<Vec<Stored>, StoreError> {
        let now = tierline_shared::time::now_us();
        // Images kept as objects are written before the rows that name them are committed.
        let external = self.keep_images && self.images.external();
        if external {
            for &(frame, _) in items {
                self.images.put(&Images::key(frame), &frame.image).await?;
            }
        }
        let outcomes: Vec<(bool, Option<VerdictRow>)> = on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(self.err("store"))?;
            let mut outcomes = Vec::with_capacity(items.len());
            let mut versions: Vec<(&str, &str)> = Vec::new();
            for &(frame, verdict) in items {
                let scores = serde_json::to_string(
                    &verdict
                        .scores
                        .iter()
                        .map(|c| (c.class_name.as_str(), c.probability))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_else(|_| "[]".into());
                let regions = regions_to_json(&verdict.regions);
                let image = (self.keep_images && !external).then_some(&frame.image);
                let image_ref = if external {
                    Images::key(frame)
                } else {
                    String::new()
                };
                let image_bytes = if self.keep_images {
                    frame.image.len() as i64
                } else {
                    0
                };
                let local_action = tierline_shared::action::local_action(frame)
                    .map(Action::as_str)
                    .unwrap_or_default();
                let mut incarnation = frame.incarnation.clone();
                let mut conflict = false;
                loop {
                    let stored = sqlx::query(INSERT_FRAME)
                        .bind(&frame.edge_id)
                        .bind(frame.seq as i64)
                        .bind(&frame.frame_id)
                        .bind(&frame.site)
                        .bind(&frame.line)
                        .bind(&frame.camera_id)
                        .bind(frame.capture_time_us)
                        .bind(frame.reason)
                        .bind(f64::from(frame.edge_score))
                        .bind(&frame.edge_model_version)
                        .bind(frame.encoding)
                        .bind(image)
                        .bind(image_bytes)
                        .bind(now)
                        .bind(local_action)
                        .bind(&incarnation)
                        .bind(&frame.image_sha256)
                        .bind(&frame.part_id)
                        .bind(&frame.origin)
                        .bind(frame.capture_clock().name())
                        .bind(&image_ref)
                        .execute(&mut *tx)
                        .await
                        .map_err(self.err("store"))?
                        .rows_affected();
                    if stored > 0 || conflict {
                        break;
                    }
                    // The key holds another image: a different frame (see the module doc).
                    conflict = true;
                    incarnation = conflict_incarnation(frame);
                }
                let new = sqlx::query(INSERT_VERDICT)
                    .bind(&frame.edge_id)
                    .bind(frame.seq as i64)
                    .bind(&verdict.cloud_model_version)
                    .bind(&verdict.label)
                    .bind(verdict.defective)
                    .bind(f64::from(verdict.defect_score))
                    .bind(scores.as_str())
                    .bind(&verdict.error)
                    .bind(verdict.verdict_time_us)
                    .bind(&self.worker)
                    .bind(&incarnation)
                    .bind(&frame.image_sha256)
                    .bind(regions.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err("store"))?
                    .rows_affected()
                    == 1;
                let existing = if new {
                    for version in [
                        ("cloud", verdict.cloud_model_version.as_str()),
                        ("edge", frame.edge_model_version.as_str()),
                    ] {
                        if !version.1.is_empty() && !versions.contains(&version) {
                            versions.push(version);
                        }
                    }
                    None
                } else {
                    sqlx::query_as(SELECT_VERDICT)
                        .bind(&frame.edge_id)
                        .bind(&incarnation)
                        .bind(frame.seq as i64)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(self.err("store"))?
                };
                outcomes.push((conflict, existing));
            }
            for (tier, version) in versions {
                sqlx::query(INSERT_MODEL_VERSION)
                    .bind(tier)
                    .bind(version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err("store"))?;
            }
            tx.commit().await.map_err(self.err("store"))?;
            outcomes
        });
        Ok(items
            .iter()
            .zip(outcomes)
            .map(|(&(frame, verdict), (conflict, existing))| {
                let judged = Verdict {
                    incarnation: frame.incarnation.clone(),
                    image_sha256: frame.image_sha256.clone(),
                    ..verdict.clone()
                };
                match existing {
                    Some(r) => Stored::Existing(to_verdict(frame, r)),
                    None if conflict => Stored::Conflict(judged),
                    None => Stored::New(judged),
                }
            })
            .collect())
    }

    /// Number of stored verdicts.
    pub async fn verdict_count(&self) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM verdicts"
        )
        .fetch_one(pool)
        .await
        .map_err(self.err("count"))?);
        Ok(n as u64)
    }
}

/// Decodes `scores_json` (`[[class, p], …]`); malformed JSON gives no scores.
pub(super) fn scores_from_json(json: &str) -> Vec<ClassScore> {
    let scores: Vec<(String, f32)> = serde_json::from_str(json).unwrap_or_default();
    scores
        .into_iter()
        .map(|(class_name, probability)| ClassScore {
            class_name,
            probability,
        })
        .collect()
}

/// Encodes regions as `regions_json` (`[{x, y, w, h, class, score}, …]`).
fn regions_to_json(regions: &[wire::pb::Region]) -> String {
    let regions: Vec<Region> = regions.iter().map(Region::from).collect();
    serde_json::to_string(&regions).unwrap_or_else(|_| "[]".into())
}

/// Decodes `regions_json`; malformed JSON gives no regions.
pub(super) fn regions_from_json(json: &str) -> Vec<wire::pb::Region> {
    let regions: Vec<Region> = serde_json::from_str(json).unwrap_or_default();
    regions.iter().map(Into::into).collect()
}

/// A stored verdict as sent again for `frame` (a repeated delivery of the frame it judged).
fn to_verdict(frame: &FrameEnvelope, r: VerdictRow) -> Verdict {
    Verdict {
        protocol_version: wire::PROTOCOL_VERSION,
        edge_id: frame.edge_id.clone(),
        seq: frame.seq,
        incarnation: frame.incarnation.clone(),
        image_sha256: r.image_sha256,
        frame_id: r.frame_id,
        cloud_model_version: r.cloud_model_version,
        scores: scores_from_json(&r.scores_json),
        label: r.label,
        defective: r.defective,
        defect_score: r.defect_score as f32,
        verdict_time_us: r.verdict_time_us,
        error: r.error,
        redelivery: true,
        regions: regions_from_json(&r.regions_json),
    }
}
