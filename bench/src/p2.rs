//! P2: the outbox relay draining a backlog into JetStream, against a plain async-nats publish of
//! the same payloads to the same stream.
//!
//! The backlog is made through the API while NATS is down (so every row waits in the outbox);
//! then event-api is stopped, NATS started, event-api started again. The relay's time runs from
//! the first message of the backlog in the EVENTS stream to the moment no outbox row is
//! unpublished, so event-api's own start-up is not counted (it is printed beside it). The
//! baseline publishes right after a NATS restart too (see [`baseline`]).

use crate::baseline::{publish_all, Message};
use crate::ctx::{unpublished, Ctx};
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use camrec_shared::subjects::EVENTS_STREAM;
use futures::StreamExt;
use std::time::{Duration, Instant};

/// How many publishes the baseline keeps unacknowledged.
const IN_FLIGHT: usize = 256;
const POLL: Duration = Duration::from_millis(5);

async fn stream_messages(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    Ok(stream.info().await?.state.messages)
}

/// Posts `n` MOTION events for the idle camera, 16 at a time.
async fn post_backlog(ctx: &Ctx, n: usize) -> anyhow::Result<()> {
    let api = &ctx.api;
    let camera = ctx.idle_camera.id;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| async move { api.create_event(camera, "MOTION").await })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    match results.into_iter().find_map(Result::err) {
        Some(e) => {
            Err(anyhow::Error::new(e).context(format!("{failed} of {n} POST /events failed")))
        }
        None => Ok(()),
    }
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

/// Measures the relay; returns (rows drained, drain time, event-api start to drained). The
/// backlog may hold a few rows more than were posted (e.g. a reconciler verdict written
/// meanwhile); they are drained and counted too.
async fn relay(ctx: &mut Ctx, n: usize) -> anyhow::Result<(usize, Duration, Duration)> {
    ctx.outbox_drained(Duration::from_secs(300)).await?;
    ctx.rig.nats.stop();
    post_backlog(ctx, n).await?;
    let backlog = unpublished(&ctx.db).await? as usize;
    anyhow::ensure!(backlog >= n, "the outbox holds {backlog} rows, not {n}");
    let last: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox")
        .fetch_one(&ctx.db)
        .await?;
    ctx.rig.api.stop(Duration::from_secs(10)).await;
    ctx.rig.nats.restart().await?;
    let js = &ctx.js;
    let before = testkit::wait_until(Duration::from_secs(30), "the EVENTS stream", || async {
        stream_messages(js).await.ok()
    })
    .await?;
    let spawned = Instant::now();
    ctx.rig.start_api().await?;
    let deadline = spawned + Duration::from_secs(300);
    let mut first = None;
    loop {
        let now = Instant::now();
        if first.is_none() && stream_messages(&ctx.js).await? > before {
            first = Some(now);
        }
        // The relay claims in id order, so the last row goes out in the last round; only then
        // is the (dearer) count of what is left worth running.
        if published(&ctx.db, last).await? && unpublished(&ctx.db).await? == 0 {
            let first = first.unwrap_or(now);
            return Ok((backlog, now - first, now - spawned));
        }
        anyhow::ensure!(
            now < deadline,
            "the relay did not drain {backlog} rows within 300 s"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The backlog's rows, as the baseline publishes them (new message ids, so they are not
/// dropped as duplicates of the relay's).
async fn backlog_messages(db: &sqlx::PgPool, n: usize) -> anyhow::Result<Vec<Message>> {
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, msg_id, payload FROM outbox ORDER BY id DESC LIMIT $1")
            .bind(n as i64)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|(subject, msg_id, payload)| Message {
            subject,
            msg_id: format!("{msg_id}:baseline"),
            payload: payload.into(),
        })
        .collect())
}

/// The plain publish, on the same footing as the relay: the first publishes after a NATS
/// restart, from a client that connected after it and looked the stream up (as the relay's
/// `ensure_streams` does). The first acks after a restart are slower (about 180 ms on the
/// machine of BENCHMARKS.md), so a baseline on a warm server would not be comparable.
async fn baseline(ctx: &mut Ctx, messages: &[Message]) -> anyhow::Result<Duration> {
    ctx.rig.nats.restart().await?;
    let client = async_nats::connect(ctx.rig.nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    stream_messages(&js).await?;
    Ok(publish_all(&js, messages, IN_FLIGHT).await?)
}

pub async fn run(ctx: &mut Ctx) -> Vec<Row> {
    let n = ctx.plan.p2_backlog;
    let what = format!("outbox relay, backlog of {n}");
    tracing::info!("P2: {what}");
    let measured = async {
        let (backlog, drain, from_start) = relay(ctx, n).await?;
        let messages = backlog_messages(&ctx.db, backlog).await?;
        let base = baseline(ctx, &messages).await?;
        anyhow::Ok((backlog, drain, from_start, base))
    }
    .await;
    match measured {
        Ok((backlog, drain, from_start, base)) => {
            let rate = |d: Duration| backlog as f64 / d.as_secs_f64().max(1e-9);
            vec![Row::new(
                "P2",
                format!("{what} (messages/s)"),
                Cell::new(rate(drain), Unit::PerSec).with_detail(format!(
                    "{} from the first message; {} from event-api's start",
                    fmt_secs(drain.as_secs_f64()),
                    fmt_secs(from_start.as_secs_f64())
                )),
                Goal::AtLeast(0.5),
            )
            .against(Cell::new(rate(base), Unit::PerSec).with_detail(format!(
                "{}, {IN_FLIGHT} in flight",
                fmt_secs(base.as_secs_f64())
            )))]
        }
        Err(e) => vec![Row::error("P2", &what, &e)],
    }
}
