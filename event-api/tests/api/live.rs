//! The live view: `liveUrl` and `GET /playbacks/{id}/live.m3u8` over segments made by FFmpeg as
//! the worker's capture makes them, put into storage under their real keys; FFmpeg plays the
//! playlist as an HLS client (local mode through `/media/`, S3 mode through presigned URLs);
//! its signature, 404s, and the deletion of the segments with their playback.

use crate::support::{spawn_app, spawn_app_with, TestApp};
use camrec_shared::messages::{CompletedClip, StatusBody};
use camrec_shared::storage::{segments_prefix, ObjectKey, SegmentName, Storage};
use camrec_shared::PlaybackId;
use chrono::Utc;
use event_api::store::Store;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use reqwest::{Method, StatusCode};
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

/// One segment file as FFmpeg's segment muxer wrote it, named as the worker names it.
struct Made {
    name: SegmentName,
    bytes: Vec<u8>,
    frames: u64,
}

/// Six ~1 s fragmented-MP4 segments of a test pattern (the worker's muxer options), named as
/// filmed from `t0_ms` on (wall clock = `t0_ms` + media time) under capture lease `epoch`.
async fn make_segments(dir: &Path, t0_ms: i64, epoch: u64) -> Vec<Made> {
    let out = Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .args(["testsrc=size=320x240:rate=25", "-t", "6", "-c:v", "libx264"])
        .args(["-g", "25", "-pix_fmt", "yuv420p", "-f", "segment"])
        .args(["-segment_time", "1", "-segment_format", "mp4"])
        .args([
            "-segment_format_options",
            "movflags=+frag_keyframe+empty_moov+default_base_moof+frag_discont:avoid_negative_ts=disabled",
        ])
        .args(["-segment_list", "pipe:1", "-segment_list_type", "csv"])
        .arg("s%03d.mp4")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut made = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut cols = line.split(',');
        let (file, start, end) = (cols.next(), cols.next(), cols.next());
        let sec = |s: Option<&str>| s.unwrap().parse::<f64>().unwrap();
        let (start, end) = (sec(start), sec(end));
        let path = dir.join(file.unwrap());
        let bytes = std::fs::read(&path).unwrap();
        made.push(Made {
            name: SegmentName {
                start_ms: t0_ms + (start * 1000.0).round() as i64,
                duration_ms: ((end - start) * 1000.0).round() as u32,
                init_len: init_len(&bytes),
                epoch,
            },
            frames: count_frames(path.to_str().unwrap()).await,
            bytes,
        });
    }
    assert_eq!(made.len(), 6, "ffmpeg's segment list");
    made
}

/// The offset of the first top-level `moof` box: the length of the init section.
fn init_len(mp4: &[u8]) -> u32 {
    let mut at = 0usize;
    while at + 8 <= mp4.len() {
        let size = u32::from_be_bytes(mp4[at..at + 4].try_into().unwrap()) as usize;
        if &mp4[at + 4..at + 8] == b"moof" {
            return at as u32;
        }
        assert!(size >= 8, "box size at {at}");
        at += size;
    }
    panic!("no moof box");
}

/// The video frames FFmpeg's demuxer reads from `input` (a file or an HLS URL), through
/// ffprobe, the way a player would open it.
async fn count_frames(input: &str) -> u64 {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(input)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), probe)
        .await
        .expect("ffprobe finishes")
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    // An HLS input lists its stream twice: in its program and on its own.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("frame count of {input}: {stdout:?}"))
}

async fn put(storage: &Storage, key: &ObjectKey, bytes: &[u8]) {
    storage
        .store()
        .put(&key.path(), bytes.to_vec().into())
        .await
        .expect("put object");
}

fn completed(pb: &str, made: &[Made]) -> StatusBody {
    let first = made.first().unwrap().name;
    let last = made.last().unwrap().name;
    let at = |ms| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    StatusBody::Completed(CompletedClip {
        object_key: format!("playbacks/{pb}/video.mp4"),
        url: None,
        thumb_key: None,
        size_bytes: 1,
        duration_sec: (last.end_ms() - first.start_ms) as f64 / 1000.0,
        video_codec: "h264".into(),
        width: 320,
        height: 240,
        audio_codec: None,
        sha256: "00".repeat(32),
        started_at: at(first.start_ms),
        ended_at: at(last.end_ms()),
        partial: false,
        gaps: Vec::new(),
        started_late: false,
        segment_list_key: Some(format!("playbacks/{pb}/index.m3u8")),
    })
}

