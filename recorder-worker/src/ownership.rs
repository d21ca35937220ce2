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

    /// Takes over a recording another worker left open (`state=recording`), when this worker
    /// holds the recording's camera now: compare-and-set on the lease's revision, so two workers
    /// never both continue it. Returns the lease and the previous owner; `None` when there is
    /// nothing to continue (finished, or this worker's own).
    pub async fn resume(&self, id: PlaybackId) -> Result<Option<(Lease, String)>, OwnershipError> {
        let Some(entry) = self.kv.entry(lease_key(id)).await? else {
            return Ok(None);
        };
        let Ok(value) = serde_json::from_slice::<LeaseValue>(&entry.value) else {
            return Ok(None);
        };
        if value.state != LeaseState::Recording || value.worker_id == self.worker_id {
            return Ok(None);
        }
        match self
            .kv
            .update(
                lease_key(id),
                self.lease_value(LeaseState::Recording),
                entry.revision,
            )
            .await
        {
            Ok(revision) => Ok(Some((
                self.lease(id, revision, LeaseState::Recording),
                value.worker_id,
            ))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes over the lease of a recording this host left behind (crash recovery), by
    /// compare-and-set on the revision it reads: a worker that continued the recording in the
    /// meantime (it took the camera over) keeps it, and this fails.
    pub async fn take_over(&self, id: PlaybackId) -> Result<Lease, OwnershipError> {
        let value = self.lease_value(LeaseState::Processing);
        let revision = match self.kv.entry(lease_key(id)).await? {
            Some(entry) => self.kv.update(lease_key(id), value, entry.revision).await?,
            None => self.kv.create(lease_key(id), value).await?,
        };
        Ok(self.lease(id, revision, LeaseState::Processing))
    }

    fn lease(&self, id: PlaybackId, revision: u64, state: LeaseState) -> Lease {
        Lease {
            ownership: self.clone(),
            id,
            revision,
            state,
            taken: false,
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
    /// Another worker took the recording over: this one writes the lease no more.
    taken: bool,
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
    /// refresh is logged and retried at the next heartbeat. A lease whose revision moved on is
    /// read back: still this worker's (a write whose answer was lost), it is refreshed on top;
    /// another worker's (it took the camera and the recording over), it is left to it for good.
    pub async fn refresh(&mut self, state: LeaseState) {
        if self.taken {
            return;
        }
        self.state = state;
        let value = self.ownership.lease_value(state);
        let key = lease_key(self.id);
        match self
            .ownership
            .kv
            .update(key.clone(), value.clone(), self.revision)
            .await
        {
            Ok(rev) => self.revision = rev,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let Ok(Some(entry)) = self.ownership.kv.entry(key.clone()).await else {
                    return;
                };
                let owner = serde_json::from_slice::<LeaseValue>(&entry.value)
                    .map(|v| v.worker_id)
                    .unwrap_or_default();
                if owner != self.ownership.worker_id {
                    tracing::warn!(playback_id = %self.id, %owner, "the recording was taken over by another worker");
                    self.taken = true;
                    return;
                }
                if let Ok(rev) = self.ownership.kv.update(key, value, entry.revision).await {
                    self.revision = rev;
                }
            }
            Err(e) => tracing::warn!(playback_id = %self.id, error = %e, "lease refresh failed"),
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

/// A message of the camera's consumer that a recording holds until it ends: renewed
/// ([`InProgress::progress`]) so the server does not hand it to another worker, acknowledged
/// when the recording is over. A worker that dies stops renewing it, and the camera's next
/// holder receives it ([`crate::consumer::ACK_WAIT`]).
#[derive(Clone)]
pub struct InProgress(async_nats::jetstream::Message);

impl InProgress {
    pub fn new(msg: async_nats::jetstream::Message) -> Self {
        Self(msg)
    }

    /// Tells the server the message is still being worked on.
    pub async fn progress(&self) {
        if let Err(e) = self
            .0
            .ack_with(async_nats::jetstream::AckKind::Progress)
            .await
        {
            tracing::debug!(subject = %self.0.subject, error = %e, "cannot renew a message in progress");
        }
    }

    /// The recording is over: never deliver it again.
    pub async fn done(&self) {
        if let Err(e) = self.0.ack().await {
            tracing::warn!(subject = %self.0.subject, error = %e, "cannot acknowledge a finished recording's message");
        }
    }
}

/// A recording running here: where its end arrives, and the messages it holds in progress.
struct Running {
    end: EndSender,
    held: Vec<InProgress>,
}

/// The recordings running in this worker, by playback, each with the channel its event's end
/// time arrives on.
#[derive(Clone, Default)]
pub struct StopRegistry(Arc<Mutex<HashMap<PlaybackId, Running>>>);

impl StopRegistry {
    /// Registers a recording and returns where its end arrives.
    pub fn register(&self, id: PlaybackId) -> watch::Receiver<Option<DateTime<Utc>>> {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(
            id,
            Running {
                end: tx,
                held: Vec::new(),
            },
        );
        rx
    }

    /// Forgets a recording that is over; returns the messages it held, to be acknowledged.
    pub fn remove(&self, id: PlaybackId) -> Vec<InProgress> {
        self.lock().remove(&id).map(|r| r.held).unwrap_or_default()
    }

    /// Whether the recording of `id` runs here.
    pub fn runs(&self, id: PlaybackId) -> bool {
        self.lock().contains_key(&id)
    }

    /// Tells the recording of `id`, if it runs here, that its event ended at `at`, and hands it
    /// the message that said so (`event.ended`), to hold until it ends; returns whether it runs
    /// here.
    pub fn signal(&self, id: PlaybackId, at: DateTime<Utc>, msg: Option<InProgress>) -> bool {
        match self.lock().get_mut(&id) {
            Some(r) => {
                r.end.send_replace(Some(at));
                r.held.extend(msg);
                true
            }
            None => false,
        }
    }

    /// The messages the recording of `id` holds besides its `event.created`.
    pub fn held_of(&self, id: PlaybackId) -> Vec<InProgress> {
        self.lock()
            .get(&id)
            .map(|r| r.held.clone())
            .unwrap_or_default()
    }

    pub fn ids(&self) -> Vec<PlaybackId> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PlaybackId, Running>> {
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
        assert!(!reg.signal(PlaybackId::new(), at, None));
        assert!(reg.runs(a));
        assert!(reg.signal(a, at, None));
        assert_eq!(*ended.borrow(), Some(at));
        assert!(reg.remove(a).is_empty());
        assert!(reg.ids().is_empty() && !reg.runs(a));
    }
}
