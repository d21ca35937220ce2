//! Which worker captures which camera (ADR 0018): every enabled camera of a site is captured by
//! exactly one worker of that site, up to `MAX_CAMERAS` per worker.
//!
//! - **The catalog**: event-api writes every camera's [`CameraSpec`] into the KV bucket
//!   `camrec_cameras` (key `<site>.<camera_id>`) through its outbox; each worker watches its
//!   site's keys, so it learns of a camera created, changed, disabled or deleted within moments.
//! - **The lease**: holding a camera is holding the key `<camera_id>` of the KV bucket
//!   `camrec_captures`, whose `max_age` is [`CAPTURE_LEASE_TTL`]: created only-if-absent,
//!   renewed by compare-and-set every quarter of the TTL with the capture's state (what
//!   event-api shows as `captureStatus`). A worker that stops renewing (killed, cut off) loses the
//!   key when it expires, and another worker's next round creates it: within 1.25 × the TTL. A
//!   worker whose renewal fails stops capturing the camera at once. A restarted worker with the
//!   same `WORKER_ID` takes back its own unexpired leases.
//! - **Room**: a worker below `MIN_FREE_DISK_MB` takes no camera; the cameras it holds report
//!   `disk_full` and write no segment until there is room again.
//! - **Spreading**: in a round a worker takes at most half of the free cameras (the other half is
//!   left to the site's other workers, whose rounds come before its next one), each after a pause
//!   that grows with how many it already holds ([`spread_pause`]), for at most [`TAKING_PHASE`];
//!   so the workers of a site share cameras created together, and the least loaded one tends to
//!   take a new camera first. A lone worker takes a batch of new cameras over a few rounds.
//! - **Events**: the holder pulls the camera's own consumer on `EVENTS` ([`crate::consumer`]), so
//!   `event.created` and `event.ended` reach the worker whose capture holds the camera's video.

use async_nats::jetstream::{self, kv};
use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::capture::{
    parse_camera_key, site_cameras_filter, CameraSpec, CaptureLease, CAMERAS_BUCKET,
    CAPTURES_BUCKET, CAPTURE_LEASE_TTL,
};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::sealed::CameraKeys;
use camrec_shared::subjects::{EventKind, Site, Subject};
use camrec_shared::CameraId;
use chrono::Utc;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{self, Capture, CaptureState, Report, Tenure};
use crate::consumer::{self, CreatedOutcome};
use crate::disk::DiskGuard;
use crate::ownership::{InProgress, Ownership};
use crate::recording::{self, Deps};

/// The directory of the camera captures, under `RECORD_DIR`.
pub const CAPTURE_DIR: &str = "_capture";
/// The longest pause before a worker that already holds cameras tries to take another.
const SPREAD_MAX: Duration = Duration::from_millis(1000);
/// The pause per camera already held.
const SPREAD_PER_CAMERA: Duration = Duration::from_millis(100);
/// How long one round spends taking cameras (the rest wait for the next round): a round that
/// took longer would renew the held leases late.
const TAKING_PHASE: Duration = Duration::from_millis(1250);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What placing and capturing cameras needs from the worker.
pub struct Cameras {
    pub js: jetstream::Context,
    pub site: Site,
    pub worker_id: String,
    /// `MAX_CAMERAS`.
    pub max_cameras: usize,
    pub record_dir: PathBuf,
    /// The capture settings; `keep` is set per camera from its pre-roll.
    pub capture: capture::Settings,
    /// `RING_MARGIN_SEC`: how much longer than its pre-roll a ring keeps segments.
    pub ring_margin: Duration,
    pub camera_keys: Option<CameraKeys>,
    pub disk: Arc<DiskGuard>,
    pub ownership: Ownership,
    pub recordings: Arc<Deps>,
    /// Where recordings are spawned (the worker waits for them at shutdown).
    pub tracker: TaskTracker,
    /// The state of each camera this worker holds (the `capture_cameras` gauges).
    pub held: std::sync::Mutex<HashMap<CameraId, CaptureState>>,
}

