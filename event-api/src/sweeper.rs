//! Housekeeping: the object-deletion sweeper deletes the objects queued in `object_deletions`
//! (deleted playbacks' clips, thumbnails, segment lists, and every live segment under a queued
//! prefix: a key ending in `/`) through [`Storage`], retrying failures with a capped backoff (an
//! object that is already gone counts as deleted); and published outbox rows older than
//! [`OUTBOX_RETENTION`] (the streams' own retention) are purged.

use crate::store::{Store, StoreError};
use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::storage::Storage;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 100;
/// How long published outbox rows are kept: as long as the streams keep the messages.
pub const OUTBOX_RETENTION: Duration = camrec_shared::streams::MAX_AGE;
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// The delay before retry number `attempts + 1`: 10 s doubling, at most an hour.
pub fn retry_delay(attempts: i32) -> Duration {
    let attempt = u32::try_from(attempts).unwrap_or(0);
    nth_delay(attempt, Duration::from_secs(10), MAX_RETRY)
}

/// Deletes what is due at `now`; returns how many objects were deleted (or already gone).
pub async fn sweep_once(
    store: &Store,
    storage: &Storage,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut done = 0;
    for (key, attempts) in store.due_deletions(now, BATCH).await? {
        match delete(storage, &key).await {
            Ok(()) => {
                store.deletion_done(&key).await?;
                done += 1;
            }
            Err(e) => {
                tracing::warn!(%key, attempts, error = %e, "object deletion failed; will retry");
                let retry_at = now
                    + chrono::Duration::from_std(retry_delay(attempts))
                        .unwrap_or(chrono::Duration::hours(1));
                store
                    .deletion_failed(&key, retry_at, "object store error")
                    .await?;
            }
        }
    }
    Ok(done)
}

/// Deletes the object `key`, or every object under it when it ends in `/`. Gone already is done.
async fn delete(storage: &Storage, key: &str) -> Result<(), object_store::Error> {
    let objects = storage.store();
    let paths: Vec<ObjectPath> = if key.ends_with('/') {
        let prefix = ObjectPath::from(key);
        objects
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?
    } else {
        vec![ObjectPath::from(key)]
    };
    for path in paths {
        match objects.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs a sweep (and the outbox purge) every `interval` until `shutdown`.
pub async fn run(store: Store, storage: Storage, interval: Duration, shutdown: CancellationToken) {
    let retention =
        chrono::Duration::from_std(OUTBOX_RETENTION).unwrap_or(chrono::Duration::days(7));
    gauge_outbox(&store).await;
    while sleep_or_cancel(interval, &shutdown).await {
        let now = Utc::now();
        if let Err(e) = sweep_once(&store, &storage, now).await {
            tracing::warn!(error = %e, "object deletion sweep failed");
        }
        if let Err(e) = store.purge_published_outbox(now - retention).await {
            tracing::warn!(error = %e, "outbox purge failed");
        }
        gauge_outbox(&store).await;
    }
    tracing::info!("object deletion sweeper stopped");
}

/// Sets the `outbox_backlog` and `outbox_dead` gauges (here, once a pass, rather than at every
/// `/metrics` scrape).
async fn gauge_outbox(store: &Store) {
    if let Ok(backlog) = store.outbox_backlog().await {
        metrics::gauge!("outbox_backlog").set(backlog as f64);
    }
    if let Ok(dead) = store.outbox_dead().await {
        metrics::gauge!("outbox_dead").set(dead as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::from_secs(10));
        assert_eq!(retry_delay(1), Duration::from_secs(20));
        assert_eq!(retry_delay(30), MAX_RETRY);
    }
}
