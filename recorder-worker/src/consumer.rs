//! The two durable pull consumers of a site on `EVENTS` (ADR 0001) and what a worker does with
//! each message. Whether a message is acked, nak'ed or terminated is decided in exactly one
//! function per consumer: [`created_disposition`] and [`ended_disposition`].

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    AckKind, Message,
};
use camrec_shared::messages::{Envelope, EventCreated, EventEnded};
use camrec_shared::subjects::{
    site_consumer_name, site_event_filter, EventKind, Site, EVENTS_STREAM,
};
use camrec_shared::PlaybackId;
use std::time::Duration;

use crate::ownership::{Lease, Ownership, OwnershipError, StopRegistry};

/// How long the server waits for an ack before redelivering. Claiming a recording takes one KV
/// write, so this is generous.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// The delay before a nak'ed message is redelivered.
pub const NAK_DELAY: Duration = Duration::from_secs(2);

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

/// Gets or creates the site's durable consumer for one kind of event message.
pub async fn open(
    js: &jetstream::Context,
    kind: EventKind,
    site: &Site,
) -> Result<PullConsumer, ConsumerError> {
    let name = site_consumer_name(kind, site);
    let stream = js.get_stream(EVENTS_STREAM).await?;
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("camrec recorder workers of site {site}")),
                filter_subject: site_event_filter(kind, site),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| ConsumerError::Consumer { name, source })
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

/// The ack rule of `recorder-<site>-created`:
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
    /// The stop marker is written; the owner will see it.
    StopWritten(PlaybackId),
    /// The stop marker could not be written: try again later.
    StopFailed(PlaybackId, OwnershipError),
}

/// The ack rule of `recorder-<site>-ended`:
/// - undecodable: `Term`;
/// - no playback, or the stop marker written: `Ack` (the stop has reached every worker);
/// - the marker could not be written: `Nak` with a delay.
pub fn ended_disposition(outcome: &EndedOutcome) -> Disposition {
    match outcome {
        EndedOutcome::Undecodable(_) => Disposition::Term,
        EndedOutcome::NoPlayback | EndedOutcome::StopWritten(_) => Disposition::Ack,
        EndedOutcome::StopFailed(..) => Disposition::Nak(NAK_DELAY),
    }
}

/// Reads an `event.created` and tries to claim its recording.
pub async fn handle_created(payload: &[u8], site: &Site, ownership: &Ownership) -> CreatedOutcome {
    let event = match Envelope::<EventCreated>::from_slice(payload) {
        Ok(env) => env.payload,
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

/// Reads an `event.ended`, stops the recording at once when it runs here (`stops`), then
/// writes its stop marker for the other workers and for recovery. The local stop does not wait
/// for the marker's round trip through JetStream; when the marker cannot be written the message
/// is redelivered, and stopping again is harmless.
pub async fn handle_ended(
    payload: &[u8],
    ownership: &Ownership,
    stops: &StopRegistry,
) -> (EndedOutcome, bool) {
    let ended = match Envelope::<EventEnded>::from_slice(payload) {
        Ok(env) => env.payload,
        Err(e) => return (EndedOutcome::Undecodable(e.to_string()), false),
    };
    let Some(id) = ended.playback_id else {
        return (EndedOutcome::NoPlayback, false);
    };
    let local = stops.signal(id);
    let outcome = match ownership.request_stop(id).await {
        Ok(()) => EndedOutcome::StopWritten(id),
        Err(e) => EndedOutcome::StopFailed(id, e),
    };
    (outcome, local)
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
            ended_disposition(&EndedOutcome::StopWritten(id)),
            Disposition::Ack
        );
        assert_eq!(
            ended_disposition(&EndedOutcome::StopFailed(id, nats_down())),
            Disposition::Nak(NAK_DELAY)
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
