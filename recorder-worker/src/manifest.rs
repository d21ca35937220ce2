//! The local directory of one recording, `RECORD_DIR/<playback_id>/`, and its `manifest.json`.
//!
//! The manifest is what a restarted worker needs to finish a recording its predecessor left
//! behind (ADR 0001): who the playback is, when it started, which part files FFmpeg wrote. It
//! never holds the camera's credential: the URL is stored without user and password, and
//! recovery does not need it (a crash cuts the clip; it does not resume recording).

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
    /// When FFmpeg delivered the first frames (`recording` was reported).
    pub started_at: Option<DateTime<Utc>>,
    /// When the recording stopped.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it stopped, for the `processing` a recovery reports (absent in older manifests).
    #[serde(default)]
    pub stopped_by: Option<StopCause>,
    /// The part files, in order (file names inside the directory).
    pub parts: Vec<String>,
    /// Whether a gap is known (FFmpeg restarted mid-recording).
    pub partial: bool,
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

/// The name of the `index`th part file: `part-000.mp4`, `part-001.mp4`, ...
pub fn part_name(index: usize) -> String {
    format!("part-{index:03}.mp4")
}

/// The direct clip FFmpeg writes beside `part` (`part-000.mp4` → `direct-000.mp4`): the same
/// streams as a faststart MP4, finished when that FFmpeg run stops cleanly (ADR 0010).
pub fn direct_for(part: &Path) -> PathBuf {
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let direct = match name.strip_prefix("part-") {
        Some(rest) => format!("direct-{rest}"),
        None => format!("direct-{name}"),
    };
    part.with_file_name(direct)
}

/// The part files present in `dir`, in recording order.
pub async fn parts_in(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut parts = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(e) = entries.next_entry().await? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("part-") && name.ends_with(".mp4") {
            parts.push(e.path());
        }
    }
    parts.sort();
    Ok(parts)
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
        m.parts.push(part_name(0));
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
            "part-002.mp4",
            "part-000.mp4",
            "manifest.json",
            "part-001.mp4",
            "direct-001.mp4",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let parts = parts_in(&dir).await.unwrap();
        let names: Vec<_> = parts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-000.mp4", "part-001.mp4", "part-002.mp4"]);
        let kept = move_to_failed(tmp.path(), &dir).await.unwrap();
        assert!(kept.join("part-001.mp4").exists());
        assert!(!dir.exists());
        assert_eq!(part_name(12), "part-012.mp4");
        assert_eq!(
            direct_for(&dir.join("part-001.mp4")),
            dir.join("direct-001.mp4")
        );
    }
}
