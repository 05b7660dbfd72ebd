//! Verdict storage (SQLite through sqlx). Storing is idempotent: the key is `(edge_id, seq)`, a frame
//! delivered again is counted in `frames.deliveries` and answered with the verdict already stored, never
//! stored twice.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;
use tierline_shared::wire::{self, ClassScore, FrameEnvelope, Verdict};

/// Errors from the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("verdict store {url} failed during {op}: {source}")]
    Db {
        /// Database URL.
        url: String,
        /// What was being done.
        op: &'static str,
        /// Database error.
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error(
        "verdict store {url} cannot be migrated: {source}; it may belong to a newer Tierline version"
    )]
    Migrate {
        /// Database URL.
        url: String,
        /// Migration error.
        source: sqlx::migrate::MigrateError,
    },
}

/// The outcome of storing a verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The verdict was stored now.
    New(Verdict),
    /// A verdict for this frame already existed; this is it.
    Existing(Verdict),
}

/// The verdict store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    url: String,
    keep_images: bool,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at a `sqlite://` URL.
    pub async fn open(url: &str, keep_images: bool) -> Result<Self, StoreError> {
        let err = |op| {
            let url = url.to_string();
            move |source| StoreError::Db { url, op, source }
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(err("open"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(err("open"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: url.to_string(),
                source,
            })?;
        Ok(Self {
            pool,
            url: url.to_string(),
            keep_images,
        })
    }

    fn err(&self, op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
        let url = self.url.clone();
        move |source| StoreError::Db { url, op, source }
    }

    /// The stored verdict of `(edge_id, seq)`, counting this delivery.
    /// A non-empty `edge_local_action` (the edge decided locally meanwhile) is recorded too.
    pub async fn lookup(
        &self,
        edge_id: &str,
        seq: u64,
        edge_local_action: &str,
    ) -> Result<Option<Verdict>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.err("lookup"))?;
        let found = fetch(&mut tx, edge_id, seq)
            .await
            .map_err(self.err("lookup"))?;
        if found.is_some() {
            sqlx::query(
                "UPDATE frames SET deliveries = deliveries + 1,
                 edge_local_action = CASE WHEN ? != '' THEN ? ELSE edge_local_action END
                 WHERE edge_id = ? AND seq = ?",
            )
            .bind(edge_local_action)
            .bind(edge_local_action)
            .bind(edge_id)
            .bind(seq as i64)
            .execute(&mut *tx)
            .await
            .map_err(self.err("lookup"))?;
        }
        tx.commit().await.map_err(self.err("lookup"))?;
        Ok(found)
    }

    /// Stores the frame and its verdict unless a verdict for `(edge_id, seq)` exists already.
    pub async fn store(
        &self,
        frame: &FrameEnvelope,
        verdict: &Verdict,
    ) -> Result<Stored, StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.err("store"))?;
        let inserted = sqlx::query(
            "INSERT INTO frames (edge_id, seq, frame_id, site, line, camera_id, capture_time_us, reason, edge_score, edge_model_version, image_encoding, image, received_us, edge_local_action)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (edge_id, seq) DO UPDATE SET deliveries = deliveries + 1,
               edge_local_action = CASE WHEN excluded.edge_local_action != '' THEN excluded.edge_local_action ELSE frames.edge_local_action END",
        )
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
        .bind(self.keep_images.then_some(&frame.image))
        .bind(tierline_shared::time::now_us())
        .bind(&frame.edge_local_action)
        .execute(&mut *tx)
        .await
        .map_err(self.err("store"))?;
        let _ = inserted;
        let scores = serde_json::to_string(
            &verdict
                .scores
                .iter()
                .map(|c| (c.class_name.as_str(), c.probability))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let new = sqlx::query(
            "INSERT INTO verdicts (edge_id, seq, cloud_model_version, label, defective, defect_score, scores_json, error, verdict_time_us)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (edge_id, seq) DO NOTHING",
        )
        .bind(&verdict.edge_id)
        .bind(verdict.seq as i64)
        .bind(&verdict.cloud_model_version)
        .bind(&verdict.label)
        .bind(verdict.defective)
        .bind(f64::from(verdict.defect_score))
        .bind(scores)
        .bind(&verdict.error)
        .bind(verdict.verdict_time_us)
        .execute(&mut *tx)
        .await
        .map_err(self.err("store"))?
        .rows_affected()
            == 1;
        let outcome = if new {
            Stored::New(verdict.clone())
        } else {
            let existing = fetch(&mut tx, &verdict.edge_id, verdict.seq)
                .await
                .map_err(self.err("store"))?
                .unwrap_or_else(|| verdict.clone());
            Stored::Existing(existing)
        };
        tx.commit().await.map_err(self.err("store"))?;
        Ok(outcome)
    }

    /// Number of stored verdicts.
    pub async fn verdict_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM verdicts")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err("count"))?;
        Ok(n as u64)
    }

    /// Checks that the database answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(self.err("ping"))?;
        Ok(())
    }

    /// The connection pool (for tests and tools).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the store.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn fetch(
    conn: &mut sqlx::SqliteConnection,
    edge_id: &str,
    seq: u64,
) -> Result<Option<Verdict>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT v.cloud_model_version, v.label, v.defective, v.defect_score, v.scores_json, v.error, v.verdict_time_us, f.frame_id
         FROM verdicts v JOIN frames f ON f.edge_id = v.edge_id AND f.seq = v.seq
         WHERE v.edge_id = ? AND v.seq = ?",
    )
    .bind(edge_id)
    .bind(seq as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| {
        let scores: Vec<(String, f32)> =
            serde_json::from_str(r.get::<&str, _>("scores_json")).unwrap_or_default();
        Verdict {
            protocol_version: wire::PROTOCOL_VERSION,
            edge_id: edge_id.into(),
            seq,
            frame_id: r.get("frame_id"),
            cloud_model_version: r.get("cloud_model_version"),
            scores: scores
                .into_iter()
                .map(|(class_name, probability)| ClassScore {
                    class_name,
                    probability,
                })
                .collect(),
            label: r.get("label"),
            defective: r.get("defective"),
            defect_score: r.get::<f64, _>("defect_score") as f32,
            verdict_time_us: r.get("verdict_time_us"),
            error: r.get("error"),
            redelivery: true,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> FrameEnvelope {
        FrameEnvelope {
            protocol_version: 1,
            edge_id: "e1".into(),
            seq,
            frame_id: wire::frame_id("e1", seq),
            image: vec![1, 2, 3],
            ..FrameEnvelope::default()
        }
    }

    fn verdict(seq: u64, label: &str) -> Verdict {
        Verdict {
            protocol_version: 1,
            edge_id: "e1".into(),
            seq,
            frame_id: wire::frame_id("e1", seq),
            label: label.into(),
            defective: label != "good",
            scores: vec![ClassScore {
                class_name: label.into(),
                probability: 0.9,
            }],
            ..Verdict::default()
        }
    }

    #[tokio::test]
    async fn second_store_returns_the_first_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let s = Store::open(&url, true).await.unwrap();
        assert!(matches!(
            s.store(&frame(1), &verdict(1, "spot")).await.unwrap(),
            Stored::New(_)
        ));
        match s.store(&frame(1), &verdict(1, "good")).await.unwrap() {
            Stored::Existing(v) => {
                assert_eq!(v.label, "spot");
                assert!(v.redelivery);
                assert_eq!(v.scores[0].class_name, "spot");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.lookup("e1", 1, "reject").await.unwrap().is_some());
        assert!(s.lookup("e1", 2, "").await.unwrap().is_none());
        assert_eq!(s.verdict_count().await.unwrap(), 1);
        let deliveries: i64 = sqlx::query_scalar("SELECT deliveries FROM frames WHERE seq = 1")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(deliveries, 3);
        // The edge rejected seq 1 locally and the cloud found a spot: agreement, no disagreement row.
        let count = |s: &Store| {
            let pool = s.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM disagreements")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count(&s).await, 0);
        let mut f = frame(2);
        f.edge_local_action = "reject".into();
        s.store(&f, &verdict(2, "good")).await.unwrap();
        assert_eq!(
            count(&s).await,
            1,
            "a local reject of a good part is a disagreement"
        );
    }
}
