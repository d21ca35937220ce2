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

/// How long a recording's lease is kept in the recordings bucket.
pub const RECORDINGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The stream behind a KV bucket, written out here because async-nats' `create_key_value` first
/// asks for account information in a shape that nats-server 2.9 does not send. These are the
/// settings a KV bucket has (history 1, rollups, direct get, discard new), so
/// `Context::get_key_value` opens it as a bucket on any server. `max_age` zero keeps entries
/// forever.
fn kv_bucket_config(bucket: &str, max_age: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Opens a KV bucket that event-api created (the workers' NATS users may not create one).
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    Ok(js.get_key_value(bucket).await?)
}

/// Creates the stream of a KV bucket when it does not exist, and opens the bucket.
async fn ensure_bucket(
    js: &jetstream::Context,
    cfg: stream::Config,
    bucket: &str,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    if js.get_stream(&cfg.name).await.is_err() {
        js.create_stream(cfg).await?;
    }
    Ok(js.get_key_value(bucket).await?)
}

/// The KV bucket [`crate::subjects::RECORDINGS_BUCKET`]: recording leases.
pub fn recordings_bucket_config(replicas: usize) -> stream::Config {
    kv_bucket_config(
        crate::subjects::RECORDINGS_BUCKET,
        RECORDINGS_MAX_AGE,
        replicas,
    )
}

/// Creates the recordings KV bucket when it does not exist, and opens it (event-api).
pub async fn ensure_recordings_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    let cfg = recordings_bucket_config(replicas);
    ensure_bucket(js, cfg, crate::subjects::RECORDINGS_BUCKET).await
}

/// The KV bucket [`crate::capture::CAMERAS_BUCKET`]: the camera catalog. Specs are kept until
/// replaced (no `max_age`): a worker starting at any time reads every camera of its site.
pub fn cameras_bucket_config(replicas: usize) -> stream::Config {
    kv_bucket_config(crate::capture::CAMERAS_BUCKET, Duration::ZERO, replicas)
}

/// Creates the cameras KV bucket when it does not exist, and opens it (event-api).
pub async fn ensure_cameras_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    let cfg = cameras_bucket_config(replicas);
    ensure_bucket(js, cfg, crate::capture::CAMERAS_BUCKET).await
}

/// The KV bucket [`crate::capture::CAPTURES_BUCKET`]: capture leases, which disappear
/// [`crate::capture::CAPTURE_LEASE_TTL`] after their last renewal.
pub fn captures_bucket_config(replicas: usize) -> stream::Config {
    kv_bucket_config(
        crate::capture::CAPTURES_BUCKET,
        crate::capture::CAPTURE_LEASE_TTL,
        replicas,
    )
}

/// Creates the captures KV bucket when it does not exist, and opens it (event-api).
pub async fn ensure_captures_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<jetstream::kv::Store, async_nats::Error> {
    let cfg = captures_bucket_config(replicas);
    ensure_bucket(js, cfg, crate::capture::CAPTURES_BUCKET).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_history_one_kv_streams() {
        for (cfg, bucket) in [
            (recordings_bucket_config(1), "camrec_recordings"),
            (cameras_bucket_config(1), "camrec_cameras"),
            (captures_bucket_config(3), "camrec_captures"),
        ] {
            assert_eq!(cfg.name, format!("KV_{bucket}"));
            assert_eq!(cfg.subjects, vec![format!("$KV.{bucket}.>")]);
            assert_eq!(cfg.max_messages_per_subject, 1);
            assert!(cfg.allow_direct && cfg.allow_rollup);
        }
        assert_eq!(cameras_bucket_config(1).max_age, Duration::ZERO);
        assert_eq!(
            captures_bucket_config(1).max_age,
            crate::capture::CAPTURE_LEASE_TTL
        );
        assert_eq!(captures_bucket_config(3).num_replicas, 3);
    }
}
