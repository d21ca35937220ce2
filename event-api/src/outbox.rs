//! The outbox relay: publishes committed outbox rows to JetStream, exactly once as far as the
//! stream is concerned.
//!
//! Each round claims up to [`BATCH`] unpublished rows (`FOR UPDATE SKIP LOCKED`, so several
//! event-api processes may relay side by side), sends them all with their `Nats-Msg-Id` without
//! waiting for each ack in turn (at most [`BATCH`] in flight), then awaits the acks and marks the
//! acked rows published in the same transaction. A row whose ack did not arrive stays unpublished
//! and is sent again later; the server's duplicate window drops the copy if the first send did
//! land. The relay wakes on `NOTIFY camrec_outbox` (sent by every transaction that adds a row)
//! and polls every second in case a notification was missed. NATS errors back off (capped);
//! REST calls never wait for any of this.

use crate::backoff::{sleep_or_cancel, Backoff};
use crate::store::outbox::{claim, mark_published, NOTIFY_CHANNEL};
use crate::store::{Store, StoreError};
use async_nats::jetstream::context::{Publish, PublishError};
use async_nats::jetstream::Context;
use futures::future::join_all;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows per round, which is also the bound on unacknowledged publishes in flight.
pub const BATCH: i64 = 64;
/// The poll interval when no notification arrives.
const POLL: Duration = Duration::from_secs(1);

/// Why a relay round failed. The rows stay unpublished either way.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
}

/// Publishes one batch; returns how many rows it claimed.
pub async fn relay_once(store: &Store, js: &Context) -> Result<usize, RelayError> {
    let mut tx = store.pool().begin().await?;
    let rows = claim(&mut tx, BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for row in &rows {
        let publish = Publish::build()
            .payload(row.payload.clone().into())
            .message_id(&row.msg_id);
        match js.send_publish(row.subject.clone(), publish).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let acks = join_all(
        pending
            .into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await;
    let mut published = Vec::with_capacity(acks.len());
    for (id, result) in acks {
        match result {
            Ok(_) => published.push(id),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if !published.is_empty() {
        mark_published(&mut tx, &published).await?;
    }
    tx.commit().await?;
    metrics::counter!("outbox_published_total").increment(published.len() as u64);
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(rows.len()),
    }
}

async fn listen(store: &Store) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(store.pool()).await.ok()?;
    listener.listen(NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}

/// Waits for a notification, the poll interval, or shutdown. Drops a broken listener so the
/// next wait reconnects it.
async fn wait_for_work(
    listener: &mut Option<PgListener>,
    store: &Store,
    shutdown: &CancellationToken,
) {
    if listener.is_none() {
        *listener = listen(store).await;
    }
    match listener {
        Some(l) => {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tokio::time::timeout(POLL, l.recv()) => {
                    if let Ok(Err(_)) = r {
                        *listener = None;
                    }
                }
            }
        }
        None => {
            sleep_or_cancel(POLL, shutdown).await;
        }
    }
}

/// Runs the relay until `shutdown`: makes sure the streams exist (retrying while NATS is
/// down), then publishes rounds as long as rows are waiting.
pub async fn run(store: Store, js: Context, replicas: usize, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut streams_ready = false;
    let mut listener = None;
    while !shutdown.is_cancelled() {
        if !streams_ready {
            if let Err(e) = camrec_shared::streams::ensure_streams(&js, replicas).await {
                tracing::warn!(error = %e, "cannot create the streams yet; retrying");
                if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                    break;
                }
                continue;
            }
            streams_ready = true;
            backoff.reset();
        }
        let round = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = relay_once(&store, &js) => r,
        };
        match round {
            Ok(n) if n as i64 >= BATCH => {
                backoff.reset();
                continue;
            }
            Ok(_) => backoff.reset(),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay round failed; the rows stay unpublished");
                if matches!(e, RelayError::Publish(_)) {
                    streams_ready = false;
                }
                if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                    break;
                }
                continue;
            }
        }
        wait_for_work(&mut listener, &store, &shutdown).await;
    }
    tracing::info!("outbox relay stopped");
}
