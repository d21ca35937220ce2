//! The reconciler: makes sure every playback reaches a terminal state in bounded time even when
//! its worker dies or no worker ever takes it (ADR 0001).
//!
//! Every `RECONCILE_INTERVAL_SEC` it fails `RECORDING`/`PROCESSING` playbacks with no status for
//! `STALE_PLAYBACK_SEC` (`worker_lost`) and `PENDING` ones older than `PENDING_TIMEOUT_SEC`
//! (`not_started`). Each verdict is written with a `playback.failed` outbox row (worker
//! `event-api`) in the same transaction, so other subscribers learn it. [`reconcile_once`] takes
//! the current time as a parameter, so tests move time instead of sleeping.

use camrec_shared::backoff::sleep_or_cancel;
use crate::store::playbacks::Verdict;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub stale_playback: Duration,
    pub pending_timeout: Duration,
}

fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One pass at time `now`.
pub async fn reconcile_once(
    store: &Store,
    now: DateTime<Utc>,
    limits: Limits,
) -> Result<Vec<Verdict>, StoreError> {
    let verdicts = store
        .reconcile(
            now,
            before(now, limits.stale_playback),
            before(now, limits.pending_timeout),
        )
        .await?;
    for v in &verdicts {
        tracing::warn!(playback_id = %v.playback_id, code = v.code.as_str(), "playback failed by the reconciler");
        metrics::counter!("reconciler_failed_total", "code" => v.code.as_str()).increment(1);
    }
    Ok(verdicts)
}

/// Runs a pass every `interval` until `shutdown`.
pub async fn run(store: Store, limits: Limits, interval: Duration, shutdown: CancellationToken) {
    while sleep_or_cancel(interval, &shutdown).await {
        if let Err(e) = reconcile_once(&store, Utc::now(), limits).await {
            tracing::warn!(error = %e, "reconciler pass failed");
        }
    }
    tracing::info!("reconciler stopped");
}
