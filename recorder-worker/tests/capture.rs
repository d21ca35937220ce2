//! The per-camera capture on real parts (NATS, s3s-fs, the fake RTSP camera, FFmpeg): clips that
//! hold their pre-roll and post-roll, overlapping events sharing one RTSP session, a camera drop
//! that leaves one gap, and cameras taken and let go as the catalog changes.

mod support;

use camrec_shared::capture::CaptureState;
use camrec_shared::messages::{CompletedClip, StatusBody, StatusKind};
use chrono::{TimeDelta, Utc};
use std::time::Duration;
use support::{children_named, event_for, probe, spec_for, Env};
use testkit::{CameraProfile, FakeCamera};

const FINISH: Duration = Duration::from_secs(90);
/// The fake camera's keyframe interval (key-int-max = fps): a clip starts within it.
const KEYFRAME: TimeDelta = TimeDelta::seconds(1);

fn completed(body: &StatusBody) -> CompletedClip {
    match body {
        StatusBody::Completed(c) => c.clone(),
        other => panic!("not completed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_holds_its_pre_roll_and_post_roll() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let mut event = event_for(camera.url(), 600);
    event.limits.pre_roll_sec = 3;
    event.limits.post_roll_sec = 2;
    env.start_capture(&event).await?;
    // The ring holds more than the pre-roll before the event.
    env.wait_ring_holds("w1", event.camera_id, 4.0).await?;

    let occurred = Utc::now();
    event.occurred_at = Some(occurred);
    env.publish_created(&event).await?;
    let recording = env
        .log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;
    let StatusBody::Recording { started_at } = recording.status.body else {
        panic!("not recording");
    };
    assert!(
        started_at <= occurred - TimeDelta::seconds(3) + KEYFRAME,
        "`recording` already says where the clip starts: {started_at} for {occurred}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended = Utc::now();
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let clip = completed(&done.status.body);

    assert!(
        clip.started_at <= occurred - TimeDelta::seconds(3) + KEYFRAME,
        "pre-roll: {} for an event at {occurred}",
        clip.started_at
    );
    assert!(clip.started_at >= occurred - TimeDelta::seconds(3) - KEYFRAME * 2);
    assert!(
        clip.ended_at >= ended + TimeDelta::seconds(2) - TimeDelta::milliseconds(500),
        "post-roll: {} for an end at {ended}",
        clip.ended_at
    );
    assert!(
        !clip.started_late && !clip.partial && clip.gaps.is_empty(),
        "{clip:?}"
    );
    // The file's own timeline agrees with the capture's wall clock.
    let tmp = tempfile::tempdir()?;
    let info = probe(&env.download(&clip.object_key, tmp.path()).await?).await?;
    let wall = (clip.ended_at - clip.started_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        (info.duration_sec - wall).abs() <= 1.0,
        "file {} s against wall {wall} s",
        info.duration_sec
    );
    assert!(info.duration_sec >= 3.0 + 2.0 + 2.0 - 0.5, "{info:?}");
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_events_share_one_rtsp_session() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let first = event_for(camera.url(), 600);
    env.start_capture(&first).await?;
    camera.reset_peak();
    let mut events = vec![first.clone()];
    for _ in 0..4 {
        let mut e = event_for(camera.url(), 600);
        e.camera_id = first.camera_id;
        events.push(e);
    }
    for (i, e) in events.iter().enumerate() {
        env.publish_created(e).await?;
        env.log
            .wait(e.playback_id, StatusKind::Recording, FINISH)
            .await?;
        assert_eq!(camera.sessions().open, 1, "{} events open", i + 1);
    }
    for e in &events {
        env.publish_ended(e).await?;
    }
    let mut ids = std::collections::HashSet::new();
    for e in &events {
        let done = env.log.wait_terminal(e.playback_id, FINISH).await?;
        let clip = completed(&done.status.body);
        assert!(ids.insert(clip.object_key.clone()), "one clip per event");
    }
    let sessions = camera.sessions();
    assert_eq!(
        sessions.peak, 1,
        "one RTSP session for five overlapping events: {sessions:?}"
    );
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_dropped_for_ten_seconds_leaves_one_gap() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let mut camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("RTSP_TIMEOUT_SEC", "2")]);
    let event = event_for(camera.url(), 600);
    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    camera.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    camera.restart().await?;
    env.wait_capturing(event.camera_id).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let clip = completed(&done.status.body);

    assert!(clip.partial, "{clip:?}");
    assert_eq!(clip.gaps.len(), 1, "{:?}", clip.gaps);
    let gap = (clip.gaps[0].to - clip.gaps[0].from).num_milliseconds() as f64 / 1000.0;
    // The camera was away 10 s; its last segment may have ended up to a keyframe interval before
    // the kill, and the capture needs a retry and a probe to come back.
    assert!((9.0..=17.0).contains(&gap), "gap of {gap} s");
    let tmp = tempfile::tempdir()?;
    let info = probe(&env.download(&clip.object_key, tmp.path()).await?).await?;
    let wall = (clip.ended_at - clip.started_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        (info.duration_sec - (wall - gap)).abs() <= 1.5,
        "the gap is skipped, not filled: file {} s, wall {wall} s, gap {gap} s",
        info.duration_sec
    );
    worker.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_taken_within_ten_seconds_and_let_go_when_disabled() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let mut spec = spec_for(&event);

    env.put_spec(&spec).await?;
    let taken = std::time::Instant::now();
    testkit::wait_until(Duration::from_secs(10), "the camera captured", || async {
        env.capture_lease(event.camera_id)
            .await
            .ok()
            .flatten()
            .filter(|l| l.state == CaptureState::Capturing && l.worker_id == "w1")
    })
    .await?;
    assert!(taken.elapsed() < Duration::from_secs(10));
    assert_eq!(camera.sessions().open, 1);

    spec.enabled = false;
    env.put_spec(&spec).await?;
    testkit::wait_until(Duration::from_secs(10), "the capture stopped", || async {
        let lease = env.capture_lease(event.camera_id).await.ok()?;
        (lease.is_none() && camera.sessions().open == 0).then_some(())
    })
    .await?;
    assert!(
        children_named(std::process::id(), "ffmpeg").is_empty(),
        "no ffmpeg left"
    );
    let ring = env
        .record_dir("w1")
        .join("_capture")
        .join(event.camera_id.to_string());
    assert!(!ring.exists(), "the ring goes with the camera");

    spec.enabled = true;
    env.put_spec(&spec).await?;
    env.wait_capturing(event.camera_id).await?;
    spec.deleted = true;
    env.put_spec(&spec).await?;
    testkit::wait_until(Duration::from_secs(10), "the capture stopped", || async {
        (camera.sessions().open == 0).then_some(())
    })
    .await?;
    worker.stop().await?;
    Ok(())
}

/// The ring keeps `preRollSec + RING_MARGIN_SEC` of segments, no more: what it holds on disk is
/// that many seconds of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_holds_pre_roll_plus_margin_and_no_more() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("RING_MARGIN_SEC", "2")]);
    let mut event = event_for(camera.url(), 600);
    event.limits.pre_roll_sec = 2;
    env.start_capture(&event).await?;
    // Past the ring's length (2 s pre-roll + 2 s margin) long enough for it to drop segments.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let held = env.ring_seconds("w1", event.camera_id);
    // Kept: what ended within the last 4 s, plus the segment that straddles the horizon.
    assert!((3.0..=6.0).contains(&held), "the ring holds {held} s");
    worker.stop().await?;
    Ok(())
}

