//! Who owns which recording, and stop requests, in the KV bucket `camrec_recordings` (ADR 0001).
//!
//! - `lease.<playback_id>`: created only-if-absent by the worker that takes the recording; its
//!   success is ownership, so a redelivered or duplicated `event.created` never starts a second
//!   FFmpeg. The owner refreshes it (compare-and-set) and sets `state=done` at the end.
//! - `stop.<playback_id>`: written by whichever worker receives `event.ended`. Every worker
//!   watches `stop.>` and signals the matching local recording through [`StopRegistry`].
//!
//! A [`LeaseKeeper`] refreshes a lease beside the work it guards, never inside a recording's
//! loops: a KV round trip that hangs in a NATS outage delays no stop.

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation},
};
use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// The value of `stop.<playback_id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopValue {
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
}

fn lease_key(id: PlaybackId) -> String {
    format!("lease.{id}")
}

fn stop_key(id: PlaybackId) -> String {
    format!("stop.{id}")
}

/// The playback of a `stop.<playback_id>` key.
pub fn parse_stop_key(key: &str) -> Option<PlaybackId> {
    key.strip_prefix("stop.")?.parse().ok()
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
        let kv = camrec_shared::streams::open_recordings_bucket(js)
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

    /// Whether a stop was requested for the playback.
    pub async fn stop_requested(&self, id: PlaybackId) -> Result<bool, OwnershipError> {
        Ok(self.kv.get(stop_key(id)).await?.is_some())
    }

    /// Writes the stop marker; the owner, wherever it runs, sees it through its watch.
    pub async fn request_stop(&self, id: PlaybackId) -> Result<(), OwnershipError> {
        let v = StopValue {
            requested_by: self.worker_id.clone(),
            requested_at: Utc::now(),
        };
        self.kv
            .put(
                stop_key(id),
                serde_json::to_vec(&v).unwrap_or_default().into(),
            )
            .await?;
        Ok(())
    }

    /// Watches `stop.>` and signals the local recordings in `registry` until `cancel`. The watch
    /// is re-established after a NATS outage; after each (re)start every registered recording
    /// checks its key once, so a stop written while the watch was down is not missed.
    pub async fn watch_stops(&self, registry: StopRegistry, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.kv.watch("stop.>").await {
                Ok(mut watch) => {
                    backoff.reset();
                    for id in registry.ids() {
                        if matches!(self.stop_requested(id).await, Ok(true)) {
                            registry.signal(id);
                        }
                    }
                    loop {
                        let entry = tokio::select! {
                            _ = cancel.cancelled() => return,
                            e = watch.next() => e,
                        };
                        match entry {
                            Some(Ok(entry)) if entry.operation == Operation::Put => {
                                if let Some(id) = parse_stop_key(&entry.key) {
                                    registry.signal(id);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "stop watch failed, re-watching");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch stop requests, retrying"),
            }
            if !sleep_or_cancel(backoff.next_delay(), &cancel).await {
                return;
            }
        }
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

/// The recordings running in this worker, by playback, each with the token that stops it.
#[derive(Clone, Default)]
pub struct StopRegistry(Arc<Mutex<HashMap<PlaybackId, CancellationToken>>>);

impl StopRegistry {
    /// Registers a recording and returns the token its stop cancels.
    pub fn register(&self, id: PlaybackId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    pub fn remove(&self, id: PlaybackId) {
        self.lock().remove(&id);
    }

    /// Stops the recording of `id` if it runs here; returns whether it does.
    pub fn signal(&self, id: PlaybackId) -> bool {
        match self.lock().get(&id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    pub fn ids(&self) -> Vec<PlaybackId> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlaybackId, CancellationToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_keys_round_trip() {
        let id = PlaybackId::new();
        assert_eq!(parse_stop_key(&stop_key(id)), Some(id));
        assert_eq!(parse_stop_key(&lease_key(id)), None);
        assert_eq!(parse_stop_key("stop.nope"), None);
    }

    #[test]
    fn the_registry_stops_only_registered_recordings() {
        let reg = StopRegistry::default();
        let a = PlaybackId::new();
        let token = reg.register(a);
        assert!(!reg.signal(PlaybackId::new()));
        assert!(reg.signal(a));
        assert!(token.is_cancelled());
        reg.remove(a);
        assert!(reg.ids().is_empty());
    }
}
