//! A recording's segments in object storage while it happens (real NATS, s3s-fs, the fake RTSP
//! camera, FFmpeg): they are uploaded as they are recorded, pre-roll first; the closed playlist
//! written at the end plays in FFmpeg as HLS; a worker that cannot show it holds the camera
//! writes no segment.

mod support;

use camrec_shared::messages::{StatusBody, StatusKind};
use camrec_shared::storage::{segments_prefix, ObjectKey, SegmentName, Storage, StorageConfig};
use chrono::{TimeDelta, Utc};
use recorder_worker::capture::segment::{segment_name, Segment};
use recorder_worker::capture::{Capture, Tenure};
use recorder_worker::live::LiveUpload;
use recorder_worker::upload::{UploadOptions, Uploader};
use std::path::Path;
use std::time::Duration;
use support::{event_for, stored_segments, Env};
use testkit::{CameraProfile, FakeCamera};

const FINISH: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_uploaded_while_recording_and_listed_in_a_playlist_that_plays(
) -> anyhow::Result<()> {
    let env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::default()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let mut event = event_for(camera.url(), 600);
    event.limits.pre_roll_sec = 2;
    event.limits.post_roll_sec = 1;
    env.start_capture(&event).await?;
    env.wait_ring_holds("w1", event.camera_id, 3.0).await?;
    let occurred = Utc::now();
    event.occurred_at = Some(occurred);
    env.publish_created(&event).await?;
    env.log
        .wait(event.playback_id, StatusKind::Recording, FINISH)
        .await?;

    // While the event goes on, its segments are in the store: the pre-roll first, all under
    // one holder's epoch.
    let storage = env.s3.storage()?;
    let until = (occurred + TimeDelta::seconds(3)).timestamp_millis();
    let live = wait_for_segments(&storage, event.playback_id, |n| {
        n.last().is_some_and(|l| l.end_ms() >= until)
    })
    .await?;
    assert!(
        live[0].start_ms <= (occurred - TimeDelta::seconds(1)).timestamp_millis(),
        "the pre-roll is uploaded first: {live:?} for an event at {occurred}"
    );
    assert!(live[0].epoch > 0 && live.iter().all(|n| n.epoch == live[0].epoch));
    assert!(live.iter().all(|n| n.init_len > 0 && n.duration_ms > 0));
    let kinds = env.log.kinds(event.playback_id);
    assert!(
        kinds
            .iter()
            .all(|k| matches!(k, StatusKind::Recording | StatusKind::Progress)),
        "still recording: {kinds:?}"
    );

    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(event.playback_id, FINISH).await?;
    let StatusBody::Completed(clip) = done.status.body else {
        panic!("not completed: {:?}", done.status.body);
    };
    let list_key = ObjectKey::SegmentList(event.playback_id).to_string();
    assert_eq!(clip.segment_list_key.as_deref(), Some(list_key.as_str()));

    // The closed playlist and its segments, laid out as in the bucket, play in FFmpeg.
    let tmp = tempfile::tempdir()?;
    let playlist = env.download(&list_key, tmp.path()).await?;
    let text = std::fs::read_to_string(&playlist)?;
    assert!(text.contains("#EXT-X-VERSION:7") && text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!text.contains("#EXT-X-DISCONTINUITY"), "one run: {text}");
    std::fs::create_dir(tmp.path().join("live"))?;
    let all = stored_segments(&storage, event.playback_id).await?;
    assert!(all.len() >= live.len());
    for name in &all {
        let key = ObjectKey::Segment(event.playback_id, *name).to_string();
        let bytes = storage
            .store()
            .get(&object_store::path::Path::from(key.as_str()))
            .await?
            .bytes()
            .await?;
        std::fs::write(tmp.path().join("live").join(name.to_string()), bytes)?;
    }
    let index = tmp.path().join("index.m3u8");
    std::fs::rename(&playlist, &index)?;
    let (frames, seconds) = hls_frames(&index).await?;
    assert!(
        (seconds - clip.duration_sec).abs() <= 1.5,
        "the playlist plays {seconds} s, the clip is {} s",
        clip.duration_sec
    );
    assert!(
        frames as f64 >= seconds * 10.0,
        "{frames} frames in {seconds} s"
    );
    worker.stop().await?;
    Ok(())
}

/// Decodes an HLS playlist with FFmpeg: the video frames it holds and their span in seconds.
async fn hls_frames(index: &Path) -> anyhow::Result<(u64, f64)> {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time", "-of", "csv=p=0"])
        .arg(index)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    let (Some(first), Some(last)) = (
        times.iter().copied().reduce(f64::min),
        times.iter().copied().reduce(f64::max),
    ) else {
        anyhow::bail!("no video packets in the playlist");
    };
    Ok((times.len() as u64, last - first))
}

