//! The JetStream streams camrec owns, defined once so that event-api (which creates them, the only
//! NATS user allowed to) and the tests (which create them where event-api is not running) agree
//! on every limit.
//!
//! Both streams keep file storage, limits retention (other systems may add consumers), a week of
//! history and a 10-minute duplicate window, so a relay retry within ten minutes of the first
//! attempt is dropped by the server (`Nats-Msg-Id`). Replicas are 1 here and a setting in
//! production (deploy/ runs 3); durability of each write is the server's `sync_interval`
//! (nats.conf).

use crate::subjects::{EVENTS_STREAM, EVENTS_SUBJECTS, PLAYBACKS_STREAM, PLAYBACKS_SUBJECTS};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long messages are kept.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The server-side deduplication window of `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

fn config(name: &str, subjects: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// `EVENTS`: `event.>` from event-api's outbox relay.
pub fn events_config(replicas: usize) -> stream::Config {
    config(EVENTS_STREAM, EVENTS_SUBJECTS, replicas)
}

/// `PLAYBACKS`: `playback.>` from the workers (and event-api's reconciler).
pub fn playbacks_config(replicas: usize) -> stream::Config {
    config(PLAYBACKS_STREAM, PLAYBACKS_SUBJECTS, replicas)
}

/// Why the streams could not be made ready (NATS down, or a configuration the server refuses).
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("create stream: {0}")]
    Create(jetstream::context::CreateStreamError),
    #[error("update stream: {0}")]
    Update(jetstream::context::UpdateStreamError),
}

/// Creates both streams, or updates them to this configuration when they exist, and creates the
/// recordings bucket when it does not exist. Only event-api calls it: the workers' NATS user may
/// not create or change a stream (nats-users.conf), they wait until event-api has.
pub async fn ensure_streams(js: &jetstream::Context, replicas: usize) -> Result<(), StreamsError> {
    let bucket = recordings_bucket_config(replicas);
    if js.get_stream(&bucket.name).await.is_err() {
        js.create_stream(bucket)
            .await
            .map_err(StreamsError::Create)?;
    }
    for cfg in [events_config(replicas), playbacks_config(replicas)] {
        match js.get_stream(&cfg.name).await {
            Ok(_) => {
                js.update_stream(cfg).await.map_err(StreamsError::Update)?;
            }
            Err(_) => {
                js.create_stream(cfg).await.map_err(StreamsError::Create)?;
            }
        }
    }
    Ok(())
}

/// How long a lease or stop marker is kept in the recordings bucket.
pub const RECORDINGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The stream behind the KV bucket [`crate::subjects::RECORDINGS_BUCKET`], written out here
/// because async-nats' `create_key_value` first asks for account information in a shape that
/// nats-server 2.9 does not send. These are the settings a KV bucket has (history 1, rollups,
/// direct get, discard new), so `Context::get_key_value` opens it as a bucket on any server.
pub fn recordings_bucket_config(replicas: usize) -> stream::Config {
    let bucket = crate::subjects::RECORDINGS_BUCKET;
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: RECORDINGS_MAX_AGE,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Opens the recordings KV bucket, which event-api creates ([`ensure_streams`]).
pub async fn open_recordings_bucket(
    js: &jetstream::Context,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    Ok(js.get_key_value(crate::subjects::RECORDINGS_BUCKET).await?)
}
