//! P5: CPU and memory per concurrent recording. recorder-worker and every child of it (the
//! FFmpegs) are sampled from /proc while it records N streams; the baseline is N bare FFmpeg
//! processes with the worker's argv recording the same streams.
//!
//! The goal rows are the steady state, what limits how many cameras one host records at once:
//! both sides are sampled once every recording has its first frame, after a short settling
//! pause. What a clip costs once (FFmpeg's start, the finish with its probe and thumbnail) is not
//! hidden: an info row gives each side's CPU over the whole life of a clip, from the request (the
//! spawn) to the finished clip (FFmpeg's exit).

use crate::baseline::{BareFfmpeg, DrainedFfmpeg};
use crate::ctx::{wait_all, Ctx};
use crate::procstat::{self, Usage};
use crate::report::{Cell, Goal, Row, Unit};
use camrec_shared::messages::StatusKind;
use recorder_worker::manifest::direct_for;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Start-up work (connections, probes, first fragments) is not steady-state cost.
const SETTLE: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_millis(250);

/// One side's figures: the steady-state window, and the whole life of its clips.
struct Measured {
    steady: Usage,
    /// CPU seconds of all the clips' lives together.
    life_cpu: f64,
    /// The clips' lives, summed, in seconds (they run side by side).
    life_secs: f64,
    /// Whether the sampled roots are recorder-worker (camrec) rather than bare FFmpegs.
    worker: bool,
}

async fn camrec(ctx: &Ctx) -> anyhow::Result<Measured> {
    let n = ctx.plan.p5_recordings;
    let cameras = &ctx.cameras[..ctx.plan.p5_cameras.min(ctx.cameras.len()).max(1)];
    let worker = ctx
        .rig
        .worker
        .pid()
        .ok_or_else(|| anyhow::anyhow!("recorder-worker is not running"))?;
    let mut sub = ctx.statuses().await?;
    let (born, cpu_before) = (Instant::now(), procstat::cpu_seconds(&[worker])?);
    let (mut events, mut playbacks): (Vec<Uuid>, Vec<Uuid>) = (Vec::new(), Vec::new());
    for i in 0..n {
        let created = ctx
            .api
            .create_event(cameras[i % cameras.len()].id, "MOTION")
            .await?;
        events.push(created.id);
        playbacks.push(
            created
                .playback_id
                .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?,
        );
    }
    let measured = async {
        wait_all(
            &mut sub,
            &playbacks,
            StatusKind::Recording,
            Duration::from_secs(120),
        )
        .await?;
        tokio::time::sleep(SETTLE).await;
        Ok::<_, anyhow::Error>(procstat::sample(&[worker], ctx.plan.p5_window, INTERVAL).await?)
    }
    .await;
    for e in &events {
        ctx.api.end_event(*e).await?;
    }
    wait_all(
        &mut sub,
        &playbacks,
        StatusKind::Completed,
        Duration::from_secs(300),
    )
    .await?;
    let life_cpu = procstat::cpu_seconds(&[worker])? - cpu_before;
    Ok(Measured {
        steady: measured?,
        life_cpu,
        // Requested together, completed together: each life is about the whole span.
        life_secs: born.elapsed().as_secs_f64() * n as f64,
        worker: true,
    })
}

/// How many times a bare FFmpeg is started before its camera counts as failed.
const START_ATTEMPTS: u32 = 3;

