//! One recording, from claimed lease to `completed` or `failed`, as an explicit state machine:
//! `Claimed -> Starting -> Recording -> Stopping -> Finalizing -> Uploading -> Done | Failed`.
//!
//! - **Starting**: the stop marker is checked (a recording that waited for a slot may already be
//!   ended: `ended_before_start`), the camera is probed (cached per camera) with `START_RETRIES`
//!   attempts, the manifest is written and FFmpeg started; `recording` is reported at the first
//!   frames. An end that arrives from here on does not abort the start: the camera gets its
//!   `START_RETRIES` attempts, and the clip is then `MIN_CLIP_SEC` long (or `post_roll_sec` if
//!   longer), so a short event still gives a clip (ADR 0008).
//! - **Recording**: `progress` every `PROGRESS_INTERVAL_SEC`; the stop marker (after the event's
//!   `post_roll_sec`), the event's max duration (FFmpeg's `-t` plus a wall-clock watchdog) or the
//!   worker's shutdown end it. `pre_roll_sec` is not honoured: the worker keeps no buffer. FFmpeg
//!   exiting by itself while the event is open and time remains (camera lost, crash) is restarted
//!   with backoff into the next part file, and the clip is marked partial.
//! - **Finalizing / Uploading** ([`finish`], shared with crash recovery): the parts become one
//!   faststart MP4, which is probed and thumbnailed; both are uploaded and verified, retried while
//!   `processing` heartbeats go out, for up to `UPLOAD_GIVE_UP_SEC`. `completed` is reported and
//!   only then is the local directory deleted.
//!
//! Failure rule for a camera lost mid-recording: FFmpeg is restarted until the event ends or its
//! time is up; what was recorded is completed with `partial: true`, and `FAILED no_media` only
//! when nothing playable was recorded.

use camrec_shared::messages::{CompletedClip, EventCreated, FailureCode, StatusBody};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::storage::ObjectKey;
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ffmpeg::{ExitReport, MediaError, RecordPlan, Recorder};
use crate::finalize::{direct_clip, finalize, frame_at, parts_with_fragments, thumbnail};
use crate::manifest::{self, Manifest, THUMB, VIDEO};
use crate::ownership::{Lease, LeaseState};
use crate::probe::{probe_file, probe_source, ClipInfo, SourceInfo, StandbyProbe};
use crate::progress::Progress;
use crate::status::{Reporter, Subject};
use crate::worker::Shared;

/// Where a recording is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Claimed,
    Starting,
    Recording,
    Stopping,
    Finalizing,
    Uploading,
    Done,
    Failed,
}

/// How a recording ended, for the caller's log and the tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        partial: bool,
    },
    Failed(FailureCode),
    /// The worker's shutdown deadline passed first: the directory stays for the next start.
    Abandoned,
}

/// Why the recording phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    EventEnded,
    MaxDuration,
    Shutdown,
}

/// What the recording phase (or, after a crash, the manifest) tells [`finish`].
pub struct Recorded {
    /// When the clip's first frame was taken.
    pub started_at: DateTime<Utc>,
    /// When the recording stopped.
    pub ended_at: DateTime<Utc>,
    /// The clip has gaps or was cut short (FFmpeg restarted, the worker shut down or crashed).
    pub partial: bool,
}

/// A recording that ends without a clip.
struct Failure {
    code: FailureCode,
    message: String,
}

impl Failure {
    fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Figures of the parts already finished, so `progress` counts the whole recording.
#[derive(Clone, Copy, Default)]
struct Totals {
    frames: u64,
    bytes: u64,
    media_time_sec: f64,
}

impl Totals {
    fn add(&mut self, p: &Progress) {
        self.frames += p.frames;
        self.bytes += p.total_size;
        self.media_time_sec += p.out_time_sec;
    }

    fn body(&self, current: Option<&Progress>) -> StatusBody {
        let mut t = *self;
        if let Some(p) = current {
            t.add(p);
        }
        StatusBody::Progress {
            frames: t.frames,
            fps: current.and_then(|p| p.fps),
            bitrate_kbps: current.and_then(|p| p.bitrate_kbps),
            bytes: t.bytes,
            media_time_sec: t.media_time_sec,
        }
    }
}

/// How waiting for a part's first frames ended.
enum FirstFrames {
    Arrived,
    /// FFmpeg exited or stayed silent: the camera is not (or no longer) delivering.
    Missing,
    Stopped(StopReason),
}

/// How recording one part ended.
enum PartEnd {
    Stopped(StopReason),
    /// FFmpeg exited by itself with time left: camera lost or FFmpeg crashed.
    Died(ExitReport),
}

/// The running state of the Starting and Recording phases of one recording.
struct Session {
    /// The recording's length limit (the event's, capped by `MAX_RECORDING_SEC`).
    max: Duration,
    first_frames_within: Duration,
    start_retries: u32,
    backoff_max: Duration,
    /// When the clip's first frame was taken, once FFmpeg delivered frames.
    started: Option<(Instant, DateTime<Utc>)>,
    /// The event ended while the recording was starting: it is recorded for `MIN_CLIP_SEC` (or
    /// its post-roll) from the first frames.
    ended_early: bool,
    start_failures: u32,
    restarts: u32,
    totals: Totals,
    last_error: String,
    /// Heartbeats go out in every phase, also while a lost camera is being reconnected, so the
    /// playback never looks abandoned to the reconciler.
    tick: tokio::time::Interval,
    lease_tick: tokio::time::Interval,
}

impl Session {
    fn new(max: Duration, cfg: &crate::config::Config) -> Self {
        let mut tick = tokio::time::interval(cfg.progress_interval);
        tick.reset();
        let mut lease_tick = tokio::time::interval(cfg.lease_heartbeat);
        lease_tick.reset();
        Self {
            max,
            first_frames_within: cfg.rtsp_timeout + Duration::from_secs(10),
            start_retries: cfg.start_retries,
            backoff_max: cfg.restart_backoff_max,
            started: None,
            ended_early: false,
            start_failures: 0,
            restarts: 0,
            totals: Totals::default(),
            last_error: String::new(),
            tick,
            lease_tick,
        }
    }

