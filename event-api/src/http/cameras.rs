//! `/cameras`. A camera's password is write-only: it is stored, put into `event.created`, and
//! never returned. The credential in a given `rtspUrl` is split into `username`/`password` and the
//! URL is stored without it; every response shows the URL masked (`rtsp://user:***@host/...`).

use super::auth::{Admin, AuthUser};
use super::error::ApiError;
use super::extract::{Body, Params, PathId, RequestBody};
use super::{AppState, PageJson};
use crate::captures::{CaptureBoard, CaptureStatus};
use crate::store::cameras::{CameraFields, CameraFilter, CameraRow, CameraSort};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use camrec_shared::messages::EventType;
use camrec_shared::netpolicy::PolicyError;
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::subjects::Site;
use camrec_shared::CameraId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A camera as the API shows it: no password, the RTSP URL masked; `captureStatus` only at
/// `/cameras` (not where a camera is nested into an event or a playback).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CameraJson {
    id: Uuid,
    name: String,
    ip_address: String,
    channel: i32,
    rtsp_port: i32,
    /// Masked: `rtsp://user:***@host/...`.
    rtsp_url: String,
    username: Option<String>,
    codec: Option<String>,
    resolution: Option<String>,
    vendor: Option<String>,
    enabled: bool,
    site: String,
    record_event_types: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Days its finished playbacks are kept; `null`: the global `RETENTION_DAYS` (unset: kept).
    retention_days: Option<i32>,
    /// Seconds of capture a clip holds before its event's moment (`occurredAt`).
    pre_roll_sec: i32,
    /// Seconds a clip holds after its event ended.
    post_roll_sec: i32,
    /// Which worker captures the camera and how it goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_status: Option<CaptureStatus>,
}

impl CameraJson {
    /// The camera with its `captureStatus` as the capture leases say at `now`.
    fn with_capture(c: &CameraRow, board: &CaptureBoard, now: DateTime<Utc>) -> Self {
        let mut json = Self::from(c);
        json.capture_status = Some(board.status(CameraId(c.id), c.enabled, now));
        json
    }
}

impl From<&CameraRow> for CameraJson {
    fn from(c: &CameraRow) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            ip_address: c.ip_address.clone(),
            channel: c.channel,
            rtsp_port: c.rtsp_port,
            rtsp_url: c.masked_rtsp_url(),
            username: c.username.clone(),
            codec: c.codec.clone(),
            resolution: c.resolution.clone(),
            vendor: c.vendor.clone(),
            enabled: c.enabled,
            site: c.site.clone(),
            record_event_types: c.record_event_types.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            retention_days: c.retention_days,
            pre_roll_sec: c.pre_roll_sec,
            post_roll_sec: c.post_roll_sec,
            capture_status: None,
        }
    }
}

/// `POST /cameras` and `PATCH /cameras/:id` (all fields optional on PATCH).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CameraInput {
    name: Option<String>,
    ip_address: Option<String>,
    channel: Option<i32>,
    rtsp_port: Option<i32>,
    /// `rtsp://` or `rtsps://`; a `user:password@` in it is moved to `username`/`password`.
    rtsp_url: Option<String>,
    username: Option<String>,
    /// Write-only.
    password: Option<String>,
    codec: Option<String>,
    resolution: Option<String>,
    /// `dahua`, `hikvision` or other: picks the URL path when `rtspUrl` is not given.
    vendor: Option<String>,
    enabled: Option<bool>,
    site: Option<String>,
    /// Which event types record on this camera (MOTION, ALERT, ERROR, MANUAL); default
    /// MOTION and MANUAL.
    #[schema(value_type = Option<Vec<String>>)]
    record_event_types: Option<Vec<EventType>>,
    /// 1 to 36500 days; `null`: the global `RETENTION_DAYS`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    retention_days: Option<Option<i32>>,
    /// 0 to 60 seconds of capture kept before an event's moment; default 5.
    #[schema(minimum = 0, maximum = 60)]
    pre_roll_sec: Option<u32>,
    /// 0 to 300 seconds recorded after an event's end; default 5.
    #[schema(minimum = 0, maximum = 300)]
    post_roll_sec: Option<u32>,
}

/// A field that is present (`null` included) is `Some`, so PATCH can tell `null` from absent.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

const CAMERA_FIELDS: &[&str] = &[
    "name",
    "ipAddress",
    "channel",
    "rtspPort",
    "rtspUrl",
    "username",
    "password",
    "codec",
    "resolution",
    "vendor",
    "enabled",
    "site",
    "recordEventTypes",
    "retentionDays",
    "preRollSec",
    "postRollSec",
];

