//! P2: the outbox relay, two goals.
//!
//! - Drain: a backlog of N `event.created` rows, written with event-api's own
//!   `outbox::enqueue` in one transaction, drains into JetStream at ≥ [`GOAL_DRAIN_RATE`]
//!   messages/s, timed from the commit until every outbox row is marked published. Info
//!   baseline: the same payloads published with plain async-nats to the same stream
//!   ([`publish_all`], [`IN_FLIGHT`] unacknowledged), with the ratio.
//! - Lag: under a steady [`STEADY_RATE`] `POST /events` (MOTION) per second, the time from each
//!   event's commit to its `event.created` message stored in JetStream has p99 ≤ [`GOAL_LAG_P99`].
//!   The commit happens between the request's send and its answer; the store time is the
//!   server's timestamp of the stream message (its ack to the relay follows at once). The figure
//!   is timed from the send, so it is an upper bound of the lag by at most the request's own
//!   time, printed beside it. Both clocks are this host's wall clock.

use crate::baseline::{publish_all, Message};
use crate::ctx::{unpublished, Ctx};
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::rig::IDLE_SITE;
use crate::stats::Latencies;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use camrec_shared::subjects::{event_msg_id, EventKind, EVENTS_STREAM};
use camrec_shared::EventId;
use chrono::{DateTime, Utc};
use event_api::store::outbox::{enqueue, OutboxMessage};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid;

pub const GOAL_DRAIN_RATE: f64 = 5000.0;
pub const STEADY_RATE: f64 = 200.0;
pub const GOAL_LAG_P99: Duration = Duration::from_millis(50);

/// How many publishes the baseline keeps unacknowledged.
const IN_FLIGHT: usize = 256;
const POLL: Duration = Duration::from_millis(5);
/// How long a drain, or the relay catching up after the steady load, may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The outbox ids a backlog was written under: after `before`, up to `last`.
struct Ids {
    before: i64,
    last: i64,
}

/// Commits `backlog` to the outbox in one transaction.
async fn commit_backlog(db: &sqlx::PgPool, backlog: &[OutboxMessage]) -> anyhow::Result<Ids> {
    let max_id = "SELECT coalesce(max(id), 0) FROM outbox";
    let mut tx = db.begin().await?;
    let before: i64 = sqlx::query_scalar(max_id).fetch_one(&mut *tx).await?;
    for msg in backlog {
        enqueue(&mut tx, msg).await?;
    }
    let last: i64 = sqlx::query_scalar(max_id).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Ids { before, last })
}

/// How many rows of `ids` the relay set aside as dead letters instead of publishing them.
async fn dead_letters(db: &sqlx::PgPool, ids: &Ids) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE id > $1 AND id <= $2 AND dead_at IS NOT NULL",
    )
    .bind(ids.before)
    .bind(ids.last)
    .fetch_one(db)
    .await?)
}

/// Whether outbox row `id` is published: a primary-key lookup, cheap enough to poll every few
/// milliseconds while the relay drains. (Counting the unpublished rows at that rate cost
/// PostgreSQL 40-60% of a core during a drain, taken from the relay being measured.)
async fn published(db: &sqlx::PgPool, id: i64) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await?,
    )
}

