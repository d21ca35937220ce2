//! P3: from `POST /events/:id/end` to the `playback.completed` message for clips of a given
//! length, against ffprobe plus a plain object_store upload of the same final file to the same
//! S3 server. The time until `GET /playbacks/:id` shows `COMPLETED` is printed beside it.
//!
//! Live latency, measured on the same clips while they record: from the capture of a segment's
//! first frame (its wall-clock start) to the moment the segment is listed under the playback's
//! prefix in the store, which is what the live playlist lists (a listing polled every 100 ms);
//! only segments that started after the event (the pre-roll is uploaded at the start). Its
//! baseline is the segment's own length: a segment cannot be listed before it is closed.

use crate::baseline::probe_and_upload;
use crate::ctx::{wait_status, Ctx};
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::stats::median;
use camrec_shared::messages::{StatusBody, StatusKind};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Polls `GET /playbacks/:id` every 20 ms until it shows `COMPLETED`.
async fn api_completed(ctx: &Ctx, playback: Uuid) -> anyhow::Result<Instant> {
    testkit::wait_until(
        Duration::from_secs(30),
        "COMPLETED through the API",
        || async {
            ctx.api
                .playback(playback)
                .await
                .ok()
                .filter(|p| p.recording_status == "COMPLETED")
                .map(|_| Instant::now())
        },
    )
    .await
}

/// What a clip's recording measured.
struct Clip {
    took: Duration,
    visible: Duration,
    key: String,
    /// Per segment started after the event: (listed - first frame, segment length), seconds.
    live: Vec<(f64, f64)>,
}

