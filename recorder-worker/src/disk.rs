//! The disk under `RECORD_DIR`: the guard that keeps the worker from taking cameras and writing
//! segments while free space is below `MIN_FREE_DISK_MB`, and the upkeep of `RECORD_DIR/_failed/`.
//!
//! - **The guard** ([`DiskGuard`]) is asked before the worker takes a camera, at every segment a
//!   capture closes, and every [`CHECK_INTERVAL`] besides. Below the floor the worker takes no
//!   camera (the site's workers with room do), its captures pause (`disk_full`), `/ready`
//!   answers 503 with the reason, `disk_below_floor` is 1, and one warning is logged when the floor is crossed and one
//!   line when there is room again. The guard frees nothing: a recording not yet uploaded is never
//!   deleted to make room. Free space comes from an injectable [`FreeSpace`] source (`statvfs` in
//!   production) so the rules are tested without filling a disk.
//! - **`_failed/`** ([`tend_failed`]), every [`FAILED_SWEEP_INTERVAL`] from the start: an entry
//!   older than `FAILED_KEEP_DAYS` (by its directory's modification time) is deleted, uploaded or
//!   not; every other one holding a playable clip has its upload tried once more
//!   ([`crate::finish::retry_failed`]), which removes it when the upload is verified.

use camrec_shared::backoff::sleep_or_cancel;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use crate::finish::{retry_failed, Retry};
use crate::manifest::FAILED_DIR;
use crate::worker::Shared;

/// How often the guard looks at the disk on its own, and how often a worker below the floor
/// looks again before pulling.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often `_failed/` is tended (uploads retried, old entries deleted).
pub const FAILED_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Where the guard learns the free space of a directory's file system, in bytes.
pub type FreeSpace = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// The space an unprivileged process may still write on `path`'s file system.
pub fn statvfs_free(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// One look at the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// `None` when the free space could not be read.
    pub free_bytes: Option<u64>,
    pub floor_bytes: u64,
}

impl Reading {
    /// Room for new work: the free space is known and at least the floor. A disk that cannot be
    /// measured counts as full: a worker that cannot stat `RECORD_DIR` cannot trust writing to it.
    pub fn has_room(&self) -> bool {
        self.free_bytes.is_some_and(|free| free >= self.floor_bytes)
    }
}

/// A change worth one log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crossing {
    Below,
    Back,
}

/// Whether going from `before` (`None`: never looked) to `now` crosses the floor. A worker that
/// starts with room says nothing; one that starts below says so.
fn crossing(before: Option<bool>, now: bool) -> Option<Crossing> {
    match (before, now) {
        (None | Some(true), false) => Some(Crossing::Below),
        (Some(false), true) => Some(Crossing::Back),
        _ => None,
    }
}

