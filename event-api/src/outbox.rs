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
//!
//! One notification per committed row would mean one round per row, and under a burst the
//! notifications outrun the rounds: the relay would go on running empty rounds long after the
//! burst. So a wake-up takes every notification already received with it (one round covers every
//! row committed before it), and while rows keep coming (the previous round moved rows less than
//! [`BUSY_WINDOW`] ago) the relay lingers [`LINGER`] before the round so that it carries several
//! rows. A row after a quiet spell is relayed at once. The relay keeps one database connection
//! across rounds instead of taking one from the pool for each.
//!
//! While rows keep coming, notifications are pure cost: each commit makes PostgreSQL signal the
//! listening backend, which wakes to send it, and event-api wakes to read it, although the relay
//! is going to run another round anyway. So when two rounds in a row move rows, the relay
//! `UNLISTEN`s and polls every [`LINGER`] instead; the first round that finds nothing `LISTEN`s
//! again and runs once more right away (a row committed while nobody listened notified nobody)
//! before waiting (ADR 0013).

use crate::backoff::{sleep_or_cancel, Backoff};
use crate::store::outbox::{claim, mark_published, NOTIFY_CHANNEL};
use crate::store::{Store, StoreError};
use async_nats::jetstream::context::{Publish, PublishError};
use async_nats::jetstream::Context;
use futures::future::join_all;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, Postgres};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Rows per round, which is also the bound on unacknowledged publishes in flight (as many as P2's
/// baseline keeps; ADR 0014).
pub const BATCH: i64 = 256;
/// The poll interval when no notification arrives.
const POLL: Duration = Duration::from_secs(1);
/// How long a wake-up waits for more rows while rows keep coming.
pub const LINGER: Duration = Duration::from_millis(2);
/// Rows "keep coming" when the previous round moved rows less than this before the wake-up.
pub const BUSY_WINDOW: Duration = Duration::from_millis(20);
/// At most this many already-received notifications are taken with one wake-up.
const DRAIN_MAX: usize = 100_000;

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

/// Publishes one batch over `conn`; returns how many rows it claimed.
pub async fn relay_once(conn: &mut PgConnection, js: &Context) -> Result<usize, RelayError> {
    metrics::counter!("outbox_rounds_total").increment(1);
    let mut tx = conn.begin().await?;
    let rows = claim(&mut tx, BATCH).await?;
    if rows.is_empty() {
        tx.rollback().await?;
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

/// Stops the notifications (the relay polls while rows keep coming); drops a broken listener.
async fn stop_listening(listener: &mut Option<PgListener>) {
    if let Some(l) = listener {
        if l.unlisten(NOTIFY_CHANNEL).await.is_err() {
            *listener = None;
        }
    }
}

/// Listens again after polling, and forgets the notifications received before the `UNLISTEN`:
/// the round that follows covers their rows.
async fn resume_listening(listener: &mut Option<PgListener>, store: &Store) {
    match listener {
        Some(l) => {
            if l.listen(NOTIFY_CHANNEL).await.is_err() {
                *listener = None;
            }
        }
        None => *listener = listen(store).await,
    }
    drain(listener).await;
}

/// Waits for a notification, the poll interval, or shutdown. Drops a broken listener so the
/// next wait reconnects it. ([`drain`] then takes the notifications that came with it.)
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

/// Takes the notifications `listener` can return without waiting: a round after this covers
/// the rows they announce. Returns how many it took; drops a broken listener.
pub async fn drain(listener: &mut Option<PgListener>) -> usize {
    let mut taken = 0;
    while let Some(l) = listener {
        if taken >= DRAIN_MAX {
            break;
        }
        // A zero timeout polls `recv` once: it answers from what the connection has already
        // received, and gives up instead of waiting for more.
        match tokio::time::timeout(Duration::ZERO, l.recv()).await {
            Ok(Ok(_)) => taken += 1,
            Ok(Err(_)) => *listener = None,
            Err(_) => break,
        }
    }
    taken
}

/// Whether a wake-up should linger before its round: the previous round moved rows and ended
/// less than [`BUSY_WINDOW`] ago.
fn should_linger(last_moved: Option<Instant>, now: Instant) -> bool {
    last_moved.is_some_and(|t| now.saturating_duration_since(t) < BUSY_WINDOW)
}

/// The relay's connection, taken from the pool when it has none (at start, or after an error
/// dropped it).
async fn connection<'c>(
    conn: &'c mut Option<PoolConnection<Postgres>>,
    store: &Store,
) -> Result<&'c mut PgConnection, RelayError> {
    let c = match conn.take() {
        Some(c) => c,
        None => store.pool().acquire().await?,
    };
    Ok(conn.insert(c))
}

/// Runs the relay until `shutdown`: makes sure the streams exist (retrying while NATS is
/// down), then publishes rounds as long as rows are waiting.
pub async fn run(store: Store, js: Context, replicas: usize, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut streams_ready = false;
    let mut listener = None;
    let mut conn: Option<PoolConnection<Postgres>> = None;
    // When the last round that moved rows ended.
    let mut last_moved: Option<Instant> = None;
    // Polling every LINGER without listening, while rows keep coming.
    let mut polling = false;
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
            r = async { relay_once(connection(&mut conn, &store).await?, &js).await } => r,
        };
        match round {
            Ok(n) if n as i64 >= BATCH => {
                backoff.reset();
                last_moved = Some(Instant::now());
                continue;
            }
            Ok(n) => {
                backoff.reset();
                if n > 0 {
                    let now = Instant::now();
                    let keeps_coming = polling || should_linger(last_moved, now);
                    last_moved = Some(now);
                    if keeps_coming {
                        if !polling {
                            metrics::counter!("outbox_polling_total").increment(1);
                            stop_listening(&mut listener).await;
                            polling = true;
                        }
                        if !sleep_or_cancel(LINGER, &shutdown).await {
                            break;
                        }
                        continue;
                    }
                } else if polling {
                    polling = false;
                    resume_listening(&mut listener, &store).await;
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay round failed; the rows stay unpublished");
                match e {
                    RelayError::Publish(_) => streams_ready = false,
                    // The connection may be broken or inside a failed transaction: take a new one.
                    RelayError::Store(_) | RelayError::Db(_) => conn = None,
                }
                if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                    break;
                }
                continue;
            }
        }
        wait_for_work(&mut listener, &store, &shutdown).await;
        if should_linger(last_moved, Instant::now()) && !sleep_or_cancel(LINGER, &shutdown).await {
            break;
        }
        drain(&mut listener).await;
    }
    tracing::info!("outbox relay stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingers_only_while_rows_keep_coming() {
        let now = Instant::now();
        assert!(
            !should_linger(None, now),
            "nothing moved yet: relay at once"
        );
        assert!(should_linger(Some(now), now));
        assert!(should_linger(
            Some(now - BUSY_WINDOW + Duration::from_millis(1)),
            now
        ));
        assert!(
            !should_linger(Some(now - BUSY_WINDOW), now),
            "after a quiet spell the next row goes at once"
        );
    }
}
