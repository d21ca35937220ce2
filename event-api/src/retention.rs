//! The retention sweeper: deletes finished playbacks older than their camera's `retentionDays`
//! (or the global `RETENTION_DAYS`; neither set: kept), in batches, through the same soft delete
//! and object-deletion queue as `DELETE /playbacks/:id` (the object sweeper, `crate::sweeper`,
//! then removes the clips). It never deletes faster than its configured rate: a pass deletes at
//! most one batch and passes are [`pause`] apart. Each pass is logged and counted
//! (`retention_deleted_total`).

use crate::store::{Store, StoreError};
use camrec_shared::backoff::sleep_or_cancel;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The retention rules and the speed limit.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// For cameras without their own `retentionDays`; `None`: keep.
    pub default_days: Option<u32>,
    /// Playbacks deleted per pass.
    pub batch: u32,
    /// The most playbacks deleted in any minute.
    pub max_per_minute: u32,
}

/// The wait between passes that keeps `batch`-sized passes within `max_per_minute`.
pub fn pause(batch: u32, max_per_minute: u32) -> Duration {
    Duration::from_secs(60) * batch / max_per_minute.max(1)
}

/// One pass at `now`: deletes at most one batch of expired playbacks; returns how many.
pub async fn sweep_once(
    store: &Store,
    rules: Retention,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let ids = store
        .delete_expired_playbacks(now, rules.default_days, i64::from(rules.batch))
        .await?;
    if !ids.is_empty() {
        metrics::counter!("retention_deleted_total").increment(ids.len() as u64);
        tracing::info!(deleted = ids.len(), "retention deleted expired playbacks");
    }
    Ok(ids.len())
}

/// Runs a pass every [`pause`] until `shutdown`.
pub async fn run(store: Store, rules: Retention, shutdown: CancellationToken) {
    let every = pause(rules.batch, rules.max_per_minute);
    while sleep_or_cancel(every, &shutdown).await {
        if let Err(e) = sweep_once(&store, rules, Utc::now()).await {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }
    tracing::info!("retention sweeper stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_spaced_to_keep_the_rate() {
        assert_eq!(pause(100, 600), Duration::from_secs(10));
        assert_eq!(pause(10, 60), Duration::from_secs(10));
        assert_eq!(pause(1, 6000), Duration::from_millis(10));
        // A batch larger than a minute's allowance waits longer than a minute.
        assert_eq!(pause(120, 60), Duration::from_secs(120));
    }
}
