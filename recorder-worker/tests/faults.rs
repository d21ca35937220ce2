//! Faults on real parts: the worker as a real process SIGKILLed mid-recording, the S3 server
//! down during an upload, the camera lost mid-recording, NATS down while recordings run and stop,
//! and a graceful shutdown. Each ends in its documented state (ADR 0001; the camera-loss rule in
//! `recording.rs`), with nothing lost and nothing stuck.

mod support;

use anyhow::Context as _;
use camrec_shared::messages::{CompletedClip, PlaybackStatus, StatusBody, StatusKind, StopCause};
use camrec_shared::storage::ObjectKey;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{
    children_named, event_for, manifest_ended, probe, process_alive, spooled, stopped_by,
    stored_statuses, wait_removed, Env,
};
use testkit::{CameraProfile, FakeCamera};

const START: Duration = Duration::from_secs(40);
const FINISH: Duration = Duration::from_secs(90);

fn completed(body: &StatusBody) -> CompletedClip {
    match body {
        StatusBody::Completed(c) => c.clone(),
        other => panic!("not completed: {other:?}"),
    }
}

/// The worker binary, killed and reaped on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn spawn(env: &HashMap<String, String>, log: &std::path::Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_recorder-worker"))
            .envs(env)
            .env("RUST_LOG", "info,async_nats=warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then waits for the exit (up to `within`); returns whether it exited 0.
    fn sigterm(&mut self, within: Duration) -> anyhow::Result<bool> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status.success());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the worker did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_no_ffmpeg_and_its_successor_completes_the_clip(
) -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("worker.log");
    // Both runs share the record directory, as a restarted worker on the same host does.
    let vars = env.worker_env("host-a", &[]);
    let mut first = WorkerProcess::spawn(&vars, &log)?;
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ffmpeg = children_named(first.pid(), "ffmpeg");
    assert_eq!(ffmpeg.len(), 1, "one ffmpeg child expected: {ffmpeg:?}");
    first.sigkill();
    testkit::wait_until(
        Duration::from_secs(10),
        "ffmpeg to die with its worker",
        || async { (!process_alive(ffmpeg[0])).then_some(()) },
    )
    .await?;
    assert!(env.record_dir("host-a").join(id.to_string()).exists());

    let _second = WorkerProcess::spawn(&vars, &log)?;
    let done = env
        .log
        .wait_terminal(id, FINISH)
        .await
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    assert!(clip.duration_sec >= 2.0, "duration {}", clip.duration_sec);
    let tmp = tempfile::tempdir()?;
    let file = env.download(&clip.object_key, tmp.path()).await?;
    let info = probe(&file).await?;
    assert!(info.moov_before_mdat);
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert!(env
        .s3
        .keys()
        .contains(&ObjectKey::Thumbnail(id).to_string()));
    wait_removed(&env.record_dir("host-a").join(id.to_string())).await?;
    let text = std::fs::read_to_string(&log)?;
    assert!(
        !text.contains(&camera.password),
        "credential in the worker's log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_outage_keeps_processing_then_completes() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.s3.stop();
    env.publish_ended(&event).await?;
    env.log.wait(id, StatusKind::Processing, FINISH).await?;
    // Heartbeats continue while the store is down; the clip stays on disk.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let processing = env
        .log
        .kinds(id)
        .iter()
        .filter(|k| **k == StatusKind::Processing)
        .count();
    assert!(processing >= 3, "{:?}", env.log.kinds(id));
    assert!(!env.log.kinds(id).contains(&StatusKind::Completed));
    assert!(env.record_dir("w1").join(id.to_string()).exists());

    env.s3.restart().await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    let tmp = tempfile::tempdir()?;
    let file = env.download(&clip.object_key, tmp.path()).await?;
    let bytes = std::fs::read(&file)?;
    assert_eq!(bytes.len() as u64, clip.size_bytes);
    assert_eq!(
        clip.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    wait_removed(&env.record_dir("w1").join(id.to_string())).await?;
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_lost_mid_recording_is_reconnected_and_completed_partial() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let mut camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    camera.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    camera.restart().await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    // Before the loss about 3 s, after the reconnection a few more.
    assert!(clip.duration_sec >= 4.0, "duration {}", clip.duration_sec);
    let tmp = tempfile::tempdir()?;
    let info = probe(&env.download(&clip.object_key, tmp.path()).await?).await?;
    assert!(info.moov_before_mdat);
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_lost_for_good_still_completes_what_was_recorded() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let mut camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    camera.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    assert!(
        (1.5..=6.0).contains(&clip.duration_sec),
        "duration {}",
        clip.duration_sec
    );
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_recordings_in_flight() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("SHUTDOWN_GRACE_SEC", "20")]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = tokio::time::Instant::now();
    worker.stop().await?;
    assert!(asked.elapsed() < Duration::from_secs(25));
    let done = env.log.wait_terminal(id, Duration::from_secs(5)).await?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    assert!(!env.record_dir("w1").join(id.to_string()).exists());
    let processing = env.log.wait(id, StatusKind::Processing, FINISH).await?;
    assert_eq!(stopped_by(&processing.status), Some(StopCause::Shutdown));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_given_up_fails_and_keeps_the_clip() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("UPLOAD_GIVE_UP_SEC", "4")]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.s3.stop();
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    match &done.status.body {
        StatusBody::Failed { code, .. } => {
            assert_eq!(*code, camrec_shared::messages::FailureCode::UploadFailed)
        }
        other => panic!("expected failed, got {other:?}"),
    }
    let kept = env
        .record_dir("w1")
        .join(recorder_worker::manifest::FAILED_DIR)
        .join(id.to_string());
    // The worker reports the failure, then moves the directory aside: wait for the move.
    let video = kept.join(recorder_worker::manifest::VIDEO);
    testkit::wait_until(
        Duration::from_secs(10),
        "the clip kept in _failed",
        || async { video.is_file().then_some(()) },
    )
    .await?;
    assert!(!env.record_dir("w1").join(id.to_string()).exists());
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_at_the_shutdown_deadline_is_finished_by_the_next_start() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("SHUTDOWN_GRACE_SEC", "3")]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.s3.stop();
    let asked = tokio::time::Instant::now();
    worker.stop().await?;
    assert!(asked.elapsed() < Duration::from_secs(15));
    assert!(!env.log.kinds(id).contains(&StatusKind::Completed));
    // What the clip is made of stays on disk for the next start.
    let dir = env.record_dir("w1").join(id.to_string());
    let kept = recorder_worker::capture::segment::segments_in(&dir).await?;
    assert!(!kept.is_empty(), "the recording's segments are kept");

    env.s3.restart().await?;
    let worker = env.spawn_worker("w1", &[]);
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    assert!(env.s3.keys().contains(&clip.object_key));
    assert!(!dir.exists());
    let seqs: Vec<u64> = env.log.of(id).iter().map(|s| s.status.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_recording_loses_neither_the_stop_nor_the_clip() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.nats.restart().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    testkit::wait_until(
        Duration::from_secs(30),
        "the end to be published",
        || async { env.publish_ended(&event).await.ok() },
    )
    .await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(env.s3.keys().contains(&clip.object_key));
    assert!(clip.duration_sec >= 4.0, "duration {}", clip.duration_sec);
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_nats_waits_for_it() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    env.nats.stop();
    let worker = env.spawn_worker("w1", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!worker.handle.is_finished(), "the worker gave up on NATS");
    env.nats.restart().await?;

    let event = event_for(camera.url(), 3);
    testkit::wait_until(
        Duration::from_secs(30),
        "the camera put into the catalog",
        || async { env.put_camera(&event).await.ok() },
    )
    .await?;
    env.wait_capturing(event.camera_id).await?;
    env.publish_created(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    assert_eq!(done.status.body.kind(), StatusKind::Completed);
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_recording_and_exits_cleanly() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("worker.log");
    let mut worker = WorkerProcess::spawn(&env.worker_env("w1", &[]), &log)?;
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ffmpeg = children_named(worker.pid(), "ffmpeg");
    assert_eq!(ffmpeg.len(), 1, "{ffmpeg:?}");
    let clean = tokio::task::block_in_place(|| worker.sigterm(Duration::from_secs(30)))?;
    assert!(clean, "{}", std::fs::read_to_string(&log)?);
    assert!(!process_alive(ffmpeg[0]));
    let done = env.log.wait_terminal(id, Duration::from_secs(5)).await?;
    let clip = completed(&done.status.body);
    assert!(clip.partial);
    assert!(env.s3.keys().contains(&clip.object_key));
    Ok(())
}

/// The statuses of `id` in the `PLAYBACKS` stream once its terminal status is there.
async fn stored_until_terminal(
    env: &Env,
    id: camrec_shared::PlaybackId,
) -> anyhow::Result<Vec<PlaybackStatus>> {
    testkit::wait_until(FINISH, "a terminal status in PLAYBACKS", || async {
        stored_statuses(&env.js, id).await.ok().filter(|all| {
            all.iter()
                .any(|s| matches!(s.body.kind(), StatusKind::Completed | StatusKind::Failed))
        })
    })
    .await
}

/// Issue 15: with NATS down, a status could block the recording's loop for two minutes. Here a
/// shutdown (what SIGTERM does) is acted on within 2 s although the progress of the last seconds
/// cannot be sent; the clip is finished and uploaded, its `processing` and `completed` wait in the
/// spool while the worker is down too, and the next start sends them, in order, once NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_a_shutdown_stops_at_once_and_the_spool_outlives_the_worker(
) -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("SHUTDOWN_GRACE_SEC", "8")]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;
    let dir = env.record_dir("w1").join(id.to_string());

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.nats.stop();
    let nats_down = tokio::time::Instant::now();
    // Progress ticks every second: let some meet the outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.token.cancel();
    let stopped = testkit::wait_until(
        Duration::from_secs(2),
        "the recording stopped within 2 s of the shutdown",
        || manifest_ended(&dir),
    )
    .await?;
    assert_eq!(stopped.stopped_by, Some(StopCause::Shutdown));
    worker.stop().await?;
    assert!(!dir.exists(), "the clip was finished and uploaded");
    let held: Vec<StatusKind> = spooled(&env.record_dir("w1"))?
        .iter()
        .filter(|s| s.playback_id == id)
        .map(|s| s.body.kind())
        .collect();
    assert_eq!(held, [StatusKind::Processing, StatusKind::Completed]);

    tokio::time::sleep_until(nats_down + Duration::from_secs(10)).await;
    env.nats.restart().await?;
    let worker = env.spawn_worker("w1", &[]);
    let stored = stored_until_terminal(&env, id).await?;
    let kinds: Vec<StatusKind> = stored.iter().map(|s| s.body.kind()).collect();
    assert_eq!(kinds.first(), Some(&StatusKind::Recording), "{kinds:?}");
    assert_eq!(
        kinds[kinds.len() - 2..],
        [StatusKind::Processing, StatusKind::Completed],
        "{kinds:?}"
    );
    assert_eq!(
        stopped_by(&stored[kinds.len() - 2]),
        Some(StopCause::Shutdown)
    );
    let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(env
        .s3
        .keys()
        .contains(&completed(&stored[kinds.len() - 1].body).object_key));
    testkit::wait_until(Duration::from_secs(10), "the spool emptied", || async {
        spooled(&env.record_dir("w1")).ok().filter(|s| s.is_empty())
    })
    .await?;
    worker.stop().await?;
    Ok(())
}

