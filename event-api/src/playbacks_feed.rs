//! Reading `PLAYBACKS` through a durable pull consumer (filter `playback.>`, explicit acks, from
//! the stream's start): the projector and the webhook deliverer each have one, under its own
//! name, so each sees every status once its restarts are done.

use crate::store::StoreError;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Context;
use camrec_shared::subjects::{PLAYBACKS_STREAM, PLAYBACKS_SUBJECTS};
use std::time::Duration;

/// Why a consumer loop of `PLAYBACKS` restarts.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("streams: {0}")]
    Streams(#[from] camrec_shared::streams::StreamsError),
    #[error("stream: {0}")]
    Stream(#[from] async_nats::jetstream::context::GetStreamError),
    #[error("consumer: {0}")]
    Consumer(#[from] async_nats::jetstream::stream::ConsumerError),
    #[error("messages: {0}")]
    Messages(#[from] async_nats::jetstream::consumer::StreamError),
    #[error("next message: {0}")]
    Next(#[from] async_nats::jetstream::consumer::pull::MessagesError),
    #[error("ack: {0}")]
    Ack(async_nats::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The messages of the durable consumer `name`, created if missing (the streams too).
pub async fn messages(
    js: &Context,
    replicas: usize,
    name: &str,
) -> Result<pull::Stream, FeedError> {
    camrec_shared::streams::ensure_streams(js, replicas).await?;
    let stream = js.get_stream(PLAYBACKS_STREAM).await?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: PLAYBACKS_SUBJECTS.to_owned(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer.messages().await?)
}
