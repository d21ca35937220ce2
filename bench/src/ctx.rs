//! What every figure's measurement shares: the sizes of the run ([`Plan`]), the rig, a logged-in
//! API client, NATS and database connections, the cameras as event-api knows them (each
//! captured by the worker from its creation on), and the helpers that wait for the captures and
//! for a playback's status messages.

use crate::api::{Api, Rolls};
use crate::p1::GOAL_CLIENTS;
use crate::rig::{Rig, ADMIN_USERNAME, IDLE_SITE, RECORDING_SITE};
use anyhow::Context as _;
use camrec_shared::messages::{
    CompletedClip, Envelope, EventCreated, EventType, PlaybackStatus, RecordingLimits, StatusBody,
    StatusKind,
};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::subjects::{event_msg_id, event_subject, EventKind, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use event_api::store::outbox::OutboxMessage;
use futures::StreamExt;
use recorder_worker::ffmpeg::SegmentPlan;
use recorder_worker::probe::{probe_source, SourceInfo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The sizes of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub p1_concurrency: Vec<usize>,
    pub p1_duration: Duration,
    pub p2_backlog: usize,
    /// How long P2 posts its steady 200 events/s.
    pub p2_steady: Duration,
    /// (clip length in seconds, samples): the figure is the median of the samples.
    pub p3_clips_sec: Vec<(u64, usize)>,
    /// Samples of P4's baseline (a fresh FFmpeg's first frame).
    pub p4_samples: usize,
    /// P4's overlapping events on one camera, one round each (RTSP sessions counted).
    pub p4_overlaps: Vec<usize>,
    /// P4's further rounds of one event on every camera at once.
    pub p4_rounds: usize,
    /// The worker's `RING_MARGIN_SEC`.
    pub ring_margin_sec: u64,
    /// The cameras the worker captures (P5's N).
    pub p5_cameras: usize,
    pub p5_window: Duration,
    pub p6_samples: usize,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            quick: false,
            p1_concurrency: vec![1, GOAL_CLIENTS, 64],
            p1_duration: Duration::from_secs(10),
            p2_backlog: 20_000,
            p2_steady: Duration::from_secs(20),
            p3_clips_sec: vec![(10, 3), (60, 1), (600, 1)],
            p4_samples: 5,
            p4_overlaps: vec![1, 2, 5],
            p4_rounds: 4,
            // The worker's default.
            ring_margin_sec: 30,
            p5_cameras: 5,
            p5_window: Duration::from_secs(20),
            p6_samples: 200,
        }
    }

    /// A smoke: every figure once, tiny counts, a few seconds each.
    pub fn quick() -> Self {
        Self {
            quick: true,
            p1_concurrency: vec![1, GOAL_CLIENTS, 64],
            p1_duration: Duration::from_secs(1),
            p2_backlog: 200,
            p2_steady: Duration::from_secs(2),
            // Long enough that a segment starting after the event is listed while it records
            // (up to a segment after the event, then its own length, then its upload).
            p3_clips_sec: vec![(4, 1)],
            p4_samples: 1,
            p4_overlaps: vec![1, 2, 5],
            p4_rounds: 0,
            // A short ring, so that it is full by the time P5 measures it.
            ring_margin_sec: 2,
            p5_cameras: 1,
            p5_window: Duration::from_secs(3),
            p6_samples: 10,
        }
    }
}

/// A camera as event-api knows it; `cameras[i]` is the rig's fake camera `i`.
#[derive(Clone, Debug)]
pub struct Camera {
    pub id: Uuid,
    pub url: RtspUrl,
}

/// The rolls of every camera of the worker's site: the default pre-roll, and no post-roll, so
/// that P3's end → completed holds no deliberate wait.
pub const ROLLS: Rolls = Rolls {
    pre_roll_sec: 5,
    post_roll_sec: 0,
};

/// The FFmpeg settings the worker uses by default (`RTSP_TIMEOUT_SEC`, `SEGMENT_SEC`).
pub const WORKER_IO_TIMEOUT: Duration = Duration::from_secs(10);
pub const WORKER_SEGMENT: Duration = Duration::from_secs(1);
/// How long a camera may take to be captured for the time asked after its creation (placed
/// within 10 s, connected, then up to a full ring of segments).
const CAPTURED_WITHIN: Duration = Duration::from_secs(180);

pub struct Ctx {
    pub plan: Plan,
    pub rig: Rig,
    pub api: Api,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub db: sqlx::PgPool,
    /// Cameras on the worker's site, one per fake camera.
    pub cameras: Vec<Camera>,
    /// A camera on a site no worker serves (its URL points nowhere).
    pub idle_camera: Camera,
    pub scratch: tempfile::TempDir,
}

