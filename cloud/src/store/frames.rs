//! Frames as the review API reads them: each stored frame joined with its verdict and its latest human
//! label, listed with filters and paging, one at a time with its image and reviews, or as the feed of new
//! verdicts.

use super::reviews::ReviewRow;
use super::verdicts::{regions_from_json, scores_from_json};
use super::{Pool, Store, StoreError};
use sqlx::FromRow;
use tierline_shared::wire::ClassScore;

/// Filters and paging of [`Store::list_frames`].
#[derive(Debug, Clone, Default)]
pub struct FrameFilter {
    /// Only this edge (empty: all).
    pub edge_id: String,
    /// Only this line (empty: all).
    pub line: String,
    /// Only this cloud label (empty: all).
    pub label: String,
    /// Only frames of this part (empty: all).
    pub part_id: String,
    /// Only frames of this camera (empty: all).
    pub camera_id: String,
    /// Only frames judged by this model version, of the prescreen or of the cloud model (empty: all).
    pub model_version: String,
    /// Captured at or after (0: unbounded).
    pub since_us: i64,
    /// Captured before (0: unbounded).
    pub until_us: i64,
    /// Only frames where the edge's local action contradicts the cloud verdict.
    pub disagreement: bool,
    /// Only frames without a human review.
    pub unreviewed: bool,
    /// Only frames with a human review.
    pub reviewed: bool,
    /// Page size (1..=1000).
    pub limit: u32,
    /// Continue after this frame: `(capture_time_us, edge_id, seq)` of the last row of the previous page.
    pub after: Option<(i64, String, u64)>,
}

/// One frame with its verdict, as listed for review.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct FrameRow {
    /// Edge id.
    pub edge_id: String,
    /// The edge outbox incarnation that numbered the frame ("" from edges that predate it; with a
    /// `#<hash prefix>` suffix for a frame that arrived under the key of another image).
    pub incarnation: String,
    /// Per-edge sequence number.
    pub seq: i64,
    /// `<edge_id>-<seq>`.
    pub frame_id: String,
    /// Site.
    pub site: String,
    /// Production line.
    pub line: String,
    /// Camera.
    pub camera_id: String,
    /// Capture time, µs since the epoch.
    pub capture_time_us: i64,
    /// Wire `ForwardReason`.
    pub reason: i32,
    /// Prescreen score.
    pub edge_score: f64,
    /// Prescreen model version.
    pub edge_model_version: String,
    /// The edge's local decision when the verdict was late ("" otherwise).
    pub edge_local_action: String,
    /// Times the frame was delivered.
    pub deliveries: i64,
    /// Wire `ImageEncoding`.
    pub image_encoding: i32,
    /// Whether the image bytes are still stored.
    pub has_image: bool,
    /// Cloud label.
    pub label: String,
    /// Cloud: defective.
    pub defective: bool,
    /// Cloud defect score.
    pub defect_score: f64,
    /// Cloud model version.
    pub cloud_model_version: String,
    /// Verdict time, µs.
    pub verdict_time_us: i64,
    /// Class probabilities, JSON `[[class, p], …]`.
    pub scores_json: String,
    /// Local action contradicts the verdict.
    pub disagreement: bool,
    /// Latest human label ("" if none).
    pub review_label: String,
    /// The part the frame shows ("" when it was not taken on a part trigger).
    pub part_id: String,
    /// The file or stream URL (password removed) the frame came from ("" when not reported).
    pub origin: String,
    /// Where the capture time came from: "arrival" or "stream".
    pub capture_clock: String,
    /// Where the cloud model found defects, JSON `[{x, y, w, h, class, score}, …]`.
    pub regions_json: String,
    /// How urgently a person should look at it, most urgent first: see [`Urgency`].
    pub urgency: i32,
}

/// Why a frame needs a person, in the order the review queue serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// The edge's local decision contradicts the cloud's verdict.
    Disagreement = 0,
    /// An audit sample (passed by the edge) the cloud judged defective: a prescreen miss.
    AuditMiss = 1,
    /// The cloud's defect score lies in the band [`LOW_CONFIDENCE`]: the verdict is unsure.
    LowConfidence = 2,
    /// Any other frame.
    Other = 3,
}

/// The cloud defect scores whose verdicts count as low-confidence for review.
pub const LOW_CONFIDENCE: (f64, f64) = (0.3, 0.7);

impl FrameRow {
    /// Why it needs a person.
    pub fn urgency(&self) -> Urgency {
        match self.urgency {
            0 => Urgency::Disagreement,
            1 => Urgency::AuditMiss,
            2 => Urgency::LowConfidence,
            _ => Urgency::Other,
        }
    }

    /// The class probabilities.
    pub fn scores(&self) -> Vec<ClassScore> {
        scores_from_json(&self.scores_json)
    }

    /// Where the cloud model found defects, in frame pixels.
    pub fn regions(&self) -> Vec<tierline_shared::wire::pb::Region> {
        regions_from_json(&self.regions_json)
    }
}

/// A frame with its image bytes (`None` when pruned or not kept) and its reviews, oldest first.
pub type FrameDetail = (FrameRow, Option<Vec<u8>>, Vec<ReviewRow>);

