//! The media engine on real parts: the fake RTSP camera in every codec profile, real FFmpeg and
//! ffprobe, and the s3s-fs S3 server. Each test runs a camera's segmenter for a few seconds, stops
//! (or kills) FFmpeg, joins and probes the segments, or uploads a file and reads it back.

use camrec_shared::rtsp::RtspUrl;
use camrec_shared::storage::ObjectKey;
use camrec_shared::PlaybackId;
use object_store::{Attribute, GetOptions};
use recorder_worker::ffmpeg::{ExitReport, ListEntry, MediaError, SegmentPlan, Segmenter};
use recorder_worker::finalize::{finalize, thumbnail};
use recorder_worker::probe::{probe_file, probe_source, ClipInfo, SourceInfo};
use recorder_worker::upload::{UploadOptions, Uploader};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::{wait_until, CameraProfile, FakeCamera, S3Server};

const FFMPEG: &str = "ffmpeg";
const FFPROBE: &str = "ffprobe";
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(5);

async fn source_of(cam: &FakeCamera) -> SourceInfo {
    probe_source(Path::new(FFPROBE), &cam.url(), Duration::from_secs(15))
        .await
        .expect("the fake camera can be probed")
}

/// One-second segments of `url` into `dir`, named `<prefix>NNNNNN.mp4`.
fn plan(url: RtspUrl, source: SourceInfo, dir: &Path, prefix: &str) -> SegmentPlan {
    SegmentPlan {
        input: url,
        dir: dir.to_path_buf(),
        prefix: prefix.to_owned(),
        segment: Duration::from_secs(1),
        io_timeout: IO_TIMEOUT,
        source,
    }
}

/// Waits until FFmpeg has closed `n` segments; returns them.
async fn closed(seg: &mut Segmenter, n: usize) -> Vec<ListEntry> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < n {
            got.push(seg.next_closed().await.expect("ffmpeg lists its segments"));
        }
    })
    .await
    .expect("ffmpeg closes segments");
    got
}

/// The segments listed after a stop, until FFmpeg's output ends.
async fn rest(seg: &mut Segmenter) -> Vec<ListEntry> {
    let mut got = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(GRACE, seg.next_closed()).await {
        got.push(e);
    }
    got
}

/// The listed segments renamed as the capture names them (`<start_ms>_<duration_ms>.mp4`, here
/// with made-up starts in list order): the join reads each one's duration from its name.
fn paths(dir: &Path, entries: &[ListEntry]) -> Vec<PathBuf> {
    let t0 = chrono::DateTime::from_timestamp_millis(1_765_000_000_000).unwrap();
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let start = t0 + chrono::TimeDelta::seconds(10 * i as i64);
            let named = dir.join(recorder_worker::capture::segment::segment_name(
                start,
                e.duration(),
            ));
            if !named.exists() {
                std::fs::rename(dir.join(&e.file), &named).expect("segment renamed");
            }
            named
        })
        .collect()
}

fn listed_secs(entries: &[ListEntry]) -> f64 {
    entries.iter().map(|e| e.duration().as_secs_f64()).sum()
}

async fn finalize_and_probe(dir: &Path, parts: &[PathBuf]) -> ClipInfo {
    let out = dir.join("video.mp4");
    finalize(Path::new(FFMPEG), parts, &out)
        .await
        .expect("the parts finalize");
    probe_file(Path::new(FFPROBE), &out)
        .await
        .expect("the clip probes")
}

fn assert_credential_free(report: &ExitReport, cam: &FakeCamera) {
    assert!(
        !report.stderr_tail.contains(&cam.password),
        "the password leaked into the stderr tail: {}",
        report.stderr_tail
    );
}