async fn bare(ctx: &Ctx) -> anyhow::Result<Measured> {
    let n = ctx.plan.p5_recordings;
    let cameras = &ctx.cameras[..ctx.plan.p5_cameras.min(ctx.cameras.len()).max(1)];
    let mut plans = Vec::new();
    for c in cameras {
        plans.push(ctx.worker_plan(c).await?);
    }
    // Each FFmpeg with its spawn time; they start one after another.
    let mut running: Vec<(Instant, DrainedFfmpeg)> = Vec::new();
    let mut life_secs = 0.0;
    // The bare FFmpegs are children of this process: once reaped, their CPU is in its cutime.
    let reaped_before = procstat::reaped_children_seconds()?;
    let measured = async {
        for i in 0..n {
            let mut plan = plans[i % plans.len()].clone();
            plan.output = ctx.scratch_file("p5.mp4");
            plan.direct = plan.direct.as_ref().map(|_| direct_for(&plan.output));
            // A camera that drops a new client while it serves nine others is tried again, up
            // to START_ATTEMPTS times, as the worker tries again (`START_RETRIES`).
            let mut attempt = 1;
            loop {
                let born = Instant::now();
                let mut f = BareFfmpeg::spawn(ctx.ffmpeg(), &plan)?;
                let first = f.first_frame(Duration::from_secs(30)).await;
                match first {
                    Err(e) if attempt < START_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "P5 baseline: FFmpeg did not start; trying again");
                        f.stop(Duration::from_secs(2)).await;
                        life_secs += born.elapsed().as_secs_f64();
                        attempt += 1;
                    }
                    first => {
                        running.push((born, f.drain_progress()));
                        first?;
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(SETTLE).await;
        let pids: Vec<u32> = running.iter().filter_map(|(_, f)| f.pid()).collect();
        Ok::<_, anyhow::Error>(procstat::sample(&pids, ctx.plan.p5_window, INTERVAL).await?)
    }
    .await;
    for (born, f) in running {
        f.stop(Duration::from_secs(5)).await;
        life_secs += born.elapsed().as_secs_f64();
    }
    let life_cpu = procstat::reaped_children_seconds()? - reaped_before;
    Ok(Measured {
        steady: measured?,
        life_cpu,
        life_secs,
        worker: false,
    })
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let n = ctx.plan.p5_recordings;
    let what = format!("per recording, {n} concurrent recordings");
    tracing::info!("P5: {what}");
    let measured = async { anyhow::Ok((bare(ctx).await?, camrec(ctx).await?)) }.await;
    let (base, mine) = match measured {
        Ok(m) => m,
        Err(e) => return vec![Row::error("P5", &what, &e)],
    };
    let per = |v: f64| v / n as f64;
    let detail = |m: &Measured| {
        let u = &m.steady;
        let mut d = format!("total {:.1}%, {} processes", u.cpu_percent, u.max_processes);
        if m.worker {
            d.push_str(&format!(", worker itself {:.2}%", u.roots_cpu_percent));
        }
        d
    };
    let rss = |u: &Usage| format!("total {:.0} MiB, {} processes", u.rss_mib, u.max_processes);
    // The whole life of a clip, and what of it the steady rate does not explain: the one-off
    // work of starting and finishing it.
    let life = |m: &Measured| {
        // The steady rate of one recording over the clips' lives; the rest is one-off work.
        let steady = per(m.steady.cpu_percent) / 100.0 * m.life_secs;
        Cell::new(per(m.life_cpu), Unit::CpuSeconds).with_detail(format!(
            "life {:.1} s; beyond the steady rate {}",
            per(m.life_secs),
            crate::report::fmt_secs(per(m.life_cpu - steady))
        ))
    };
    vec![
        Row::new(
            "P5",
            format!("CPU {what}, steady state"),
            Cell::new(per(mine.steady.cpu_percent), Unit::CpuPercent).with_detail(detail(&mine)),
            Goal::AtMost(1.25),
        )
        .against(
            Cell::new(per(base.steady.cpu_percent), Unit::CpuPercent).with_detail(detail(&base)),
        ),
        Row::new(
            "P5",
            format!("memory (RSS) {what}"),
            Cell::new(per(mine.steady.rss_mib), Unit::MiB).with_detail(rss(&mine.steady)),
            Goal::AtMost(1.25),
        )
        .against(Cell::new(per(base.steady.rss_mib), Unit::MiB).with_detail(rss(&base.steady))),
        Row::new(
            "P5",
            "CPU per clip over its whole life (request to finished clip; spawn to exit)",
            life(&mine),
            Goal::Info,
        )
        .against(life(&base)),
    ]
}
