//! P5: CPU and memory per concurrent recording. recorder-worker and every child of it (the
//! FFmpegs) are sampled from /proc while it records N streams; the baseline is N bare FFmpeg
//! processes with the worker's argv recording the same streams. Both are sampled only once every
//! recording has its first frame, after a short settling pause.

use crate::baseline::{BareFfmpeg, DrainedFfmpeg};
use crate::ctx::{wait_all, Ctx};
use crate::procstat::{self, Usage};
use crate::report::{Cell, Goal, Row, Unit};
use camrec_shared::messages::StatusKind;
use recorder_worker::manifest::direct_for;
use std::time::Duration;
use uuid::Uuid;

/// Start-up work (connections, probes, first fragments) is not steady-state cost.
const SETTLE: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_millis(250);

async fn camrec(ctx: &Ctx) -> anyhow::Result<Usage> {
    let n = ctx.plan.p5_recordings;
    let cameras = &ctx.cameras[..ctx.plan.p5_cameras.min(ctx.cameras.len()).max(1)];
    let worker = ctx
        .rig
        .worker
        .pid()
        .ok_or_else(|| anyhow::anyhow!("recorder-worker is not running"))?;
    let mut sub = ctx.statuses().await?;
    let (mut events, mut playbacks): (Vec<Uuid>, Vec<Uuid>) = (Vec::new(), Vec::new());
    for i in 0..n {
        let created = ctx
            .api
            .create_event(cameras[i % cameras.len()].id, "MOTION")
            .await?;
        events.push(created.event.id);
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
    measured
}

/// How many times a bare FFmpeg is started before its camera counts as failed.
const START_ATTEMPTS: u32 = 3;

async fn bare(ctx: &Ctx) -> anyhow::Result<Usage> {
    let n = ctx.plan.p5_recordings;
    let cameras = &ctx.cameras[..ctx.plan.p5_cameras.min(ctx.cameras.len()).max(1)];
    let mut plans = Vec::new();
    for c in cameras {
        plans.push(ctx.worker_plan(c).await?);
    }
    let mut running: Vec<DrainedFfmpeg> = Vec::new();
    let measured = async {
        for i in 0..n {
            let mut plan = plans[i % plans.len()].clone();
            plan.output = ctx.scratch_file("p5.mp4");
            plan.direct = plan.direct.as_ref().map(|_| direct_for(&plan.output));
            // A camera that drops a new client while it serves nine others is tried again, up
            // to START_ATTEMPTS times, as the worker tries again (`START_RETRIES`).
            let mut attempt = 1;
            loop {
                let mut f = BareFfmpeg::spawn(ctx.ffmpeg(), &plan)?;
                let first = f.first_frame(Duration::from_secs(30)).await;
                match first {
                    Err(e) if attempt < START_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "P5 baseline: FFmpeg did not start; trying again");
                        f.stop(Duration::from_secs(2)).await;
                        attempt += 1;
                    }
                    first => {
                        running.push(f.drain_progress());
                        first?;
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(SETTLE).await;
        let pids: Vec<u32> = running.iter().filter_map(DrainedFfmpeg::pid).collect();
        Ok::<_, anyhow::Error>(procstat::sample(&pids, ctx.plan.p5_window, INTERVAL).await?)
    }
    .await;
    for f in running {
        f.stop(Duration::from_secs(5)).await;
    }
    measured
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
    let detail = |u: &Usage, total: String| format!("total {total}, {} processes", u.max_processes);
    vec![
        Row::new(
            "P5",
            format!("CPU {what}"),
            Cell::new(per(mine.cpu_percent), Unit::CpuPercent)
                .with_detail(detail(&mine, format!("{:.1}%", mine.cpu_percent))),
            Goal::AtMost(1.25),
        )
        .against(
            Cell::new(per(base.cpu_percent), Unit::CpuPercent)
                .with_detail(detail(&base, format!("{:.1}%", base.cpu_percent))),
        ),
        Row::new(
            "P5",
            format!("memory (RSS) {what}"),
            Cell::new(per(mine.rss_mib), Unit::MiB)
                .with_detail(detail(&mine, format!("{:.0} MiB", mine.rss_mib))),
            Goal::AtMost(1.25),
        )
        .against(
            Cell::new(per(base.rss_mib), Unit::MiB)
                .with_detail(detail(&base, format!("{:.0} MiB", base.rss_mib))),
        ),
    ]
}
