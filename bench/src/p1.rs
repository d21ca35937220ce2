//! P1: `POST /events` throughput and latency at several concurrencies, for a type that records
//! (MOTION: event + playback + outbox row + notify) and one that does not (ERROR: the event
//! only), against pgbench running the same transaction against the same database. Each run
//! starts with an empty outbox, so the relay's publishing of earlier rows does not share the CPU;
//! pgbench's rows go to a copy of the outbox the relay does not read ([`pgbench::SHADOW_OUTBOX`]),
//! so its turns measure the SQL alone.

use crate::ctx::Ctx;
use crate::load::{self, LoadRun, Target};
use crate::pgbench;
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::rig::IDLE_SITE;
use crate::stats::Latencies;
use camrec_shared::messages::{Envelope, EventCreated, EventType, RecordingLimits};
use camrec_shared::subjects::{event_subject, EventKind, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use std::time::Duration;

/// How long the relay may take to publish what the previous run left in the outbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// An `event.created` envelope for the idle camera, the size event-api writes.
fn created_payload(ctx: &Ctx) -> anyhow::Result<(String, Vec<u8>)> {
    let site = Site::new(IDLE_SITE)?;
    let camera_id = CameraId(ctx.idle_camera.id);
    let env = Envelope::new(
        chrono::Utc::now(),
        EventCreated {
            event_id: EventId::new(),
            playback_id: PlaybackId::new(),
            camera_id,
            camera_name: "bench-idle".into(),
            site: site.clone(),
            event_type: EventType::Motion,
            rtsp_url: ctx.idle_camera.url.clone(),
            password_sealed: None,
            limits: RecordingLimits {
                max_duration_sec: 3600,
                pre_roll_sec: 0,
                post_roll_sec: 0,
            },
        },
    );
    Ok((
        event_subject(EventKind::Created, &site, camera_id),
        env.to_bytes(),
    ))
}

fn pgbench_run(ctx: &Ctx, clients: usize) -> anyhow::Result<pgbench::Run> {
    let url = url::Url::parse(&ctx.rig.database_url())?;
    Ok(pgbench::Run {
        pgbench: "pgbench".into(),
        host: url.host_str().unwrap_or("127.0.0.1").to_owned(),
        port: url.port().unwrap_or(5432),
        user: url.username().to_owned(),
        database: url.path().trim_start_matches('/').to_owned(),
        camera_id: ctx.idle_camera.id,
        clients,
        duration: ctx.plan.p1_duration,
    })
}

fn latency_detail(l: &Latencies) -> String {
    format!(
        "p50 {}, p99 {}",
        fmt_secs(l.p50().as_secs_f64()),
        fmt_secs(l.p99().as_secs_f64())
    )
}

fn api_cell(run: &LoadRun) -> anyhow::Result<Cell> {
    if run.ok == 0 {
        anyhow::bail!(
            "no request succeeded: {}",
            run.first_error.as_deref().unwrap_or("no answer")
        );
    }
    let mut detail = latency_detail(&run.latencies);
    if run.failed > 0 {
        detail.push_str(&format!(
            ", {} failed: {}",
            run.failed,
            run.first_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(Cell::new(run.throughput(), Unit::PerSec).with_detail(detail))
}

async fn one(ctx: &Ctx, event_type: &str, c: usize) -> anyhow::Result<Row> {
    let target = Target {
        method: "POST",
        url: format!("{}/events", ctx.api.base),
        bearer: ctx.api.token.clone(),
        body: serde_json::to_vec(&serde_json::json!({
            "cameraId": ctx.idle_camera.id, "type": event_type
        }))?
        .into(),
        expect: 201,
    };
    let created = created_payload(ctx)?;
    let recording = (event_type == "MOTION").then_some((created.0.as_str(), created.1.as_slice()));
    let script = pgbench::script(event_type, recording);
    sqlx::query(&pgbench::shadow_outbox_ddl())
        .execute(&ctx.db)
        .await?;
    // camrec and pgbench take turns in slices, so that a slower spell of this shared machine
    // falls on both sides of the ratio rather than on one.
    let slices = slices(ctx.plan.p1_duration);
    let slice = ctx.plan.p1_duration / slices;
    let mut run: Option<LoadRun> = None;
    let (mut tps, mut latencies) = (Vec::new(), Latencies::default());
    for _ in 0..slices {
        ctx.outbox_drained(DRAIN_TIMEOUT).await?;
        let r = load::run(&target, c, slice).await;
        run = Some(match run {
            Some(acc) => acc.merged(r),
            None => r,
        });
        ctx.outbox_drained(DRAIN_TIMEOUT).await?;
        let mut turn = pgbench_run(ctx, c)?;
        turn.duration = slice;
        let b = pgbench::run(&turn, &script).await?;
        tps.push(b.tps);
        latencies = latencies.merged(&b.latencies);
    }
    let run = run.ok_or_else(|| anyhow::anyhow!("no P1 slice ran"))?;
    let camrec = api_cell(&run)?;
    // The slices are equally long: the mean of their rates is the rate over all of them.
    let tps = tps.iter().sum::<f64>() / tps.len().max(1) as f64;
    let baseline = Cell::new(tps, Unit::PerSec).with_detail(latency_detail(&latencies));
    Ok(Row::new(
        "P1",
        format!(
            "POST /events {event_type} (records: {}), C={c}",
            event_type == "MOTION"
        ),
        camrec,
        Goal::AtLeast(0.5),
    )
    .against(baseline))
}

/// How many turns camrec and pgbench take within one P1 figure: whole seconds each, as pgbench's
/// `-T` counts them; one turn for the smoke's one-second runs.
fn slices(duration: Duration) -> u32 {
    (duration.as_secs() / 5).clamp(1, 2) as u32
}

/// How long one request takes without any SQL: `GET /health` at concurrency 1 through the same
/// load generator. At C=1 the figure above is this hop plus the two statements, against
/// pgbench's two statements alone; when this hop takes half of pgbench's transaction or more, no
/// server in front of the same SQL reaches 0.5× at C=1.
async fn http_floor(ctx: &Ctx) -> anyhow::Result<Row> {
    let target = Target {
        method: "GET",
        url: format!("{}/health", ctx.api.base),
        bearer: ctx.api.token.clone(),
        body: bytes::Bytes::new(),
        expect: 200,
    };
    let run = load::run(&target, 1, ctx.plan.p1_duration).await;
    Ok(Row::new(
        "P1",
        "HTTP round trip alone: GET /health (no SQL), C=1",
        api_cell(&run)?,
        Goal::Info,
    ))
}

/// One row per (type, concurrency), and the HTTP hop alone.
pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let mut rows = Vec::new();
    for event_type in ["MOTION", "ERROR"] {
        for &c in &ctx.plan.p1_concurrency {
            let what = format!("POST /events {event_type}, C={c}");
            tracing::info!("P1: {what}");
            rows.push(
                one(ctx, event_type, c)
                    .await
                    .unwrap_or_else(|e| Row::error("P1", &what, &e)),
            );
        }
    }
    rows.push(
        http_floor(ctx)
            .await
            .unwrap_or_else(|e| Row::error("P1", "HTTP round trip alone", &e)),
    );
    rows
}
