//! One event's recording: its clip cut from the camera's capture ([`crate::capture`]), from
//! claimed lease to `completed` or `failed`, as an explicit state machine:
//! `Claimed -> Starting -> Recording -> Finalizing -> Uploading -> Done | Failed`.
//!
//! - **Starting**: the recording directory and its manifest are written; every segment the ring
//!   holds from the window's start ([`window::Window`]) is hard-linked into the directory, so the
//!   clip starts `preRollSec` before the event (or at the oldest frame held: `startedLate`).
//!   `recording` is reported with the wall-clock time of the clip's first frame as soon as there
//!   is one; a camera that delivers nothing within `FIRST_SEGMENT_SEC` fails the recording with
//!   `camera_unreachable` and the capture's last error.
//! - **Recording**: each segment the capture closes is linked too; `progress` every
//!   `PROGRESS_INTERVAL_SEC`. The end is the event's end plus its post-roll, or its max duration;
//!   the recording is complete when a linked segment reaches it, or, without waiting for the
//!   camera's next keyframe to close the segment, when the whole fragments of the segment FFmpeg
//!   is writing reach it: those are cut into the recording as its last segment
//!   ([`crate::capture::cut`]). A camera that stays away past the end gets the clip with what was
//!   captured; a shutdown cuts the clip where the capture is.
//! - **Finalizing / Uploading** ([`crate::finish`], shared with crash recovery): the linked
//!   segments are joined (stream copy), probed, thumbnailed, uploaded; `completed` carries the
//!   clip's wall-clock start and end, its gaps (holes between segments where the camera delivered
//!   nothing) and `startedLate`.
//!
//! A recording holds no FFmpeg of its own: overlapping events on one camera share its capture,
//! and a hard link keeps a segment for the clip after the ring has let it go. Nothing that waits
//! for NATS runs in the loop: statuses go to the [`Reporter`], the lease is kept fresh by a
//! [`LeaseKeeper`] beside the job.

pub mod window;

use camrec_shared::messages::{EventCreated, FailureCode, StatusBody, StopCause};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::capture::ring::gaps;
use crate::capture::ring::GAP_TOLERANCE;
use crate::capture::segment::{segments_in, Segment};
use crate::capture::Capture;
use crate::consumer::ACK_WAIT;
use crate::finish::{finish, Finisher, Recorded};
use crate::live::LiveUpload;
use crate::manifest::{self, Manifest};
use crate::outcome::{note_state, Failure, Outcome, State};
use crate::ownership::{InProgress, Lease, LeaseKeeper, LeaseState, StopRegistry};
use crate::status::{Reporter, StatusPublisher, Subject};
use camrec_shared::PlaybackId;
use std::convert::Infallible;
use window::{wanted, Window};

/// How often a recording past its end looks at the segment FFmpeg is writing.
const CUT_POLL: Duration = Duration::from_millis(50);

/// What every recording of a worker needs from it: nothing more.
pub struct Deps {
    pub finisher: Finisher,
    pub status: StatusPublisher,
    pub stops: StopRegistry,
    pub record_dir: PathBuf,
    /// `MAX_RECORDING_SEC`: caps the event's `max_duration_sec`.
    pub max_recording: Duration,
    /// `PROGRESS_INTERVAL_SEC`.
    pub progress_interval: Duration,
    /// `LEASE_HEARTBEAT_SEC`.
    pub lease_heartbeat: Duration,
    /// `FIRST_SEGMENT_SEC`: how long a recording waits for the camera's first segment.
    pub first_segment_within: Duration,
    /// How long a recording waits past its end for the segment that reaches it.
    pub end_grace: Duration,
    /// Cancelled when the worker starts shutting down: recordings stop and finish.
    pub shutdown: CancellationToken,
}

/// Registers a claimed recording in the stop registry: call it before the recording's task is
/// spawned, so an `event.ended` right behind its `event.created` finds it.
pub fn register(deps: &Deps, event: &EventCreated) -> watch::Receiver<Option<DateTime<Utc>>> {
    deps.stops.register(event.playback_id)
}

