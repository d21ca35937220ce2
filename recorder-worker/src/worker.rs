//! The worker's run loop: opens the status spool, connects, opens the consumers and the
//! recordings bucket, starts the status publisher (which first sends what the spool holds),
//! recovers what a previous run left in `RECORD_DIR`, then pulls `event.created` only while a
//! recording slot is free and `event.ended` always. On shutdown it stops pulling, lets every
//! recording stop gracefully and finish within `SHUTDOWN_GRACE_SEC`, then abandons what is left
//! (it stays in `RECORD_DIR` for the next start); the publisher then sends what it can in the
//! rest of the grace and leaves the rest in the spool. Every task is tracked; every FFmpeg child
//! is reaped. The HTTP endpoints serve from the start (alive, not ready, while NATS is awaited)
//! until the end; `event.created` is pulled only while the disk guard finds room.

use async_nats::jetstream::{self, consumer::PullConsumer};
use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::storage::Storage;
use camrec_shared::subjects::EventKind;
use camrec_shared::CameraId;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::consumer::{self, ConsumerError, CreatedOutcome};
use crate::disk::{self, DiskGuard};
use crate::finish::Finisher;
use crate::http::{self, Ops};
use crate::ownership::{Ownership, OwnershipError, StopRegistry};
use crate::probe::SourceInfo;
use crate::status::{self, StatusPublisher};
use crate::upload::{UploadOptions, Uploader};
use crate::{recording, recovery, Error};

/// How long one pull for `event.created` waits for a message.
const FETCH_EXPIRES: Duration = Duration::from_secs(5);
/// How long abandoned tasks get to drop their children after the grace period.
const ABANDON_GRACE: Duration = Duration::from_secs(5);
/// How long the publisher gets at least, after the recordings, to send what the spool holds.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// How long a probed camera's streams are reused.
const SOURCE_CACHE_TTL: Duration = Duration::from_secs(600);
/// The first wait before retrying NATS (connecting, pulling); it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What every recording of this worker shares.
pub struct Shared {
    pub config: Config,
    pub ownership: Ownership,
    pub stops: StopRegistry,
    pub status: StatusPublisher,
    pub finisher: Finisher,
    /// Free space in `RECORD_DIR` against `MIN_FREE_DISK_MB`.
    pub disk: Arc<DiskGuard>,
    /// Cancelled when the worker starts shutting down: recordings stop and finish.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: unfinished work is abandoned to the next start.
    pub abort: CancellationToken,
    sources: Mutex<HashMap<CameraId, (Instant, SourceInfo)>>,
}

impl Shared {
    /// What the camera served when it was last probed, if that was recent.
    pub fn cached_source(&self, camera: CameraId) -> Option<SourceInfo> {
        let cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&camera)
            .filter(|(at, _)| at.elapsed() < SOURCE_CACHE_TTL)
            .map(|(_, info)| info.clone())
    }

    pub fn cache_source(&self, camera: CameraId, info: SourceInfo) {
        let mut cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(camera, (Instant::now(), info));
    }
}

/// Why setting up NATS failed, by kind.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Config(#[from] camrec_shared::natsconn::NatsConfigError),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// What the worker needs from NATS.
struct Messaging {
    client: async_nats::Client,
    js: jetstream::Context,
    ownership: Ownership,
    created: PullConsumer,
    ended: PullConsumer,
}

