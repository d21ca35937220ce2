//! The worker's configuration: every environment variable it reads, read once at start, each with
//! its default. Storage variables are read by `camrec_shared::storage::StorageConfig` so that the
//! worker and event-api agree on them.

use camrec_shared::natsconn::{NatsConfig, NatsConfigError};
use camrec_shared::storage::{StorageConfig, StorageError};
use camrec_shared::subjects::Site;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the worker is told by its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `NATS_URL` (default `nats://127.0.0.1:4222`), `NATS_USER`/`NATS_PASSWORD`,
    /// `NATS_CREDS_FILE`, `NATS_CA_FILE`, `NATS_CLIENT_CERT`/`NATS_CLIENT_KEY`: see
    /// `camrec_shared::natsconn`. The user is the site's worker user (`camrec-worker-<site>`),
    /// which may not create streams: the worker waits until event-api has created them.
    pub nats: NatsConfig,
    /// `SITE` (default `default`): the site whose events this worker records.
    pub site: Site,
    /// `WORKER_ID` (default: the host name): names this worker in leases and status messages.
    /// It must stay the same across restarts of one worker (event-api accepts a playback's
    /// statuses only from the worker that first reported it, and a restarted worker finishes
    /// what it left in `RECORD_DIR`), and differ between workers: set it where host names are
    /// not stable (a Kubernetes Deployment; a StatefulSet's pod names are).
    pub worker_id: String,
    /// `MAX_CAMERAS` (default 16): cameras this worker captures at once (one FFmpeg each); the
    /// site's other workers take the rest.
    pub max_cameras: usize,
    /// `SEGMENT_SEC` (default 1): the target length of a capture segment; FFmpeg cuts at the
    /// first keyframe after it, so a segment is one keyframe interval for most cameras (1-4 s),
    /// and a clip starts within one keyframe interval of its window.
    pub segment: Duration,
    /// `RING_MARGIN_SEC` (default 30): how much longer than a camera's `preRollSec` its ring keeps
    /// segments (an event that reaches the worker late still finds its pre-roll). Disk per
    /// camera: bitrate × (preRollSec + RING_MARGIN_SEC).
    pub ring_margin: Duration,
    /// `FIRST_SEGMENT_SEC` (default 30): how long a recording waits for its camera's first
    /// segment before it fails with `camera_unreachable`.
    pub first_segment: Duration,
    /// `RECORD_DIR` (default `./data/recordings`): `_capture/<camera_id>/` is the ring of each
    /// camera this worker captures; one directory per recording in progress or not yet uploaded
    /// (its segments hard-linked from the ring); `_failed/` keeps clips whose upload was given
    /// up; `_spool/` holds the status messages the stream has not acknowledged yet (sent first at
    /// the next start).
    pub record_dir: PathBuf,
    /// `MAX_RECORDING_SEC` (default 3600): caps the message's `max_duration_sec`.
    pub max_recording: Duration,
    /// `FFMPEG_PATH` (default `ffmpeg`).
    pub ffmpeg_path: PathBuf,
    /// `FFPROBE_PATH` (default `ffprobe`).
    pub ffprobe_path: PathBuf,
    /// `RTSP_TIMEOUT_SEC` (default 10): FFmpeg's and ffprobe's I/O timeout on the camera.
    pub rtsp_timeout: Duration,
    /// `CAMERA_SECRET_KEY` and `CAMERA_SECRET_KEYS_OLD` (as event-api's): open the camera
    /// passwords the camera catalog carries sealed. Without them, a camera with a password is
    /// not captured (its `captureStatus` says why) and its events fail `camera_unreachable`.
    pub camera_keys: Option<camrec_shared::sealed::CameraKeys>,
    /// `CAMERA_ALLOWED_NETWORKS` (default empty): CIDRs a camera may be in beyond the default
    /// policy, which refuses loopback, link-local, unspecified and multicast addresses
    /// (`camrec_shared::netpolicy`). Checked, with the host resolved, before each capture run.
    pub camera_networks: camrec_shared::netpolicy::NetworkPolicy,
    /// `RESTART_BACKOFF_MAX_SEC` (default 30): the longest wait before restarting a capture's
    /// FFmpeg that ended (camera lost) or could not start.
    pub restart_backoff_max: Duration,
    /// `PROGRESS_INTERVAL_SEC` (default 5): how often `progress` (and, while uploading,
    /// `processing`) messages are sent.
    pub progress_interval: Duration,
    /// `STOP_GRACE_SEC` (default 10): how long FFmpeg may take to finish after being asked to stop
    /// before it is killed.
    pub stop_grace: Duration,
    /// `SHUTDOWN_GRACE_SEC` (default 25): how long a shutting-down worker spends finishing its
    /// recordings; what is unfinished then is left in `RECORD_DIR` for the next start.
    pub shutdown_grace: Duration,
    /// `UPLOAD_GIVE_UP_SEC` (default 1800): how long uploads are retried before the playback is
    /// `FAILED upload_failed` (the file is kept).
    pub upload_give_up: Duration,
    /// `LEASE_HEARTBEAT_SEC` (default 5): how often the owner of a recording refreshes its
    /// recording lease (camera leases are renewed every quarter of `CAPTURE_LEASE_TTL`).
    pub lease_heartbeat: Duration,
    /// `PORT` (default 3001, beside event-api's 3000): where `/health`, `/ready` and `/metrics`
    /// are served (all interfaces); 0 picks a free port (tests).
    pub port: u16,
    /// `MIN_FREE_DISK_MB` (default 1024): below this much free space in `RECORD_DIR` the worker
    /// takes no camera (the site's workers with room do), its captures write no new segment
    /// (`disk_full`), and `/ready` answers 503. It never deletes a recording not yet uploaded
    /// to make room.
    pub min_free_disk_bytes: u64,
    /// `FAILED_KEEP_DAYS` (default 7): how long `RECORD_DIR/_failed/` keeps a recording (its
    /// upload retried meanwhile) before deleting it, uploaded or not.
    pub failed_keep: Duration,
    /// `STORAGE_MODE` and friends, see `StorageConfig`.
    pub storage: StorageConfig,
}

