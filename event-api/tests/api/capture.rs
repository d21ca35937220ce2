//! The per-camera capture as event-api sees it: the cameras' pre/post roll, the camera catalog
//! (KV `camrec_cameras`) written through the outbox, `captureStatus` read from the capture leases
//! (KV `camrec_captures`), `occurredAt` and its bounds, the event times on the wire, and the
//! playback's gaps and `startedLate`.

use crate::support::{spawn_app, spawn_app_with_clock, CAMERA_PASSWORD};
use camrec_shared::capture::{CameraSpec, CaptureLease, CaptureState};
use camrec_shared::messages::{CompletedClip, Envelope, EventCreated, EventEnded, Gap, StatusBody};
use camrec_shared::subjects::Site;
use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use event_api::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn field(body: &Value) -> &str {
    body["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn rolls_default_to_five_seconds_and_bad_ones_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    assert_eq!(
        (cam["preRollSec"].as_i64(), cam["postRollSec"].as_i64()),
        (Some(5), Some(5))
    );
    let id = cam["id"].as_str().unwrap();
    for (name, bad) in [
        ("preRollSec", json!(61)),
        ("preRollSec", json!(-1)),
        ("preRollSec", json!(1.5)),
        ("preRollSec", json!("5")),
        ("preRollSec", json!(true)),
        ("postRollSec", json!(301)),
        ("postRollSec", json!(2.5)),
        ("postRollSec", json!("5")),
        ("postRollSec", json!(false)),
        ("postRollSec", json!(4_294_967_296u64)),
    ] {
        let mut body = json!({"name": "x", "ipAddress": "10.0.0.6"});
        body[name] = bad.clone();
        let (status, err) = app.post("/cameras", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={bad}: {err}");
        assert_eq!(field(&err), name, "{name}={bad}: {err}");
        let (status, err) = app
            .call(
                Method::PATCH,
                &format!("/cameras/{id}"),
                Some(&app.admin_token),
                Some(json!({ name: bad })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH {name}={bad}: {err}");
        assert_eq!(field(&err), name, "PATCH {name}={bad}: {err}");
    }
    let (status, cam) = app
        .post(
            "/cameras",
            json!({"name": "edges", "ipAddress": "10.0.0.7", "preRollSec": 60, "postRollSec": 300}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cam}");
    assert_eq!(
        (cam["preRollSec"].as_i64(), cam["postRollSec"].as_i64()),
        (Some(60), Some(300))
    );
    let (status, cam) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{id}"),
            Some(&app.admin_token),
            Some(json!({"preRollSec": 0, "postRollSec": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cam}");
    assert_eq!(
        (cam["preRollSec"].as_i64(), cam["postRollSec"].as_i64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn the_catalog_follows_every_change_of_a_camera() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let id = cam["id"].as_str().unwrap().to_owned();
    let spec = app
        .wait_spec("default", &cam, "the new camera's spec", |_| true)
        .await;
    let parsed: CameraSpec = serde_json::from_value(spec.clone()).expect("a CameraSpec");
    assert_eq!(parsed.camera_id.to_string(), id);
    assert_eq!(parsed.rtsp_url.expose(), "rtsp://admin@10.0.0.5:554/live");
    assert!(parsed.enabled && !parsed.deleted);
    assert_eq!((parsed.pre_roll_sec, parsed.post_roll_sec), (5, 5));
    assert_eq!(parsed.max_duration_sec, 3600);
    let sealed = parsed.password_sealed.as_deref().expect("sealed password");
    assert_eq!(crate::support::open_password(&id, sealed), CAMERA_PASSWORD);
    assert!(!spec.to_string().contains(CAMERA_PASSWORD), "{spec}");

    let patch = |body: Value| {
        let app = &app;
        let id = id.clone();
        async move {
            let (status, cam) = app
                .call(
                    Method::PATCH,
                    &format!("/cameras/{id}"),
                    Some(&app.admin_token),
                    Some(body),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{cam}");
            cam
        }
    };
    patch(json!({"preRollSec": 10, "postRollSec": 20, "name": "gate"})).await;
    app.wait_spec("default", &cam, "the patched spec", |s| {
        s["pre_roll_sec"] == 10 && s["post_roll_sec"] == 20 && s["name"] == "gate"
    })
    .await;
    patch(json!({"enabled": false})).await;
    app.wait_spec("default", &cam, "the disabled spec", |s| {
        s["enabled"] == false
    })
    .await;
    patch(json!({"enabled": true, "password": "n3w-pw"})).await;
    let spec = app
        .wait_spec("default", &cam, "the new password", |s| {
            s["enabled"] == true && s["password_sealed"] != sealed
        })
        .await;
    assert!(!spec.to_string().contains("n3w-pw"), "{spec}");

    patch(json!({"site": "north"})).await;
    app.wait_spec("default", &cam, "the old key marked deleted", |s| {
        s["deleted"] == true
    })
    .await;
    let moved = app
        .wait_spec("north", &cam, "the spec at the new site", |_| true)
        .await;
    assert_eq!(moved["deleted"], false);
    assert_eq!(moved["site"], "north");

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/cameras/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.wait_spec("north", &cam, "the deleted spec", |s| s["deleted"] == true)
        .await;
}

#[tokio::test]
async fn the_check_at_start_restores_a_lost_catalog_and_retires_stale_keys() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    app.wait_spec("default", &cam, "the spec", |_| true).await;
    app.outbox_drained().await;
    // NATS lost the bucket's content, and a key of a camera that no longer exists remains.
    let js = app.js().await;
    js.get_stream("KV_camrec_cameras")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let ghost = json!({"id": uuid::Uuid::now_v7().to_string()});
    let spec = CameraSpec {
        camera_id: ghost["id"].as_str().unwrap().parse().unwrap(),
        site: Site::default(),
        name: "gone".into(),
        rtsp_url: camrec_shared::rtsp::RtspUrl::parse("rtsp://10.9.9.9/gone").unwrap(),
        password_sealed: None,
        enabled: true,
        deleted: false,
        pre_roll_sec: 5,
        post_roll_sec: 5,
        max_duration_sec: 3600,
        updated_at: Utc::now(),
    };
    app.cameras_kv()
        .await
        .put(spec.key(), serde_json::to_vec(&spec).unwrap().into())
        .await
        .unwrap();
    assert!(app.spec("default", &cam).await.is_none(), "purged");

    let store = event_api::store::Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let repaired = event_api::catalog::repair(&store, &js, 1, 3600)
        .await
        .unwrap();
    assert_eq!((repaired.published, repaired.retired), (1, 1));
    app.wait_spec("default", &cam, "the restored spec", |s| {
        s["deleted"] == false
    })
    .await;
    app.wait_spec("default", &ghost, "the ghost retired", |s| {
        s["deleted"] == true
    })
    .await;
    app.outbox_drained().await;
    let again = event_api::catalog::repair(&store, &js, 1, 3600)
        .await
        .unwrap();
    assert_eq!(
        (again.published, again.retired),
        (0, 0),
        "nothing left to repair"
    );
}

fn lease(worker: &str, state: CaptureState, renewed_at: DateTime<Utc>, error: &str) -> Vec<u8> {
    serde_json::to_vec(&CaptureLease {
        worker_id: worker.into(),
        site: Site::default(),
        state,
        last_error: Some(error.into()),
        since: renewed_at - Span::seconds(30),
        renewed_at,
    })
    .unwrap()
}

#[tokio::test]
async fn capture_status_reads_the_leases_of_the_workers() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let id = cam["id"].as_str().unwrap().to_owned();
    assert_eq!(cam["captureStatus"]["state"], "unassigned", "{cam}");
    assert!(cam["captureStatus"]["workerId"].is_null());

    let kv = app.captures_kv().await;
    kv.put(
        &id,
        lease(
            "worker-7",
            CaptureState::Unreachable,
            Utc::now(),
            "rtsp://admin:Sup3rS3cretCamPw@10.0.0.5:554/live: connection refused",
        )
        .into(),
    )
    .await
    .unwrap();
    let got = testkit::wait_until(Duration::from_secs(20), "the lease shown", || async {
        let (_, cam) = app.get(&format!("/cameras/{id}")).await;
        (cam["captureStatus"]["state"] == "unreachable").then_some(cam)
    })
    .await
    .unwrap();
    let status = &got["captureStatus"];
    assert_eq!(status["workerId"], "worker-7");
    assert_eq!(
        status["lastError"],
        "rtsp://10.0.0.5:554/live: connection refused"
    );
    assert!(status["since"].is_string());
    let (_, page) = app.get("/cameras").await;
    assert_eq!(page["data"][0]["captureStatus"]["state"], "unreachable");
    assert!(!page.to_string().contains(CAMERA_PASSWORD));

    kv.put(
        &id,
        lease("worker-7", CaptureState::Capturing, Utc::now(), "").into(),
    )
    .await
    .unwrap();
    testkit::wait_until(Duration::from_secs(20), "the gauge", || async {
        let text = app.metrics_text().await;
        text.lines()
            .any(|l| l.starts_with("cameras_capture{state=\"capturing\"} 1"))
            .then_some(())
    })
    .await
    .unwrap();

    // A lease its worker deleted (it let the camera go) is gone at once.
    kv.delete(&id).await.unwrap();
    testkit::wait_until(Duration::from_secs(20), "the deleted lease", || async {
        let (_, cam) = app.get(&format!("/cameras/{id}")).await;
        (cam["captureStatus"]["state"] == "unassigned").then_some(())
    })
    .await
    .unwrap();

    // A lease not renewed for 1.5 × the TTL no longer counts.
    kv.put(
        &id,
        lease(
            "worker-7",
            CaptureState::Capturing,
            Utc::now() - Span::seconds(16),
            "",
        )
        .into(),
    )
    .await
    .unwrap();
    testkit::wait_until(
        Duration::from_secs(20),
        "the stale lease ignored",
        || async {
            let (_, cam) = app.get(&format!("/cameras/{id}")).await;
            (cam["captureStatus"]["state"] == "unassigned").then_some(())
        },
    )
    .await
    .unwrap();

    let (status, cam) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{id}"),
            Some(&app.admin_token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cam["captureStatus"]["state"], "disabled");
}

#[tokio::test]
async fn occurred_at_is_bounded_by_the_clock_and_reaches_the_worker_with_the_rolls() {
    let now = Utc::now().trunc_subsecs(3);
    let app = spawn_app_with_clock(Clock::manual(now)).await;
    let (status, cam) = app
        .post(
            "/cameras",
            json!({"name": "gate", "ipAddress": "10.0.0.5", "preRollSec": 3, "postRollSec": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cam}");
    let cam_id = cam["id"].as_str().unwrap();
    let post = |occurred: Option<DateTime<Utc>>| {
        let mut body = json!({"cameraId": cam_id, "type": "MOTION"});
        if let Some(t) = occurred {
            body["occurredAt"] = json!(t.to_rfc3339());
        }
        app.post("/events", body)
    };
    let ms = Span::milliseconds;
    for bad in [
        now + Span::seconds(5) + ms(1),
        now - Span::minutes(5) - ms(1),
    ] {
        let (status, err) = post(Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(field(&err), "occurredAt", "{err}");
    }
    for bad in [json!("yesterday"), json!(12), json!("2026-13-01T00:00:00Z")] {
        let (status, err) = app
            .post(
                "/events",
                json!({"cameraId": cam_id, "type": "MOTION", "occurredAt": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(field(&err), "occurredAt", "{err}");
    }
    let mut events = Vec::new();
    for (given, expected) in [
        (Some(now + Span::seconds(5)), now + Span::seconds(5)),
        (Some(now - Span::minutes(5)), now - Span::minutes(5)),
        (None, now),
    ] {
        let (status, created) = post(given).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let shown: DateTime<Utc> = created["occurredAt"].as_str().unwrap().parse().unwrap();
        assert_eq!(shown, expected);
        let id = created["id"].as_str().unwrap().to_owned();
        let (_, got) = app.get(&format!("/events/{id}")).await;
        assert_eq!(got["occurredAt"], created["occurredAt"]);
        events.push((id, expected));
    }

    app.outbox_drained().await;
    let msgs = app.stream_messages("EVENTS", "event.created.").await;
    assert_eq!(msgs.len(), 3);
    for (_, _, payload) in msgs {
        let env: Envelope<EventCreated> =
            Envelope::from_slice(&serde_json::to_vec(&payload).unwrap()).unwrap();
        let (_, expected) = events
            .iter()
            .find(|(id, _)| *id == env.payload.event_id.to_string())
            .expect("one of ours");
        assert_eq!(env.payload.occurred_at, Some(*expected));
        assert_eq!(env.payload.limits.pre_roll_sec, 3);
        assert_eq!(env.payload.limits.post_roll_sec, 2);
    }

    let (status, _) = app
        .post(&format!("/events/{}/end", events[0].0), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, ended_event) = app.get(&format!("/events/{}", events[0].0)).await;
    app.outbox_drained().await;
    let msgs = app.stream_messages("EVENTS", "event.ended.").await;
    assert_eq!(msgs.len(), 1);
    let env: Envelope<EventEnded> =
        Envelope::from_slice(&serde_json::to_vec(&msgs[0].2).unwrap()).unwrap();
    let shown: DateTime<Utc> = ended_event["endedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.payload.ended_at, Some(shown));
}

#[tokio::test]
async fn playbacks_show_the_clips_gaps_and_late_start() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap();
    let recording_started: DateTime<Utc> = "2026-06-01T12:00:00Z".parse().unwrap();
    app.publish_status(
        &created,
        1,
        StatusBody::Recording {
            started_at: recording_started,
        },
    )
    .await;
    let body = app
        .wait_playback(pb, "RECORDING", |p| p["recordingStatus"] == "RECORDING")
        .await;
    assert_eq!(body["gaps"], json!([]));
    assert_eq!(body["startedLate"], false);

    let first_frame = recording_started - Span::seconds(3);
    let gap = Gap {
        from: first_frame + Span::seconds(4),
        to: first_frame + Span::seconds(14),
    };
    app.publish_status(
        &created,
        2,
        StatusBody::Completed(CompletedClip {
            object_key: format!("playbacks/{pb}/video.mp4"),
            url: None,
            thumb_key: None,
            size_bytes: 1000,
            duration_sec: 20.0,
            video_codec: "h264".into(),
            width: 640,
            height: 360,
            audio_codec: None,
            sha256: "00".repeat(32),
            started_at: first_frame,
            ended_at: first_frame + Span::seconds(30),
            partial: false,
            gaps: vec![gap],
            started_late: true,
            segment_list_key: None,
        }),
    )
    .await;
    let body = app
        .wait_playback(pb, "COMPLETED", |p| p["recordingStatus"] == "COMPLETED")
        .await;
    assert_eq!(
        body["gaps"],
        json!([{"from": "2026-06-01T12:00:01Z", "to": "2026-06-01T12:00:11Z"}])
    );
    assert_eq!(body["startedLate"], true);
    assert_eq!(
        body["startedAt"], "2026-06-01T11:59:57Z",
        "from the clip, not the recording"
    );
    assert_eq!(body["endedAt"], "2026-06-01T12:00:27Z");
    let (_, page) = app
        .get(&format!(
            "/playbacks?eventId={}",
            created["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page["data"][0]["startedLate"], true);
}

#[tokio::test]
async fn the_openapi_document_describes_every_new_field() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let props = |name: &str| schemas[name]["properties"].clone();
    let camera = props("CameraJson");
    for field in ["preRollSec", "postRollSec", "captureStatus"] {
        assert!(camera.get(field).is_some(), "CameraJson.{field}: {camera}");
    }
    let input = props("CameraInput");
    assert_eq!(input["preRollSec"]["maximum"], 60, "{input}");
    assert_eq!(input["postRollSec"]["maximum"], 300, "{input}");
    let capture = props("CaptureStatus");
    for field in ["state", "workerId", "lastError", "since"] {
        assert!(
            capture.get(field).is_some(),
            "CaptureStatus.{field}: {capture}"
        );
    }
    let states = schemas["CaptureStatusState"]["enum"].to_string();
    for state in [
        "capturing",
        "connecting",
        "unreachable",
        "disk_full",
        "unassigned",
        "disabled",
    ] {
        assert!(states.contains(state), "{states}");
    }
    assert!(props("EventJson").get("occurredAt").is_some());
    assert!(props("NestedEventJson").get("occurredAt").is_some());
    assert_eq!(props("CreateEvent")["occurredAt"]["format"], "date-time");
    let playback = props("PlaybackJson");
    for field in ["startedAt", "endedAt", "gaps", "startedLate"] {
        assert!(
            playback.get(field).is_some(),
            "PlaybackJson.{field}: {playback}"
        );
    }
    let gap = props("GapJson");
    assert!(
        gap.get("from").is_some() && gap.get("to").is_some(),
        "{gap}"
    );
}