impl Ctx {
    pub async fn new(plan: Plan, rig: Rig) -> anyhow::Result<Self> {
        let api = Api::login(&rig.api_url, ADMIN_USERNAME, &rig.admin_password).await?;
        let mut cameras = Vec::new();
        for (i, cam) in rig.cameras.iter().enumerate() {
            let url = cam.url();
            let id = api
                .create_camera(
                    &format!("bench-cam-{i}"),
                    &url,
                    i as i32 + 1,
                    RECORDING_SITE,
                    ROLLS,
                )
                .await?;
            cameras.push(Camera { id, url });
        }
        let idle_url = RtspUrl::parse(
            "rtsp://admin:bench-password@192.0.2.10:554/cam/realmonitor?channel=1&subtype=0",
        )?;
        let idle_camera = Camera {
            id: api
                .create_camera("bench-idle", &idle_url, 1, IDLE_SITE, ROLLS)
                .await?,
            url: idle_url,
        };
        // The bench watches streams and plants messages as the harness's administrator.
        let nats = camrec_shared::natsconn::NatsConfig::from_url(
            &rig.nats.url_as(testkit::NatsUser::Admin),
        )?
        .connect("_INBOX")
        .await?;
        let js = async_nats::jetstream::new(nats.clone());
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&rig.database_url())
            .await?;
        Ok(Self {
            plan,
            rig,
            api,
            nats,
            js,
            db,
            cameras,
            idle_camera,
            scratch: tempfile::Builder::new()
                .prefix("camrec-bench-work-")
                .tempdir()?,
        })
    }

    pub fn ffmpeg(&self) -> &Path {
        Path::new("ffmpeg")
    }

    pub fn ffprobe(&self) -> &Path {
        Path::new("ffprobe")
    }

    /// A fresh file name in the scratch directory.
    pub fn scratch_file(&self, name: &str) -> PathBuf {
        self.scratch
            .path()
            .join(format!("{}-{name}", Uuid::new_v4().simple()))
    }

    /// The capture's FFmpeg plan for `camera` (`segment_argv`'s input, the baselines' argv),
    /// writing into a fresh scratch directory.
    pub async fn segment_plan(&self, camera: &Camera) -> anyhow::Result<SegmentPlan> {
        let source: SourceInfo = probe_source(self.ffprobe(), &camera.url, WORKER_IO_TIMEOUT)
            .await
            .context("probing the camera")?;
        let dir = self.scratch_file("segments");
        tokio::fs::create_dir_all(&dir).await?;
        Ok(SegmentPlan {
            input: camera.url.clone(),
            dir,
            prefix: "bare_".into(),
            segment: WORKER_SEGMENT,
            io_timeout: WORKER_IO_TIMEOUT,
            source,
        })
    }

    /// The worker's ring directory of `camera`.
    pub fn ring_dir(&self, camera: &Camera) -> PathBuf {
        self.rig
            .record_dir
            .join(recorder_worker::placement::CAPTURE_DIR)
            .join(camera.id.to_string())
    }

    /// Waits until the worker has captured every camera for at least `secs` seconds (longer
    /// than its pre-roll: a clip can start `preRollSec` before its event; longer than the ring:
    /// the ring is full).
    pub async fn captured(&self, secs: u64) -> anyhow::Result<()> {
        let full = chrono::TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
        for camera in &self.cameras {
            testkit::wait_until(CAPTURED_WITHIN, "a camera captured", || async {
                let status = self.api.capture_status(camera.id).await.ok()??;
                let since = status.since?;
                (status.state == "capturing" && chrono::Utc::now() - since >= full).then_some(())
            })
            .await
            .with_context(|| format!("camera {} is not captured", camera.id))?;
        }
        Ok(())
    }

    /// A fresh `event.created` message for the idle camera, as event-api queues it for a MOTION
    /// event (new event and playback ids; the message id `<event_id>:created`).
    pub fn created_message(&self) -> anyhow::Result<OutboxMessage> {
        let site = Site::new(IDLE_SITE)?;
        let camera_id = CameraId(self.idle_camera.id);
        let event_id = EventId::new();
        let env = Envelope::new(
            chrono::Utc::now(),
            EventCreated {
                event_id,
                playback_id: PlaybackId::new(),
                camera_id,
                camera_name: "bench-idle".into(),
                site: site.clone(),
                event_type: EventType::Motion,
                rtsp_url: self.idle_camera.url.clone(),
                password_sealed: None,
                limits: RecordingLimits {
                    max_duration_sec: 3600,
                    pre_roll_sec: 0,
                    post_roll_sec: 0,
                },
                occurred_at: None,
            },
        );
        Ok(OutboxMessage {
            subject: event_subject(EventKind::Created, &site, camera_id),
            msg_id: event_msg_id(event_id, EventKind::Created),
            payload: env.to_bytes(),
        })
    }

    /// Waits until the outbox relay has published every row (earlier work must not run under
    /// the next measurement).
    pub async fn outbox_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let db = &self.db;
        testkit::wait_until(timeout, "an empty outbox", || async {
            unpublished(db).await.ok().filter(|n| *n == 0).map(|_| ())
        })
        .await
    }

    /// Subscribes (core NATS) to every status of the worker's site.
    pub async fn statuses(&self) -> anyhow::Result<async_nats::Subscriber> {
        let sub = self
            .nats
            .subscribe(format!("playback.*.{RECORDING_SITE}.>"))
            .await?;
        // The subscription is registered once the server answered a round trip.
        self.nats.flush().await?;
        Ok(sub)
    }
}

