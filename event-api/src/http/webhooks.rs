//! `/webhooks` (ADMIN): receivers of signed playback notifications and their deliveries. The
//! secret is write-only: stored, used to sign, never returned (`hasSecret` says it is set). A
//! URL must pass the network policy (`crate::webhooks::NetworkPolicy`) when it is saved, and
//! again at every send.

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{Body, Params, PathId, RequestBody};
use super::{AppState, PageJson};
use crate::store::webhooks::{DeliveryRow, WebhookFields, WebhookRow};
use crate::webhooks::{NetworkPolicy, EVENT_TYPES};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A webhook as the API shows it: never its secret.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookJson {
    id: Uuid,
    url: String,
    events: Vec<String>,
    /// `null`: every camera.
    camera_ids: Option<Vec<Uuid>>,
    enabled: bool,
    /// Always true: the secret is write-only.
    has_secret: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&WebhookRow> for WebhookJson {
    fn from(w: &WebhookRow) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            events: w.events.clone(),
            camera_ids: w.camera_ids.clone(),
            enabled: w.enabled,
            has_secret: !w.secret.is_empty(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// One delivery of a notification to a webhook.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJson {
    /// Also the request's `X-Camrec-Delivery` header: the receiver's idempotency key.
    id: Uuid,
    /// The status message notified: `<playbackId>:<seq>`.
    message_id: String,
    event_type: String,
    /// `PENDING` (due at `nextAttemptAt`), `DELIVERED` or `DEAD` (given up 24 h after the first
    /// attempt).
    status: String,
    attempts: i32,
    /// The HTTP status of the last answer, if there was one.
    status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    first_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<&DeliveryRow> for DeliveryJson {
    fn from(d: &DeliveryRow) -> Self {
        Self {
            id: d.id,
            message_id: d.message_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            status_code: d.status_code,
            last_error: d.last_error.clone(),
            next_attempt_at: (d.status == "PENDING").then_some(d.next_attempt_at),
            first_attempt_at: d.first_attempt_at,
            last_attempt_at: d.last_attempt_at,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
        }
    }
}

/// `POST /webhooks` and `PATCH /webhooks/:id` (all fields optional on PATCH).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookInput {
    /// `http` or `https`; its host must not resolve to a loopback, link-local, unspecified or
    /// multicast address outside `WEBHOOK_ALLOWED_NETWORKS`.
    url: Option<String>,
    /// Write-only: the HMAC-SHA256 key of `X-Camrec-Signature`, 16 to 256 characters.
    secret: Option<String>,
    /// Any of `playback.recording`, `playback.processing`, `playback.completed`,
    /// `playback.failed`.
    events: Option<Vec<String>>,
    /// Only these cameras; absent or `null`: every camera.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<Uuid>>)]
    camera_ids: Option<Option<Vec<Uuid>>>,
    enabled: Option<bool>,
}

/// A field that is present (`null` included) is `Some`, so PATCH can tell `null` from absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

const WEBHOOK_FIELDS: &[&str] = &["url", "secret", "events", "cameraIds", "enabled"];

/// The body of `POST /webhooks`.
pub struct NewWebhook(WebhookInput);
/// The body of `PATCH /webhooks/:id`.
pub struct WebhookPatch(WebhookInput);

impl<'de> Deserialize<'de> for NewWebhook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WebhookInput::deserialize(d).map(NewWebhook)
    }
}

impl<'de> Deserialize<'de> for WebhookPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WebhookInput::deserialize(d).map(WebhookPatch)
    }
}

impl RequestBody for NewWebhook {
    const FIELDS: &'static [&'static str] = WEBHOOK_FIELDS;
    const REQUIRED: &'static [&'static str] = &["url", "secret", "events"];
}

impl RequestBody for WebhookPatch {
    const FIELDS: &'static [&'static str] = WEBHOOK_FIELDS;
    const REQUIRED: &'static [&'static str] = &[];
}

const MAX_CAMERAS: usize = 1000;

fn check_secret(secret: String) -> Result<String, ApiError> {
    let n = secret.chars().count();
    if !(16..=256).contains(&n) {
        return Err(ApiError::invalid("secret", "must be 16 to 256 characters"));
    }
    if secret.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "secret",
            "must not contain control characters",
        ));
    }
    Ok(secret)
}