/// Captures ~4 one-second segments from a camera with `profile`, stops gracefully (the last
/// segment is closed and listed), joins them and checks the clip.
async fn record_four_seconds(profile: CameraProfile, video: &str, audio: Option<&str>) {
    let cam = FakeCamera::start(profile).await.unwrap();
    let source = source_of(&cam).await;
    assert_eq!(source.video_codec, video);
    assert_eq!(
        (source.width, source.height),
        (profile.width, profile.height)
    );
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segmenter::spawn(
        Path::new(FFMPEG),
        &plan(cam.url(), source, dir.path(), "r1_"),
    )
    .unwrap();
    assert!(seg.pid().is_some());
    let mut entries = closed(&mut seg, 4).await;
    // The first segment may hold what FFmpeg buffered while opening the stream.
    for e in &entries[1..] {
        let d = e.duration().as_secs_f64();
        assert!(
            (0.5..=1.5).contains(&d),
            "a segment is one keyframe interval: {e:?}"
        );
    }
    seg.interrupt();
    entries.extend(rest(&mut seg).await);
    let report = seg.stop(GRACE).await;
    assert!(report.clean && report.stopped_by_us, "{report:?}");
    assert_eq!(report.code, Some(255), "SIGINT ends ffmpeg with 255");
    assert_credential_free(&report, &cam);

    let clip = finalize_and_probe(dir.path(), &paths(dir.path(), &entries)).await;
    assert!(
        (clip.duration_sec - listed_secs(&entries)).abs() <= 0.5,
        "{clip:?} against {entries:?}"
    );
    assert!(clip.duration_sec >= 4.0, "{clip:?}");
    assert_eq!(clip.video_codec, video);
    assert_eq!((clip.width, clip.height), (profile.width, profile.height));
    assert_eq!(clip.audio_codec.as_deref(), audio);
    assert!(clip.moov_before_mdat, "faststart: moov before mdat");
    assert!(clip.size_bytes > 10_000, "{clip:?}");
    if video == "hevc" {
        // Safari plays H.265 in MP4 only as `hvc1`: the segments and their join keep the tag.
        let out = std::process::Command::new(FFPROBE)
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=codec_tag_string", "-of", "csv=p=0"])
            .arg(dir.path().join("video.mp4"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hvc1");
    }

    let thumb = dir.path().join("thumb.jpg");
    thumbnail(
        Path::new(FFMPEG),
        &dir.path().join("video.mp4"),
        &thumb,
        1.0,
    )
    .await
    .unwrap();
    assert_eq!(
        &std::fs::read(&thumb).unwrap()[..2],
        &[0xFF, 0xD8],
        "a JPEG"
    );
}

#[tokio::test]
async fn h264_with_aac_is_copied() {
    record_four_seconds(CameraProfile::default(), "h264", Some("aac")).await;
}

#[tokio::test]
async fn h264_with_g711_gets_aac_audio() {
    record_four_seconds(CameraProfile::h264_g711(), "h264", Some("aac")).await;
}

#[tokio::test]
async fn h264_without_audio_has_no_audio_track() {
    record_four_seconds(CameraProfile::h264_silent(), "h264", None).await;
}

#[tokio::test]
async fn h265_is_copied() {
    record_four_seconds(CameraProfile::h265_aac(), "hevc", Some("aac")).await;
}

#[tokio::test]
async fn h264_with_g711_mulaw_gets_aac_audio() {
    let profile = CameraProfile {
        audio: testkit::AudioCodec::Pcmu,
        ..CameraProfile::default()
    };
    record_four_seconds(profile, "h264", Some("aac")).await;
}

/// Two capture runs (a camera that dropped in between) join into one clip that plays across
/// the hole: the timeline continues, nothing fills the gap.
#[tokio::test]
async fn segments_of_two_runs_join_into_one_clip_without_the_gap() {
    let cam = FakeCamera::start(CameraProfile::default()).await.unwrap();
    let source = source_of(&cam).await;
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for run in 1..=2 {
        let prefix = format!("r{run}_");
        let mut seg = Segmenter::spawn(
            Path::new(FFMPEG),
            &plan(cam.url(), source.clone(), dir.path(), &prefix),
        )
        .unwrap();
        let mut entries = closed(&mut seg, 2).await;
        seg.interrupt();
        entries.extend(rest(&mut seg).await);
        assert!(seg.stop(GRACE).await.clean);
        all.extend(entries);
        if run == 1 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let clip = finalize_and_probe(dir.path(), &paths(dir.path(), &all)).await;
    assert!(
        (clip.duration_sec - listed_secs(&all)).abs() <= 0.5,
        "the 2 s between the runs is skipped: {clip:?} against {all:?}"
    );
    assert_eq!(clip.audio_codec.as_deref(), Some("aac"));
    assert!(clip.moov_before_mdat);
}

#[tokio::test]
async fn a_sigkilled_segmenter_leaves_closed_segments_that_join() {
    let cam = FakeCamera::start(CameraProfile::h264_silent())
        .await
        .unwrap();
    let source = source_of(&cam).await;
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segmenter::spawn(
        Path::new(FFMPEG),
        &plan(cam.url(), source, dir.path(), "r1_"),
    )
    .unwrap();
    let entries = closed(&mut seg, 3).await;
    let pid = i32::try_from(seg.pid().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let report = tokio::time::timeout(GRACE, seg.exited()).await.unwrap();
    assert_eq!(report.signal, Some(9), "{report:?}");
    assert!(!report.clean && !report.stopped_by_us, "{report:?}");
    assert_eq!(seg.pid(), None, "reaped");

    let clip = finalize_and_probe(dir.path(), &paths(dir.path(), &entries)).await;
    assert!(
        clip.duration_sec >= 2.5,
        "the segments closed before the kill survive: {clip:?}"
    );
    assert!(clip.moov_before_mdat);
}

#[tokio::test]
async fn a_dead_camera_ends_the_run_within_the_io_timeout_and_its_segments_join() {
    let mut cam = FakeCamera::start(CameraProfile::default()).await.unwrap();
    let source = source_of(&cam).await;
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segmenter::spawn(
        Path::new(FFMPEG),
        &plan(cam.url(), source, dir.path(), "r1_"),
    )
    .unwrap();
    let mut entries = closed(&mut seg, 2).await;
    cam.kill();
    let report = exited_while_interrupted(&mut seg, IO_TIMEOUT + Duration::from_secs(10)).await;
    assert!(!report.stopped_by_us, "{report:?}");
    assert_credential_free(&report, &cam);
    entries.extend(rest(&mut seg).await);

    // An empty part (a restart that never got the stream) is skipped, not fatal.
    let empty = dir.path().join("r2_000000.mp4");
    std::fs::write(&empty, b"").unwrap();
    let mut parts = paths(dir.path(), &entries);
    parts.push(empty);
    let clip = finalize_and_probe(dir.path(), &parts).await;
    assert!(clip.duration_sec >= 1.5, "{clip:?}");
    assert_eq!(clip.audio_codec.as_deref(), Some("aac"));
}

/// Awaits `exited()` the way a supervisor's `select!` loop does: cancelled every few
/// milliseconds by another branch, polled again, until it resolves.
async fn exited_while_interrupted(rec: &mut Segmenter, deadline: Duration) -> ExitReport {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        tokio::select! {
            report = rec.exited() => return report,
            _ = tokio::time::sleep(Duration::from_millis(3)) => {
                assert!(tokio::time::Instant::now() < until, "ffmpeg did not exit in {deadline:?}");
            }
        }
    }
}

/// The pid of the fake camera serving `port` (the test's own child's child).
fn camera_pid(port: u16) -> Option<i32> {
    let port_arg = format!("--port\0{port}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("fake_camera.py") && cmdline.contains(&port_arg)).then_some(pid)
        })
}

#[tokio::test]
async fn a_frozen_camera_ends_the_run_within_the_io_timeout() {
    let cam = FakeCamera::start(CameraProfile::h264_silent())
        .await
        .unwrap();
    let source = source_of(&cam).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Segmenter::spawn(
        Path::new(FFMPEG),
        &plan(cam.url(), source, dir.path(), "r1_"),
    )
    .unwrap();
    let mut entries = closed(&mut rec, 2).await;
    // SIGSTOP: the connection stays open but nothing arrives, like a camera that lost power.
    let pid = nix::unistd::Pid::from_raw(camera_pid(cam.port).expect("the camera process"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let started = std::time::Instant::now();
    let report = exited_while_interrupted(&mut rec, IO_TIMEOUT + Duration::from_secs(10)).await;
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    assert!(
        started.elapsed() >= IO_TIMEOUT - Duration::from_millis(500),
        "{report:?}"
    );
    assert!(!report.stopped_by_us, "{report:?}");
    entries.extend(rest(&mut rec).await);
    let clip = finalize_and_probe(dir.path(), &paths(dir.path(), &entries)).await;
    assert!(clip.duration_sec >= 1.5, "{clip:?}");
}

#[tokio::test]
async fn finalize_without_any_usable_part_is_no_media() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("part-0001.mp4");
    let garbage = dir.path().join("part-0002.mp4");
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&garbage, vec![0x42u8; 4096]).unwrap();
    let err = finalize(
        Path::new(FFMPEG),
        &[empty, garbage],
        &dir.path().join("video.mp4"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MediaError::NoMedia(_)), "{err:?}");
}

#[tokio::test]
async fn a_wrong_password_fails_without_leaking_the_credential() {
    let cam = FakeCamera::start(CameraProfile::h264_silent())
        .await
        .unwrap();
    let source = source_of(&cam).await;
    let wrong_password = "not-the-pw-7f3a";
    let wrong = cam
        .url()
        .with_credentials(Some("admin"), Some(wrong_password));

    let err = probe_source(Path::new(FFPROBE), &wrong, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Unreachable(_)), "{err:?}");
    assert!(!err.to_string().contains(wrong_password), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut rec =
        Segmenter::spawn(Path::new(FFMPEG), &plan(wrong, source, dir.path(), "r1_")).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), rec.exited())
        .await
        .unwrap();
    assert!(!report.clean, "{report:?}");
    assert!(!report.stderr_tail.is_empty(), "ffmpeg said why");
    assert!(
        !report.stderr_tail.contains(wrong_password),
        "{}",
        report.stderr_tail
    );
}