/// A camera this worker holds.
struct Held {
    spec: CameraSpec,
    revision: u64,
    /// The revision that made this worker the holder ([`Tenure::epoch`]).
    epoch: u64,
    capture: Capture,
    /// Stops the camera's capture and its consumer.
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Places cameras until `cancel`, then stops every capture and gives up every lease.
pub async fn run(cams: Arc<Cameras>, cancel: CancellationToken) {
    let Some((catalog, leases)) = open_buckets(&cams, &cancel).await else {
        return;
    };
    let sweep = tokio::spawn(sweep_leftover_rings(cams.clone(), cancel.clone()));
    let mut desired: HashMap<CameraId, CameraSpec> = HashMap::new();
    let mut held: HashMap<CameraId, Held> = HashMap::new();
    let mut tick = tokio::time::interval(CAPTURE_LEASE_TTL / 4);
    let mut failures = 0u32;
    'watching: while !cancel.is_cancelled() {
        let mut watch = match catalog
            .watch_with_history(site_cameras_filter(&cams.site))
            .await
        {
            Ok(w) => w,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot watch the camera catalog, retrying");
                if !sleep_or_cancel(nth_delay(failures, RETRY_FIRST, RETRY_MAX), &cancel).await {
                    break;
                }
                continue;
            }
        };
        failures = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break 'watching,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => note_entry(&mut desired, &entry),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "camera catalog watch failed, watching again");
                        continue 'watching;
                    }
                    None => continue 'watching,
                },
                _ = tick.tick() => reconcile(&cams, &leases, &desired, &mut held, &cancel).await,
            }
        }
    }
    for (id, h) in held.drain() {
        release(&cams, &leases, id, h, true).await;
    }
    let _ = sweep.await;
}

async fn open_buckets(
    cams: &Cameras,
    cancel: &CancellationToken,
) -> Option<(kv::Store, kv::Store)> {
    let mut attempt = 0;
    loop {
        let opened = async {
            // event-api creates them; this worker's NATS user may not.
            let catalog = camrec_shared::streams::open_bucket(&cams.js, CAMERAS_BUCKET).await?;
            let leases = camrec_shared::streams::open_bucket(&cams.js, CAPTURES_BUCKET).await?;
            Ok::<_, async_nats::Error>((catalog, leases))
        };
        match opened.await {
            Ok(b) => return Some(b),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot open the camera buckets, retrying")
            }
        }
        if !sleep_or_cancel(nth_delay(attempt, RETRY_FIRST, RETRY_MAX), cancel).await {
            return None;
        }
        attempt += 1;
    }
}

