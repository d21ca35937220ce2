//! `spawn_app()`: a running event-api on port 0 with a fresh database, its own NATS server and a
//! local media directory, plus small HTTP helpers and JetStream readers.

use anyhow::Context;
use async_nats::jetstream;
use camrec_shared::capture::{CAMERAS_BUCKET, CAPTURES_BUCKET};
use camrec_shared::messages::{Envelope, PlaybackStatus, StatusBody};
use camrec_shared::subjects::{playback_subject, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use event_api::clock::Clock;
use event_api::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use testkit::{NatsServer, NatsUser, TestDb};
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const CAMERA_PASSWORD: &str = "Sup3rS3cretCamPw";

/// The key camera passwords are sealed with in these tests.
pub const CAMERA_KEY: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// Opens a sealed camera password as a worker would.
pub fn open_password(camera_id: &str, sealed: &str) -> String {
    camrec_shared::sealed::CameraKeys::parse(CAMERA_KEY, "")
        .unwrap()
        .open(camera_id.parse().unwrap(), sealed)
        .unwrap()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub pool: PgPool,
    pub nats: NatsServer,
    pub media_dir: tempfile::TempDir,
    pub config: Config,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<Result<(), event_api::Error>>>,
    // Dropped last: the database outlives the pool and the server.
    _db: TestDb,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Vec::new()).await
}

/// Like [`spawn_app`], with extra or overriding environment variables (e.g. S3 storage).
pub async fn spawn_app_with(env: Vec<(String, String)>) -> TestApp {
    try_spawn_app(env, Clock::system())
        .await
        .expect("spawn event-api")
}

/// Like [`spawn_app`], judging request times by `clock` (a manual one the test moves).
pub async fn spawn_app_with_clock(clock: Clock) -> TestApp {
    try_spawn_app(Vec::new(), clock)
        .await
        .expect("spawn event-api")
}

