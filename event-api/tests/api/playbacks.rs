//! `/playbacks`: local media with Range, deletion (running and finished, with the object
//! sweep), filters, and the reconciler's verdicts.

use crate::support::{spawn_app, spawn_app_with};
use camrec_shared::messages::{CompletedClip, FailureCode, StatusBody};
use camrec_shared::storage::Storage;
use chrono::Utc;
use event_api::reconciler::{reconcile_once, Limits};
use event_api::store::Store;
use reqwest::{Method, StatusCode};
use std::time::Duration;

fn clip(pb: &str, size: u64) -> StatusBody {
    StatusBody::Completed(CompletedClip {
        object_key: format!("playbacks/{pb}/video.mp4"),
        url: None,
        thumb_key: None,
        size_bytes: size,
        duration_sec: 1.0,
        video_codec: "h264".into(),
        width: 640,
        height: 360,
        audio_codec: None,
        sha256: "00".repeat(32),
        started_at: Utc::now(),
        ended_at: Utc::now(),
        partial: false,
        gaps: Vec::new(),
        started_late: false,
        segment_list_key: None,
    })
}

#[tokio::test]
async fn local_media_is_served_with_range_and_deleted_with_its_playback() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let dir = app.media_dir.path().join(format!("playbacks/{pb}"));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("video.mp4"), &bytes).unwrap();
    app.publish_status(&created, 1, clip(&pb, 1000)).await;
    let p = app
        .wait_playback(&pb, "completed", |p| p["recordingStatus"] == "COMPLETED")
        .await;
    let url = p["videoUrl"].as_str().unwrap().to_owned();

    let resp = app
        .http
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()["content-type"], "video/mp4");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[100..200]);
    let whole = app.http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap().len(), 1000);
    // The URL is signed and expires: without its signature 401; tampered or expired 403.
    let unsigned = url.split('?').next().unwrap().to_owned();
    let status = |u: String| {
        let app = &app;
        async move { app.http.get(u).send().await.unwrap().status() }
    };
    assert_eq!(status(unsigned.clone()).await, StatusCode::UNAUTHORIZED);
    let tampered = url.replace("sig=", "sig=00");
    assert_eq!(status(tampered).await, StatusCode::FORBIDDEN);
    let signer = event_api::media::MediaSigner::new(
        app.config.jwt_secret.expose().as_bytes(),
        Duration::from_secs(60),
    );
    let key =
        camrec_shared::storage::ObjectKey::parse(&format!("playbacks/{pb}/video.mp4")).unwrap();
    let expired = Utc::now().timestamp() - 1;
    assert_eq!(
        status(format!("{unsigned}?{}", signer.query(&key, expired))).await,
        StatusCode::FORBIDDEN
    );
    let fresh = Utc::now().timestamp() + 60;
    assert_eq!(
        status(format!("{unsigned}?{}", signer.query(&key, fresh))).await,
        StatusCode::OK
    );
    for bad in [
        "/media/etc/passwd",
        "/media/playbacks/../../x",
        "/media/playbacks/abc/video.mp4",
    ] {
        let resp = app
            .http
            .get(format!("{}{bad}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
    }

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/playbacks/{pb}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/playbacks/{pb}")).await.0,
        StatusCode::NOT_FOUND
    );
    let storage = Storage::open(app.config.storage.clone()).unwrap();
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    assert_eq!(store.queued_deletions().await.unwrap(), 4);
    let deleted = event_api::sweeper::sweep_once(&store, &storage, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        deleted, 4,
        "the video and the (absent) thumbnail, segment list and segments"
    );
    assert!(!dir.join("video.mp4").exists());
    assert_eq!(store.queued_deletions().await.unwrap(), 0);
}

