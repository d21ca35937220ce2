//! The outbox relay: publishes committed outbox rows to JetStream, exactly once as far as the
//! stream is concerned.
//!
//! Each round claims up to [`BATCH`] unpublished rows (`FOR UPDATE SKIP LOCKED`, so several
//! event-api processes may relay side by side), sends them all with their `Nats-Msg-Id` without
//! waiting for each ack in turn (at most [`BATCH`] in flight), then awaits the acks and marks the
//! acked rows published in the same transaction, which commits without waiting for the WAL
//! flush ([`BEGIN_ROUND`]). A row whose ack did not arrive stays unpublished and is sent again
//! later; the server's duplicate window drops the copy if the first send did land.
//!
//! A backlog goes out two rounds at a time ([`relay_rounds`]): while one round's acks come in,
//! the round before it is marked and committed and the one after it claimed, so NATS and
//! PostgreSQL work side by side instead of taking turns. A round is sent only after every ack of
//! the round before it, so a failed publish stops the relay before anything after it is sent,
//! as with one round at a time (ADR 0015).
//!
//! The relay wakes on `NOTIFY camrec_outbox` (sent by every transaction that adds a row) and
//! polls every second in case a notification was missed. NATS errors back off (capped);
//! REST calls never wait for any of this.
//!
//! One notification per committed row would mean one round per row, and under a burst the
//! notifications outrun the rounds: the relay would go on running empty rounds long after the
//! burst. So a wake-up takes every notification already received with it (one round covers every
//! row committed before it), and while rows keep coming (the previous round moved rows less than
//! [`BUSY_WINDOW`] ago) the relay lingers [`LINGER`] before the round so that it carries several
//! rows. A row after a quiet spell is relayed at once. The relay keeps two database connections
//! of its own across rounds instead of taking one from the pool for each.
//!
//! While rows keep coming, notifications are pure cost: each commit makes PostgreSQL signal the
//! listening backend, which wakes to send it, and event-api wakes to read it, although the relay
//! is going to run another round anyway. So when two rounds in a row move rows, the relay
//! `UNLISTEN`s and polls every [`LINGER`] instead; the first round that finds nothing `LISTEN`s
//! again and runs once more right away (a row committed while nobody listened notified nobody)
//! before waiting (ADR 0013).

use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use crate::store::outbox::OutboxRow;
use crate::store::outbox::{claim, mark_published, NOTIFY_CHANNEL};
use crate::store::{Store, StoreError};
use async_nats::jetstream::context::{Publish, PublishAckFuture, PublishError};
use async_nats::jetstream::Context;
use futures::future::join_all;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::{Executor, PgConnection, Postgres};
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

/// How a round's transaction begins: its commit does not wait for the WAL to reach the disk
/// (ADR 0015). The round only marks rows published; if PostgreSQL crashes before the mark is
/// flushed, the rows are unpublished again and a later round sends them again with the same
/// `Nats-Msg-Id`, which the stream's duplicate window drops. `SET LOCAL` ends with the
/// transaction, so the connection goes back to the pool with the server's setting.
pub const BEGIN_ROUND: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// A round's transaction on one of the relay's own connections. (sqlx's `Transaction` would
/// give the connection back to the pool at commit, and the pool hands out its oldest idle
/// connection next, so each round would land on another backend.) Dropped before [`commit`]
/// (an error, or shutdown mid-round), it closes the connection, which ends the transaction
/// without committing, instead of returning it to the pool inside the transaction.
///
/// [`commit`]: RoundTx::commit
struct RoundTx(Option<PoolConnection<Postgres>>);

impl RoundTx {
    async fn begin(conn: PoolConnection<Postgres>) -> Result<Self, RelayError> {
        let mut tx = Self(Some(conn));
        tx.conn().execute(BEGIN_ROUND).await?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut PgConnection {
        self.0
            .as_deref_mut()
            .expect("only `end` takes the connection, and it consumes the transaction")
    }

    /// Commits and hands the connection back for the next round.
    async fn commit(self) -> Result<PoolConnection<Postgres>, RelayError> {
        self.end("COMMIT").await
    }

    /// Rolls back and hands the connection back.
    async fn rollback(self) -> Result<PoolConnection<Postgres>, RelayError> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, statement: &str) -> Result<PoolConnection<Postgres>, RelayError> {
        self.conn().execute(statement).await?;
        Ok(self
            .0
            .take()
            .expect("the connection is taken only here, which consumes the transaction"))
    }
}

impl Drop for RoundTx {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// The relay's two connections, each taken from the pool when it has none (at start, or after
/// an error closed it).
#[derive(Default)]
pub struct Conns([Option<PoolConnection<Postgres>>; 2]);

impl Conns {
    async fn take(&mut self, store: &Store) -> Result<PoolConnection<Postgres>, RelayError> {
        match self.0.iter_mut().find_map(Option::take) {
            Some(conn) => Ok(conn),
            None => Ok(store.pool().acquire().await?),
        }
    }

    fn put(&mut self, conn: PoolConnection<Postgres>) {
        match self.0.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(conn),
            None => drop(conn),
        }
    }
}

/// A round whose rows are claimed: its transaction holds their row locks.
struct Claimed {
    tx: RoundTx,
    rows: Vec<OutboxRow>,
}

/// A round whose rows are sent; their acks may still be coming.
struct Sent {
    tx: RoundTx,
    claimed: usize,
    pending: Vec<(i64, PublishAckFuture)>,
    error: Option<PublishError>,
}

/// A round whose acks are in: the rows to mark published, and the first failure if any.
struct Acked {
    tx: RoundTx,
    claimed: usize,
    published: Vec<i64>,
    error: Option<PublishError>,
}

