//! The status projector: applies the workers' `playback.*` messages to the `playbacks` table.
//!
//! It reads `PLAYBACKS` through the durable pull consumer [`CONSUMER`] (filter `playback.>`,
//! explicit acks). Each message is applied in one statement only when its `seq` is newer than
//! the last applied one and the transition is allowed (ADR 0001), so duplicates, redeliveries,
//! reordering and a full replay all leave the same table. The ack rules live in [`handle`]:
//! ack after the database commit; an undecodable message is terminated (never redelivered) and
//! counted; a status for an unknown playback is acked and ignored; a database error naks the
//! message for redelivery and backs the loop off.
//!
//! A status is heard only from the worker that owns its playback ([`decide`]): the one that
//! reported it first, on a subject of the camera's site. NATS lets each site's worker user
//! publish on its own site's subjects only, so the subject's site is checked against the
//! message's, and the message's against the camera's. A refused status is acked (it can never
//! apply), logged once here and counted (`projector_refused_total{reason}`).
//!
//! [`decide`]: crate::store::playbacks::decide

use crate::playbacks_feed::FeedError;
use crate::store::playbacks::{Applied, Refusal};
use crate::store::Store;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{Context, Message};
use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use camrec_shared::messages::{Envelope, PlaybackStatus};
use camrec_shared::subjects::Subject;
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The durable consumer name.
pub const CONSUMER: &str = "event-api-projector";

/// Decides and performs the ack of one message (see the module docs).
pub async fn handle(store: &Store, msg: &Message) -> Result<(), FeedError> {
    let status = match Envelope::<PlaybackStatus>::from_slice(&msg.payload) {
        Ok(env) => env.payload,
        Err(e) => {
            metrics::counter!("projector_ignored_total", "reason" => "undecodable").increment(1);
            tracing::warn!(subject = %msg.subject, error = %e, "undecodable status message terminated");
            msg.ack_with(AckKind::Term).await.map_err(FeedError::Ack)?;
            return Ok(());
        }
    };
    let subject_site = match Subject::parse(&msg.subject) {
        Ok(Subject::Playback { site, .. }) => Some(site),
        _ => None,
    };
    let applied = if subject_site.as_ref() == Some(&status.site) {
        store.apply_status(&status).await
    } else {
        Ok(Applied::Refused(Refusal::WrongSite))
    };
    match applied {
        Ok(Applied::Applied) => {
            metrics::counter!("projector_applied_total").increment(1);
            tracing::debug!(playback_id = %status.playback_id, seq = status.seq, status = ?status.body.kind(), "status applied");
        }
        Ok(Applied::Overrode(presumed)) => {
            metrics::counter!("projector_presumption_overridden_total", "code" => presumed.as_str())
                .increment(1);
            tracing::info!(playback_id = %status.playback_id, presumed = presumed.as_str(),
                worker_id = %status.worker_id, status = ?status.body.kind(),
                "the worker reported after the reconciler presumed the playback failed; its report wins");
        }
        Ok(Applied::Refused(why)) => {
            metrics::counter!("projector_refused_total", "reason" => why.as_str()).increment(1);
            tracing::warn!(subject = %msg.subject, playback_id = %status.playback_id,
                worker_id = %status.worker_id, site = %status.site, reason = why.as_str(),
                "status refused: not from the worker that owns the playback");
        }
        Ok(Applied::Ignored) => {
            metrics::counter!("projector_ignored_total", "reason" => "stale_or_not_allowed")
                .increment(1);
            tracing::debug!(playback_id = %status.playback_id, seq = status.seq, "status ignored");
        }
        Err(e) => {
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return Err(e.into());
        }
    }
    msg.ack().await.map_err(FeedError::Ack)
}

async fn run_once(store: &Store, js: &Context, replicas: usize) -> Result<(), FeedError> {
    let mut messages = crate::playbacks_feed::messages(js, replicas, CONSUMER).await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        handle(store, &msg).await?;
    }
    Ok(())
}

/// Runs the projector until `shutdown`, restarting the consumer after errors (NATS down,
/// database errors) with a capped backoff.
pub async fn run(store: Store, js: Context, replicas: usize, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = run_once(&store, &js, replicas) => r,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "status projector restarting");
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            break;
        }
    }
    tracing::info!("status projector stopped");
}
