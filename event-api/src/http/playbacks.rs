//! `/playbacks`: recordings and their clips. URLs are computed at read time from the object keys
//! (a public URL, a fresh signed URL, or this service's `/media/` route in local mode), so a
//! signed URL is never stale in the database.

use super::auth::{Admin, AuthUser, Operator, Role};
use super::cameras::CameraJson;
use super::error::ApiError;
use super::events::{EndResponse, NestedEventJson};
use super::extract::{Params, PathId};
use super::live::{has_live_view, live_url};
use super::{AppState, PageJson};
use crate::store::cameras::CameraRow;
use crate::store::events::EventRow;
use crate::store::playbacks::{PlaybackFilter, PlaybackRow, PlaybackState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use camrec_shared::storage::ObjectKey;
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Live figures of a recording in progress.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressJson {
    frames: Option<i64>,
    bitrate_kbps: Option<f64>,
    media_time_sec: Option<f64>,
}

/// An interval inside a clip where the camera delivered nothing; the clip skips it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GapJson {
    /// Wall-clock time of the last frame before the gap.
    from: DateTime<Utc>,
    /// Wall-clock time of the first frame after the gap.
    to: DateTime<Utc>,
}

/// A playback as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackJson {
    id: Uuid,
    recording_status: PlaybackState,
    video_url: Option<String>,
    thumbnail_url: Option<String>,
    /// The live view: an HLS playlist (fragmented MP4) of the clip's segments as they are
    /// uploaded, a few seconds behind the camera, from the pre-roll on; closed
    /// (`#EXT-X-ENDLIST`) after the end and valid until the playback is deleted. A signed URL
    /// that expires after `SIGNED_URL_TTL_SEC`. Present while RECORDING or PROCESSING and once
    /// COMPLETED.
    #[serde(skip_serializing_if = "Option::is_none")]
    live_url: Option<String>,
    /// A number (the old API sent a string).
    file_size_bytes: Option<i64>,
    duration_sec: Option<f64>,
    codec: Option<String>,
    audio_codec: Option<String>,
    /// `WIDTHxHEIGHT`, probed from the clip.
    resolution: Option<String>,
    sha256: Option<String>,
    /// True when the clip was cut short (camera lost, worker crash).
    partial: bool,
    /// Wall-clock time of the clip's first frame (from the capture once COMPLETED; while
    /// RECORDING, when the recording started).
    started_at: Option<DateTime<Utc>>,
    /// Wall-clock time of the clip's last frame (from the capture once COMPLETED).
    ended_at: Option<DateTime<Utc>>,
    /// The intervals inside the clip where the camera delivered nothing, oldest first.
    gaps: Vec<GapJson>,
    /// True when the capture did not hold the event's whole pre-roll (the camera was just added,
    /// or its worker just took it over): the clip starts at the oldest frame held.
    started_late: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    error_code: Option<String>,
    error_message: Option<String>,
    /// Present while RECORDING.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<ProgressJson>,
    event: Option<NestedEventJson>,
    camera: Option<CameraJson>,
}

async fn url_of(state: &AppState, key: Option<&str>) -> Result<Option<String>, ApiError> {
    match key.and_then(ObjectKey::parse) {
        Some(key) => crate::media::object_url(state, &key).await.map(Some),
        None => Ok(None),
    }
}

async fn playback_json(
    state: &AppState,
    p: &PlaybackRow,
    event: Option<&EventRow>,
    camera: Option<&CameraRow>,
) -> Result<PlaybackJson, ApiError> {
    let video_key = p
        .video_key
        .as_ref()
        .map(|_| ObjectKey::Video(PlaybackId(p.id)).to_string());
    Ok(PlaybackJson {
        id: p.id,
        recording_status: p.status,
        video_url: url_of(state, video_key.as_deref()).await?,
        thumbnail_url: url_of(state, p.thumb_key.as_deref()).await?,
        live_url: has_live_view(p.status).then(|| live_url(state, PlaybackId(p.id))),
        file_size_bytes: p.file_size_bytes,
        duration_sec: p.duration_sec,
        codec: p.codec.clone(),
        audio_codec: p.audio_codec.clone(),
        resolution: p.width.zip(p.height).map(|(w, h)| format!("{w}x{h}")),
        sha256: p.sha256.clone(),
        partial: p.partial,
        started_at: p.started_at,
        ended_at: p.ended_at,
        gaps: p
            .gaps
            .iter()
            .map(|g| GapJson {
                from: g.from,
                to: g.to,
            })
            .collect(),
        started_late: p.started_late,
        created_at: p.created_at,
        updated_at: p.updated_at,
        error_code: p.error_code.clone(),
        error_message: p.error_message.clone(),
        progress: (p.status == PlaybackState::Recording).then_some(ProgressJson {
            frames: p.frames,
            bitrate_kbps: p.bitrate_kbps,
            media_time_sec: p.media_time_sec,
        }),
        event: event.map(|e| NestedEventJson::new(e, camera)),
        camera: camera.map(CameraJson::from),
    })
}