    /// The time left for the next part; `None` when the recording is as long as it may be.
    fn remaining(&self) -> Option<Duration> {
        match self.started {
            None => Some(self.max),
            Some((t0, _)) => self
                .max
                .checked_sub(t0.elapsed())
                .filter(|r| *r > Duration::from_millis(500)),
        }
    }

    /// Counts a part that delivered no frames; returns the wait before the next attempt, or the
    /// failure when the camera never delivered within `START_RETRIES` attempts.
    fn no_frames(&mut self, stderr_tail: &str, url: &RtspUrl) -> Result<Duration, Failure> {
        self.last_error = scrub(
            stderr_tail
                .lines()
                .last()
                .unwrap_or("no frames from the camera"),
            url,
        );
        let attempt = if self.started.is_none() {
            self.start_failures += 1;
            if self.start_failures >= self.start_retries {
                return Err(Failure::new(
                    FailureCode::CameraUnreachable,
                    self.last_error.clone(),
                ));
            }
            self.start_failures - 1
        } else {
            self.restarts += 1;
            self.restarts - 1
        };
        Ok(backoff(attempt, self.backoff_max))
    }

    /// The recording ends for `reason`: fine once it has started, a failure before.
    fn stop_or_fail(&self, reason: StopReason) -> Result<StopReason, Failure> {
        match (self.started, reason) {
            (Some(_), r) => Ok(r),
            (None, StopReason::Shutdown) => Err(Failure::new(
                FailureCode::RecordingFailed,
                "the worker shut down before the camera delivered frames",
            )),
            (None, _) => Err(Failure::new(
                FailureCode::EndedBeforeStart,
                "the event ended before the camera delivered frames",
            )),
        }
    }
}

/// The backoff before attempt `n` (0-based): 1 s, 2 s, 4 s, ... capped at `max`.
pub fn backoff(n: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << n.min(16)).min(max)
}

/// Replaces any form of the camera's credential in `text` (belt and braces: media errors are
/// already scrubbed).
pub fn scrub(text: &str, url: &RtspUrl) -> String {
    let mut out = text.replace(url.expose(), &url.masked());
    if let Some(p) = url.password().filter(|p| p.len() >= 3) {
        out = out.replace(&p, "***");
    }
    out
}

/// One recording being driven through its states.
pub struct Job {
    shared: Arc<Shared>,
    event: EventCreated,
    lease: Lease,
    reporter: Reporter,
    stop: tokio_util::sync::CancellationToken,
    dir: PathBuf,
    manifest: Manifest,
    state: State,
    /// Work for [`finish`] started before FFmpeg stopped.
    ahead: Ahead,
}

/// What [`finish`] finds already under way when the recording ends normally (nothing after a
/// crash): the thumbnail, taken while the camera is still recorded, and an ffprobe started while
/// FFmpeg finishes the clip. Neither is needed: [`finish`] starts what is missing itself.
#[derive(Debug, Default)]
pub struct Ahead {
    thumb: Option<EarlyThumb>,
    probe: Option<StandbyProbe>,
}

/// A thumbnail taken during the recording from the part the clip begins with, so that the stop
/// does not wait for it.
#[derive(Debug)]
pub struct EarlyThumb {
    part: PathBuf,
    task: tokio::task::JoinHandle<bool>,
}

