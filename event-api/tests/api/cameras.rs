//! `/cameras`: create, read, filter, patch, delete; credentials never come back; validation.

use crate::support::{open_password, spawn_app, CAMERA_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn camera_credentials_are_split_masked_and_never_returned() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    assert_eq!(cam["rtspUrl"], "rtsp://admin:***@10.0.0.5:554/live");
    assert_eq!(cam["username"], "admin");
    assert_eq!(cam["ipAddress"], "10.0.0.5");
    assert_eq!(cam["site"], "default");
    assert!(cam.get("password").is_none());
    let id = cam["id"].as_str().unwrap();
    for path in [format!("/cameras/{id}"), "/cameras".to_owned()] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.to_string();
        assert!(!text.contains(CAMERA_PASSWORD), "{text}");
        assert!(!text.contains("\"password\""), "{text}");
    }
    let stored: (String, Option<String>) =
        sqlx::query_as("SELECT rtsp_url, password FROM cameras WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.0, "rtsp://10.0.0.5:554/live");
    // Stored sealed: ciphertext that differs from the password and opens with the key.
    let sealed = stored.1.unwrap();
    assert!(sealed.starts_with("v1.test."), "{sealed}");
    assert!(!sealed.contains(CAMERA_PASSWORD));
    assert_eq!(open_password(id, &sealed), CAMERA_PASSWORD);
}

