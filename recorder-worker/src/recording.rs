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
//! - **Finalizing / Uploading** ([`crate::finish`], shared with crash recovery): `processing`
//!   says why the recording stopped; the clip is made, probed, thumbnailed, uploaded and
//!   verified; `completed` is reported and only then is the local directory deleted.
//!
//! Nothing that waits for NATS runs in the loops that watch FFmpeg: statuses go to the
//! [`Reporter`] (which returns at once, or after a write to the status spool), the lease is kept
//! fresh by a [`LeaseKeeper`] beside the job, and the stop marker is polled beside the capture.
//! A stop, a shutdown or the max duration is acted on at once, even while NATS is down.
//!
//! Failure rule for a camera lost mid-recording: FFmpeg is restarted until the event ends or its
//! time is up; what was recorded is completed with `partial: true`, and `FAILED no_media` only
//! when nothing playable was recorded.

use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::messages::{EventCreated, FailureCode, StatusBody, StopCause};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ffmpeg::{ExitReport, MediaError, RecordPlan, Recorder};
use crate::finish::{finish, Recorded};
use crate::manifest::{self, Manifest};
use crate::ownership::{Lease, LeaseKeeper, LeaseState, Ownership};
use crate::probe::{probe_source, SourceInfo};
use crate::progress::Progress;
use crate::status::{Reporter, Subject};
use crate::worker::Shared;

/// The first wait before another attempt at the camera; it doubles up to
/// `RESTART_BACKOFF_MAX_SEC`.
const RETRY_FIRST: Duration = Duration::from_secs(1);

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

/// Logs a state change of a recording.
pub(crate) fn note_state(id: PlaybackId, state: State) {
    tracing::debug!(playback_id = %id, ?state, "recording state");
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

impl From<StopReason> for StopCause {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::EventEnded => StopCause::EventEnded,
            StopReason::MaxDuration => StopCause::MaxDuration,
            StopReason::Shutdown => StopCause::Shutdown,
        }
    }
}

/// A recording that ends without a clip.
pub(crate) struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
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
}

impl Session {
    fn new(max: Duration, cfg: &crate::config::Config) -> Self {
        let mut tick = tokio::time::interval(cfg.progress_interval);
        tick.reset();
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
        Ok(nth_delay(attempt, RETRY_FIRST, self.backoff_max))
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
struct Job {
    shared: Arc<Shared>,
    event: EventCreated,
    lease: Arc<LeaseKeeper>,
    reporter: Reporter,
    stop: CancellationToken,
    dir: PathBuf,
    manifest: Manifest,
    state: State,
}

/// Runs one claimed recording to its end, its lease kept fresh beside it. The stop registry
/// entry lives as long as this call; `slot` (a `MAX_CONCURRENT_RECORDINGS` permit) is given back
/// as soon as FFmpeg has stopped, so the next event can start while this clip is finalized and
/// uploaded.
pub async fn run(
    shared: Arc<Shared>,
    event: EventCreated,
    lease: Lease,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Outcome {
    let id = event.playback_id;
    let lease = Arc::new(LeaseKeeper::new(lease));
    let job = Job {
        stop: shared.stops.register(id),
        reporter: shared.status.reporter(Subject {
            playback_id: id,
            event_id: event.event_id,
            camera_id: event.camera_id,
            site: event.site.clone(),
        }),
        dir: manifest::recording_dir(&shared.config.record_dir, id),
        manifest: Manifest::new(&event, Utc::now()),
        shared: shared.clone(),
        event,
        lease: lease.clone(),
        state: State::Claimed,
    };
    let outcome = tokio::select! {
        outcome = job.drive(slot) => outcome,
        never = lease.keep(shared.config.lease_heartbeat) => match never {},
    };
    shared.stops.remove(id);
    tracing::info!(playback_id = %id, ?outcome, "recording finished");
    outcome
}

impl Job {
    fn enter(&mut self, state: State) {
        note_state(self.event.playback_id, state);
        self.state = state;
    }

    async fn drive(mut self, slot: tokio::sync::OwnedSemaphorePermit) -> Outcome {
        if self.ended_before_start().await {
            let failure = Failure::new(
                FailureCode::EndedBeforeStart,
                "the event ended before the recording started",
            );
            return self.fail(failure).await;
        }
        self.enter(State::Starting);
        let recorded = match self.record().await {
            Ok(r) => r,
            Err(f) => return self.fail(f).await,
        };
        // The camera is no longer read: finalizing and uploading do not hold a recording slot.
        drop(slot);
        self.enter(State::Finalizing);
        self.lease.set(LeaseState::Processing);
        let Job {
            shared,
            lease,
            mut reporter,
            dir,
            ..
        } = self;
        finish(&shared.finisher, &mut reporter, &lease, &dir, recorded).await
    }

    /// Whether the stop marker is already there (the recording waited for a slot).
    async fn ended_before_start(&self) -> bool {
        let id = self.event.playback_id;
        match self.shared.ownership.stop_requested(id).await {
            Ok(ended) => ended,
            Err(e) => {
                tracing::warn!(playback_id = %id, error = %e, "cannot check the stop marker");
                false
            }
        }
    }

    /// Reports `failed`, removes what was recorded (nothing usable) and closes the lease.
    async fn fail(mut self, failure: Failure) -> Outcome {
        self.enter(State::Failed);
        let message = scrub(&failure.message, &self.event.rtsp_url);
        tracing::warn!(playback_id = %self.event.playback_id, code = failure.code.as_str(), %message, "recording failed");
        self.reporter
            .report(StatusBody::Failed {
                code: failure.code,
                message,
            })
            .await;
        if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
            if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
                tracing::warn!(playback_id = %self.event.playback_id, error = %e, "cannot remove the recording directory");
            }
        }
        self.lease.settle(LeaseState::Failed).await;
        Outcome::Failed(failure.code)
    }

    /// Starting and Recording: probes the camera, then records until the event ends, its time is
    /// up or the worker shuts down, with the stop marker polled beside the capture.
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
        let marker = poll_stop_marker(
            self.shared.ownership.clone(),
            self.event.playback_id,
            self.stop.clone(),
            self.shared.config.lease_heartbeat,
        );
        let (reason, s) = tokio::select! {
            captured = self.capture(&source) => captured?,
            never = marker => match never {},
        };
        let Some((_, started_at)) = s.started else {
            return Err(Failure::new(FailureCode::CameraUnreachable, s.last_error));
        };
        let ended_at = Utc::now();
        // A shutdown cuts the recording short of its event, as a restart leaves a gap.
        let partial = s.restarts > 0 || reason == StopReason::Shutdown;
        self.manifest.ended_at = Some(ended_at);
        self.manifest.stopped_by = Some(reason.into());
        self.manifest.partial = partial;
        self.save_manifest().await;
        tracing::info!(playback_id = %self.event.playback_id, ?reason, restarts = s.restarts, "recording stopped");
        Ok(Recorded {
            started_at,
            ended_at,
            stopped_by: Some(reason.into()),
            partial,
        })
    }

