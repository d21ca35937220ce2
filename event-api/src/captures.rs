//! Who captures which camera, as event-api knows it: the capture leases of the KV bucket
//! `camrec_captures` (written by the workers, `camrec_shared::capture`) kept in memory by a
//! watch ([`run`]), read by the camera JSON (`captureStatus`) and counted in the gauge
//! `cameras_capture{state}`.
//!
//! The watch starts with every current lease (history) and follows every change. A lease that
//! expires through the bucket's `max_age` leaves no trace on the watch, so a lease counts only
//! while its `renewed_at` is younger than 1.5 × `CAPTURE_LEASE_TTL`; older or absent, the camera
//! reads `unassigned`. A disabled camera reads `disabled` whatever its lease says.

use crate::clock::Clock;
use crate::store::Store;
use async_nats::jetstream::kv::{Entry, Operation};
use async_nats::jetstream::Context;
use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use camrec_shared::capture::{parse_capture_key, CaptureLease, CaptureState};
use camrec_shared::rtsp::scrub_userinfo;
use camrec_shared::CameraId;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the gauge is recomputed from the cameras and the leases.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// A camera's capture state as the API shows it: a worker's [`CaptureState`], or one of the two
/// states event-api decides itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureStatusState {
    Capturing,
    Connecting,
    Unreachable,
    DiskFull,
    /// No worker holds a live lease on the camera.
    Unassigned,
    /// The camera is disabled: nobody should capture it.
    Disabled,
}

impl CaptureStatusState {
    pub const ALL: [CaptureStatusState; 6] = [
        CaptureStatusState::Capturing,
        CaptureStatusState::Connecting,
        CaptureStatusState::Unreachable,
        CaptureStatusState::DiskFull,
        CaptureStatusState::Unassigned,
        CaptureStatusState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaptureStatusState::Capturing => "capturing",
            CaptureStatusState::Connecting => "connecting",
            CaptureStatusState::Unreachable => "unreachable",
            CaptureStatusState::DiskFull => "disk_full",
            CaptureStatusState::Unassigned => "unassigned",
            CaptureStatusState::Disabled => "disabled",
        }
    }
}

impl From<CaptureState> for CaptureStatusState {
    fn from(s: CaptureState) -> Self {
        match s {
            CaptureState::Connecting => CaptureStatusState::Connecting,
            CaptureState::Capturing => CaptureStatusState::Capturing,
            CaptureState::Unreachable => CaptureStatusState::Unreachable,
            CaptureState::DiskFull => CaptureStatusState::DiskFull,
        }
    }
}

/// `captureStatus` of the camera JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptureStatus {
    pub state: CaptureStatusState,
    /// The worker holding the camera's lease; null when unassigned or disabled.
    pub worker_id: Option<String>,
    /// The capture's last error, with any credential removed.
    pub last_error: Option<String>,
    /// Since when the worker reports `state`; null when unassigned or disabled.
    pub since: Option<DateTime<Utc>>,
}

impl CaptureStatus {
    fn bare(state: CaptureStatusState) -> Self {
        Self {
            state,
            worker_id: None,
            last_error: None,
            since: None,
        }
    }
}

/// The leases of `camrec_captures` as last seen, shared by the watch and the HTTP handlers
/// (`None`: the last lease of that camera did not read).
#[derive(Clone, Debug, Default)]
pub struct CaptureBoard(Arc<RwLock<HashMap<CameraId, Option<CaptureLease>>>>);

impl CaptureBoard {
    /// The status of a camera that is `enabled` at `now`.
    pub fn status(&self, camera_id: CameraId, enabled: bool, now: DateTime<Utc>) -> CaptureStatus {
        if !enabled {
            return CaptureStatus::bare(CaptureStatusState::Disabled);
        }
        let leases = self.0.read().unwrap_or_else(|e| e.into_inner());
        match leases.get(&camera_id) {
            Some(Some(lease)) if !lease.is_stale(now) => CaptureStatus {
                state: lease.state.into(),
                worker_id: Some(lease.worker_id.clone()),
                last_error: lease.last_error.as_deref().map(scrub_userinfo),
                since: Some(lease.since),
            },
            _ => CaptureStatus::bare(CaptureStatusState::Unassigned),
        }
    }

    /// How many of `cameras` (id, enabled) are in each state at `now`; every state is present.
    pub fn count(
        &self,
        cameras: &[(CameraId, bool)],
        now: DateTime<Utc>,
    ) -> HashMap<CaptureStatusState, usize> {
        let mut counts: HashMap<_, _> = CaptureStatusState::ALL.map(|s| (s, 0)).into();
        for (id, enabled) in cameras {
            *counts
                .entry(self.status(*id, *enabled, now).state)
                .or_default() += 1;
        }
        counts
    }