/// Connects as the site's worker user and opens the recordings bucket and the site's two
/// consumers. The streams and the bucket are event-api's to create (this user may not): until
/// they exist this fails and [`connect_when_up`] retries.
async fn connect(config: &Config) -> Result<Messaging, SetupError> {
    let client = config
        .nats
        .options(&camrec_shared::natsconn::inbox::worker(&config.site))
        .await?
        .name(format!("recorder-worker {}", config.worker_id))
        .connect(config.nats.servers())
        .await?;
    let js = jetstream::new(client.clone());
    let ownership = Ownership::open(&js, config.worker_id.clone()).await?;
    let created = consumer::open(&js, EventKind::Created, &config.site).await?;
    let ended = consumer::open(&js, EventKind::Ended, &config.site).await?;
    Ok(Messaging {
        client,
        js,
        ownership,
        created,
        ended,
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
        created,
        ended,
    }) = connect_when_up(&config, &shutdown).await
    else {
        endpoints.stop().await;
        return Ok(());
    };
    let _ = ops.nats.set(client);
    let publisher = Publisher::start(status.clone(), js);
    let abort = CancellationToken::new();
    let shared = Arc::new(Shared {
        finisher: Finisher::new(
            &config,
            Uploader::new(storage.clone(), UploadOptions::default()),
            storage,
            abort.clone(),
        ),
        disk,
        ownership,
        stops: StopRegistry::default(),
        status,
        shutdown: shutdown.clone(),
        abort,
        sources: Mutex::new(HashMap::new()),
        config,
    });
    tracing::info!(
        worker_id = %shared.config.worker_id,
        site = %shared.config.site,
        max_concurrent = shared.config.max_concurrent_recordings,
        "recorder worker started"
    );

    let tracker = TaskTracker::new();
    {
        let ownership = shared.ownership.clone();
        let stops = shared.stops.clone();
        let cancel = shutdown.clone();
        tracker.spawn(async move { ownership.watch_stops(stops, cancel).await });
    }
    tracker.spawn(recovery::recover_all(shared.clone()));
    tracker.spawn(shared.disk.clone().watch(shutdown.clone()));
    tracker.spawn(disk::keep_failed(shared.clone()));
    tracker.spawn(pull_ended(shared.clone(), ended));
    pull_created(shared.clone(), created, &tracker).await;

    let grace_ends = Instant::now() + shared.config.shutdown_grace;
    finish_or_abandon(&shared, tracker).await;
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
async fn finish_or_abandon(shared: &Shared, tracker: TaskTracker) {
    tracker.close();
    let grace = shared.config.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "recordings not finished within the shutdown grace; leaving them for the next start"
        );
        shared.abort.cancel();
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

/// Pulls one `event.created` at a time, only while a recording slot is free, until shutdown.
async fn pull_created(shared: Arc<Shared>, created: PullConsumer, tracker: &TaskTracker) {
    let slots = Arc::new(Semaphore::new(shared.config.max_concurrent_recordings));
    let cancel = shared.shutdown.clone();
    let mut failures = 0u32;
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if !shared.disk.wait_for_room(&cancel).await {
            return;
        }
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = created.fetch().max_messages(1).expires(FETCH_EXPIRES).messages() => b,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot pull event.created");
                if !sleep_or_cancel(nth_delay(failures, RETRY_FIRST, RETRY_MAX), &cancel).await {
                    return;
                }
                continue;
            }
        };
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = batch.next() => m,
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot pull event.created");
                if !sleep_or_cancel(nth_delay(failures, RETRY_FIRST, RETRY_MAX), &cancel).await {
                    return;
                }
                continue;
            }
            None => continue,
        };
        failures = 0;
        let outcome =
            consumer::handle_created(&msg.payload, &shared.config.site, &shared.ownership).await;
        consumer::settle(&msg, consumer::created_disposition(&outcome)).await;
        match outcome {
            CreatedOutcome::Claimed(event, lease) => {
                tracing::info!(playback_id = %event.playback_id, camera_id = %event.camera_id, camera = %event.rtsp_url.without_credentials(), "recording claimed");
                let shared = shared.clone();
                tracker.spawn(async move {
                    let _active = Active::count();
                    recording::run(shared, *event, *lease, permit).await
                });
            }
            CreatedOutcome::AlreadyOwned(id) => {
                tracing::info!(playback_id = %id, "event.created for a recording already taken; ignored");
            }
            CreatedOutcome::ClaimFailed(id, e) => {
                tracing::warn!(playback_id = %id, error = %e, "cannot claim the recording; will retry");
            }
            CreatedOutcome::Undecodable(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "undecodable event.created dropped");
            }
        }
    }
}

/// Counts a recording in `recordings_active` from its claim until it has finished (or was left
/// for the next start).
struct Active;

impl Active {
    fn count() -> Self {
        metrics::gauge!("recordings_active").increment(1.0);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!("recordings_active").decrement(1.0);
    }
}

/// Pulls `event.ended` continuously until shutdown and writes stop markers.
async fn pull_ended(shared: Arc<Shared>, ended: PullConsumer) {
    let cancel = shared.shutdown.clone();
    let mut failures = 0u32;
    loop {
        let messages = tokio::select! {
            _ = cancel.cancelled() => return,
            m = ended.messages() => m,
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot pull event.ended");
                if !sleep_or_cancel(nth_delay(failures, RETRY_FIRST, RETRY_MAX), &cancel).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                m = messages.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "event.ended stream error");
                    continue;
                }
                None => break,
            };
            failures = 0;
            let (outcome, local) =
                consumer::handle_ended(&msg.payload, &shared.ownership, &shared.stops).await;
            consumer::settle(&msg, consumer::ended_disposition(&outcome)).await;
            match &outcome {
                consumer::EndedOutcome::StopWritten(id) => {
                    tracing::info!(playback_id = %id, local, "stop requested");
                }
                consumer::EndedOutcome::NoPlayback => {}
                consumer::EndedOutcome::StopFailed(id, e) => {
                    tracing::warn!(playback_id = %id, error = %e, "cannot write the stop marker; will retry");
                }
                consumer::EndedOutcome::Undecodable(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "undecodable event.ended dropped");
                }
            }
        }
    }
}
