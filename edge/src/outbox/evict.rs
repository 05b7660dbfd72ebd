//! The eviction order of the disk budget, and the deletes it makes (see the spec in [`super`]).

use super::Eviction;
use tierline_shared::wire::ForwardReason;

/// Whether a record ranks below another in the eviction order: audit samples below suspects, then lower
/// scores below higher ones. Among equals the stored (older) record goes first, so `false`.
pub fn ranks_below(
    reason: ForwardReason,
    score: f32,
    other_reason: ForwardReason,
    other_score: f32,
) -> bool {
    let audit = reason == ForwardReason::Audit;
    let other_audit = other_reason == ForwardReason::Audit;
    (audit && !other_audit) || (audit == other_audit && score < other_score)
}

pub(super) async fn delete(conn: &mut sqlx::SqliteConnection, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox_image WHERE seq = ?")
        .bind(seq as i64)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM outbox WHERE seq = ?")
        .bind(seq as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Rows the `evicted` audit table keeps: the most recent evictions (the total is counted in `meta`).
pub const EVICTED_KEPT: i64 = 10_000;

pub(super) async fn record_eviction(
    conn: &mut sqlx::SqliteConnection,
    e: &Eviction,
    bytes: u64,
) -> Result<(), sqlx::Error> {
    // Bounded: the oldest rows beyond the last EVICTED_KEPT go (by time; seqs restart with a new outbox).
    sqlx::query(
        "DELETE FROM evicted WHERE evicted_us < (SELECT evicted_us FROM evicted ORDER BY evicted_us DESC LIMIT 1 OFFSET ?)",
    )
    .bind(EVICTED_KEPT - 1)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT OR REPLACE INTO evicted (seq, reason, score, bytes, evicted_us) VALUES (?, ?, ?, ?, ?)")
        .bind(e.seq as i64)
        .bind(e.reason as i32)
        .bind(f64::from(e.score))
        .bind(bytes as i64)
        .bind(tierline_shared::time::now_us())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
