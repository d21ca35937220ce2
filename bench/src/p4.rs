//! P4: `POST /events` to the first recorded frame (the worker's `recording` status, sent at
//! FFmpeg's first progress block with frames > 0), against a bare FFmpeg with the worker's argv
//! on the same camera, from spawn to its first `frame=` > 0. Samples alternate between the two,
//! each starting after the camera was idle for
//! [`IDLE_BEFORE_SAMPLE`]. The very first event on a camera also pays the worker's
//! probe of the camera (cached afterwards); it is reported on its own row.

use crate::baseline::ffmpeg_first_frame;
use crate::ctx::{wait_status, Ctx};
use crate::report::{Cell, Goal, Row, Unit};
use crate::stats::median;
use camrec_shared::messages::StatusKind;
use recorder_worker::ffmpeg::RecordPlan;
use recorder_worker::manifest::direct_for;
use std::time::{Duration, Instant};

/// Every sample starts after the camera had no client for this long (part of the workload: the
/// fake camera's shared pipeline is in the same state for both).
const IDLE_BEFORE_SAMPLE: Duration = Duration::from_secs(2);
/// How long a playback may take to become `COMPLETED` after its event ended.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(180);

/// One event on camera 0: seconds from the POST to the `recording` status. The recording is
/// ended at once and awaited, so the camera is idle again afterwards.
async fn camrec_sample(ctx: &Ctx) -> anyhow::Result<f64> {
    let camera = &ctx.cameras[0];
    let mut sub = ctx.statuses().await?;
    let posted = Instant::now();
    let created = ctx.api.create_event(camera.id, "MOTION").await?;
    let playback = created
        .playback_id
        .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?;
    let (_, at) = wait_status(
        &mut sub,
        playback,
        StatusKind::Recording,
        Duration::from_secs(60),
    )
    .await?;
    ctx.api.end_event(created.id).await?;
    wait_status(&mut sub, playback, StatusKind::Completed, COMPLETE_TIMEOUT).await?;
    Ok((at - posted).as_secs_f64())
}

/// A bare FFmpeg on camera 0 with the worker's argv (a new output file each time).
async fn baseline_sample(ctx: &Ctx, plan: &RecordPlan) -> anyhow::Result<f64> {
    let mut plan = plan.clone();
    plan.output = ctx.scratch_file("p4.mp4");
    plan.direct = plan.direct.as_ref().map(|_| direct_for(&plan.output));
    let took = ffmpeg_first_frame(ctx.ffmpeg(), &plan).await?;
    let _ = tokio::fs::remove_file(&plan.output).await;
    if let Some(direct) = &plan.direct {
        let _ = tokio::fs::remove_file(direct).await;
    }
    Ok(took.as_secs_f64())
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let what = "POST /events → first recorded frame";
    tracing::info!("P4: {what}");
    let measured = async {
        let cold = camrec_sample(ctx).await?;
        // Probed once: a probe right before a sample would leave the camera's pipeline warm.
        let plan = ctx.worker_plan(&ctx.cameras[0]).await?;
        let (mut camrec, mut base) = (Vec::new(), Vec::new());
        for _ in 0..ctx.plan.p4_samples {
            tokio::time::sleep(IDLE_BEFORE_SAMPLE).await;
            base.push(baseline_sample(ctx, &plan).await?);
            tokio::time::sleep(IDLE_BEFORE_SAMPLE).await;
            camrec.push(camrec_sample(ctx).await?);
        }
        anyhow::Ok((cold, camrec, base))
    }
    .await;
    let (cold, camrec, base) = match measured {
        Ok(m) => m,
        Err(e) => return vec![Row::error("P4", what, &e)],
    };
    let (Some(c), Some(b)) = (median(&camrec), median(&base)) else {
        return vec![Row::error("P4", what, &anyhow::anyhow!("no samples"))];
    };
    let n = camrec.len();
    let baseline = Cell::new(b, Unit::Seconds).with_detail(format!("median of {n}"));
    vec![
        Row::new(
            "P4",
            format!("{what} (camera probed before)"),
            Cell::new(c, Unit::Seconds).with_detail(format!("median of {n}")),
            Goal::AtMost(1.1),
        )
        .against(baseline.clone()),
        Row::new(
            "P4",
            format!("{what}, first event on a camera (includes the worker's probe)"),
            Cell::new(cold, Unit::Seconds),
            Goal::Info,
        )
        .against(baseline),
    ]
}