/// Columns of [`FrameRow`], over `frames f JOIN verdicts v`.
pub(super) const FRAME_COLUMNS: &str = "f.edge_id, f.incarnation, f.seq, f.frame_id, f.site, f.line, f.camera_id, f.capture_time_us,
    f.reason, f.edge_score, f.edge_model_version, f.edge_local_action, f.deliveries, f.image_encoding,
    (f.image IS NOT NULL OR f.image_ref != '') AS has_image, v.label, v.defective, v.defect_score, v.cloud_model_version,
    v.verdict_time_us, v.scores_json,
    (f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective)) AS disagreement,
    COALESCE((SELECT r.label FROM reviews r WHERE r.edge_id = f.edge_id AND r.incarnation = f.incarnation AND r.seq = f.seq
              ORDER BY r.id DESC LIMIT 1), '') AS review_label,
    f.part_id, f.origin, f.capture_clock, v.regions_json,
    (CASE WHEN f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective) THEN 0
          WHEN f.reason = 2 AND v.defective THEN 1
          WHEN v.defect_score >= 0.3 AND v.defect_score <= 0.7 THEN 2
          ELSE 3 END) AS urgency";

/// Frames joined with their verdicts, filtered by a [`FrameFilter`] bound as `$1`..`$11` by [`bind_filter`].
pub(super) const FROM_FILTERED: &str = "FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
     WHERE ($1 = '' OR f.edge_id = $1) AND ($2 = '' OR f.line = $2) AND ($3 = '' OR v.label = $3)
       AND ($4 = 0 OR f.capture_time_us >= $4) AND ($5 = 0 OR f.capture_time_us < $5)
       AND (NOT $6 OR (f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective)))
       AND (NOT $7 OR NOT EXISTS (SELECT 1 FROM reviews r WHERE r.edge_id = f.edge_id AND r.incarnation = f.incarnation AND r.seq = f.seq))
       AND ($8 = '' OR f.part_id = $8) AND ($9 = '' OR f.camera_id = $9)
       AND ($10 = '' OR f.edge_model_version = $10 OR v.cloud_model_version = $10)
       AND (NOT $11 OR EXISTS (SELECT 1 FROM reviews r WHERE r.edge_id = f.edge_id AND r.incarnation = f.incarnation AND r.seq = f.seq))";

/// Binds the filter of [`FROM_FILTERED`] as `$1`..`$11`.
pub(super) fn bind_filter<'q, DB, O>(
    q: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    f: &'q FrameFilter,
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(f.edge_id.clone())
        .bind(f.line.clone())
        .bind(f.label.clone())
        .bind(f.since_us)
        .bind(f.until_us)
        .bind(f.disagreement)
        .bind(f.unreviewed)
        .bind(f.part_id.clone())
        .bind(f.camera_id.clone())
        .bind(f.model_version.clone())
        .bind(f.reviewed)
}

impl Store {
    /// Frames with verdicts, newest capture first, filtered and paged.
    pub async fn list_frames(&self, f: &FrameFilter) -> Result<Vec<FrameRow>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} {FROM_FILTERED}
               AND (NOT $12 OR f.capture_time_us < $13
                    OR (f.capture_time_us = $13 AND (f.edge_id < $14 OR (f.edge_id = $14 AND f.seq < $15))))
             ORDER BY f.capture_time_us DESC, f.edge_id DESC, f.seq DESC
             LIMIT $16"
        );
        let (after_t, after_edge, after_seq) = f.after.clone().unwrap_or_default();
        let limit = i64::from(f.limit.clamp(1, 1000));
        on_pool!(self, |pool| bind_filter(sqlx::query_as(&sql), f)
            .bind(f.after.is_some())
            .bind(after_t)
            .bind(after_edge.as_str())
            .bind(after_seq as i64)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(self.err("list frames")))
    }

    /// One frame with its verdict, its image bytes (`None` when pruned or not kept) and its reviews. When
    /// several outbox incarnations of the edge numbered a frame `seq`, the one received last.
    pub async fn get_frame(
        &self,
        edge_id: &str,
        seq: u64,
    ) -> Result<Option<FrameDetail>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
             WHERE f.edge_id = $1 AND f.seq = $2 ORDER BY f.received_us DESC LIMIT 1"
        );
        on_pool!(self, |pool| {
            let row: Option<FrameRow> = sqlx::query_as(&sql)
                .bind(edge_id)
                .bind(seq as i64)
                .fetch_optional(pool)
                .await
                .map_err(self.err("get frame"))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let (image, image_ref): (Option<Vec<u8>>, String) = sqlx::query_as(
                "SELECT image, image_ref FROM frames WHERE edge_id = $1 AND incarnation = $2 AND seq = $3",
            )
            .bind(edge_id)
            .bind(&row.incarnation)
            .bind(seq as i64)
            .fetch_one(pool)
            .await
            .map_err(self.err("get frame"))?;
            let image = match image {
                Some(bytes) => Some(bytes),
                None if !image_ref.is_empty() => self.images.get(&image_ref).await?,
                None => None,
            };
            let reviews: Vec<ReviewRow> = sqlx::query_as(
                "SELECT label, defective, reviewer, note, time_us FROM reviews
                 WHERE edge_id = $1 AND incarnation = $2 AND seq = $3 ORDER BY id",
            )
            .bind(edge_id)
            .bind(&row.incarnation)
            .bind(seq as i64)
            .fetch_all(pool)
            .await
            .map_err(self.err("get frame"))?;
            Ok(Some((row, image, reviews)))
        })
    }

    /// Verdicts stored with `verdict_time_us > since_us`, oldest first, at most `limit`.
    pub async fn verdicts_since(
        &self,
        since_us: i64,
        edge_id: &str,
        limit: u32,
    ) -> Result<Vec<FrameRow>, StoreError> {
        let sql = format!(
            "SELECT {FRAME_COLUMNS} FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
             WHERE v.verdict_time_us > $1 AND ($2 = '' OR v.edge_id = $2)
             ORDER BY v.verdict_time_us, v.edge_id, v.seq LIMIT $3"
        );
        on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(since_us)
            .bind(edge_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(self.err("watch verdicts")))
    }
}