impl EarlyThumb {
    /// Stops taking it; returns once its FFmpeg is gone (killed on drop), so nothing writes the
    /// thumbnail file any more.
    async fn cancel(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Logs a state change of a recording.
fn note_state(id: PlaybackId, state: State) {
    tracing::debug!(playback_id = %id, ?state, "recording state");
}

/// Runs one claimed recording to its end. The stop registry entry lives as long as this call;
/// `slot` (a `MAX_CONCURRENT_RECORDINGS` permit) is given back as soon as FFmpeg has stopped, so
/// the next event can start while this clip is finalized and uploaded.
pub async fn run(
    shared: Arc<Shared>,
    event: EventCreated,
    lease: Lease,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Outcome {
    let id = event.playback_id;
    let stop = shared.stops.register(id);
    let reporter = Reporter::new(
        shared.js.clone(),
        shared.config.worker_id.clone(),
        Subject {
            playback_id: id,
            event_id: event.event_id,
            camera_id: event.camera_id,
            site: event.site.clone(),
        },
    );
    let job = Job {
        dir: manifest::recording_dir(&shared.config.record_dir, id),
        manifest: Manifest::new(&event, Utc::now()),
        shared: shared.clone(),
        event,
        lease,
        reporter,
        stop,
        state: State::Claimed,
        ahead: Ahead::default(),
    };
    let outcome = job.drive(slot).await;
    shared.stops.remove(id);
    shared.probes.refill();
    tracing::info!(playback_id = %id, ?outcome, "recording finished");
    outcome
}

impl Job {
    fn enter(&mut self, state: State) {
        note_state(self.event.playback_id, state);
        self.state = state;
    }

    async fn drive(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> Outcome {
        match self
            .shared
            .ownership
            .stop_requested(self.event.playback_id)
            .await
        {
            Ok(true) => {
                return self
                    .fail(Failure::new(
                        FailureCode::EndedBeforeStart,
                        "the event ended before the recording started",
                    ))
                    .await
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(playback_id = %self.event.playback_id, error = %e, "cannot check the stop marker")
            }
        }
        self.enter(State::Starting);
        let recorded = match self.record().await {
            Ok(r) => r,
            Err(f) => return self.fail(f).await,
        };
        // The camera is no longer read: finalizing and uploading do not hold a recording slot.
        drop(slot);
        self.enter(State::Finalizing);
        self.lease.refresh(LeaseState::Processing).await;
        let Job {
            shared,
            lease,
            mut reporter,
            dir,
            ahead,
            ..
        } = self;
        finish(&shared, &mut reporter, lease, &dir, recorded, ahead).await
    }

    /// Reports `failed`, removes what was recorded (nothing usable) and closes the lease.
    async fn fail(mut self, failure: Failure) -> Outcome {
        self.enter(State::Failed);
        if let Some(thumb) = self.ahead.thumb.take() {
            thumb.cancel().await;
        }
        let message = scrub(&failure.message, &self.event.rtsp_url);
        tracing::warn!(playback_id = %self.event.playback_id, code = failure.code.as_str(), %message, "recording failed");
        if let Err(e) = self
            .reporter
            .publish(StatusBody::Failed {
                code: failure.code,
                message,
            })
            .await
        {
            tracing::error!(error = %e, "cannot report the failure");
        }
        if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
            if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
                tracing::warn!(playback_id = %self.event.playback_id, error = %e, "cannot remove the recording directory");
            }
        }
        self.lease.refresh(LeaseState::Failed).await;
        Outcome::Failed(failure.code)
    }

    /// The camera's streams: from the cache, else probed with bounded retries.
    async fn source(&mut self) -> Result<SourceInfo, Failure> {
        let camera = self.event.camera_id;
        if let Some(info) = self.shared.cached_source(camera) {
            return Ok(info);
        }
        let cfg = &self.shared.config;
        let mut last = String::new();
        for attempt in 0..cfg.start_retries {
            if attempt > 0 {
                self.wait_or_shutdown(backoff(attempt - 1, cfg.restart_backoff_max))
                    .await?;
            }
            match probe_source(&cfg.ffprobe_path, &self.event.rtsp_url, cfg.rtsp_timeout).await {
                Ok(info) => {
                    self.shared.cache_source(camera, info.clone());
                    return Ok(info);
                }
                Err(e @ MediaError::Spawn { .. }) => {
                    return Err(Failure::new(FailureCode::RecordingFailed, e.to_string()))
                }
                Err(e) => {
                    tracing::warn!(playback_id = %self.event.playback_id, attempt, error = %e, "camera probe failed");
                    last = e.to_string();
                }
            }
        }
        Err(Failure::new(FailureCode::CameraUnreachable, last))
    }

    /// Sleeps `d` unless the worker shuts down first. The event's end does not cut the start
    /// short: a short event still gets its `MIN_CLIP_SEC` clip once the camera answers.
    async fn wait_or_shutdown(&self, d: Duration) -> Result<(), Failure> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.shared.shutdown.cancelled() => Err(Failure::new(FailureCode::RecordingFailed, "the worker shut down before the recording started")),
        }
    }

    fn max_duration(&self) -> Duration {
        let asked = Duration::from_secs(u64::from(self.event.limits.max_duration_sec.max(1)));
        asked.min(self.shared.config.max_recording)
    }

    async fn save_manifest(&self) {
        if let Err(e) = self.manifest.write(&self.dir).await {
            tracing::warn!(playback_id = %self.event.playback_id, error = %e, "cannot write the manifest");
        }
    }

    fn spawn_part(
        &mut self,
        source: &SourceInfo,
        remaining: Duration,
    ) -> Result<Recorder, Failure> {
        let name = manifest::part_name(self.manifest.parts.len());
        let output = self.dir.join(&name);
        let plan = RecordPlan {
            input: self.event.rtsp_url.clone(),
            direct: self
                .shared
                .config
                .direct_clip
                .then(|| manifest::direct_for(&output)),
            output,
            io_timeout: self.shared.config.rtsp_timeout,
            source: source.clone(),
            max_duration: Some(remaining),
        };
        self.manifest.parts.push(name);
        Recorder::spawn(&self.shared.config.ffmpeg_path, &plan)
            .map_err(|e| Failure::new(FailureCode::RecordingFailed, e.to_string()))
    }

