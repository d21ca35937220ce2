//! P2: the outbox relay draining a backlog into JetStream, against a plain async-nats publish of
//! the same payloads to the same stream.
//!
//! The backlog is made through the API while NATS is down (so every row waits in the outbox);
//! then event-api is stopped, NATS started, event-api started again. The relay's time runs from
//! the first message of the backlog in the EVENTS stream to the moment no outbox row is
//! unpublished, so event-api's own start-up is not counted (it is printed beside it). The
//! baseline publishes right after a NATS restart too (see [`baseline`]). Each side starts when
//! no autovacuum worker runs, and autovacuum stays off for the tables the backlog writes until
//! the drain is measured (see [`autovacuum_idle`]).

use crate::baseline::{publish_all, Message};
use crate::ctx::{unpublished, Ctx};
use crate::report::{Cell, Goal, Row, Unit};
use crate::stats::median;
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

/// The tables the backlog's `POST /events` write.
const BACKLOG_TABLES: [&str; 3] = ["events", "playbacks", "outbox"];

/// Turns autovacuum off (`false`) or back to the server's setting (`true`) for
/// [`BACKLOG_TABLES`].
async fn autovacuum(db: &sqlx::PgPool, on: bool) -> anyhow::Result<()> {
    let mut conn = db.acquire().await?;
    for table in BACKLOG_TABLES {
        let sql = if on {
            format!("ALTER TABLE {table} RESET (autovacuum_enabled)")
        } else {
            format!("ALTER TABLE {table} SET (autovacuum_enabled = false)")
        };
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Waits until no autovacuum worker runs, so that neither side of P2 shares the two cores with
/// one. (A worker vacuuming `events` after P1, or the backlog's 20,000 inserts, landed in the
/// relay's sub-second drain and halved it; the baseline, later, had the machine to itself.
/// ADR 0015.)
async fn autovacuum_idle(db: &sqlx::PgPool) -> anyhow::Result<()> {
    testkit::wait_until(Duration::from_secs(300), "autovacuum idle", || async {
        let workers: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_one(db)
        .await
        .ok();
        workers.filter(|n| *n == 0).map(|_| ())
    })
    .await
}

/// [`relay_with_autovacuum_off`] with autovacuum off for the tables the backlog writes, from
/// before the backlog until the drain is measured, and back on after it either way.
async fn relay(ctx: &mut Ctx, n: usize) -> anyhow::Result<(usize, Duration, Duration)> {
    autovacuum(&ctx.db, false).await?;
    let measured = relay_with_autovacuum_off(ctx, n).await;
    autovacuum(&ctx.db, true).await?;
    measured
}

/// Measures the relay; returns (rows drained, drain time, event-api start to drained). The
/// backlog may hold a few rows more than were posted (e.g. a reconciler verdict written
/// meanwhile); they are drained and counted too.
async fn relay_with_autovacuum_off(
    ctx: &mut Ctx,
    n: usize,
) -> anyhow::Result<(usize, Duration, Duration)> {
    ctx.outbox_drained(Duration::from_secs(300)).await?;
    ctx.rig.nats.stop();
    post_backlog(ctx, n).await?;
    let backlog = unpublished(&ctx.db).await? as usize;
    anyhow::ensure!(backlog >= n, "the outbox holds {backlog} rows, not {n}");
    let last: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox")
        .fetch_one(&ctx.db)
        .await?;
    ctx.rig.api.stop(Duration::from_secs(10)).await;
    autovacuum_idle(&ctx.db).await?;
    ctx.rig.nats.restart().await?;
    let js = &ctx.js;
    let before = testkit::wait_until(Duration::from_secs(30), "the EVENTS stream", || async {
        stream_messages(js).await.ok()
    })
    .await?;
    let spawned = Instant::now();
    ctx.rig.start_api().await?;
    let deadline = spawned + Duration::from_secs(300);
    // The drain is counted from the last poll that saw none of the backlog in the stream: at
    // most one poll early, and never zero when a small backlog goes out between two polls.
    let mut quiet = spawned;
    let mut first = None;
    loop {
        let now = Instant::now();
        if first.is_none() {
            if stream_messages(&ctx.js).await? > before {
                first = Some(quiet);
            } else {
                quiet = now;
            }
        }
        // The relay claims in id order, so the last row goes out in the last round; only then
        // is the (dearer) count of what is left worth running.
        if published(&ctx.db, last).await? && unpublished(&ctx.db).await? == 0 {
            let first = first.unwrap_or(quiet);
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
    autovacuum_idle(&ctx.db).await?;
    ctx.rig.nats.restart().await?;
    let client = async_nats::connect(ctx.rig.nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    stream_messages(&js).await?;
    Ok(publish_all(&js, messages, IN_FLIGHT).await?)
}

/// One relay drain and the baseline's publish of the same rows: (rows, drain time, event-api
/// start to drained, baseline time).
async fn pair(ctx: &mut Ctx, n: usize) -> anyhow::Result<(usize, Duration, Duration, Duration)> {
    let (backlog, drain, from_start) = relay(ctx, n).await?;
    let messages = backlog_messages(&ctx.db, backlog).await?;
    let base = baseline(ctx, &messages).await?;
    Ok((backlog, drain, from_start, base))
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64().max(1e-9)
}

/// The times, in run order, as `a, b, c ms`.
fn list_ms(times: &[Duration]) -> String {
    let ms: Vec<String> = times
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    format!("{} ms", ms.join(", "))
}

pub async fn run(ctx: &mut Ctx) -> Vec<Row> {
    let n = ctx.plan.p2_backlog;
    let rounds = ctx.plan.p2_rounds.max(1);
    let what = format!("outbox relay, backlog of {n}");
    tracing::info!("P2: {what}, {rounds} drains each followed by the baseline");
    let mut pairs = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        match pair(ctx, n).await {
            Ok(p) => pairs.push(p),
            Err(e) => return vec![Row::error("P2", &what, &e)],
        }
    }
    let relay_rates: Vec<f64> = pairs.iter().map(|p| rate(p.0, p.1)).collect();
    let base_rates: Vec<f64> = pairs.iter().map(|p| rate(p.0, p.3)).collect();
    let drains: Vec<Duration> = pairs.iter().map(|p| p.1).collect();
    let starts: Vec<Duration> = pairs.iter().map(|p| p.2).collect();
    let bases: Vec<Duration> = pairs.iter().map(|p| p.3).collect();
    let (Some(relay), Some(base)) = (median(&relay_rates), median(&base_rates)) else {
        return vec![Row::error(
            "P2",
            &what,
            &anyhow::anyhow!("no drain was measured"),
        )];
    };
    let of = if rounds > 1 {
        format!("median of {rounds}; ")
    } else {
        String::new()
    };
    vec![Row::new(
        "P2",
        format!("{what} (messages/s)"),
        Cell::new(relay, Unit::PerSec).with_detail(format!(
            "{of}drains {} from the first message; {} from event-api's start",
            list_ms(&drains),
            list_ms(&starts)
        )),
        Goal::AtLeast(0.5),
    )
    .against(
        Cell::new(base, Unit::PerSec)
            .with_detail(format!("{of}{}, {IN_FLIGHT} in flight", list_ms(&bases))),
    )]
}