    /// Applies one entry of the watch: a put stores the lease, a delete or purge removes it. An
    /// entry that does not read (a newer worker's?) counts as no lease: the camera reads
    /// `unassigned`; it is logged when a camera's leases stop reading, not at every renewal.
    pub fn apply(&self, entry: &Entry) {
        let Ok(camera_id) = parse_capture_key(&entry.key) else {
            tracing::debug!(key = %entry.key, "not a capture key; ignored");
            return;
        };
        let mut leases = self.0.write().unwrap_or_else(|e| e.into_inner());
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<CaptureLease>(&entry.value) {
                Ok(lease) => {
                    leases.insert(camera_id, Some(lease));
                }
                Err(e) => {
                    if leases.insert(camera_id, None) != Some(None) {
                        tracing::warn!(%camera_id, error = %e, "unreadable capture lease ignored");
                    }
                }
            },
            Operation::Delete | Operation::Purge => {
                leases.remove(&camera_id);
            }
        }
    }

    /// Stores `lease` directly (unit tests of the handlers).
    pub fn insert(&self, camera_id: CameraId, lease: CaptureLease) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(camera_id, Some(lease));
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Follows the bucket into `board` until the watch ends or fails.
async fn follow(
    js: &Context,
    replicas: usize,
    board: &CaptureBoard,
) -> Result<(), async_nats::Error> {
    let kv = camrec_shared::streams::ensure_captures_bucket(js, replicas).await?;
    let mut watch = kv.watch_with_history(">").await?;
    board.clear();
    while let Some(entry) = watch.next().await {
        board.apply(&entry?);
    }
    Ok(())
}

/// Sets the gauge `cameras_capture{state}` from the database's cameras and `board`.
async fn publish_gauge(store: &Store, board: &CaptureBoard, clock: &Clock) {
    let cameras = match store.camera_switches().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "cannot count the cameras' capture states now");
            return;
        }
    };
    for (state, n) in board.count(&cameras, clock.now()) {
        metrics::gauge!("cameras_capture", "state" => state.as_str()).set(n as f64);
    }
}

/// Runs the watch into `board` until `shutdown` (restarting it with a capped backoff when NATS
/// fails) and refreshes the gauge every [`GAUGE_INTERVAL`].
pub async fn run(
    store: Store,
    js: Context,
    replicas: usize,
    board: CaptureBoard,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let gauge = async {
        loop {
            publish_gauge(&store, &board, &clock).await;
            if !sleep_or_cancel(GAUGE_INTERVAL, &shutdown).await {
                break;
            }
        }
    };
    let watch = async {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = follow(&js, replicas, &board) => r,
            };
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => tracing::warn!(error = %e, "capture lease watch restarting"),
            }
            if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
                break;
            }
        }
    };
    tokio::join!(gauge, watch);
    tracing::info!("capture lease watch stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_shared::subjects::Site;

    fn lease(renewed_at: DateTime<Utc>, error: Option<&str>) -> CaptureLease {
        CaptureLease {
            worker_id: "w1".into(),
            site: Site::default(),
            state: CaptureState::Unreachable,
            last_error: error.map(str::to_owned),
            since: renewed_at,
            renewed_at,
        }
    }

    #[test]
    fn a_live_lease_shows_and_a_stale_or_missing_one_reads_unassigned() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let board = CaptureBoard::default();
        let cam = CameraId::new();
        board.insert(cam, lease(t0, Some("connection refused")));
        let s = board.status(cam, true, t0 + chrono::Duration::seconds(14));
        assert_eq!(s.state, CaptureStatusState::Unreachable);
        assert_eq!(s.worker_id.as_deref(), Some("w1"));
        assert_eq!(s.since, Some(t0));
        let stale = board.status(cam, true, t0 + chrono::Duration::seconds(16));
        assert_eq!(stale, CaptureStatus::bare(CaptureStatusState::Unassigned));
        let disabled = board.status(cam, false, t0);
        assert_eq!(disabled.state, CaptureStatusState::Disabled);
        let other = board.status(CameraId::new(), true, t0);
        assert_eq!(other.state, CaptureStatusState::Unassigned);

        let counts = board.count(&[(cam, true), (CameraId::new(), false)], t0);
        assert_eq!(counts[&CaptureStatusState::Unreachable], 1);
        assert_eq!(counts[&CaptureStatusState::Disabled], 1);
        assert_eq!(counts[&CaptureStatusState::Capturing], 0);
        assert_eq!(counts.len(), CaptureStatusState::ALL.len());
    }

    #[test]
    fn credentials_are_dropped_from_errors() {
        let board = CaptureBoard::default();
        let cam = CameraId::new();
        let now = Utc::now();
        board.insert(
            cam,
            lease(now, Some("open rtsp://admin:pw@cam/live failed")),
        );
        let s = board.status(cam, true, now);
        assert_eq!(s.last_error.as_deref(), Some("open rtsp://cam/live failed"));
    }

    #[test]
    fn states_have_their_wire_names() {
        for s in CaptureStatusState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in CaptureState::ALL {
            assert_eq!(CaptureStatusState::from(s).as_str(), s.as_str());
        }
    }
}
