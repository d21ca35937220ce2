//! The durable pull consumer of one camera on `EVENTS` (`cam_<site>_<camera_id>`, both kinds of
//! event message of that camera, in order), pulled only by the worker that holds the camera's
//! capture lease ([`crate::placement`]), and what that worker does with each message. A camera
//! that moves to another worker keeps its consumer: the new holder gets what the old one had not
//! acknowledged. Whether a message is acked, nak'ed or terminated is decided in exactly one
//! function per kind of message: [`created_disposition`] and [`ended_disposition`].

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
    AckKind, Message,
};
use camrec_shared::messages::{Envelope, EventCreated, EventEnded};
use camrec_shared::subjects::{camera_consumer_name, camera_event_filter, Site, EVENTS_STREAM};
use camrec_shared::{CameraId, PlaybackId};
use std::time::Duration;

use crate::ownership::{Lease, Ownership, OwnershipError, StopRegistry};

/// How long the server waits for an ack before redelivering. Claiming a recording takes one KV
/// write, so this is generous.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// The delay before a nak'ed message is redelivered.
pub const NAK_DELAY: Duration = Duration::from_secs(2);
/// How far back a camera's consumer starts when it is first created: events published while
/// the camera had no consumer yet (it was just added) still reach its first holder.
pub const FIRST_LOOK_BACK: Duration = Duration::from_secs(600);

/// A consumer that could not be set up, by kind.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("stream {EVENTS_STREAM}: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
    #[error("consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// Gets or creates the durable consumer of one camera's events.
pub async fn open(
    js: &jetstream::Context,
    site: &Site,
    camera_id: CameraId,
) -> Result<PullConsumer, ConsumerError> {
    let name = camera_consumer_name(site, camera_id);
    let stream = js.get_stream(EVENTS_STREAM).await?;
    let since = time::OffsetDateTime::now_utc() - FIRST_LOOK_BACK;
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("camrec: the events of camera {camera_id}")),
                filter_subject: camera_event_filter(site, camera_id),
                deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| ConsumerError::Consumer { name, source })
}

/// Deletes the consumer of a camera that was deleted or disabled.
pub async fn remove(js: &jetstream::Context, site: &Site, camera_id: CameraId) {
    let name = camera_consumer_name(site, camera_id);
    if let Ok(stream) = js.get_stream(EVENTS_STREAM).await {
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "camera consumer not deleted");
        }
    }
}

/// What settling a message means for the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done with it: never deliver it again.
    Ack,
    /// Not now: deliver it again after the delay.
    Nak(Duration),
    /// It can never be handled: never deliver it again.
    Term,
}

/// What happened with an `event.created` message.
#[derive(Debug)]
pub enum CreatedOutcome {
    /// Not a message this build can read, or not for this site.
    Undecodable(String),
    /// This worker now owns the recording.
    Claimed(Box<EventCreated>, Box<Lease>),
    /// Another claim exists: a duplicate or a redelivery.
    AlreadyOwned(PlaybackId),
    /// The claim could not be written (NATS trouble): try again later.
    ClaimFailed(PlaybackId, OwnershipError),
}

/// The ack rule of `event.created`:
/// - undecodable: `Term` (redelivering cannot help);
/// - claimed: `Ack` once the lease exists, so a long recording is not redelivered;
/// - already owned: `Ack` and ignore, so a redelivery never starts a second FFmpeg;
/// - claim failed: `Nak` with a delay, so this or another worker tries again.
pub fn created_disposition(outcome: &CreatedOutcome) -> Disposition {
    match outcome {
        CreatedOutcome::Undecodable(_) => Disposition::Term,
        CreatedOutcome::Claimed(..) | CreatedOutcome::AlreadyOwned(_) => Disposition::Ack,
        CreatedOutcome::ClaimFailed(..) => Disposition::Nak(NAK_DELAY),
    }
}

/// What happened with an `event.ended` message.
#[derive(Debug)]
pub enum EndedOutcome {
    Undecodable(String),
    /// The event's type does not record: nothing to stop.
    NoPlayback,
    /// The recording runs here and got its end.
    Stopped(PlaybackId),
    /// No recording of it runs here: it finished already, or a crash cut it and recovery
    /// finishes what the disk holds.
    NotHere(PlaybackId),
}