#[tokio::test]
async fn deleting_a_running_playback_ends_its_event_and_cleans_up_when_it_finishes() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    app.recording(&created).await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/playbacks/{pb}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.outbox_drained().await;
    let ended = app.stream_messages("EVENTS", "event.ended.").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].2["payload"]["reason"], "deleted");
    // The worker finishes the clip anyway: its objects are queued for deletion.
    app.publish_status(&created, 2, clip(&pb, 10)).await;
    testkit::wait_until(Duration::from_secs(20), "objects queued", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM object_deletions")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n == 4).then_some(())
    })
    .await
    .unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/playbacks/{pb}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn playback_filters_and_validation() {
    let app = spawn_app().await;
    let a = app.camera("10.0.0.5", 1).await;
    let b = app.camera("10.0.0.6", 1).await;
    let first = app.motion(a["id"].as_str().unwrap()).await;
    app.motion(b["id"].as_str().unwrap()).await;
    app.recording(&first).await;
    let (_, page) = app.get("/playbacks?recordingStatus=RECORDING").await;
    assert_eq!(page["total"], 1);
    assert!(page["data"][0]["progress"].is_object());
    let (_, page) = app
        .get(&format!(
            "/playbacks?cameraId={}",
            b["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page["total"], 1);
    let (_, page) = app.get("/playbacks?startedFrom=2000-01-01").await;
    assert_eq!(page["total"], 1, "only the started one");
    let (_, page) = app.get("/playbacks?pageSize=1&page=2").await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    for (path, field) in [
        ("/playbacks?recordingStatus=DONE", "recordingStatus"),
        ("/playbacks?eventId=1", "eventId"),
        ("/playbacks?startedTo=soon", "startedTo"),
        ("/playbacks/42", "id"),
    ] {
        let (status, err) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(err["field"], field);
    }
}

#[tokio::test]
async fn reconciler_fails_stale_and_unstarted_playbacks_and_announces_it() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let stale = app.motion(cam["id"].as_str().unwrap()).await;
    let pending = app.motion(cam["id"].as_str().unwrap()).await;
    let stale_id = stale["playbackId"].as_str().unwrap().to_owned();
    let pending_id = pending["playbackId"].as_str().unwrap().to_owned();
    app.recording(&stale).await;

    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let limits = Limits {
        stale_playback: Duration::from_secs(120),
        pending_timeout: Duration::from_secs(900),
    };
    app.outbox_drained().await;
    let now = Utc::now();
    let at = |s: i64| now + chrono::Duration::seconds(s);
    let up = Some(at(-3600));
    assert!(reconcile_once(&store, now, up, limits)
        .await
        .unwrap()
        .is_empty());
    // Silence does not count while event-api could not have heard a report: NATS down, or back
    // for less than the stale window.
    for nats_up_since in [None, Some(at(100))] {
        assert!(reconcile_once(&store, at(121), nats_up_since, limits)
            .await
            .unwrap()
            .is_empty());
    }
    let verdicts = reconcile_once(&store, at(121), up, limits).await.unwrap();
    assert_eq!(verdicts.len(), 1);
    let verdicts = reconcile_once(&store, at(901), up, limits).await.unwrap();
    assert_eq!(verdicts.len(), 1);

    let (_, p) = app.get(&format!("/playbacks/{stale_id}")).await;
    assert_eq!(p["recordingStatus"], "FAILED");
    assert_eq!(p["errorCode"], "worker_lost");
    let (_, p) = app.get(&format!("/playbacks/{pending_id}")).await;
    assert_eq!(p["recordingStatus"], "FAILED");
    assert_eq!(p["errorCode"], "not_started");

    app.outbox_drained().await;
    let failed = app.stream_messages("PLAYBACKS", "playback.failed.").await;
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|m| m.2["payload"]["worker_id"] == "event-api"));
    // The verdict was a presumption. Another worker's report does not touch it; the lost
    // worker's own later report (its seq older than the verdict: it was spooled during an
    // outage) wins, and the failure is gone.
    app.publish_status_from(&stale, "another-worker", 3, clip(&stale_id, 1))
        .await;
    app.publish_status(&stale, 2, clip(&stale_id, 1)).await;
    let p = app
        .wait_playback(&stale_id, "the owner's report wins", |p| {
            p["recordingStatus"] == "COMPLETED"
        })
        .await;
    assert!(p["errorCode"].is_null(), "{p}");
    assert!(p["errorMessage"].is_null(), "{p}");
    let (_, p) = app.get(&format!("/playbacks/{pending_id}")).await;
    assert_eq!(p["recordingStatus"], "FAILED");
    let text = app.metrics_text().await;
    assert!(
        text.contains("projector_presumption_overridden_total{code=\"worker_lost\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn s3_mode_serves_signed_urls_and_deletes_objects_in_the_bucket() {
    let s3 = testkit::S3Server::start().await.unwrap();
    let app = spawn_app_with(s3.storage_env()).await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let key = camrec_shared::storage::ObjectKey::Video(pb.parse().unwrap());
    let bytes = b"not really an mp4".to_vec();
    s3.storage()
        .unwrap()
        .store()
        .put(&key.path(), bytes.clone().into())
        .await
        .unwrap();
    app.publish_status(&created, 1, clip(&pb, bytes.len() as u64))
        .await;
    let p = app
        .wait_playback(&pb, "completed", |p| p["recordingStatus"] == "COMPLETED")
        .await;
    let url = p["videoUrl"].as_str().unwrap();
    assert!(url.starts_with(&s3.endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let fetched = app.http.get(url).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let media = app
        .http
        .get(format!("{}/media/{key}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        media.status(),
        StatusCode::NOT_FOUND,
        "no /media in s3 mode"
    );

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/playbacks/{pb}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let storage = Storage::open(app.config.storage.clone()).unwrap();
    event_api::sweeper::sweep_once(&store, &storage, Utc::now())
        .await
        .unwrap();
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
    assert_eq!(store.queued_deletions().await.unwrap(), 0);
}

/// A failure's full message (the worker's words, which can tell an open port from a closed one)
/// is for operators; a VIEWER reads the code and a short reason.
#[tokio::test]
async fn viewers_read_a_failures_code_and_short_reason_only() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let detail = "Connection to tcp://10.0.0.5:554 failed: Connection refused";
    app.publish_status(
        &created,
        1,
        StatusBody::Failed {
            code: FailureCode::CameraUnreachable,
            message: detail.into(),
        },
    )
    .await;
    app.wait_playback(&pb, "failed", |p| p["recordingStatus"] == "FAILED")
        .await;
    let viewer = app.token_for("VIEWER").await;
    let operator = app.token_for("OPERATOR").await;
    for path in [format!("/playbacks/{pb}"), "/playbacks".to_owned()] {
        let (_, body) = app.call(Method::GET, &path, Some(&viewer), None).await;
        let p = if body["data"].is_array() {
            &body["data"][0]
        } else {
            &body
        };
        assert_eq!(p["errorCode"], "camera_unreachable", "{body}");
        assert_eq!(
            p["errorMessage"], "the camera could not be reached",
            "{body}"
        );
        assert!(!body.to_string().contains("refused"), "{body}");
        let (_, body) = app.call(Method::GET, &path, Some(&operator), None).await;
        assert!(body.to_string().contains(detail), "{body}");
    }
}