/// What a recording holds besides its lease.
pub struct Held {
    /// Its `event.created`, held in progress until the recording is over.
    pub created: InProgress,
    /// The camera's previous holder, when this worker continues a recording it left open.
    pub takes_over_from: Option<String>,
}

/// Runs one claimed (or continued) recording of the camera `capture` to its end, its lease and
/// its messages kept fresh beside it; `ended` comes from [`register`]. The stop registry entry
/// is removed when it returns, and the messages acknowledged unless another worker continues
/// the recording or the next start will.
pub async fn run(
    deps: Arc<Deps>,
    capture: Capture,
    event: EventCreated,
    lease: Lease,
    ended: watch::Receiver<Option<DateTime<Utc>>>,
    held: Held,
) -> Outcome {
    let id = event.playback_id;
    let lease = Arc::new(LeaseKeeper::new(lease));
    let job = Job {
        reporter: deps.status.reporter(Subject {
            playback_id: id,
            event_id: event.event_id,
            camera_id: event.camera_id,
            site: event.site.clone(),
            takes_over_from: held.takes_over_from.clone(),
        }),
        resumed: held.takes_over_from.is_some(),
        dir: manifest::recording_dir(&deps.record_dir, id),
        manifest: Manifest::new(&event, Utc::now()),
        window: Window {
            occurred_at: event.occurred_at.unwrap_or_else(Utc::now),
            pre_roll: secs(event.limits.pre_roll_sec),
            post_roll: secs(event.limits.post_roll_sec),
            max_duration: secs(event.limits.max_duration_sec.max(1)).min(deps.max_recording),
        },
        deps: deps.clone(),
        capture,
        ended,
        lease: lease.clone(),
        linked: Vec::new(),
        live: None,
    };
    let outcome = tokio::select! {
        outcome = job.drive() => outcome,
        never = lease.keep(deps.lease_heartbeat) => match never {},
        never = keep_in_progress(&deps, id, &held.created) => match never {},
    };
    let ends = deps.stops.remove(id);
    if matches!(outcome, Outcome::Completed { .. } | Outcome::Failed(_)) {
        held.created.done().await;
        for msg in ends {
            msg.done().await;
        }
    }
    tracing::info!(playback_id = %id, ?outcome, "recording finished");
    outcome
}

/// Renews the recording's messages every quarter of [`ACK_WAIT`], so the server hands them to
/// nobody else while this worker records.
async fn keep_in_progress(deps: &Deps, id: PlaybackId, created: &InProgress) -> Infallible {
    let mut tick = tokio::time::interval(ACK_WAIT / 4);
    tick.reset();
    loop {
        tick.tick().await;
        created.progress().await;
        for msg in deps.stops.held_of(id) {
            msg.progress().await;
        }
    }
}

/// How long the end of a recording waits for its segments' uploads to catch up (at most a
/// segment or two behind while the store answers) before the rest goes up with the clip: a
/// store that is down must not hold up the clip's joining.
const LIVE_DRAIN_WITHIN: Duration = Duration::from_secs(1);

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// One recording being driven through its states.
struct Job {
    deps: Arc<Deps>,
    capture: Capture,
    reporter: Reporter,
    /// The event's end, once `event.ended` has arrived.
    ended: watch::Receiver<Option<DateTime<Utc>>>,
    lease: Arc<LeaseKeeper>,
    dir: PathBuf,
    manifest: Manifest,
    window: Window,
    /// The segments hard-linked into `dir`, in time order.
    linked: Vec<Segment>,
    /// Uploads each linked segment while the recording goes on ([`crate::live`]).
    live: Option<LiveUpload>,
    /// This worker continues a recording the camera's previous holder left open: what that
    /// holder uploaded is the clip's start.
    resumed: bool,
}

/// How the recording phase ended.
struct Stopped {
    cause: StopCause,
    /// The clip does not reach its end (the camera stayed away, the worker shut down).
    cut_short: bool,
}

impl Job {
    fn enter(&mut self, state: State) {
        note_state(self.manifest.playback_id, state);
    }

