//! The projector: duplicated and reordered status messages leave the right final state, and
//! terminal states stick.

use crate::support::spawn_app;
use camrec_shared::messages::{CompletedClip, FailureCode, StatusBody, StopCause};
use chrono::Utc;
use event_api::store::playbacks::PlaybackState;
use std::time::Duration;

fn completed(playback_id: &str) -> StatusBody {
    StatusBody::Completed(CompletedClip {
        object_key: format!("playbacks/{playback_id}/video.mp4"),
        url: None,
        thumb_key: Some(format!("playbacks/{playback_id}/thumb.jpg")),
        size_bytes: 5_000_000_000,
        duration_sec: 12.5,
        video_codec: "h264".into(),
        width: 1920,
        height: 1080,
        audio_codec: Some("aac".into()),
        sha256: "ab".repeat(32),
        started_at: Utc::now(),
        ended_at: Utc::now(),
        partial: false,
        gaps: Vec::new(),
        started_late: false,
        segment_list_key: None,
    })
}

#[tokio::test]
async fn duplicates_and_reordering_leave_the_right_state_and_terminal_sticks() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();

    app.publish_status(
        &created,
        10,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    app.publish_status(
        &created,
        10,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    app.publish_status(
        &created,
        20,
        StatusBody::Progress {
            frames: 250,
            fps: Some(25.0),
            bitrate_kbps: Some(2048.0),
            bytes: 1000,
            media_time_sec: 10.0,
        },
    )
    .await;
    let body = app
        .wait_playback(&pb, "recording with progress", |p| {
            p["recordingStatus"] == "RECORDING" && p["progress"]["frames"] == 250
        })
        .await;
    assert_eq!(body["progress"]["bitrateKbps"], 2048.0);

    // Completed (seq 40) arrives before processing (seq 30); then a stale progress, a late
    // failure with an older seq, and a duplicate of completed.
    app.publish_status(&created, 40, completed(&pb)).await;
    app.publish_status(
        &created,
        30,
        StatusBody::Processing {
            ended_at: Utc::now(),
            stopped_by: None,
        },
    )
    .await;
    app.publish_status(
        &created,
        15,
        StatusBody::Progress {
            frames: 1,
            fps: None,
            bitrate_kbps: None,
            bytes: 1,
            media_time_sec: 1.0,
        },
    )
    .await;
    app.publish_status(&created, 40, completed(&pb)).await;
    app.publish_status(
        &created,
        50,
        StatusBody::Failed {
            code: FailureCode::UploadFailed,
            message: "late".into(),
        },
    )
    .await;
    // Wait until the consumer has processed everything (7 messages), then check the row.
    testkit::wait_until(Duration::from_secs(20), "projector caught up", || async {
        let js = app.js().await;
        let mut c: async_nats::jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream("event-api-projector", "PLAYBACKS")
            .await
            .ok()?;
        let info = c.info().await.ok()?;
        (info.ack_floor.stream_sequence >= 7 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .unwrap();
    let (_, p) = app.get(&format!("/playbacks/{pb}")).await;
    assert_eq!(p["recordingStatus"], "COMPLETED", "{p}");
    assert_eq!(p["fileSizeBytes"], 5_000_000_000i64);
    assert_eq!(p["durationSec"], 12.5);
    assert_eq!(p["resolution"], "1920x1080");
    assert_eq!(p["codec"], "h264");
    assert_eq!(p["audioCodec"], "aac");
    assert!(p["errorCode"].is_null());
    assert!(p.get("progress").is_none());
    for (field, name) in [("videoUrl", "video.mp4"), ("thumbnailUrl", "thumb.jpg")] {
        let url = p[field].as_str().unwrap();
        let unsigned = format!("{}/media/playbacks/{pb}/{name}?exp=", app.base);
        assert!(url.starts_with(&unsigned) && url.contains("&sig="), "{url}");
    }
    let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM playbacks WHERE id = $1::uuid")
        .bind(&pb)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(last_seq, 40);
}

#[tokio::test]
async fn undecodable_and_unknown_statuses_are_acked_and_ignored() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let js = app.js().await;
    testkit::wait_until(Duration::from_secs(20), "PLAYBACKS stream", || async {
        js.get_stream("PLAYBACKS").await.ok().map(|_| ())
    })
    .await
    .unwrap();
    js.publish("playback.completed.default.x", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut unknown = created.clone();
    unknown["playbackId"] = serde_json::json!(uuid::Uuid::now_v7().to_string());
    app.publish_status(
        &unknown,
        5,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    app.publish_status(
        &created,
        5,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    let pb = created["playbackId"].as_str().unwrap();
    app.wait_playback(pb, "recording after junk", |p| {
        p["recordingStatus"] == "RECORDING"
    })
    .await;
}

/// Replaying the whole stream (every message again, in any order) leaves the same row.
#[tokio::test]
async fn replaying_statuses_in_any_order_gives_the_same_row() {
    use camrec_shared::messages::PlaybackStatus;
    use camrec_shared::subjects::Site;
    use event_api::store::Store;

    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let t0 = Utc::now();
    let bodies = |pb: &str| {
        vec![
            (1, StatusBody::Recording { started_at: t0 }),
            (
                2,
                StatusBody::Progress {
                    frames: 10,
                    fps: None,
                    bitrate_kbps: Some(1.0),
                    bytes: 10,
                    media_time_sec: 0.4,
                },
            ),
            (
                3,
                StatusBody::Processing {
                    ended_at: t0,
                    stopped_by: None,
                },
            ),
            (
                4,
                StatusBody::Processing {
                    ended_at: t0,
                    stopped_by: None,
                },
            ),
            (5, completed(pb)),
        ]
    };
    let mut finals = Vec::new();
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]] {
        let created = app.motion(cam["id"].as_str().unwrap()).await;
        let pb = created["playbackId"].as_str().unwrap().to_owned();
        let all = bodies(&pb);
        let status = |i: usize| PlaybackStatus {
            playback_id: pb.parse().unwrap(),
            event_id: created["id"].as_str().unwrap().parse().unwrap(),
            camera_id: cam["id"].as_str().unwrap().parse().unwrap(),
            site: Site::default(),
            worker_id: "w".into(),
            seq: all[i].0,
            takes_over_from: None,
            body: all[i].1.clone(),
        };
        for i in order {
            store.apply_status(&status(i)).await.unwrap();
        }
        let once = store.playback_any(pb.parse().unwrap()).await.unwrap();
        for i in 0..5 {
            store.apply_status(&status(i)).await.unwrap();
        }
        let replayed = store.playback_any(pb.parse().unwrap()).await.unwrap();
        assert_eq!(
            format!("{once:?}"),
            format!("{replayed:?}"),
            "replay changed the row"
        );
        finals.push((
            replayed.status,
            replayed.last_seq,
            replayed.file_size_bytes,
            replayed.started_at,
        ));
    }
    assert!(
        finals
            .iter()
            .all(|f| f.0 == PlaybackState::Completed && f.1 == 5),
        "{finals:?}"
    );
    assert!(finals
        .iter()
        .all(|f| f.2 == Some(5_000_000_000) && f.3.is_some()));
}

/// A recording the worker stopped at the maximum duration ends its event, with that reason; a
/// stop for any other cause leaves the event to whoever ends it.
#[tokio::test]
async fn a_stop_at_the_maximum_duration_ends_the_event() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let capped = app.motion(cam["id"].as_str().unwrap()).await;
    let other = app.motion(cam["id"].as_str().unwrap()).await;
    for (created, cause) in [
        (&capped, StopCause::MaxDuration),
        (&other, StopCause::CameraLost),
    ] {
        app.publish_status(
            created,
            1,
            StatusBody::Processing {
                ended_at: Utc::now(),
                stopped_by: Some(cause),
            },
        )
        .await;
        app.wait_playback(created["playbackId"].as_str().unwrap(), "processing", |p| {
            p["recordingStatus"] == "PROCESSING"
        })
        .await;
    }
    let (_, event) = app
        .get(&format!("/events/{}", capped["id"].as_str().unwrap()))
        .await;
    assert!(event["endedAt"].is_string(), "{event}");
    assert_eq!(event["endReason"], "max_duration");
    let (_, event) = app
        .get(&format!("/events/{}", other["id"].as_str().unwrap()))
        .await;
    assert!(event["endedAt"].is_null(), "{event}");
    // Ending it later still works once, and answers the current state.
    let (status, end) = app
        .post(
            &format!("/events/{}/end", capped["id"].as_str().unwrap()),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{end}");
    assert_eq!(end["recordingStatus"], "PROCESSING");
}
