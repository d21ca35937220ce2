//! P4: event to the first frame of its clip. Every clip is cut from its camera's capture, so it
//! starts before its event: for every event on a captured camera, `startedAt` of its
//! `completed` status (the wall-clock time of the clip's first frame) minus the event's
//! `occurredAt` must be at most zero (about `-preRollSec`). The distribution is reported beside
//! what an on-demand recorder pays: a fresh FFmpeg with the capture's argv on the same camera,
//! from spawn to its first frame.
//!
//! The events come in rounds: 1, 2 and 5 overlapping events on camera 0, each round counting
//! the RTSP sessions the fake camera serves meanwhile (the capture's one must be all), then
//! rounds of one event on every camera at once.

use crate::baseline::ffmpeg_first_frame;
use crate::ctx::{wait_all, wait_clips, Ctx, ROLLS};
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::stats::median;
use camrec_shared::messages::StatusKind;
use std::time::Duration;
use uuid::Uuid;

/// How long the events of a round stay open together, once each has its first frame.
const OVERLAP: Duration = Duration::from_secs(1);
/// How long a round's playbacks may take to start, and to complete after their events ended.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(180);

/// One round's events, each on the camera given: `startedAt - occurredAt` of each clip, in
/// seconds, and how many clips said they started late.
async fn round(ctx: &Ctx, cameras: &[Uuid]) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut sub = ctx.statuses().await?;
    let mut events = Vec::new();
    for camera in cameras {
        let created = ctx.api.create_event(*camera, "MOTION").await?;
        let playback = created
            .playback_id
            .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?;
        events.push((created.id, playback, created.occurred_at));
    }
    let playbacks: Vec<Uuid> = events.iter().map(|e| e.1).collect();
    wait_all(&mut sub, &playbacks, StatusKind::Recording, START_TIMEOUT).await?;
    // The overlap is the workload (events open together), not a synchronisation.
    tokio::time::sleep(OVERLAP).await;
    for (event, _, _) in &events {
        ctx.api.end_event(*event).await?;
    }
    let clips = wait_clips(&mut sub, &playbacks, COMPLETE_TIMEOUT).await?;
    let mut deltas = Vec::new();
    let mut late = 0;
    for (_, playback, occurred_at) in &events {
        let clip = &clips[playback];
        deltas.push((clip.started_at - *occurred_at).num_milliseconds() as f64 / 1e3);
        late += usize::from(clip.started_late);
    }
    Ok((deltas, late))
}

/// `k` overlapping events on camera 0: the round's deltas, and the most RTSP sessions the
/// camera served at once meanwhile (with the total it accepted).
async fn overlapping(ctx: &Ctx, k: usize) -> anyhow::Result<(Vec<f64>, usize, u64, u64)> {
    let fake = &ctx.rig.cameras[0];
    fake.reset_peak();
    let before = fake.sessions();
    let (deltas, late) = round(ctx, &vec![ctx.cameras[0].id; k]).await?;
    let after = fake.sessions();
    Ok((deltas, late, after.peak, after.total - before.total))
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let what = "event → first frame of its clip (startedAt - occurredAt)";
    tracing::info!("P4: {what}");
    let mut rows = Vec::new();
    let measured = async {
        ctx.captured(u64::from(ROLLS.pre_roll_sec) + 1).await?;
        let mut base = Vec::new();
        for _ in 0..ctx.plan.p4_samples.max(1) {
            let plan = ctx.segment_plan(&ctx.cameras[0]).await?;
            base.push(ffmpeg_first_frame(ctx.ffmpeg(), &plan).await?.as_secs_f64());
            let _ = tokio::fs::remove_dir_all(&plan.dir).await;
        }
        let (mut deltas, mut late) = (Vec::new(), 0);
        for &k in &ctx.plan.p4_overlaps {
            let figure = format!("RTSP sessions at the camera, {k} overlapping events on it");
            match overlapping(ctx, k).await {
                Ok((d, l, peak, opened)) => {
                    deltas.extend(d);
                    late += l;
                    rows.push(Row::new(
                        "P4",
                        figure,
                        Cell::new(peak as f64, Unit::Count)
                            .with_detail(format!("peak; {opened} opened during the round")),
                        Goal::CountAtMost(1.0),
                    ));
                }
                Err(e) => rows.push(Row::error("P4", &figure, &e)),
            }
        }
        let all: Vec<Uuid> = ctx.cameras.iter().map(|c| c.id).collect();
        for _ in 0..ctx.plan.p4_rounds {
            let (d, l) = round(ctx, &all).await?;
            deltas.extend(d);
            late += l;
        }
        anyhow::Ok((deltas, late, base))
    }
    .await;
    let (mut deltas, late, base) = match measured {
        Ok(m) => m,
        Err(e) => {
            rows.push(Row::error("P4", what, &e));
            return rows;
        }
    };
    if deltas.is_empty() {
        rows.push(Row::error("P4", what, &anyhow::anyhow!("no events")));
        return rows;
    }
    deltas.sort_by(f64::total_cmp);
    let n = deltas.len();
    let max = deltas[n - 1];
    let detail = format!(
        "max; p50 {}, p95 {}, min {}; {n} events on {} cameras, preRollSec {}, {late} started late",
        fmt_secs(nearest_rank(&deltas, 50.0)),
        fmt_secs(nearest_rank(&deltas, 95.0)),
        fmt_secs(deltas[0]),
        ctx.cameras.len(),
        ROLLS.pre_roll_sec,
    );
    let baseline =
        Cell::new(median(&base).unwrap_or_default(), Unit::Seconds).with_detail(format!(
            "a fresh FFmpeg's first frame, median of {}: what an on-demand recorder pays",
            base.len()
        ));
    rows.insert(
        0,
        Row::new(
            "P4",
            what,
            Cell::new(max, Unit::Seconds).with_detail(detail),
            Goal::SecondsAtMost(0.0),
        )
        .against(baseline),
    );
    rows
}
