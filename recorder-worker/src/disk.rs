//! The disk under `RECORD_DIR`: the guard that keeps the worker from taking cameras and writing
//! segments while free space is below `MIN_FREE_DISK_MB`.
//!
//! - **The guard** ([`DiskGuard`]) is asked before the worker takes a camera, at every segment a
//!   capture closes, and every [`CHECK_INTERVAL`] besides. Below the floor the worker takes no
//!   camera (the site's workers with room do), its captures pause (`disk_full`), `/ready`
//!   answers 503 with the reason, `disk_below_floor` is 1, and one warning is logged when the
//!   floor is crossed and one line when there is room again. The guard frees nothing: a recording not yet uploaded is never
//!   deleted to make room. Free space comes from an injectable [`FreeSpace`] source (`statvfs` in
//!   production) so the rules are tested without filling a disk.

use camrec_shared::backoff::sleep_or_cancel;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the guard looks at the disk on its own (the gauges follow the disk while no
/// segment is written).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

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
                "free disk below MIN_FREE_DISK_MB: taking no camera, captures paused"
            ),
            (Some(Crossing::Below), Err(e)) => tracing::warn!(
                error = %e,
                "cannot read the free disk space of RECORD_DIR: taking no camera, captures paused"
            ),
            (Some(Crossing::Back), _) => tracing::info!(
                free_bytes = reading.free_bytes,
                floor_bytes = self.floor_bytes,
                "free disk back above MIN_FREE_DISK_MB: capturing again"
            ),
            (None, _) => {}
        }
        reading
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

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
}