    /// Starting and Recording: runs FFmpeg parts until the event ends, its time is up or the
    /// worker shuts down.
    async fn record(&mut self) -> Result<Recorded, Failure> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            Failure::new(
                FailureCode::RecordingFailed,
                format!("recording directory: {e}"),
            )
        })?;
        // Written before the camera is probed (which may take START_RETRIES attempts), so a
        // worker killed meanwhile leaves a directory its next start reports, instead of a claimed
        // recording that stays PENDING until the reconciler's PENDING_TIMEOUT_SEC.
        self.save_manifest().await;
        let source = self.source().await?;
        let grace = self.shared.config.stop_grace;
        let mut s = Session::new(self.max_duration(), &self.shared.config);
        let reason = loop {
            let Some(remaining) = s.remaining() else {
                break StopReason::MaxDuration;
            };
            let mut recorder = self.spawn_part(&source, remaining)?;
            self.save_manifest().await;
            let mut progress = recorder.progress();
            match self
                .first_frames(&mut recorder, &mut progress, &mut s)
                .await
            {
                FirstFrames::Arrived => {}
                FirstFrames::Stopped(reason) => {
                    recorder.stop(grace).await;
                    break s.stop_or_fail(reason)?;
                }
                FirstFrames::Missing => {
                    let report = recorder.stop(grace).await;
                    let wait = s.no_frames(&report.stderr_tail, &self.event.rtsp_url);
                    tracing::warn!(playback_id = %self.event.playback_id, error = %s.last_error, started = s.started.is_some(), "ffmpeg got no frames");
                    let wait = wait?;
                    match self.pause(wait, &mut s).await {
                        Some(reason) => break s.stop_or_fail(reason)?,
                        None => continue,
                    }
                }
            }
            self.mark_started(&progress, &mut s).await;
            let end = self.record_part(&mut recorder, &progress, &mut s).await;
            if let Some(p) = progress.borrow().as_ref() {
                s.totals.add(p);
            }
            match end {
                PartEnd::Stopped(reason) => {
                    self.enter(State::Stopping);
                    // The clip's probe is ready (or starts) while FFmpeg finishes it.
                    self.ahead.probe = self.shared.probes.take();
                    let report = recorder.stop(grace).await;
                    if !report.clean {
                        tracing::warn!(playback_id = %self.event.playback_id, code = ?report.code, signal = ?report.signal, "ffmpeg did not stop cleanly");
                        // Its direct clip may be unfinished: the parts make the clip.
                        self.remove_direct_clips().await;
                    }
                    break reason;
                }
                PartEnd::Died(report) => {
                    s.restarts += 1;
                    self.manifest.partial = true;
                    tracing::warn!(
                        playback_id = %self.event.playback_id,
                        code = ?report.code,
                        signal = ?report.signal,
                        restarts = s.restarts,
                        "ffmpeg exited mid-recording, restarting into a new part"
                    );
                    let wait = backoff(s.restarts - 1, s.backoff_max);
                    if let Some(reason) = self.pause(wait, &mut s).await {
                        break reason;
                    }
                }
            }
        };
        let Some((_, started_at)) = s.started else {
            return Err(Failure::new(FailureCode::CameraUnreachable, s.last_error));
        };
        let ended_at = Utc::now();
        // A shutdown cuts the recording short of its event, as a restart leaves a gap.
        let partial = s.restarts > 0 || reason == StopReason::Shutdown;
        self.manifest.ended_at = Some(ended_at);
        self.manifest.partial = partial;
        self.save_manifest().await;
        tracing::info!(playback_id = %self.event.playback_id, ?reason, restarts = s.restarts, "recording stopped");
        Ok(Recorded {
            started_at,
            ended_at,
            partial,
        })
    }

    /// Waits for this part's first frames, with heartbeats once the recording has started.
    async fn first_frames(
        &mut self,
        recorder: &mut Recorder,
        progress: &mut watch::Receiver<Option<Progress>>,
        s: &mut Session,
    ) -> FirstFrames {
        let give_up = Instant::now() + s.first_frames_within;
        loop {
            tokio::select! {
                ok = async { progress.wait_for(|p| p.as_ref().is_some_and(|p| p.frames > 0)).await.is_ok() } => {
                    return if ok { FirstFrames::Arrived } else { FirstFrames::Missing };
                }
                _ = recorder.exited() => return FirstFrames::Missing,
                _ = tokio::time::sleep_until(give_up) => return FirstFrames::Missing,
                _ = self.stop.cancelled(), if !s.ended_early => {
                    if s.started.is_some() {
                        return FirstFrames::Stopped(StopReason::EventEnded);
                    }
                    // Ended while starting: wait for the frames, then record the minimum clip.
                    s.ended_early = true;
                }
                _ = self.shared.shutdown.cancelled() => return FirstFrames::Stopped(StopReason::Shutdown),
                _ = s.tick.tick(), if s.started.is_some() => self.beat(s.totals.body(None)).await,
                _ = s.lease_tick.tick() => self.lease.heartbeat().await,
            }
        }
    }

    /// The first frames of the recording arrived: `recording` is reported with the time the
    /// clip's first frame was taken. FFmpeg writes what it buffered while opening the stream at
    /// once, so that is `out_time` before this first progress block.
    async fn mark_started(
        &mut self,
        progress: &watch::Receiver<Option<Progress>>,
        s: &mut Session,
    ) {
        if s.started.is_some() {
            return;
        }
        // The end may have arrived while waiting for a retry, or in the same instant as the
        // frames: either way it came before the recording started.
        s.ended_early |= self.stop.is_cancelled();
        let buffered = progress
            .borrow()
            .as_ref()
            .map(|p| Duration::from_secs_f64(p.out_time_sec.clamp(0.0, 30.0)))
            .unwrap_or_default();
        let now = Instant::now();
        let started_at = Utc::now() - chrono::Duration::from_std(buffered).unwrap_or_default();
        s.started = Some((now.checked_sub(buffered).unwrap_or(now), started_at));
        self.enter(State::Recording);
        self.manifest.started_at = Some(started_at);
        self.save_manifest().await;
        if let Err(e) = self
            .reporter
            .publish(StatusBody::Recording { started_at })
            .await
        {
            tracing::error!(error = %e, "cannot report recording");
        }
    }

    /// Records one part until FFmpeg exits by itself or the recording must stop, reporting
    /// progress and watching the stop marker and the wall-clock watchdog.
    async fn record_part(
        &mut self,
        recorder: &mut Recorder,
        progress: &watch::Receiver<Option<Progress>>,
        s: &mut Session,
    ) -> PartEnd {
        let Some((t0, _)) = s.started else {
            return PartEnd::Stopped(StopReason::MaxDuration);
        };
        let watchdog = t0 + s.max + self.shared.config.stop_grace;
        let mut post_roll = Duration::from_secs(u64::from(self.event.limits.post_roll_sec));
        if s.ended_early {
            post_roll = post_roll.max(self.shared.config.min_clip);
        }
        let mut post_roll_until: Option<Instant> = None;
        let mut thumb_due = self
            .ahead
            .thumb
            .is_none()
            .then(|| (t0 + THUMB_AFTER).max(Instant::now()));
        loop {
            tokio::select! {
                report = recorder.exited() => {
                    // `-t` ended the run: the recording is as long as it may be.
                    return if t0.elapsed() + Duration::from_millis(1500) >= s.max {
                        PartEnd::Stopped(StopReason::MaxDuration)
                    } else {
                        PartEnd::Died(report)
                    };
                }
                _ = self.stop.cancelled(), if post_roll_until.is_none() => {
                    if post_roll.is_zero() {
                        return PartEnd::Stopped(StopReason::EventEnded);
                    }
                    // The event ended: keep recording its post-roll.
                    post_roll_until = Some(Instant::now() + post_roll);
                }
                _ = tokio::time::sleep_until(post_roll_until.unwrap_or(watchdog)), if post_roll_until.is_some() => {
                    return PartEnd::Stopped(StopReason::EventEnded);
                }
                _ = self.shared.shutdown.cancelled() => return PartEnd::Stopped(StopReason::Shutdown),
                _ = tokio::time::sleep_until(watchdog) => {
                    tracing::warn!(playback_id = %self.event.playback_id, "ffmpeg overran the max duration, stopping it");
                    return PartEnd::Stopped(StopReason::MaxDuration);
                }
                _ = tokio::time::sleep_until(thumb_due.unwrap_or(watchdog)), if thumb_due.is_some() => {
                    thumb_due = (!self.start_thumbnail(progress).await)
                        .then(|| Instant::now() + Duration::from_secs(1));
                }
                _ = s.tick.tick() => {
                    let body = s.totals.body(progress.borrow().as_ref());
                    self.beat(body).await;
                }
                _ = s.lease_tick.tick() => {
                    self.lease.heartbeat().await;
                    // Belt and braces for a stop the watch missed (NATS outage).
                    if matches!(self.shared.ownership.stop_requested(self.event.playback_id).await, Ok(true)) {
                        self.stop.cancel();
                    }
                }
            }
        }
    }

    /// Starts taking the thumbnail from the part the clip begins with, once that part holds
    /// frames past [`THUMB_AT_SEC`]; true once started. The clip is still recorded meanwhile.
    async fn start_thumbnail(&mut self, progress: &watch::Receiver<Option<Progress>>) -> bool {
        let parts: Vec<PathBuf> = self
            .manifest
            .parts
            .iter()
            .map(|n| self.dir.join(n))
            .collect();
        let Some(first) = parts_with_fragments(&parts).await.into_iter().next() else {
            return false;
        };
        let written = progress.borrow().as_ref().map_or(0.0, |p| p.out_time_sec);
        if parts.last() == Some(&first) && written < THUMB_AFTER.as_secs_f64() {
            return false;
        }
        let ffmpeg = self.shared.config.ffmpeg_path.clone();
        let (part, thumb) = (first.clone(), self.dir.join(THUMB));
        let task = tokio::spawn(async move {
            match frame_at(&ffmpeg, &part, &thumb, THUMB_AT_SEC).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(error = %e, "no thumbnail while recording; taken after the stop");
                    false
                }
            }
        });
        self.ahead.thumb = Some(EarlyThumb { part: first, task });
        true
    }

    /// Deletes the direct clips of this recording (an FFmpeg run that did not stop cleanly).
    async fn remove_direct_clips(&self) {
        for name in &self.manifest.parts {
            let _ = tokio::fs::remove_file(manifest::direct_for(&self.dir.join(name))).await;
        }
    }

    /// Waits `d` before the next part, sending heartbeats once the recording has started;
    /// returns why the recording must end instead, if it must.
    async fn pause(&mut self, d: Duration, s: &mut Session) -> Option<StopReason> {
        let t0 = s.started.map(|(t0, _)| t0);
        let limit = match t0 {
            Some(t0) => (t0 + s.max).min(Instant::now() + d),
            None => Instant::now() + d,
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(limit) => {
                    return match t0 {
                        Some(t0) if t0.elapsed() + Duration::from_millis(500) >= s.max => Some(StopReason::MaxDuration),
                        _ => None,
                    };
                }
                // Before the first frames the end does not abort the start (see `first_frames`).
                _ = self.stop.cancelled(), if t0.is_some() => return Some(StopReason::EventEnded),
                _ = self.shared.shutdown.cancelled() => return Some(StopReason::Shutdown),
                _ = s.tick.tick(), if t0.is_some() => self.beat(s.totals.body(None)).await,
                _ = s.lease_tick.tick() => self.lease.heartbeat().await,
            }
        }
    }

    /// A `progress` message: the figures, and the heartbeat the reconciler watches.
    async fn beat(&mut self, body: StatusBody) {
        if let Err(e) = self.reporter.publish(body).await {
            tracing::warn!(error = %e, "cannot report progress");
        }
    }
}

