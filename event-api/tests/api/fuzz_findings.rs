//! What the schemathesis fuzz run (`scripts/api-fuzz.sh`) found, one regression test each: an
//! answer must be one the OpenAPI document declares for its operation, with the body it declares.

use crate::support::{spawn_app, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The document's declaration of `status` for `method path`, if any.
fn declared<'a>(doc: &'a Value, method: &str, path: &str, status: StatusCode) -> Option<&'a Value> {
    doc["paths"][path][method]["responses"]
        .get(status.as_str())
        .filter(|r| r.is_object())
}

/// Sends the request and checks that its answer is `want`, that the document declares `want`
/// for the operation, with the error body's schema, and that the body has that shape.
async fn answers_as_declared(
    app: &TestApp,
    doc: &Value,
    (method, template, path): (Method, &str, &str),
    token: Option<&str>,
    body: Option<Value>,
    want: StatusCode,
) {
    let (status, answer) = app.call(method.clone(), path, token, body).await;
    assert_eq!(status, want, "{method} {path}: {answer}");
    let method = method.as_str().to_lowercase();
    let declaration = declared(doc, &method, template, status)
        .unwrap_or_else(|| panic!("{method} {template} does not declare {status}"));
    assert_eq!(
        declaration["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody",
        "{method} {template} {status}"
    );
    assert_eq!(answer["statusCode"], status.as_u16(), "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
}

#[tokio::test]
async fn answers_without_a_token_are_declared_401() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let id = "01a24a43-75a5-748e-b804-328159d6c3b2";
    for (method, template) in [
        (Method::GET, "/events/{id}"),
        (Method::PUT, "/events/{id}/ack"),
        (Method::POST, "/playbacks/{id}/stop"),
        (Method::DELETE, "/cameras/{id}"),
        (Method::GET, "/webhooks/{id}/deliveries"),
    ] {
        let path = template.replace("{id}", id);
        let op = (method, template, path.as_str());
        answers_as_declared(&app, &doc, op, None, None, StatusCode::UNAUTHORIZED).await;
    }
    let body = json!({"username": "u1", "password": "a long enough password", "role": "VIEWER"});
    let op = (Method::POST, "/users", "/users");
    answers_as_declared(&app, &doc, op, None, Some(body), StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn malformed_ids_and_bodies_are_declared_400() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    let token = Some(app.admin_token.as_str());
    for (method, template, path) in [
        (Method::GET, "/webhooks/{id}", "/webhooks/%C2%B0"),
        (Method::PUT, "/events/{id}/ack", "/events/%C2%B0/ack"),
        (Method::POST, "/playbacks/{id}/stop", "/playbacks/x/stop"),
        (Method::PATCH, "/cameras/{id}", "/cameras/x"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({}));
        let op = (method, template, path);
        answers_as_declared(&app, &doc, op, token, body, StatusCode::BAD_REQUEST).await;
    }
    for (template, body) in [
        ("/auth/refresh", json!({"refreshToken": 1})),
        ("/auth/logout", json!([])),
        ("/cameras", json!({"name": "x", "unknown": 1})),
    ] {
        let op = (Method::POST, template, template);
        answers_as_declared(&app, &doc, op, token, Some(body), StatusCode::BAD_REQUEST).await;
    }
}
