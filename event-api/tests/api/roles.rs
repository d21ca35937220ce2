//! The role matrix: every route against no token, VIEWER, OPERATOR and ADMIN.

use crate::support::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Viewer,
    Operator,
    Admin,
}

#[tokio::test]
async fn every_route_enforces_its_role() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let cam_id = cam["id"].as_str().unwrap().to_owned();
    let created = app.motion(&cam_id).await;
    let ev = created["id"].as_str().unwrap().to_owned();
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    let missing = "00000000-0000-7000-8000-000000000000";
    let tokens = [
        (Need::Viewer, app.token_for("VIEWER").await),
        (Need::Operator, app.token_for("OPERATOR").await),
        (Need::Admin, app.admin_token.clone()),
    ];

    // (method, path, body, the least role that may call it). Mutations that would change the
    // fixtures target ids that do not exist, so an allowed call answers 404, not 2xx.
    let routes: Vec<(Method, String, Option<Value>, Need)> = vec![
        (Method::GET, "/users/profile".into(), None, Need::Viewer),
        (Method::GET, "/users".into(), None, Need::Admin),
        (
            Method::POST,
            "/users".into(),
            Some(json!({"username": "matrix-user", "password": "password-123", "role": "VIEWER"})),
            Need::Admin,
        ),
        (
            Method::PUT,
            format!("/users/{missing}"),
            Some(json!({"role": "VIEWER"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            format!("/users/{missing}"),
            None,
            Need::Admin,
        ),
        (Method::GET, "/cameras".into(), None, Need::Viewer),
        (
            Method::GET,
            format!("/cameras/{cam_id}"),
            None,
            Need::Viewer,
        ),
        (
            Method::POST,
            "/cameras".into(),
            Some(json!({"name": "m", "ipAddress": "10.9.9.9"})),
            Need::Admin,
        ),
        (
            Method::PATCH,
            format!("/cameras/{missing}"),
            Some(json!({"name": "n"})),
            Need::Admin,
        ),
        (
            Method::DELETE,
            format!("/cameras/{missing}"),
            None,
            Need::Admin,
        ),
        (Method::GET, "/events".into(), None, Need::Viewer),
        (Method::GET, format!("/events/{ev}"), None, Need::Viewer),
        (
            Method::POST,
            "/events".into(),
            Some(json!({"cameraId": cam_id, "type": "ALERT"})),
            Need::Operator,
        ),
        (
            Method::PUT,
            format!("/events/{ev}/ack"),
            None,
            Need::Operator,
        ),
        (
            Method::POST,
            format!("/events/{ev}/end"),
            None,
            Need::Operator,
        ),
        (
            Method::DELETE,
            format!("/events/{missing}"),
            None,
            Need::Admin,
        ),
        (Method::GET, "/playbacks".into(), None, Need::Viewer),
        (Method::GET, format!("/playbacks/{pb}"), None, Need::Viewer),
        (
            Method::POST,
            format!("/playbacks/{pb}/stop"),
            None,
            Need::Operator,
        ),
        (
            Method::DELETE,
            format!("/playbacks/{missing}"),
            None,
            Need::Admin,
        ),
    ];
    for (method, path, body, need) in &routes {
        let (status, _) = app.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        for (role, token) in &tokens {
            let (status, resp) = app
                .call(method.clone(), path, Some(token), body.clone())
                .await;
            if role < need {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role:?}: {resp}"
                );
            } else {
                assert!(
                    status.is_success() || status == StatusCode::NOT_FOUND,
                    "{method} {path} as {role:?}: {status} {resp}"
                );
            }
        }
    }
}