/// A capture whose disk falls below the floor stops writing (its camera reports `disk_full`) and
/// deletes nothing it holds; with room again it captures again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_capture_and_keeps_its_segments() -> anyhow::Result<()> {
    use recorder_worker::capture::{self, Capture};
    use recorder_worker::disk::DiskGuard;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let dir = tempfile::tempdir()?;
    let free = Arc::new(AtomicU64::new(u64::MAX));
    let reported = free.clone();
    let disk = Arc::new(DiskGuard::new(
        dir.path().to_path_buf(),
        1 << 20,
        Arc::new(move |_| Ok(reported.load(Ordering::SeqCst))),
    ));
    let settings = capture::Settings {
        ffmpeg: "ffmpeg".into(),
        ffprobe: "ffprobe".into(),
        io_timeout: Duration::from_secs(3),
        segment: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        stop_grace: Duration::from_secs(3),
        networks: camrec_shared::netpolicy::NetworkPolicy::parse("127.0.0.0/8")?,
    };
    let cap = Capture::new();
    cap.set_keep(Duration::from_secs(3600));
    let cancel = recorder_worker::CancellationToken::new();
    let task = tokio::spawn(capture::run(
        cap.clone(),
        camera.url(),
        dir.path().join("cam"),
        settings,
        disk,
        cancel.clone(),
    ));
    let mut report = cap.report();
    let mut newest = cap.newest();
    tokio::time::timeout(Duration::from_secs(20), newest.wait_for(|n| *n >= 3)).await??;

    free.store(0, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(10),
        report.wait_for(|r| r.state == CaptureState::DiskFull),
    )
    .await??;
    testkit::wait_until(Duration::from_secs(5), "the session closed", || async {
        (camera.sessions().open == 0).then_some(())
    })
    .await?;
    let held = cap.segments_from(Utc::now() - TimeDelta::hours(1));
    assert!(held.len() >= 3, "{held:?}");
    assert!(
        held.iter().all(|s| s.path.exists()),
        "nothing held is deleted"
    );
    let before = *newest.borrow_and_update();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        *newest.borrow(),
        before,
        "no segment while the disk is full"
    );

    free.store(u64::MAX, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(20),
        report.wait_for(|r| r.state == CaptureState::Capturing),
    )
    .await??;
    cancel.cancel();
    task.await?;
    Ok(())
}

