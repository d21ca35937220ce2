//! Status messages on `PLAYBACKS`, sent off the recording's path. Each recording holds a
//! [`Reporter`], whose calls return at once; one background task per worker ([`run_publisher`])
//! owns the publishing, with `Nats-Msg-Id` = `<playback_id>:<seq>`, waiting for the stream's ack
//! and retrying with capped backoff for as long as it takes (a NATS outage has no time limit).
//!
//! - **State changes** (`recording`, `processing`, `completed`, `failed`) are written to the
//!   [spool](crate::spool) before [`Reporter::report`] returns and deleted only once the stream has
//!   acknowledged them. They are sent before any heartbeat, in spool order, which is the order they
//!   were reported per playback; at start, what a previous run left in the spool goes first.
//! - **Heartbeats** (`progress`, and `processing` repeated while a clip is finished) live in memory
//!   only, latest value wins: at most one per playback waits, replaced by newer figures, and
//!   dropped when a state change of its playback is reported after it (it would arrive with an
//!   older `seq` than a status already sent, which the projector ignores anyway).
//!
//! `seq` is assigned when a status is reported ([`next_seq`]), so the projector's monotonic apply
//! holds across spool replays and restarts.

use async_nats::jetstream::{self, context::Publish};
use camrec_shared::backoff::Backoff;
use camrec_shared::messages::{PlaybackStatus, StatusBody};
use camrec_shared::subjects::Site;
use camrec_shared::{CameraId, EventId, PlaybackId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::spool::{Outgoing, Spool, SpoolKey};

/// The first wait after a failed publish; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long one publish may take, ack included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one publish did not reach the stream.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Nats(#[from] jetstream::context::PublishError),
    #[error("no ack within {0:?}")]
    TimedOut(Duration),
}

