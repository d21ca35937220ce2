//! Finalizing and Uploading, the end of a live recording and of one recovered after a crash:
//!
//! 1. `processing` is reported (with why the recording stopped) and repeated as a heartbeat until
//!    the end.
//! 2. The clip: the recording's segments joined (stream copy, `moov` in front); an earlier run
//!    may have made it already. It is probed (what `completed` reports) while its thumbnail is
//!    taken; a clip without a thumbnail is still a clip.
//! 3. Clip and thumbnail are uploaded and verified, retried with backoff for up to
//!    `UPLOAD_GIVE_UP_SEC`.
//! 4. `completed` is reported (it is in the status spool from then on), the lease says `done`,
//!    and only then is the local directory deleted.
//!
//! A clip that cannot be made or probed, or whose upload is given up, ends `failed`; its directory
//! moves to `RECORD_DIR/_failed/` when it holds something worth keeping. There its upload is
//! tried again from time to time ([`retry_failed`], driven by [`crate::disk`]): a clip that gets
//! through is reported `completed` after all and its directory removed.

use camrec_shared::backoff::nth_delay;
use camrec_shared::messages::{CompletedClip, FailureCode, Gap, StatusBody, StopCause};
use camrec_shared::storage::{ObjectKey, Storage};
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::assemble::ClipStream;
use crate::capture::ring::{gaps, Span, GAP_TOLERANCE};
use crate::capture::segment::{segments_in, Segment};
use crate::config::Config;
use crate::ffmpeg::MediaError;
use crate::finalize::{finalize, thumbnail};
use crate::manifest::{self, Manifest, THUMB, VIDEO};
use crate::outcome::{note_state, Failure, Outcome, State};
use crate::ownership::{LeaseKeeper, LeaseState};
use crate::probe::{probe_file, ClipInfo};
use crate::status::{Reporter, StatusPublisher, Subject};
use crate::upload::{UploadError, Uploader};

/// Where the thumbnail is taken: this far into the clip, or its first frame when it is shorter.
const THUMB_AT_SEC: f64 = 1.0;
/// The first wait before retrying an upload; it doubles up to [`UPLOAD_RETRY_MAX`].
const UPLOAD_RETRY_FIRST: Duration = Duration::from_secs(1);
const UPLOAD_RETRY_MAX: Duration = Duration::from_secs(60);

/// What finishing needs from the worker.
#[derive(Clone, Debug)]
pub struct Finisher {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    record_dir: PathBuf,
    /// `PROGRESS_INTERVAL_SEC`: how often `processing` is repeated.
    heartbeat: Duration,
    upload_give_up: Duration,
    uploader: Uploader,
    storage: Storage,
    /// Cancelled when the shutdown grace is over: the directory stays for the next start.
    abort: CancellationToken,
}

impl Finisher {
    /// Where the segments of a recording are uploaded while it records.
    pub fn uploader(&self) -> &Uploader {
        &self.uploader
    }

    pub fn new(
        config: &Config,
        uploader: Uploader,
        storage: Storage,
        abort: CancellationToken,
    ) -> Self {
        Self {
            ffmpeg: config.ffmpeg_path.clone(),
            ffprobe: config.ffprobe_path.clone(),
            record_dir: config.record_dir.clone(),
            heartbeat: config.progress_interval,
            upload_give_up: config.upload_give_up,
            uploader,
            storage,
            abort,
        }
    }
}

/// What the recording phase (or, after a crash, the manifest) tells [`finish`].
pub struct Recorded {
    /// When the clip's first frame was taken.
    pub started_at: DateTime<Utc>,
    /// When the recording stopped.
    pub ended_at: DateTime<Utc>,
    /// Why it stopped, when that is known (a crash leaves it unknown).
    pub stopped_by: Option<StopCause>,
    /// The clip has gaps or was cut short (the camera dropped, the worker shut down or crashed).
    pub partial: bool,
    /// Where the camera delivered nothing, inside the clip.
    pub gaps: Vec<Span>,
    /// The capture-lease epoch the recording's last segments are uploaded under (0 after a
    /// crash: no lease holds then).
    pub epoch: u64,
    /// The capture did not hold the window's start: the clip starts at the oldest frame held.
    pub started_late: bool,
    /// The clip as assembled in the store while it was recorded ([`crate::assemble`]); without
    /// it (or when it cannot be completed) the segments are joined by FFmpeg and uploaded.
    pub stream: Option<ClipStream>,
}

