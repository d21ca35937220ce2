//! The outbox relay: publishes committed outbox rows to JetStream, exactly once as far as the
//! stream is concerned.
//!
//! One round is one transaction: claim up to [`BATCH`] unpublished rows, oldest first
//! (`FOR UPDATE SKIP LOCKED`, so several event-api processes may relay side by side); publish
//! each with its `Nats-Msg-Id` without waiting for each ack in turn; await the acks; mark the
//! acked rows published; commit. A row whose ack did not arrive stays unpublished and is sent
//! again by a later round; the stream's duplicate window drops the copy if the first send landed.
//!
//! A row that can never be published (larger than the server's `max_payload`, or refused by the
//! stream) is set aside as dead in the same round, with its reason, and a recording it announced
//! is failed `undeliverable`: one bad row never holds back the rows behind it. Any other failure
//! (NATS down, a timeout) stops the round; the relay backs off and tries again.
//!
//! The relay runs a round whenever `NOTIFY camrec_outbox` arrives (every transaction that adds a
//! row sends one) and at least every [`POLL`], and keeps running rounds while they come back
//! full. REST calls never wait for any of this.

use crate::store::outbox::{claim, dead_letter, mark_published, OutboxRow, NOTIFY_CHANNEL};
use crate::store::{Store, StoreError};
use async_nats::jetstream::context::{Publish, PublishError, PublishErrorKind};
use async_nats::jetstream::Context;
use async_nats::Client;
use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use futures::future::join_all;
use sqlx::postgres::PgListener;
use std::error::Error as _;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows per round, which is also the bound on unacknowledged publishes in flight.
pub const BATCH: i64 = 256;
/// The longest the relay sleeps without a notification.
pub const POLL: Duration = Duration::from_secs(1);

/// Why a relay round stopped. Its unpublished rows stay in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows the stream acknowledged.
    pub published: usize,
    /// Rows set aside as dead.
    pub dead: usize,
}

/// Why `row` can never be published, if it can be told before sending it: NATS closes the
/// connection of a client that sends more than the server's `max_payload` (0: not known yet,
/// nothing is judged).
fn too_large(row: &OutboxRow, max_payload: usize) -> Option<String> {
    // The headers carry `Nats-Msg-Id: <msg_id>`; allow generously for their framing.
    let size = row.payload.len() + row.msg_id.len() + 64;
    (max_payload > 0 && size > max_payload).then(|| {
        format!(
            "message of {} bytes exceeds the NATS max_payload of {max_payload} bytes",
            row.payload.len()
        )
    })
}

/// Whether the stream refused this one message (a JetStream API error in its ack), as opposed
/// to NATS failing (timeout, lost connection, no stream yet), which is worth retrying.
fn refused_by_stream(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::Other
        && e.source()
            .is_some_and(|s| s.downcast_ref::<async_nats::jetstream::Error>().is_some())
}

/// One round (see the module docs).
pub async fn relay_round(
    store: &Store,
    js: &Context,
    max_payload: usize,
) -> Result<Round, RelayError> {
    let mut tx = store.pool().begin().await.map_err(StoreError::from)?;
    let rows = claim(&mut tx, BATCH).await?;
    let mut round = Round {
        claimed: rows.len(),
        ..Round::default()
    };
    if rows.is_empty() {
        return Ok(round);
    }
    let mut dead: Vec<(i64, String)> = Vec::new();
    let mut pending = Vec::with_capacity(rows.len());
    let mut failure = None;
    for row in rows {
        if let Some(reason) = too_large(&row, max_payload) {
            dead.push((row.id, reason));
            continue;
        }
        let publish = Publish::build()
            .payload(row.payload.into())
            .message_id(row.msg_id);
        match js.send_publish(row.subject, publish).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let acks = join_all(
        pending
            .into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    );
    let mut published = Vec::new();
    for (id, result) in acks.await {
        match result {
            Ok(_) => published.push(id),
            Err(e) if refused_by_stream(&e) => dead.push((id, e.to_string())),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    mark_published(&mut tx, &published).await?;
    for (id, reason) in &dead {
        tracing::error!(outbox_id = id, %reason, "outbox row can never be published; set aside as dead");
        dead_letter(&mut tx, *id, reason).await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    round.published = published.len();
    round.dead = dead.len();
    metrics::counter!("outbox_published_total").increment(round.published as u64);
    metrics::counter!("outbox_dead_total").increment(round.dead as u64);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(round),
    }
}

/// Waits for a notification, [`POLL`], or shutdown. Reconnects a broken listener.
async fn wait_for_work(
    listener: &mut Option<PgListener>,
    store: &Store,
    shutdown: &CancellationToken,
) {
    if listener.is_none() {
        *listener = listen(store).await;
    }
    let Some(l) = listener else {
        sleep_or_cancel(POLL, shutdown).await;
        return;
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = tokio::time::timeout(POLL, l.recv()) => {
            if let Ok(Err(_)) = r {
                *listener = None;
            }
        }
    }
}

async fn listen(store: &Store) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(store.pool()).await.ok()?;
    listener.listen(NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}

/// Creates (or updates) the streams and creates the KV buckets event-api writes to or reads:
/// the camera catalog must exist before the relay publishes a spec into it.
async fn ensure_streams_and_buckets(
    js: &Context,
    replicas: usize,
) -> Result<(), async_nats::Error> {
    camrec_shared::streams::ensure_streams(js, replicas).await?;
    camrec_shared::streams::ensure_cameras_bucket(js, replicas).await?;
    camrec_shared::streams::ensure_captures_bucket(js, replicas).await?;
    Ok(())
}

/// Runs the relay until `shutdown`: makes sure the streams and buckets exist (retrying while
/// NATS is down), then runs rounds as described in the module docs.
pub async fn run(store: Store, nats: Client, replicas: usize, shutdown: CancellationToken) {
    let js = async_nats::jetstream::new(nats.clone());
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut streams_ready = false;
    let mut listener = None;
    while !shutdown.is_cancelled() {
        if !streams_ready {
            // While NATS is down the stream requests wait for their timeout: shutdown must not.
            let ensured = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = ensure_streams_and_buckets(&js, replicas) => r,
            };
            match ensured {
                Ok(()) => streams_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the streams yet; retrying");
                    if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let max_payload = nats.server_info().max_payload;
        let round = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = relay_round(&store, &js, max_payload) => r,
        };
        match round {
            Ok(r) => {
                backoff.reset();
                if r.claimed as i64 >= BATCH {
                    continue;
                }
                wait_for_work(&mut listener, &store, &shutdown).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay round failed; its rows stay unpublished");
                streams_ready = !matches!(e, RelayError::Publish(_));
                if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                    break;
                }
            }
        }
    }
    tracing::info!("outbox relay stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: usize) -> OutboxRow {
        OutboxRow {
            id: 1,
            subject: "event.created.default.x".into(),
            msg_id: "e:created".into(),
            payload: vec![b'x'; payload],
        }
    }

    #[test]
    fn a_row_over_max_payload_is_too_large_before_it_is_sent() {
        assert!(too_large(&row(1_000), 1024 * 1024).is_none());
        assert!(
            too_large(&row(1024 * 1024), 0).is_none(),
            "not connected yet"
        );
        let reason = too_large(&row(1024 * 1024), 1024 * 1024).expect("too large");
        assert!(reason.contains("max_payload"), "{reason}");
    }

    #[test]
    fn timeouts_and_broken_connections_are_not_refusals() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::Other,
        ] {
            assert!(!refused_by_stream(&PublishError::from(kind)), "{kind:?}");
        }
    }
}