/// Applies one catalog entry: a live spec is wanted, anything else (deleted, disabled, a delete
/// marker, an unreadable value) is not.
fn note_entry(desired: &mut HashMap<CameraId, CameraSpec>, entry: &kv::Entry) {
    let Ok((_, camera_id)) = parse_camera_key(&entry.key) else {
        return;
    };
    let spec = match entry.operation {
        kv::Operation::Put => serde_json::from_slice::<CameraSpec>(&entry.value).ok(),
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    match spec {
        Some(spec) if spec.wants_capture() && spec.camera_id == camera_id => {
            desired.insert(camera_id, spec);
        }
        _ => {
            desired.remove(&camera_id);
        }
    }
}

/// One round: renew what is held, let go of what is no longer wanted, take what is free.
async fn reconcile(
    cams: &Arc<Cameras>,
    leases: &kv::Store,
    desired: &HashMap<CameraId, CameraSpec>,
    held: &mut HashMap<CameraId, Held>,
    cancel: &CancellationToken,
) {
    let ids: Vec<CameraId> = held.keys().copied().collect();
    for id in ids {
        let Some(h) = held.get_mut(&id) else { continue };
        let report = h.capture.report().borrow().clone();
        let sent_at = Instant::now();
        match renew(cams, leases, id, h.revision, &report).await {
            Renewal::Renewed(rev) => {
                h.revision = rev;
                h.capture.hold(tenure(h.epoch, sent_at));
            }
            Renewal::Retaken(rev) => {
                (h.revision, h.epoch) = (rev, rev);
                h.capture.hold(tenure(rev, sent_at));
            }
            Renewal::Unconfirmed(e) => {
                tracing::warn!(camera_id = %id, error = %e, "camera lease not renewed (NATS unreachable); capturing on");
            }
            Renewal::Lost => {
                tracing::warn!(camera_id = %id, "camera lease taken by another worker; capture stopped");
                if let Some(h) = held.remove(&id) {
                    h.capture.lose();
                    release(cams, leases, id, h, false).await;
                }
                continue;
            }
        }
        match desired.get(&id) {
            None => {
                if let Some(h) = held.remove(&id) {
                    tracing::info!(camera_id = %id, "camera no longer to be captured");
                    release(cams, leases, id, h, true).await;
                    if !cancel.is_cancelled() {
                        consumer::remove(&cams.js, &cams.site, id).await;
                    }
                }
            }
            Some(spec) if needs_restart(&h.spec, spec) => {
                tracing::info!(camera_id = %id, "camera changed; capture restarted");
                restart(cams, h, spec.clone()).await;
            }
            Some(spec) => {
                h.capture.set_keep(keep_for(cams, spec));
                h.spec = spec.clone();
            }
        }
    }
    let mut free: Vec<&CameraSpec> = desired
        .values()
        .filter(|s| !held.contains_key(&s.camera_id))
        .collect();
    // A worker below its disk floor takes no camera: the site's workers with room do.
    if free.is_empty() || held.len() >= cams.max_cameras || !cams.disk.check().has_room() {
        return;
    }
    free.sort_by_key(|s| s.camera_id);
    let taking_ends = Instant::now() + TAKING_PHASE;
    // At most half of the free cameras per round: another worker of the site, whose round
    // comes before this one's next, finds the other half.
    let mut budget = free.len().div_ceil(2);
    for spec in free {
        if held.len() >= cams.max_cameras || Instant::now() >= taking_ends || budget == 0 {
            break;
        }
        if !sleep_or_cancel(spread_pause(held.len()), cancel).await {
            return;
        }
        let sent_at = Instant::now();
        if let Some(revision) = acquire(cams, leases, spec.camera_id).await {
            tracing::info!(camera_id = %spec.camera_id, camera = %spec.name, "camera taken: capturing");
            let h = start(cams, spec.clone(), revision);
            h.capture.hold(tenure(revision, sent_at));
            held.insert(spec.camera_id, h);
            budget -= 1;
        }
    }
}

/// The pause before a worker that holds `held` cameras tries to take one more: the fewer it
/// holds, the sooner it takes the next, so the workers of a site share the cameras created
/// together.
fn spread_pause(held: usize) -> Duration {
    (SPREAD_PER_CAMERA * u32::try_from(held).unwrap_or(u32::MAX)).min(SPREAD_MAX)
}

/// The hold a lease write sent at `sent_at` gives: the TTL runs from when the server stored the
/// write, which is after it was sent.
fn tenure(epoch: u64, sent_at: Instant) -> Tenure {
    Tenure {
        epoch,
        valid_until: sent_at + CAPTURE_LEASE_TTL,
    }
}

/// What renewing a held camera's lease found.
enum Renewal {
    Renewed(u64),
    /// The lease had expired and nobody had taken the camera: created again, a new epoch.
    Retaken(u64),
    /// NATS did not answer: the lease may still hold; the capture goes on and the next round
    /// tries again. A camera is never stopped for want of NATS alone: if the lease expires
    /// meanwhile and another worker takes the camera, the next renewal finds it [`Renewal::Lost`].
    Unconfirmed(String),
    /// Another worker holds the camera now.
    Lost,
}

/// Renews a lease by compare-and-set. A lease that expired while NATS was away (nobody took
/// the camera) is created again, so the capture carries on without a restart.
async fn renew(
    cams: &Cameras,
    leases: &kv::Store,
    id: CameraId,
    revision: u64,
    report: &Report,
) -> Renewal {
    let value = lease_value(cams, report);
    let update = leases.update(id.to_string(), value.clone(), revision);
    // A round never waits on NATS for longer than a round lasts.
    let Ok(updated) = tokio::time::timeout(CAPTURE_LEASE_TTL / 4, update).await else {
        return Renewal::Unconfirmed("timed out".into());
    };
    match updated {
        Ok(rev) => Renewal::Renewed(rev),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            match leases.create(id.to_string(), value).await {
                Ok(rev) => {
                    tracing::info!(camera_id = %id, "camera lease had expired; taken again");
                    Renewal::Retaken(rev)
                }
                Err(_) => Renewal::Lost,
            }
        }
        Err(e) => Renewal::Unconfirmed(e.to_string()),
    }
}