/// Issue 15: with NATS down, the max duration still ends the recording on time (FFmpeg's `-t`
/// and the watchdog are not held up by a status that cannot be sent), and `processing` says the
/// max duration stopped it, so event-api ends the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_the_max_duration_ends_the_recording_on_time() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let max = 6;
    let event = event_for(camera.url(), max);
    let id = event.playback_id;
    let dir = env.record_dir("w1").join(id.to_string());

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    let recording = env.log.wait(id, StatusKind::Recording, START).await?;
    env.nats.stop();
    let StatusBody::Recording { started_at } = recording.status.body else {
        panic!("not recording: {:?}", recording.status.body);
    };
    let recorded = (chrono::Utc::now() - started_at)
        .to_std()
        .unwrap_or_default();
    let due = Duration::from_secs(u64::from(max) + 3).saturating_sub(recorded);
    let stopped = testkit::wait_until(due, "the recording stopped at its max duration", || {
        manifest_ended(&dir)
    })
    .await?;
    assert_eq!(stopped.stopped_by, Some(StopCause::MaxDuration));

    env.nats.restart().await?;
    let stored = stored_until_terminal(&env, id).await?;
    let processing = stored
        .iter()
        .find(|s| s.body.kind() == StatusKind::Processing)
        .expect("a processing status");
    assert_eq!(stopped_by(processing), Some(StopCause::MaxDuration));
    let clip = completed(&stored.last().expect("a terminal status").body);
    assert!(
        (clip.duration_sec - f64::from(max)).abs() <= 1.5,
        "duration {}",
        clip.duration_sec
    );
    worker.stop().await?;
    Ok(())
}