/// Commits a backlog of `n` messages and times the relay from the commit until no outbox row
/// waits. The relay claims in id order, so the last row goes out in the last round; only then is
/// the (dearer) count of what is left worth running. Returns the backlog and the time.
async fn drain(ctx: &Ctx, n: usize) -> anyhow::Result<(Vec<OutboxMessage>, Duration)> {
    ctx.outbox_drained(DRAIN_TIMEOUT).await?;
    let backlog = (0..n)
        .map(|_| ctx.created_message())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ids = commit_backlog(&ctx.db, &backlog).await?;
    let committed = Instant::now();
    loop {
        if published(&ctx.db, ids.last).await? && unpublished(&ctx.db).await? == 0 {
            let took = committed.elapsed();
            let dead = dead_letters(&ctx.db, &ids).await?;
            anyhow::ensure!(dead == 0, "{dead} rows of the backlog were dead-lettered");
            return Ok((backlog, took));
        }
        anyhow::ensure!(
            committed.elapsed() < DRAIN_TIMEOUT,
            "the relay did not drain {n} rows within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The backlog as the baseline publishes it: new message ids, so they are not dropped as
/// duplicates of the relay's.
fn baseline_messages(backlog: &[OutboxMessage]) -> Vec<Message> {
    backlog
        .iter()
        .map(|m| Message {
            subject: m.subject.clone(),
            msg_id: format!("{}:baseline", m.msg_id),
            payload: m.payload.clone().into(),
        })
        .collect()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

async fn drain_row(ctx: &Ctx) -> anyhow::Result<Row> {
    let n = ctx.plan.p2_backlog;
    let (backlog, relay) = drain(ctx, n).await?;
    let base = publish_all(&ctx.js, &baseline_messages(&backlog), IN_FLIGHT).await?;
    Ok(Row::new(
        "P2",
        format!("outbox relay drains a backlog of {n} (messages/s)"),
        Cell::new(rate(n, relay), Unit::PerSec)
            .with_detail(format!("{} from the commit", fmt_secs(relay.as_secs_f64()))),
        Goal::RateAtLeast(GOAL_DRAIN_RATE),
    )
    .against(Cell::new(rate(n, base), Unit::PerSec).with_detail(format!(
        "async-nats, {IN_FLIGHT} in flight, {}",
        fmt_secs(base.as_secs_f64())
    ))))
}

/// One `POST /events` of the steady load: the event and the wall-clock times around it.
struct Posted {
    event_id: Uuid,
    sent: DateTime<Utc>,
    answered: DateTime<Utc>,
}

/// Posts MOTION events for the idle camera at `rate` per second for `length`, each request on
/// its own task at its due time (open loop: a slow answer does not delay the next request).
async fn post_steadily(ctx: &Ctx, rate: f64, length: Duration) -> anyhow::Result<Vec<Posted>> {
    let n = (rate * length.as_secs_f64()).round() as usize;
    let start = tokio::time::Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (api, camera) = (ctx.api.clone(), ctx.idle_camera.id);
        requests.spawn(async move {
            let sent = Utc::now();
            let created = api.create_event(camera, "MOTION").await?;
            Ok::<_, anyhow::Error>(Posted {
                event_id: created.id,
                sent,
                answered: Utc::now(),
            })
        });
    }
    let mut posted = Vec::with_capacity(n);
    for result in requests.join_all().await {
        posted.push(result?);
    }
    Ok(posted)
}

/// The EVENTS stream's last sequence.
async fn last_sequence(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    Ok(stream.info().await?.state.last_sequence)
}

/// When each `event.created` of the idle site after sequence `after` was stored, by message id,
/// until `want` of them are read (headers only, through an ordered consumer).
async fn stored_at(
    js: &async_nats::jetstream::Context,
    after: u64,
    want: usize,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let stream = js.get_stream(EVENTS_STREAM).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("event.created.{IDLE_SITE}.>"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            headers_only: true,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut stored = HashMap::with_capacity(want);
    let read = async {
        while stored.len() < want {
            let Some(msg) = messages.next().await else {
                anyhow::bail!("the EVENTS consumer ended");
            };
            let msg = msg?;
            let at = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.published;
            let at = DateTime::from_timestamp_nanos(at.unix_timestamp_nanos() as i64);
            if let Some(id) = msg.headers.as_ref().and_then(|h| h.get(NATS_MESSAGE_ID)) {
                stored.insert(id.as_str().to_owned(), at);
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .map_err(|_| anyhow::anyhow!("read {} of {want} event.created messages", stored.len()))??;
    Ok(stored)
}

/// `later - earlier`, zero when `later` is not later.
fn between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or_default()
}

async fn lag_row(ctx: &Ctx) -> anyhow::Result<Row> {
    let length = ctx.plan.p2_steady;
    ctx.outbox_drained(DRAIN_TIMEOUT).await?;
    let after = last_sequence(&ctx.js).await?;
    let posted = post_steadily(ctx, STEADY_RATE, length).await?;
    ctx.outbox_drained(DRAIN_TIMEOUT).await?;
    let stored = stored_at(&ctx.js, after, posted.len()).await?;
    let (mut lags, mut requests) = (Vec::new(), Vec::new());
    for p in &posted {
        let msg_id = event_msg_id(EventId(p.event_id), EventKind::Created);
        let at = stored
            .get(&msg_id)
            .ok_or_else(|| anyhow::anyhow!("no event.created for event {}", p.event_id))?;
        lags.push(between(p.sent, *at));
        requests.push(between(p.sent, p.answered));
    }
    let (lags, requests) = (Latencies::new(lags), Latencies::new(requests));
    Ok(Row::new(
        "P2",
        format!(
            "relay lag, commit → stored in JetStream, p99, at {STEADY_RATE:.0} POST /events/s \
             for {} s",
            length.as_secs()
        ),
        Cell::new(lags.p99().as_secs_f64(), Unit::Seconds).with_detail(format!(
            "p50 {}, {} events; timed from the request's send: the request itself took p50 {}, \
             p99 {}",
            fmt_secs(lags.p50().as_secs_f64()),
            lags.len(),
            fmt_secs(requests.p50().as_secs_f64()),
            fmt_secs(requests.p99().as_secs_f64())
        )),
        Goal::SecondsAtMost(GOAL_LAG_P99.as_secs_f64()),
    ))
}

/// The drain row and the lag row.
pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let drain = format!("outbox relay, backlog of {}", ctx.plan.p2_backlog);
    tracing::info!("P2: {drain}");
    let mut rows = vec![drain_row(ctx)
        .await
        .unwrap_or_else(|e| Row::error("P2", &drain, &e))];
    let lag = format!("relay lag at {STEADY_RATE:.0} events/s");
    tracing::info!("P2: {lag}");
    rows.push(
        lag_row(ctx)
            .await
            .unwrap_or_else(|e| Row::error("P2", &lag, &e)),
    );
    rows
}