    /// Runs FFmpeg parts until the recording must stop; a part that gets no frames or dies is
    /// followed by the next after a backoff.
    async fn capture(&mut self, source: &SourceInfo) -> Result<(StopReason, Session), Failure> {
        let grace = self.shared.config.stop_grace;
        let mut s = Session::new(self.max_duration(), &self.shared.config);
        loop {
            let Some(remaining) = s.remaining() else {
                return Ok((StopReason::MaxDuration, s));
            };
            let mut recorder = self.spawn_part(source, remaining)?;
            self.save_manifest().await;
            let mut progress = recorder.progress();
            match self
                .first_frames(&mut recorder, &mut progress, &mut s)
                .await
            {
                FirstFrames::Arrived => {}
                FirstFrames::Stopped(reason) => {
                    recorder.stop(grace).await;
                    return Ok((s.stop_or_fail(reason)?, s));
                }
                FirstFrames::Missing => {
                    let report = recorder.stop(grace).await;
                    let wait = s.no_frames(&report.stderr_tail, &self.event.rtsp_url);
                    tracing::warn!(playback_id = %self.event.playback_id, error = %s.last_error, started = s.started.is_some(), "ffmpeg got no frames");
                    let wait = wait?;
                    match self.pause(wait, &mut s).await {
                        Some(reason) => return Ok((s.stop_or_fail(reason)?, s)),
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
                    let report = recorder.stop(grace).await;
                    if !report.clean {
                        tracing::warn!(playback_id = %self.event.playback_id, code = ?report.code, signal = ?report.signal, "ffmpeg did not stop cleanly");
                        // Its direct clip may be unfinished: the parts make the clip.
                        self.remove_direct_clips().await;
                    }
                    return Ok((reason, s));
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
                    let wait = nth_delay(s.restarts - 1, RETRY_FIRST, s.backoff_max);
                    if let Some(reason) = self.pause(wait, &mut s).await {
                        return Ok((reason, s));
                    }
                }
            }
        }
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
                self.wait_or_shutdown(nth_delay(attempt - 1, RETRY_FIRST, cfg.restart_backoff_max))
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
        if sleep_or_cancel(d, &self.shared.shutdown).await {
            return Ok(());
        }
        Err(Failure::new(
            FailureCode::RecordingFailed,
            "the worker shut down before the recording started",
        ))
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
                _ = s.tick.tick(), if s.started.is_some() => self.reporter.heartbeat(s.totals.body(None)),
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
        self.reporter
            .report(StatusBody::Recording { started_at })
            .await;
    }

    /// Records one part until FFmpeg exits by itself or the recording must stop, reporting
    /// progress and watching the stop, the shutdown and the wall-clock watchdog.
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
                _ = s.tick.tick() => {
                    let body = s.totals.body(progress.borrow().as_ref());
                    self.reporter.heartbeat(body);
                }
            }
        }
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
                _ = s.tick.tick(), if t0.is_some() => self.reporter.heartbeat(s.totals.body(None)),
            }
        }
    }
}

/// Polls the stop marker of a running recording every `every` and stops it when the marker is
/// there: belt and braces for a stop the watch missed (a NATS outage).
async fn poll_stop_marker(
    ownership: Ownership,
    id: PlaybackId,
    stop: CancellationToken,
    every: Duration,
) -> Infallible {
    let mut tick = tokio::time::interval(every);
    tick.reset();
    loop {
        tick.tick().await;
        if matches!(ownership.stop_requested(id).await, Ok(true)) {
            stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn each_stop_reason_is_reported_as_its_cause() {
        assert_eq!(
            StopCause::from(StopReason::EventEnded),
            StopCause::EventEnded
        );
        assert_eq!(
            StopCause::from(StopReason::MaxDuration),
            StopCause::MaxDuration
        );
        assert_eq!(StopCause::from(StopReason::Shutdown), StopCause::Shutdown);
    }
}