/// NATS away for longer than a lease lives: nobody can take the camera, so its capture goes on,
/// the recording in progress loses nothing, and the lease is taken again when NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_lease_does_not_stop_the_capture() -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;
    let sessions = camera.sessions().total;

    env.nats.stop();
    let outage = camrec_shared::capture::CAPTURE_LEASE_TTL + Duration::from_secs(5);
    tokio::time::sleep(outage).await;
    assert_eq!(camera.sessions().open, 1, "still capturing");
    env.nats.restart().await?;
    testkit::wait_until(Duration::from_secs(20), "the lease taken again", || async {
        env.capture_lease(event.camera_id)
            .await
            .ok()
            .flatten()
            .filter(|l| l.worker_id == "w1")
    })
    .await?;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(clip.gaps.is_empty() && !clip.partial, "{clip:?}");
    assert_eq!(
        camera.sessions().total,
        sessions,
        "the capture never restarted"
    );
    worker.stop().await?;
    Ok(())
}

/// An `event.ended` right behind its `event.created` reaches the recording: the clip is its
/// window, not the max duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_right_behind_its_start_ends_the_clip() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let mut event = event_for(camera.url(), 600);
    event.limits.pre_roll_sec = 2;
    event.limits.post_roll_sec = 2;
    env.start_capture(&event).await?;
    env.wait_ring_holds("w1", event.camera_id, 3.0).await?;
    event.occurred_at = Some(Utc::now());
    env.publish_created(&event).await?;
    env.publish_ended(&event).await?;
    let done = env
        .log
        .wait_terminal(event.playback_id, Duration::from_secs(30))
        .await?;
    let clip = completed(&done.status.body);
    let wall = (clip.ended_at - clip.started_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        (3.5..=7.0).contains(&wall),
        "pre-roll + post-roll: {wall} s"
    );
    worker.stop().await?;
    Ok(())
}

/// A clip ends as soon as its end has been captured: on the whole fragments of the segment
/// FFmpeg is still writing, not when the camera's next keyframe after the segment length closes
/// it. Segments of 3 s here; the event ends just after one closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_ends_on_the_segment_still_being_written() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let worker = env.spawn_worker("w1", &[("SEGMENT_SEC", "3")]);
    let mut event = event_for(camera.url(), 600);
    event.limits.pre_roll_sec = 1;
    event.limits.post_roll_sec = 0;
    env.start_capture(&event).await?;
    env.wait_ring_holds("w1", event.camera_id, 3.0).await?;
    event.occurred_at = Some(Utc::now());
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;
    // End the event right after a segment closed: the one holding the end is 3 s long.
    let held = env.ring_seconds("w1", event.camera_id);
    testkit::wait_until(Duration::from_secs(10), "a segment closed", || async {
        (env.ring_seconds("w1", event.camera_id) != held).then_some(())
    })
    .await?;
    let ended = Utc::now();
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let clip = completed(&done.status.body);

    // The end is in the clip, and the clip stops within a fragment or two of it: waiting for
    // the segment to close would have added about 3 s.
    assert!(
        clip.ended_at >= ended,
        "{} for an end at {ended}",
        clip.ended_at
    );
    assert!(
        clip.ended_at - ended < TimeDelta::milliseconds(1500),
        "the clip runs {} ms past its end",
        (clip.ended_at - ended).num_milliseconds()
    );
    assert!(!clip.partial && clip.gaps.is_empty(), "{clip:?}");
    // Its last segment is the cut: shorter than the others, and where the one before ended.
    let storage = env.s3.storage()?;
    let stored = support::stored_segments(&storage, event.playback_id).await?;
    let (last, before) = stored.split_last().expect("segments stored");
    let prev = before.last().expect("more than the cut");
    assert!(last.duration_ms < 1500, "{stored:?}");
    assert!(prev.duration_ms >= 2500, "{stored:?}");
    assert!(last.start_ms.abs_diff(prev.end_ms()) <= 100, "{stored:?}");
    // The clip plays for as long as its wall-clock interval.
    let tmp = tempfile::tempdir()?;
    let info = probe(&env.download(&clip.object_key, tmp.path()).await?).await?;
    let wall = (clip.ended_at - clip.started_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        (info.duration_sec - wall).abs() <= 0.5,
        "file {} s against wall {wall} s",
        info.duration_sec
    );
    worker.stop().await?;
    Ok(())
}

