//! Crash recovery at start (ADR 0001): every `RECORD_DIR/<playback_id>/` with a manifest was left
//! by a previous run that was killed or ran out of shutdown grace. Each is finished here, one at
//! a time: the lease is taken over, the parts are concatenated, probed, uploaded and reported
//! `completed` with `partial: true` (a crash cuts the clip, it does not resume), or `FAILED
//! no_media` when nothing playable was recorded. A directory whose clip was already finalized
//! (the upload was interrupted) goes straight to the upload. A directory whose lease says `done`
//! was already reported and is only removed; one whose lease says `failed` is moved to
//! `_failed/`. `RECORD_DIR/_failed/` itself is left alone: its playbacks were reported `FAILED`
//! (terminal, ADR 0001) and their files are kept for an operator.

use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::manifest::{self, Manifest};
use crate::ownership::LeaseState;
use crate::recording::{self, Outcome};
use crate::status::{Reporter, Subject};
use crate::worker::Shared;

/// Finishes every recording directory found at start, until the worker aborts.
pub async fn recover_all(shared: Arc<Shared>) {
    let dirs = match leftover_dirs(&shared.config.record_dir).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot scan RECORD_DIR for leftover recordings");
            return;
        }
    };
    for (id, dir) in dirs {
        if shared.abort.is_cancelled() {
            return;
        }
        let outcome = recover_one(&shared, id, &dir).await;
        tracing::info!(playback_id = %id, ?outcome, "leftover recording handled");
    }
}

/// The `RECORD_DIR/<playback_id>/` directories that hold a manifest.
async fn leftover_dirs(record_dir: &Path) -> std::io::Result<Vec<(PlaybackId, PathBuf)>> {
    let mut found = Vec::new();
    let mut entries = match tokio::fs::read_dir(record_dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        let Ok(id) = entry.file_name().to_string_lossy().parse::<PlaybackId>() else {
            continue;
        };
        let dir = entry.path();
        if tokio::fs::try_exists(dir.join(manifest::MANIFEST))
            .await
            .unwrap_or(false)
        {
            found.push((id, dir));
        }
    }
    found.sort();
    Ok(found)
}

/// Finishes one leftover directory; `None` when it was only cleaned up.
async fn recover_one(shared: &Shared, id: PlaybackId, dir: &Path) -> Option<Outcome> {
    let manifest = match Manifest::read(dir).await {
        Ok(m) if m.playback_id == id => m,
        Ok(_) | Err(_) => {
            tracing::warn!(playback_id = %id, "unreadable manifest; directory kept for an operator");
            if let Err(e) = manifest::move_to_failed(&shared.config.record_dir, dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot move the directory");
            }
            return None;
        }
    };
    match shared.ownership.lease_of(id).await {
        Ok(Some(lease)) if lease.state == LeaseState::Done => {
            tracing::info!(playback_id = %id, "leftover directory of a completed recording removed");
            if let Err(e) = tokio::fs::remove_dir_all(dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot remove the directory");
            }
            return None;
        }
        Ok(Some(lease)) if lease.state == LeaseState::Failed => {
            tracing::warn!(playback_id = %id, "leftover directory of a failed recording kept for an operator");
            if let Err(e) = manifest::move_to_failed(&shared.config.record_dir, dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot move the directory");
            }
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "cannot read the lease; recovering anyway")
        }
    }
    let lease = match shared.ownership.take_over(id).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "cannot take over the lease; left for the next start");
            return None;
        }
    };
    let mut reporter = Reporter::new(
        shared.js.clone(),
        shared.config.worker_id.clone(),
        Subject {
            playback_id: id,
            event_id: manifest.event_id,
            camera_id: manifest.camera_id,
            site: manifest.site.clone(),
        },
    );
    let ended_at = match manifest.ended_at {
        Some(t) => t,
        None => last_write(dir).await.unwrap_or_else(Utc::now),
    };
    let started_at = manifest.started_at.unwrap_or(manifest.claimed_at);
    if manifest.started_at.is_none() {
        tracing::info!(playback_id = %id, "leftover recording never reported frames");
    }
    let outcome = recording::finish(
        shared,
        &mut reporter,
        lease,
        dir,
        recording::Recorded {
            started_at,
            ended_at,
            partial: manifest.ended_at.is_none() || manifest.partial,
        },
        recording::Ahead::default(),
    )
    .await;
    Some(outcome)
}

/// When the newest part was last written: the end of a recording cut by a crash.
async fn last_write(dir: &Path) -> Option<DateTime<Utc>> {
    let parts = manifest::parts_in(dir).await.ok()?;
    let mut newest = None;
    for p in parts {
        if let Ok(modified) = tokio::fs::metadata(&p).await.and_then(|m| m.modified()) {
            let t: DateTime<Utc> = modified.into();
            newest = newest.max(Some(t));
        }
    }
    newest
}
