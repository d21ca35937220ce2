//! The issue-3 acceptance path through both services, in-process: event-api (`serve` on port 0
//! with a fresh database) and a worker, against one nats-server, a fake RTSP camera and storage
//! in `local` mode (served by event-api at `/media/<key>`) or `s3` mode (s3s-fs, signed URLs).
//! POST a camera and a MOTION event, wait for RECORDING, record N seconds, end the event, wait
//! for COMPLETED, download `videoUrl` and ffprobe it.

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{CameraProfile, FakeCamera, NatsServer, S3Server, TestDb};
use tokio_util::sync::CancellationToken;

/// The key camera passwords are sealed with between this harness's event-api and workers
/// (a test key: 32 bytes of 7).
const TEST_CAMERA_KEY: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "e2e-admin-password";
const N: f64 = 5.0;
/// The cameras' pre-roll and post-roll in these runs.
const PRE_ROLL: u32 = 2;
const POST_ROLL: u32 = 1;

enum Mode {
    Local,
    S3(S3Server),
}

struct System {
    base: String,
    http: reqwest::Client,
    token: String,
    record_dir: tempfile::TempDir,
    api: (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), event_api::Error>>,
    ),
    worker: (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), recorder_worker::Error>>,
    ),
    _media: tempfile::TempDir,
    _mode: Mode,
    _nats: NatsServer,
    _db: TestDb,
}

impl System {
    async fn start(mode: Mode) -> anyhow::Result<Self> {
        camrec_shared::telemetry::init("warn,recorder_worker=info");
        let db = TestDb::create().await?;
        let nats = NatsServer::start().await?;
        let media = tempfile::tempdir()?;
        let record_dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);

        let mut storage: HashMap<String, String> = match &mode {
            Mode::Local => HashMap::from([
                ("STORAGE_MODE".to_owned(), "local".to_owned()),
                (
                    "LOCAL_STORAGE_DIR".to_owned(),
                    media.path().display().to_string(),
                ),
            ]),
            Mode::S3(s3) => s3.storage_env().into_iter().collect(),
        };
        storage.insert("MEDIA_BASE_URL".into(), base.clone());

        let mut api_env = storage.clone();
        for (k, v) in [
            ("DATABASE_URL", db.url().to_owned()),
            ("NATS_URL", nats.url_as(testkit::NatsUser::EventApi)),
            ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".to_owned()),
            // Event-api seals camera passwords with it, the workers open them.
            ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.to_owned()),
            (
                "JWT_SECRET",
                "e2e-secret-0123456789abcdef-0123456789".to_owned(),
            ),
            ("ADMIN_USERNAME", ADMIN.to_owned()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ] {
            api_env.insert(k.to_owned(), v);
        }
        let api_config = event_api::Config::from_lookup(|k| api_env.get(k).cloned())?;
        let api_token = CancellationToken::new();
        let api = tokio::spawn(event_api::serve(api_config, listener, api_token.clone()));

        let mut worker_env = storage;
        for (k, v) in [
            ("NATS_URL", nats.url_as(testkit::NatsUser::Worker)),
            ("CAMERA_ALLOWED_NETWORKS", "127.0.0.0/8".to_owned()),
            // Event-api seals camera passwords with it, the workers open them.
            ("CAMERA_SECRET_KEY", TEST_CAMERA_KEY.to_owned()),
            ("WORKER_ID", "e2e-worker".to_owned()),
            ("RECORD_DIR", record_dir.path().display().to_string()),
            ("PROGRESS_INTERVAL_SEC", "1".to_owned()),
            ("RTSP_TIMEOUT_SEC", "5".to_owned()),
        ] {
            worker_env.insert(k.to_owned(), v);
        }
        let worker_config = recorder_worker::Config::from_lookup(|k| worker_env.get(k).cloned())?;
        let worker_token = CancellationToken::new();
        let worker = tokio::spawn(recorder_worker::run(worker_config, worker_token.clone()));

        let http = reqwest::Client::new();
        let login = format!("{base}/auth/login");
        let token = testkit::wait_until(Duration::from_secs(30), "event-api login", || {
            let http = http.clone();
            let login = login.clone();
            async move {
                let resp = http
                    .post(login)
                    .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
                    .send()
                    .await
                    .ok()?;
                let v: Value = resp.json().await.ok()?;
                v["accessToken"].as_str().map(str::to_owned)
            }
        })
        .await?;
        Ok(Self {
            base,
            http,
            token,
            record_dir,
            api: (api_token, api),
            worker: (worker_token, worker),
            _media: media,
            _mode: mode,
            _nats: nats,
            _db: db,
        })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Waits until the playback's `recordingStatus` is `status`; returns the playback.
    async fn wait_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let what = format!("playback {id} {status}");
        testkit::wait_until(timeout, &what, || async move {
            let (_, body) = self.get(&format!("/playbacks/{id}")).await.ok()?;
            let now = body["recordingStatus"].as_str()?;
            assert!(
                now != "FAILED" || status == "FAILED",
                "playback failed: {body}"
            );
            (now == status).then_some(body)
        })
        .await
    }

    async fn download(&self, url: &str, to: &Path) -> anyhow::Result<Vec<u8>> {
        let resp = self.http.get(url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let bytes = resp.bytes().await?.to_vec();
        tokio::fs::write(to, &bytes).await?;
        Ok(bytes)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.worker.0.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.worker.1)
            .await
            .context("worker stops")???;
        self.api.0.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.api.1)
            .await
            .context("event-api stops")???;
        Ok(())
    }
}