/// Finalizing and Uploading, for a live recording and for one recovered after a crash: the parts
/// in `dir` become one clip (and, beside it, the thumbnail); the clip is probed while clip and
/// thumbnail are uploaded and verified; `completed` is reported; then `dir` is deleted.
/// `processing` is reported first and repeated, with the lease's heartbeat, until then.
pub async fn finish(
    shared: &Shared,
    reporter: &mut Reporter,
    mut lease: Lease,
    dir: &Path,
    recorded: Recorded,
    ahead: Ahead,
) -> Outcome {
    let Recorded {
        started_at,
        ended_at,
        partial,
    } = recorded;
    let id = reporter.playback_id();
    let processing = StatusBody::Processing { ended_at, stopped_by: None };
    if let Err(e) = reporter.publish(processing.clone()).await {
        tracing::error!(error = %e, "cannot report processing");
    }
    let video = dir.join(VIDEO);
    let Ahead {
        thumb: early,
        probe: standby,
    } = ahead;
    let thumb = dir.join(THUMB);
    let mut beat = Beat::new(shared, processing);
    let timer = std::time::Instant::now();
    // Joining a long recording takes a while: heartbeats continue meanwhile.
    let prepared = prepare(shared, dir, &video, &thumb, early);
    let Some(prepared) = beat.during(reporter, &mut lease, prepared).await else {
        return Outcome::Abandoned;
    };
    let has_thumb = match prepared {
        Ok(t) => t,
        Err(f) => {
            let keep = f.code != FailureCode::NoMedia;
            return fail_finished(shared, reporter, lease, dir, f, keep).await;
        }
    };
    let prepared_ms = timer.elapsed().as_millis() as u64;

    note_state(id, State::Uploading);
    // The clip is probed while it goes up: both only read the finished file.
    let thumb = has_thumb.then_some(thumb.as_path());
    let delivered = async {
        let started = std::time::Instant::now();
        let ms = || started.elapsed().as_millis() as u64;
        tokio::join!(
            async { (inspect(shared, &video, standby).await, ms()) },
            async { (upload_retrying(shared, id, &video, thumb).await, ms()) }
        )
    };
    let Some(((inspected, probed_ms), (uploaded, uploaded_ms))) =
        beat.during(reporter, &mut lease, delivered).await
    else {
        return Outcome::Abandoned;
    };
    let clip = match inspected {
        Ok(c) => c,
        Err(f) => {
            if uploaded.is_ok() {
                remove_uploaded(shared, id).await;
            }
            let keep = f.code != FailureCode::NoMedia;
            return fail_finished(shared, reporter, lease, dir, f, keep).await;
        }
    };
    let receipt = match uploaded {
        Ok(r) => r,
        Err(e) => {
            let f = Failure::new(FailureCode::UploadFailed, format!("upload given up: {e}"));
            return fail_finished(shared, reporter, lease, dir, f, true).await;
        }
    };
    let wall = (ended_at - started_at).num_milliseconds() as f64 / 1000.0;
    let partial = partial || clip.duration_sec + 3.0 < wall;
    let video_key = ObjectKey::Video(id);
    let url = match shared.storage.url_for(&video_key).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "no url for the clip");
            None
        }
    };
    let completed = StatusBody::Completed(CompletedClip {
        object_key: video_key.to_string(),
        url,
        thumb_key: has_thumb.then(|| ObjectKey::Thumbnail(id).to_string()),
        size_bytes: receipt.size_bytes,
        duration_sec: clip.duration_sec,
        video_codec: clip.video_codec,
        width: clip.width,
        height: clip.height,
        audio_codec: clip.audio_codec,
        sha256: receipt.sha256,
        started_at,
        ended_at,
        partial,
    });
    if let Err(e) = reporter.publish(completed).await {
        // The clip is uploaded but not announced: keep the directory so the next start
        // announces it (recovery re-uploads and reports again; the projector ignores repeats).
        tracing::error!(error = %e, "cannot report completed; keeping the directory");
        return Outcome::Abandoned;
    }
    // Where the time after the stop goes (finalizing, then probe and uploads side by side).
    tracing::info!(
        playback_id = %id,
        prepared_ms,
        probed_ms,
        uploaded_ms,
        completed_ms = timer.elapsed().as_millis() as u64,
        "clip completed"
    );
    // The lease says done before the directory goes: a crash in between leaves a directory the
    // next start only removes.
    lease.refresh(LeaseState::Done).await;
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(playback_id = %id, error = %e, "cannot remove the uploaded recording directory");
    }
    note_state(id, State::Done);
    Outcome::Completed { partial }
}

