//! The lab's REST client of event-api: only the calls a user makes in the scenario (log in,
//! create cameras, create and end events) and the reads the checker needs (`/playbacks` pages).

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
    #[error("{method} {path} answered {status}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
    },
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

/// A playback as `GET /playbacks` shows it (the fields the checker reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackView {
    pub id: Uuid,
    pub recording_status: String,
    pub file_size_bytes: Option<u64>,
    pub duration_sec: Option<f64>,
    pub error_code: Option<String>,
    pub event: Option<IdOnly>,
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

    /// `POST /cameras` with the camera's credentialed URL (sent, never printed); returns its id.
    pub async fn create_camera(
        &self,
        name: &str,
        url: &RtspUrl,
        channel: i32,
    ) -> Result<Uuid, ApiError> {
        let body = json!({ "name": name, "rtspUrl": url.expose(), "channel": channel });
        let resp = self.post("/cameras").json(&body).send().await?;
        let cam: IdOnly = check("POST", "/cameras", resp)?.json().await?;
        Ok(cam.id)
    }

    /// `POST /events` of a `MOTION` event. Only a 201 counts as acknowledged.
    pub async fn create_event(&self, camera_id: Uuid) -> Result<CreatedEvent, ApiError> {
        let body = json!({ "cameraId": camera_id, "type": "MOTION", "description": "lab" });
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
