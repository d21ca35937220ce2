//! `/webhooks`: signed deliveries to a real local receiver that checks the HMAC, idempotency of
//! redelivered messages, retries of a receiver that fails, a hanging receiver that holds up no
//! other, death after 24 h (time moved, not waited for), and validation of every field.

use crate::support::{spawn_app, spawn_app_with, TestApp};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use camrec_shared::messages::{CompletedClip, StatusBody};
use chrono::Utc;
use event_api::store::Store;
use event_api::webhooks::{deliver_due, NetworkPolicy, Sender};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec-0123456789abcdef";

/// How a test receiver answers.
#[derive(Clone, Copy)]
enum Mode {
    Ok,
    /// 500 to the first request, 200 afterwards.
    FailFirst,
    /// Never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    delivery: String,
    event: String,
    signature_ok: bool,
    body: Value,
}

struct Inner {
    mode: Mode,
    seen: Mutex<Vec<Received>>,
}

/// A local HTTP receiver on 127.0.0.1:0 that verifies `X-Camrec-Signature` with [`SECRET`] and
/// records every request; stopped on drop.
struct Receiver {
    url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `header` is `t=<t>,v1=<hex HMAC-SHA256(SECRET, "<t>.<body>")>`.
fn verify(header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(v1) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn hook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = {
        let mut seen = inner.seen.lock().unwrap();
        seen.push(Received {
            delivery: header("x-camrec-delivery"),
            event: header("x-camrec-event"),
            signature_ok: verify(&header("x-camrec-signature"), &body),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        seen.len()
    };
    match inner.mode {
        Mode::Ok => AxumStatus::OK,
        Mode::FailFirst if n == 1 => AxumStatus::INTERNAL_SERVER_ERROR,
        Mode::FailFirst => AxumStatus::NO_CONTENT,
        Mode::Hang => std::future::pending().await,
    }
}

impl Receiver {
    async fn start(mode: Mode) -> Self {
        let inner = Arc::new(Inner {
            mode,
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    fn seen(&self) -> Vec<Received> {
        self.inner.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        testkit::wait_until(Duration::from_secs(20), "webhook requests", || async {
            let seen = self.seen();
            (seen.len() >= n).then_some(seen)
        })
        .await
        .expect("webhook requests")
    }
}

fn clip(pb: &str) -> StatusBody {
    StatusBody::Completed(CompletedClip {
        object_key: format!("playbacks/{pb}/video.mp4"),
        url: None,
        thumb_key: None,
        size_bytes: 4321,
        duration_sec: 3.5,
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
        segment_list_key: Some(format!("playbacks/{pb}/index.m3u8")),
    })
}

fn lab_env(timeout_sec: u64) -> Vec<(String, String)> {
    vec![
        ("WEBHOOK_ALLOWED_NETWORKS".into(), "127.0.0.0/8".into()),
        ("WEBHOOK_TIMEOUT_SEC".into(), timeout_sec.to_string()),
    ]
}

async fn create_webhook(app: &TestApp, url: &str, events: Value) -> Value {
    let (status, body) = app
        .post(
            "/webhooks",
            json!({"url": url, "secret": SECRET, "events": events}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// The only delivery of `webhook`, once `check` holds for it.
async fn wait_delivery(
    app: &TestApp,
    webhook: &Value,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/webhooks/{}/deliveries", webhook["id"].as_str().unwrap());
    testkit::wait_until(Duration::from_secs(20), what, || async {
        let (status, body) = app.get(&path).await;
        let d = body["data"][0].clone();
        (status == StatusCode::OK && check(&d)).then_some(d)
    })
    .await
    .expect(what)
}

async fn direct_store(app: &TestApp) -> Store {
    Store::connect(app.config.database_url.expose(), 2)
        .await
        .expect("store")
}

#[tokio::test]
async fn a_completed_playback_is_delivered_once_signed_to_a_verifying_receiver() {
    let app = spawn_app_with(lab_env(10)).await;
    let receiver = Receiver::start(Mode::Ok).await;
    let hook = create_webhook(&app, &receiver.url, json!(["playback.completed"])).await;
    assert_eq!(hook["hasSecret"], true);
    assert!(hook.get("secret").is_none(), "{hook}");
    let (_, shown) = app
        .get(&format!("/webhooks/{}", hook["id"].as_str().unwrap()))
        .await;
    assert!(!shown.to_string().contains(SECRET), "{shown}");

    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    app.publish_status(
        &created,
        1,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    app.publish_status(&created, 2, clip(&pb)).await;
    // The same message again (a worker's retry): the delivery exists already.
    app.publish_status(&created, 2, clip(&pb)).await;

    let seen = receiver.wait_for(1).await;
    let r = &seen[0];
    assert!(r.signature_ok, "signature must verify");
    assert_eq!(r.event, "playback.completed");
    assert_eq!(r.body["type"], "playback.completed");
    assert_eq!(r.body["messageId"], format!("{pb}:2"));
    assert_eq!(r.body["playback"]["id"], pb.as_str());
    assert_eq!(r.body["playback"]["status"], "COMPLETED");
    assert_eq!(r.body["playback"]["clip"]["sizeBytes"], 4321);
    assert_eq!(
        r.body["playback"]["clip"]["segmentListKey"],
        format!("playbacks/{pb}/index.m3u8")
    );
    let d = wait_delivery(&app, &hook, "delivered", |d| d["status"] == "DELIVERED").await;
    assert_eq!(d["id"].as_str().unwrap(), r.delivery);
    assert_eq!(
        (d["attempts"].as_i64(), d["statusCode"].as_i64()),
        (Some(1), Some(200))
    );

    // Everything the projector applied has been through the webhook consumer too: the duplicate
    // and the recording status (not subscribed) added nothing.
    app.wait_playback(&pb, "completed", |p| p["recordingStatus"] == "COMPLETED")
        .await;
    testkit::wait_until(Duration::from_secs(20), "consumer caught up", || async {
        let js = app.js().await;
        let stream = js.get_stream("PLAYBACKS").await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(event_api::webhooks::CONSUMER)
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await
    .expect("consumer caught up");
    let (_, page) = app
        .get(&format!(
            "/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_a_hanging_one_holds_up_no_other_and_dies_after_a_day() {
    let app = spawn_app_with(lab_env(5)).await;
    let flaky = Receiver::start(Mode::FailFirst).await;
    let hanging = Receiver::start(Mode::Hang).await;
    let good = Receiver::start(Mode::Ok).await;
    let events = json!(["playback.completed", "playback.failed"]);
    let flaky_hook = create_webhook(&app, &flaky.url, events.clone()).await;
    let hanging_hook = create_webhook(&app, &hanging.url, events.clone()).await;
    let good_hook = create_webhook(&app, &good.url, events).await;

    let cam = app.camera("10.0.0.5", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    app.publish_status(&created, 1, clip(&pb)).await;

    wait_delivery(&app, &good_hook, "good delivered", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    let (_, hung) = app
        .get(&format!(
            "/webhooks/{}/deliveries",
            hanging_hook["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        hung["data"][0]["attempts"], 0,
        "the hanging receiver's first attempt is still open: {hung}"
    );
    let failed = wait_delivery(&app, &flaky_hook, "flaky failed once", |d| {
        d["attempts"] == 1
    })
    .await;
    assert_eq!(failed["status"], "PENDING");
    assert_eq!(failed["statusCode"], 500);
    assert_eq!(failed["lastError"], "HTTP 500");
    let timed_out = wait_delivery(&app, &hanging_hook, "hanging timed out", |d| {
        d["attempts"] == 1
    })
    .await;
    assert_eq!(timed_out["status"], "PENDING");
    assert!(timed_out["statusCode"].is_null());
    assert_eq!(timed_out["lastError"], "no answer within 5 s");

    // An hour later both are due again (the background sender would wait the real 10 s).
    let store = direct_store(&app).await;
    let sender = Sender::new(
        NetworkPolicy::new(camrec_shared::netpolicy::NetworkPolicy::parse("127.0.0.0/8").unwrap()),
        Duration::from_secs(1),
    )
    .unwrap();
    let t0 = Utc::now();
    let sent = deliver_due(&store, &sender, t0 + chrono::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(sent, 2, "the flaky and the hanging deliveries");
    let retried = wait_delivery(&app, &flaky_hook, "flaky delivered", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(
        (retried["attempts"].as_i64(), retried["statusCode"].as_i64()),
        (Some(2), Some(204))
    );
    let both = flaky.seen();
    assert_eq!(both.len(), 2);
    assert!(both.iter().all(|r| r.signature_ok));
    assert_eq!(
        both[0].delivery, both[1].delivery,
        "one idempotency key across retries"
    );
    assert_eq!(both[0].body, both[1].body, "the same body every time");

    // A day after its first attempt the hanging one is given up.
    let sent = deliver_due(&store, &sender, t0 + chrono::Duration::hours(25), 10)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let dead = wait_delivery(&app, &hanging_hook, "dead", |d| d["status"] == "DEAD").await;
    assert_eq!(dead["attempts"], 3);
    assert!(dead["nextAttemptAt"].is_null());
    assert_eq!(good.seen().len(), 1);
}

#[tokio::test]
async fn webhook_fields_are_validated_by_name_and_only_admins_manage_them() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let ok =
        json!({"url": "http://10.9.9.9/hook", "secret": SECRET, "events": ["playback.failed"]});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    for (body, field) in [
        (with("url", json!("http://127.0.0.1:9/hook")), "url"),
        (with("url", json!("http://169.254.169.254/latest")), "url"),
        (with("url", json!("http://[::1]/hook")), "url"),
        (with("url", json!("ftp://10.9.9.9/")), "url"),
        (with("url", json!("http://user:pw@10.9.9.9/")), "url"),
        (with("url", json!(5)), "url"),
        (without("url"), "url"),
        (with("secret", json!("short")), "secret"),
        (without("secret"), "secret"),
        (with("events", json!([])), "events"),
        (with("events", json!(["playback.progress"])), "events"),
        (with("events", json!("playback.failed")), "events"),
        (with("cameraIds", json!([])), "cameraIds"),
        (
            with("cameraIds", json!([uuid::Uuid::now_v7()])),
            "cameraIds",
        ),
        (with("enabled", json!("yes")), "enabled"),
        (with("color", json!("red")), "color"),
    ] {
        let (status, resp) = app.post("/webhooks", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {resp}");
        assert!(
            resp["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body} -> {resp}"
        );
    }
    let (status, hook) = app
        .post("/webhooks", with("cameraIds", json!([cam["id"]])))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert_eq!(hook["cameraIds"], json!([cam["id"]]));
    let path = format!("/webhooks/{}", hook["id"].as_str().unwrap());
    let admin = Some(app.admin_token.as_str());
    let (status, patched) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"cameraIds": null, "enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched["cameraIds"].is_null());
    assert_eq!(patched["enabled"], false);
    let (status, resp) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"url": "http://localhost/x"})),
        )
        .await;
    assert_eq!(
        (status, resp["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("url"))
    );

    let operator = app.token_for("OPERATOR").await;
    for (method, p) in [(Method::GET, "/webhooks"), (Method::GET, path.as_str())] {
        let (status, _) = app.call(method, p, Some(&operator), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = app.call(Method::DELETE, &path, admin, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("{path}/deliveries")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