/// The `processing` heartbeat of [`finish`]: every `PROGRESS_INTERVAL_SEC` the status is
/// repeated and the lease refreshed while a step runs.
struct Beat<'a> {
    shared: &'a Shared,
    body: StatusBody,
    tick: tokio::time::Interval,
}

impl<'a> Beat<'a> {
    fn new(shared: &'a Shared, body: StatusBody) -> Self {
        let mut tick = tokio::time::interval(shared.config.progress_interval);
        tick.reset();
        Self { shared, body, tick }
    }

    /// Runs `step` with heartbeats; `None` when the worker aborts first.
    async fn during<T>(
        &mut self,
        reporter: &mut Reporter,
        lease: &mut Lease,
        step: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(step);
        loop {
            tokio::select! {
                r = &mut step => return Some(r),
                _ = self.tick.tick() => {
                    if let Err(e) = reporter.publish(self.body.clone()).await {
                        tracing::warn!(error = %e, "cannot report processing");
                    }
                    lease.heartbeat().await;
                }
                _ = self.shared.abort.cancelled() => return None,
            }
        }
    }
}

/// Where the thumbnail is taken: this far into the clip, or its first frame when it is shorter.
const THUMB_AT_SEC: f64 = 1.0;
/// When the thumbnail is taken during the recording: once this much is recorded, the fragment
/// holding [`THUMB_AT_SEC`] is written for any keyframe interval up to this long (a part holds
/// a fragment only after its second keyframe, which is checked too).
const THUMB_AFTER: Duration = Duration::from_secs(2);