/// A variable that is set to something unusable. Names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not valid")]
    Invalid(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Nats(#[from] NatsConfigError),
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let secs = |name: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            match var(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .map(Duration::from_secs)
                    .ok_or(ConfigError::Invalid(name)),
            }
        };
        let site = match var("SITE") {
            None => Site::default(),
            Some(s) => Site::new(s.trim()).map_err(|_| ConfigError::Invalid("SITE"))?,
        };
        let max_cameras = ranged::<usize>(var("MAX_CAMERAS"), "MAX_CAMERAS", 16, 1..=1024)?;
        let segment_sec = ranged::<u64>(var("SEGMENT_SEC"), "SEGMENT_SEC", 1, 1..=10)?;
        let port = ranged::<u16>(var("PORT"), "PORT", 3001, 0..=u16::MAX)?;
        let min_free_disk_mb = ranged::<u64>(
            var("MIN_FREE_DISK_MB"),
            "MIN_FREE_DISK_MB",
            1024,
            0..=u64::MAX >> 20,
        )?;
        let failed_keep_days =
            ranged::<u64>(var("FAILED_KEEP_DAYS"), "FAILED_KEEP_DAYS", 7, 1..=36_500)?;
        Ok(Self {
            nats: NatsConfig::from_lookup(&get)?,
            site,
            worker_id: var("WORKER_ID").unwrap_or_else(default_worker_id),
            record_dir: PathBuf::from(
                var("RECORD_DIR").unwrap_or_else(|| "./data/recordings".into()),
            ),
            max_cameras,
            segment: Duration::from_secs(segment_sec),
            ring_margin: secs("RING_MARGIN_SEC", 30, 0)?,
            first_segment: secs("FIRST_SEGMENT_SEC", 30, 1)?,
            max_recording: secs("MAX_RECORDING_SEC", 3600, 1)?,
            ffmpeg_path: PathBuf::from(var("FFMPEG_PATH").unwrap_or_else(|| "ffmpeg".into())),
            ffprobe_path: PathBuf::from(var("FFPROBE_PATH").unwrap_or_else(|| "ffprobe".into())),
            rtsp_timeout: secs("RTSP_TIMEOUT_SEC", 10, 1)?,
            camera_keys: match var("CAMERA_SECRET_KEY") {
                None => None,
                Some(current) => Some(
                    camrec_shared::sealed::CameraKeys::parse(
                        &current,
                        &var("CAMERA_SECRET_KEYS_OLD").unwrap_or_default(),
                    )
                    .map_err(|_| {
                        ConfigError::Invalid("CAMERA_SECRET_KEY or CAMERA_SECRET_KEYS_OLD")
                    })?,
                ),
            },
            camera_networks: camrec_shared::netpolicy::NetworkPolicy::parse(
                &var("CAMERA_ALLOWED_NETWORKS").unwrap_or_default(),
            )
            .map_err(|_| ConfigError::Invalid("CAMERA_ALLOWED_NETWORKS"))?,
            restart_backoff_max: secs("RESTART_BACKOFF_MAX_SEC", 30, 1)?,
            progress_interval: secs("PROGRESS_INTERVAL_SEC", 5, 1)?,
            stop_grace: secs("STOP_GRACE_SEC", 10, 1)?,
            shutdown_grace: secs("SHUTDOWN_GRACE_SEC", 25, 1)?,
            upload_give_up: secs("UPLOAD_GIVE_UP_SEC", 1800, 1)?,
            lease_heartbeat: secs("LEASE_HEARTBEAT_SEC", 5, 1)?,
            port,
            min_free_disk_bytes: min_free_disk_mb << 20,
            failed_keep: Duration::from_secs(failed_keep_days * 24 * 3600),
            storage: StorageConfig::from_lookup(&get)?,
        })
    }
}