/// How many outbox rows wait to be published (not yet published, not dead-lettered).
pub async fn unpublished(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL",
    )
    .fetch_one(db)
    .await?)
}

/// A status message: the envelope of the messaging contract, or a bare status.
pub fn decode_status(payload: &[u8]) -> Option<PlaybackStatus> {
    Envelope::<PlaybackStatus>::from_slice(payload)
        .map(|e| e.payload)
        .ok()
        .or_else(|| serde_json::from_slice(payload).ok())
}

/// Reads `sub` until a status of `playback` has kind `want`; returns it and when it arrived. A
/// `failed` status of that playback ends the wait with its code and message.
pub async fn wait_status(
    sub: &mut async_nats::Subscriber,
    playback: Uuid,
    want: StatusKind,
    timeout: Duration,
) -> anyhow::Result<(PlaybackStatus, Instant)> {
    let wait = async {
        while let Some(msg) = sub.next().await {
            let at = Instant::now();
            let Some(status) = decode_status(&msg.payload) else {
                continue;
            };
            if status.playback_id.0 != playback {
                continue;
            }
            if let StatusBody::Failed { code, message } = &status.body {
                anyhow::bail!("playback {playback} failed: {} ({message})", code.as_str());
            }
            if status.body.kind() == want {
                return Ok((status, at));
            }
        }
        anyhow::bail!("the status subscription ended")
    };
    tokio::time::timeout(timeout, wait).await.with_context(|| {
        format!(
            "no `{}` status for playback {playback} within {timeout:?}",
            want.as_token()
        )
    })?
}

/// Reads `sub` until every playback of `playbacks` has completed; returns their clips.
pub async fn wait_clips(
    sub: &mut async_nats::Subscriber,
    playbacks: &[Uuid],
    timeout: Duration,
) -> anyhow::Result<HashMap<Uuid, CompletedClip>> {
    let mut clips = HashMap::new();
    let wait = async {
        while clips.len() < playbacks.len() {
            let Some(msg) = sub.next().await else {
                anyhow::bail!("the status subscription ended");
            };
            let Some(status) = decode_status(&msg.payload) else {
                continue;
            };
            let id = status.playback_id.0;
            if !playbacks.contains(&id) {
                continue;
            }
            match status.body {
                StatusBody::Failed { code, message } => {
                    anyhow::bail!("playback {id} failed: {} ({message})", code.as_str())
                }
                StatusBody::Completed(clip) => {
                    clips.insert(id, clip);
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, wait)
        .await
        .context("not every playback completed in time")??;
    Ok(clips)
}

/// Reads `sub` until every playback of `playbacks` has sent a status of kind `want`.
pub async fn wait_all(
    sub: &mut async_nats::Subscriber,
    playbacks: &[Uuid],
    want: StatusKind,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut missing: std::collections::HashSet<Uuid> = playbacks.iter().copied().collect();
    let wait = async {
        while !missing.is_empty() {
            let Some(msg) = sub.next().await else {
                anyhow::bail!("the status subscription ended");
            };
            let Some(status) = decode_status(&msg.payload) else {
                continue;
            };
            let id = status.playback_id.0;
            if !missing.contains(&id) {
                continue;
            }
            if let StatusBody::Failed { code, message } = &status.body {
                anyhow::bail!("playback {id} failed: {} ({message})", code.as_str());
            }
            if status.body.kind() == want {
                missing.remove(&id);
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, wait).await.with_context(|| {
        format!(
            "not every playback sent `{}` within {timeout:?}",
            want.as_token()
        )
    })?
}
