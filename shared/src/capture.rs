//! The contract of the per-camera capture: which cameras exist (the camera catalog, written by
//! event-api) and which worker captures each of them (the capture lease, written by workers).
//!
//! | KV bucket          | key                     | value          | written by                | read by              |
//! |--------------------|-------------------------|----------------|---------------------------|----------------------|
//! | `camrec_cameras`   | `<site>.<camera_id>`    | [`CameraSpec`] | event-api's outbox relay  | the workers of `<site>` |
//! | `camrec_captures`  | `<camera_id>`           | [`CaptureLease`] | the worker capturing it | event-api            |
//!
//! event-api never writes the cameras bucket through the KV API: it publishes the spec to
//! `$KV.camrec_cameras.<site>.<camera_id>` from its outbox, in the transaction that changed the
//! camera, so the bucket follows the database. A deleted camera, or the old key of a camera moved
//! to another site, gets a spec with `deleted: true`, so a watcher sees the camera go.
//! Both values are JSON; readers ignore unknown fields.

use crate::ids::CameraId;
use crate::rtsp::RtspUrl;
use crate::subjects::Site;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The KV bucket of camera specs, keyed `<site>.<camera_id>`.
pub const CAMERAS_BUCKET: &str = "camrec_cameras";
/// The KV bucket of capture leases, keyed `<camera_id>`.
pub const CAPTURES_BUCKET: &str = "camrec_captures";
/// The captures bucket's `max_age`: a lease not renewed for this long disappears. Readers treat a
/// lease whose `renewed_at` is older than 1.5 × this as gone (see [`CaptureLease::is_stale`]).
pub const CAPTURE_LEASE_TTL: Duration = Duration::from_secs(10);

/// A camera as the workers of its site need it to capture it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraSpec {
    pub camera_id: CameraId,
    pub site: Site,
    pub name: String,
    /// The stream URL with the username but never the password (as in `event.created`).
    pub rtsp_url: RtspUrl,
    /// The password, sealed for this camera (`crate::sealed::CameraKeys`); absent when none.
    #[serde(default)]
    pub password_sealed: Option<String>,
    /// A disabled camera is not captured.
    pub enabled: bool,
    /// The camera was deleted, or moved away from this key's site: stop capturing it.
    pub deleted: bool,
    /// Seconds of capture kept before an event's moment.
    pub pre_roll_sec: u32,
    /// Seconds captured after an event's end.
    pub post_roll_sec: u32,
    /// The longest recording of an event on this camera.
    pub max_duration_sec: u32,
    /// When the camera last changed; a newer spec replaces an older one.
    pub updated_at: DateTime<Utc>,
}

impl CameraSpec {
    /// This spec's key in [`CAMERAS_BUCKET`]: `<site>.<camera_id>`.
    pub fn key(&self) -> String {
        camera_key(&self.site, self.camera_id)
    }

    /// Whether a worker of the spec's site should capture the camera.
    pub fn wants_capture(&self) -> bool {
        self.enabled && !self.deleted
    }
}

/// `<site>.<camera_id>`: a camera's key in [`CAMERAS_BUCKET`].
pub fn camera_key(site: &Site, camera_id: CameraId) -> String {
    format!("{site}.{camera_id}")
}

/// The subject event-api publishes a camera's spec to: `$KV.camrec_cameras.<site>.<camera_id>`.
pub fn camera_spec_subject(site: &Site, camera_id: CameraId) -> String {
    format!("$KV.{CAMERAS_BUCKET}.{}", camera_key(site, camera_id))
}

/// The key filter of one site's cameras, for a watch: `<site>.>`.
pub fn site_cameras_filter(site: &Site) -> String {
    format!("{site}.>")
}

/// A key that is not `<site>.<camera_id>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a camera key")]
pub struct InvalidCameraKey;

/// Parses a key of [`CAMERAS_BUCKET`] into its site and camera.
pub fn parse_camera_key(key: &str) -> Result<(Site, CameraId), InvalidCameraKey> {
    let (site, camera) = key.split_once('.').ok_or(InvalidCameraKey)?;
    let site = Site::new(site).map_err(|_| InvalidCameraKey)?;
    let camera_id = camera.parse().map_err(|_| InvalidCameraKey)?;
    Ok((site, camera_id))
}

/// What the worker holding a camera is doing with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureState {
    /// Opening (or reopening) the RTSP session.
    Connecting,
    /// Frames are arriving and written to the ring.
    Capturing,
    /// The camera cannot be reached; the worker keeps retrying.
    Unreachable,
    /// The worker's disk is full: no new segments are written.
    DiskFull,
}

