//! P6: projection lag. For a playback of the idle camera (no worker records it), the bench plays
//! the worker: it publishes `recording`, then `progress` messages with growing frame counts to
//! PLAYBACKS (waiting for each ack) and times how long until `GET /playbacks/:id` (polled every
//! 5 ms) shows each one.

use crate::ctx::Ctx;
use crate::report::{fmt_secs, Cell, Goal, Row, Unit};
use crate::rig::IDLE_SITE;
use crate::stats::Latencies;
use async_nats::jetstream::context::Publish;
use camrec_shared::messages::{Envelope, PlaybackStatus, StatusBody};
use camrec_shared::subjects::{playback_subject, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(5);
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Player {
    playback: PlaybackId,
    event: EventId,
    camera: CameraId,
    site: Site,
    seq: u64,
}

impl Player {
    /// Publishes `body` as the next status and waits for the stream's ack.
    async fn publish(
        &mut self,
        js: &async_nats::jetstream::Context,
        body: StatusBody,
    ) -> anyhow::Result<()> {
        self.seq += 1;
        let status = PlaybackStatus {
            playback_id: self.playback,
            event_id: self.event,
            camera_id: self.camera,
            site: self.site.clone(),
            worker_id: "bench".into(),
            seq: self.seq,
            takes_over_from: None,
            body,
        };
        let subject = playback_subject(status.body.kind(), &self.site, self.camera);
        let publish = Publish::build()
            .payload(
                Envelope::new(chrono::Utc::now(), status.clone())
                    .to_bytes()
                    .into(),
            )
            .message_id(status.msg_id());
        js.send_publish(subject, publish).await?.await?;
        Ok(())
    }
}

/// Polls the playback until `check` accepts it; returns when it did.
async fn visible(
    ctx: &Ctx,
    playback: uuid::Uuid,
    check: impl Fn(&crate::api::PlaybackView) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        let view = ctx.api.playback(playback).await?;
        let now = Instant::now();
        if check(&view) {
            return Ok(now);
        }
        anyhow::ensure!(
            now < deadline,
            "the status did not show within {VISIBLE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Latencies> {
    let created = ctx.api.create_event(ctx.idle_camera.id, "MOTION").await?;
    let playback = created
        .playback_id
        .ok_or_else(|| anyhow::anyhow!("MOTION did not create a playback"))?;
    let mut player = Player {
        playback: PlaybackId(playback),
        event: EventId(created.id),
        camera: CameraId(ctx.idle_camera.id),
        site: Site::new(IDLE_SITE)?,
        seq: 0,
    };
    player
        .publish(
            &ctx.js,
            StatusBody::Recording {
                started_at: chrono::Utc::now(),
            },
        )
        .await?;
    visible(ctx, playback, |p| p.recording_status == "RECORDING").await?;
    let mut lags = Vec::with_capacity(ctx.plan.p6_samples);
    for frames in 1..=ctx.plan.p6_samples as u64 {
        let sent = Instant::now();
        let body = StatusBody::Progress {
            frames,
            fps: Some(25.0),
            bitrate_kbps: Some(800.0),
            bytes: frames * 4000,
            media_time_sec: frames as f64 / 25.0,
        };
        player.publish(&ctx.js, body).await?;
        let seen = visible(ctx, playback, |p| {
            p.progress.as_ref().and_then(|g| g.frames) == Some(frames)
        })
        .await?;
        lags.push(seen - sent);
    }
    ctx.api.end_event(created.id).await?;
    Ok(Latencies::new(lags))
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let what = "projection lag, status published → visible in GET /playbacks/:id";
    tracing::info!("P6: {what}");
    match measure(ctx).await {
        Ok(l) => {
            let detail = format!(
                "{} samples, polled every {}",
                l.len(),
                fmt_secs(POLL.as_secs_f64())
            );
            vec![
                Row::new(
                    "P6",
                    format!("{what}, p50"),
                    Cell::new(l.p50().as_secs_f64(), Unit::Seconds).with_detail(detail.clone()),
                    Goal::Info,
                ),
                Row::new(
                    "P6",
                    format!("{what}, p99"),
                    Cell::new(l.p99().as_secs_f64(), Unit::Seconds).with_detail(detail),
                    Goal::Info,
                ),
            ]
        }
        Err(e) => vec![Row::error("P6", what, &e)],
    }
}