impl Recorded {
    /// What a recording directory left by a crash or kept in `_failed/` holds: the wall-clock
    /// times and gaps of its segments, and what its manifest says. A recording cut by a crash
    /// has no end in its manifest: it is partial.
    pub async fn from_dir(manifest: &Manifest, dir: &Path) -> Self {
        let segments = segments_in(dir).await.unwrap_or_default();
        let started_at = segments
            .first()
            .map(|s| s.start)
            .or(manifest.started_at)
            .unwrap_or(manifest.claimed_at);
        let ended_at = segments
            .last()
            .map(|s| s.end())
            .or(manifest.ended_at)
            .unwrap_or(started_at);
        let holes = gaps(&segments, GAP_TOLERANCE);
        Recorded {
            started_at,
            ended_at,
            stopped_by: manifest.stopped_by,
            partial: manifest.partial || manifest.ended_at.is_none() || !holes.is_empty(),
            gaps: holes,
            started_late: manifest.started_late,
            epoch: 0,
            stream: None,
        }
    }
}

/// The clip in the recording directory, probed, and whether it has a thumbnail.
struct Clip {
    info: ClipInfo,
    has_thumb: bool,
}

/// What the store confirmed for the clip.
struct Uploaded {
    size_bytes: u64,
    sha256: String,
    /// Assembled in the store while it was recorded, not joined and uploaded at the end.
    streamed: bool,
}

/// Finishes the recording in `dir`: see the module documentation.
pub async fn finish(
    f: &Finisher,
    reporter: &mut Reporter,
    lease: &LeaseKeeper,
    dir: &Path,
    recorded: Recorded,
) -> Outcome {
    let id = reporter.playback_id();
    let processing = StatusBody::Processing {
        ended_at: recorded.ended_at,
        stopped_by: recorded.stopped_by,
    };
    reporter.report(processing.clone()).await;
    let mut beat = Beat::new(f, processing);
    let timer = std::time::Instant::now();

    let mut recorded = recorded;
    // The assembled clip is completed while the closed segment list is written.
    let (ready, list) = match recorded.stream.take() {
        Some(stream) => {
            let both = async {
                tokio::join!(
                    streamed_clip(f, id, dir, stream),
                    segment_list(f, id, dir, recorded.epoch)
                )
            };
            match beat.during(reporter, both).await {
                None => return Outcome::Abandoned,
                Some((ready, list)) => (ready, Some(list)),
            }
        }
        None => (None, None),
    };
    let (clip, receipt) = match ready {
        Some(ready) => ready,
        None => {
            let Some(made) = beat.during(reporter, make_clip(f, dir)).await else {
                return Outcome::Abandoned;
            };
            let clip = match made {
                Ok(c) => c,
                Err(failure) => {
                    let keep = failure.code != FailureCode::NoMedia;
                    return fail_finished(f, reporter, lease, dir, failure, keep).await;
                }
            };
            note_state(id, State::Uploading);
            let (video, thumb) = (dir.join(VIDEO), dir.join(THUMB));
            let thumb = clip.has_thumb.then_some(thumb.as_path());
            let uploading = upload_retrying(f, id, &video, thumb);
            let Some(uploaded) = beat.during(reporter, uploading).await else {
                return Outcome::Abandoned;
            };
            let receipt = match uploaded {
                Ok(r) => r,
                Err(e) => {
                    let failure =
                        Failure::new(FailureCode::UploadFailed, format!("upload given up: {e}"));
                    return fail_finished(f, reporter, lease, dir, failure, true).await;
                }
            };
            (clip, receipt)
        }
    };
    let stored_ms = timer.elapsed().as_millis() as u64;
    let receipt_streamed = receipt.streamed;

    let list = match list {
        Some(list) => list,
        None => segment_list(f, id, dir, recorded.epoch).await,
    };
    let mut completed = completed(f, id, &recorded, clip, receipt).await;
    completed.segment_list_key = list.map(|k| k.to_string());
    let partial = completed.partial;
    reporter.report(StatusBody::Completed(completed)).await;
    tracing::info!(
        playback_id = %id,
        stored_ms,
        streamed = receipt_streamed,
        completed_ms = timer.elapsed().as_millis() as u64,
        "clip completed"
    );
    // The lease says done before the directory goes: a crash in between leaves a directory the
    // next start only removes.
    lease.settle(LeaseState::Done).await;
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(playback_id = %id, error = %e, "cannot remove the uploaded recording directory");
    }
    note_state(id, State::Done);
    Outcome::Completed { partial }
}

