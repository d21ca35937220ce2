//! The reconciler: makes sure every playback reaches a terminal state in bounded time even when
//! its worker dies or no worker ever takes it (ADR 0001).
//!
//! Every `RECONCILE_INTERVAL_SEC` it fails `RECORDING`/`PROCESSING` playbacks with no status for
//! `STALE_PLAYBACK_SEC` (`worker_lost`) and `PENDING` ones older than `PENDING_TIMEOUT_SEC`
//! (`not_started`). Each verdict is written with a `playback.failed` outbox row (worker
//! `event-api`) in the same transaction, so other subscribers learn it.
//!
//! A verdict is a presumption (nobody reported), not an observation: a later report from the
//! playback's worker replaces it (`store::playbacks::decide`). And silence only counts while
//! event-api could have heard a report: no verdict is given unless event-api's own NATS
//! connection has been up for at least `STALE_PLAYBACK_SEC`. [`reconcile_once`] takes the current
//! time and that span as parameters, so tests move time instead of sleeping.

use crate::nats_link::NatsLink;
use crate::store::playbacks::Verdict;
use crate::store::{Store, StoreError};
use camrec_shared::backoff::sleep_or_cancel;
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

/// Whether a silence can be held against a worker at `now`: event-api has been connected to
/// NATS, without interruption, for at least the stale window.
pub fn could_have_heard(
    now: DateTime<Utc>,
    nats_up_since: Option<DateTime<Utc>>,
    limits: Limits,
) -> bool {
    nats_up_since.is_some_and(|since| since <= before(now, limits.stale_playback))
}

/// One pass at time `now`, NATS connected since `nats_up_since` (`None`: disconnected).
pub async fn reconcile_once(
    store: &Store,
    now: DateTime<Utc>,
    nats_up_since: Option<DateTime<Utc>>,
    limits: Limits,
) -> Result<Vec<Verdict>, StoreError> {
    if !could_have_heard(now, nats_up_since, limits) {
        tracing::debug!("NATS not connected for the whole stale window; no verdicts");
        return Ok(Vec::new());
    }
    let verdicts = store
        .reconcile(
            now,
            before(now, limits.stale_playback),
            before(now, limits.pending_timeout),
        )
        .await?;
    for v in &verdicts {
        tracing::warn!(playback_id = %v.playback_id, code = v.code.as_str(), "playback presumed failed by the reconciler");
        metrics::counter!("reconciler_failed_total", "code" => v.code.as_str()).increment(1);
    }
    Ok(verdicts)
}

/// Runs a pass every `interval` until `shutdown`.
pub async fn run(
    store: Store,
    nats: NatsLink,
    limits: Limits,
    interval: Duration,
    shutdown: CancellationToken,
) {
    while sleep_or_cancel(interval, &shutdown).await {
        if let Err(e) = reconcile_once(&store, Utc::now(), nats.up_since(), limits).await {
            tracing::warn!(error = %e, "reconciler pass failed");
        }
    }
    tracing::info!("reconciler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_while_nats_was_up_for_the_whole_window() {
        let limits = Limits {
            stale_playback: Duration::from_secs(120),
            pending_timeout: Duration::from_secs(900),
        };
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        assert!(!could_have_heard(now, None, limits), "disconnected");
        assert!(!could_have_heard(now, ago(30), limits), "back for 30 s");
        assert!(could_have_heard(now, ago(120), limits));
        assert!(could_have_heard(now, ago(3600), limits));
    }
}
