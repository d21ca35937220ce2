//! A recording's segments in object storage while it happens (real NATS, s3s-fs, the fake RTSP
//! camera, FFmpeg): they are uploaded as they are recorded, pre-roll first; the closed playlist
//! written at the end plays in FFmpeg as HLS; a worker that cannot show it holds the camera
//! writes no segment; the clip's MP4 assembled from the segments while they are recorded
//! plays, seeks (FFmpeg, headless Chromium and Firefox) and hashes as one file.

mod support;

use camrec_shared::messages::{StatusBody, StatusKind};
use camrec_shared::storage::{segments_prefix, ObjectKey, SegmentName, Storage, StorageConfig};
use chrono::{TimeDelta, Utc};
use recorder_worker::assemble::{ClipStream, CLIP_PART_SIZE};
use recorder_worker::capture::segment::{segment_name, Segment};
use recorder_worker::capture::{Capture, Tenure};
use recorder_worker::live::LiveUpload;
use recorder_worker::upload::{UploadOptions, Uploader};
use std::path::Path;
use std::time::Duration;
use support::{event_for, stored_segments, Env};
use testkit::{CameraProfile, FakeCamera, S3Server};

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
    // The clip was assembled from the segments while they were recorded: one faststart MP4
    // (the index, then the samples), of the length it reports.
    let tmp = tempfile::tempdir()?;
    let video = env.download(&clip.object_key, tmp.path()).await?;
    let bytes = std::fs::read(&video)?;
    assert_eq!(top_boxes(&bytes)[..2], ["ftyp", "moov"]);
    assert_eq!(top_boxes(&bytes).last().map(String::as_str), Some("mdat"));
    assert_eq!(clip.size_bytes, bytes.len() as u64);
    let (probed, _) = probe_packets(&video).await?;
    assert!(
        (probed - clip.duration_sec).abs() < 0.5,
        "{probed} s probed, {} s reported",
        clip.duration_sec
    );

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
    let segments = capture_run(tmp.path(), 2, "160x120", "200k").await?;
    let id = camrec_shared::PlaybackId::new();
    let capture = Capture::new();
    capture.hold(Tenure {
        epoch: 7,
        valid_until: tokio::time::Instant::now() + Duration::from_secs(60),
    });
    let live = LiveUpload::spawn(uploader, id, capture.clone(), Some(Duration::from_secs(60)));

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

/// `seconds` one-second segments of one FFmpeg run (H.264 at `bitrate` and AAC), named as the
/// capture names them.
async fn capture_run(
    dir: &Path,
    seconds: u32,
    size: &str,
    bitrate: &str,
) -> anyhow::Result<Vec<Segment>> {
    std::fs::create_dir_all(dir)?;
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25,noise=alls=40:allf=t"))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"])
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-b:v", bitrate, "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        ])
        .args(["-f", "segment", "-segment_time", "1"])
        .args(["-segment_format", "mp4", "-segment_format_options"])
        .arg(recorder_worker::ffmpeg::SEGMENT_FORMAT_OPTIONS)
        .arg(dir.join("raw%03d.mp4"))
        .status()
        .await?;
    anyhow::ensure!(status.success(), "ffmpeg failed");
    let t0 = Utc::now();
    let mut segments = Vec::new();
    for i in 0..seconds {
        let start = t0 + TimeDelta::seconds(i64::from(i));
        let path = dir.join(segment_name(start, Duration::from_secs(1)));
        std::fs::rename(dir.join(format!("raw{i:03}.mp4")), &path)?;
        segments.push(Segment {
            seq: u64::from(i) + 1,
            start,
            duration: Duration::from_secs(1),
            bytes: std::fs::metadata(&path)?.len(),
            path,
        });
    }
    Ok(segments)
}

/// The top-level box types of an MP4 file, in order.
fn top_boxes(file: &[u8]) -> Vec<String> {
    recorder_worker::mp4::boxes(file, 0..file.len())
        .expect("the clip's boxes parse")
        .iter()
        .map(|b| String::from_utf8_lossy(&b.kind).into_owned())
        .collect()
}

/// What ffprobe reads of a file: its duration, and its video packets' times.
async fn probe_packets(path: &Path) -> anyhow::Result<(f64, Vec<f64>)> {
    let mut cmd = tokio::process::Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-show_entries",
        "format=duration:packet=pts_time",
    ])
    .args(["-select_streams", "v:0", "-of", "csv=p=0"]);
    let out = cmd.arg(path).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    let (duration, packets) = values.split_last().expect("a duration line");
    Ok((*duration, packets.to_vec()))
}