/// The segments still missing from the store uploaded and the closed playlist written
/// ([`crate::live::segment_list`]); a clip whose list could not be written still completes.
async fn segment_list(f: &Finisher, id: PlaybackId, dir: &Path, epoch: u64) -> Option<ObjectKey> {
    match crate::live::segment_list(&f.uploader, id, dir, epoch).await {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "no segment list for the clip");
            None
        }
    }
}

/// The clip assembled in the store while it was recorded, completed from the segments in
/// `dir` while the first segment is probed (codecs, size) and the thumbnail taken from the
/// segment one second in. `None` (logged) when it cannot be: the caller joins the segments
/// with FFmpeg and uploads the result, which replaces whatever this left at the key.
async fn streamed_clip(
    f: &Finisher,
    id: PlaybackId,
    dir: &Path,
    stream: ClipStream,
) -> Option<(Clip, Uploaded)> {
    let segments = segments_in(dir).await.unwrap_or_default();
    let Some(first) = segments.first() else {
        stream.abandon().await;
        return None;
    };
    let paths: Vec<PathBuf> = segments.iter().map(|s| s.path.clone()).collect();
    let (source, at) = thumb_source(&segments, THUMB_AT_SEC);
    let thumb = dir.join(THUMB);
    let thumbnail = async {
        if !make_thumbnail(f, &source, &thumb, at).await {
            return Ok(false);
        }
        let key = ObjectKey::Thumbnail(id);
        f.uploader.upload_file(&key, &thumb).await.map(|_| true)
    };
    let (stored, info, has_thumb) = tokio::join!(
        stream.finish(&paths),
        probe_file(&f.ffprobe, &first.path),
        thumbnail
    );
    let stored = match stored {
        Ok(s) => s,
        Err(why) => {
            tracing::info!(playback_id = %id, reason = %why, "the clip was not assembled while recording: joining it");
            return None;
        }
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "cannot probe the first segment: joining the clip");
            return None;
        }
    };
    let has_thumb = match has_thumb {
        Ok(has) => has,
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "thumbnail upload failed: joining the clip");
            return None;
        }
    };
    metrics::counter!("upload_bytes_total").increment(stored.size_bytes);
    let clip = Clip {
        info: ClipInfo {
            duration_sec: stored.duration_sec,
            size_bytes: stored.size_bytes,
            moov_before_mdat: true,
            ..info
        },
        has_thumb,
    };
    let receipt = Uploaded {
        size_bytes: stored.size_bytes,
        sha256: stored.sha256,
        streamed: true,
    };
    Some((clip, receipt))
}

/// The segment that holds the clip's time `at_sec`, and the time within it (its last segment's
/// start when the clip is shorter).
fn thumb_source(segments: &[Segment], at_sec: f64) -> (PathBuf, f64) {
    let mut offset = 0.0;
    for s in segments {
        let length = s.duration.as_secs_f64();
        if at_sec < offset + length {
            return (s.path.clone(), (at_sec - offset).max(0.0));
        }
        offset += length;
    }
    let last = segments.last().map(|s| s.path.clone()).unwrap_or_default();
    (last, 0.0)
}

/// Finalizing: the clip made (unless an earlier run did), then probed while its thumbnail is
/// taken.
async fn make_clip(f: &Finisher, dir: &Path) -> Result<Clip, Failure> {
    let (video, thumb) = (dir.join(VIDEO), dir.join(THUMB));
    if !tokio::fs::try_exists(&video).await.unwrap_or(false) {
        join_parts(f, dir, &video).await?;
    }
    let (info, has_thumb) = tokio::join!(
        probe_file(&f.ffprobe, &video),
        make_thumbnail(f, &video, &thumb, THUMB_AT_SEC)
    );
    let info = info.map_err(|e| match e {
        MediaError::NoMedia(m) => Failure::new(FailureCode::NoMedia, m),
        other => Failure::new(FailureCode::ProbeFailed, other.to_string()),
    })?;
    Ok(Clip { info, has_thumb })
}

