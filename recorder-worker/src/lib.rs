//! camrec recorder worker: captures the cameras of its site it holds a lease on (one FFmpeg per
//! camera, into a ring of short segments on disk), cuts each event's clip from its camera's
//! capture with pre-roll and post-roll, finalizes and uploads it, and reports every state change
//! as a status message.
//!
//! Orchestration: [`worker`] (run loop, shutdown), [`placement`] (camera catalog, camera leases,
//! a capture and an event consumer per held camera), [`consumer`] (ack rules), [`ownership`]
//! (recording leases, the local stop registry). Capture: [`capture`] (the per-camera FFmpeg
//! supervisor, its [`capture::ring`] and [`capture::segment`] codec). Recording: [`recording`]
//! (one event's clip as a state machine, its [`recording::window`] rules), [`finish`] (clip,
//! probe, thumbnail, upload), [`recovery`] (leftovers at start), [`status`] (the status
//! publisher, off the recording's path) and its disk [`spool`], [`manifest`] (the local
//! directory). Media: [`ffmpeg`], [`probe`], [`finalize`], [`upload`]. Operations: [`http`]
//! (`/health`, `/ready`, `/metrics` on `PORT`), [`disk`] (the free-space guard and the upkeep of
//! `_failed/`).

pub mod assemble;
pub mod capture;
pub mod config;
pub mod consumer;
pub mod disk;
pub mod ffmpeg;
pub mod finalize;
pub mod finish;
pub mod http;
pub mod live;
pub mod manifest;
pub mod mp4;
pub mod outcome;
pub mod ownership;
pub mod placement;
pub mod probe;
pub mod recording;
pub mod recovery;
pub mod spool;
pub mod status;
pub mod upload;
pub mod worker;

pub use config::Config;
pub use tokio_util::sync::CancellationToken;

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

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
    let listener = bind(config.port).await;
    worker::run(config, shutdown, listener).await
}

/// A worker started by [`start`].
pub struct Started {
    /// Where `/health`, `/ready` and `/metrics` are served (`None`: `PORT` could not be bound).
    pub http_addr: Option<SocketAddr>,
    /// The worker, as [`run`]; it ends when the worker has stopped.
    pub done: JoinHandle<Result<(), Error>>,
}

/// [`run`] in a task, once its HTTP port is bound (with `PORT=0`, the caller learns which).
pub async fn start(config: Config, shutdown: CancellationToken) -> Started {
    let listener = bind(config.port).await;
    let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    Started {
        http_addr,
        done: tokio::spawn(worker::run(config, shutdown, listener)),
    }
}

/// The endpoints' listener. A port that cannot be bound is logged and the worker runs without
/// its endpoints: recording matters more than being watched (and a probe will notice).
async fn bind(port: u16) -> Option<TcpListener> {
    match http::bind(port).await {
        Ok(l) => {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(%addr, "serving /health, /ready and /metrics");
            }
            Some(l)
        }
        Err(e) => {
            tracing::error!(port, error = %e, "cannot bind PORT; running without /health, /ready and /metrics");
            None
        }
    }
}
