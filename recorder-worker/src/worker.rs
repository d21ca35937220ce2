//! The worker's run loop: opens the status spool, connects, opens the recordings bucket, starts
//! the status publisher (which first sends what the spool holds), recovers what a previous run
//! left in `RECORD_DIR`, then places cameras ([`crate::placement`]): it captures the cameras of
//! its site it holds a lease on, and records the events of those cameras from their captures.
//! On shutdown it stops every capture and gives up its camera leases (another worker takes them
//! at once), lets every recording finish within `SHUTDOWN_GRACE_SEC`, then abandons what is left
//! (it stays in `RECORD_DIR` for the next start); the publisher then sends what it can in the
//! rest of the grace and leaves the rest in the spool. Every task is tracked; every FFmpeg child
//! is reaped. The HTTP endpoints serve from the start (alive, not ready, while NATS is awaited)
//! until the end.

use async_nats::jetstream;
use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::storage::Storage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture;
use crate::config::Config;
use crate::disk::{self, DiskGuard};
use crate::finish::Finisher;
use crate::http::{self, Ops};
use crate::ownership::{Ownership, OwnershipError, StopRegistry};
use crate::placement::{self, Cameras};
use crate::recording::Deps;
use crate::recovery::{self, Leftovers};
use crate::status::{self, StatusPublisher};
use crate::upload::{UploadOptions, Uploader};
use crate::Error;

/// How long abandoned tasks get to drop their children after the grace period.
const ABANDON_GRACE: Duration = Duration::from_secs(5);
/// How long the publisher gets at least, after the recordings, to send what the spool holds.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// The first wait before retrying NATS; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why setting up NATS failed, by kind.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Config(#[from] camrec_shared::natsconn::NatsConfigError),
    #[error("stream EVENTS (event-api creates it): {0}")]
    Streams(#[from] jetstream::context::GetStreamError),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
}

/// What the worker needs from NATS.
struct Messaging {
    client: async_nats::Client,
    js: jetstream::Context,
    ownership: Ownership,
}

/// Connects as the site's worker user and opens the recordings bucket. The streams and the
/// buckets are event-api's to create (this user may not): until `EVENTS` and the bucket exist
/// this fails and [`connect_when_up`] retries.
async fn connect(config: &Config) -> Result<Messaging, SetupError> {
    let client = config
        .nats
        .options(&camrec_shared::natsconn::inbox::worker(&config.site))
        .await?
        .name(format!("recorder-worker {}", config.worker_id))
        .connect(config.nats.servers())
        .await?;
    let js = jetstream::new(client.clone());
    js.get_stream(camrec_shared::subjects::EVENTS_STREAM)
        .await?;
    let ownership = Ownership::open(&js, config.worker_id.clone()).await?;
    Ok(Messaging {
        client,
        js,
        ownership,
    })
}

/// [`connect`], retried with backoff until NATS is up; `None` when the worker shuts down first.
async fn connect_when_up(config: &Config, shutdown: &CancellationToken) -> Option<Messaging> {
    let mut attempt = 0;
    loop {
        match connect(config).await {
            Ok(m) => return Some(m),
            Err(e) => tracing::warn!(attempt, error = %e, "cannot set up NATS, retrying"),
        }
        if !sleep_or_cancel(nth_delay(attempt, RETRY_FIRST, RETRY_MAX), shutdown).await {
            return None;
        }
        attempt += 1;
    }
}