/// The body of `POST /cameras`.
pub struct NewCamera(CameraInput);
/// The body of `PATCH /cameras/:id`.
pub struct CameraPatch(CameraInput);

impl<'de> Deserialize<'de> for NewCamera {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CameraInput::deserialize(d).map(NewCamera)
    }
}

impl<'de> Deserialize<'de> for CameraPatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CameraInput::deserialize(d).map(CameraPatch)
    }
}

impl RequestBody for NewCamera {
    const FIELDS: &'static [&'static str] = CAMERA_FIELDS;
    const REQUIRED: &'static [&'static str] = &["name"];
}

impl RequestBody for CameraPatch {
    const FIELDS: &'static [&'static str] = CAMERA_FIELDS;
    const REQUIRED: &'static [&'static str] = &[];
}

/// The URL path a vendor's cameras serve channel `channel` on.
pub fn vendor_path(vendor: Option<&str>, channel: i32) -> String {
    match vendor.map(str::to_ascii_lowercase).as_deref() {
        Some("dahua") => format!("/cam/realmonitor?channel={channel}&subtype=0"),
        Some("hikvision") => format!("/Streaming/Channels/{channel}01"),
        _ => "/".to_owned(),
    }
}

/// The URL of a camera given by address, port, channel and vendor (no credential).
pub fn build_url(ip: &str, port: i32, channel: i32, vendor: Option<&str>) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    format!("rtsp://{host}:{port}{}", vendor_path(vendor, channel))
}

