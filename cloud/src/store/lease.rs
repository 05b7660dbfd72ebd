//! Leader leases for jobs that must run once across workers (retention). One row per job; its `token` only
//! grows and is the fencing token: a write guarded by a lease checks the token in its own transaction
//! (`CHECK_FENCE`), so a worker that lost its lease cannot write.

use super::{Pool, Store, StoreError};
use std::time::Duration;

/// A held leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Job name.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// Fencing token: grows with every change of holder.
    pub token: i64,
    /// Expiry, µs since the epoch.
    pub expires_us: i64,
}

/// Takes or renews a lease; returns the row only if `$2` holds it afterwards.
const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, token, expires_us) VALUES ($1, $2, 1, $3)
     ON CONFLICT (name) DO UPDATE SET
       token = CASE WHEN leases.holder = excluded.holder AND leases.expires_us > $4 THEN leases.token ELSE leases.token + 1 END,
       holder = excluded.holder,
       expires_us = excluded.expires_us
     WHERE leases.holder = excluded.holder OR leases.expires_us <= $4
     RETURNING token";

/// Locks the lease row for the rest of the transaction if `$2` is still its token (the fence).
pub(super) const CHECK_FENCE: &str =
    "UPDATE leases SET token = token WHERE name = $1 AND token = $2";

impl Store {
    /// Takes the lease `name` for `holder` until `now_us + ttl`, or renews it if `holder` has it.
    /// `None` when someone else holds an unexpired lease.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now_us: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let expires_us = now_us.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let token: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(ACQUIRE_LEASE)
            .bind(name)
            .bind(holder)
            .bind(expires_us)
            .bind(now_us)
            .fetch_optional(pool)
            .await
            .map_err(self.err("acquire lease"))?);
        Ok(token.map(|token| Lease {
            name: name.into(),
            holder: holder.into(),
            token,
            expires_us,
        }))
    }

    /// Gives a lease up early (if it is still ours), so another worker can take it without waiting.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE leases SET expires_us = 0 WHERE name = $1 AND token = $2"
        )
        .bind(&lease.name)
        .bind(lease.token)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(self.err("release lease"))?);
        Ok(())
    }
}