/// What FFmpeg read to decode the first video frame at `at` seconds of a file.
#[derive(Debug)]
struct SeekRead {
    /// Where that frame's packet lies in the file.
    first_frame_at: u64,
    bytes_read: u64,
}

async fn seek_read(path: &Path, at: f64) -> anyhow::Result<SeekRead> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "debug", "-ss", &at.to_string(), "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v",
            "-frames:v",
            "1",
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "ffmpeg seek failed");
    let log = String::from_utf8_lossy(&out.stderr);
    let after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let first_frame_at = log
        .lines()
        .find(|l| l.contains("Parsed_showinfo") && l.contains(" pos:"))
        .and_then(|l| after(l, " pos:"))
        .ok_or_else(|| anyhow::anyhow!("no frame decoded"))?;
    let bytes_read = log
        .lines()
        .filter(|l| l.contains("Statistics:") && l.contains("bytes read"))
        .filter_map(|l| after(l, "Statistics:"))
        .max()
        .ok_or_else(|| anyhow::anyhow!("no read statistics"))?;
    Ok(SeekRead {
        first_frame_at,
        bytes_read,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_assembled_while_recording_is_one_mp4_that_plays_seeks_and_hashes(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s3 = S3Server::start().await?;
    let storage = s3.storage()?;
    // A bitrate that fills several parts: the first part (front and first media) is written
    // last, the others as their bytes are recorded, and the tail at the end.
    let part_size = CLIP_PART_SIZE;
    let uploader = Uploader::new(storage.clone(), UploadOptions::default());
    let segments = capture_run(&tmp.path().join("run"), 12, "640x360", "12M").await?;
    let paths: Vec<_> = segments.iter().map(|s| s.path.clone()).collect();
    let id = camrec_shared::PlaybackId::new();
    let key = ObjectKey::Video(id);
    let mut stream = ClipStream::new(uploader.clone(), key, Duration::from_secs(60));
    // The recording's last segments reach the stream only at the end, as after a short drain.
    for p in &paths[..9] {
        stream.push(p).await;
    }
    let stored = stream
        .finish(&paths)
        .await
        .map_err(|e| anyhow::anyhow!("not assembled: {e}"))?;

    let local = tmp.path().join("video.mp4");
    let bytes = storage.store().get(&key.path()).await?.bytes().await?;
    std::fs::write(&local, &bytes)?;
    let media: u64 = segments.iter().map(|s| s.bytes).sum();
    assert_eq!(stored.size_bytes, bytes.len() as u64);
    assert!(
        stored.size_bytes > 3 * part_size as u64 && stored.size_bytes < media + 128 * 1024,
        "{} bytes in several parts: the segments' samples ({media} bytes with their init \
         sections and moofs) and a front reserved for the index of a clip of up to 60 s",
        stored.size_bytes
    );
    use sha2::Digest;
    assert_eq!(stored.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    // Sent in parts: the front was reserved, the index is padded to it.
    assert_eq!(top_boxes(&bytes), ["ftyp", "moov", "free", "mdat"]);

    // It plays whole: every frame of the 12 s, in order, with the duration the front gives.
    let (duration, times) = probe_packets(&local).await?;
    // (The audio track, with the encoder's priming, runs a little past the video.)
    assert!((duration - 12.0).abs() < 0.4, "duration {duration}");
    assert!((stored.duration_sec - 12.0).abs() < 0.2, "{stored:?}");
    assert_eq!(times.len(), 300, "12 s at 25 fps");
    // The earliest track starts at 0; here the audio, whose encoder priming goes first.
    assert!(times[0] < 0.2, "the clip starts near 0: {}", times[0]);
    assert!(times.windows(2).all(|w| w[0] < w[1] + 0.5));
    // It seeks: FFmpeg asked for 8 s reads the front with the index and the samples from the
    // keyframe before 8 s, found through the index: not the whole file.
    let seek = seek_read(&local, 8.0).await?;
    let keys = keyframes(&local).await?;
    let at = |secs: f64| {
        keys.iter()
            .find(|&&(_, t)| t >= secs - 0.02)
            .map(|&(pos, _)| pos)
            .expect("a keyframe a second")
    };
    let seventh = at(7.0);
    assert!(
        seek.first_frame_at >= seventh && seek.bytes_read < stored.size_bytes / 2,
        "{seek:?}: the samples of the 8th second start at {seventh} of {} bytes",
        stored.size_bytes
    );
    // In Chromium and in Firefox, served with byte ranges as S3 serves it: the duration is
    // known from the index, and the seek asks for the bytes about 8 s, found through it, and
    // plays on from there.
    let (sixth, eighth) = (at(6.0), at(8.0));
    for browser in ["chromium", "firefox"] {
        let served = ClipServer::start(bytes.clone()).await?;
        let played = browser_seek(browser, &served.page_url(), 8.0).await?;
        let (opening, ranges) = served.ranges();
        drop(served);
        eprintln!("{browser}: {played:?}; opening asked for {opening:?}, the seek for {ranges:?}");
        assert!(
            (played.duration - 12.0).abs() < 0.4,
            "{browser}: {played:?}"
        );
        assert!((played.landed - 8.0).abs() < 0.5, "{browser}: {played:?}");
        assert!(
            played.ready_state >= 2 && played.advanced,
            "{browser}: {played:?}"
        );
        assert!(played.errors.is_empty(), "{browser}: {played:?}");
        // Opening it reads the front with the index; the seek asks for the bytes about 8 s,
        // found through the index.
        assert!(
            opening.len() <= 4,
            "{browser}: opening the clip asked for {} ranges: {opening:?}",
            opening.len()
        );
        assert!(
            ranges
                .iter()
                .any(|&(from, _)| from >= sixth && from <= eighth),
            "{browser}: no range request near the 8th second ({sixth}..{eighth}): {ranges:?}"
        );
    }
    s3.stop();
    Ok(())
}

/// A clip that runs past what its front was reserved for (here: a recording said to last at
/// most 1 s; in a worker, one of over about 20 minutes) keeps its index after the media, in the upload's last parts: still one MP4 that
/// plays whole, seeks and hashes.
#[tokio::test]
async fn a_clip_whose_index_outgrew_its_front_has_it_after_the_media() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s3 = S3Server::start().await?;
    let storage = s3.storage()?;
    let uploader = Uploader::new(storage.clone(), UploadOptions::default());
    // 24 s in parts of 5 MiB: the front is reserved after about 10 s, for 1 s more of index
    // (and 4 KiB): the index of 24 s does not fit it.
    let segments = capture_run(&tmp.path().join("run"), 24, "640x360", "4M").await?;
    let paths: Vec<_> = segments.iter().map(|s| s.path.clone()).collect();
    let key = ObjectKey::Video(camrec_shared::PlaybackId::new());
    let mut stream = ClipStream::new(uploader, key, Duration::from_secs(1));
    for p in &paths {
        stream.push(p).await;
    }
    let stored = stream
        .finish(&paths)
        .await
        .map_err(|e| anyhow::anyhow!("not assembled: {e}"))?;
    let bytes = storage.store().get(&key.path()).await?.bytes().await?;
    assert_eq!(stored.size_bytes, bytes.len() as u64);
    assert!(
        stored.size_bytes > 2 * CLIP_PART_SIZE as u64,
        "sent in parts"
    );
    use sha2::Digest;
    assert_eq!(stored.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(top_boxes(&bytes), ["ftyp", "free", "mdat", "moov"]);
    let local = tmp.path().join("video.mp4");
    std::fs::write(&local, &bytes)?;
    let (duration, times) = probe_packets(&local).await?;
    assert!((duration - 24.0).abs() < 0.4, "duration {duration}");
    assert_eq!(times.len(), 600, "24 s at 25 fps");
    let seek = seek_read(&local, 20.0).await?;
    assert!(seek.bytes_read < stored.size_bytes, "{seek:?}");
    s3.stop();
    Ok(())
}

#[tokio::test]
async fn a_break_in_the_capture_leaves_the_clip_to_be_joined_and_nothing_at_its_key(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut s3 = S3Server::start().await?;
    let storage = s3.storage()?;
    let uploader = Uploader::new(storage.clone(), UploadOptions::default());
    // The camera reconnected at another size: another init section. The first run fills a
    // part, sent before the break: it is dropped with the upload.
    let first = capture_run(&tmp.path().join("a"), 4, "640x360", "16M").await?;
    let second = capture_run(&tmp.path().join("b"), 2, "352x288", "1M").await?;
    let paths: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|s| s.path.clone())
        .collect();
    let id = camrec_shared::PlaybackId::new();
    let mut stream = ClipStream::new(uploader, ObjectKey::Video(id), Duration::from_secs(60));
    for p in &paths {
        stream.push(p).await;
    }
    let refused = stream.finish(&paths).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("init section")),
        "{refused:?}"
    );
    let held = storage.store().head(&ObjectKey::Video(id).path()).await;
    assert!(held.is_err(), "nothing stored: {held:?}");
    s3.stop();
    Ok(())
}