/// Polls the playback's segment listing every 100 ms until `stop`; returns, per segment that
/// started after `since`, how long after its first frame it was first listed, and its length.
async fn watch_listing(
    storage: camrec_shared::storage::Storage,
    playback: Uuid,
    since: chrono::DateTime<chrono::Utc>,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<(f64, f64)> {
    let mut seen = std::collections::BTreeMap::new();
    while !stop.is_cancelled() {
        let now = chrono::Utc::now();
        for (n, _) in stored_segments(&storage, playback).await {
            if n.start_ms >= since.timestamp_millis() {
                seen.entry(n.start_ms).or_insert((
                    (now.timestamp_millis() - n.start_ms) as f64 / 1e3,
                    f64::from(n.duration_ms) / 1e3,
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.into_values().collect()
}

/// The playback's segments listed under its live prefix, with their sizes (none when the
/// listing fails).
pub async fn stored_segments(
    storage: &camrec_shared::storage::Storage,
    playback: Uuid,
) -> Vec<(camrec_shared::storage::SegmentName, u64)> {
    use camrec_shared::storage::{segments_prefix, ObjectKey};
    let prefix = ObjectPath::from(segments_prefix(camrec_shared::PlaybackId(playback)));
    let listed: Vec<object_store::ObjectMeta> = storage
        .store()
        .list(Some(&prefix))
        .filter_map(|m| async move { m.ok() })
        .collect()
        .await;
    listed
        .iter()
        .filter_map(|m| match ObjectKey::parse(m.location.as_ref()) {
            Some(ObjectKey::Segment(_, n)) => Some((n, m.size)),
            _ => None,
        })
        .collect()
}

/// Records `secs` seconds on camera 0, ends the event; returns what it measured.
async fn camrec_clip(ctx: &Ctx, secs: u64) -> anyhow::Result<Clip> {
    let camera = &ctx.cameras[0];
    let mut sub = ctx.statuses().await?;
    let created = ctx.api.create_event(camera.id, "MOTION").await?;
    let playback = created
        .playback_id
        .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?;
    let since = chrono::Utc::now();
    wait_status(
        &mut sub,
        playback,
        StatusKind::Recording,
        Duration::from_secs(60),
    )
    .await?;
    let stop_watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_listing(
        ctx.rig.s3.storage()?,
        playback,
        since,
        stop_watching.clone(),
    ));
    // The clip's length is the workload, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop_watching.cancel();
    let live = watcher.await.unwrap_or_default();
    // The end's first hops, for the log: the API's answer and the relay's publish to NATS
    // (seen by a plain subscription to the subject).
    let mut published = ctx
        .nats
        .subscribe(format!("event.ended.*.{}", camera.id))
        .await?;
    ctx.nats.flush().await?;
    let mut seen = tokio::spawn(async move { published.next().await.map(|_| Instant::now()) });
    let ended = Instant::now();
    ctx.api.end_event(created.id).await?;
    let answered = ended.elapsed();
    let (done, at) = wait_status(
        &mut sub,
        playback,
        StatusKind::Completed,
        Duration::from_secs(300),
    )
    .await?;
    let visible = api_completed(ctx, playback).await?;
    let hop = tokio::time::timeout(Duration::from_secs(1), &mut seen).await;
    seen.abort();
    if let Ok(Ok(Some(seen))) = hop {
        tracing::info!(
            answered_ms = answered.as_secs_f64() * 1e3,
            published_ms = (seen - ended).as_secs_f64() * 1e3,
            completed_ms = (at - ended).as_secs_f64() * 1e3,
            "P3: the end answered by the API, published by the relay, completed"
        );
    }
    let StatusBody::Completed(clip) = done.body else {
        anyhow::bail!("a completed status without its clip");
    };
    Ok(Clip {
        took: at - ended,
        visible: visible - ended,
        key: clip.object_key,
        live,
    })
}

/// One clip of `secs`: (end → completed, end → visible, baseline, MiB, live latencies).
async fn sample(ctx: &Ctx, secs: u64) -> anyhow::Result<(f64, f64, f64, f64, Vec<(f64, f64)>)> {
    let Clip {
        took,
        visible,
        key,
        live,
    } = camrec_clip(ctx, secs).await?;
    let stored = ctx
        .rig
        .s3
        .object_path(&key)
        .ok_or_else(|| anyhow::anyhow!("the S3 server does not hold {key}"))?;
    let file = ctx.scratch_file("clip.mp4");
    tokio::fs::copy(&stored, &file).await?;
    let size_mib = tokio::fs::metadata(&file).await?.len() as f64 / (1024.0 * 1024.0);
    let storage = ctx.rig.s3.storage()?;
    let target = ObjectPath::from(format!("bench/{}/video.mp4", Uuid::new_v4()));
    let base = probe_and_upload(ctx.ffprobe(), &file, storage.store(), &target).await?;
    Ok((
        took.as_secs_f64(),
        visible.as_secs_f64(),
        base.as_secs_f64(),
        size_mib,
        live,
    ))
}

async fn one(
    ctx: &Ctx,
    secs: u64,
    samples: usize,
    live: &mut Vec<(f64, f64)>,
) -> anyhow::Result<Row> {
    let (mut took, mut visible, mut base, mut size_mib) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
    for _ in 0..samples.max(1) {
        let s = sample(ctx, secs).await?;
        took.push(s.0);
        visible.push(s.1);
        base.push(s.2);
        size_mib = s.3;
        live.extend(s.4);
    }
    let of = if took.len() > 1 {
        format!(", median of {}", took.len())
    } else {
        String::new()
    };
    let mid = |v: &[f64]| median(v).unwrap_or_default();
    // Issue 17: ready at once, whatever the length.
    let goal = Goal::SecondsAtMost(1.0);
    Ok(Row::new(
        "P3",
        format!("event.ended → COMPLETED, {secs} s clip ({size_mib:.1} MiB)"),
        Cell::new(mid(&took), Unit::Seconds).with_detail(format!(
            "{} until the API shows it{of}",
            fmt_secs(mid(&visible))
        )),
        goal,
    )
    .against(match of.strip_prefix(", ") {
        Some(median_of) => Cell::new(mid(&base), Unit::Seconds).with_detail(median_of),
        None => Cell::new(mid(&base), Unit::Seconds),
    }))
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut live = Vec::new();
    for &(secs, samples) in &ctx.plan.p3_clips_sec {
        let what = format!("event.ended → COMPLETED, {secs} s clip");
        tracing::info!("P3: {what}");
        rows.push(
            one(ctx, secs, samples, &mut live)
                .await
                .unwrap_or_else(|e| Row::error("P3", &what, &e)),
        );
    }
    rows.push(live_row(&live));
    rows
}

/// The live-latency row: p95 of (listed - first frame) against the segments' median length;
/// goal: at most a segment's length plus 1 s.
fn live_row(live: &[(f64, f64)]) -> Row {
    let what = "live: a segment's first frame → listed in the live playlist, p95";
    if live.is_empty() {
        return Row::error("P3", what, &anyhow::anyhow!("no segment was listed"));
    }
    let mut latencies: Vec<f64> = live.iter().map(|l| l.0).collect();
    latencies.sort_by(f64::total_cmp);
    let p95 =
        latencies[((latencies.len() as f64 * 0.95).ceil() as usize).clamp(1, latencies.len()) - 1];
    let p50 = latencies[latencies.len() / 2];
    let lengths: Vec<f64> = live.iter().map(|l| l.1).collect();
    let segment = median(&lengths).unwrap_or(1.0);
    Row::new(
        "P3",
        what,
        Cell::new(p95, Unit::Seconds).with_detail(format!(
            "p50 {}, max {}, {} segments",
            fmt_secs(p50),
            fmt_secs(latencies[latencies.len() - 1]),
            latencies.len()
        )),
        Goal::SecondsAtMost(segment + 1.0),
    )
    .against(Cell::new(segment, Unit::Seconds).with_detail("the segment's length (median)"))
}
