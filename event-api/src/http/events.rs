//! `/events`. Creating an event of a type its camera records starts a recording in the
//! background: the store writes the event, a `PENDING` playback and the `event.created` outbox
//! row in one transaction, and the outbox relay publishes it. Ending is idempotent.

use super::auth::{Admin, AuthUser, Operator};
use super::cameras::CameraJson;
use super::error::ApiError;
use super::extract::{Body, Params, PathId, RequestBody};
use super::{AppState, PageJson};
use crate::store::cameras::CameraRow;
use crate::store::events::{EndState, EventFilter, EventRow, NewEvent};
use crate::store::playbacks::PlaybackState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use camrec_shared::messages::{EndReason, EventType};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// An event as the API shows it, its camera nested (masked).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    id: Uuid,
    camera: CameraJson,
    /// The camera's channel (the old API's name).
    #[serde(rename = "nChannelID")]
    n_channel_id: i32,
    #[serde(rename = "type")]
    event_type: String,
    description: Option<String>,
    ack: bool,
    created_at: DateTime<Utc>,
    /// The moment of the event (`occurredAt` of `POST /events`, default the request time): its
    /// clip starts the camera's `preRollSec` before it.
    occurred_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// Why it ended: `ended`, `playback_stopped`, `deleted`, or `max_duration` (the recording
    /// reached the camera's maximum duration).
    end_reason: Option<String>,
    playback_id: Option<Uuid>,
}

impl EventJson {
    pub fn new(e: &EventRow, camera: &CameraRow) -> Self {
        Self {
            id: e.id,
            camera: camera.into(),
            n_channel_id: camera.channel,
            event_type: e.event_type.clone(),
            description: e.description.clone(),
            ack: e.ack,
            created_at: e.created_at,
            occurred_at: e.occurred_at,
            ended_at: e.ended_at,
            end_reason: e.end_reason.clone(),
            playback_id: e.playback_id,
        }
    }
}

/// An event nested in a playback (its camera is nested in the playback itself).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NestedEventJson {
    id: Uuid,
    #[serde(rename = "nChannelID")]
    n_channel_id: Option<i32>,
    #[serde(rename = "type")]
    event_type: String,
    description: Option<String>,
    ack: bool,
    created_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

impl NestedEventJson {
    pub fn new(e: &EventRow, camera: Option<&CameraRow>) -> Self {
        Self {
            id: e.id,
            n_channel_id: camera.map(|c| c.channel),
            event_type: e.event_type.clone(),
            description: e.description.clone(),
            ack: e.ack,
            created_at: e.created_at,
            occurred_at: e.occurred_at,
            ended_at: e.ended_at,
        }
    }
}

/// One event with its camera nested, as a response body.
async fn one(state: &AppState, row: EventRow) -> Result<Json<EventJson>, ApiError> {
    let mut json = to_json(state, std::slice::from_ref(&row)).await?;
    json.pop().map(Json).ok_or(ApiError::NotFound("event"))
}

/// Nests cameras into events.
async fn to_json(state: &AppState, rows: &[EventRow]) -> Result<Vec<EventJson>, ApiError> {
    let mut ids: Vec<Uuid> = rows.iter().map(|e| e.camera_id).collect();
    ids.sort();
    ids.dedup();
    let cameras: HashMap<Uuid, CameraRow> = state
        .store
        .cameras_by_ids(&ids)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    rows.iter()
        .map(|e| {
            cameras
                .get(&e.camera_id)
                .map(|c| EventJson::new(e, c))
                .ok_or_else(|| ApiError::Internal(format!("event {} has no camera", e.id)))
        })
        .collect()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateEvent {
    camera_id: Uuid,
    /// MOTION, ALERT, ERROR or MANUAL.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    event_type: EventType,
    description: Option<String>,
    /// When the event happened (RFC 3339), at most 5 s ahead of and 5 min behind the server's
    /// clock; default: the time of the request.
    #[schema(value_type = Option<String>, format = DateTime)]
    occurred_at: Option<String>,
}

impl RequestBody for CreateEvent {
    const FIELDS: &'static [&'static str] = &["cameraId", "type", "description", "occurredAt"];
    const REQUIRED: &'static [&'static str] = &["cameraId", "type"];
}

