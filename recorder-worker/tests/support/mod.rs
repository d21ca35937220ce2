//! What the worker's integration tests share: a NATS server, an S3 server and a record
//! directory per test, the worker's configuration for them, event publishing and a log of every
//! status message the workers send.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use anyhow::Context as _;
use async_nats::jetstream::{self, context::Publish};
use camrec_shared::capture::{CameraSpec, CaptureLease, CaptureState};
use camrec_shared::messages::{
    EndReason, Envelope, EventCreated, EventEnded, EventType, PlaybackStatus, RecordingLimits,
    StatusBody, StatusKind, StopCause,
};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::subjects::{event_subject, EventKind, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use futures::StreamExt;
use recorder_worker::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One status message and when the test saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub raw: String,
    pub status: PlaybackStatus,
}

/// Every `playback.>` message, in arrival order.
#[derive(Clone, Default)]
pub struct StatusLog(Arc<Mutex<Vec<Seen>>>);

impl StatusLog {
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn of(&self, id: PlaybackId) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.status.playback_id == id)
            .collect()
    }

    pub fn kinds(&self, id: PlaybackId) -> Vec<StatusKind> {
        self.of(id).iter().map(|s| s.status.body.kind()).collect()
    }

    /// Waits for the first status of `kind` for `id`.
    pub async fn wait(
        &self,
        id: PlaybackId,
        kind: StatusKind,
        timeout: Duration,
    ) -> anyhow::Result<Seen> {
        let what = format!("{} of {id} (seen: {:?})", kind.as_token(), self.kinds(id));
        let log = self.clone();
        testkit::wait_until(timeout, &what, || {
            let log = log.clone();
            async move {
                log.of(id)
                    .into_iter()
                    .find(|s| s.status.body.kind() == kind)
            }
        })
        .await
        .with_context(|| format!("statuses seen: {:?}", self.kinds(id)))
    }

    /// Waits for `completed` or `failed` of `id`.
    pub async fn wait_terminal(&self, id: PlaybackId, timeout: Duration) -> anyhow::Result<Seen> {
        let log = self.clone();
        testkit::wait_until(timeout, "a terminal status", || {
            let log = log.clone();
            async move {
                log.of(id).into_iter().find(|s| {
                    matches!(
                        s.status.body.kind(),
                        StatusKind::Completed | StatusKind::Failed
                    )
                })
            }
        })
        .await
        .with_context(|| format!("statuses seen: {:?}", self.kinds(id)))
    }
}

