//! The worker you can watch, on real parts (NATS, S3 server, FFmpeg): its HTTP endpoints, the
//! disk guard (a floor above the real free space), and `_failed/` retried and pruned.

mod support;

use camrec_shared::messages::{StatusBody, StatusKind};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::PlaybackId;
use chrono::Utc;
use recorder_worker::manifest::{Manifest, FAILED_DIR, MANIFEST, VIDEO};
use recorder_worker::CancellationToken;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use support::{event_for, Env};

const WAIT: Duration = Duration::from_secs(30);

/// A worker started in this process, with its endpoints' address.
struct Watched {
    addr: SocketAddr,
    token: CancellationToken,
    done: tokio::task::JoinHandle<Result<(), recorder_worker::Error>>,
}

impl Watched {
    async fn start(env: &Env, worker_id: &str, extra: &[(&str, &str)]) -> Self {
        let mut extra = extra.to_vec();
        extra.push(("PORT", "0"));
        let token = CancellationToken::new();
        let started = recorder_worker::start(env.config(worker_id, &extra), token.clone()).await;
        Self {
            addr: started.http_addr.expect("PORT=0 binds"),
            token,
            done: started.done,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let res = reqwest::get(format!("http://127.0.0.1:{}{path}", self.addr.port()))
            .await
            .expect("the worker answers");
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Waits until `GET path` answers `code` with a body containing every one of `words`.
    async fn wait_for(&self, path: &str, code: u16, words: &[&str]) -> String {
        let what = format!("{path} answering {code} with {words:?}");
        testkit::wait_until(WAIT, &what, || async {
            let (got, body) = self.get(path).await;
            (got == code && words.iter().all(|w| body.contains(w))).then_some(body)
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.done)
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap();
    }
}

/// The value of an unlabelled series in a Prometheus text page.
fn series(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn endpoints_say_alive_ready_and_not_ready_when_nats_goes() {
    let mut env = Env::start().await.unwrap();
    let w = Watched::start(&env, "ops-1", &[]).await;
    assert_eq!(w.get("/health").await, (200, "ok".to_owned()));
    let body = w
        .wait_for("/ready", 200, &[r#""nats":"connected""#, r#""disk":"ok""#])
        .await;
    assert!(body.contains(r#""status":"ready""#), "{body}");

    let (code, page) = w.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(series(&page, "disk_free_bytes").unwrap() > 0.0, "{page}");
    assert_eq!(series(&page, "disk_below_floor"), Some(0.0), "{page}");
    assert_eq!(
        series(&page, "disk_floor_bytes"),
        Some((1024u64 << 20) as f64)
    );
    assert_eq!(series(&page, "status_spooled"), Some(0.0), "{page}");
    assert_eq!(series(&page, "nats_connected"), Some(1.0), "{page}");

    env.nats.stop();
    w.wait_for(
        "/ready",
        503,
        &[r#""nats":"disconnected""#, r#""disk":"ok""#],
    )
    .await;
    assert_eq!(w.get("/health").await.0, 200, "alive without NATS");
    let page = w.get("/metrics").await.1;
    assert_eq!(series(&page, "nats_connected"), Some(0.0), "{page}");
    w.stop().await;
}

#[tokio::test]
async fn below_the_disk_floor_the_worker_takes_no_camera_and_says_why() {
    let env = Env::start().await.unwrap();
    // Nothing listens on port 1: the worker that takes the camera fails the event quickly.
    let event = event_for(RtspUrl::parse("rtsp://127.0.0.1:1/none").unwrap(), 30);
    env.publish_created(&event).await.unwrap();

    let full = Watched::start(&env, "full", &[("MIN_FREE_DISK_MB", "1000000000")]).await;
    let body = full
        .wait_for(
            "/ready",
            503,
            &[r#""nats":"connected""#, r#""disk":"below floor""#],
        )
        .await;
    assert!(
        body.contains(r#""minFreeDiskBytes":1048576000000000"#),
        "{body}"
    );
    let page = full.get("/metrics").await.1;
    assert_eq!(series(&page, "disk_below_floor"), Some(1.0), "{page}");
    // A negative needs a window: a worker with room takes a camera within a lease round (2.5 s,
    // below), this one gets four seconds, then stops, so nothing it did can come after the look.
    tokio::time::sleep(Duration::from_secs(4)).await;
    full.stop().await;
    assert_eq!(
        env.capture_lease(event.camera_id).await.unwrap(),
        None,
        "the camera is left to a worker with room"
    );
    assert!(env.log.of(event.playback_id).is_empty());

    let roomy = Watched::start(&env, "roomy", &[("FIRST_SEGMENT_SEC", "2")]).await;
    let terminal = env
        .log
        .wait_terminal(event.playback_id, WAIT)
        .await
        .unwrap();
    assert_eq!(
        terminal.status.worker_id, "roomy",
        "taken later, by a worker with room"
    );
    roomy.stop().await;
}

/// A recording kept in `_failed/` as a failed upload leaves it: the clip, its manifest.
fn kept_recording(
    env: &Env,
    worker_id: &str,
    id: PlaybackId,
    modified: SystemTime,
) -> std::path::PathBuf {
    let dir = env
        .record_dir(worker_id)
        .join(FAILED_DIR)
        .join(id.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut event = event_for(RtspUrl::parse("rtsp://u:secret@127.0.0.1:1/c").unwrap(), 30);
    event.playback_id = id;
    let mut manifest = Manifest::new(&event, Utc::now() - chrono::Duration::minutes(40));
    manifest.started_at = Some(manifest.claimed_at);
    manifest.ended_at = Some(manifest.claimed_at + chrono::Duration::seconds(2));
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    testkit::make_test_clip(&dir.join(VIDEO), 2).unwrap();
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    dir
}

#[tokio::test]
async fn failed_uploads_are_tried_again_and_old_ones_pruned() {
    let env = Env::start().await.unwrap();
    let now = SystemTime::now();
    let (fresh, old) = (PlaybackId::new(), PlaybackId::new());
    let fresh_dir = kept_recording(&env, "ops-f", fresh, now);
    let old_dir = kept_recording(&env, "ops-f", old, now - Duration::from_secs(8 * 24 * 3600));
    let clip_bytes = std::fs::metadata(fresh_dir.join(VIDEO)).unwrap().len();
    let no_clip = env.record_dir("ops-f").join(FAILED_DIR).join("no-clip");
    std::fs::create_dir_all(&no_clip).unwrap();
    std::fs::write(no_clip.join("part-000.mp4"), b"not a video").unwrap();

    let w = Watched::start(&env, "ops-f", &[]).await;
    let seen = env
        .log
        .wait(fresh, StatusKind::Completed, WAIT)
        .await
        .unwrap();
    let StatusBody::Completed(clip) = &seen.status.body else {
        unreachable!("waited for completed");
    };
    assert_eq!(clip.size_bytes, clip_bytes);
    let tmp = tempfile::tempdir().unwrap();
    let downloaded = env.download(&clip.object_key, tmp.path()).await.unwrap();
    assert_eq!(std::fs::metadata(&downloaded).unwrap().len(), clip_bytes);
    support::wait_removed(&fresh_dir).await.unwrap();
    support::wait_removed(&old_dir).await.unwrap();
    assert!(
        env.log.of(old).is_empty(),
        "an expired entry is deleted, not uploaded"
    );
    assert!(
        no_clip.join("part-000.mp4").exists(),
        "nothing to upload: kept"
    );
    assert!(!seen.raw.contains("secret"));
    let page = w.get("/metrics").await.1;
    assert!(
        series(&page, "upload_bytes_total").unwrap() >= clip_bytes as f64,
        "{page}"
    );
    w.stop().await;
}