/// The answer of `POST /events`: the event itself at the top level, as the old Camera API
/// answered (its `playbackId` is null when the camera does not record this event type), and
/// beside its fields the status of the recording it started.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedEvent {
    #[serde(flatten)]
    event: EventJson,
    /// `PENDING` when a recording was requested; null otherwise.
    recording_status: Option<PlaybackState>,
}

/// The answer of `POST /events/:id/end` and `POST /playbacks/:id/stop`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndResponse {
    ok: bool,
    event_id: Uuid,
    playback_id: Option<Uuid>,
    recording_status: Option<PlaybackState>,
}

impl From<EndState> for EndResponse {
    fn from(s: EndState) -> Self {
        Self {
            ok: true,
            event_id: s.event_id,
            playback_id: s.playback_id,
            recording_status: s.recording_status,
        }
    }
}

/// How far ahead of the server's clock `occurredAt` may be (clocks of triggers drift).
pub const MAX_OCCURRED_AHEAD: chrono::Duration = chrono::Duration::seconds(5);
/// How far behind the server's clock `occurredAt` may be (a trigger that reached the API late).
pub const MAX_OCCURRED_BEHIND: chrono::Duration = chrono::Duration::minutes(5);

/// The moment of a new event: `given` (RFC 3339) within the bounds around `now`, or `now`;
/// truncated to the microseconds PostgreSQL stores.
fn occurred_at(given: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let Some(given) = given else {
        return Ok(now.trunc_subsecs(6));
    };
    let at = DateTime::parse_from_rfc3339(given)
        .map_err(|_| ApiError::invalid("occurredAt", "must be an RFC 3339 date-time"))?
        .with_timezone(&Utc);
    if at > now + MAX_OCCURRED_AHEAD {
        return Err(ApiError::invalid(
            "occurredAt",
            "must be at most 5 seconds in the future",
        ));
    }
    if at < now - MAX_OCCURRED_BEHIND {
        return Err(ApiError::invalid(
            "occurredAt",
            "must be at most 5 minutes in the past",
        ));
    }
    Ok(at.trunc_subsecs(6))
}

#[utoipa::path(post, path = "/events", tag = "events", security(("bearer" = [])), request_body = CreateEvent,
    responses((status = 201, body = CreatedEvent), (status = 400), (status = 404, description = "no such camera"),
        (status = 409, description = "the camera is disabled")))]
pub async fn create(
    State(state): State<AppState>,
    _op: Operator,
    Body(req): Body<CreateEvent>,
) -> Result<(StatusCode, Json<CreatedEvent>), ApiError> {
    let description = match req.description.map(|d| d.trim().to_owned()) {
        Some(d) if d.chars().count() > 2000 => {
            return Err(ApiError::invalid(
                "description",
                "must be at most 2000 characters",
            ))
        }
        Some(d) if d.is_empty() => None,
        other => other,
    };
    let occurred_at = occurred_at(req.occurred_at.as_deref(), state.clock.now())?;
    let new = NewEvent {
        camera_id: req.camera_id,
        event_type: req.event_type,
        description,
        occurred_at,
    };
    let (event, camera) = state
        .store
        .create_event(&new, state.config.max_recording_sec)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    if let Some(playback_id) = event.playback_id {
        tracing::info!(event_id = %event.id, %playback_id, camera_id = %camera.id, "recording requested");
    }
    Ok((
        StatusCode::CREATED,
        Json(CreatedEvent {
            recording_status: event.recording_status,
            event: EventJson::new(&event, &camera),
        }),
    ))
}