/// Begins a round on one of `conns` and claims up to [`BATCH`] rows; `None` (the transaction
/// ended, the connection back in `conns`) when there are none.
async fn claim_round(conns: &mut Conns, store: &Store) -> Result<Option<Claimed>, RelayError> {
    metrics::counter!("outbox_rounds_total").increment(1);
    let mut tx = RoundTx::begin(conns.take(store).await?).await?;
    let rows = claim(tx.conn(), BATCH).await?;
    if rows.is_empty() {
        conns.put(tx.commit().await?);
        return Ok(None);
    }
    Ok(Some(Claimed { tx, rows }))
}

/// Sends every claimed row with its `Nats-Msg-Id`, without waiting for the acks; stops at the
/// first failed send.
async fn send(round: Claimed, js: &Context) -> Sent {
    let Claimed { tx, rows } = round;
    let claimed = rows.len();
    let mut pending = Vec::with_capacity(claimed);
    let mut error = None;
    for row in rows {
        let publish = Publish::build()
            .payload(row.payload.into())
            .message_id(row.msg_id);
        match js.send_publish(row.subject, publish).await {
            Ok(ack) => pending.push((row.id, ack)),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Sent {
        tx,
        claimed,
        pending,
        error,
    }
}

/// Waits for every ack of a sent round.
async fn acks(round: Sent) -> Acked {
    let Sent {
        tx,
        claimed,
        pending,
        mut error,
    } = round;
    let results = join_all(
        pending
            .into_iter()
            .map(|(id, ack)| async move { (id, ack.await) }),
    )
    .await;
    let mut published = Vec::with_capacity(results.len());
    for (id, result) in results {
        match result {
            Ok(_) => published.push(id),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    Acked {
        tx,
        claimed,
        published,
        error,
    }
}

/// Marks the acked rows published and commits, the connection going back to `conns`; returns
/// how many rows the round claimed, or its first publish failure (after committing what was
/// acked).
async fn finish(round: Acked, conns: &mut Conns) -> Result<usize, RelayError> {
    let Acked {
        mut tx,
        claimed,
        published,
        error,
    } = round;
    if !published.is_empty() {
        mark_published(tx.conn(), &published).await?;
    }
    conns.put(tx.commit().await?);
    metrics::counter!("outbox_published_total").increment(published.len() as u64);
    match error {
        Some(e) => Err(e.into()),
        None => Ok(claimed),
    }
}

/// What [`relay_rounds`] moved: rows in all, and rows claimed by its last round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    pub rows: usize,
    pub last_round: usize,
}

/// Publishes rounds back to back for as long as each one is full, two at a time: while a
/// round's acks come in, the previous round is marked and committed and the next one claimed,
/// on another connection (`SKIP LOCKED` keeps the two apart). The next round is sent only once
/// every ack of the one before it is in, so the stream gets the rows in the same order as
/// round after round would send them; a round with a failed publish ends the run after its
/// acked rows are marked, and the claimed next round is rolled back unsent.
pub async fn relay_rounds(
    conns: &mut Conns,
    store: &Store,
    js: &Context,
) -> Result<Moved, RelayError> {
    let Some(first) = claim_round(conns, store).await? else {
        return Ok(Moved {
            rows: 0,
            last_round: 0,
        });
    };
    let mut rows = 0;
    let mut sent = send(first, js).await;
    let mut marking: Option<Acked> = None;
    loop {
        let full = sent.claimed as i64 >= BATCH && sent.error.is_none();
        let (acked, side) = tokio::join!(acks(sent), async {
            let marked = match marking.take() {
                Some(round) => finish(round, conns).await?,
                None => 0,
            };
            let next = if full {
                claim_round(conns, store).await?
            } else {
                None
            };
            Ok::<_, RelayError>((marked, next))
        });
        let (marked, next) = match side {
            Ok(side) => side,
            Err(e) => {
                // The earlier round's mark failed (its rows stay unpublished and go out again,
                // dropped as duplicates) or the claim did: settle this round and stop.
                finish(acked, conns).await?;
                return Err(e);
            }
        };
        rows += marked;
        if acked.error.is_some() {
            // The claimed next round is rolled back unsent, and `finish` returns the error.
            if let Some(round) = next {
                if let Ok(conn) = round.tx.rollback().await {
                    conns.put(conn);
                }
            }
            let last_round = finish(acked, conns).await?;
            return Ok(Moved {
                rows: rows + last_round,
                last_round,
            });
        }
        match next {
            Some(round) => {
                sent = send(round, js).await;
                marking = Some(acked);
            }
            None => {
                let last_round = finish(acked, conns).await?;
                return Ok(Moved {
                    rows: rows + last_round,
                    last_round,
                });
            }
        }
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

/// Runs the relay until `shutdown`: makes sure the streams exist (retrying while NATS is
/// down), then publishes rounds as long as rows are waiting.
pub async fn run(store: Store, js: Context, replicas: usize, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut streams_ready = false;
    let mut listener = None;
    let mut conns = Conns::default();
    // When the last round that moved rows ended.
    let mut last_moved: Option<Instant> = None;
    // Polling every LINGER without listening, while rows keep coming.
    let mut polling = false;
    while !shutdown.is_cancelled() {
        if !streams_ready {
            // While NATS is down the stream requests wait for their timeout: shutdown must not.
            let ensured = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = camrec_shared::streams::ensure_streams(&js, replicas) => r,
            };
            if let Err(e) = ensured {
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
            r = relay_rounds(&mut conns, &store, &js) => r,
        };
        match round {
            Ok(moved) if moved.last_round as i64 >= BATCH => {
                backoff.reset();
                last_moved = Some(Instant::now());
                continue;
            }
            Ok(moved) => {
                backoff.reset();
                if moved.rows > 0 {
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
                if let RelayError::Publish(_) = e {
                    streams_ready = false;
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