/// The recording's segments joined; it becomes `video` by a rename, so a crash never leaves half
/// a clip under that name.
async fn join_parts(f: &Finisher, dir: &Path, video: &Path) -> Result<(), Failure> {
    let parts = manifest::parts_in(dir)
        .await
        .map_err(|e| Failure::new(FailureCode::RecordingFailed, e.to_string()))?;
    let tmp = dir.join("video.tmp.mp4");
    let joined = match finalize(&f.ffmpeg, &parts, &tmp).await {
        Ok(()) => tokio::fs::rename(&tmp, video).await.map_err(MediaError::Io),
        Err(e) => Err(e),
    };
    joined.map_err(|e| match e {
        MediaError::NoMedia(m) => Failure::new(FailureCode::NoMedia, m),
        other => Failure::new(FailureCode::RecordingFailed, other.to_string()),
    })
}

/// Writes the thumbnail of `video` to `thumb`; false (logged) when there is none.
async fn make_thumbnail(f: &Finisher, video: &Path, thumb: &Path, at_sec: f64) -> bool {
    match thumbnail(&f.ffmpeg, video, thumb, at_sec).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no thumbnail");
            let _ = tokio::fs::remove_file(thumb).await;
            false
        }
    }
}

/// Uploads clip and thumbnail, retrying the pair with backoff after a transient failure until
/// `UPLOAD_GIVE_UP_SEC`.
async fn upload_retrying(
    f: &Finisher,
    id: PlaybackId,
    video: &Path,
    thumb: Option<&Path>,
) -> Result<Uploaded, UploadError> {
    let deadline = Instant::now() + f.upload_give_up;
    let mut attempt = 0u32;
    loop {
        match upload_both(f, id, video, thumb).await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                let wait = nth_delay(attempt, UPLOAD_RETRY_FIRST, UPLOAD_RETRY_MAX);
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
    f: &Finisher,
    id: PlaybackId,
    video: &Path,
    thumb: Option<&Path>,
) -> Result<Uploaded, UploadError> {
    let (video_key, thumb_key) = (ObjectKey::Video(id), ObjectKey::Thumbnail(id));
    let (receipt, thumb) = tokio::join!(f.uploader.upload_file(&video_key, video), async {
        match thumb {
            Some(t) => f.uploader.upload_file(&thumb_key, t).await.map(Some),
            None => Ok(None),
        }
    });
    let uploaded = match (receipt, thumb) {
        (Ok(r), Ok(t)) => {
            let thumb_bytes = t.map_or(0, |t| t.size_bytes);
            metrics::counter!("upload_bytes_total").increment(r.size_bytes + thumb_bytes);
            Ok(Uploaded {
                size_bytes: r.size_bytes,
                sha256: r.sha256,
                streamed: false,
            })
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    if uploaded.is_err() {
        metrics::counter!("upload_failures_total").increment(1);
    }
    uploaded
}

/// The `completed` status of an uploaded clip. A clip much shorter than the wall-clock time it
/// was recorded for is partial.
async fn completed(
    f: &Finisher,
    id: PlaybackId,
    recorded: &Recorded,
    clip: Clip,
    receipt: Uploaded,
) -> CompletedClip {
    let held = recorded.ended_at
        - recorded.started_at
        - recorded
            .gaps
            .iter()
            .map(|g| g.to - g.from)
            .sum::<chrono::TimeDelta>();
    let wall = held.num_milliseconds() as f64 / 1000.0;
    let video_key = ObjectKey::Video(id);
    let url = match f.storage.url_for(&video_key).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "no url for the clip");
            None
        }
    };
    CompletedClip {
        object_key: video_key.to_string(),
        url,
        thumb_key: clip.has_thumb.then(|| ObjectKey::Thumbnail(id).to_string()),
        size_bytes: receipt.size_bytes,
        duration_sec: clip.info.duration_sec,
        video_codec: clip.info.video_codec,
        width: clip.info.width,
        height: clip.info.height,
        audio_codec: clip.info.audio_codec,
        sha256: receipt.sha256,
        started_at: recorded.started_at,
        ended_at: recorded.ended_at,
        partial: recorded.partial || clip.info.duration_sec + 3.0 < wall,
        gaps: recorded
            .gaps
            .iter()
            .map(|g| Gap {
                from: g.from,
                to: g.to,
            })
            .collect(),
        started_late: recorded.started_late,
        segment_list_key: None,
    }
}