/// An event whose window the ring no longer holds (it reached the worker minutes late) gets no
/// footage from after its window: it fails, saying the capture held nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_window_the_ring_no_longer_holds_fails_as_no_media() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[("RING_MARGIN_SEC", "2")]);
    let mut event = event_for(camera.url(), 10);
    env.start_capture(&event).await?;
    event.occurred_at = Some(Utc::now() - TimeDelta::seconds(120));
    env.publish_created(&event).await?;
    let done = env
        .log
        .wait_terminal(event.playback_id, Duration::from_secs(30))
        .await?;
    match &done.status.body {
        StatusBody::Failed { code, .. } => {
            assert_eq!(*code, camrec_shared::messages::FailureCode::NoMedia)
        }
        other => panic!("expected failed, got {other:?}"),
    }
    worker.stop().await?;
    Ok(())
}

/// A camera whose address changes (here: moved to another camera server) is captured from the
/// new address; the recording in progress carries on across the switch, with the switch as its
/// only gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_camera_address_restarts_the_capture_under_the_open_recording(
) -> anyhow::Result<()> {
    let env = Env::start().await?;
    let old = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let new = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(old.url(), 600);
    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut spec = spec_for(&event);
    spec.rtsp_url = new.url();
    env.put_spec(&spec).await?;
    testkit::wait_until(Duration::from_secs(20), "the capture moved", || async {
        let (o, n) = (old.sessions(), new.sessions());
        (o.open == 0 && n.open == 1 && n.total >= 1).then_some(())
    })
    .await?;
    env.wait_capturing(event.camera_id).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let clip = completed(&done.status.body);
    assert!(clip.gaps.len() <= 1, "{:?}", clip.gaps);
    let wall = (clip.ended_at - clip.started_at).num_milliseconds() as f64 / 1000.0;
    assert!(wall >= 6.0, "the clip spans both captures: {wall} s");
    worker.stop().await?;
    Ok(())
}

/// Cameras created together are shared by the workers of their site, not all taken by the
/// first worker to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_created_together_are_shared_by_the_sites_workers() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let w1 = env.spawn_worker("w1", &[]);
    let w2 = env.spawn_worker("w2", &[]);
    // Both workers run their lease rounds before the cameras appear.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing answers on port 1: the captures fail, the leases are held all the same.
    let url = camrec_shared::rtsp::RtspUrl::parse("rtsp://127.0.0.1:1/cam")?;
    let events: Vec<_> = (0..4).map(|_| event_for(url.clone(), 60)).collect();
    for e in &events {
        env.put_camera(e).await?;
    }
    let holders = testkit::wait_until(Duration::from_secs(15), "every camera taken", || async {
        let mut holders = Vec::new();
        for e in &events {
            holders.push(env.capture_lease(e.camera_id).await.ok()??.worker_id);
        }
        Some(holders)
    })
    .await?;
    let by_w1 = holders.iter().filter(|w| *w == "w1").count();
    assert!(
        (1..=3).contains(&by_w1),
        "both workers hold cameras: {holders:?}"
    );
    w1.stop().await?;
    w2.stop().await?;
    Ok(())
}