/// Creates the camera's lease, or takes back this worker's own unexpired one.
async fn acquire(cams: &Cameras, leases: &kv::Store, id: CameraId) -> Option<u64> {
    let connecting = Report {
        state: CaptureState::Connecting,
        last_error: None,
        since: Utc::now(),
    };
    let value = lease_value(cams, &connecting);
    match leases.create(id.to_string(), value.clone()).await {
        Ok(rev) => Some(rev),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let entry = leases.entry(id.to_string()).await.ok()??;
            let lease: CaptureLease = serde_json::from_slice(&entry.value).ok()?;
            if lease.worker_id != cams.worker_id {
                return None;
            }
            leases
                .update(id.to_string(), value, entry.revision)
                .await
                .ok()
        }
        Err(e) => {
            tracing::debug!(camera_id = %id, error = %e, "cannot create a camera lease");
            None
        }
    }
}

fn lease_value(cams: &Cameras, report: &Report) -> bytes::Bytes {
    let lease = CaptureLease {
        worker_id: cams.worker_id.clone(),
        site: cams.site.clone(),
        state: report.state,
        last_error: report.last_error.clone(),
        since: report.since,
        renewed_at: Utc::now(),
    };
    serde_json::to_vec(&lease).unwrap_or_default().into()
}

/// How long the camera's ring keeps a segment.
fn keep_for(cams: &Cameras, spec: &CameraSpec) -> Duration {
    Duration::from_secs(u64::from(spec.pre_roll_sec)) + cams.ring_margin
}

/// A change of where or how to reach the camera restarts its capture; a change of its rolls
/// or name does not.
fn needs_restart(old: &CameraSpec, new: &CameraSpec) -> bool {
    old.rtsp_url != new.rtsp_url || old.password_sealed != new.password_sealed
}

/// Starts capturing a camera just taken, and pulling its events.
fn start(cams: &Arc<Cameras>, spec: CameraSpec, revision: u64) -> Held {
    let capture = Capture::new();
    capture.set_keep(keep_for(cams, &spec));
    let stop = CancellationToken::new();
    let mut h = Held {
        spec,
        revision,
        epoch: revision,
        capture,
        stop,
        tasks: Vec::new(),
    };
    spawn_tasks(cams, &mut h);
    cams.note(h.spec.camera_id, Some(CaptureState::Connecting));
    h
}

/// Restarts the capture of a camera whose address or password changed: the old FFmpeg is
/// stopped (and its consumer) before the new one starts, so they never share the ring's
/// directory; the ring and the recordings on it carry on.
async fn restart(cams: &Arc<Cameras>, h: &mut Held, spec: CameraSpec) {
    h.capture.set_keep(keep_for(cams, &spec));
    h.spec = spec;
    std::mem::replace(&mut h.stop, CancellationToken::new()).cancel();
    for t in h.tasks.drain(..) {
        let _ = t.await;
    }
    spawn_tasks(cams, h);
}

/// A held camera's two tasks, stopped by its `stop`: its capture and its event consumer.
fn spawn_tasks(cams: &Arc<Cameras>, h: &mut Held) {
    h.tasks.push(tokio::spawn(capture_task(
        cams.clone(),
        h.spec.clone(),
        h.capture.clone(),
        h.stop.clone(),
    )));
    h.tasks.push(tokio::spawn(pull_events(
        cams.clone(),
        h.spec.camera_id,
        h.capture.clone(),
        h.stop.clone(),
    )));
}