/// Runs the whole path for one camera and checks the clip; returns the completed playback.
async fn record_one(sys: &System, camera: &FakeCamera) -> anyhow::Result<Value> {
    let (status, cam) = sys
        .post(
            "/cameras",
            json!({
                "name": "e2e gate",
                "rtspUrl": camera.url().expose(),
                "channel": 1,
                "preRollSec": PRE_ROLL,
                "postRollSec": POST_ROLL,
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{cam}");
    assert!(!cam.to_string().contains(&camera.password), "{cam}");
    let cam_id = cam["id"].as_str().context("camera id")?;
    // The camera reaches a worker through the catalog and is captured; its ring then fills.
    testkit::wait_until(Duration::from_secs(20), "the camera captured", || async {
        let (_, c) = sys.get(&format!("/cameras/{cam_id}")).await.ok()?;
        (c["captureStatus"]["state"] == "capturing").then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(u64::from(PRE_ROLL) + 1)).await;

    let (status, ev) = sys
        .post("/events", json!({"cameraId": cam_id, "type": "MOTION"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{ev}");
    let event_id = ev["id"].as_str().context("event id")?.to_owned();
    let playback_id = ev["playbackId"].as_str().context("playback id")?.to_owned();

    let recording = sys
        .wait_status(&playback_id, "RECORDING", Duration::from_secs(40))
        .await?;
    let started_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(recording["startedAt"].clone()).context("startedAt")?;
    let elapsed = (chrono::Utc::now() - started_at).num_milliseconds() as f64 / 1000.0;
    tokio::time::sleep(Duration::from_secs_f64((N - elapsed).max(0.0))).await;
    let (status, end) = sys
        .post(&format!("/events/{event_id}/end"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{end}");

    let done = sys
        .wait_status(&playback_id, "COMPLETED", Duration::from_secs(90))
        .await?;
    assert!(!done.to_string().contains(&camera.password), "{done}");
    let tmp = tempfile::tempdir()?;
    let video = tmp.path().join("video.mp4");
    let video_url = done["videoUrl"].as_str().context("videoUrl")?;
    sys.download(video_url, &video).await?;
    let info = recorder_worker::probe::probe_file(Path::new("ffprobe"), &video).await?;
    // From the recording's start (the pre-roll included), N seconds, then the post-roll, to
    // within a keyframe interval at each end.
    let expected = N + f64::from(POST_ROLL);
    assert!(
        (expected - 0.5..=expected + 2.0).contains(&info.duration_sec),
        "duration {} for {expected}",
        info.duration_sec
    );
    assert_eq!(done["startedLate"], json!(false), "{done}");
    assert_eq!(done["gaps"], json!([]), "{done}");
    let clip_start: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(done["startedAt"].clone()).context("startedAt")?;
    let occurred: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(ev["occurredAt"].clone()).context("occurredAt")?;
    assert!(
        clip_start <= occurred - chrono::TimeDelta::seconds(i64::from(PRE_ROLL) - 1),
        "the clip holds the pre-roll: {clip_start} for {occurred}"
    );
    assert_eq!((info.width, info.height), (640, 360));
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert!(info.moov_before_mdat, "moov is not at the front");
    assert_eq!(done["fileSizeBytes"].as_u64(), Some(info.size_bytes));

    let thumb_url = done["thumbnailUrl"].as_str().context("thumbnailUrl")?;
    let thumb = sys
        .download(thumb_url, &tmp.path().join("thumb.jpg"))
        .await?;
    assert!(thumb.starts_with(&[0xFF, 0xD8]), "not a JPEG");

    // The worker removes the local recording right after it reports the clip.
    let local: PathBuf = sys.record_dir.path().join(&playback_id);
    testkit::wait_until(
        Duration::from_secs(10),
        "the local recording removed",
        || async { (!local.exists()).then_some(()) },
    )
    .await?;
    Ok(done)
}

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_motion_event_becomes_a_playable_clip_in_local_storage() -> anyhow::Result<()> {
    let sys = System::start(Mode::Local).await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let done = record_one(&sys, &camera).await?;
    // After a recording, the camera's password is nowhere at rest: not in the database (a dump
    // of every table as text), not in NATS's store, not in the worker's directory.
    let password = camera.password.as_bytes();
    let pool = sqlx::PgPool::connect(sys._db.url()).await?;
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, ' ') FROM (SELECT row_to_json(c)::text AS t FROM cameras c \
         UNION ALL SELECT row_to_json(o)::text || convert_from(o.payload, 'UTF8') FROM outbox o \
         UNION ALL SELECT row_to_json(p)::text FROM playbacks p) d",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    assert!(
        !dump.contains(&camera.password),
        "the database holds the password"
    );
    assert!(dump.contains("v1.test."), "the sealed password is stored");
    assert_eq!(
        files_containing(&sys._nats.store_dir(), password),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(sys.record_dir.path(), password),
        Vec::<PathBuf>::new()
    );
    assert_eq!(done["codec"], "h264");
    assert!(done["videoUrl"]
        .as_str()
        .is_some_and(|u| u.starts_with(&sys.base) && u.contains("/media/")));
    // Both services ran with their own NATS users (nats-users.conf), and the server refused
    // nothing they asked for.
    assert_eq!(sys._nats.permission_violations(), Vec::<String>::new());
    sys.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g711_camera_becomes_an_aac_clip_in_s3() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let endpoint = s3.endpoint();
    let sys = System::start(Mode::S3(s3)).await?;
    let camera = FakeCamera::start(CameraProfile::h264_g711()).await?;
    let done = record_one(&sys, &camera).await?;
    assert_eq!(done["codec"], "h264");
    assert!(done["videoUrl"]
        .as_str()
        .is_some_and(|u| u.starts_with(&endpoint)));
    sys.stop().await
}
