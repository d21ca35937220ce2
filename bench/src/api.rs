//! The bench's REST client of event-api: log in once, create cameras on a chosen site and read
//! their capture status, create and end events, read one playback.

use camrec_shared::rtsp::RtspUrl;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

/// A logged-in client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

/// The answer to `POST /events`: the event at the top level, with its playback.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEvent {
    pub id: Uuid,
    pub playback_id: Option<Uuid>,
    /// The event's moment (the request time when the request gave none).
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

/// The rolls a camera is created with.
#[derive(Clone, Copy, Debug)]
pub struct Rolls {
    pub pre_roll_sec: u32,
    pub post_roll_sec: u32,
}

/// The `captureStatus` of `GET /cameras/:id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureView {
    /// `capturing`, `connecting`, `unreachable`, `disk_full`, `unassigned`, `disabled`.
    pub state: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CameraView {
    capture_status: Option<CaptureView>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct IdOnly {
    pub id: Uuid,
}

/// The fields of `GET /playbacks/:id` the bench reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackView {
    pub recording_status: String,
    pub progress: Option<ProgressView>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProgressView {
    pub frames: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    access_token: String,
}

async fn ok(
    what: impl Into<String>,
    resp: reqwest::Response,
) -> Result<reqwest::Response, ApiError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Err(ApiError::Status {
        what: what.into(),
        status,
        body: body.chars().take(300).collect(),
    })
}

impl Api {
    /// `POST /auth/login`.
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        let resp = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        let tokens: Tokens = ok("POST /auth/login", resp).await?.json().await?;
        Ok(Self {
            base: base.to_owned(),
            token: tokens.access_token,
            http,
        })
    }

    /// `POST /cameras` on `site` with the camera's credentialed URL and its rolls; returns its
    /// id. The fake cameras share one address, so each gets its own `channel` (unique with the
    /// address).
    pub async fn create_camera(
        &self,
        name: &str,
        url: &RtspUrl,
        channel: i32,
        site: &str,
        rolls: Rolls,
    ) -> Result<Uuid, ApiError> {
        let body = json!({
            "name": name,
            "rtspUrl": url.expose(),
            "channel": channel,
            "site": site,
            "preRollSec": rolls.pre_roll_sec,
            "postRollSec": rolls.post_roll_sec,
        });
        let resp = self.post("/cameras").json(&body).send().await?;
        let cam: IdOnly = ok("POST /cameras", resp).await?.json().await?;
        Ok(cam.id)
    }

    /// `POST /events` of `event_type`.
    pub async fn create_event(
        &self,
        camera_id: Uuid,
        event_type: &str,
    ) -> Result<CreatedEvent, ApiError> {
        let resp = self
            .post("/events")
            .json(&json!({ "cameraId": camera_id, "type": event_type }))
            .send()
            .await?;
        Ok(ok("POST /events", resp).await?.json().await?)
    }

    /// `POST /events/:id/end`.
    pub async fn end_event(&self, event_id: Uuid) -> Result<(), ApiError> {
        let resp = self.post(&format!("/events/{event_id}/end")).send().await?;
        ok("POST /events/:id/end", resp).await?;
        Ok(())
    }

    /// The `captureStatus` of `GET /cameras/:id`.
    pub async fn capture_status(&self, id: Uuid) -> Result<Option<CaptureView>, ApiError> {
        let resp = self
            .http
            .get(format!("{}/cameras/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let camera: CameraView = ok("GET /cameras/:id", resp).await?.json().await?;
        Ok(camera.capture_status)
    }

    /// `GET /playbacks/:id`.
    pub async fn playback(&self, id: Uuid) -> Result<PlaybackView, ApiError> {
        let resp = self
            .http
            .get(format!("{}/playbacks/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(ok("GET /playbacks/:id", resp).await?.json().await?)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}