/// Stops a camera's capture and consumer, waits for both, and (`give_up`) deletes its lease so
/// another worker may take it at once.
async fn release(cams: &Cameras, leases: &kv::Store, id: CameraId, h: Held, give_up: bool) {
    h.stop.cancel();
    h.capture.close();
    for t in h.tasks {
        let _ = t.await;
    }
    cams.note(id, None);
    // The ring goes with the camera: the recordings hold their segments by hard links.
    let ring = ring_dir(cams, id);
    if let Err(e) = tokio::fs::remove_dir_all(&ring).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(camera_id = %id, error = %e, "cannot remove the camera's ring");
        }
    }
    if give_up {
        if let Err(e) = leases.delete(id.to_string()).await {
            tracing::debug!(camera_id = %id, error = %e, "camera lease not deleted; it expires");
        }
    }
}

impl Cameras {
    /// Records a held camera's state (None: no longer held) and sets the `capture_cameras`
    /// gauge of each state.
    fn note(&self, id: CameraId, state: Option<CaptureState>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match state {
            Some(s) => {
                held.insert(id, s);
            }
            None => {
                held.remove(&id);
            }
        }
        for s in CaptureState::ALL {
            let n = held.values().filter(|v| **v == s).count();
            metrics::gauge!("capture_cameras", "state" => s.as_str()).set(n as f64);
        }
    }
}

/// `RECORD_DIR/_capture/<camera_id>`.
fn ring_dir(cams: &Cameras, id: CameraId) -> PathBuf {
    cams.record_dir.join(CAPTURE_DIR).join(id.to_string())
}

/// How long after its start a worker keeps the rings a previous run left, for the cameras it
/// takes back (their pre-roll survives a restart); the others are removed then.
const LEFTOVER_RINGS_KEPT: Duration = Duration::from_secs(60);

/// Removes the rings in `RECORD_DIR/_capture/` of cameras this worker did not take back within
/// [`LEFTOVER_RINGS_KEPT`] of its start.
async fn sweep_leftover_rings(cams: Arc<Cameras>, cancel: CancellationToken) {
    if !sleep_or_cancel(LEFTOVER_RINGS_KEPT, &cancel).await {
        return;
    }
    let Ok(mut entries) = tokio::fs::read_dir(cams.record_dir.join(CAPTURE_DIR)).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Ok(id) = entry.file_name().to_string_lossy().parse::<CameraId>() else {
            continue;
        };
        let held = cams
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id);
        if !held {
            tracing::info!(camera_id = %id, "ring of a camera no longer held here removed");
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// Runs the camera's capture with its password opened; a password that cannot be opened makes
/// the camera unreachable, saying why.
async fn capture_task(
    cams: Arc<Cameras>,
    spec: CameraSpec,
    capture: Capture,
    stop: CancellationToken,
) {
    let url = match open_url(&cams, &spec) {
        Ok(url) => url,
        Err(reason) => {
            tracing::warn!(camera_id = %spec.camera_id, %reason, "camera cannot be captured");
            capture.fail(reason);
            return;
        }
    };
    let dir = ring_dir(&cams, spec.camera_id);
    let mut states = capture.report();
    let id = spec.camera_id;
    let watcher = {
        let cams = cams.clone();
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = states.changed() => if changed.is_err() { return },
                }
                let state = states.borrow_and_update().state;
                cams.note(id, Some(state));
            }
        }
    };
    tokio::join!(
        capture::run(
            capture.clone(),
            url,
            dir,
            cams.capture.clone(),
            cams.disk.clone(),
            stop.clone()
        ),
        watcher
    );
}

/// The camera's URL with its sealed password opened (the cleartext stays in memory and in
/// FFmpeg's arguments).
fn open_url(cams: &Cameras, spec: &CameraSpec) -> Result<RtspUrl, String> {
    let Some(sealed) = &spec.password_sealed else {
        return Ok(spec.rtsp_url.clone());
    };
    let keys = cams.camera_keys.as_ref().ok_or_else(|| {
        "the camera's password is sealed and this worker has no CAMERA_SECRET_KEY".to_owned()
    })?;
    let password = keys
        .open(spec.camera_id.0, sealed)
        .map_err(|e| format!("the camera's password {e}"))?;
    let url = &spec.rtsp_url;
    Ok(url.with_credentials(url.username().as_deref(), Some(&password)))
}