fn check_ip(ip: &str) -> Result<String, ApiError> {
    let ip = ip.trim();
    let ok = !ip.is_empty()
        && ip.len() <= 253
        && (ip.parse::<std::net::IpAddr>().is_ok()
            || ip
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if ok {
        Ok(ip.to_owned())
    } else {
        Err(ApiError::invalid(
            "ipAddress",
            "must be an IP address or host name",
        ))
    }
}

/// A text field as stored: surrounding spaces trimmed, empty as absent, at most `max`
/// characters, and no control characters (a line break or a tab is refused, not rewritten).
fn check_text(field: &str, v: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match v.map(|s| s.trim_matches(' ').to_owned()) {
        Some(s) if s.chars().count() > max => Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(s) if s.chars().any(char::is_control) => Err(ApiError::invalid(
            field,
            "must not contain control characters (line breaks, tabs)",
        )),
        Some(s) if s.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Merges `input` onto `base` (a new camera's defaults, or the stored row) and validates the
/// result. `had_built_url` says whether the stored URL was built from its parts, in which case a
/// change of address, port, channel or vendor rebuilds it.
fn merge(
    mut base: CameraFields,
    input: CameraInput,
    had_built_url: bool,
) -> Result<CameraFields, ApiError> {
    let old_host = stream_host(&base.rtsp_url);
    if let Some(name) = check_text("name", input.name, 200)? {
        base.name = name;
    }
    if base.name.is_empty() {
        return Err(ApiError::invalid("name", "is required"));
    }
    if let Some(ch) = input.channel {
        if !(0..=10_000).contains(&ch) {
            return Err(ApiError::invalid("channel", "must be from 0 to 10000"));
        }
        base.channel = ch;
    }
    if let Some(port) = input.rtsp_port {
        if !(1..=65_535).contains(&port) {
            return Err(ApiError::invalid("rtspPort", "must be from 1 to 65535"));
        }
        base.rtsp_port = port;
    }
    if let Some(site) = input.site {
        base.site = Site::new(site.trim())
            .map_err(|e| ApiError::invalid("site", e.to_string()))?
            .to_string();
    }
    if let Some(types) = input.record_event_types {
        let mut names: Vec<String> = types.iter().map(|t| t.as_str().to_owned()).collect();
        names.sort();
        names.dedup();
        base.record_event_types = names;
    }
    if let Some(v) = input.enabled {
        base.enabled = v;
    }
    if let Some(days) = input.retention_days {
        if days.is_some_and(|d| !(1..=36_500).contains(&d)) {
            return Err(ApiError::invalid(
                "retentionDays",
                "must be from 1 to 36500, or null",
            ));
        }
        base.retention_days = days;
    }
    if let Some(sec) = input.pre_roll_sec {
        base.pre_roll_sec = roll("preRollSec", sec, MAX_PRE_ROLL_SEC)?;
    }
    if let Some(sec) = input.post_roll_sec {
        base.post_roll_sec = roll("postRollSec", sec, MAX_POST_ROLL_SEC)?;
    }
    let vendor_changed = input.vendor.is_some();
    let codec = check_text("codec", input.codec, 64)?;
    let resolution = check_text("resolution", input.resolution, 64)?;
    let vendor = check_text("vendor", input.vendor, 64)?;
    base.codec = codec.or(base.codec);
    base.resolution = resolution.or(base.resolution);
    base.vendor = vendor.or(base.vendor);
    let ip_given = input.ip_address.is_some();
    if let Some(ip) = input.ip_address {
        base.ip_address = check_ip(&ip)?;
    }
    let mut username = check_text("username", input.username, 128)?;
    let mut password = input.password.filter(|p| !p.is_empty());
    if password.as_ref().is_some_and(|p| p.len() > 256) {
        return Err(ApiError::invalid(
            "password",
            "must be at most 256 characters",
        ));
    }
    if password
        .as_ref()
        .is_some_and(|p| p.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "password",
            "must not contain control characters",
        ));
    }
    match input.rtsp_url {
        Some(raw) => {
            let url =
                RtspUrl::parse(&raw).map_err(|e| ApiError::invalid("rtspUrl", e.to_string()))?;
            username = username.or_else(|| url.username());
            password = password.or_else(|| url.password());
            if !ip_given {
                base.ip_address =
                    check_ip(url.host().trim_start_matches('[').trim_end_matches(']'))
                        .map_err(|_| ApiError::invalid("rtspUrl", "must name a valid host"))?;
            }
            if input.rtsp_port.is_none() {
                base.rtsp_port = i32::from(url.port());
            }
            base.rtsp_url = url.without_credentials().expose().to_owned();
        }
        None => {
            let parts_changed =
                ip_given || input.channel.is_some() || input.rtsp_port.is_some() || vendor_changed;
            if base.rtsp_url.is_empty() || (had_built_url && parts_changed) {
                if base.ip_address.is_empty() {
                    return Err(ApiError::invalid(
                        "ipAddress",
                        "is required when rtspUrl is not given",
                    ));
                }
                let built = build_url(
                    &base.ip_address,
                    base.rtsp_port,
                    base.channel,
                    base.vendor.as_deref(),
                );
                RtspUrl::parse(&built).map_err(|_| {
                    ApiError::invalid("ipAddress", "does not make a valid RTSP URL")
                })?;
                base.rtsp_url = built;
            }
        }
    }
    // The stored password opens the stored host only: whoever points the camera at another
    // host must give the password again, or could read it from their own server.
    let moved = old_host.is_some() && stream_host(&base.rtsp_url) != old_host;
    if moved && base.password.is_some() && password.is_none() {
        return Err(ApiError::invalid(
            "password",
            "is required when the camera moves to another host",
        ));
    }
    if username.is_some() {
        base.username = username;
    }
    if password.is_some() {
        base.password = password;
    }
    Ok(base)
}

/// The longest pre-roll a camera may keep, in seconds.
pub const MAX_PRE_ROLL_SEC: u32 = 60;
/// The longest post-roll a camera may record, in seconds.
pub const MAX_POST_ROLL_SEC: u32 = 300;
/// A new camera's pre-roll and post-roll, in seconds (the database's defaults too).
pub const DEFAULT_ROLL_SEC: i32 = 5;

/// `sec` as stored, when it is at most `max`.
fn roll(field: &str, sec: u32, max: u32) -> Result<i32, ApiError> {
    if sec > max {
        return Err(ApiError::invalid(
            field,
            format!("must be an integer from 0 to {max}"),
        ));
    }
    Ok(i32::try_from(sec).unwrap_or_default())
}

/// The host and port a stored URL connects to.
fn stream_host(url: &str) -> Option<(String, u16)> {
    let url = RtspUrl::parse(url).ok()?;
    Some((url.host().to_ascii_lowercase(), url.port()))
}

/// Refuses a camera whose address the network policy refuses (a name that does not resolve
/// here is let through: the worker, at the camera's site, checks again before every recording).
async fn check_network(
    state: &AppState,
    fields: &CameraFields,
    url_given: bool,
) -> Result<(), ApiError> {
    let Ok(url) = RtspUrl::parse(&fields.rtsp_url) else {
        return Ok(());
    };
    match state
        .config
        .camera_networks
        .check_host(url.host(), url.port())
        .await
    {
        Err(e @ PolicyError::Refused { .. }) => {
            let field = if url_given { "rtspUrl" } else { "ipAddress" };
            Err(ApiError::invalid(
                field,
                format!("{e} (CAMERA_ALLOWED_NETWORKS)"),
            ))
        }
        _ => Ok(()),
    }
}

/// Seals the password of `fields` for camera `id` when it is a new one (not the `stored`,
/// already sealed, value): the cleartext goes no further than this request.
fn seal_new_password(state: &AppState, id: Uuid, fields: &mut CameraFields, stored: Option<&str>) {
    if let Some(password) = fields.password.as_deref() {
        if Some(password) != stored {
            fields.password = Some(state.config.camera_keys.seal(id, password));
        }
    }
}

/// A camera as `/cameras` answers it, with its `captureStatus` now.
fn camera_json(state: &AppState, row: &CameraRow) -> CameraJson {
    CameraJson::with_capture(row, &state.captures, state.clock.now())
}

fn new_camera_defaults() -> CameraFields {
    CameraFields {
        name: String::new(),
        ip_address: String::new(),
        channel: 1,
        rtsp_port: 554,
        rtsp_url: String::new(),
        username: None,
        password: None,
        codec: None,
        resolution: None,
        vendor: None,
        enabled: true,
        site: Site::default().to_string(),
        record_event_types: vec!["MANUAL".to_owned(), "MOTION".to_owned()],
        retention_days: None,
        pre_roll_sec: DEFAULT_ROLL_SEC,
        post_roll_sec: DEFAULT_ROLL_SEC,
    }
}

#[utoipa::path(post, path = "/cameras", tag = "cameras", security(("bearer" = [])), request_body = CameraInput,
    responses((status = 201, body = CameraJson), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(NewCamera(input)): Body<NewCamera>,
) -> Result<(StatusCode, Json<CameraJson>), ApiError> {
    let url_given = input.rtsp_url.is_some();
    let mut fields = merge(new_camera_defaults(), input, false)?;
    check_network(&state, &fields, url_given).await?;
    let id = Uuid::now_v7();
    seal_new_password(&state, id, &mut fields, None);
    let row = state
        .store
        .create_camera(id, &fields, state.config.max_recording_sec)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    Ok((StatusCode::CREATED, Json(camera_json(&state, &row))))
}

#[utoipa::path(get, path = "/cameras", tag = "cameras", security(("bearer" = [])),
    params(
        ("enabled" = Option<bool>, Query), ("name" = Option<String>, Query, description = "substring"),
        ("ipAddress" = Option<String>, Query), ("channel" = Option<i32>, Query),
        ("site" = Option<String>, Query),
        ("createdFrom" = Option<String>, Query), ("createdTo" = Option<String>, Query),
        ("page" = Option<u32>, Query), ("pageSize" = Option<u32>, Query),
        ("sortBy" = Option<String>, Query, description = "name, ipAddress, channel, createdAt, updatedAt"),
        ("sortDir" = Option<String>, Query, description = "asc or desc")),
    responses((status = 200, body = PageJson<CameraJson>), (status = 400), (status = 401)))]