/// The infrastructure of one test.
pub struct Env {
    pub nats: testkit::NatsServer,
    pub s3: testkit::S3Server,
    pub record_root: tempfile::TempDir,
    pub js: jetstream::Context,
    pub log: StatusLog,
    _collector: JoinHandle<()>,
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        camrec_shared::telemetry::init("info,recorder_worker=debug");
        let nats = testkit::NatsServer::start().await?;
        let s3 = testkit::S3Server::start().await?;
        // event-api's user creates the streams (the workers' may not); the test then plants
        // events and inspects streams as the harness's administrator, and follows the statuses
        // as the reader user.
        let api = jetstream::new(nats.connect_as(testkit::NatsUser::EventApi).await?);
        camrec_shared::streams::ensure_streams(&api, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        camrec_shared::streams::ensure_cameras_bucket(&api, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        camrec_shared::streams::ensure_captures_bucket(&api, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let js = jetstream::new(nats.connect_as(testkit::NatsUser::Admin).await?);
        let log = StatusLog::default();
        let reader = nats.connect_as(testkit::NatsUser::Reader).await?;
        let mut sub = reader.subscribe("playback.>").await?;
        reader.flush().await?;
        let sink = log.clone();
        let collector = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let raw = String::from_utf8_lossy(&msg.payload).into_owned();
                if let Ok(Envelope {
                    payload: status, ..
                }) = Envelope::<PlaybackStatus>::from_slice(&msg.payload)
                {
                    sink.0.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        raw,
                        status,
                    });
                }
            }
        });
        Ok(Self {
            nats,
            s3,
            record_root: tempfile::Builder::new().prefix("camrec-rec-").tempdir()?,
            js,
            log,
            _collector: collector,
        })
    }

    /// The environment of a worker named `worker_id` (its own record directory), with `extra`
    /// overriding the test defaults.
    pub fn worker_env(&self, worker_id: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self.s3.storage_env().into_iter().collect();
        for (k, v) in [
            ("NATS_URL", self.nats.url_as(testkit::NatsUser::Worker)),
            // The test cameras run on this host: allow loopback past the network policy.
            ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".to_owned()),
            ("WORKER_ID", worker_id.to_owned()),
            (
                "RECORD_DIR",
                self.record_dir(worker_id).display().to_string(),
            ),
            ("PROGRESS_INTERVAL_SEC", "1".to_owned()),
            ("LEASE_HEARTBEAT_SEC", "1".to_owned()),
            ("RTSP_TIMEOUT_SEC", "3".to_owned()),
            ("STOP_GRACE_SEC", "5".to_owned()),
            ("RESTART_BACKOFF_MAX_SEC", "2".to_owned()),
            // Workers of parallel tests must not compete for the default port.
            ("PORT", "0".to_owned()),
        ] {
            env.insert(k.to_owned(), v);
        }
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    pub fn record_dir(&self, worker_id: &str) -> PathBuf {
        self.record_root.path().join(worker_id)
    }

    pub fn config(&self, worker_id: &str, extra: &[(&str, &str)]) -> Config {
        let env = self.worker_env(worker_id, extra);
        Config::from_lookup(|k| env.get(k).cloned()).expect("a valid test configuration")
    }

    /// Runs a worker in this process.
    pub fn spawn_worker(&self, worker_id: &str, extra: &[(&str, &str)]) -> Worker {
        let config = self.config(worker_id, extra);
        let token = CancellationToken::new();
        let handle = tokio::spawn(recorder_worker::run(config, token.clone()));
        Worker { token, handle }
    }

    /// Puts the event's camera into the camera catalog (as event-api's outbox would), then
    /// publishes the event. The camera's worker captures it from then on.
    pub async fn publish_created(&self, event: &EventCreated) -> anyhow::Result<()> {
        self.publish_created_with_id(event, &format!("{}:created", event.event_id))
            .await
    }

    /// Writes the camera of `event` into the `camrec_cameras` bucket, enabled, with the event's
    /// URL, password and rolls.
    pub async fn put_camera(&self, event: &EventCreated) -> anyhow::Result<()> {
        self.put_spec(&spec_for(event)).await
    }

    pub async fn put_spec(&self, spec: &CameraSpec) -> anyhow::Result<()> {
        let kv = camrec_shared::streams::ensure_cameras_bucket(&self.js, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        kv.put(spec.key(), serde_json::to_vec(spec)?.into()).await?;
        Ok(())
    }

    /// The capture lease of a camera, if a worker holds it.
    pub async fn capture_lease(&self, camera: CameraId) -> anyhow::Result<Option<CaptureLease>> {
        let kv = camrec_shared::streams::ensure_captures_bucket(&self.js, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(kv
            .get(camera.to_string())
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Puts the camera of `event` into the catalog and waits until a worker captures it, as a
    /// camera of a running system is: its events then find their pre-roll in the ring.
    pub async fn start_capture(&self, event: &EventCreated) -> anyhow::Result<CaptureLease> {
        self.put_camera(event).await?;
        self.wait_capturing(event.camera_id).await
    }

    /// Seconds of video the ring of `camera` on worker `worker_id` holds (its segment files).
    pub fn ring_seconds(&self, worker_id: &str, camera: CameraId) -> f64 {
        let ring = self
            .record_dir(worker_id)
            .join(recorder_worker::placement::CAPTURE_DIR)
            .join(camera.to_string());
        let Ok(entries) = std::fs::read_dir(ring) else {
            return 0.0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                recorder_worker::capture::segment::parse_segment_name(
                    &e.file_name().to_string_lossy(),
                )
            })
            .map(|(_, d)| d.as_secs_f64())
            .sum()
    }

    /// Waits until the ring of `camera` on worker `worker_id` holds `secs` of video (its
    /// pre-roll, say).
    pub async fn wait_ring_holds(
        &self,
        worker_id: &str,
        camera: CameraId,
        secs: f64,
    ) -> anyhow::Result<()> {
        testkit::wait_until(Duration::from_secs(30), "the ring filled", || async {
            (self.ring_seconds(worker_id, camera) >= secs).then_some(())
        })
        .await
    }

    /// Waits until a worker captures the camera of `event` (its lease says `capturing`).
    pub async fn wait_capturing(&self, camera: CameraId) -> anyhow::Result<CaptureLease> {
        testkit::wait_until(Duration::from_secs(30), "the camera captured", || async {
            self.capture_lease(camera)
                .await
                .ok()
                .flatten()
                .filter(|l| l.state == CaptureState::Capturing)
        })
        .await
    }

    pub async fn publish_created_with_id(
        &self,
        event: &EventCreated,
        msg_id: &str,
    ) -> anyhow::Result<()> {
        self.put_camera(event).await?;
        let env = Envelope::new(chrono::Utc::now(), event.clone());
        let subject = event_subject(EventKind::Created, &event.site, event.camera_id);
        self.js
            .send_publish(
                subject,
                Publish::build()
                    .payload(env.to_bytes().into())
                    .message_id(msg_id),
            )
            .await?
            .await?;
        Ok(())
    }

    pub async fn publish_ended(&self, event: &EventCreated) -> anyhow::Result<()> {
        let ended = EventEnded {
            event_id: event.event_id,
            playback_id: Some(event.playback_id),
            camera_id: event.camera_id,
            site: event.site.clone(),
            reason: EndReason::Ended,
            ended_at: Some(chrono::Utc::now()),
        };
        let env = Envelope::new(chrono::Utc::now(), ended);
        let subject = event_subject(EventKind::Ended, &event.site, event.camera_id);
        self.js
            .send_publish(
                subject,
                Publish::build()
                    .payload(env.to_bytes().into())
                    .message_id(format!("{}:ended", event.event_id)),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Downloads an object from the S3 server into `dir`.
    pub async fn download(&self, key: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        let storage = self.s3.storage()?;
        let bytes = storage
            .store()
            .get(&object_store::path::Path::from(key))
            .await?
            .bytes()
            .await?;
        let path = dir.join(key.replace('/', "_"));
        tokio::fs::write(&path, &bytes).await?;
        Ok(path)
    }
}

/// A worker running in this process.
pub struct Worker {
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<(), recorder_worker::Error>>,
}

impl Worker {
    /// Shuts the worker down and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .context("worker did not stop")???;
        Ok(())
    }
}

/// An `event.created` for `url` with `max_duration_sec`.
pub fn event_for(url: RtspUrl, max_duration_sec: u32) -> EventCreated {
    EventCreated {
        event_id: EventId::new(),
        playback_id: PlaybackId::new(),
        camera_id: CameraId::new(),
        camera_name: "test camera".into(),
        site: Site::default(),
        event_type: EventType::Motion,
        rtsp_url: url,
        password_sealed: None,
        limits: RecordingLimits {
            max_duration_sec,
            pre_roll_sec: 0,
            post_roll_sec: 0,
        },
        occurred_at: None,
    }
}

/// The camera spec of `event`'s camera: enabled, its URL, password and rolls.
pub fn spec_for(event: &EventCreated) -> CameraSpec {
    CameraSpec {
        camera_id: event.camera_id,
        site: event.site.clone(),
        name: event.camera_name.clone(),
        rtsp_url: event.rtsp_url.clone(),
        password_sealed: event.password_sealed.clone(),
        enabled: true,
        deleted: false,
        pre_roll_sec: event.limits.pre_roll_sec,
        post_roll_sec: event.limits.post_roll_sec,
        max_duration_sec: event.limits.max_duration_sec,
        updated_at: chrono::Utc::now(),
    }
}

/// Asserts the statuses of a completed playback: `recording`, `progress`*, `processing`+,
/// `completed`, with strictly increasing `seq`, and no credential anywhere.
pub fn assert_clean_sequence(log: &StatusLog, id: PlaybackId, password: &str) {
    let seen = log.of(id);
    let kinds: Vec<StatusKind> = seen.iter().map(|s| s.status.body.kind()).collect();
    assert_eq!(kinds.first(), Some(&StatusKind::Recording), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&StatusKind::Completed), "{kinds:?}");
    let first_processing = kinds
        .iter()
        .position(|k| *k == StatusKind::Processing)
        .expect("a processing status");
    assert!(
        kinds[1..first_processing]
            .iter()
            .all(|k| *k == StatusKind::Progress),
        "{kinds:?}"
    );
    assert!(
        kinds[first_processing..kinds.len() - 1]
            .iter()
            .all(|k| *k == StatusKind::Processing),
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == StatusKind::Recording)
            .count(),
        1
    );
    let seqs: Vec<u64> = seen.iter().map(|s| s.status.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {seqs:?}"
    );
    for s in &seen {
        assert!(
            !s.raw.contains(password),
            "credential in a status: {}",
            s.raw
        );
    }
}

/// Waits until `path` is gone. The worker publishes a terminal status before it removes the
/// recording's directory, so a test that has just seen the status waits for the removal.
pub async fn wait_removed(path: &Path) -> anyhow::Result<()> {
    testkit::wait_until(
        Duration::from_secs(10),
        "the recording directory removed",
        || async { (!path.exists()).then_some(()) },
    )
    .await?;
    Ok(())
}

/// Probes a downloaded clip.
pub async fn probe(path: &Path) -> anyhow::Result<recorder_worker::probe::ClipInfo> {
    Ok(recorder_worker::probe::probe_file(Path::new("ffprobe"), path).await?)
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The pids of the live children of `parent` whose command name is `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next();
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        if comm == name && ppid == Some(parent) && state != Some("Z") {
            out.push(pid);
        }
    }
    out
}

/// Every status of `id` stored in the `PLAYBACKS` stream, in stream order.
pub async fn stored_statuses(
    js: &jetstream::Context,
    id: PlaybackId,
) -> anyhow::Result<Vec<PlaybackStatus>> {
    let mut stream = js
        .get_stream(camrec_shared::subjects::PLAYBACKS_STREAM)
        .await?;
    let last = stream.info().await?.state.last_sequence;
    let mut found = Vec::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await?;
        let status = Envelope::<PlaybackStatus>::from_slice(&msg.payload)?.payload;
        if status.playback_id == id {
            found.push(status);
        }
    }
    Ok(found)
}

/// The statuses waiting in a worker's status spool (`RECORD_DIR/_spool/`), in spool order.
pub fn spooled(record_dir: &Path) -> anyhow::Result<Vec<PlaybackStatus>> {
    let dir = record_dir.join(recorder_worker::spool::SPOOL_DIR);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.retain(|p| p.extension().is_some_and(|e| e == "json"));
    names.sort();
    names
        .iter()
        .map(|p| Ok(Envelope::<PlaybackStatus>::from_slice(&std::fs::read(p)?)?.payload))
        .collect()
}

/// Why the recording stopped, as its `processing` says.
pub fn stopped_by(status: &PlaybackStatus) -> Option<StopCause> {
    match &status.body {
        StatusBody::Processing { stopped_by, .. } => *stopped_by,
        other => panic!("not processing: {other:?}"),
    }
}

/// When the recording in `dir` stopped, once the worker has written it to its manifest.
pub async fn manifest_ended(dir: &Path) -> Option<recorder_worker::manifest::Manifest> {
    recorder_worker::manifest::Manifest::read(dir)
        .await
        .ok()
        .filter(|m| m.ended_at.is_some())
}

/// The segments of playback `id` the store holds (uploaded while it recorded), in time order;
/// an object under the prefix that is not a segment is an error.
pub async fn stored_segments(
    storage: &camrec_shared::storage::Storage,
    id: PlaybackId,
) -> anyhow::Result<Vec<camrec_shared::storage::SegmentName>> {
    use camrec_shared::storage::{segments_prefix, ObjectKey};
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(segments_prefix(id));
    let listed: Vec<object_store::ObjectMeta> =
        storage.store().list(Some(&prefix)).try_collect().await?;
    let mut names = Vec::new();
    for meta in listed {
        match ObjectKey::parse(meta.location.as_ref()) {
            Some(ObjectKey::Segment(_, name)) => names.push(name),
            other => anyhow::bail!("unexpected object {} ({other:?})", meta.location),
        }
    }
    names.sort();
    Ok(names)
}