/// Two real one-second segments, named as the capture names them.
async fn two_segments(dir: &Path) -> anyhow::Result<Vec<Segment>> {
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args([
            "-i",
            "testsrc=size=160x120:rate=10",
            "-t",
            "2",
            "-c:v",
            "libx264",
        ])
        .args([
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "segment",
            "-segment_time",
            "1",
        ])
        .args(["-segment_format", "mp4", "-segment_format_options"])
        .arg(recorder_worker::ffmpeg::SEGMENT_FORMAT_OPTIONS)
        .arg(dir.join("raw%03d.mp4"))
        .status()
        .await?;
    anyhow::ensure!(status.success(), "ffmpeg failed");
    let t0 = Utc::now();
    let mut segments = Vec::new();
    for (i, raw) in ["raw000.mp4", "raw001.mp4"].iter().enumerate() {
        let start = t0 + TimeDelta::seconds(i as i64);
        let path = dir.join(segment_name(start, Duration::from_secs(1)));
        std::fs::rename(dir.join(raw), &path)?;
        segments.push(Segment {
            seq: i as u64 + 1,
            start,
            duration: Duration::from_secs(1),
            bytes: std::fs::metadata(&path)?.len(),
            path,
        });
    }
    Ok(segments)
}

#[tokio::test]
async fn a_worker_that_cannot_show_it_holds_the_camera_uploads_no_segment() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let store_dir = tmp.path().join("store");
    std::fs::create_dir(&store_dir)?;
    let storage = Storage::open(StorageConfig::from_lookup(|k| match k {
        "STORAGE_MODE" => Some("local".into()),
        "LOCAL_STORAGE_DIR" => Some(store_dir.display().to_string()),
        _ => None,
    })?)?;
    let uploader = Uploader::new(storage.clone(), UploadOptions::default());
    let segments = two_segments(tmp.path()).await?;
    let id = camrec_shared::PlaybackId::new();
    let capture = Capture::new();
    capture.hold(Tenure {
        epoch: 7,
        valid_until: tokio::time::Instant::now() + Duration::from_secs(60),
    });
    let live = LiveUpload::spawn(uploader, id, capture.clone());

    // Held: the first segment goes up under the lease's epoch.
    live.push(segments[0].clone());
    let first = wait_for_segments(&storage, id, |n| !n.is_empty()).await?;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].epoch, 7);
    assert_eq!(first[0].start_ms, segments[0].start.timestamp_millis());

    // The lease can no longer be shown to hold, then another worker takes the camera: the
    // second segment is never written.
    capture.hold(Tenure {
        epoch: 7,
        valid_until: tokio::time::Instant::now(),
    });
    live.push(segments[1].clone());
    capture.lose();
    live.drain(Duration::from_secs(20)).await;
    assert_eq!(stored_segments(&storage, id).await?, first);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_recorded_while_the_store_is_down_go_up_in_order_when_it_is_back(
) -> anyhow::Result<()> {
    let mut env = Env::start().await?;
    let camera = FakeCamera::start(CameraProfile::h264_silent()).await?;
    let worker = env.spawn_worker("w1", &[]);
    let event = event_for(camera.url(), 600);
    let id = event.playback_id;
    env.start_capture(&event).await?;
    env.publish_created(&event).await?;
    env.log.wait(id, StatusKind::Recording, FINISH).await?;
    let storage = env.s3.storage()?;
    wait_for_segments(&storage, id, |n| !n.is_empty()).await?;

    env.s3.stop();
    // Some seconds of video are recorded while nothing can be stored.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.s3.restart().await?;
    let back = Utc::now();
    let storage = env.s3.storage()?;
    let names = wait_for_segments(&storage, id, |n| {
        n.last()
            .is_some_and(|l| l.end_ms() >= back.timestamp_millis())
    })
    .await?;
    for pair in names.windows(2) {
        assert!(
            pair[1].start_ms - pair[0].end_ms() <= 500,
            "no second is missing after the outage: {names:?}"
        );
    }
    // In order: no segment was stored before an older one.
    let modified = last_modified(&storage, &segments_prefix(id)).await?;
    for pair in modified.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "stored out of order: {modified:?}");
    }
    env.publish_ended(&event).await?;
    let done = env.log.wait_terminal(id, FINISH).await?;
    assert!(
        matches!(done.status.body, StatusBody::Completed(_)),
        "{:?}",
        done.status.body
    );
    worker.stop().await?;
    Ok(())
}

async fn wait_for_segments(
    storage: &Storage,
    id: camrec_shared::PlaybackId,
    done: impl Fn(&[SegmentName]) -> bool,
) -> anyhow::Result<Vec<SegmentName>> {
    testkit::wait_until(
        Duration::from_secs(30),
        "the segments looked for",
        || async {
            let names = stored_segments(storage, id).await.unwrap_or_default();
            done(&names).then_some(names)
        },
    )
    .await
}

/// Each stored segment's start and when the store took it, in time order.
async fn last_modified(
    storage: &Storage,
    prefix: &str,
) -> anyhow::Result<Vec<(i64, chrono::DateTime<Utc>)>> {
    use futures::TryStreamExt;
    let listed: Vec<object_store::ObjectMeta> = storage
        .store()
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await?;
    let mut out: Vec<(i64, chrono::DateTime<Utc>)> = listed
        .iter()
        .filter_map(|m| match ObjectKey::parse(m.location.as_ref()) {
            Some(ObjectKey::Segment(_, n)) => Some((n.start_ms, m.last_modified)),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}