async fn try_spawn_app(env: Vec<(String, String)>, clock: Clock) -> anyhow::Result<TestApp> {
    camrec_shared::telemetry::init("warn");
    let db = TestDb::create().await?;
    let nats = NatsServer::start().await?;
    let media_dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL", db.url().to_owned()),
        ("DB_MAX_CONNECTIONS", "10".to_owned()),
        ("NATS_URL", nats.url_as(NatsUser::EventApi)),
        (
            "JWT_SECRET",
            "test-secret-0123456789abcdef-0123456789".to_owned(),
        ),
        ("CAMERA_SECRET_KEY", CAMERA_KEY.to_owned()),
        ("ADMIN_USERNAME", ADMIN.to_owned()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("STORAGE_MODE", "local".to_owned()),
        (
            "LOCAL_STORAGE_DIR",
            media_dir.path().to_string_lossy().into_owned(),
        ),
        ("MEDIA_BASE_URL", base.clone()),
        ("RECONCILE_INTERVAL_SEC", "3600".to_owned()),
    ])
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(env);
    let config = Config::from_lookup(|k| vars.get(k).cloned())?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(event_api::serve_with_clock(
        config.clone(),
        listener,
        shutdown.clone(),
        clock,
    ));
    let http = reqwest::Client::new();
    let login_url = format!("{base}/auth/login");
    let admin_token = testkit::wait_until(Duration::from_secs(30), "event-api login", || {
        let http = http.clone();
        let url = login_url.clone();
        async move {
            let resp = http
                .post(url)
                .json(&json!({"username": ADMIN, "password": ADMIN_PASSWORD}))
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            v["accessToken"].as_str().map(str::to_owned)
        }
    })
    .await?;
    let pool = PgPool::connect(db.url()).await.context("test pool")?;
    Ok(TestApp {
        base,
        http,
        admin_token,
        pool,
        nats,
        media_dir,
        config,
        shutdown,
        server: Some(server),
        _db: db,
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

impl TestApp {
    /// Cancels the shutdown token and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), event_api::Error> {
        self.shutdown.cancel();
        let server = self.server.take().expect("server running");
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
    }

    /// Sends a request; returns the status and the JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.admin_token), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.admin_token), Some(body))
            .await
    }

    /// Sends raw bytes as a JSON body.
    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a camera with a credential in its URL; returns its JSON. Its stream is
    /// `/live` for channel 1, `/live/ch<N>` for another channel (a camera is unique by its
    /// stream).
    pub async fn camera(&self, ip: &str, channel: i32) -> Value {
        let path = match channel {
            1 => "/live".to_owned(),
            n => format!("/live/ch{n}"),
        };
        let (status, body) = self
            .post(
                "/cameras",
                json!({
                    "name": format!("cam {ip}/{channel}"),
                    "rtspUrl": format!("rtsp://admin:{CAMERA_PASSWORD}@{ip}:554{path}"),
                    "channel": channel,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Creates a MOTION event on `camera_id`; returns the 201 body.
    pub async fn motion(&self, camera_id: &str) -> Value {
        let (status, body) = self
            .post("/events", json!({"cameraId": camera_id, "type": "MOTION"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A user with `role`, logged in; returns the access token.
    pub async fn token_for(&self, role: &str) -> String {
        let name = format!("{}-{}", role.to_lowercase(), uuid::Uuid::new_v4().simple());
        let (status, body) = self
            .post(
                "/users",
                json!({"username": name, "password": "password-123", "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"username": name, "password": "password-123"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["accessToken"].as_str().unwrap().to_owned()
    }

    /// JetStream as the test harness's administrator (inspects streams, plants messages).
    pub async fn js(&self) -> jetstream::Context {
        self.js_as(NatsUser::Admin).await
    }

    /// JetStream as `user`.
    pub async fn js_as(&self, user: NatsUser) -> jetstream::Context {
        let client = self.nats.connect_as(user).await.expect("nats");
        jetstream::new(client)
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits until the outbox has no unpublished row.
    pub async fn outbox_drained(&self) {
        testkit::wait_until(Duration::from_secs(30), "outbox drained", || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL",
            )
            .fetch_one(&self.pool)
            .await
            .ok()?;
            (n == 0).then_some(())
        })
        .await
        .expect("outbox drained");
    }

    /// Every message of `stream` whose subject starts with `prefix`: (subject, Nats-Msg-Id,
    /// payload).
    pub async fn stream_messages(
        &self,
        stream: &str,
        prefix: &str,
    ) -> Vec<(String, String, Value)> {
        let js = self.js().await;
        let mut s = js.get_stream(stream).await.expect("stream");
        let info = s.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        for seq in info.first_sequence..=info.last_sequence {
            let Ok(m) = s.get_raw_message(seq).await else {
                continue;
            };
            if !m.subject.as_str().starts_with(prefix) {
                continue;
            }
            let id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((
                m.subject.to_string(),
                id,
                serde_json::from_slice(&m.payload).expect("json payload"),
            ));
        }
        out
    }

    /// Publishes a status message for the playback of `event` (a `POST /events` body).
    pub async fn publish_status(&self, created: &Value, seq: u64, body: StatusBody) {
        self.publish_status_from(created, "test-worker", seq, body)
            .await
    }

    /// [`TestApp::publish_status`] as worker `worker_id` (with the site's worker NATS user).
    pub async fn publish_status_from(
        &self,
        created: &Value,
        worker_id: &str,
        seq: u64,
        body: StatusBody,
    ) {
        let event = created;
        let camera_id: CameraId = event["camera"]["id"].as_str().unwrap().parse().unwrap();
        let status = PlaybackStatus {
            playback_id: created["playbackId"]
                .as_str()
                .unwrap()
                .parse::<PlaybackId>()
                .unwrap(),
            event_id: event["id"].as_str().unwrap().parse::<EventId>().unwrap(),
            camera_id,
            site: Site::default(),
            worker_id: worker_id.into(),
            seq,
            takes_over_from: None,
            body,
        };
        let subject = playback_subject(status.body.kind(), &status.site, camera_id);
        let js = self.js_as(NatsUser::Worker).await;
        let payload = Envelope::new(chrono::Utc::now(), status).to_bytes();
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    /// The camera catalog (KV bucket `camrec_cameras`), once event-api has created it.
    pub async fn cameras_kv(&self) -> jetstream::kv::Store {
        let js = self.js().await;
        testkit::wait_until(Duration::from_secs(20), "the cameras bucket", || async {
            js.get_key_value(CAMERAS_BUCKET).await.ok()
        })
        .await
        .expect("cameras bucket")
    }

    /// The capture leases (KV bucket `camrec_captures`), once event-api has created it.
    pub async fn captures_kv(&self) -> jetstream::kv::Store {
        let js = self.js().await;
        testkit::wait_until(Duration::from_secs(20), "the captures bucket", || async {
            js.get_key_value(CAPTURES_BUCKET).await.ok()
        })
        .await
        .expect("captures bucket")
    }

    /// The spec of `camera` (a camera JSON) at site `site` in the catalog, as JSON, or `None`.
    pub async fn spec(&self, site: &str, camera: &Value) -> Option<Value> {
        let key = format!("{site}.{}", camera["id"].as_str().unwrap());
        let value = self.cameras_kv().await.get(key).await.expect("kv get")?;
        Some(serde_json::from_slice(&value).expect("spec json"))
    }

    /// Waits until the spec of `camera` at `site` satisfies `check`; returns it.
    pub async fn wait_spec(
        &self,
        site: &str,
        camera: &Value,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        testkit::wait_until(Duration::from_secs(20), what, || async {
            self.spec(site, camera).await.filter(|s| check(s))
        })
        .await
        .expect(what)
    }

    /// Waits until `GET /playbacks/:id` satisfies `check`.
    pub async fn wait_playback(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        testkit::wait_until(Duration::from_secs(20), what, || async {
            let (status, body) = self.get(&format!("/playbacks/{id}")).await;
            (status == StatusCode::OK && check(&body)).then_some(body)
        })
        .await
        .expect(what)
    }

    /// Reports the playback of `created` (a `POST /events` answer) `recording` as its worker
    /// would (status `seq` 1, started now) and waits until the API shows it `RECORDING`;
    /// returns that playback.
    pub async fn recording(&self, created: &Value) -> Value {
        let started_at = chrono::Utc::now();
        self.publish_status(created, 1, StatusBody::Recording { started_at })
            .await;
        let id = created["playbackId"].as_str().expect("a playback");
        self.wait_playback(id, "recording", |p| p["recordingStatus"] == "RECORDING")
            .await
    }
}