/// The ack rule of `event.ended`:
/// - undecodable: `Term`;
/// - otherwise `Ack`: the end is delivered to the recording in memory, and a recording that is
///   not here has nothing left to stop.
pub fn ended_disposition(outcome: &EndedOutcome) -> Disposition {
    match outcome {
        EndedOutcome::Undecodable(_) => Disposition::Term,
        EndedOutcome::NoPlayback | EndedOutcome::Stopped(_) | EndedOutcome::NotHere(_) => {
            Disposition::Ack
        }
    }
}

/// Reads an `event.created` and tries to claim its recording. An event without `occurred_at`
/// (an older writer) happened when its message was written.
pub async fn handle_created(payload: &[u8], site: &Site, ownership: &Ownership) -> CreatedOutcome {
    let event = match Envelope::<EventCreated>::from_slice(payload) {
        Ok(env) => EventCreated {
            occurred_at: env.payload.occurred_at.or(Some(env.occurred_at)),
            ..env.payload
        },
        Err(e) => return CreatedOutcome::Undecodable(e.to_string()),
    };
    if &event.site != site {
        return CreatedOutcome::Undecodable(format!("message for site {}", event.site));
    }
    match ownership.claim(event.playback_id).await {
        Ok(Some(lease)) => CreatedOutcome::Claimed(Box::new(event), Box::new(lease)),
        Ok(None) => CreatedOutcome::AlreadyOwned(event.playback_id),
        Err(e) => CreatedOutcome::ClaimFailed(event.playback_id, e),
    }
}

/// Reads an `event.ended` and hands its end time to the recording when it runs here. An end
/// without a time (an older writer) ends the event at `received_at`.
pub fn handle_ended(
    payload: &[u8],
    received_at: chrono::DateTime<chrono::Utc>,
    stops: &StopRegistry,
) -> EndedOutcome {
    let envelope = match Envelope::<EventEnded>::from_slice(payload) {
        Ok(env) => env,
        Err(e) => return EndedOutcome::Undecodable(e.to_string()),
    };
    let Some(id) = envelope.payload.playback_id else {
        return EndedOutcome::NoPlayback;
    };
    let at = envelope.payload.ended_at.unwrap_or(received_at);
    if stops.signal(id, at) {
        EndedOutcome::Stopped(id)
    } else {
        EndedOutcome::NotHere(id)
    }
}

/// Tells the server what became of `msg`. A failed ack is logged: the message is redelivered
/// and the rules above make the redelivery harmless.
pub async fn settle(msg: &Message, disposition: Disposition) {
    let kind = match disposition {
        Disposition::Ack => AckKind::Ack,
        Disposition::Nak(d) => AckKind::Nak(Some(d)),
        Disposition::Term => AckKind::Term,
    };
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(subject = %msg.subject, error = %e, "cannot settle message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::kv::PutErrorKind;

    fn nats_down() -> OwnershipError {
        OwnershipError::Put(PutErrorKind::Publish.into())
    }

    #[test]
    fn ended_rules() {
        let id = PlaybackId::new();
        assert_eq!(
            ended_disposition(&EndedOutcome::Undecodable("x".into())),
            Disposition::Term
        );
        assert_eq!(
            ended_disposition(&EndedOutcome::NoPlayback),
            Disposition::Ack
        );
        assert_eq!(
            ended_disposition(&EndedOutcome::Stopped(id)),
            Disposition::Ack
        );
        assert_eq!(
            ended_disposition(&EndedOutcome::NotHere(id)),
            Disposition::Ack
        );
    }

    #[test]
    fn created_rules() {
        let id = PlaybackId::new();
        assert_eq!(
            created_disposition(&CreatedOutcome::Undecodable("x".into())),
            Disposition::Term
        );
        assert_eq!(
            created_disposition(&CreatedOutcome::AlreadyOwned(id)),
            Disposition::Ack
        );
        assert_eq!(
            created_disposition(&CreatedOutcome::ClaimFailed(id, nats_down())),
            Disposition::Nak(NAK_DELAY)
        );
    }
}