pub async fn list(
    State(state): State<AppState>,
    _user: AuthUser,
    params: Params,
) -> Result<Json<PageJson<CameraJson>>, ApiError> {
    let filter = CameraFilter {
        enabled: params.bool("enabled")?,
        name: params.string("name"),
        ip_address: params.string("ipAddress"),
        channel: params
            .int("channel", 0, 10_000)?
            .map(|c| i32::try_from(c).unwrap_or_default()),
        site: params.string("site"),
        created_from: params.time("createdFrom")?,
        created_to: params.time("createdTo")?,
    };
    let sort = params
        .one_of("sortBy", CameraSort::NAMES, CameraSort::parse)?
        .unwrap_or(CameraSort::CreatedAt);
    let descending = params
        .one_of("sortDir", "asc, desc", |s| {
            match s.to_ascii_lowercase().as_str() {
                "asc" => Some(false),
                "desc" => Some(true),
                _ => None,
            }
        })?
        .unwrap_or(true);
    let page = params.page()?;
    let rows = state
        .store
        .list_cameras(&filter, sort, descending, page)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    Ok(Json(PageJson::new(
        rows.rows.iter().map(|c| camera_json(&state, c)).collect(),
        rows.total,
        page,
    )))
}

#[utoipa::path(get, path = "/cameras/{id}", tag = "cameras", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = CameraJson), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    _user: AuthUser,
    PathId(id): PathId,
) -> Result<Json<CameraJson>, ApiError> {
    let row = state
        .store
        .camera(id)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    Ok(Json(camera_json(&state, &row)))
}