/// `value` parsed and within `range`, `default` when unset; else the error names `name`.
fn ranged<T: std::str::FromStr + PartialOrd>(
    value: Option<String>,
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or(ConfigError::Invalid(name)),
    }
}

/// The host name: stable across restarts, unlike the process id it used to carry.
fn default_worker_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = from(&[]).unwrap();
        assert_eq!(c.nats.display_url(), "nats://127.0.0.1:4222");
        assert_eq!(c.site.as_str(), "default");
        assert_eq!(c.max_cameras, 16);
        assert_eq!(c.segment, Duration::from_secs(1));
        assert_eq!(c.ring_margin, Duration::from_secs(30));
        assert_eq!(c.first_segment, Duration::from_secs(30));
        assert_eq!(c.max_recording, Duration::from_secs(3600));
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.upload_give_up, Duration::from_secs(1800));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            c.worker_id,
            host.trim(),
            "the host name, stable across restarts"
        );
        assert_eq!(c.record_dir, PathBuf::from("./data/recordings"));
        assert_eq!(c.port, 3001);
        assert_eq!(c.min_free_disk_bytes, 1024 << 20);
        assert_eq!(c.failed_keep, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn values_are_read_and_bad_ones_name_their_variable() {
        let c = from(&[
            ("SITE", "north"),
            ("WORKER_ID", "w7"),
            ("MAX_CAMERAS", "2"),
            ("SEGMENT_SEC", "3"),
            ("MAX_RECORDING_SEC", "60"),
            ("PORT", "0"),
            ("MIN_FREE_DISK_MB", "1000000000"),
            ("FAILED_KEEP_DAYS", "2"),
            (
                "NATS_URL",
                "nats://camrec-worker-north:hunter2-nats@nats:4222",
            ),
        ])
        .unwrap();
        assert_eq!(c.nats.user(), Some("camrec-worker-north"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.port, 0);
        assert_eq!(c.min_free_disk_bytes, 1_000_000_000 << 20);
        assert_eq!(c.failed_keep, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(c.segment, Duration::from_secs(3));
        assert_eq!(c.site.as_str(), "north");
        assert_eq!(c.worker_id, "w7");
        assert_eq!(c.max_cameras, 2);
        assert_eq!(c.max_recording, Duration::from_secs(60));
        for (k, v) in [
            ("SITE", "a.b"),
            ("MAX_CAMERAS", "0"),
            ("SEGMENT_SEC", "11"),
            ("MAX_RECORDING_SEC", "x"),
            ("STOP_GRACE_SEC", "-1"),
            ("NATS_URL", "http://nats"),
            ("FIRST_SEGMENT_SEC", "0"),
            ("PORT", "65536"),
            ("MIN_FREE_DISK_MB", "-1"),
            ("FAILED_KEEP_DAYS", "0"),
        ] {
            let err = from(&[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }
}
