//! Ops routes: health, readiness, metrics, the OpenAPI document and the docs page.

use crate::support::spawn_app;
use reqwest::StatusCode;

#[tokio::test]
async fn health_ready_metrics_openapi_and_docs() {
    let app = spawn_app().await;
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.call(reqwest::Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nats"], "connected");

    let cam = app.camera("10.0.0.5", 1).await;
    app.motion(cam["id"].as_str().unwrap()).await;
    app.outbox_drained().await;
    let text = app.metrics_text().await;
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("route=\"/events\""), "{text}");
    assert!(text.contains("outbox_backlog"), "{text}");
    assert!(text.contains("outbox_published_total"), "{text}");

    let (status, doc) = app
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/users/profile",
        "/users",
        "/users/{id}",
        "/cameras",
        "/cameras/{id}",
        "/events",
        "/events/{id}",
        "/events/{id}/ack",
        "/events/{id}/end",
        "/playbacks",
        "/playbacks/{id}",
        "/playbacks/{id}/stop",
        "/health",
        "/ready",
        "/metrics",
        "/media/{key}",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let docs = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(docs.contains("/openapi.json"));

    let (status, body) = app
        .call(reqwest::Method::GET, "/no/such/route", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["statusCode"], 404);
}

#[tokio::test]
async fn serve_returns_after_a_graceful_shutdown() {
    let app = spawn_app().await;
    let base = app.base.clone();
    app.stop().await.expect("clean stop");
    assert!(reqwest::get(format!("{base}/health")).await.is_err());
}

#[tokio::test]
async fn nul_characters_are_refused_not_500() {
    let app = spawn_app().await;
    let (status, err) = app
        .post(
            "/cameras",
            serde_json::json!({"name": "a\u{0}b", "ipAddress": "10.0.0.1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "name");
    let (status, err) = app.get("/cameras?name=a%00b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "name");
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "/auth/login",
            None,
            Some(serde_json::json!({"username": "\u{0}", "password": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Every answer carries the security headers; the page's policy keeps scripts on this origin.
#[tokio::test]
async fn answers_carry_security_headers() {
    let app = spawn_app().await;
    for path in ["/health", "/cameras", "/no-such-route"] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
}