/// The `processing` heartbeat: repeated every `PROGRESS_INTERVAL_SEC` while a step runs.
struct Beat {
    body: StatusBody,
    tick: tokio::time::Interval,
    abort: CancellationToken,
}

impl Beat {
    fn new(f: &Finisher, body: StatusBody) -> Self {
        let mut tick = tokio::time::interval(f.heartbeat);
        tick.reset();
        Self {
            body,
            tick,
            abort: f.abort.clone(),
        }
    }

    /// Runs `step` with heartbeats; `None` when the worker aborts first.
    async fn during<T>(
        &mut self,
        reporter: &mut Reporter,
        step: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(step);
        loop {
            tokio::select! {
                r = &mut step => return Some(r),
                _ = self.tick.tick() => reporter.heartbeat(self.body.clone()),
                _ = self.abort.cancelled() => return None,
            }
        }
    }
}

/// Reports `failed` for a recording that reached finalizing. The directory is kept in
/// `RECORD_DIR/_failed/` when it holds something worth keeping, else removed.
async fn fail_finished(
    f: &Finisher,
    reporter: &mut Reporter,
    lease: &LeaseKeeper,
    dir: &Path,
    failure: Failure,
    keep: bool,
) -> Outcome {
    let id = reporter.playback_id();
    note_state(id, State::Failed);
    tracing::warn!(playback_id = %id, code = failure.code.as_str(), message = %failure.message, "recording failed");
    let code = failure.code;
    reporter
        .report(StatusBody::Failed {
            code,
            message: failure.message,
        })
        .await;
    let cleaned = if keep {
        manifest::move_to_failed(&f.record_dir, dir)
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
    lease.settle(LeaseState::Failed).await;
    Outcome::Failed(code)
}

/// What one more try at a `_failed/` entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The clip is in the store, verified; `completed` is reported and the directory is gone.
    Uploaded,
    /// No manifest, no clip, or a clip ffprobe cannot read: kept as it is for an operator.
    NothingToUpload,
    /// The upload failed again (logged); kept for the next try.
    StillFailing,
}

/// Tries once more to upload the clip of a recording kept in `RECORD_DIR/_failed/`: probed
/// again, uploaded and verified, then reported `completed` (with the clip's real figures, as
/// [`finish`] would have) and the directory removed. One try per call: the caller's interval
/// is the backoff.
pub async fn retry_failed(f: &Finisher, status: &StatusPublisher, dir: &Path) -> Retry {
    let Ok(manifest) = Manifest::read(dir).await else {
        return Retry::NothingToUpload;
    };
    let id = manifest.playback_id;
    let (video, thumb) = (dir.join(VIDEO), dir.join(THUMB));
    let info = match probe_file(&f.ffprobe, &video).await {
        Ok(info) => info,
        Err(_) => return Retry::NothingToUpload,
    };
    let has_thumb = tokio::fs::try_exists(&thumb).await.unwrap_or(false);
    let receipt = match upload_both(f, id, &video, has_thumb.then_some(thumb.as_path())).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(playback_id = %id, error = %e, "upload of a failed recording failed again");
            return Retry::StillFailing;
        }
    };
    let recorded = Recorded::from_dir(&manifest, dir).await;
    let completed = completed(f, id, &recorded, Clip { info, has_thumb }, receipt).await;
    let mut reporter = status.reporter(Subject {
        playback_id: id,
        event_id: manifest.event_id,
        camera_id: manifest.camera_id,
        site: manifest.site.clone(),
        takes_over_from: None,
    });
    reporter.report(StatusBody::Completed(completed)).await;
    tracing::info!(playback_id = %id, "failed recording uploaded on a later try; reported completed");
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(playback_id = %id, error = %e, "cannot remove the uploaded failed recording");
    }
    Retry::Uploaded
}
