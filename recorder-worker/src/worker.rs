//! The worker's run loop: connects, opens the consumers and the recordings bucket, recovers what
//! a previous run left in `RECORD_DIR`, then pulls `event.created` only while a recording slot
//! is free and `event.ended` always. On shutdown it stops pulling, lets every recording stop
//! gracefully and finish within `SHUTDOWN_GRACE_SEC`, then abandons what is left (it stays in
//! `RECORD_DIR` for the next start). Every task is tracked; every FFmpeg child is reaped.

use async_nats::jetstream::{self, consumer::PullConsumer};
use camrec_shared::storage::Storage;
use camrec_shared::subjects::EventKind;
use camrec_shared::CameraId;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::consumer::{self, CreatedOutcome};
use crate::ownership::{Ownership, StopRegistry};
use crate::probe::{SourceInfo, WarmProbe};
use crate::upload::{UploadOptions, Uploader};
use crate::{recording, recovery, Error};

/// How long one pull for `event.created` waits for a message.
const FETCH_EXPIRES: Duration = Duration::from_secs(5);
/// How long abandoned tasks get to drop their children after the grace period.
const ABANDON_GRACE: Duration = Duration::from_secs(5);
/// How long a probed camera's streams are reused.
const SOURCE_CACHE_TTL: Duration = Duration::from_secs(600);

/// What every recording of this worker shares.
pub struct Shared {
    pub config: Config,
    pub js: jetstream::Context,
    pub ownership: Ownership,
    pub storage: Storage,
    pub uploader: Uploader,
    pub stops: StopRegistry,
    /// Cancelled when the worker starts shutting down: recordings stop and finish.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace is over: unfinished work is abandoned to the next start.
    pub abort: CancellationToken,
    /// The ffprobe that waits for the next finished clip.
    pub probes: WarmProbe,
    sources: Mutex<HashMap<CameraId, (tokio::time::Instant, SourceInfo)>>,
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
        cache.insert(camera, (tokio::time::Instant::now(), info));
    }
}

/// What the worker needs from NATS.
struct Messaging {
    js: jetstream::Context,
    ownership: Ownership,
    created: PullConsumer,
    ended: PullConsumer,
}

/// Connects and opens the streams, the recordings bucket and the site's two consumers.
async fn connect(config: &Config) -> Result<Messaging, String> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("recorder-worker {}", config.worker_id))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    camrec_shared::streams::ensure_streams(&js, config.nats_stream_replicas)
        .await
        .map_err(|e| e.to_string())?;
    let ownership = Ownership::open(&js, config.worker_id.clone(), config.nats_stream_replicas)
        .await
        .map_err(|e| e.to_string())?;
    let created = consumer::open(&js, EventKind::Created, &config.site)
        .await
        .map_err(|e| e.to_string())?;
    let ended = consumer::open(&js, EventKind::Ended, &config.site)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Messaging {
        js,
        ownership,
        created,
        ended,
    })
}

/// Runs the worker until `shutdown` is cancelled and its recordings are finished or abandoned.
/// A NATS server that is not up yet is waited for (with backoff), so the worker may start first.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let storage = Storage::open(config.storage.clone())?;
    tokio::fs::create_dir_all(&config.record_dir).await?;
    let mut attempt = 0;
    let Messaging {
        js,
        ownership,
        created,
        ended,
    } = loop {
        match connect(&config).await {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot set up NATS, retrying");
                if pause(
                    &shutdown,
                    recording::backoff(attempt, Duration::from_secs(5)),
                )
                .await
                {
                    return Ok(());
                }
                attempt += 1;
            }
        }
    };
    let shared = Arc::new(Shared {
        uploader: Uploader::new(storage.clone(), UploadOptions::default()),
        storage,
        js,
        ownership,
        stops: StopRegistry::default(),
        probes: WarmProbe::new(&config.ffprobe_path),
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
        sources: Mutex::new(HashMap::new()),
        config,
    });
    shared.probes.refill();
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
    tracker.spawn(pull_ended(shared.clone(), ended));
    pull_created(shared.clone(), created, &tracker).await;

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
    tracing::info!("recorder worker stopped");
    Ok(())
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
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = created.fetch().max_messages(1).expires(FETCH_EXPIRES).messages() => b,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot pull event.created");
                if pause(
                    &cancel,
                    recording::backoff(failures, Duration::from_secs(5)),
                )
                .await
                {
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
                if pause(
                    &cancel,
                    recording::backoff(failures, Duration::from_secs(5)),
                )
                .await
                {
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
                tracker.spawn(recording::run(shared, *event, *lease, permit));
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
                if pause(
                    &cancel,
                    recording::backoff(failures, Duration::from_secs(5)),
                )
                .await
                {
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

/// Sleeps `d`; true when cancelled first.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