/// Finalizing: the faststart MP4 and the thumbnail. The clip is the one FFmpeg finished itself
/// when a single part holds frames (ADR 0010), else the parts are joined; an earlier run may
/// have made it already. The thumbnail is the one taken while recording, when it came from the
/// part the clip begins with, else it is taken from that part beside the join.
/// Returns whether there is a thumbnail; failing to make one does not fail the clip.
async fn prepare(
    shared: &Shared,
    dir: &Path,
    video: &Path,
    thumb: &Path,
    early: Option<EarlyThumb>,
) -> Result<bool, Failure> {
    let cfg = &shared.config;
    if tokio::fs::try_exists(video).await.unwrap_or(false) {
        if let Some(e) = early {
            e.cancel().await;
        }
        return Ok(make_thumbnail(shared, video, thumb).await);
    }
    let parts = manifest::parts_in(dir)
        .await
        .map_err(|e| Failure::new(FailureCode::RecordingFailed, e.to_string()))?;
    let with_frames = parts_with_fragments(&parts).await;
    let first = with_frames.first().cloned();
    let tmp = dir.join("video.tmp.mp4");
    let thumbed = async {
        match (early, &first) {
            (Some(e), Some(part)) if e.part == *part => {
                e.task.await.unwrap_or(false) || make_thumbnail(shared, part, thumb).await
            }
            (early, Some(part)) => {
                if let Some(e) = early {
                    e.cancel().await;
                }
                make_thumbnail(shared, part, thumb).await
            }
            (_, None) => false,
        }
    };
    let joined = async {
        match direct_clip(&with_frames).await {
            Some(direct) => tokio::fs::rename(&direct, &tmp)
                .await
                .map(|()| with_frames.clone())
                .map_err(MediaError::Io),
            None => finalize(&cfg.ffmpeg_path, &parts, &tmp).await,
        }
    };
    let (joined, thumbed) = tokio::join!(joined, thumbed);
    let joined = joined.map_err(|e| match e {
        MediaError::NoMedia(m) => Failure::new(FailureCode::NoMedia, m),
        other => Failure::new(FailureCode::RecordingFailed, other.to_string()),
    })?;
    tokio::fs::rename(&tmp, video)
        .await
        .map_err(|e| Failure::new(FailureCode::RecordingFailed, e.to_string()))?;
    if thumbed && joined.first() == first.as_ref() {
        return Ok(true);
    }
    // The join skipped that part: the clip's own first frames make the thumbnail.
    Ok(make_thumbnail(shared, video, thumb).await)
}

/// Writes the thumbnail of `source` to `thumb`; false (logged) when there is none.
async fn make_thumbnail(shared: &Shared, source: &Path, thumb: &Path) -> bool {
    match thumbnail(&shared.config.ffmpeg_path, source, thumb, THUMB_AT_SEC).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no thumbnail");
            let _ = tokio::fs::remove_file(thumb).await;
            false
        }
    }
}

