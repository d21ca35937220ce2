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

use crate::ownership::{InProgress, Lease, Ownership, OwnershipError, StopRegistry};

/// How long the server waits for an ack (or a sign of progress) before redelivering. A
/// recording holds its `event.created` (and `event.ended`) in progress until it ends, renewing
/// every quarter of this; a worker that dies stops renewing, so its open recordings' messages
/// reach the camera's next holder about when it takes the camera (the capture lease's TTL).
pub const ACK_WAIT: Duration = camrec_shared::capture::CAPTURE_LEASE_TTL;
/// How long one pull request for a camera's messages waits at the server. Short, because a
/// request outlives the worker that made it: a message whose ack wait runs out while a dead
/// holder's request still waits is delivered into it and lost for another ack wait, delaying the
/// takeover of its recording. Shorter than the time from a holder's last renewal of its held
/// messages to their redelivery (at least `ACK_WAIT` less the renewal period).
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The idle heartbeat of a pull request (at most half of [`PULL_EXPIRES`]).
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

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
    /// The recording it belongs to holds it in progress and acknowledges it when it ends; a
    /// second delivery of a message a recording here already holds is left alone too.
    Leave,
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
    /// The recording was left open by the camera's previous holder (named): this worker, the
    /// camera's holder now, continues it into the same playback.
    Resumed(Box<EventCreated>, Box<Lease>, String),
    /// The recording runs in this worker (a redelivery after a NATS hiccup).
    RunningHere(PlaybackId),
    /// Another claim exists: a duplicate or a redelivery.
    AlreadyOwned(PlaybackId),
    /// The claim could not be written (NATS trouble): try again later.
    ClaimFailed(PlaybackId, OwnershipError),
}

/// The ack rule of `event.created`:
/// - undecodable: `Term` (redelivering cannot help);
/// - claimed or resumed: `Leave`: the recording holds it in progress until it ends, so the
///   camera's next holder gets it again if this worker dies;
/// - running here: `Leave` (the recording holds the first delivery);
/// - already owned (elsewhere, or finished): `Ack` and ignore, so a redelivery never starts a
///   second recording;
/// - claim failed: `Nak` with a delay, so this or another worker tries again.
pub fn created_disposition(outcome: &CreatedOutcome) -> Disposition {
    match outcome {
        CreatedOutcome::Undecodable(_) => Disposition::Term,
        CreatedOutcome::Claimed(..)
        | CreatedOutcome::Resumed(..)
        | CreatedOutcome::RunningHere(_) => Disposition::Leave,
        CreatedOutcome::AlreadyOwned(_) => Disposition::Ack,
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
/// - stopped: `Leave`: the recording holds it until it ends (a holder that dies before the end
///   leaves it to the camera's next holder);
/// - otherwise `Ack`: a recording that is not here has nothing left to stop.
pub fn ended_disposition(outcome: &EndedOutcome) -> Disposition {
    match outcome {
        EndedOutcome::Undecodable(_) => Disposition::Term,
        EndedOutcome::Stopped(_) => Disposition::Leave,
        EndedOutcome::NoPlayback | EndedOutcome::NotHere(_) => Disposition::Ack,
    }
}

/// Reads an `event.created` and tries to claim its recording, or to continue it when the
/// camera's previous holder left it open. An event without `occurred_at` (an older writer)
/// happened when its message was written.
pub async fn handle_created(
    payload: &[u8],
    site: &Site,
    ownership: &Ownership,
    stops: &StopRegistry,
) -> CreatedOutcome {
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
    let id = event.playback_id;
    if stops.runs(id) {
        return CreatedOutcome::RunningHere(id);
    }
    match ownership.claim(id).await {
        Ok(Some(lease)) => CreatedOutcome::Claimed(Box::new(event), Box::new(lease)),
        Ok(None) => match ownership.resume(id).await {
            Ok(Some((lease, previous))) => {
                CreatedOutcome::Resumed(Box::new(event), Box::new(lease), previous)
            }
            Ok(None) => CreatedOutcome::AlreadyOwned(id),
            Err(e) => CreatedOutcome::ClaimFailed(id, e),
        },
        Err(e) => CreatedOutcome::ClaimFailed(id, e),
    }
}

/// Reads an `event.ended` and hands its end time to the recording when it runs here, with
/// `msg` (the message itself) for it to hold until it ends. An end without a time (an older
/// writer) ends the event at `received_at`.
pub fn handle_ended(
    payload: &[u8],
    received_at: chrono::DateTime<chrono::Utc>,
    stops: &StopRegistry,
    msg: Option<InProgress>,
) -> EndedOutcome {
    let envelope = match Envelope::<EventEnded>::from_slice(payload) {
        Ok(env) => env,
        Err(e) => return EndedOutcome::Undecodable(e.to_string()),
    };
    let Some(id) = envelope.payload.playback_id else {
        return EndedOutcome::NoPlayback;
    };
    let at = envelope.payload.ended_at.unwrap_or(received_at);
    if stops.signal(id, at, msg) {
        EndedOutcome::Stopped(id)
    } else {
        EndedOutcome::NotHere(id)
    }
}

/// Tells the server what became of `msg`. A failed ack is logged: the message is redelivered
/// and the rules above make the redelivery harmless.
pub async fn settle(msg: &Message, disposition: Disposition) {
    let kind = match disposition {
        Disposition::Leave => return,
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
            Disposition::Leave
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
            created_disposition(&CreatedOutcome::RunningHere(id)),
            Disposition::Leave
        );
        assert_eq!(
            created_disposition(&CreatedOutcome::ClaimFailed(id, nats_down())),
            Disposition::Nak(NAK_DELAY)
        );
    }
}