#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    params(("cameraId" = Option<Uuid>, Query), ("nChannelID" = Option<i32>, Query),
        ("type" = Option<String>, Query), ("ack" = Option<bool>, Query),
        ("createdFrom" = Option<String>, Query), ("createdTo" = Option<String>, Query),
        ("page" = Option<u32>, Query), ("pageSize" = Option<u32>, Query)),
    responses((status = 200, body = PageJson<EventJson>), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    _user: AuthUser,
    params: Params,
) -> Result<Json<PageJson<EventJson>>, ApiError> {
    let filter = EventFilter {
        camera_id: params.uuid("cameraId")?,
        channel: params
            .int("nChannelID", 0, 10_000)?
            .map(|c| i32::try_from(c).unwrap_or_default()),
        event_type: params.one_of("type", "MOTION, ALERT, ERROR, MANUAL", EventType::parse)?,
        ack: params.bool("ack")?,
        created_from: params.time("createdFrom")?,
        created_to: params.time("createdTo")?,
    };
    let page = params.page()?;
    let rows = state
        .store
        .list_events(&filter, page)
        .await
        .map_err(|e| ApiError::from_store("event", e))?;
    Ok(Json(PageJson::new(
        to_json(&state, &rows.rows).await?,
        rows.total,
        page,
    )))
}

#[utoipa::path(get, path = "/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = EventJson), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<EventJson>, ApiError> {
    let row = state
        .store
        .event(id)
        .await
        .map_err(|e| ApiError::from_store("event", e))?;
    one(&state, row).await
}

#[utoipa::path(put, path = "/events/{id}/ack", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = EventJson), (status = 404)))]
pub async fn ack(
    State(state): State<AppState>,
    _op: Operator,
    PathId(id): PathId,
) -> Result<Json<EventJson>, ApiError> {
    let row = state
        .store
        .ack_event(id)
        .await
        .map_err(|e| ApiError::from_store("event", e))?;
    one(&state, row).await
}

#[utoipa::path(post, path = "/events/{id}/end", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndResponse, description = "idempotent: a second call answers the current state"),
        (status = 404)))]
pub async fn end(
    State(state): State<AppState>,
    _op: Operator,
    PathId(id): PathId,
) -> Result<Json<EndResponse>, ApiError> {
    let s = state
        .store
        .end_event(id, EndReason::Ended)
        .await
        .map_err(|e| ApiError::from_store("event", e))?;
    Ok(Json(s.into()))
}

#[utoipa::path(delete, path = "/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "ended first when open; its playback is deleted too"), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_event(id)
        .await
        .map_err(|e| ApiError::from_store("event", e))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(list).post(create))
        .route("/events/{id}", get(get_one).delete(delete))
        .route("/events/{id}/ack", put(ack))
        .route("/events/{id}/end", post(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<DateTime<Utc>, ApiError>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn occurred_at_is_bounded_around_the_request_time() {
        let now: DateTime<Utc> = "2026-06-01T12:00:00.1234567Z".parse().unwrap();
        assert_eq!(occurred_at(None, now).unwrap(), now.trunc_subsecs(6));
        let ok = |s: &str| occurred_at(Some(s), now).unwrap();
        assert_eq!(
            ok("2026-06-01T12:00:05.1234567Z"),
            now.trunc_subsecs(6) + MAX_OCCURRED_AHEAD
        );
        assert_eq!(
            ok("2026-06-01T13:00:00.1234567+01:00"),
            now.trunc_subsecs(6)
        );
        ok("2026-06-01T11:55:00.1234567Z");
        for bad in [
            "2026-06-01T12:00:05.1234568Z",
            "2026-06-01T11:55:00.1234566Z",
            "2026-06-01",
            "yesterday",
        ] {
            assert_eq!(field_of(occurred_at(Some(bad), now)), "occurredAt", "{bad}");
        }
    }
}
