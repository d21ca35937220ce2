//! What earlier runs left in `RECORD_DIR`, tended from [`Leftovers`].
//!
//! Crash recovery at start (ADR 0001): every `RECORD_DIR/<playback_id>/` with a manifest was left
//! by a previous run that was killed or ran out of shutdown grace. Each is finished here, one at
//! a time: the lease is taken over, the parts are concatenated, probed, uploaded and reported
//! `completed` with `partial: true` (a crash cuts the clip, it does not resume), or `FAILED
//! no_media` when nothing playable was recorded. A directory whose clip was already finalized
//! (the upload was interrupted) goes straight to the upload. A directory whose lease says `done`
//! was already reported and is only removed; one whose lease says `failed` is moved to
//! `_failed/`. `processing` says why the recording stopped when its manifest knows (the worker
//! stopped it, then ran out of shutdown grace), nothing when it was cut by a crash.
//! `RECORD_DIR/_spool/`, the status spool, is left alone: the status publisher sends it on its own.
//!
//! `RECORD_DIR/_failed/` ([`keep_failed`]), every [`FAILED_SWEEP_INTERVAL`] from the start: its
//! playbacks were reported `FAILED`. An entry older than `FAILED_KEEP_DAYS` (by its directory's
//! modification time) is deleted, uploaded or not; every other one holding a playable clip has
//! its upload tried once more ([`crate::finish::retry_failed`]), which removes it when the upload
//! is verified and reports the playback `completed` after all.

use camrec_shared::backoff::sleep_or_cancel;
use camrec_shared::PlaybackId;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use crate::finish::{finish, retry_failed, Finisher, Recorded, Retry};
use crate::manifest::{self, Manifest, FAILED_DIR};
use crate::outcome::Outcome;
use crate::ownership::{LeaseKeeper, LeaseState, LeaseValue, Ownership};
use crate::status::{StatusPublisher, Subject};

/// How often `_failed/` is tended (uploads retried, old entries deleted).
pub const FAILED_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// What tending the leftovers of earlier runs needs from the worker.
pub struct Leftovers {
    pub record_dir: PathBuf,
    pub finisher: Finisher,
    pub ownership: Ownership,
    pub status: StatusPublisher,
    /// `LEASE_HEARTBEAT_SEC`.
    pub lease_heartbeat: Duration,
    /// `FAILED_KEEP_DAYS`.
    pub failed_keep: Duration,
    /// Cancelled when the worker starts shutting down.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: unfinished work is abandoned to the next start.
    pub abort: CancellationToken,
}

