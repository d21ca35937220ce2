//! The worker in-process against real parts: its own nats-server, s3s-fs and a fake RTSP camera.
//! Each test publishes `event.created` / `event.ended` itself and reads `playback.>`.

mod support;

use camrec_shared::capture::CaptureState;
use camrec_shared::messages::{FailureCode, StatusBody, StatusKind, StopCause};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::storage::ObjectKey;
use std::time::Duration;
use support::{assert_clean_sequence, event_for, probe, stopped_by, wait_removed, Env};
use testkit::{CameraProfile, FakeCamera};

const START: Duration = Duration::from_secs(40);
const FINISH: Duration = Duration::from_secs(90);

fn completed(body: &StatusBody) -> &camrec_shared::messages::CompletedClip {
    match body {
        StatusBody::Completed(c) => c,
        other => panic!("not completed: {other:?}"),
    }
}

/// Sleeps until the recording announced in `recording` holds `n` seconds.
async fn sleep_until_recorded(recording: &StatusBody, n: f64) {
    let StatusBody::Recording { started_at } = recording else {
        panic!("not a recording status: {recording:?}");
    };
    let elapsed = (chrono::Utc::now() - *started_at).num_milliseconds() as f64 / 1000.0;
    tokio::time::sleep(Duration::from_secs_f64((n - elapsed).max(0.0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_becomes_a_verified_clip_in_s3() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    let recording = env.log.wait(id, StatusKind::Recording, START).await?;
    env.log
        .wait(id, StatusKind::Progress, Duration::from_secs(10))
        .await?;
    let n = 5.0;
    sleep_until_recorded(&recording.status.body, n).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body).clone();

    assert_clean_sequence(&env.log, id, &camera.password);
    let processing = env.log.wait(id, StatusKind::Processing, FINISH).await?;
    assert_eq!(stopped_by(&processing.status), Some(StopCause::EventEnded));
    assert_eq!(clip.object_key, ObjectKey::Video(id).to_string());
    assert_eq!(clip.thumb_key, Some(ObjectKey::Thumbnail(id).to_string()));
    assert!(!clip.partial);
    assert!(clip.url.is_some());
    let keys = env.s3.keys();
    assert!(keys.contains(&clip.object_key), "{keys:?}");
    assert!(
        keys.contains(&ObjectKey::Thumbnail(id).to_string()),
        "{keys:?}"
    );

    let tmp = tempfile::tempdir()?;
    let file = env.download(&clip.object_key, tmp.path()).await?;
    let info = probe(&file).await?;
    assert!(
        (info.duration_sec - n).abs() <= 1.5,
        "duration {}",
        info.duration_sec
    );
    assert_eq!(info.video_codec, "h264");
    assert_eq!((info.width, info.height), (640, 360));
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert!(info.moov_before_mdat);
    assert_eq!(info.size_bytes, clip.size_bytes);
    assert_eq!(clip.video_codec, "h264");
    assert!((clip.duration_sec - info.duration_sec).abs() < 0.1);
    let bytes = std::fs::read(&file)?;
    assert_eq!(
        clip.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );

    wait_removed(&env.record_dir("w1").join(id.to_string())).await?;
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_event_created_records_once() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.publish_created_with_id(&event, "first").await?;
    env.publish_created_with_id(&event, "second").await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.publish_ended(&event).await?;
    env.log.wait_terminal(id, FINISH).await?;
    // Give a second (wrong) recording the time to show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let kinds = env.log.kinds(id);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == StatusKind::Recording)
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == StatusKind::Completed)
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == StatusKind::Failed).count(),
        0,
        "{kinds:?}"
    );
    assert_clean_sequence(&env.log, id, &camera.password);
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_recording_sec_completes_an_event_that_never_ends() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("MAX_RECORDING_SEC", "4")]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, START).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(
        (clip.duration_sec - 4.0).abs() <= 1.5,
        "duration {}",
        clip.duration_sec
    );
    assert_clean_sequence(&env.log, id, &camera.password);
    let processing = env.log.wait(id, StatusKind::Processing, FINISH).await?;
    assert_eq!(stopped_by(&processing.status), Some(StopCause::MaxDuration));
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_camera_fails_with_its_reason() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let worker = env.spawn_worker(
        "w1",
        &[("FIRST_SEGMENT_SEC", "4"), ("RTSP_TIMEOUT_SEC", "2")],
    );
    let url = RtspUrl::parse(&format!(
        "rtsp://admin:topsecret99@127.0.0.1:{}/cam",
        testkit::free_port()
    ))?;
    let event = event_for(url, 600);
    let id = event.playback_id;

    env.publish_created(&event).await?;
    let done = env.log.wait_terminal(id, Duration::from_secs(60)).await?;
    match &done.status.body {
        StatusBody::Failed { code, .. } => assert_eq!(*code, FailureCode::CameraUnreachable),
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(!done.raw.contains("topsecret99"), "{}", done.raw);
    // The camera's lease says so too (`captureStatus`), with an error free of the password.
    let lease = env.capture_lease(event.camera_id).await?.expect("a lease");
    assert_eq!(lease.state, CaptureState::Unreachable);
    let error = lease.last_error.expect("the last error");
    assert!(!error.contains("topsecret99"), "{error}");
    wait_removed(&env.record_dir("w1").join(id.to_string())).await?;
    worker.stop().await?;
    Ok(())
}

