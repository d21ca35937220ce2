//! The local directory of one recording, `RECORD_DIR/<playback_id>/`, and its `manifest.json`.
//!
//! The manifest is what a restarted worker needs to finish a recording its predecessor left
//! behind (ADR 0001): who the playback is, when it started, which segments of the camera's
//! capture it holds. The segments themselves are hard links in the directory, named by their
//! wall-clock start and duration ([`crate::capture::segment`]), so the directory alone says
//! what the clip covers. It never holds the camera's credential: the URL is stored without user
//! and password, and recovery does not need it (a crash cuts the clip; it does not resume).

use camrec_shared::messages::{EventCreated, EventType, RecordingLimits, StopCause};
use camrec_shared::subjects::Site;
use camrec_shared::{CameraId, EventId, PlaybackId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a recording directory.
pub const MANIFEST: &str = "manifest.json";
/// The finalized clip inside a recording directory.
pub const VIDEO: &str = "video.mp4";
/// The thumbnail inside a recording directory.
pub const THUMB: &str = "thumb.jpg";
/// Where failed recordings worth keeping are kept, under `RECORD_DIR` (tended by
/// [`crate::disk`]: uploads retried, entries deleted after `FAILED_KEEP_DAYS`).
pub const FAILED_DIR: &str = "_failed";

/// A manifest that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("recording directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("manifest is not readable: {0}")]
    Json(#[from] serde_json::Error),
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub playback_id: PlaybackId,
    pub event_id: EventId,
    pub camera_id: CameraId,
    pub camera_name: String,
    pub site: Site,
    pub event_type: EventType,
    /// The camera URL without user and password, for people reading the directory.
    pub camera_url: String,
    pub limits: RecordingLimits,
    /// When this worker took the recording.
    pub claimed_at: DateTime<Utc>,
    /// Wall-clock time of the clip's first frame (`recording` was reported).
    pub started_at: Option<DateTime<Utc>>,
    /// Wall-clock time of the clip's last frame, once the recording stopped.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it stopped, for the `processing` a recovery reports (absent in older manifests).
    #[serde(default)]
    pub stopped_by: Option<StopCause>,
    /// The segments linked into the directory, in time order (file names).
    pub parts: Vec<String>,
    /// Whether the clip has a gap or was cut short.
    pub partial: bool,
    /// The capture did not hold the clip window's start.
    #[serde(default)]
    pub started_late: bool,
}

impl Manifest {
    pub fn new(event: &EventCreated, claimed_at: DateTime<Utc>) -> Self {
        Self {
            playback_id: event.playback_id,
            event_id: event.event_id,
            camera_id: event.camera_id,
            camera_name: event.camera_name.clone(),
            site: event.site.clone(),
            event_type: event.event_type,
            camera_url: event.rtsp_url.without_credentials().masked(),
            limits: event.limits,
            claimed_at,
            started_at: None,
            ended_at: None,
            stopped_by: None,
            parts: Vec::new(),
            partial: false,
            started_late: false,
        }
    }

    /// Writes the manifest atomically (temporary file, then rename).
    pub async fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        tokio::fs::write(&tmp, serde_json::to_vec_pretty(self)?).await?;
        tokio::fs::rename(&tmp, dir.join(MANIFEST)).await?;
        Ok(())
    }

    pub async fn read(dir: &Path) -> Result<Self, ManifestError> {
        let bytes = tokio::fs::read(dir.join(MANIFEST)).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// `RECORD_DIR/<playback_id>`.
pub fn recording_dir(record_dir: &Path, id: PlaybackId) -> PathBuf {
    record_dir.join(id.to_string())
}

/// The segments present in `dir`, in time order.
pub async fn parts_in(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    Ok(crate::capture::segment::segments_in(dir)
        .await?
        .into_iter()
        .map(|s| s.path)
        .collect())
}

/// Moves a recording directory to `RECORD_DIR/_failed/<playback_id>`, where it is kept for an
/// operator and its upload retried, for `FAILED_KEEP_DAYS`.
pub async fn move_to_failed(record_dir: &Path, dir: &Path) -> Result<PathBuf, ManifestError> {
    let failed = record_dir.join(FAILED_DIR);
    tokio::fs::create_dir_all(&failed).await?;
    let name = dir.file_name().map(PathBuf::from).unwrap_or_default();
    let target = failed.join(name);
    if tokio::fs::try_exists(&target).await? {
        tokio::fs::remove_dir_all(&target).await?;
    }
    tokio::fs::rename(dir, &target).await?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_shared::rtsp::RtspUrl;

    fn event() -> EventCreated {
        EventCreated {
            event_id: EventId::new(),
            playback_id: PlaybackId::new(),
            camera_id: CameraId::new(),
            camera_name: "gate".into(),
            site: Site::default(),
            event_type: EventType::Motion,
            rtsp_url: RtspUrl::parse("rtsp://admin:s3cret@10.0.0.1:554/live").unwrap(),
            password_sealed: None,
            limits: RecordingLimits {
                max_duration_sec: 60,
                pre_roll_sec: 0,
                post_roll_sec: 0,
            },
            occurred_at: None,
        }
    }

    #[tokio::test]
    async fn manifests_round_trip_without_the_credential() {
        let tmp = tempfile::tempdir().unwrap();
        let ev = event();
        let dir = recording_dir(tmp.path(), ev.playback_id);
        let mut m = Manifest::new(&ev, Utc::now());
        m.parts.push("1796548623885_2040.mp4".into());
        m.write(&dir).await.unwrap();
        let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("admin"), "{text}");
        assert_eq!(Manifest::read(&dir).await.unwrap(), m);
    }

    #[tokio::test]
    async fn parts_are_listed_in_order_and_failed_dirs_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rec");
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "1796548627885_2000.mp4",
            "0796548627885_2000.mp4",
            "manifest.json",
            "video.mp4",
            "1796548625885_2000.mp4",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let parts = parts_in(&dir).await.unwrap();
        let names: Vec<_> = parts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0796548627885_2000.mp4",
                "1796548625885_2000.mp4",
                "1796548627885_2000.mp4"
            ]
        );
        let kept = move_to_failed(tmp.path(), &dir).await.unwrap();
        assert!(kept.join("1796548625885_2000.mp4").exists());
        assert!(!dir.exists());
    }
}
