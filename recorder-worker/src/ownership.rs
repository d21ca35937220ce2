//! Who owns which recording, in the KV bucket `camrec_recordings` (ADR 0001), and the local
//! registry that delivers an event's end to its recording.
//!
//! - `lease.<playback_id>`: created only-if-absent by the worker that takes the recording; its
//!   success is ownership, so a redelivered or duplicated `event.created` never starts a second
//!   recording. The owner refreshes it (compare-and-set) and sets `state=done` at the end.
//! - `event.ended` reaches the worker that holds the camera (its events come through the
//!   camera's own consumer, [`crate::consumer`]), which hands the end time to the recording
//!   through [`StopRegistry`].
//!
//! A [`LeaseKeeper`] refreshes a lease beside the work it guards, never inside a recording's
//! loops: a KV round trip that hangs in a NATS outage delays no stop.

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind},
};
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A KV operation on the recordings bucket that failed, by kind.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("cannot open the recordings bucket: {0}")]
    Open(#[source] async_nats::Error),
    #[error("recordings bucket create: {0}")]
    Create(#[from] kv::CreateError),
    #[error("recordings bucket put: {0}")]
    Put(#[from] kv::PutError),
    #[error("recordings bucket get: {0}")]
    Get(#[from] kv::EntryError),
    #[error("recordings bucket update: {0}")]
    Update(#[from] kv::UpdateError),
}

/// Where a recording is, as its lease says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Recording,
    Processing,
    Done,
    Failed,
}

/// The value of `lease.<playback_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub worker_id: String,
    pub state: LeaseState,
    pub heartbeat_at: DateTime<Utc>,
}

fn lease_key(id: PlaybackId) -> String {
    format!("lease.{id}")
}

/// The recordings bucket, as one worker sees it.
#[derive(Clone)]
pub struct Ownership {
    kv: kv::Store,
    worker_id: String,
}

impl Ownership {
    /// Opens the bucket, which event-api creates (`camrec_shared::streams::ensure_streams`).
    pub async fn open(js: &jetstream::Context, worker_id: String) -> Result<Self, OwnershipError> {
        let kv =
            camrec_shared::streams::open_bucket(js, camrec_shared::subjects::RECORDINGS_BUCKET)
                .await
                .map_err(OwnershipError::Open)?;
        Ok(Self { kv, worker_id })
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn lease_value(&self, state: LeaseState) -> bytes::Bytes {
        let v = LeaseValue {
            worker_id: self.worker_id.clone(),
            state,
            heartbeat_at: Utc::now(),
        };
        serde_json::to_vec(&v).unwrap_or_default().into()
    }

    /// Takes the recording if nobody has: `Some(lease)` means this worker owns it, `None` that
    /// another claim exists (a duplicate or redelivered message).
    pub async fn claim(&self, id: PlaybackId) -> Result<Option<Lease>, OwnershipError> {
        match self
            .kv
            .create(lease_key(id), self.lease_value(LeaseState::Recording))
            .await
        {
            Ok(revision) => Ok(Some(self.lease(id, revision, LeaseState::Recording))),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes over the lease of a recording this host left behind (crash recovery).
    pub async fn take_over(&self, id: PlaybackId) -> Result<Lease, OwnershipError> {
        let revision = self
            .kv
            .put(lease_key(id), self.lease_value(LeaseState::Processing))
            .await?;
        Ok(self.lease(id, revision, LeaseState::Processing))
    }

    fn lease(&self, id: PlaybackId, revision: u64, state: LeaseState) -> Lease {
        Lease {
            ownership: self.clone(),
            id,
            revision,
            state,
        }
    }

    /// The current lease of a playback, if any.
    pub async fn lease_of(&self, id: PlaybackId) -> Result<Option<LeaseValue>, OwnershipError> {
        let bytes = self.kv.get(lease_key(id)).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

/// This worker's claim on one recording.
pub struct Lease {
    ownership: Ownership,
    id: PlaybackId,
    revision: u64,
    state: LeaseState,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("playback_id", &self.id)
            .field("revision", &self.revision)
            .field("state", &self.state)
            .finish()
    }
}

impl Lease {
    pub fn playback_id(&self) -> PlaybackId {
        self.id
    }

    /// Refreshes the heartbeat and sets `state`, compare-and-set on the last revision. A failed
    /// refresh is logged and retried at the next heartbeat: the lease only guards against a
    /// second start, which its mere existence already does.
    pub async fn refresh(&mut self, state: LeaseState) {
        self.state = state;
        let value = self.ownership.lease_value(state);
        match self
            .ownership
            .kv
            .update(lease_key(self.id), value.clone(), self.revision)
            .await
        {
            Ok(rev) => self.revision = rev,
            Err(e) => {
                tracing::warn!(playback_id = %self.id, error = %e, "lease refresh failed");
                if let Ok(rev) = self.ownership.kv.put(lease_key(self.id), value).await {
                    self.revision = rev;
                }
            }
        }
    }
}

/// How long [`LeaseKeeper::settle`] waits for the final state to be written.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// Keeps one lease fresh in the background: [`LeaseKeeper::keep`] runs beside the work the lease
/// guards (in the same task, so it ends with it) and refreshes the lease every
/// `LEASE_HEARTBEAT_SEC` and at once when [`LeaseKeeper::set`] changes its state; the work itself
/// never waits for the bucket, except for the final state ([`LeaseKeeper::settle`]), briefly.
pub struct LeaseKeeper {
    lease: tokio::sync::Mutex<Lease>,
    state: watch::Sender<LeaseState>,
}

impl LeaseKeeper {
    pub fn new(lease: Lease) -> Self {
        let (state, _) = watch::channel(lease.state);
        Self {
            lease: tokio::sync::Mutex::new(lease),
            state,
        }
    }

    /// Refreshes the lease until dropped.
    pub async fn keep(&self, every: Duration) -> Infallible {
        let mut changed = self.state.subscribe();
        let mut tick = tokio::time::interval(every);
        tick.reset();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = changed.changed() => {}
            }
            let state = *changed.borrow_and_update();
            self.lease.lock().await.refresh(state).await;
        }
    }

    /// The lease's new state; written by [`LeaseKeeper::keep`] right away. Returns at once.
    pub fn set(&self, state: LeaseState) {
        self.state.send_replace(state);
    }

    /// Writes the final state itself, waiting at most [`SETTLE_WITHIN`] (a NATS outage must not
    /// hold up the end of a recording whose last status is safe in the status spool; a lease left
    /// in an older state only keeps saying who took the recording).
    pub async fn settle(&self, state: LeaseState) {
        // A later refresh by the ticker writes this state too; it need not be woken for it.
        self.state.send_if_modified(|s| {
            *s = state;
            false
        });
        let write = async { self.lease.lock().await.refresh(state).await };
        if tokio::time::timeout(SETTLE_WITHIN, write).await.is_err() {
            tracing::warn!(?state, "the lease's final state is not written");
        }
    }
}

/// Where a recording learns when its event ended (`None` while it is open).
type EndSender = watch::Sender<Option<DateTime<Utc>>>;

/// The recordings running in this worker, by playback, each with the channel its event's end
/// time arrives on.
#[derive(Clone, Default)]
pub struct StopRegistry(Arc<Mutex<HashMap<PlaybackId, EndSender>>>);

impl StopRegistry {
    /// Registers a recording and returns where its end arrives.
    pub fn register(&self, id: PlaybackId) -> watch::Receiver<Option<DateTime<Utc>>> {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(id, tx);
        rx
    }

    pub fn remove(&self, id: PlaybackId) {
        self.lock().remove(&id);
    }

    /// Tells the recording of `id`, if it runs here, that its event ended at `at`; returns
    /// whether it runs here.
    pub fn signal(&self, id: PlaybackId, at: DateTime<Utc>) -> bool {
        match self.lock().get(&id) {
            Some(tx) => {
                tx.send_replace(Some(at));
                true
            }
            None => false,
        }
    }

    pub fn ids(&self) -> Vec<PlaybackId> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlaybackId, EndSender>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_stops_only_registered_recordings() {
        let reg = StopRegistry::default();
        let a = PlaybackId::new();
        let ended = reg.register(a);
        let at = Utc::now();
        assert!(!reg.signal(PlaybackId::new(), at));
        assert!(reg.signal(a, at));
        assert_eq!(*ended.borrow(), Some(at));
        reg.remove(a);
        assert!(reg.ids().is_empty());
    }
}