/// Finishes every recording directory found at start, until the worker aborts.
pub async fn recover_all(shared: Arc<Leftovers>) {
    let dirs = match leftover_dirs(&shared.record_dir).await {
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
async fn recover_one(shared: &Leftovers, id: PlaybackId, dir: &Path) -> Option<Outcome> {
    let manifest = match Manifest::read(dir).await {
        Ok(m) if m.playback_id == id => m,
        Ok(_) | Err(_) => {
            tracing::warn!(playback_id = %id, "unreadable manifest; directory kept for an operator");
            if let Err(e) = manifest::move_to_failed(&shared.record_dir, dir).await {
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
            if let Err(e) = manifest::move_to_failed(&shared.record_dir, dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot move the directory");
            }
            return None;
        }
        Ok(Some(lease)) if taken_over_elsewhere(shared, &lease) => {
            tracing::info!(playback_id = %id, owner = %lease.worker_id, "leftover directory of a recording another worker continues removed");
            if let Err(e) = tokio::fs::remove_dir_all(dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot remove the directory");
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
        takes_over_from: None,
    });
    if manifest.started_at.is_none() {
        tracing::info!(playback_id = %id, "leftover recording never reported frames");
    }
    let recorded = Recorded::from_dir(&manifest, dir).await;
    let lease = LeaseKeeper::new(lease);
    let outcome = tokio::select! {
        outcome = finish(&shared.finisher, &mut reporter, &lease, dir, recorded) => outcome,
        never = lease.keep(shared.lease_heartbeat) => match never {},
    };
    Some(outcome)
}

/// Whether another worker took the recording over (it held the camera while this one was down)
/// and keeps its lease fresh: the recording goes on there, from what was uploaded.
fn taken_over_elsewhere(shared: &Leftovers, lease: &LeaseValue) -> bool {
    let fresh = chrono::Duration::from_std(shared.lease_heartbeat * 3).unwrap_or_default();
    lease.worker_id != shared.ownership.worker_id()
        && matches!(lease.state, LeaseState::Recording | LeaseState::Processing)
        && chrono::Utc::now() - lease.heartbeat_at < fresh
}

/// Whether a `_failed/` entry last modified at `modified` is due for deletion at `now`.
/// A modification time in the future (a clock set back) keeps the entry.
pub fn expired(modified: SystemTime, now: SystemTime, keep: Duration) -> bool {
    now.duration_since(modified).is_ok_and(|age| age >= keep)
}

/// What one pass over `_failed/` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tended {
    pub uploaded: usize,
    pub pruned: usize,
    pub kept: usize,
}

/// Tends `_failed/` every [`FAILED_SWEEP_INTERVAL`] until the worker shuts down.
pub async fn keep_failed(shared: Arc<Leftovers>) {
    loop {
        let tended = tend_failed(&shared, SystemTime::now()).await;
        if tended != Tended::default() {
            tracing::info!(
                uploaded = tended.uploaded,
                pruned = tended.pruned,
                kept = tended.kept,
                "_failed tended"
            );
        }
        if !sleep_or_cancel(FAILED_SWEEP_INTERVAL, &shared.shutdown).await {
            return;
        }
    }
}

/// One pass over `RECORD_DIR/_failed/` at `now`: see the module documentation.
pub async fn tend_failed(shared: &Leftovers, now: SystemTime) -> Tended {
    let mut tended = Tended::default();
    let entries = match failed_entries(&shared.record_dir.join(FAILED_DIR)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list RECORD_DIR/_failed");
            return tended;
        }
    };
    for (dir, modified) in entries {
        if shared.shutdown.is_cancelled() {
            break;
        }
        if expired(modified, now, shared.failed_keep) {
            prune(&dir).await;
            tended.pruned += 1;
            continue;
        }
        let retry = tokio::select! {
            r = retry_failed(&shared.finisher, &shared.status, &dir) => r,
            _ = shared.shutdown.cancelled() => break,
        };
        match retry {
            Retry::Uploaded => tended.uploaded += 1,
            Retry::NothingToUpload | Retry::StillFailing => tended.kept += 1,
        }
    }
    tended
}

/// The entries of `_failed/` with their modification times, oldest first.
async fn failed_entries(failed: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime)>> {
    let mut found = Vec::new();
    let mut entries = match tokio::fs::read_dir(failed).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        let modified = entry.metadata().await?.modified()?;
        found.push((entry.path(), modified));
    }
    found.sort_by_key(|(_, modified)| *modified);
    Ok(found)
}

/// Deletes an entry kept past `FAILED_KEEP_DAYS`.
async fn prune(entry: &Path) {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    let removed = match tokio::fs::metadata(entry).await {
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(entry).await,
        _ => tokio::fs::remove_file(entry).await,
    };
    match removed {
        Ok(()) => tracing::warn!(entry = %name, "failed recording deleted after FAILED_KEEP_DAYS"),
        Err(e) => {
            tracing::warn!(entry = %name, error = %e, "cannot delete an expired failed recording")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

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

    #[test]
    fn entries_expire_after_the_keep_time_by_the_given_clock() {
        let t0 = SystemTime::UNIX_EPOCH + DAY * 1000;
        assert!(!expired(t0, t0, 7 * DAY));
        assert!(!expired(t0, t0 + 7 * DAY - Duration::from_secs(1), 7 * DAY));
        assert!(expired(t0, t0 + 7 * DAY, 7 * DAY));
        assert!(
            !expired(t0 + DAY, t0, 7 * DAY),
            "a future mtime is not an age"
        );
    }

    #[tokio::test]
    async fn failed_entries_are_listed_oldest_first_and_a_missing_dir_is_empty() {
        let root = tempfile::tempdir().unwrap();
        let failed = root.path().join(FAILED_DIR);
        assert!(failed_entries(&failed).await.unwrap().is_empty());
        std::fs::create_dir_all(failed.join("b")).unwrap();
        std::fs::create_dir_all(failed.join("a")).unwrap();
        let old = SystemTime::now() - 10 * DAY;
        std::fs::File::open(failed.join("b"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let listed = failed_entries(&failed).await.unwrap();
        let names: Vec<_> = listed
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(listed[0].1, old);
        prune(&listed[0].0).await;
        assert!(!failed.join("b").exists());
        assert!(failed.join("a").exists());
    }
}
