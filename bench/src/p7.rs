//! P7 (issue 17's upload figure, "the old P7"): while several cameras record at once, the
//! segment bytes the worker stores per second, against a plain object_store uploader of the same
//! segment files in the same window.

use crate::ctx::{wait_all, Ctx};
use crate::report::{Cell, Goal, Row, Unit};
use camrec_shared::messages::StatusKind;
use object_store::path::Path as ObjectPath;
use std::time::Duration;
use uuid::Uuid;

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let what =
        format!("upload: segment bytes stored while {UPLOAD_CAMERAS} cameras record at once");
    tracing::info!("P7: {what}");
    vec![upload_row(ctx, &what)
        .await
        .unwrap_or_else(|e| Row::error("P7", &what, &e))]
}

/// How many cameras record at once for the upload row, and for how long (5 s in the smoke).
const UPLOAD_CAMERAS: usize = 4;
const UPLOAD_WINDOW: Duration = Duration::from_secs(30);

/// The upload row: `UPLOAD_CAMERAS` cameras record at once; over `UPLOAD_WINDOW`, the bytes of
/// the segments (started in the window) that the worker has stored under the playbacks' live
/// prefixes by the window's end, per second, against a plain uploader that watches the same
/// cameras' capture directories and puts each new segment file with object_store as it
/// appears (to another prefix of the same S3 server), counted the same way. Both are bounded by
/// what the cameras produce: the ratio says whether camrec's upload keeps pace with capture as
/// a plain upload of the same bytes does. Goal: at least 0.8x.
async fn upload_row(ctx: &Ctx, what: &str) -> anyhow::Result<Row> {
    let cameras = &ctx.cameras[..UPLOAD_CAMERAS.min(ctx.cameras.len())];
    let mut sub = ctx.statuses().await?;
    let mut events = Vec::new();
    for camera in cameras {
        let created = ctx.api.create_event(camera.id, "MOTION").await?;
        let playback = created
            .playback_id
            .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?;
        events.push((created.id, playback));
    }
    let playbacks: Vec<Uuid> = events.iter().map(|&(_, p)| p).collect();
    wait_all(
        &mut sub,
        &playbacks,
        StatusKind::Recording,
        Duration::from_secs(60),
    )
    .await?;
    let since = chrono::Utc::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let storage = ctx.rig.s3.storage()?;
    let plain: Vec<_> = cameras
        .iter()
        .map(|c| {
            let dir = ctx
                .rig
                .record_dir
                .join(recorder_worker::placement::CAPTURE_DIR)
                .join(c.id.to_string());
            tokio::spawn(plain_uploader(dir, storage.clone(), since, stop.clone()))
        })
        .collect();
    // The window is the workload, not a synchronisation.
    let window = if ctx.plan.quick {
        Duration::from_secs(5)
    } else {
        UPLOAD_WINDOW
    };
    tokio::time::sleep(window).await;
    stop.cancel();
    let window = (chrono::Utc::now() - since).num_milliseconds() as f64 / 1e3;
    let mut camrec_bytes = 0u64;
    for &(_, playback) in &events {
        camrec_bytes += live_bytes_since(&storage, playback, since).await;
    }
    let mut plain_bytes = 0u64;
    for task in plain {
        plain_bytes += task.await?;
    }
    for &(event, _) in &events {
        ctx.api.end_event(event).await?;
    }
    wait_all(
        &mut sub,
        &playbacks,
        StatusKind::Completed,
        Duration::from_secs(120),
    )
    .await?;
    anyhow::ensure!(plain_bytes > 0, "the plain uploader stored nothing");
    Ok(Row::new(
        "P7",
        what,
        Cell::new(camrec_bytes as f64 / window, Unit::BytesPerSec).with_detail(format!(
            "{:.1} MiB of segments in {window:.1} s, {} cameras",
            camrec_bytes as f64 / (1024.0 * 1024.0),
            cameras.len()
        )),
        Goal::AtLeast(0.8),
    )
    .against(
        Cell::new(plain_bytes as f64 / window, Unit::BytesPerSec).with_detail(format!(
            "plain object_store puts of the same segment files, {:.1} MiB",
            plain_bytes as f64 / (1024.0 * 1024.0)
        )),
    ))
}

/// The bytes of the playback's stored segments that started at or after `since`.
async fn live_bytes_since(
    storage: &camrec_shared::storage::Storage,
    playback: Uuid,
    since: chrono::DateTime<chrono::Utc>,
) -> u64 {
    crate::p3::stored_segments(storage, playback)
        .await
        .iter()
        .filter(|(n, _)| n.start_ms >= since.timestamp_millis())
        .map(|(_, size)| size)
        .sum()
}

/// The baseline of the upload row: every 100 ms, each segment file in the camera's capture
/// directory that started at or after `since` and is not stored yet is put, in order, with a
/// plain object_store `put`; returns the bytes stored until `stop`.
async fn plain_uploader(
    dir: std::path::PathBuf,
    storage: camrec_shared::storage::Storage,
    since: chrono::DateTime<chrono::Utc>,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let mut done = std::collections::BTreeSet::new();
    let mut stored = 0u64;
    let prefix = format!("bench/plain/{}", Uuid::new_v4());
    while !stop.is_cancelled() {
        let segments = recorder_worker::capture::segment::segments_in(&dir)
            .await
            .unwrap_or_default();
        for s in segments {
            if s.start < since || done.contains(&s.start) || stop.is_cancelled() {
                continue;
            }
            let Ok(bytes) = tokio::fs::read(&s.path).await else {
                continue;
            };
            let name = s.path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
            let target = ObjectPath::from(format!("{prefix}/{name}"));
            let size = bytes.len() as u64;
            if storage.store().put(&target, bytes.into()).await.is_ok() && !stop.is_cancelled() {
                stored += size;
            }
            done.insert(s.start);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stored
}