/// A worker that stops renewing its camera leases (here SIGKILLed) loses its cameras to another
/// worker of the site within 1.5 × the lease TTL, which then records the camera's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_cameras_are_taken_over_within_one_and_a_half_ttl() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let logs = tempfile::tempdir()?;
    let mut first = WorkerProcess::spawn(&env.worker_env("host-a", &[]), &logs.path().join("a"))?;
    let event = event_for(camera.url(), 600);
    let lease = env.start_capture(&event).await?;
    assert_eq!(lease.worker_id, "host-a");
    let second = env.spawn_worker("host-b", &[]);
    // host-b runs its lease rounds and finds the camera taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.capture_lease(event.camera_id)
            .await?
            .map(|l| l.worker_id),
        Some("host-a".to_owned())
    );

    first.sigkill();
    let killed = std::time::Instant::now();
    let limit = camrec_shared::capture::CAPTURE_LEASE_TTL * 3 / 2;
    testkit::wait_until(
        limit + Duration::from_secs(2),
        "host-b takes the camera",
        || async {
            env.capture_lease(event.camera_id)
                .await
                .ok()
                .flatten()
                .filter(|l| l.worker_id == "host-b")
        },
    )
    .await?;
    let took = killed.elapsed();
    assert!(
        took <= limit,
        "taken over after {took:?}, more than {limit:?}"
    );

    env.wait_capturing(event.camera_id).await?;
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, START)
        .await?;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    assert_eq!(done.status.worker_id, "host-b");
    assert_eq!(done.status.body.kind(), StatusKind::Completed);
    second.stop().await?;
    Ok(())
}