/// `GET url` without a token: status, headers, body.
async fn fetch(app: &TestApp, url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = app.http.get(url).send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("body"))
}

/// The URIs of a playlist's segments, in order.
fn segment_uris(playlist: &str) -> Vec<&str> {
    playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A recording starts, its worker uploads segments: `liveUrl` lists them (open); it completes:
/// the playlist is closed and FFmpeg reads every frame of every segment through it.
async fn watch_a_recording(app: &TestApp, storage: &Storage) -> (String, Vec<Made>, String) {
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let (_, pending) = app.get(&format!("/playbacks/{pb}")).await;
    assert!(pending.get("liveUrl").is_none(), "PENDING: {pending}");

    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now().timestamp_millis() - 10_000;
    let made = make_segments(dir.path(), t0, 7).await;
    let id: PlaybackId = pb.parse().unwrap();
    app.publish_status(
        &created,
        1,
        StatusBody::Recording {
            started_at: chrono::DateTime::from_timestamp_millis(t0).unwrap(),
        },
    )
    .await;
    let p = app
        .wait_playback(&pb, "recording", |p| p["recordingStatus"] == "RECORDING")
        .await;
    let live = p["liveUrl"]
        .as_str()
        .expect("liveUrl while RECORDING")
        .to_owned();
    assert!(
        live.starts_with(&format!("{}/playbacks/{pb}/live.m3u8?", app.base)),
        "{live}"
    );

    for m in &made[..3] {
        put(storage, &ObjectKey::Segment(id, m.name), &m.bytes).await;
    }
    // Something under the prefix that is no segment (an upload's temporary name) is skipped.
    let stray = ObjectPath::from(format!("{}upload.tmp", segments_prefix(id)));
    storage
        .store()
        .put(&stray, b"x".to_vec().into())
        .await
        .unwrap();

    let (status, headers, open) = fetch(app, &live).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(open.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{open}");
    assert!(
        !open.contains("#EXT-X-ENDLIST"),
        "open while RECORDING: {open}"
    );
    assert_eq!(segment_uris(&open).len(), 3, "{open}");
    for m in &made[..3] {
        let map = format!("BYTERANGE=\"{}@0\"", m.name.init_len);
        assert!(open.contains(&map), "{open}");
        assert!(open.contains(&m.name.to_string()), "{open}");
    }
    assert!(!open.contains("upload.tmp"), "{open}");

    for m in &made[3..] {
        put(storage, &ObjectKey::Segment(id, m.name), &m.bytes).await;
    }
    put(storage, &ObjectKey::SegmentList(id), b"#EXTM3U\n").await;
    app.publish_status(&created, 2, completed(&pb, &made)).await;
    let p = app
        .wait_playback(&pb, "completed", |p| p["recordingStatus"] == "COMPLETED")
        .await;
    let live = p["liveUrl"]
        .as_str()
        .expect("liveUrl once COMPLETED")
        .to_owned();
    let (status, _, closed) = fetch(app, &live).await;
    assert_eq!(status, StatusCode::OK);
    assert!(closed.ends_with("#EXT-X-ENDLIST\n"), "{closed}");
    assert_eq!(segment_uris(&closed).len(), made.len(), "{closed}");
    assert!(
        !closed.contains("#EXT-X-DISCONTINUITY"),
        "one run: {closed}"
    );
    let filmed: u64 = made.iter().map(|m| m.frames).sum();
    assert_eq!(count_frames(&live).await, filmed, "{closed}");
    (pb, made, live)
}

/// Deletes playback `pb` and sweeps: the playlist answers 404 at once, the segments once swept.
async fn delete_and_sweep(app: &TestApp, storage: &Storage, pb: &str, live: &str) {
    let (_, _, closed) = fetch(app, live).await;
    let segment = segment_uris(&closed)[0].to_owned();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/playbacks/{pb}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(fetch(app, live).await.0, StatusCode::NOT_FOUND);
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    event_api::sweeper::sweep_once(&store, storage, Utc::now())
        .await
        .unwrap();
    assert_eq!(store.queued_deletions().await.unwrap(), 0);
    let prefix = ObjectPath::from(format!("playbacks/{pb}/"));
    let left: Vec<_> = storage
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(fetch(app, &segment).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn local_live_playlist_plays_in_ffmpeg_and_goes_with_its_playback() {
    let app = spawn_app().await;
    let storage = Storage::open(app.config.storage.clone()).unwrap();
    let (pb, made, live) = watch_a_recording(&app, &storage).await;

    // Segments are served as byte ranges: the init section alone, then the media.
    let (_, _, closed) = fetch(&app, &live).await;
    let segment = segment_uris(&closed)[0];
    assert!(segment.starts_with(&format!("{}/media/playbacks/{pb}/live/", app.base)));
    let init = made[0].name.init_len as usize;
    let resp = app
        .http
        .get(segment)
        .header("Range", format!("bytes=0-{}", init - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &made[0].bytes[..init]);

    delete_and_sweep(&app, &storage, &pb, &live).await;
}

#[tokio::test]
async fn s3_live_playlist_lists_presigned_segments_that_play_in_ffmpeg() {
    let s3 = testkit::S3Server::start().await.unwrap();
    let app = spawn_app_with(s3.storage_env()).await;
    let storage = s3.storage().unwrap();
    let (pb, _, live) = watch_a_recording(&app, &storage).await;
    let (_, _, closed) = fetch(&app, &live).await;
    for uri in segment_uris(&closed) {
        assert!(uri.starts_with(&s3.endpoint()), "{uri}");
        assert!(uri.contains("X-Amz-Signature="), "{uri}");
    }
    delete_and_sweep(&app, &storage, &pb, &live).await;
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[tokio::test]
async fn the_playlist_needs_its_signature_and_a_playback() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let p = app.recording(&created).await;
    let live = p["liveUrl"].as_str().unwrap().to_owned();
    let (status, _, empty) = fetch(&app, &live).await;
    assert_eq!(status, StatusCode::OK, "nothing uploaded yet");
    assert!(segment_uris(&empty).is_empty(), "{empty}");
    let (_, page) = app.get("/playbacks?recordingStatus=RECORDING").await;
    assert!(page["data"][0]["liveUrl"].is_string(), "{page}");

    let unsigned = live.split('?').next().unwrap().to_owned();
    assert_eq!(fetch(&app, &unsigned).await.0, StatusCode::UNAUTHORIZED);
    let tampered = live.replace("sig=", "sig=00");
    assert_eq!(fetch(&app, &tampered).await.0, StatusCode::FORBIDDEN);
    let (status, _, body) = fetch(&app, &format!("{unsigned}?exp=soon&sig=00")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["field"],
        "exp"
    );
    let signer = event_api::media::MediaSigner::new(
        app.config.jwt_secret.expose().as_bytes(),
        Duration::from_secs(60),
    );
    let signed = |id: &str, exp: i64| {
        let path = format!("playbacks/{id}/live.m3u8");
        format!("{}/{path}?{}", app.base, signer.query(&path, exp))
    };
    let now = Utc::now().timestamp();
    assert_eq!(
        fetch(&app, &signed(&pb, now - 1)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(fetch(&app, &signed(&pb, now + 60)).await.0, StatusCode::OK);
    let unknown = PlaybackId::new().to_string();
    assert_eq!(
        fetch(&app, &signed(&unknown, now + 60)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&app, &signed("abc", now + 60)).await.0,
        StatusCode::NOT_FOUND
    );
    // A segment's signature opens its segment only, not the playlist (nor the reverse).
    let key = ObjectKey::Video(pb.parse().unwrap());
    let as_object = format!("{unsigned}?{}", signer.query(&key, now + 60));
    assert_eq!(fetch(&app, &as_object).await.0, StatusCode::FORBIDDEN);

    // A failed recording has nothing to watch: no liveUrl.
    app.publish_status(
        &created,
        2,
        StatusBody::Failed {
            code: camrec_shared::messages::FailureCode::RecordingFailed,
            message: "test".into(),
        },
    )
    .await;
    let p = app
        .wait_playback(&pb, "failed", |p| p["recordingStatus"] == "FAILED")
        .await;
    assert!(p.get("liveUrl").is_none(), "{p}");
}