fn check_events(mut events: Vec<String>) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "must name at least one event type",
        ));
    }
    if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(ApiError::invalid(
            "events",
            format!(
                "{:?} is not one of {}",
                bad.chars().take(64).collect::<String>(),
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    events.sort();
    events.dedup();
    Ok(events)
}

async fn check_cameras(
    state: &AppState,
    ids: Option<Vec<Uuid>>,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(mut ids) = ids else {
        return Ok(None);
    };
    if ids.is_empty() || ids.len() > MAX_CAMERAS {
        return Err(ApiError::invalid(
            "cameraIds",
            format!("must list 1 to {MAX_CAMERAS} cameras (null: every camera)"),
        ));
    }
    ids.sort();
    ids.dedup();
    let unknown = state
        .store
        .unknown_cameras(&ids)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    match unknown.first() {
        Some(id) => Err(ApiError::invalid(
            "cameraIds",
            format!("camera {id} does not exist"),
        )),
        None => Ok(Some(ids)),
    }
}

async fn check_url(policy: &NetworkPolicy, url: &str) -> Result<String, ApiError> {
    policy
        .check_url(url.trim())
        .await
        .map(|u| u.to_string())
        .map_err(|e| ApiError::invalid("url", e.to_string()))
}

/// Merges `input` onto `base` (empty for a new webhook) and validates every given field.
async fn merge(
    state: &AppState,
    mut base: WebhookFields,
    input: WebhookInput,
) -> Result<WebhookFields, ApiError> {
    if let Some(url) = input.url {
        base.url = check_url(&policy(state), &url).await?;
    }
    if let Some(secret) = input.secret {
        base.secret = check_secret(secret)?;
    }
    if let Some(events) = input.events {
        base.events = check_events(events)?;
    }
    if let Some(ids) = input.camera_ids {
        base.camera_ids = check_cameras(state, ids).await?;
    }
    if let Some(enabled) = input.enabled {
        base.enabled = enabled;
    }
    Ok(base)
}

fn policy(state: &AppState) -> NetworkPolicy {
    NetworkPolicy::new(state.config.webhook_allowed_networks.clone())
}

#[utoipa::path(post, path = "/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = WebhookInput,
    responses((status = 201, body = WebhookJson), (status = 400), (status = 403)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(NewWebhook(input)): Body<NewWebhook>,
) -> Result<(StatusCode, Json<WebhookJson>), ApiError> {
    let empty = WebhookFields {
        url: String::new(),
        secret: String::new(),
        events: Vec::new(),
        camera_ids: None,
        enabled: true,
    };
    let fields = merge(&state, empty, input).await?;
    let row = state
        .store
        .create_webhook(&fields)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok((StatusCode::CREATED, Json((&row).into())))
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("page" = Option<u32>, Query), ("pageSize" = Option<u32>, Query)),
    responses((status = 200, body = PageJson<WebhookJson>), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    params: Params,
) -> Result<Json<PageJson<WebhookJson>>, ApiError> {
    let page = params.page()?;
    let rows = state
        .store
        .list_webhooks(page)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok(Json(PageJson::new(
        rows.rows.iter().map(WebhookJson::from).collect(),
        rows.total,
        page,
    )))
}

#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = WebhookJson), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<Json<WebhookJson>, ApiError> {
    let row = state
        .store
        .webhook(id)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok(Json((&row).into()))
}

#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = WebhookInput,
    responses((status = 200, body = WebhookJson), (status = 400), (status = 404)))]
pub async fn patch(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
    Body(WebhookPatch(input)): Body<WebhookPatch>,
) -> Result<Json<WebhookJson>, ApiError> {
    let row = state
        .store
        .webhook(id)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    let fields = merge(&state, row.into(), input).await?;
    let row = state
        .store
        .update_webhook(id, &fields)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok(Json((&row).into()))
}

#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "its pending deliveries are dropped"), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_webhook(id)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("page" = Option<u32>, Query), ("pageSize" = Option<u32>, Query)),
    responses((status = 200, body = PageJson<DeliveryJson>), (status = 404)))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
    params: Params,
) -> Result<Json<PageJson<DeliveryJson>>, ApiError> {
    let page = params.page()?;
    state
        .store
        .webhook(id)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    let rows = state
        .store
        .deliveries(id, page)
        .await
        .map_err(|e| ApiError::from_store("webhook", e))?;
    Ok(Json(PageJson::new(
        rows.rows.iter().map(DeliveryJson::from).collect(),
        rows.total,
        page,
    )))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(get_one).patch(patch).delete(delete))
        .route("/webhooks/{id}/deliveries", get(deliveries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn secrets_and_events_are_validated_by_name() {
        assert_eq!(field_of(check_secret("short".into())), "secret");
        assert_eq!(field_of(check_secret("a\n".repeat(10))), "secret");
        assert!(check_secret("0123456789abcdef".into()).is_ok());
        assert_eq!(field_of(check_events(vec![])), "events");
        assert_eq!(
            field_of(check_events(vec!["playback.progress".into()])),
            "events"
        );
        assert_eq!(
            check_events(vec![
                "playback.failed".into(),
                "playback.completed".into(),
                "playback.failed".into()
            ])
            .unwrap(),
            ["playback.completed", "playback.failed"]
        );
    }

    #[test]
    fn patch_tells_null_cameras_from_absent() {
        let absent: WebhookInput = serde_json::from_str("{}").unwrap();
        assert!(absent.camera_ids.is_none());
        let null: WebhookInput = serde_json::from_str(r#"{"cameraIds":null}"#).unwrap();
        assert_eq!(null.camera_ids, Some(None));
    }
}
