//! The lab's REST client of event-api: only the calls a user makes in the scenario (log in,
//! create cameras, create and end events), the camera's `captureStatus` the scenario waits on,
//! and the reads the checker needs (`/playbacks` pages).

use camrec_shared::rtsp::RtspUrl;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{method} {path} answered {status}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
    },
    #[error("{path} answered without {field}")]
    Missing { path: String, field: &'static str },
}

/// How long one request may take (event-api may be down: a refused or hung call fails fast).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in client.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

/// The answer to `POST /events`: the event at the top level, with its playback.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEvent {
    pub id: Uuid,
    pub playback_id: Option<Uuid>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct IdOnly {
    pub id: Uuid,
}

/// A camera's clip window around each of its events: `preRollSec` and `postRollSec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rolls {
    pub pre_sec: u32,
    pub post_sec: u32,
}

/// The event nested in a playback (the fields the coverage check reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NestedEvent {
    pub id: Uuid,
    pub occurred_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// An interval inside a clip where the camera delivered nothing.
#[derive(Clone, Debug, Deserialize)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Gap {
    pub fn seconds(&self) -> f64 {
        (self.to - self.from).as_seconds_f64()
    }
}

/// A playback as `GET /playbacks` shows it (the fields the checker reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackView {
    pub id: Uuid,
    pub recording_status: String,
    pub file_size_bytes: Option<u64>,
    pub duration_sec: Option<f64>,
    pub error_code: Option<String>,
    pub event: Option<NestedEvent>,
    /// Wall-clock time of the clip's first frame, from the capture.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Wall-clock time of the clip's last frame, from the capture.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub gaps: Vec<Gap>,
    #[serde(default)]
    pub started_late: bool,
    /// The clip does not hold its whole window (a gap, or cut short).
    #[serde(default)]
    pub partial: bool,
}

/// `captureStatus` of a camera (the field the scenario waits on).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureStatusView {
    pub state: String,
    pub worker_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CameraView {
    capture_status: Option<CaptureStatusView>,
}

impl PlaybackView {
    pub fn is_terminal(&self) -> bool {
        matches!(self.recording_status.as_str(), "COMPLETED" | "FAILED")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    data: Vec<T>,
    total_pages: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    access_token: String,
}

impl Api {
    /// `POST /auth/login`.
    pub async fn login(base: &str, username: &str, password: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let resp = http
            .post(format!("{base}/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        let tokens: Tokens = check("POST", "/auth/login", resp)?.json().await?;
        Ok(Self {
            base: base.to_owned(),
            http,
            token: tokens.access_token,
        })
    }

    /// `POST /cameras` with the camera's credentialed URL (sent, never printed) and its rolls
    /// (event-api's defaults when `None`); returns its id.
    pub async fn create_camera(
        &self,
        name: &str,
        url: &RtspUrl,
        channel: i32,
        rolls: Option<Rolls>,
    ) -> Result<Uuid, ApiError> {
        let mut body = json!({ "name": name, "rtspUrl": url.expose(), "channel": channel });
        if let Some(r) = rolls {
            body["preRollSec"] = json!(r.pre_sec);
            body["postRollSec"] = json!(r.post_sec);
        }
        let resp = self.post("/cameras").json(&body).send().await?;
        let cam: IdOnly = check("POST", "/cameras", resp)?.json().await?;
        Ok(cam.id)
    }

    /// `GET /cameras/:id`: its `captureStatus`.
    pub async fn capture_status(&self, camera_id: Uuid) -> Result<CaptureStatusView, ApiError> {
        let path = format!("/cameras/{camera_id}");
        let resp = self.get(&path).send().await?;
        let cam: CameraView = check("GET", &path, resp)?.json().await?;
        cam.capture_status.ok_or(ApiError::Missing {
            path,
            field: "captureStatus",
        })
    }

    /// `POST /events` of a `MOTION` event, with its `occurredAt` when given (RFC 3339, to the
    /// microsecond). Only a 201 counts as acknowledged.
    pub async fn create_event(
        &self,
        camera_id: Uuid,
        occurred_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedEvent, ApiError> {
        let mut body = json!({ "cameraId": camera_id, "type": "MOTION", "description": "lab" });
        if let Some(at) = occurred_at {
            body["occurredAt"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
        let resp = self.post("/events").json(&body).send().await?;
        if resp.status() != reqwest::StatusCode::CREATED {
            return Err(ApiError::Status {
                method: "POST",
                path: "/events".into(),
                status: resp.status().as_u16(),
            });
        }
        Ok(resp.json().await?)
    }

    /// `POST /events/:id/end` (idempotent, so the caller may retry it).
    pub async fn end_event(&self, event_id: Uuid) -> Result<(), ApiError> {
        let path = format!("/events/{event_id}/end");
        let resp = self.post(&path).send().await?;
        check("POST", &path, resp)?;
        Ok(())
    }

    /// `GET /playbacks/:id`.
    pub async fn playback(&self, id: Uuid) -> Result<PlaybackView, ApiError> {
        let path = format!("/playbacks/{id}");
        let resp = self.get(&path).send().await?;
        Ok(check("GET", &path, resp)?.json().await?)
    }

    /// Every playback, page by page (`GET /playbacks?page=&pageSize=100`).
    pub async fn all_playbacks(&self) -> Result<Vec<PlaybackView>, ApiError> {
        let mut out = Vec::new();
        let mut page = 1u64;
        loop {
            let path = format!("/playbacks?page={page}&pageSize=100");
            let resp = self.get(&path).send().await?;
            let p: Page<PlaybackView> = check("GET", &path, resp)?.json().await?;
            out.extend(p.data);
            if page >= p.total_pages {
                return Ok(out);
            }
            page += 1;
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

fn check(
    method: &'static str,
    path: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, ApiError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(ApiError::Status {
            method,
            path: path.to_owned(),
            status: resp.status().as_u16(),
        })
    }
}