/// The next sequence number: `max(last + 1, now in µs since the epoch)`, so it increases within a
/// run and across a restart without a persisted counter.
pub fn next_seq(last: u64, now_micros: u64) -> u64 {
    last.saturating_add(1).max(now_micros)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Who a playback's statuses are about.
#[derive(Clone, Debug)]
pub struct Subject {
    pub playback_id: PlaybackId,
    pub event_id: EventId,
    pub camera_id: CameraId,
    pub site: Site,
    /// The previous owner, when this worker took the camera over and continues its recording
    /// ([`PlaybackStatus::takes_over_from`]).
    pub takes_over_from: Option<String>,
}

/// The statuses waiting to be sent.
#[derive(Debug, Default)]
struct Pending {
    /// State changes (each also in the spool), sent first, in key order.
    changes: BTreeMap<SpoolKey, Outgoing>,
    /// The latest heartbeat of each playback.
    heartbeats: HashMap<PlaybackId, Outgoing>,
}

/// What the publisher sends next.
enum Next {
    /// Stays pending (and spooled) until acknowledged.
    Change(Outgoing),
    /// Taken out of the queue; put back only if nothing newer of its playback came meanwhile.
    Heartbeat(Outgoing),
}

impl Next {
    fn message(&self) -> &Outgoing {
        match self {
            Next::Change(m) | Next::Heartbeat(m) => m,
        }
    }
}

impl Pending {
    fn add_change(&mut self, m: Outgoing) {
        let id = m.key.playback_id;
        if self.heartbeats.get(&id).is_some_and(|h| h.key < m.key) {
            self.heartbeats.remove(&id);
        }
        self.changes.insert(m.key, m);
    }

    fn add_heartbeat(&mut self, m: Outgoing) {
        let id = m.key.playback_id;
        let newer_change = self
            .changes
            .keys()
            .any(|k| k.playback_id == id && k > &m.key);
        let newer_beat = self.heartbeats.get(&id).is_some_and(|h| h.key > m.key);
        if !newer_change && !newer_beat {
            self.heartbeats.insert(id, m);
        }
    }

    /// The oldest state change, else the oldest heartbeat.
    fn next(&mut self) -> Option<Next> {
        if let Some(m) = self.changes.values().next() {
            return Some(Next::Change(m.clone()));
        }
        let id = self.heartbeats.values().map(|m| m.key).min()?.playback_id;
        self.heartbeats.remove(&id).map(Next::Heartbeat)
    }

    fn acknowledged(&mut self, key: SpoolKey) {
        self.changes.remove(&key);
    }
}

/// The queue the reporters fill and the publisher empties.
struct Queue {
    spool: Spool,
    pending: Mutex<Pending>,
    /// Wakes the publisher when something is queued.
    wake: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push_change(&self, m: Outgoing) {
        self.lock().add_change(m);
        self.wake.notify_one();
    }

    fn push_heartbeat(&self, m: Outgoing) {
        self.lock().add_heartbeat(m);
        self.wake.notify_one();
    }

    /// How many state changes wait (all of them in the spool).
    fn held(&self) -> usize {
        self.lock().changes.len()
    }

    /// `next` reached the stream: a state change leaves the spool.
    async fn sent(&self, next: Next) {
        if let Next::Change(m) = next {
            if let Err(e) = self.spool.remove(m.key).await {
                tracing::warn!(file = m.key.file_name(), error = %e, "cannot remove a sent status from the spool");
            }
            self.lock().acknowledged(m.key);
        }
    }

    /// `next` did not reach the stream: a state change is still pending; a heartbeat goes back
    /// unless a newer status of its playback came meanwhile.
    fn retry_later(&self, next: Next) {
        if let Next::Heartbeat(m) = next {
            self.lock().add_heartbeat(m);
        }
    }
}

/// The worker's side of the publisher: hands out reporters.
#[derive(Clone)]
pub struct StatusPublisher {
    queue: Arc<Queue>,
    worker_id: String,
}

impl StatusPublisher {
    /// Opens the spool in `record_dir`; what it holds is queued to be sent first.
    pub async fn open(record_dir: &std::path::Path, worker_id: String) -> std::io::Result<Self> {
        let (spool, held) = Spool::open(record_dir).await?;
        if !held.is_empty() {
            tracing::info!(
                spooled = held.len(),
                "statuses left in the spool by the last run are sent first"
            );
        }
        let mut pending = Pending::default();
        for m in held {
            pending.add_change(m);
        }
        Ok(Self {
            queue: Arc::new(Queue {
                spool,
                pending: Mutex::new(pending),
                wake: Notify::new(),
            }),
            worker_id,
        })
    }

    /// How many state changes wait in the spool for NATS.
    pub fn spooled(&self) -> usize {
        self.queue.held()
    }

    /// The reporter of one playback.
    pub fn reporter(&self, subject: Subject) -> Reporter {
        Reporter {
            queue: self.queue.clone(),
            worker_id: self.worker_id.clone(),
            subject,
            last_seq: 0,
        }
    }
}

/// Reports the statuses of one playback, with increasing `seq`. Never waits for NATS.
pub struct Reporter {
    queue: Arc<Queue>,
    worker_id: String,
    subject: Subject,
    last_seq: u64,
}

impl Reporter {
    pub fn playback_id(&self) -> PlaybackId {
        self.subject.playback_id
    }

    /// Reports a state change: it is in the spool when this returns (only a failing disk keeps it
    /// in memory alone, logged), and is sent in order whenever NATS takes it.
    pub async fn report(&mut self, body: StatusBody) {
        let m = self.outgoing(body);
        if let Err(e) = self.queue.spool.put(&m).await {
            tracing::error!(playback_id = %self.subject.playback_id, error = %e, "cannot spool a status; it is kept in memory only");
        }
        self.queue.push_change(m);
    }

    /// Reports a heartbeat; replaces the one of this playback still waiting, if any.
    pub fn heartbeat(&mut self, body: StatusBody) {
        let m = self.outgoing(body);
        self.queue.push_heartbeat(m);
    }

    fn outgoing(&mut self, body: StatusBody) -> Outgoing {
        self.last_seq = next_seq(self.last_seq, now_micros());
        Outgoing::new(PlaybackStatus {
            playback_id: self.subject.playback_id,
            event_id: self.subject.event_id,
            camera_id: self.subject.camera_id,
            site: self.subject.site.clone(),
            worker_id: self.worker_id.clone(),
            seq: self.last_seq,
            takes_over_from: self.subject.takes_over_from.clone(),
            body,
        })
    }
}

/// Sends the queued statuses until `closing` is cancelled and no state change is left (the
/// heartbeats still waiting are dropped then). Stop it harder by aborting the task: what is
/// unsent stays in the spool for the next start.
pub async fn run_publisher(
    publisher: StatusPublisher,
    js: jetstream::Context,
    closing: CancellationToken,
) {
    let queue = publisher.queue;
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut outage = false;
    while !(closing.is_cancelled() && queue.held() == 0) {
        let Some(next) = queue.lock().next() else {
            tokio::select! {
                _ = queue.wake.notified() => {}
                _ = closing.cancelled() => {}
            }
            continue;
        };
        match publish(&js, next.message()).await {
            Ok(()) => {
                tracing::debug!(msg_id = %next.message().msg_id, "status published");
                backoff.reset();
                queue.sent(next).await;
                if outage && queue.held() == 0 {
                    tracing::info!("NATS takes statuses again; the spool is empty");
                    outage = false;
                }
            }
            Err(e) => {
                if !outage {
                    tracing::warn!(error = %e, spooled = queue.held(), "cannot publish statuses; the spool holds them until NATS is back");
                    outage = true;
                }
                queue.retry_later(next);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Publishes `m` and waits for the stream's ack.
async fn publish(js: &jetstream::Context, m: &Outgoing) -> Result<(), PublishError> {
    let send = async {
        let publish = Publish::build()
            .payload(m.payload.clone())
            .message_id(&m.msg_id);
        js.send_publish(m.subject.clone(), publish).await?.await?;
        Ok(())
    };
    tokio::time::timeout(PUBLISH_TIMEOUT, send)
        .await
        .map_err(|_| PublishError::TimedOut(PUBLISH_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(id: PlaybackId, seq: u64, body: StatusBody) -> Outgoing {
        Outgoing::new(PlaybackStatus {
            playback_id: id,
            event_id: EventId::new(),
            camera_id: CameraId::new(),
            site: Site::default(),
            worker_id: "w1".into(),
            seq,
            takes_over_from: None,
            body,
        })
    }

    fn change(id: PlaybackId, seq: u64) -> Outgoing {
        status(
            id,
            seq,
            StatusBody::Recording {
                started_at: chrono::Utc::now(),
            },
        )
    }

    fn beat(id: PlaybackId, seq: u64) -> Outgoing {
        status(
            id,
            seq,
            StatusBody::Progress {
                frames: seq,
                fps: None,
                bitrate_kbps: None,
                bytes: 0,
                media_time_sec: 0.0,
            },
        )
    }

    /// Sends everything pending as a publisher that always succeeds would; the msg ids in order.
    fn drain(p: &mut Pending) -> Vec<String> {
        let mut sent = Vec::new();
        while let Some(next) = p.next() {
            sent.push(next.message().msg_id.clone());
            if let Next::Change(m) = next {
                p.acknowledged(m.key);
            }
        }
        sent
    }

    #[test]
    fn state_changes_go_first_in_order_and_only_the_latest_heartbeat_waits() {
        let (a, b) = (PlaybackId::new(), PlaybackId::new());
        let mut p = Pending::default();
        p.add_heartbeat(beat(b, 10));
        p.add_heartbeat(beat(b, 11));
        p.add_change(change(a, 30));
        p.add_change(change(b, 20));
        p.add_change(change(a, 40));
        p.add_heartbeat(beat(a, 41));
        assert_eq!(
            drain(&mut p),
            [
                format!("{b}:20"),
                format!("{a}:30"),
                format!("{a}:40"),
                format!("{a}:41")
            ],
            "b's heartbeats predate its state change: dropped, never sent after it"
        );
    }

    #[test]
    fn a_state_change_stays_until_acknowledged_and_a_failed_heartbeat_yields_to_newer_news() {
        let id = PlaybackId::new();
        let mut p = Pending::default();
        p.add_change(change(id, 1));
        for _ in 0..2 {
            assert!(matches!(p.next(), Some(Next::Change(m)) if m.key.seq == 1));
        }
        p.acknowledged(SpoolKey {
            seq: 1,
            playback_id: id,
        });
        p.add_heartbeat(beat(id, 2));
        let Some(Next::Heartbeat(failed)) = p.next() else {
            panic!("the heartbeat is next");
        };
        // While it was out, a state change came: the failed heartbeat is not put back.
        p.add_change(change(id, 3));
        p.add_heartbeat(failed);
        assert_eq!(drain(&mut p), [format!("{id}:3")]);
        // A heartbeat that failed alone is tried again.
        p.add_heartbeat(beat(id, 4));
        let Some(Next::Heartbeat(failed)) = p.next() else {
            panic!("the heartbeat is next");
        };
        p.add_heartbeat(failed);
        assert_eq!(drain(&mut p), [format!("{id}:4")]);
    }

    #[test]
    fn seq_follows_the_clock_and_never_repeats() {
        assert_eq!(next_seq(0, 1_000), 1_000);
        assert_eq!(next_seq(1_000, 1_000), 1_001);
        assert_eq!(next_seq(5_000, 1_000), 5_001);
        assert_eq!(next_seq(u64::MAX, 1), u64::MAX);
    }

    proptest! {
        #[test]
        fn seq_strictly_increases(last in 0u64..u64::MAX, now in any::<u64>()) {
            prop_assert!(next_seq(last, now) > last);
            prop_assert!(next_seq(last, now) >= now);
        }
    }
}