/// The holder of a camera dies (SIGKILL) in the middle of a recording: the camera's next holder
/// continues that recording into the same playback within 1.5 × the lease TTL; what the dead
/// worker uploaded stays in the clip, the time nobody recorded is its one gap, and the playback
/// ends COMPLETED partial, from the new holder, with no segment of two holders overlapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_recording_of_a_killed_worker_is_continued_by_the_cameras_next_holder(
) -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let logs = tempfile::tempdir()?;
    let mut first = WorkerProcess::spawn(&env.worker_env("host-a", &[]), &logs.path().join("a"))?;
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;
    let lease = env.start_capture(&event).await?;
    assert_eq!(lease.worker_id, "host-a");
    let second = env.spawn_worker("host-b", &[]);
    env.publish_created(&event).await?;
    let started = env.log.wait(id, StatusKind::Recording, START).await?;
    assert_eq!(started.status.worker_id, "host-a");
    let storage = env.s3.storage()?;
    let stored = || async {
        support::stored_segments(&storage, id)
            .await
            .unwrap_or_default()
    };
    testkit::wait_until(
        Duration::from_secs(30),
        "host-a uploads segments",
        || async { (stored().await.len() >= 3).then_some(()) },
    )
    .await?;

    first.sigkill();
    let killed = std::time::Instant::now();
    let limit = camrec_shared::capture::CAPTURE_LEASE_TTL * 3 / 2;
    let resumed = testkit::wait_until(
        limit + Duration::from_secs(10),
        "host-b continues the recording",
        || async {
            env.log
                .of(id)
                .into_iter()
                .find(|s| s.status.worker_id == "host-b")
        },
    )
    .await?;
    let took = killed.elapsed();
    assert_eq!(resumed.status.takes_over_from.as_deref(), Some("host-a"));
    assert!(
        took <= limit,
        "continued after {took:?}, more than {limit:?}"
    );
    testkit::wait_until(
        Duration::from_secs(30),
        "host-b uploads segments",
        || async {
            let names = stored().await;
            (names
                .iter()
                .map(|n| n.epoch)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 2)
                .then_some(())
        },
    )
    .await?;

    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    assert_eq!(done.status.worker_id, "host-b");
    let clip = completed(&done.status.body);
    assert!(clip.partial, "{clip:?}");
    assert_eq!(clip.gaps.len(), 1, "{clip:?}");
    let gap = (clip.gaps[0].to - clip.gaps[0].from).to_std()?;
    assert!(
        gap <= took + Duration::from_secs(4),
        "gap {gap:?}, takeover {took:?}"
    );
    let StatusBody::Recording { started_at } = started.status.body else {
        panic!("not recording");
    };
    assert!(
        (clip.started_at - started_at).num_milliseconds().abs() <= 1000,
        "the clip starts with host-a's footage: {} vs {started_at}",
        clip.started_at
    );
    let names = stored().await;
    for pair in names.windows(2) {
        assert!(
            pair[0].epoch == pair[1].epoch || pair[1].start_ms >= pair[0].end_ms(),
            "segments of two holders overlap: {names:?}"
        );
    }
    second.stop().await?;
    Ok(())
}