/// Pulls the camera's events until `stop`: claims each `event.created` and starts its
/// recording on this camera's capture; hands each `event.ended` to its recording.
async fn pull_events(cams: Arc<Cameras>, id: CameraId, capture: Capture, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let pulled = async {
            let c = consumer::open(&cams.js, &cams.site, id).await?;
            c.stream()
                .expires(consumer::PULL_EXPIRES)
                .heartbeat(consumer::PULL_HEARTBEAT)
                .messages()
                .await
                .map_err(|e| e.to_string().into())
        };
        let mut messages = match pulled.await {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(camera_id = %id, error = %e, "cannot pull the camera's events");
                if !sleep_or_cancel(nth_delay(failures, RETRY_FIRST, RETRY_MAX), &stop).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(camera_id = %id, error = %e, "camera event stream error");
                    continue;
                }
                None => break,
            };
            match Subject::parse(&msg.subject) {
                Ok(Subject::Event {
                    kind: EventKind::Created,
                    ..
                }) => created(&cams, &capture, &msg).await,
                Ok(Subject::Event {
                    kind: EventKind::Ended,
                    ..
                }) => {
                    let outcome = consumer::handle_ended(
                        &msg.payload,
                        Utc::now(),
                        &cams.recordings.stops,
                        Some(InProgress::new(msg.clone())),
                    );
                    consumer::settle(&msg, consumer::ended_disposition(&outcome)).await;
                    tracing::info!(camera_id = %id, ?outcome, "event.ended");
                }
                _ => {
                    tracing::warn!(subject = %msg.subject, "not an event message; dropped");
                    consumer::settle(&msg, consumer::Disposition::Term).await;
                }
            }
        }
    }
}

async fn created(cams: &Arc<Cameras>, capture: &Capture, msg: &jetstream::Message) {
    let stops = &cams.recordings.stops;
    let outcome = consumer::handle_created(&msg.payload, &cams.site, &cams.ownership, stops).await;
    consumer::settle(msg, consumer::created_disposition(&outcome)).await;
    let (event, lease, takes_over_from) = match outcome {
        CreatedOutcome::Claimed(event, lease) => {
            tracing::info!(playback_id = %event.playback_id, camera_id = %event.camera_id, "recording claimed");
            (event, lease, None)
        }
        CreatedOutcome::Resumed(event, lease, previous) => {
            tracing::info!(playback_id = %event.playback_id, camera_id = %event.camera_id, %previous, "recording left open by the camera's previous holder: continued here");
            (event, lease, Some(previous))
        }
        CreatedOutcome::AlreadyOwned(id) | CreatedOutcome::RunningHere(id) => {
            tracing::info!(playback_id = %id, "event.created for a recording already taken; ignored");
            return;
        }
        CreatedOutcome::ClaimFailed(id, e) => {
            tracing::warn!(playback_id = %id, error = %e, "cannot claim the recording; will retry");
            return;
        }
        CreatedOutcome::Undecodable(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "undecodable event.created dropped");
            return;
        }
    };
    let deps = cams.recordings.clone();
    let capture = capture.clone();
    let ended = recording::register(&deps, &event);
    let held = recording::Held {
        created: InProgress::new(msg.clone()),
        takes_over_from,
    };
    cams.tracker.spawn(async move {
        let _active = Active::count();
        recording::run(deps, capture, *event, *lease, ended, held).await
    });
}

/// Counts a recording in `recordings_active` from its claim until it has finished.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_holding_more_cameras_waits_longer_for_the_next() {
        assert_eq!(spread_pause(0), Duration::ZERO);
        assert!(spread_pause(1) < spread_pause(3));
        assert_eq!(spread_pause(1000), SPREAD_MAX);
        assert!(SPREAD_MAX < TAKING_PHASE && TAKING_PHASE < CAPTURE_LEASE_TTL / 4);
    }
}
