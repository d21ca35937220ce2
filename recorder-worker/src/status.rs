//! Status messages on `PLAYBACKS`: one [`Reporter`] per playback owns its sequence number and
//! publishes each status (an `Envelope<PlaybackStatus>`) with `Nats-Msg-Id` = `<playback_id>:<seq>`, waiting for the stream's ack
//! and retrying until it arrives (a status that never reaches the stream would leave the playback
//! stuck), for at most [`PUBLISH_RETRY_FOR`].

use async_nats::jetstream::{self, context::Publish};
use camrec_shared::messages::{Envelope, PlaybackStatus, StatusBody};
use camrec_shared::subjects::{playback_subject, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use chrono::Utc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How long one status is retried before the publish is given up.
pub const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(120);

/// A status that could not be published within [`PUBLISH_RETRY_FOR`].
#[derive(Debug, thiserror::Error)]
#[error("status {kind} of playback {playback_id} not acknowledged by the stream: {reason}")]
pub struct PublishError {
    pub playback_id: PlaybackId,
    pub kind: &'static str,
    pub reason: String,
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
}

/// Publishes the statuses of one playback, in order, with increasing `seq`.
pub struct Reporter {
    js: jetstream::Context,
    worker_id: String,
    subject: Subject,
    last_seq: u64,
}

impl Reporter {
    pub fn new(js: jetstream::Context, worker_id: String, subject: Subject) -> Self {
        Self {
            js,
            worker_id,
            subject,
            last_seq: 0,
        }
    }

    pub fn playback_id(&self) -> PlaybackId {
        self.subject.playback_id
    }

    /// Publishes `body` and waits for the stream's ack, retrying with backoff.
    pub async fn publish(&mut self, body: StatusBody) -> Result<u64, PublishError> {
        self.last_seq = next_seq(self.last_seq, now_micros());
        let msg = PlaybackStatus {
            playback_id: self.subject.playback_id,
            event_id: self.subject.event_id,
            camera_id: self.subject.camera_id,
            site: self.subject.site.clone(),
            worker_id: self.worker_id.clone(),
            seq: self.last_seq,
            body,
        };
        let kind = msg.body.kind();
        let subject = playback_subject(kind, &self.subject.site, self.subject.camera_id);
        let msg_id = msg.msg_id();
        let seq = msg.seq;
        let payload = Envelope::new(Utc::now(), msg).to_bytes();
        let deadline = Instant::now() + PUBLISH_RETRY_FOR;
        let mut backoff = Duration::from_millis(200);
        loop {
            let publish = Publish::build()
                .payload(payload.clone().into())
                .message_id(&msg_id);
            let result = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(playback_id = %self.subject.playback_id, seq, status = kind.as_token(), "status published");
                    return Ok(seq);
                }
                Err(reason) if Instant::now() + backoff > deadline => {
                    return Err(PublishError {
                        playback_id: self.subject.playback_id,
                        kind: kind.as_token(),
                        reason,
                    });
                }
                Err(reason) => {
                    tracing::warn!(playback_id = %self.subject.playback_id, status = kind.as_token(), %reason, "status publish failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
