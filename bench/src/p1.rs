//! P1: `POST /events` capacity. The goal: MOTION (a type that records: event, playback and
//! outbox row in one transaction) sustains ≥ [`GOAL_RATE`] requests/s with p99 ≤ [`GOAL_P99`]
//! from [`GOAL_CLIENTS`] closed-loop clients. The other types and concurrencies are info rows.
//! Beside each run, pgbench runs the same transaction against the same database for the same
//! time ([`pgbench`]): an info baseline with its ratio.
//!
//! Each run starts with an empty outbox, so the relay's publishing of an earlier run's rows does
//! not share the CPU with it; within a run the relay publishes that run's rows, for camrec and
//! pgbench alike.

use crate::ctx::Ctx;
use crate::load::{self, LoadRun, Target};
use crate::pgbench;
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::stats::Latencies;
use std::time::Duration;

/// The goal's concurrency, rate and p99 (about 30,000 cameras at one event a minute).
pub const GOAL_CLIENTS: usize = 16;
pub const GOAL_RATE: f64 = 500.0;
pub const GOAL_P99: Duration = Duration::from_millis(50);

/// How long the relay may take to publish what the previous run left in the outbox.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

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
    Ok(Cell::new(run.throughput(), Unit::PerSec)
        .with_detail(detail)
        .with_p99(run.latencies.p99()))
}

/// The goal for `event_type` at `c` clients: the capacity goal, or none (info).
fn goal(event_type: &str, c: usize) -> Goal {
    if event_type == "MOTION" && c == GOAL_CLIENTS {
        Goal::RateAndP99 {
            per_sec: GOAL_RATE,
            p99_sec: GOAL_P99.as_secs_f64(),
        }
    } else {
        Goal::Info
    }
}

/// camrec at `c` closed-loop clients, then pgbench with as many, each for the plan's duration.
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
    let created = ctx.created_message()?;
    let recording =
        (event_type == "MOTION").then_some((created.subject.as_str(), created.payload.as_slice()));
    let script = pgbench::script(event_type, recording);
    ctx.outbox_drained(DRAIN_TIMEOUT).await?;
    let camrec = api_cell(&load::run(&target, c, ctx.plan.p1_duration).await)?;
    ctx.outbox_drained(DRAIN_TIMEOUT).await?;
    let baseline = pgbench::run(&pgbench_run(ctx, c)?, &script).await?;
    let baseline =
        Cell::new(baseline.tps, Unit::PerSec).with_detail(latency_detail(&baseline.latencies));
    Ok(Row::new(
        "P1",
        format!("POST /events {event_type}, C={c}"),
        camrec,
        goal(event_type, c),
    )
    .against(baseline))
}

/// One row per (type, concurrency); MOTION at [`GOAL_CLIENTS`] is the goal row.
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
    rows
}