/// The ranges of the requests for a clip: (first byte, last byte when bounded).
type Ranges = Vec<(u64, Option<u64>)>;

/// Serves a clip at `/clip.mp4` with byte ranges (as S3 does, at a remote store's pace) and a
/// page that plays it at `/`;
/// keeps the range of every request for the clip, before and after `/seeking` was asked for.
struct ClipServer {
    addr: std::net::SocketAddr,
    ranges: std::sync::Arc<std::sync::Mutex<(Ranges, Option<Ranges>)>>,
    task: tokio::task::JoinHandle<()>,
}

/// `body` sent at about 3 MB/s (64 KiB every 20 ms), as from a remote store rather than from
/// this machine's memory: a browser then reads what it needs, not whatever it can buffer.
fn paced(body: bytes::Bytes) -> axum::body::Body {
    let pieces = (0..body.len())
        .step_by(64 * 1024)
        .map(move |at| body.slice(at..(at + 64 * 1024).min(body.len())));
    let stream = futures::stream::unfold(pieces, |mut pieces| async move {
        let piece = pieces.next()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok::<_, std::convert::Infallible>(piece), pieces))
    });
    axum::body::Body::from_stream(stream)
}

impl ClipServer {
    async fn start(clip: bytes::Bytes) -> anyhow::Result<Self> {
        use axum::http::{header, HeaderMap, StatusCode};
        use axum::response::{Html, IntoResponse};
        let ranges = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), None)));
        let (seen, seeking) = (ranges.clone(), ranges.clone());
        let app = axum::Router::new()
            .route(
                "/seeking",
                axum::routing::get(move || async move {
                    seeking.lock().unwrap().1 = Some(Vec::new());
                }),
            )
            .route(
                "/",
                axum::routing::get(|| async {
                    Html(r#"<!doctype html><video id="clip" preload="metadata" src="/clip.mp4"></video>"#)
                }),
            )
            .route(
                "/clip.mp4",
                axum::routing::get(move |headers: HeaderMap| {
                    let (clip, seen) = (clip.clone(), seen.clone());
                    async move {
                        let len = clip.len() as u64;
                        let asked = headers
                            .get(header::RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split_once('-'))
                            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok())));
                        let kind = [(header::CONTENT_TYPE, "video/mp4"), (header::ACCEPT_RANGES, "bytes")];
                        match asked {
                            Some((from, to)) if from < len => {
                                let mut seen = seen.lock().unwrap();
                                match seen.1.as_mut() {
                                    Some(after) => after.push((from, to)),
                                    None => seen.0.push((from, to)),
                                }
                                let to = to.unwrap_or(len - 1).min(len - 1);
                                let range = format!("bytes {from}-{to}/{len}");
                                let body = paced(clip.slice(from as usize..=to as usize));
                                (StatusCode::PARTIAL_CONTENT, kind, [(header::CONTENT_RANGE, range)], body)
                                    .into_response()
                            }
                            _ => {
                                let mut seen = seen.lock().unwrap();
                                match seen.1.as_mut() {
                                    Some(after) => after.push((0, None)),
                                    None => seen.0.push((0, None)),
                                }
                                (StatusCode::OK, kind, paced(clip)).into_response()
                            }
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, ranges, task })
    }

    fn page_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The ranges asked for the clip before `/seeking` and since, in order.
    fn ranges(&self) -> (Ranges, Ranges) {
        let seen = self.ranges.lock().unwrap();
        (seen.0.clone(), seen.1.clone().unwrap_or_default())
    }
}

impl Drop for ClipServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where each video keyframe of `path` lies in the file, and its time in seconds.
async fn keyframes(path: &Path) -> anyhow::Result<Vec<(u64, f64)>> {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "packet=pts_time,pos,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "ffprobe failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let (t, pos, flags) = (f.next()?, f.next()?, f.next()?);
            flags
                .starts_with('K')
                .then(|| Some((pos.parse().ok()?, t.parse().ok()?)))
                .flatten()
        })
        .collect())
}

/// What a browser did with a clip (`ui-tests/clip-seek.mjs`).
#[derive(Debug, serde::Deserialize)]
struct Played {
    duration: f64,
    landed: f64,
    #[serde(rename = "readyState")]
    ready_state: u32,
    advanced: bool,
    errors: Vec<String>,
}

/// Opens `page` in headless `browser` (`chromium` or `firefox`), seeks its `video#clip` to `at`
/// seconds and plays on.
async fn browser_seek(browser: &str, page: &str, at: f64) -> anyhow::Result<Played> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui-tests/clip-seek.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(browser)
        .arg(page)
        .arg(at.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run).await??;
    anyhow::ensure!(
        out.status.success(),
        "clip-seek.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}