/// Nests events and cameras into playbacks (two queries for the whole page).
/// What a VIEWER reads of a failure: its code's short reason. The full message (the worker's
/// words, FFmpeg's among them) can tell an open port from a closed one; operators see it.
fn short_reason(code: Option<&str>) -> Option<String> {
    let reason = match code? {
        "camera_unreachable" => "the camera could not be reached",
        "recording_failed" => "the recording failed",
        "no_media" => "nothing playable was recorded",
        "probe_failed" => "the clip could not be read",
        "upload_failed" => "the clip could not be stored",
        "ended_before_start" => "the event ended before the recording started",
        "worker_lost" => "the recorder stopped reporting",
        "not_started" => "no recorder started the recording",
        "deleted" => "the recording was deleted",
        "undeliverable" => "the recording request could not be delivered",
        _ => "the recording failed",
    };
    Some(reason.to_owned())
}

/// The playbacks as `user` may read them: below OPERATOR, failures say only their short reason.
fn for_role(mut json: Vec<PlaybackJson>, user: &AuthUser) -> Vec<PlaybackJson> {
    if user.role < Role::Operator {
        for p in &mut json {
            p.error_message = short_reason(p.error_code.as_deref());
        }
    }
    json
}

async fn to_json(state: &AppState, rows: &[PlaybackRow]) -> Result<Vec<PlaybackJson>, ApiError> {
    let event_ids: Vec<Uuid> = rows.iter().map(|p| p.event_id).collect();
    let mut camera_ids: Vec<Uuid> = rows.iter().map(|p| p.camera_id).collect();
    camera_ids.sort();
    camera_ids.dedup();
    let events: HashMap<Uuid, EventRow> = state
        .store
        .events_by_ids(&event_ids)
        .await
        .map_err(|e| ApiError::from_store("event", e))?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let cameras: HashMap<Uuid, CameraRow> = state
        .store
        .cameras_by_ids(&camera_ids)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for p in rows {
        out.push(
            playback_json(state, p, events.get(&p.event_id), cameras.get(&p.camera_id)).await?,
        );
    }
    Ok(out)
}

#[utoipa::path(get, path = "/playbacks", tag = "playbacks", security(("bearer" = [])),
    params(("eventId" = Option<Uuid>, Query), ("cameraId" = Option<Uuid>, Query),
        ("recordingStatus" = Option<String>, Query, description = "PENDING, RECORDING, PROCESSING, COMPLETED, FAILED"),
        ("startedFrom" = Option<String>, Query), ("startedTo" = Option<String>, Query),
        ("page" = Option<u32>, Query), ("pageSize" = Option<u32>, Query)),
    responses((status = 200, body = PageJson<PlaybackJson>), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    params: Params,
) -> Result<Json<PageJson<PlaybackJson>>, ApiError> {
    let filter = PlaybackFilter {
        event_id: params.uuid("eventId")?,
        camera_id: params.uuid("cameraId")?,
        status: params.one_of(
            "recordingStatus",
            "PENDING, RECORDING, PROCESSING, COMPLETED, FAILED",
            |s| PlaybackState::parse(&s.to_ascii_uppercase()),
        )?,
        started_from: params.time("startedFrom")?,
        started_to: params.time("startedTo")?,
    };
    let page = params.page()?;
    let rows = state
        .store
        .list_playbacks(&filter, page)
        .await
        .map_err(|e| ApiError::from_store("playback", e))?;
    Ok(Json(PageJson::new(
        for_role(to_json(&state, &rows.rows).await?, &user),
        rows.total,
        page,
    )))
}

#[utoipa::path(get, path = "/playbacks/{id}", tag = "playbacks", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = PlaybackJson), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<PlaybackJson>, ApiError> {
    let row = state
        .store
        .playback(id)
        .await
        .map_err(|e| ApiError::from_store("playback", e))?;
    let mut json = for_role(to_json(&state, std::slice::from_ref(&row)).await?, &user);
    json.pop().map(Json).ok_or(ApiError::NotFound("playback"))
}

#[utoipa::path(post, path = "/playbacks/{id}/stop", tag = "playbacks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndResponse, description = "ends the playback's event; idempotent"), (status = 404)))]
pub async fn stop(
    State(state): State<AppState>,
    _op: Operator,
    PathId(id): PathId,
) -> Result<Json<EndResponse>, ApiError> {
    let s = state
        .store
        .stop_playback(id)
        .await
        .map_err(|e| ApiError::from_store("playback", e))?;
    Ok(Json(s.into()))
}

#[utoipa::path(delete, path = "/playbacks/{id}", tag = "playbacks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "a running recording is stopped first; the clip's objects are deleted"),
        (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_playback(id)
        .await
        .map_err(|e| ApiError::from_store("playback", e))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/playbacks", get(list))
        .route("/playbacks/{id}", get(get_one).delete(delete))
        .route("/playbacks/{id}/stop", post(stop))
}
