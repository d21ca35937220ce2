//! camrec recorder worker: consumes event messages from NATS, records the camera's RTSP stream
//! with FFmpeg, finalizes and uploads the clip, and reports every state change as a status message.
//!
//! Orchestration: [`worker`] (run loop, slots, shutdown), [`consumer`] (ack rules), [`ownership`]
//! (KV leases and stop markers), [`recording`] (one recording's state machine), [`finish`] (its
//! end: clip, probe, thumbnail, upload), [`recovery`] (leftovers at start), [`status`] (the status
//! publisher, off the recording's path) and its disk [`spool`], [`manifest`] (the local
//! directory). Media: [`ffmpeg`], [`progress`], [`probe`], [`finalize`], [`upload`].

pub mod config;
pub mod consumer;
pub mod ffmpeg;
pub mod finalize;
pub mod finish;
pub mod manifest;
pub mod ownership;
pub mod probe;
pub mod progress;
pub mod recording;
pub mod recovery;
pub mod spool;
pub mod status;
pub mod upload;
pub mod worker;

pub use config::Config;
pub use tokio_util::sync::CancellationToken;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Storage(#[from] camrec_shared::storage::StorageError),
    #[error("record directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the worker until `shutdown` is cancelled and its recordings are finished (or, after
/// `SHUTDOWN_GRACE_SEC`, left in `RECORD_DIR` for the next start).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    worker::run(config, shutdown).await
}
