//! Crash recovery at start (ADR 0001): every `RECORD_DIR/<playback_id>/` with a manifest was left
//! by a previous run that was killed or ran out of shutdown grace. Each is finished here, one at
//! a time: the lease is taken over, the parts are concatenated, probed, uploaded and reported
//! `completed` with `partial: true` (a crash cuts the clip, it does not resume), or `FAILED
//! no_media` when nothing playable was recorded. A directory whose clip was already finalized
//! (the upload was interrupted) goes straight to the upload. A directory whose lease says `done`
//! was already reported and is only removed; one whose lease says `failed` is moved to
//! `_failed/`. `processing` says why the recording stopped when its manifest knows (the worker
//! stopped it, then ran out of shutdown grace), nothing when it was cut by a crash.
//! `RECORD_DIR/_failed/` itself is left alone here: its playbacks were reported `FAILED` and
//! [`crate::disk`] tends it (uploads retried, old entries deleted); so is `RECORD_DIR/_spool/`,
//! the status spool, which the status publisher sends on its own.

use camrec_shared::PlaybackId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::finish::{finish, Recorded};
use crate::manifest::{self, Manifest};
use crate::ownership::{LeaseKeeper, LeaseState};
use crate::recording::Outcome;
use crate::status::Subject;
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

/// The `RECORD_DIR/<playback_id>/` directories that hold a manifest (`_failed/` and `_spool/`
/// are no playback id).
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
    let mut reporter = shared.status.reporter(Subject {
        playback_id: id,
        event_id: manifest.event_id,
        camera_id: manifest.camera_id,
        site: manifest.site.clone(),
    });
    if manifest.started_at.is_none() {
        tracing::info!(playback_id = %id, "leftover recording never reported frames");
    }
    let recorded = Recorded::from_dir(&manifest, dir).await;
    let lease = LeaseKeeper::new(lease);
    let outcome = tokio::select! {
        outcome = finish(&shared.finisher, &mut reporter, &lease, dir, recorded) => outcome,
        never = lease.keep(shared.config.lease_heartbeat) => match never {},
    };
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_playback_directories_with_a_manifest_are_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let id = PlaybackId::new();
        let with_manifest = manifest::recording_dir(root.path(), id);
        let without = manifest::recording_dir(root.path(), PlaybackId::new());
        for dir in [
            &with_manifest,
            &without,
            &root.path().join(crate::spool::SPOOL_DIR),
            &root.path().join(manifest::FAILED_DIR),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(with_manifest.join(manifest::MANIFEST), b"{}").unwrap();
        std::fs::write(
            root.path()
                .join(crate::spool::SPOOL_DIR)
                .join(manifest::MANIFEST),
            b"{}",
        )
        .unwrap();
        assert_eq!(
            leftover_dirs(root.path()).await.unwrap(),
            vec![(id, with_manifest)]
        );
    }
}