/// Watches the free space of `RECORD_DIR` against `MIN_FREE_DISK_MB`.
pub struct DiskGuard {
    dir: PathBuf,
    floor_bytes: u64,
    free_space: FreeSpace,
    /// Whether the last look found room (`None` before the first).
    had_room: Mutex<Option<bool>>,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, floor_bytes: u64, free_space: FreeSpace) -> Self {
        Self {
            dir,
            floor_bytes,
            free_space,
            had_room: Mutex::new(None),
        }
    }

    /// Looks at the disk now: updates the gauges and logs a crossing of the floor.
    pub fn check(&self) -> Reading {
        let free = (self.free_space)(&self.dir);
        let reading = Reading {
            free_bytes: free.as_ref().ok().copied(),
            floor_bytes: self.floor_bytes,
        };
        let room = reading.has_room();
        if let Some(free) = reading.free_bytes {
            metrics::gauge!("disk_free_bytes").set(free as f64);
        }
        metrics::gauge!("disk_floor_bytes").set(self.floor_bytes as f64);
        metrics::gauge!("disk_below_floor").set(if room { 0.0 } else { 1.0 });
        let before = self
            .had_room
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(room);
        match (crossing(before, room), free) {
            (Some(Crossing::Below), Ok(free)) => tracing::warn!(
                free_bytes = free,
                floor_bytes = self.floor_bytes,
                "free disk below MIN_FREE_DISK_MB: taking no new recordings"
            ),
            (Some(Crossing::Below), Err(e)) => tracing::warn!(
                error = %e,
                "cannot read the free disk space of RECORD_DIR: taking no new recordings"
            ),
            (Some(Crossing::Back), _) => tracing::info!(
                free_bytes = reading.free_bytes,
                floor_bytes = self.floor_bytes,
                "free disk back above MIN_FREE_DISK_MB: taking recordings again"
            ),
            (None, _) => {}
        }
        reading
    }

    /// Returns once there is room (true), or when `cancel` fires first (false).
    pub async fn wait_for_room(&self, cancel: &CancellationToken) -> bool {
        while !self.check().has_room() {
            if !sleep_or_cancel(CHECK_INTERVAL, cancel).await {
                return false;
            }
        }
        true
    }

    /// Looks at the disk every [`CHECK_INTERVAL`] until `cancel`, so the gauges and the log
    /// follow the disk while no work is pulled.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            self.check();
            if !sleep_or_cancel(CHECK_INTERVAL, &cancel).await {
                return;
            }
        }
    }
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
pub async fn keep_failed(shared: Arc<Shared>) {
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
pub async fn tend_failed(shared: &Shared, now: SystemTime) -> Tended {
    let mut tended = Tended::default();
    let entries = match failed_entries(&shared.config.record_dir.join(FAILED_DIR)).await {
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
        if expired(modified, now, shared.config.failed_keep) {
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
    use std::sync::atomic::{AtomicU64, Ordering};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A guard over a disk whose free space the test sets.
    fn guard(floor: u64) -> (DiskGuard, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(0));
        let source = free.clone();
        let guard = DiskGuard::new(
            PathBuf::from("/unused"),
            floor,
            Arc::new(move |_: &Path| Ok(source.load(Ordering::SeqCst))),
        );
        (guard, free)
    }

    #[test]
    fn room_means_at_least_the_floor_and_an_unreadable_disk_has_none() {
        let (guard, free) = guard(100);
        free.store(100, Ordering::SeqCst);
        assert!(guard.check().has_room());
        free.store(99, Ordering::SeqCst);
        assert_eq!(
            guard.check(),
            Reading {
                free_bytes: Some(99),
                floor_bytes: 100
            }
        );
        assert!(!guard.check().has_room());
        let broken = DiskGuard::new(
            PathBuf::from("/unused"),
            0,
            Arc::new(|_: &Path| Err(std::io::Error::other("no statvfs"))),
        );
        assert!(!broken.check().has_room(), "a floor of 0 needs a reading");
    }

    #[test]
    fn the_floor_is_logged_once_when_crossed_and_once_when_back() {
        assert_eq!(crossing(None, true), None, "a start with room is quiet");
        assert_eq!(crossing(None, false), Some(Crossing::Below));
        assert_eq!(crossing(Some(true), false), Some(Crossing::Below));
        assert_eq!(crossing(Some(false), false), None);
        assert_eq!(crossing(Some(false), true), Some(Crossing::Back));
        assert_eq!(crossing(Some(true), true), None);
    }

    #[tokio::test]
    async fn waiting_for_room_ends_with_room_or_with_the_shutdown() {
        let (guard, free) = guard(10);
        free.store(10, Ordering::SeqCst);
        let cancel = CancellationToken::new();
        assert!(guard.wait_for_room(&cancel).await);
        free.store(9, Ordering::SeqCst);
        cancel.cancel();
        assert!(!guard.wait_for_room(&cancel).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_disk_is_looked_at_again_until_there_is_room() {
        let (guard, free) = guard(10);
        let guard = Arc::new(guard);
        let cancel = CancellationToken::new();
        let waiting = tokio::spawn({
            let (guard, cancel) = (guard.clone(), cancel.clone());
            async move { guard.wait_for_room(&cancel).await }
        });
        tokio::time::sleep(CHECK_INTERVAL * 3).await;
        assert!(!waiting.is_finished(), "no room, no work");
        free.store(10, Ordering::SeqCst);
        tokio::time::sleep(CHECK_INTERVAL).await;
        assert!(waiting.await.unwrap());
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