#[utoipa::path(patch, path = "/cameras/{id}", tag = "cameras", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = CameraInput,
    responses((status = 200, body = CameraJson), (status = 400), (status = 404), (status = 409)))]
pub async fn patch(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
    Body(CameraPatch(input)): Body<CameraPatch>,
) -> Result<Json<CameraJson>, ApiError> {
    let row = state
        .store
        .camera(id)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    let was_built = row.rtsp_url
        == build_url(
            &row.ip_address,
            row.rtsp_port,
            row.channel,
            row.vendor.as_deref(),
        );
    let url_given = input.rtsp_url.is_some();
    let stored_password = row.password.clone();
    let mut fields = merge(row.into(), input, was_built)?;
    check_network(&state, &fields, url_given).await?;
    seal_new_password(&state, id, &mut fields, stored_password.as_deref());
    let row = state
        .store
        .update_camera(id, &fields, state.config.max_recording_sec)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    Ok(Json(camera_json(&state, &row)))
}

#[utoipa::path(delete, path = "/cameras/{id}", tag = "cameras", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404), (status = 409, description = "the camera has events")))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_camera(id, state.config.max_recording_sec)
        .await
        .map_err(|e| ApiError::from_store("camera", e))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/cameras", get(list).post(create))
        .route("/cameras/{id}", get(get_one).patch(patch).delete(delete))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> CameraInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn urls_are_built_per_vendor() {
        assert_eq!(
            build_url("10.0.0.5", 554, 2, Some("Dahua")),
            "rtsp://10.0.0.5:554/cam/realmonitor?channel=2&subtype=0"
        );
        assert_eq!(
            build_url("10.0.0.5", 8554, 3, Some("hikvision")),
            "rtsp://10.0.0.5:8554/Streaming/Channels/301"
        );
        assert_eq!(
            build_url("cam.local", 554, 1, None),
            "rtsp://cam.local:554/"
        );
    }

    #[test]
    fn credentials_are_split_out_of_the_url() {
        let f = merge(
            new_camera_defaults(),
            input(serde_json::json!({"name": "gate", "rtspUrl": "rtsp://admin:s3cret@10.1.2.3:8554/live"})),
            false,
        )
        .unwrap();
        assert_eq!(f.rtsp_url, "rtsp://10.1.2.3:8554/live");
        assert_eq!(f.username.as_deref(), Some("admin"));
        assert_eq!(f.password.as_deref(), Some("s3cret"));
        assert_eq!((f.ip_address.as_str(), f.rtsp_port), ("10.1.2.3", 8554));
    }

    #[test]
    fn bad_input_names_the_field() {
        let field = |v| match merge(new_camera_defaults(), input(v), false) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(
            field(serde_json::json!({"name": "a", "rtspUrl": "http://x/"})),
            "rtspUrl"
        );
        assert_eq!(field(serde_json::json!({"name": "a"})), "ipAddress");
        assert_eq!(
            field(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4", "rtspPort": 0})),
            "rtspPort"
        );
        assert_eq!(
            field(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4", "site": "a b"})),
            "site"
        );
        assert_eq!(
            field(serde_json::json!({"name": "a", "ipAddress": "x/y"})),
            "ipAddress"
        );
        assert_eq!(
            field(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4", "preRollSec": 61})),
            "preRollSec"
        );
        assert_eq!(
            field(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4", "postRollSec": 301})),
            "postRollSec"
        );
    }

    #[test]
    fn rolls_default_to_five_seconds_and_take_their_bounds() {
        let base = json_fields(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4"}));
        assert_eq!((base.pre_roll_sec, base.post_roll_sec), (5, 5));
        let edge = json_fields(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4",
            "preRollSec": 60, "postRollSec": 300}));
        assert_eq!((edge.pre_roll_sec, edge.post_roll_sec), (60, 300));
        let zero = json_fields(serde_json::json!({"name": "a", "ipAddress": "1.2.3.4",
            "preRollSec": 0, "postRollSec": 0}));
        assert_eq!((zero.pre_roll_sec, zero.post_roll_sec), (0, 0));
    }

    fn json_fields(v: serde_json::Value) -> CameraFields {
        merge(new_camera_defaults(), input(v), false).unwrap_or_else(|_| panic!("valid"))
    }
}