#[tokio::test]
async fn urls_are_built_from_parts_when_not_given() {
    let app = spawn_app().await;
    let (status, cam) = app
        .post(
            "/cameras",
            json!({"name": "dahua", "ipAddress": "10.0.0.9", "channel": 3, "vendor": "dahua",
                   "username": "u", "password": "p4ss"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cam}");
    assert_eq!(
        cam["rtspUrl"],
        "rtsp://u:***@10.0.0.9:554/cam/realmonitor?channel=3&subtype=0"
    );
    let id = cam["id"].as_str().unwrap();
    let (status, cam) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{id}"),
            Some(&app.admin_token),
            Some(json!({"channel": 4, "vendor": "hikvision", "enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cam}");
    assert_eq!(
        cam["rtspUrl"],
        "rtsp://u:***@10.0.0.9:554/Streaming/Channels/401"
    );
    assert_eq!(cam["enabled"], false);
    assert_eq!(cam["channel"], 4);
}

/// A camera is unique by its stream (host, port and path of its URL), not by its address:
/// cameras behind one address on other ports or paths are welcome, the same stream twice is 409.
#[tokio::test]
async fn the_same_stream_twice_is_409_and_cameras_behind_one_address_are_not() {
    let app = spawn_app().await;
    app.camera("10.0.0.5", 1).await;
    for url in [
        "rtsp://other:secret@10.0.0.5:554/live",
        "rtsp://10.0.0.5/live",
        "rtsp://10.0.0.5:554/live",
    ] {
        let (status, body) = app
            .post("/cameras", json!({"name": "again", "rtspUrl": url}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{url}: {body}");
        assert_eq!(body["statusCode"], 409);
    }
    let mut ids = Vec::new();
    for (name, url) in [
        ("port forward", "rtsp://admin:x@10.0.0.5:8554/live"),
        ("encoder input 2", "rtsp://10.0.0.5:554/live2"),
    ] {
        let (status, body) = app
            .post("/cameras", json!({"name": name, "rtspUrl": url}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
        assert_eq!(body["ipAddress"], "10.0.0.5");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{}", ids[0]),
            Some(&app.admin_token),
            Some(json!({"rtspUrl": "rtsp://admin:x@10.0.0.5:554/live"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// A URL or a name is stored as typed or refused: whitespace or a control character in a URL,
/// a control character in a name, and overlong values are a 400 naming the field, never
/// silently rewritten.
#[tokio::test]
async fn whitespace_control_characters_and_overlong_values_are_refused() {
    let app = spawn_app().await;
    let huge = format!("rtsp://10.0.0.5/{}", "a".repeat(1_100_000));
    let long = format!("rtsp://10.0.0.5/{}", "a".repeat(2_040));
    let cases = [
        (
            json!({"name": "a", "rtspUrl": "rtsp://10.0.0.5/a b"}),
            "rtspUrl",
        ),
        (
            json!({"name": "a", "rtspUrl": "rtsp://10.0.0.5/a\nb"}),
            "rtspUrl",
        ),
        (
            json!({"name": "a", "rtspUrl": "rtsp://10.0.0.5/a\tb"}),
            "rtspUrl",
        ),
        (json!({"name": "a", "rtspUrl": huge}), "rtspUrl"),
        (json!({"name": "a", "rtspUrl": long}), "rtspUrl"),
        (
            json!({"name": "front\ndoor", "ipAddress": "10.0.0.5"}),
            "name",
        ),
        (
            json!({"name": "a", "ipAddress": "10.0.0.5", "vendor": "x\u{0}"}),
            "vendor",
        ),
        (
            json!({"name": "n".repeat(201), "ipAddress": "10.0.0.5"}),
            "name",
        ),
        (
            json!({"name": "a", "ipAddress": "10.0.0.5", "password": "p".repeat(257)}),
            "password",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/cameras", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {err}");
        assert_eq!(err["field"], field, "{err}");
    }
    let (_, page) = app.get("/cameras").await;
    assert_eq!(page["total"], 0, "nothing was stored");
    let (status, cam) = app
        .post(
            "/cameras",
            json!({"name": "Front door", "rtspUrl": "rtsp://10.0.0.5/a%20b"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cam}");
    assert_eq!(cam["name"], "Front door", "a space inside a name is fine");
    assert_eq!(cam["rtspUrl"], "rtsp://10.0.0.5/a%20b", "stored as typed");
}

#[tokio::test]
async fn lists_filter_sort_and_paginate() {
    let app = spawn_app().await;
    for i in 1..=5 {
        app.camera(&format!("10.0.1.{i}"), 1).await;
    }
    app.post(
        "/cameras",
        json!({"name": "Back Door", "ipAddress": "10.0.2.1", "enabled": false, "site": "north"}),
    )
    .await;
    let (status, page) = app
        .get("/cameras?page=2&pageSize=2&sortBy=ipAddress&sortDir=asc")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 6);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(page["page"], 2);
    assert_eq!(page["pageSize"], 2);
    let ips: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ipAddress"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.0.1.3", "10.0.1.4"]);
    let (_, page) = app.get("/cameras?enabled=false").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["data"][0]["name"], "Back Door");
    let (_, page) = app.get("/cameras?name=back").await;
    assert_eq!(page["total"], 1);
    let (_, page) = app.get("/cameras?site=north&ipAddress=10.0.2.1").await;
    assert_eq!(page["total"], 1);
    let (_, page) = app
        .get("/cameras?createdFrom=2000-01-01&createdTo=2001-01-01")
        .await;
    assert_eq!(page["total"], 0);
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"name": "x", "rtspUrl": "http://10.0.0.1/"}),
            "rtspUrl",
        ),
        (
            json!({"name": "x", "rtspUrl": "file:///etc/passwd"}),
            "rtspUrl",
        ),
        (
            json!({"name": "x", "ipAddress": "10.0.0.1", "bogus": 1}),
            "bogus",
        ),
        (json!({"ipAddress": "10.0.0.1"}), "name"),
        (
            json!({"name": "x", "ipAddress": "10.0.0.1", "channel": "one"}),
            "channel",
        ),
        (
            json!({"name": "x", "ipAddress": "10.0.0.1", "recordEventTypes": ["NOPE"]}),
            "recordEventTypes[0]",
        ),
        (
            json!({"name": "x", "ipAddress": "10.0.0.1", "site": "has space"}),
            "site",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = app.post("/cameras", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
        assert_eq!(err["statusCode"], 400);
    }
    let (status, err) = app.post_raw("/cameras", "{\"name\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "body");
    // A body over the 2 MB limit is 413, still naming the body.
    let huge = serde_json::json!({ "name": "x".repeat(3 << 20) });
    let (status, err) = app.post("/cameras", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["statusCode"], 413);
    assert_eq!(err["field"], "body");
    for (path, field) in [
        ("/cameras/not-a-uuid", "id"),
        ("/cameras?enabled=maybe", "enabled"),
        ("/cameras?sortBy=password", "sortBy"),
        ("/cameras?sortDir=sideways", "sortDir"),
        ("/cameras?pageSize=101", "pageSize"),
        ("/cameras?createdFrom=yesterday", "createdFrom"),
    ] {
        let (status, err) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} -> {err}");
        assert_eq!(err["field"], field, "{path}");
    }
    let (status, err) = app
        .get("/cameras/00000000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["statusCode"], 404);
}

#[tokio::test]
async fn cameras_with_events_cannot_be_deleted() {
    let app = spawn_app().await;
    let used = app.camera("10.0.0.5", 1).await;
    let unused = app.camera("10.0.0.6", 1).await;
    app.motion(used["id"].as_str().unwrap()).await;
    let del = |id: String| {
        let app = &app;
        async move {
            app.call(
                Method::DELETE,
                &format!("/cameras/{id}"),
                Some(&app.admin_token),
                None,
            )
            .await
            .0
        }
    };
    assert_eq!(
        del(used["id"].as_str().unwrap().to_owned()).await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        del(unused["id"].as_str().unwrap().to_owned()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        del(unused["id"].as_str().unwrap().to_owned()).await,
        StatusCode::NOT_FOUND
    );
}

/// The stored password only ever goes to the host it was given for: pointing a camera at
/// another host (or port) without giving its password again is refused.
#[tokio::test]
async fn moving_a_camera_to_another_host_needs_its_password_again() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let path = format!("/cameras/{}", cam["id"].as_str().unwrap());
    let patch = |body: serde_json::Value| {
        let (app, path) = (&app, &path);
        async move {
            app.call(Method::PATCH, path, Some(&app.admin_token), Some(body))
                .await
        }
    };
    for body in [
        json!({"rtspUrl": "rtsp://attacker.example/live"}),
        json!({"rtspUrl": "rtsp://10.0.0.5:9554/live"}),
    ] {
        let (status, err) = patch(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["field"], "password");
    }
    let (status, moved) = patch(json!({"rtspUrl": "rtsp://10.0.0.5:554/other"})).await;
    assert_eq!(status, StatusCode::OK, "same host, another path: {moved}");
    let (status, moved) =
        patch(json!({"rtspUrl": "rtsp://10.0.0.7/live", "password": "new-pass"})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["ipAddress"], "10.0.0.7");
}

/// The network policy: a camera on the cloud metadata address or on event-api's own host is
/// refused by default, naming the field, and accepted inside `CAMERA_ALLOWED_NETWORKS`.
#[tokio::test]
async fn cameras_on_refused_networks_need_an_allowed_network() {
    let app = spawn_app().await;
    for (body, field) in [
        (
            json!({"name": "meta", "rtspUrl": "rtsp://169.254.169.254/latest"}),
            "rtspUrl",
        ),
        (
            json!({"name": "pg", "rtspUrl": "rtsp://127.0.0.1:5432/"}),
            "rtspUrl",
        ),
        (
            json!({"name": "self", "rtspUrl": "rtsp://localhost/live"}),
            "rtspUrl",
        ),
        (
            json!({"name": "v6", "rtspUrl": "rtsp://[::1]/live"}),
            "rtspUrl",
        ),
        (
            json!({"name": "parts", "ipAddress": "127.0.0.1"}),
            "ipAddress",
        ),
    ] {
        let (status, err) = app.post("/cameras", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["field"], field, "{err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("CAMERA_ALLOWED_NETWORKS"),
            "{err}"
        );
    }
    let open = crate::support::spawn_app_with(vec![(
        "CAMERA_ALLOWED_NETWORKS".into(),
        "127.0.0.0/8, 169.254.169.254/32".into(),
    )])
    .await;
    for url in ["rtsp://127.0.0.1:8554/cam", "rtsp://169.254.169.254/latest"] {
        let (status, body) = open
            .post("/cameras", json!({"name": url, "rtspUrl": url}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
}

/// Rotation: a password stored in clear (before sealing) or sealed with a retired key is sealed
/// again with the current key, as event-api does at every start; one that does not open is left.
#[tokio::test]
async fn stored_passwords_are_sealed_again_with_the_current_key() {
    use camrec_shared::sealed::CameraKeys;
    let app = spawn_app().await;
    let (clear, retired, broken) = (
        app.camera("10.0.0.5", 1).await,
        app.camera("10.0.0.6", 1).await,
        app.camera("10.0.0.7", 1).await,
    );
    let old_key = CameraKeys::generate("old");
    let old = CameraKeys::parse(&old_key, "").unwrap();
    let id = |c: &serde_json::Value| c["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
    for (camera, stored) in [
        (&clear, "clear-pw".to_owned()),
        (&retired, old.seal(id(&retired), "retired-pw")),
        (&broken, "v1.old.bm90IGEgc2VhbGVkIHZhbHVl".to_owned()),
    ] {
        sqlx::query("UPDATE cameras SET password = $2 WHERE id = $1")
            .bind(id(camera))
            .bind(stored)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let new_key = CameraKeys::generate("new");
    let keys = CameraKeys::parse(&new_key, &old_key).unwrap();
    let store = event_api::store::Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    assert_eq!(store.reseal_camera_passwords(&keys, 3600).await.unwrap(), 2);
    let stored = |c: &serde_json::Value| {
        let (pool, id) = (&app.pool, id(c));
        async move {
            sqlx::query_scalar::<_, String>("SELECT password FROM cameras WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    let new_only = CameraKeys::parse(&new_key, "").unwrap();
    assert_eq!(
        new_only.open(id(&clear), &stored(&clear).await).unwrap(),
        "clear-pw"
    );
    assert_eq!(
        new_only
            .open(id(&retired), &stored(&retired).await)
            .unwrap(),
        "retired-pw"
    );
    assert!(
        stored(&broken).await.starts_with("v1.old."),
        "left as it was"
    );
    // The workers get the password sealed again through the camera catalog.
    let resealed = stored(&clear).await;
    let spec = app
        .wait_spec("default", &clear, "the re-sealed spec", |s| {
            s["password_sealed"] == resealed.as_str()
        })
        .await;
    assert!(!spec.to_string().contains("clear-pw"), "{spec}");
    assert_eq!(
        store.reseal_camera_passwords(&keys, 3600).await.unwrap(),
        0,
        "nothing left to do"
    );
}