impl CaptureState {
    pub const ALL: [CaptureState; 4] = [
        CaptureState::Connecting,
        CaptureState::Capturing,
        CaptureState::Unreachable,
        CaptureState::DiskFull,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureState::Connecting => "connecting",
            CaptureState::Capturing => "capturing",
            CaptureState::Unreachable => "unreachable",
            CaptureState::DiskFull => "disk_full",
        }
    }
}

/// The value of a camera's key in [`CAPTURES_BUCKET`]: which worker captures it, and how it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureLease {
    /// The holder's `WORKER_ID`.
    pub worker_id: String,
    pub site: Site,
    pub state: CaptureState,
    /// The last connection or capture error; never holds a credential (the worker scrubs it).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Since when `state` holds.
    pub since: DateTime<Utc>,
    /// The last renewal; the holder renews well within [`CAPTURE_LEASE_TTL`].
    pub renewed_at: DateTime<Utc>,
}

impl CaptureLease {
    /// True when the holder has not renewed for 1.5 × [`CAPTURE_LEASE_TTL`] at `now`: the camera
    /// counts as unassigned.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let limit =
            chrono::Duration::from_std(CAPTURE_LEASE_TTL * 3 / 2).unwrap_or(chrono::Duration::MAX);
        now - self.renewed_at > limit
    }
}

/// `<camera_id>`: a camera's key in [`CAPTURES_BUCKET`].
pub fn capture_key(camera_id: CameraId) -> String {
    camera_id.to_string()
}

/// Parses a key of [`CAPTURES_BUCKET`].
pub fn parse_capture_key(key: &str) -> Result<CameraId, InvalidCameraKey> {
    key.parse().map_err(|_| InvalidCameraKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> CameraSpec {
        CameraSpec {
            camera_id: CameraId::new(),
            site: Site::new("north-1").unwrap(),
            name: "gate".into(),
            rtsp_url: RtspUrl::parse("rtsp://admin@10.0.0.7:554/main").unwrap(),
            password_sealed: Some("v1.k1.abc".into()),
            enabled: true,
            deleted: false,
            pre_roll_sec: 5,
            post_roll_sec: 5,
            max_duration_sec: 600,
            updated_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn camera_keys_round_trip() {
        let s = spec();
        assert_eq!(s.key(), format!("north-1.{}", s.camera_id));
        assert_eq!(
            parse_camera_key(&s.key()),
            Ok((s.site.clone(), s.camera_id))
        );
        assert_eq!(
            camera_spec_subject(&s.site, s.camera_id),
            format!("$KV.camrec_cameras.north-1.{}", s.camera_id)
        );
        assert_eq!(site_cameras_filter(&s.site), "north-1.>");
        assert_eq!(
            parse_capture_key(&capture_key(s.camera_id)),
            Ok(s.camera_id)
        );
    }

    #[test]
    fn foreign_keys_are_rejected() {
        for bad in [
            "",
            "north-1",
            "north-1.not-a-uuid",
            "a b.00000000-0000-0000-0000-000000000000",
            "a.b.00000000-0000-0000-0000-000000000000",
        ] {
            assert_eq!(parse_camera_key(bad), Err(InvalidCameraKey), "{bad}");
        }
        assert!(parse_capture_key("x").is_err());
    }

    #[test]
    fn specs_and_leases_round_trip_as_json() {
        let s = spec();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["rtsp_url"], "rtsp://admin@10.0.0.7:554/main");
        assert_eq!(serde_json::from_value::<CameraSpec>(v).unwrap(), s);

        let lease = CaptureLease {
            worker_id: "w1".into(),
            site: Site::default(),
            state: CaptureState::DiskFull,
            last_error: Some("no space left on device".into()),
            since: "2026-01-01T00:00:00Z".parse().unwrap(),
            renewed_at: "2026-01-01T00:00:04Z".parse().unwrap(),
        };
        let v = serde_json::to_value(&lease).unwrap();
        assert_eq!(v["state"], "disk_full");
        assert_eq!(serde_json::from_value::<CaptureLease>(v).unwrap(), lease);
        for state in CaptureState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn a_lease_goes_stale_after_one_and_a_half_ttls() {
        let renewed: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let lease = CaptureLease {
            worker_id: "w1".into(),
            site: Site::default(),
            state: CaptureState::Capturing,
            last_error: None,
            since: renewed,
            renewed_at: renewed,
        };
        assert!(!lease.is_stale(renewed + chrono::Duration::seconds(15)));
        assert!(lease.is_stale(renewed + chrono::Duration::milliseconds(15_001)));
    }

    proptest! {
        #[test]
        fn parse_camera_key_never_panics(s in ".{0,120}") {
            let _ = parse_camera_key(&s);
        }
    }
}