#[tokio::test]
async fn an_unreachable_camera_is_reported_as_such() {
    let url = RtspUrl::parse(&format!(
        "rtsp://admin:hunter2-secret@127.0.0.1:{}/cam",
        testkit::free_port()
    ))
    .unwrap();
    let err = probe_source(Path::new(FFPROBE), &url, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Unreachable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

fn test_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    let path = dir.join(format!("clip-{len}.mp4"));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

async fn download(uploader_store: &camrec_shared::storage::Storage, key: &ObjectKey) -> Vec<u8> {
    let got = uploader_store.store().get(&key.path()).await.unwrap();
    got.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn uploads_to_s3_come_back_byte_identical_single_and_multipart() {
    let s3 = S3Server::start().await.unwrap();
    let storage = s3.storage().unwrap();
    let part_size = 5 * 1024 * 1024;
    let uploader = Uploader::new(
        storage.clone(),
        UploadOptions {
            part_size,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    for len in [300_000, 2 * part_size + 12_345] {
        let (path, data) = test_file(dir.path(), len);
        let key = ObjectKey::Video(PlaybackId::new());
        let receipt = uploader.upload_file(&key, &path).await.unwrap();
        let expected_sha = hex::encode(Sha256::digest(&data));
        assert_eq!(receipt.size_bytes, len as u64);
        assert_eq!(receipt.sha256, expected_sha);
        let stored = download(&storage, &key).await;
        assert_eq!(hex::encode(Sha256::digest(&stored)), expected_sha);
        assert!(stored == data, "{len} bytes differ after the round trip");
        assert!(path.exists(), "the uploader never deletes the local file");
        let head = storage
            .store()
            .get_opts(
                &key.path(),
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let content_type = head.attributes.get(&Attribute::ContentType);
        assert_eq!(
            content_type.map(|v| v.as_ref()),
            Some("video/mp4"),
            "{len} bytes"
        );
        if len < part_size {
            let sha = head.attributes.get(&Attribute::Metadata("sha256".into()));
            assert_eq!(sha.map(|v| v.as_ref()), Some(expected_sha.as_str()));
        }
    }
    assert_eq!(s3.keys().len(), 2);
}

#[tokio::test]
async fn an_upload_to_a_stopped_server_fails_transiently_and_deletes_nothing() {
    let mut s3 = S3Server::start().await.unwrap();
    let storage = s3.storage().unwrap();
    let uploader = Uploader::new(
        storage.clone(),
        UploadOptions {
            part_size: 5 * 1024 * 1024,
            part_retries: 1,
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let (kept_path, kept_data) = test_file(dir.path(), 100_000);
    let kept = ObjectKey::Video(PlaybackId::new());
    uploader.upload_file(&kept, &kept_path).await.unwrap();

    s3.stop();
    let (path, _) = test_file(dir.path(), 200_000);
    let err = uploader
        .upload_file(&ObjectKey::Video(PlaybackId::new()), &path)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(path.exists() && kept_path.exists(), "local files stay");

    s3.restart().await.unwrap();
    assert_eq!(
        s3.keys(),
        vec![kept.to_string()],
        "nothing was deleted or half-written"
    );
    assert!(download(&storage, &kept).await == kept_data);
}

#[tokio::test]
async fn a_camera_that_never_answers_is_stopped_by_sigint() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (connected, mut camera_reached) = tokio::sync::watch::channel(false);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
            connected.send_replace(true);
        }
    });
    let url = RtspUrl::parse(&format!("rtsp://admin:pw-silent@127.0.0.1:{port}/cam")).unwrap();
    let source = SourceInfo {
        video_codec: "h264".into(),
        audio_codec: None,
        width: 640,
        height: 360,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut long_timeout = plan(url, source, dir.path(), "r1_");
    long_timeout.io_timeout = Duration::from_secs(60);
    let rec = Segmenter::spawn(Path::new(FFMPEG), &long_timeout).unwrap();
    // FFmpeg handles SIGINT from when it opens its input (before, SIGINT kills it at once).
    tokio::time::timeout(Duration::from_secs(10), camera_reached.wait_for(|c| *c))
        .await
        .expect("ffmpeg connects to the camera")
        .unwrap();
    let started = std::time::Instant::now();
    let report = rec.stop(Duration::from_secs(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(report.stopped_by_us, "{report:?}");
    assert_eq!(report.signal, None, "SIGINT was enough: {report:?}");
    assert!(
        !report.stderr_tail.contains("pw-silent"),
        "{}",
        report.stderr_tail
    );
    held.abort();
}

#[tokio::test]
async fn a_child_that_ignores_sigint_is_killed_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let stubborn = stubborn_ffmpeg(dir.path());
    let source = SourceInfo {
        video_codec: "h264".into(),
        audio_codec: None,
        width: 640,
        height: 360,
    };
    let url = RtspUrl::parse("rtsp://127.0.0.1:9/cam").unwrap();
    let rec = Segmenter::spawn(&stubborn, &plan(url, source, dir.path(), "r1_")).unwrap();
    let pid = rec.pid().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the child ignores SIGINT",
        || async {
            dir.path()
                .join("stubborn-ffmpeg.ready")
                .exists()
                .then_some(())
        },
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let report = rec.stop(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.signal, Some(9), "{report:?}");
    assert!(report.stopped_by_us && !report.clean, "{report:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the child is reaped, not a zombie"
    );
}

fn stubborn_ffmpeg(dir: &Path) -> PathBuf {
    let stubborn = dir.join("stubborn-ffmpeg");
    std::fs::write(
        &stubborn,
        "#!/bin/sh\ntrap '' INT\ntouch \"$0.ready\"\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &stubborn,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    stubborn
}

/// The body of `ffmpeg_dies_with_its_worker`, run by it in a child process.
#[tokio::test]
#[ignore = "run by ffmpeg_dies_with_its_worker in a child process"]
async fn worker_process_that_spawns_a_segmenter() {
    let dir = PathBuf::from(
        std::env::var("MEDIA_TEST_WORKER_DIR").expect("run by ffmpeg_dies_with_its_worker"),
    );
    let source = SourceInfo {
        video_codec: "h264".into(),
        audio_codec: None,
        width: 640,
        height: 360,
    };
    let url = RtspUrl::parse("rtsp://127.0.0.1:9/cam").unwrap();
    let rec = Segmenter::spawn(&stubborn_ffmpeg(&dir), &plan(url, source, &dir, "r1_")).unwrap();
    println!("CHILD {}", rec.pid().unwrap());
    std::future::pending::<()>().await;
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn ffmpeg_dies_with_its_worker() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker_process_that_spawns_a_segmenter"])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env("MEDIA_TEST_WORKER_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(worker.stdout.take().unwrap()).lines();
    let child = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints "test <name> ... " on the same line first.
            if let Some((_, pid)) = line.split_once("CHILD ") {
                return pid.trim().parse::<u32>().unwrap();
            }
        }
        panic!("the worker process printed no child pid");
    })
    .await
    .unwrap();
    assert!(is_running(child));
    worker.kill().await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the orphaned ffmpeg to die",
        || async move { (!is_running(child)).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_missing_ffmpeg_is_a_spawn_error() {
    let source = SourceInfo {
        video_codec: "h264".into(),
        audio_codec: None,
        width: 640,
        height: 360,
    };
    let url = RtspUrl::parse("rtsp://127.0.0.1:9/cam").unwrap();
    let err = Segmenter::spawn(
        Path::new("/nonexistent/ffmpeg"),
        &plan(url, source, Path::new("/tmp"), "never_"),
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::Spawn { .. }), "{err:?}");
}

#[tokio::test]
async fn a_silent_camera_fails_the_probe_within_its_io_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let url = RtspUrl::parse(&format!("rtsp://admin:pw-quiet@127.0.0.1:{port}/cam")).unwrap();
    let started = std::time::Instant::now();
    let err = probe_source(Path::new(FFPROBE), &url, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, MediaError::Unreachable(_)), "{err:?}");
    assert!(!err.to_string().contains("pw-quiet"), "{err}");
    held.abort();
}

#[tokio::test]
async fn an_upload_rides_out_a_short_outage_by_retrying() {
    let mut s3 = S3Server::start().await.unwrap();
    let storage = s3.storage().unwrap();
    let part_size = 5 * 1024 * 1024;
    let uploader = Uploader::new(
        storage.clone(),
        UploadOptions {
            part_size,
            part_retries: 20,
            retry_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_millis(700),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = test_file(dir.path(), part_size + 1000);
    let key = ObjectKey::Video(PlaybackId::new());
    s3.stop();
    let upload = uploader.upload_file(&key, &path);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s3.restart().await.unwrap();
    };
    let (receipt, ()) = tokio::join!(upload, outage);
    assert_eq!(receipt.unwrap().size_bytes, data.len() as u64);
    assert!(download(&storage, &key).await == data);
}

/// A thumbnail is one keyframe decoded alone. A stream in which the decoder finds no keyframe
/// (x264's intra refresh: `-skip_frame nokey` decodes nothing of it, checked by hand with
/// ffmpeg 5.1) still gets one, decoded the full way.
#[tokio::test]
async fn a_thumbnail_comes_from_a_keyframe_or_without_one_from_the_full_decode() {
    let dir = tempfile::tempdir().unwrap();
    for (name, x264) in [
        ("gop.mp4", "keyint=25"),
        ("refresh.mp4", "keyint=25:intra-refresh=1"),
    ] {
        let clip = dir.path().join(name);
        let status = std::process::Command::new(FFMPEG)
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
            ])
            .args(["-t", "3", "-c:v", "libx264", "-x264-params", x264])
            .args(["-movflags", "+frag_keyframe+empty_moov"])
            .arg(&clip)
            .status()
            .unwrap();
        assert!(status.success(), "{name}: {status}");
        let thumb = dir.path().join(format!("{name}.jpg"));
        thumbnail(Path::new(FFMPEG), &clip, &thumb, 1.0)
            .await
            .unwrap();
        let jpeg = std::fs::read(&thumb).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "{name}: a JPEG");
    }
}
