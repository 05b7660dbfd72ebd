//! The oracle: what the edge decided (its decision log) against what the cloud stored (its database).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The edge's decision log, parsed.
pub struct Decisions {
    /// Every line, in order.
    pub events: Vec<Value>,
    /// Lines that did not parse: a process killed mid-write leaves one cut-short line.
    pub torn_lines: usize,
}

impl Decisions {
    /// Reads a JSON-lines decision log.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut events = Vec::new();
        let mut torn_lines = 0;
        for l in text.lines().filter(|l| !l.is_empty()) {
            match serde_json::from_str(l) {
                Ok(v) => events.push(v),
                Err(_) => torn_lines += 1,
            }
        }
        Self { events, torn_lines }
    }

    /// Decision events only.
    pub fn decisions(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(|e| e["event"] == "decision")
    }

    /// Events of a given kind.
    pub fn of(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(move |e| e["event"] == kind)
    }

    /// Decision count per seq.
    pub fn per_seq(&self) -> BTreeMap<u64, usize> {
        let mut m = BTreeMap::new();
        for d in self.decisions() {
            *m.entry(d["seq"].as_u64().expect("seq")).or_insert(0) += 1;
        }
        m
    }

    /// Seqs of suspects: decided by the cloud or by local fallback after being accepted.
    pub fn suspect_seqs(&self) -> BTreeSet<u64> {
        self.decisions()
            .filter(|d| {
                d["source"] == "cloud"
                    || (d["source"] == "local-fallback" && d.get("detail").is_none())
            })
            .map(|d| d["seq"].as_u64().expect("seq"))
            .collect()
    }
}

/// What the cloud stored.
pub struct Stored {
    /// Verdict rows per (edge_id, seq).
    pub verdicts: BTreeMap<(String, u64), u64>,
    /// Deliveries per (edge_id, seq), as counted by the cloud.
    pub deliveries: BTreeMap<(String, u64), u64>,
}

impl Stored {
    /// Reads the cloud's SQLite store.
    pub async fn read(db: &Path) -> Self {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open cloud db");
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT edge_id, seq, COUNT(*) FROM verdicts GROUP BY edge_id, seq")
                .fetch_all(&pool)
                .await
                .expect("verdicts");
        let verdicts = rows
            .into_iter()
            .map(|(e, s, n)| ((e, s as u64), n as u64))
            .collect();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT edge_id, seq, deliveries FROM frames")
                .fetch_all(&pool)
                .await
                .expect("frames");
        let deliveries = rows
            .into_iter()
            .map(|(e, s, n)| ((e, s as u64), n as u64))
            .collect();
        pool.close().await;
        Self {
            verdicts,
            deliveries,
        }
    }

    /// Total deliveries beyond the first, over all frames.
    pub fn duplicate_deliveries(&self) -> u64 {
        self.deliveries.values().map(|n| n.saturating_sub(1)).sum()
    }
}