/// The probe of the finished clip: what `completed` reports. The ffprobe started ahead reads
/// it when there is one; a fresh ffprobe reads the file when there is none or it failed.
async fn inspect(
    shared: &Shared,
    video: &Path,
    standby: Option<StandbyProbe>,
) -> Result<ClipInfo, Failure> {
    let ffprobe = &shared.config.ffprobe_path;
    let probed = match standby {
        Some(probe) => match probe.probe(video).await {
            Ok(info) => Ok(info),
            Err(e) => {
                tracing::warn!(error = %e, "the ffprobe started ahead failed; probing again");
                probe_file(ffprobe, video).await
            }
        },
        None => probe_file(ffprobe, video).await,
    };
    probed.map_err(|e| match e {
        MediaError::NoMedia(m) => Failure::new(FailureCode::NoMedia, m),
        other => Failure::new(FailureCode::ProbeFailed, other.to_string()),
    })
}

/// What the store confirmed for the clip.
struct Uploaded {
    size_bytes: u64,
    sha256: String,
}

/// Uploads clip and thumbnail, retrying the pair with backoff after a transient failure until
/// `UPLOAD_GIVE_UP_SEC`.
async fn upload_retrying(
    shared: &Shared,
    id: PlaybackId,
    video: &Path,
    thumb: Option<&Path>,
) -> Result<Uploaded, crate::upload::UploadError> {
    let deadline = Instant::now() + shared.config.upload_give_up;
    let mut attempt = 0u32;
    loop {
        match upload_both(shared, id, video, thumb).await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                let wait = backoff(attempt, Duration::from_secs(60));
                attempt += 1;
                tracing::warn!(playback_id = %id, attempt, error = %e, "upload failed, retrying");
                tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
            }
            other => return other,
        }
    }
}

/// Clip and thumbnail go up side by side.
async fn upload_both(
    shared: &Shared,
    id: PlaybackId,
    video: &Path,
    thumb: Option<&Path>,
) -> Result<Uploaded, crate::upload::UploadError> {
    let (video_key, thumb_key) = (ObjectKey::Video(id), ObjectKey::Thumbnail(id));
    let (receipt, thumb) = tokio::join!(shared.uploader.upload_file(&video_key, video), async {
        match thumb {
            Some(t) => shared.uploader.upload_file(&thumb_key, t).await.map(Some),
            None => Ok(None),
        }
    });
    let receipt = receipt?;
    thumb?;
    Ok(Uploaded {
        size_bytes: receipt.size_bytes,
        sha256: receipt.sha256,
    })
}

/// Deletes what was uploaded of a clip that then failed its probe (best effort: a leftover
/// object costs only storage, the playback is reported `failed` either way).
async fn remove_uploaded(shared: &Shared, id: PlaybackId) {
    for key in ObjectKey::all_for(id) {
        if let Err(e) = shared.uploader.delete(&key).await {
            tracing::warn!(playback_id = %id, %key, error = %e, "cannot delete the object of a failed clip");
        }
    }
}

/// Reports `failed` for a recording that reached finalizing. The directory is kept in
/// `RECORD_DIR/_failed/` when it holds something worth keeping, else removed.
async fn fail_finished(
    shared: &Shared,
    reporter: &mut Reporter,
    mut lease: Lease,
    dir: &Path,
    failure: Failure,
    keep: bool,
) -> Outcome {
    let id = reporter.playback_id();
    note_state(id, State::Failed);
    tracing::warn!(playback_id = %id, code = failure.code.as_str(), message = %failure.message, "recording failed");
    if let Err(e) = reporter
        .publish(StatusBody::Failed {
            code: failure.code,
            message: failure.message,
        })
        .await
    {
        tracing::error!(error = %e, "cannot report the failure");
    }
    let cleaned = if keep {
        manifest::move_to_failed(&shared.config.record_dir, dir)
            .await
            .map(|kept| tracing::warn!(playback_id = %id, kept = %kept.display(), "recording kept for an operator"))
            .map_err(|e| e.to_string())
    } else {
        tokio::fs::remove_dir_all(dir)
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = cleaned {
        tracing::warn!(playback_id = %id, error = %e, "cannot clean up the recording directory");
    }
    lease.refresh(LeaseState::Failed).await;
    Outcome::Failed(failure.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(0, max), Duration::from_secs(1));
        assert_eq!(backoff(1, max), Duration::from_secs(2));
        assert_eq!(backoff(4, max), Duration::from_secs(16));
        assert_eq!(backoff(5, max), max);
        assert_eq!(backoff(1000, max), max);
    }

    #[test]
    fn scrub_removes_the_credential() {
        let url = RtspUrl::parse("rtsp://admin:hunter22@10.1.1.1/s").unwrap();
        let text = format!("error opening {} (hunter22)", url.expose());
        let clean = scrub(&text, &url);
        assert!(!clean.contains("hunter22"), "{clean}");
        assert!(clean.contains("10.1.1.1"));
    }

    #[test]
    fn progress_counts_finished_parts() {
        let mut totals = Totals::default();
        let p = Progress {
            frames: 10,
            fps: Some(25.0),
            bitrate_kbps: Some(800.0),
            total_size: 1000,
            out_time_sec: 0.4,
            speed: Some(1.0),
            end: false,
        };
        totals.add(&p);
        match totals.body(Some(&p)) {
            StatusBody::Progress {
                frames, bytes, fps, ..
            } => {
                assert_eq!(frames, 20);
                assert_eq!(bytes, 2000);
                assert_eq!(fps, Some(25.0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