/// A camera the network policy refuses (here on loopback, with no allowed networks) is not
/// probed: its recording fails when no segment came within `FIRST_SEGMENT_SEC`, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_on_a_refused_network_is_never_connected_to() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker(
        "w1",
        &[("CAMERA_ALLOWED_NETWORKS", ""), ("FIRST_SEGMENT_SEC", "3")],
    );
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;
    env.publish_created(&event).await?;
    let done = env.log.wait_terminal(id, Duration::from_secs(30)).await?;
    match &done.status.body {
        StatusBody::Failed { code, message } => {
            assert_eq!(*code, FailureCode::CameraUnreachable);
            assert!(message.contains("loopback"), "{message}");
        }
        other => panic!("expected failed, got {other:?}"),
    }
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_and_silent_cameras_are_recorded_as_served() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let worker = env.spawn_worker("w1", &[]);
    for (profile, codec, audio) in [
        (CameraProfile::h265_aac(), "hevc", Some("aac")),
        (CameraProfile::h264_silent(), "h264", None),
    ] {
        let camera = FakeCamera::start(profile).await?;
        let event = event_for(camera.url(), 600);
        let id = event.playback_id;
        env.start_capture(&event).await?;
        env.publish_created(&event).await?;
        let recording = env.log.wait(id, StatusKind::Recording, START).await?;
        sleep_until_recorded(&recording.status.body, 3.0).await;
        env.publish_ended(&event).await?;
        let done = env.log.wait_terminal(id, FINISH).await?;
        let clip = completed(&done.status.body).clone();
        let tmp = tempfile::tempdir()?;
        let info = probe(&env.download(&clip.object_key, tmp.path()).await?).await?;
        assert_eq!(info.video_codec, codec);
        assert_eq!(info.audio_codec.as_deref(), audio);
        assert_eq!(clip.audio_codec.as_deref(), audio);
        assert!(info.moov_before_mdat);
        assert!(
            (info.duration_sec - 3.0).abs() <= 1.5,
            "duration {}",
            info.duration_sec
        );
    }
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_roll_is_recorded_after_the_end() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let mut event = event_for(camera.url(), 600);
    event.limits.post_roll_sec = 3;
    let id = event.playback_id;

    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    let recording = env.log.wait(id, StatusKind::Recording, START).await?;
    sleep_until_recorded(&recording.status.body, 3.0).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(
        (clip.duration_sec - 6.0).abs() <= 1.5,
        "duration {}",
        clip.duration_sec
    );
    worker.stop().await?;
    Ok(())
}