    async fn drive(mut self) -> Outcome {
        self.enter(State::Starting);
        let stopped = match self.record().await {
            _ if self.capture.is_lost() => return self.taken_over().await,
            Ok(s) => s,
            Err(f) => return self.fail(f).await,
        };
        self.enter(State::Finalizing);
        self.lease.set(LeaseState::Processing);
        let clip = match self.live.take() {
            Some(live) => live.drain(LIVE_DRAIN_WITHIN).await,
            None => None,
        };
        let mut recorded = self.recorded(stopped).await;
        recorded.stream = clip;
        let Job {
            deps,
            lease,
            mut reporter,
            dir,
            ..
        } = self;
        finish(&deps.finisher, &mut reporter, &lease, &dir, recorded).await
    }

    /// Links the window's segments as they close until the clip is complete; reports
    /// `recording` at its first segment and `progress` meanwhile.
    async fn record(&mut self) -> Result<Stopped, Failure> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
            Failure::new(
                FailureCode::RecordingFailed,
                format!("recording directory: {e}"),
            )
        })?;
        self.save_manifest().await;
        self.live = Some(LiveUpload::spawn(
            self.deps.finisher.uploader().clone(),
            self.manifest.playback_id,
            self.capture.clone(),
            // The longest clip: the pre-roll, the max duration and a segment past it.
            (!self.resumed)
                .then(|| self.window.pre_roll + self.window.max_duration + Duration::from_secs(10)),
        ));
        // A continued recording starts where its previous holder's first segment did, and
        // holds what that holder uploaded even when this worker's capture adds nothing (the
        // event ended before the takeover).
        let (mut first_frame, mut stored_end) = (None, None);
        if self.resumed {
            let stored =
                crate::live::listed(self.deps.finisher.uploader(), self.manifest.playback_id)
                    .await
                    .unwrap_or_default();
            let ms = |m: Option<i64>| m.and_then(DateTime::from_timestamp_millis);
            first_frame = ms(stored.iter().map(|l| l.name.start_ms).min());
            stored_end = ms(stored.iter().map(|l| l.name.end_ms()).max());
        }
        let held_elsewhere = first_frame.is_some();
        let mut newest = self.capture.newest();
        let from = self.window.start();
        let (until, _) = self.window.end(*self.ended.borrow());
        for s in self.capture.segments_from(from) {
            if wanted(s.start, s.end(), from, Some(until)) {
                self.link(s).await;
            }
        }
        let started = Instant::now();
        let clock = WallClock::now();
        let closed = self.capture.closed();
        // Once the end is past, the segment FFmpeg is writing is looked at every `CUT_POLL`:
        // its whole fragments end the clip as soon as they reach the end.
        let mut next_cut = started;
        let mut tick = tokio::time::interval(self.deps.progress_interval);
        tick.reset();
        loop {
            let ended_at = *self.ended.borrow_and_update();
            let (until, cause) = self.window.end(ended_at);
            let reached = self.linked.last().map(|s| s.end()).max(stored_end);
            if reached.is_some_and(|end| end >= until) {
                return Ok(Stopped {
                    cause,
                    cut_short: false,
                });
            }
            if self.manifest.started_at.is_none() {
                if let Some(first) = self.linked.first() {
                    let at = first_frame.unwrap_or(first.start).min(first.start);
                    self.mark_started(at).await;
                }
            }
            let at_end = clock.instant_at(until);
            let give_up = at_end + self.deps.end_grace;
            let no_first = started + self.deps.first_segment_within;
            tokio::select! {
                changed = newest.changed() => {
                    if changed.is_err() {
                        return Ok(Stopped { cause: StopCause::Shutdown, cut_short: true });
                    }
                    self.link_closed(from, until).await;
                }
                _ = self.ended.changed() => {}
                _ = tokio::time::sleep_until(next_cut.max(at_end)) => {
                    self.link_closed(from, until).await;
                    if self.linked.last().is_some_and(|s| s.end() >= until) {
                        continue;
                    }
                    if let Some(cut) = self.capture.cut_open(until, &self.dir).await {
                        if wanted(cut.start, cut.end(), from, Some(until)) {
                            self.add_linked(cut);
                            return Ok(Stopped { cause, cut_short: false });
                        }
                        let _ = tokio::fs::remove_file(&cut.path).await;
                    }
                    next_cut = Instant::now() + CUT_POLL;
                }
                _ = tokio::time::sleep_until(give_up) => {
                    if self.linked.is_empty() && !held_elsewhere {
                        return Err(self.nothing_held());
                    }
                    tracing::warn!(playback_id = %self.manifest.playback_id, "no segment reached the clip's end; finishing with what was captured");
                    return Ok(Stopped { cause, cut_short: true });
                }
                _ = tokio::time::sleep_until(no_first), if self.linked.is_empty() && !held_elsewhere => {
                    return Err(self.unreachable());
                }
                _ = closed.cancelled() => {
                    if self.linked.is_empty() && !held_elsewhere {
                        return Err(self.unreachable());
                    }
                    tracing::warn!(playback_id = %self.manifest.playback_id, "the camera's capture stopped here; finishing with what was captured");
                    return Ok(Stopped { cause: StopCause::Shutdown, cut_short: true });
                }
                _ = self.deps.shutdown.cancelled() => {
                    if self.linked.is_empty() && !held_elsewhere {
                        return Err(Failure::new(FailureCode::RecordingFailed, "the worker shut down before the recording started"));
                    }
                    return Ok(Stopped { cause: StopCause::Shutdown, cut_short: true });
                }
                _ = tick.tick(), if !self.linked.is_empty() => {
                    let body = self.progress();
                    self.reporter.heartbeat(body);
                }
            }
        }
    }

    /// Links the segments the capture closed since the last one linked that overlap the
    /// window `from..until`.
    async fn link_closed(&mut self, from: DateTime<Utc>, until: DateTime<Utc>) {
        let last = self.linked.last().map(|s| s.seq).unwrap_or(0);
        for s in self.capture.segments_after(last) {
            if wanted(s.start, s.end(), from, Some(until)) {
                self.link(s).await;
            }
        }
    }

    /// Hard-links a segment into the recording directory (skipped, logged, when the ring has
    /// already dropped it).
    async fn link(&mut self, s: Segment) {
        if self.linked.last().is_some_and(|l| l.seq >= s.seq) {
            return;
        }
        let target = self.dir.join(s.name());
        match tokio::fs::hard_link(&s.path, &target).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::warn!(playback_id = %self.manifest.playback_id, segment = %s.name(), error = %e, "cannot link a segment into the recording");
                return;
            }
        }
        self.add_linked(Segment { path: target, ..s });
    }

    /// Adds a segment file of the recording directory to the clip (and to its live upload).
    fn add_linked(&mut self, mut s: Segment) {
        if s.seq == 0 {
            // A cut of the open segment: after every segment the capture closed before it.
            s.seq = self.linked.last().map_or(0, |l| l.seq) + 1;
        }
        self.manifest.parts.push(s.name());
        if let Some(live) = &self.live {
            live.push(s.clone());
        }
        self.linked.push(s);
    }

    async fn mark_started(&mut self, first_frame: DateTime<Utc>) {
        self.enter(State::Recording);
        self.manifest.started_at = Some(first_frame);
        self.save_manifest().await;
        self.reporter
            .report(StatusBody::Recording {
                started_at: first_frame,
            })
            .await;
    }

    fn progress(&self) -> StatusBody {
        let bytes: u64 = self.linked.iter().map(|s| s.bytes).sum();
        let media: f64 = self.linked.iter().map(|s| s.duration.as_secs_f64()).sum();
        StatusBody::Progress {
            frames: 0,
            fps: None,
            bitrate_kbps: (media > 0.0).then(|| bytes as f64 * 8.0 / media / 1000.0),
            bytes,
            media_time_sec: media,
        }
    }

    /// The window passed with no segment in it: the camera was unreachable, or (a capture that
    /// started after the window) there is no footage of the event.
    fn nothing_held(&self) -> Failure {
        let report = self.capture.report().borrow().clone();
        if report.state == crate::capture::CaptureState::Capturing {
            return Failure::new(
                FailureCode::NoMedia,
                "the camera's capture holds nothing of the event's window",
            );
        }
        self.unreachable()
    }

    fn unreachable(&self) -> Failure {
        let report = self.capture.report().borrow().clone();
        let reason = report
            .last_error
            .unwrap_or_else(|| "the camera delivered no frames".into());
        Failure::new(FailureCode::CameraUnreachable, reason)
    }

    /// What the clip holds, from its segments (with those a previous holder uploaded, fetched
    /// into the directory); saved in the manifest too.
    async fn recorded(&mut self, stopped: Stopped) -> Recorded {
        let id = self.manifest.playback_id;
        if self.resumed {
            let uploader = self.deps.finisher.uploader();
            match crate::live::fetch_missing(uploader, id, &self.dir).await {
                Ok(n) => {
                    tracing::info!(playback_id = %id, segments = n, "segments of the camera's previous holder fetched")
                }
                Err(e) => {
                    tracing::warn!(playback_id = %id, error = %e, "cannot fetch the previous holder's segments")
                }
            }
        }
        let all = segments_in(&self.dir).await.unwrap_or_default();
        let all = if all.is_empty() {
            self.linked.clone()
        } else {
            all
        };
        let first = all.first().map(|s| s.start).unwrap_or_else(Utc::now);
        let last = all.last().map(|s| s.end()).unwrap_or(first);
        let holes = gaps(&all, GAP_TOLERANCE);
        let started_late = self.window.started_late(first);
        let partial = stopped.cut_short || !holes.is_empty();
        self.manifest.ended_at = Some(last);
        self.manifest.stopped_by = Some(stopped.cause);
        self.manifest.partial = partial;
        self.save_manifest().await;
        tracing::info!(playback_id = %id, cause = ?stopped.cause, segments = all.len(), gaps = holes.len(), started_late, "recording stopped");
        Recorded {
            started_at: first,
            ended_at: last,
            stopped_by: Some(stopped.cause),
            partial,
            gaps: holes,
            started_late,
            epoch: self.capture.tenure().borrow().epoch,
            stream: None,
        }
    }

    /// Another worker holds the camera now and continues the recording from what was uploaded:
    /// nothing is reported, what is only here is dropped.
    async fn taken_over(mut self) -> Outcome {
        let id = self.manifest.playback_id;
        tracing::warn!(playback_id = %id, "another worker took the camera over; it continues the recording");
        self.drop_clip().await;
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            tracing::warn!(playback_id = %id, error = %e, "cannot remove the recording directory");
        }
        Outcome::TakenOver
    }

    /// Reports `failed`, removes what was linked (nothing usable) and closes the lease.
    /// Stops the uploads of a recording that is not finished here; the parts of its clip sent
    /// so far are dropped.
    async fn drop_clip(&mut self) {
        if let Some(live) = self.live.take() {
            if let Some(clip) = live.drain(Duration::ZERO).await {
                clip.abandon().await;
            }
        }
    }

    async fn fail(mut self, failure: Failure) -> Outcome {
        self.enter(State::Failed);
        self.drop_clip().await;
        let id = self.manifest.playback_id;
        tracing::warn!(playback_id = %id, code = failure.code.as_str(), message = %failure.message, "recording failed");
        self.reporter
            .report(StatusBody::Failed {
                code: failure.code,
                message: failure.message,
            })
            .await;
        if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
            if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
                tracing::warn!(playback_id = %id, error = %e, "cannot remove the recording directory");
            }
        }
        self.lease.settle(LeaseState::Failed).await;
        Outcome::Failed(failure.code)
    }

    async fn save_manifest(&self) {
        if let Err(e) = self.manifest.write(&self.dir).await {
            tracing::warn!(playback_id = %self.manifest.playback_id, error = %e, "cannot write the manifest");
        }
    }
}

/// Wall-clock times as monotonic instants, from one reading of both clocks: a deadline computed
/// again later (each turn of a loop) stays where it was.
struct WallClock {
    wall: DateTime<Utc>,
    mono: Instant,
}

impl WallClock {
    fn now() -> Self {
        Self {
            wall: Utc::now(),
            mono: Instant::now(),
        }
    }

    /// The instant of `at` (the reading's instant, if `at` is before it).
    fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        self.mono + (at - self.wall).to_std().unwrap_or_default()
    }
}