/// Runs the worker until `shutdown` is cancelled and its recordings are finished or abandoned,
/// serving its HTTP endpoints on `listener` meanwhile. A NATS server that is not up yet is waited
/// for (with backoff), so the worker may start first.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    listener: Option<tokio::net::TcpListener>,
) -> Result<(), Error> {
    let storage = Storage::open(config.storage.clone())?;
    tokio::fs::create_dir_all(&config.record_dir).await?;
    let status = StatusPublisher::open(&config.record_dir, config.worker_id.clone()).await?;
    let disk = Arc::new(DiskGuard::new(
        config.record_dir.clone(),
        config.min_free_disk_bytes,
        Arc::new(disk::statvfs_free),
    ));
    let ops = Ops::new(disk.clone(), status.clone(), shutdown.clone());
    let endpoints = Endpoints::start(listener, ops.clone());
    let Some(Messaging {
        client,
        js,
        ownership,
    }) = connect_when_up(&config, &shutdown).await
    else {
        endpoints.stop().await;
        return Ok(());
    };
    let _ = ops.nats.set(client);
    let publisher = Publisher::start(status.clone(), js.clone());
    let abort = CancellationToken::new();
    let finisher = Finisher::new(
        &config,
        Uploader::new(storage.clone(), UploadOptions::default()),
        storage,
        abort.clone(),
    );
    let tracker = TaskTracker::new();
    let cameras = Arc::new(Cameras {
        js,
        site: config.site.clone(),
        worker_id: config.worker_id.clone(),
        max_cameras: config.max_cameras,
        record_dir: config.record_dir.clone(),
        capture: capture::Settings {
            ffmpeg: config.ffmpeg_path.clone(),
            ffprobe: config.ffprobe_path.clone(),
            io_timeout: config.rtsp_timeout,
            segment: config.segment,
            backoff_max: config.restart_backoff_max,
            stop_grace: config.stop_grace,
            networks: config.camera_networks.clone(),
        },
        ring_margin: config.ring_margin,
        camera_keys: config.camera_keys.clone(),
        disk: disk.clone(),
        ownership: ownership.clone(),
        recordings: Arc::new(Deps {
            finisher: finisher.clone(),
            status: status.clone(),
            stops: StopRegistry::default(),
            record_dir: config.record_dir.clone(),
            max_recording: config.max_recording,
            progress_interval: config.progress_interval,
            lease_heartbeat: config.lease_heartbeat,
            first_segment_within: config.first_segment,
            end_grace: config.segment * 2 + config.rtsp_timeout,
            shutdown: shutdown.clone(),
        }),
        tracker: tracker.clone(),
        held: Mutex::new(HashMap::new()),
    });
    let leftovers = Arc::new(Leftovers {
        record_dir: config.record_dir.clone(),
        finisher,
        ownership,
        status,
        lease_heartbeat: config.lease_heartbeat,
        failed_keep: config.failed_keep,
        shutdown: shutdown.clone(),
        abort: abort.clone(),
    });
    tracing::info!(
        worker_id = %config.worker_id,
        site = %config.site,
        max_cameras = config.max_cameras,
        "recorder worker started"
    );

    tracker.spawn(recovery::recover_all(leftovers.clone()));
    tracker.spawn(disk.clone().watch(shutdown.clone()));
    tracker.spawn(recovery::keep_failed(leftovers));
    placement::run(cameras, shutdown.clone()).await;

    let grace_ends = Instant::now() + config.shutdown_grace;
    finish_or_abandon(config.shutdown_grace, &abort, tracker).await;
    publisher
        .close(
            grace_ends
                .saturating_duration_since(Instant::now())
                .max(FLUSH_GRACE),
        )
        .await;
    endpoints.stop().await;
    tracing::info!("recorder worker stopped");
    Ok(())
}

/// The HTTP endpoints' task, when `PORT` was bound.
struct Endpoints {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Endpoints {
    fn start(listener: Option<tokio::net::TcpListener>, ops: Ops) -> Self {
        let stop = CancellationToken::new();
        let task = listener.map(|l| tokio::spawn(http::serve(l, ops, stop.clone())));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Waits for the recordings to finish within `SHUTDOWN_GRACE_SEC`, then abandons the rest.
async fn finish_or_abandon(grace: Duration, abort: &CancellationToken, tracker: TaskTracker) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "recordings not finished within the shutdown grace; leaving them for the next start"
        );
        abort.cancel();
        let _ = tokio::time::timeout(ABANDON_GRACE, tracker.wait()).await;
    }
}

/// The status publisher's task.
struct Publisher {
    closing: CancellationToken,
    task: JoinHandle<()>,
}

impl Publisher {
    fn start(status: StatusPublisher, js: jetstream::Context) -> Self {
        let closing = CancellationToken::new();
        let task = tokio::spawn(status::run_publisher(status, js, closing.clone()));
        Self { closing, task }
    }

    /// Sends what is left for at most `within`; the rest stays in the spool for the next start.
    async fn close(mut self, within: Duration) {
        self.closing.cancel();
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!("statuses left in the spool for the next start");
            self.task.abort();
            let _ = self.task.await;
        }
    }
}
