//! `/events`: creating a recording event writes a PENDING playback and publishes
//! `event.created`; ending is idempotent, also under a race.

use crate::support::{spawn_app, CAMERA_PASSWORD};
use camrec_shared::messages::{Envelope, EventCreated, EventEnded};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn motion_event_creates_a_pending_playback_and_publishes_event_created() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 7).await;
    let cam_id = cam["id"].as_str().unwrap();
    let created = app.motion(cam_id).await;
    let event_id = created["id"].as_str().unwrap();
    let playback_id = created["playbackId"].as_str().unwrap();
    assert_eq!(created["recordingStatus"], "PENDING");
    assert_eq!(created["nChannelID"], 7);
    assert_eq!(created["type"], "MOTION");
    assert_eq!(
        created["camera"]["rtspUrl"],
        "rtsp://admin:***@10.0.0.5:554/live/ch7"
    );
    assert!(
        created.get("event").is_none(),
        "the event is the body itself"
    );
    assert!(!created.to_string().contains(CAMERA_PASSWORD));

    let (status, page) = app.get(&format!("/playbacks?eventId={event_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 1);
    let pb = &page["data"][0];
    assert_eq!(pb["id"], playback_id);
    assert_eq!(pb["recordingStatus"], "PENDING");
    assert_eq!(pb["event"]["id"], event_id);
    assert_eq!(pb["camera"]["id"], cam_id);
    assert!(!page.to_string().contains(CAMERA_PASSWORD));

    app.outbox_drained().await;
    let msgs = app.stream_messages("EVENTS", "event.created.").await;
    assert_eq!(msgs.len(), 1);
    let (subject, msg_id, payload) = &msgs[0];
    assert_eq!(subject, &format!("event.created.default.{cam_id}"));
    assert_eq!(msg_id, &format!("{event_id}:created"));
    let env: Envelope<EventCreated> =
        Envelope::from_slice(&serde_json::to_vec(payload).unwrap()).unwrap();
    assert_eq!(env.payload.event_id.to_string(), event_id);
    assert_eq!(env.payload.playback_id.to_string(), playback_id);
    assert_eq!(
        env.payload.rtsp_url.expose(),
        format!("rtsp://admin:{CAMERA_PASSWORD}@10.0.0.5:554/live/ch7")
    );
    assert_eq!(env.payload.limits.max_duration_sec, 3600);
}

#[tokio::test]
async fn non_recording_types_and_disabled_or_unknown_cameras() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let cam_id = cam["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            "/events",
            json!({"cameraId": cam_id, "type": "ALERT", "description": "door"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["playbackId"].is_null());
    assert!(body["recordingStatus"].is_null());
    assert_eq!(body["description"], "door");

    let (status, _) = app
        .post(
            "/events",
            json!({"cameraId": "00000000-0000-7000-8000-000000000000", "type": "MOTION"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (body, field) in [
        (json!({"cameraId": "nope", "type": "MOTION"}), "cameraId"),
        (json!({"cameraId": cam_id, "type": "EXPLOSION"}), "type"),
        (json!({"cameraId": cam_id}), "type"),
        (
            json!({"cameraId": cam_id, "type": "MOTION", "extra": true}),
            "extra",
        ),
    ] {
        let (status, err) = app.post("/events", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["field"], field);
    }
    app.call(
        Method::PATCH,
        &format!("/cameras/{cam_id}"),
        Some(&app.admin_token),
        Some(json!({"enabled": false})),
    )
    .await;
    let (status, _) = app
        .post("/events", json!({"cameraId": cam_id, "type": "MOTION"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn ending_is_idempotent_even_when_two_calls_race() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let event_id = created["id"].as_str().unwrap();
    let path = format!("/events/{event_id}/end");
    let (a, b) = tokio::join!(app.post(&path, json!({})), app.post(&path, json!({})));
    for (status, body) in [&a, &b] {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["ok"], true);
        assert_eq!(body["eventId"], event_id);
        assert_eq!(body["playbackId"], created["playbackId"]);
        assert_eq!(body["recordingStatus"], "PENDING");
    }
    let (status, again) = app.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["ok"], true);
    let stop = format!(
        "/playbacks/{}/stop",
        created["playbackId"].as_str().unwrap()
    );
    let (status, stopped) = app.post(&stop, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stopped["eventId"], event_id);

    app.outbox_drained().await;
    let ended = app.stream_messages("EVENTS", "event.ended.").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].1, format!("{event_id}:ended"));
    let env: Envelope<EventEnded> =
        Envelope::from_slice(&serde_json::to_vec(&ended[0].2).unwrap()).unwrap();
    assert_eq!(env.payload.event_id.to_string(), event_id);
    let (_, event) = app.get(&format!("/events/{event_id}")).await;
    assert!(event["endedAt"].is_string());
}

/// The end's message names the camera's site at the end (a camera moved mid-recording is
/// ended where it now is); an event without a playback ends with no message; an unknown or
/// deleted event is 404 and queues nothing.
#[tokio::test]
async fn an_end_names_the_cameras_current_site_and_only_a_playback_gets_a_message() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.7", 1).await;
    let cam_id = cam["id"].as_str().unwrap();
    let created = app.motion(cam_id).await;
    let event_id = created["id"].as_str().unwrap();
    let (status, moved) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{cam_id}"),
            Some(&app.admin_token),
            Some(json!({"site": "north"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let (status, ended) = app
        .post(&format!("/events/{event_id}/end"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["playbackId"], created["playbackId"]);

    let (status, error) = app
        .post("/events", json!({"cameraId": cam_id, "type": "ERROR"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{error}");
    let error_id = error["id"].as_str().unwrap();
    let (status, body) = app
        .post(&format!("/events/{error_id}/end"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["playbackId"].is_null(), "{body}");
    let (_, event) = app.get(&format!("/events/{error_id}")).await;
    assert!(event["endedAt"].is_string(), "{event}");

    let (status, _) = app
        .post(&format!("/events/{}/end", uuid::Uuid::new_v4()), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let third = app.motion(cam_id).await;
    let third_id = third["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/events/{third_id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .post(&format!("/events/{third_id}/end"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    app.outbox_drained().await;
    let ended = app.stream_messages("EVENTS", "event.ended.").await;
    let subjects: Vec<&str> = ended.iter().map(|m| m.0.as_str()).collect();
    // The first MOTION at its new site; the deleted one (ended by its delete, at the same
    // site); none for the ERROR event.
    assert_eq!(
        subjects,
        [
            format!("event.ended.north.{cam_id}"),
            format!("event.ended.north.{cam_id}")
        ],
        "{ended:?}"
    );
    assert_eq!(ended[0].1, format!("{event_id}:ended"));
    assert_eq!(ended[1].1, format!("{third_id}:ended"));
}

#[tokio::test]
async fn list_filters_ack_and_delete() {
    let app = spawn_app().await;
    let a = app.camera("10.0.0.5", 1).await;
    let b = app.camera("10.0.0.6", 2).await;
    let first = app.motion(a["id"].as_str().unwrap()).await;
    app.motion(b["id"].as_str().unwrap()).await;
    app.post("/events", json!({"cameraId": b["id"], "type": "ERROR"}))
        .await;

    let (_, page) = app.get("/events?nChannelID=2").await;
    assert_eq!(page["total"], 2);
    let (_, page) = app
        .get(&format!("/events?cameraId={}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(page["total"], 1);
    let (_, page) = app.get("/events?type=ERROR").await;
    assert_eq!(page["total"], 1);
    assert!(page["data"][0]["playbackId"].is_null());
    assert_eq!(
        page["data"][0]["camera"]["rtspUrl"],
        "rtsp://admin:***@10.0.0.6:554/live/ch2"
    );
    let (status, err) = app.get("/events?type=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "type");

    let id = first["id"].as_str().unwrap();
    let (status, acked) = app
        .call(
            Method::PUT,
            &format!("/events/{id}/ack"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["ack"], true);
    let (_, page) = app.get("/events?ack=true").await;
    assert_eq!(page["total"], 1);

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/events/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/events/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let pb = first["playbackId"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/playbacks/{pb}")).await.0,
        StatusCode::NOT_FOUND
    );
    app.outbox_drained().await;
    let ended = app.stream_messages("EVENTS", "event.ended.").await;
    assert_eq!(ended.len(), 1, "deleting an open event ends it first");
}
