//! The capture of one camera: one FFmpeg (one RTSP session) per camera, whatever number of events
//! are open on it, cutting the stream into short keyframe-aligned segments kept as a ring on this
//! worker's disk (`RECORD_DIR/_capture/<camera_id>/`). Every clip is cut from it
//! ([`crate::recording`]).
//!
//! [`run`] retries [`run_once`] until it is cancelled: check the camera's address against the
//! network policy, probe its streams (kept across runs), run FFmpeg's segment muxer, and for each
//! segment FFmpeg closes, give it its wall-clock interval and its final name
//! ([`segment::segment_name`]), add it to the [`ring::Ring`] and drop what fell out of the ring.
//! A run that ends (the camera dropped, rebooted, refused us) is followed by the next after a
//! backoff; the wall-clock hole between the runs is what a clip reports as a gap.
//!
//! Wall clock: FFmpeg lists a segment the moment it closes it, which is when the next keyframe
//! arrives, so `now - media end` is when the run's media time zero was on the wall clock, plus
//! a small delivery delay. Each run keeps the smallest such offset it has seen (the least
//! delayed), and starts over when the media clock jumps by more than [`REANCHOR`].
//!
//! [`Capture`] is the handle the rest of the worker holds: the ring (read by recordings), the
//! sequence number of the newest segment (a watch recordings wait on), and the state reported in
//! the camera's lease (`captureStatus`).

pub mod cut;
pub mod ring;
pub mod segment;

use camrec_shared::backoff::{nth_delay, sleep_or_cancel};
use camrec_shared::netpolicy::NetworkPolicy;
use camrec_shared::rtsp::{scrub_userinfo, RtspUrl};
use chrono::{DateTime, TimeDelta, Utc};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::disk::DiskGuard;
use crate::ffmpeg::{ListEntry, MediaError, SegmentPlan, Segmenter};
use crate::probe::{probe_source, SourceInfo};
use cut::Open;
use ring::Ring;
use segment::Segment;

/// A media-clock jump larger than this starts a new wall-clock anchor.
const REANCHOR: TimeDelta = TimeDelta::seconds(5);
/// The first wait before another run; it doubles up to `RESTART_BACKOFF_MAX_SEC`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// How long a capture waits before looking again when the disk is full.
const DISK_RETRY: Duration = Duration::from_secs(5);
/// Where FFmpeg writes segments before they are closed and named.
const TMP: &str = "tmp";

/// Where a capture is, as the camera's lease and `captureStatus` say.
pub use camrec_shared::capture::CaptureState;

/// A capture's state, its last error (free of credentials) and since when it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub state: CaptureState,
    pub last_error: Option<String>,
    pub since: DateTime<Utc>,
}

/// What a capture needs beyond its camera.
#[derive(Clone, Debug)]
pub struct Settings {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// `RTSP_TIMEOUT_SEC`.
    pub io_timeout: Duration,
    /// `SEGMENT_SEC`: the target segment length.
    pub segment: Duration,
    /// `RESTART_BACKOFF_MAX_SEC`.
    pub backoff_max: Duration,
    /// `STOP_GRACE_SEC`.
    pub stop_grace: Duration,
    /// `CAMERA_ALLOWED_NETWORKS`.
    pub networks: NetworkPolicy,
}

/// This worker's hold on the camera, as far as it knows: what the segments its recordings
/// upload are fenced by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// The revision of the capture-lease entry that made this worker the holder (a lease
    /// created again after it expired starts a new epoch).
    pub epoch: u64,
    /// Until when the lease is certainly this worker's: its last confirmed write plus the TTL,
    /// counted from before the write was sent. Nobody else can hold the camera before then.
    pub valid_until: tokio::time::Instant,
}

impl Tenure {
    /// No hold yet (a capture not placed by a lease).
    fn none() -> Self {
        Tenure {
            epoch: 0,
            valid_until: tokio::time::Instant::now(),
        }
    }

    /// Whether this worker may still write as the camera's holder at `now`, `margin` before
    /// the lease could expire.
    pub fn holds(&self, now: tokio::time::Instant, margin: Duration) -> bool {
        self.epoch > 0 && now + margin < self.valid_until
    }
}

/// The handle of one camera's capture; cheap to clone.
#[derive(Clone, Debug)]
pub struct Capture {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ring: Mutex<Ring>,
    /// How long the ring keeps a segment after it ended: the camera's pre-roll plus
    /// `RING_MARGIN_SEC`.
    keep: Mutex<Duration>,
    newest: watch::Sender<u64>,
    /// The segment FFmpeg is writing, once one before it has been closed (which gives its
    /// wall-clock start).
    open: Mutex<Option<Open>>,
    report: watch::Sender<Report>,
    /// Cancelled when this worker stops capturing the camera: its recordings end with what
    /// they have.
    closed: CancellationToken,
    /// Set when another worker took the camera: this worker's recordings of it stop writing.
    lost: std::sync::atomic::AtomicBool,
    tenure: watch::Sender<Tenure>,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring::default()),
                keep: Mutex::new(Duration::ZERO),
                closed: CancellationToken::new(),
                lost: std::sync::atomic::AtomicBool::new(false),
                tenure: watch::channel(Tenure::none()).0,
                newest: watch::channel(0).0,
                open: Mutex::new(None),
                report: watch::channel(Report {
                    state: CaptureState::Connecting,
                    last_error: None,
                    since: Utc::now(),
                })
                .0,
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The segments a clip starting at `from` finds in the ring (see [`Ring::from`]).
    pub fn segments_from(&self, from: DateTime<Utc>) -> Vec<Segment> {
        self.ring().from(from)
    }

    /// The segments closed after `seq`.
    pub fn segments_after(&self, seq: u64) -> Vec<Segment> {
        self.ring().after(seq)
    }

    /// The sequence number of the newest closed segment (0 before the first); changes each
    /// time a segment closes.
    pub fn newest(&self) -> watch::Receiver<u64> {
        self.inner.newest.subscribe()
    }

    /// The whole fragments of the segment FFmpeg is writing, as a segment file in `dir`, when
    /// they reach `until` (see [`cut`]).
    pub async fn cut_open(&self, until: DateTime<Utc>, dir: &Path) -> Option<Segment> {
        let open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        cut::cut(&open, until, dir).await
    }

    fn set_open(&self, open: Option<Open>) {
        *self.inner.open.lock().unwrap_or_else(|p| p.into_inner()) = open;
    }

    /// The capture's state, updated as it changes.
    pub fn report(&self) -> watch::Receiver<Report> {
        self.inner.report.subscribe()
    }

    /// Sets how long the ring keeps a segment after it ended.
    pub fn set_keep(&self, keep: Duration) {
        *self.inner.keep.lock().unwrap_or_else(|p| p.into_inner()) = keep;
    }

    fn keep(&self) -> Duration {
        *self.inner.keep.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the capture as over for good (the camera was released).
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Another worker holds the camera now: the capture is over and its recordings must not
    /// write anything more for it (fencing).
    pub fn lose(&self) {
        self.inner
            .lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.closed.cancel();
    }

    /// Whether the capture ended because another worker took the camera.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records this worker's hold on the camera (placement calls it at every confirmed write).
    pub fn hold(&self, tenure: Tenure) {
        self.inner.tenure.send_replace(tenure);
    }

    /// This worker's hold on the camera, updated as the lease is renewed.
    pub fn tenure(&self) -> watch::Receiver<Tenure> {
        self.inner.tenure.subscribe()
    }

    /// Cancelled once the capture is over for good.
    pub fn closed(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    /// Marks the camera unreachable for a reason that retrying cannot fix.
    pub fn fail(&self, reason: String) {
        self.set_state(CaptureState::Unreachable, Some(reason));
    }

    /// Bytes the ring holds on disk.
    pub fn ring_bytes(&self) -> u64 {
        self.ring().bytes()
    }

    fn set_state(&self, state: CaptureState, last_error: Option<String>) {
        self.inner.report.send_if_modified(|r| {
            let changed = r.state != state || (last_error.is_some() && r.last_error != last_error);
            if r.state != state {
                r.since = Utc::now();
            }
            r.state = state;
            if last_error.is_some() {
                r.last_error = last_error;
            }
            changed
        });
    }

    /// Adds a closed segment and returns those that fell out of the ring.
    fn add(&self, mut segment: Segment, now: DateTime<Utc>) -> Vec<Segment> {
        let seq = *self.inner.newest.borrow() + 1;
        segment.seq = seq;
        let keep = self.keep();
        let gone = {
            let mut ring = self.ring();
            ring.push(segment);
            ring.expire(now, keep)
        };
        self.inner.newest.send_replace(seq);
        metrics::counter!("capture_segments_total").increment(1);
        gone
    }
}

/// Captures `url` (with its password) into `dir` until `cancel`, as the module documentation
/// says. Segments a previous run of this worker left in `dir` are taken back into the ring.
pub async fn run(
    capture: Capture,
    url: RtspUrl,
    dir: PathBuf,
    settings: Settings,
    disk: Arc<DiskGuard>,
    cancel: CancellationToken,
) {
    if let Err(e) = prepare(&capture, &dir).await {
        capture.set_state(
            CaptureState::Unreachable,
            Some(format!("capture directory: {e}")),
        );
        tracing::warn!(dir = %dir.display(), error = %e, "cannot prepare the capture directory");
        return;
    }
    let mut source: Option<SourceInfo> = None;
    let mut failures = 0u32;
    let mut run_no = 0u64;
    while !cancel.is_cancelled() {
        if !disk.check().has_room() {
            capture.set_state(CaptureState::DiskFull, None);
            if !sleep_or_cancel(DISK_RETRY, &cancel).await {
                break;
            }
            continue;
        }
        run_no += 1;
        let this = Run {
            capture: &capture,
            url: &url,
            dir: &dir,
            settings: &settings,
            disk: &disk,
        };
        let outcome = run_once(&this, &mut source, run_no, &cancel).await;
        match outcome {
            Ok(0) | Err(_) => {
                failures += 1;
                let error = outcome
                    .err()
                    .unwrap_or_else(|| "the camera sent no frames".into());
                let error = scrub(&error, &url);
                tracing::warn!(camera = %url.without_credentials().masked(), failures, %error, "capture run ended without a segment");
                capture.set_state(CaptureState::Unreachable, Some(error));
                // The camera may have changed codecs (a firmware update): probe it again.
                source = None;
            }
            Ok(segments) => {
                failures = 0;
                tracing::info!(camera = %url.without_credentials().masked(), segments, "capture run ended");
                capture.set_state(CaptureState::Connecting, None);
            }
        }
        let wait = nth_delay(
            failures.saturating_sub(1),
            RETRY_FIRST,
            settings.backoff_max,
        );
        if !sleep_or_cancel(wait, &cancel).await {
            break;
        }
    }
}

/// Creates the directories, drops unfinished temporary segments and takes back closed ones.
async fn prepare(capture: &Capture, dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(TMP);
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    tokio::fs::create_dir_all(&tmp).await?;
    // A capture restarted on the same handle (the camera's address changed) has its ring
    // already; a fresh one takes back what a previous run of this worker left.
    if capture.ring().is_empty() {
        let now = Utc::now();
        for s in segment::segments_in(dir).await? {
            for gone in capture.add(s, now) {
                let _ = tokio::fs::remove_file(&gone.path).await;
            }
        }
    }
    Ok(())
}

/// What every run of one camera's capture works with.
struct Run<'a> {
    capture: &'a Capture,
    url: &'a RtspUrl,
    dir: &'a Path,
    settings: &'a Settings,
    disk: &'a DiskGuard,
}

/// One FFmpeg run: returns how many segments it closed, or why it could not start. It ends when
/// the camera does, when `cancel` is, or when the disk falls below its floor (checked at each
/// segment: the segments already held stay, for the recordings that link them).
async fn run_once(
    this: &Run<'_>,
    source: &mut Option<SourceInfo>,
    run_no: u64,
    cancel: &CancellationToken,
) -> Result<u64, String> {
    let Run {
        capture,
        url,
        dir,
        settings,
        disk,
    } = *this;
    settings
        .networks
        .check_host(url.host(), url.port())
        .await
        .map_err(|e| format!("the camera's address {e}"))?;
    let info = match source.clone() {
        Some(info) => info,
        None => {
            let probed = tokio::select! {
                p = probe_source(&settings.ffprobe, url, settings.io_timeout) => p,
                _ = cancel.cancelled() => return Ok(0),
            };
            let info = probed.map_err(|e| e.to_string())?;
            *source = Some(info.clone());
            info
        }
    };
    let plan = SegmentPlan {
        input: url.clone(),
        dir: dir.join(TMP),
        prefix: format!("r{run_no}_"),
        segment: settings.segment,
        io_timeout: settings.io_timeout,
        source: info,
    };
    let mut ffmpeg =
        Segmenter::spawn(&settings.ffmpeg, &plan).map_err(|e: MediaError| e.to_string())?;
    let mut anchor: Option<DateTime<Utc>> = None;
    let mut closed = 0u64;
    let mut stop_by: Option<tokio::time::Instant> = None;
    loop {
        let entry = tokio::select! {
            e = ffmpeg.next_closed() => e,
            _ = cancel.cancelled(), if stop_by.is_none() => {
                // Ask FFmpeg to stop and keep reading: it closes (and lists) its last segment.
                ffmpeg.interrupt();
                stop_by = Some(tokio::time::Instant::now() + settings.stop_grace);
                continue;
            }
            _ = tokio::time::sleep_until(stop_by.unwrap_or_else(tokio::time::Instant::now)), if stop_by.is_some() => break,
        };
        let Some(entry) = entry else { break };
        let closed_segment = close_segment(dir, &plan.dir, &entry, &mut anchor).await;
        capture.set_open(next_open(&plan, &entry, anchor));
        if let Some(s) = closed_segment {
            if closed == 0 {
                capture.set_state(CaptureState::Capturing, None);
            }
            closed += 1;
            for gone in capture.add(s, Utc::now()) {
                let _ = tokio::fs::remove_file(&gone.path).await;
            }
            if stop_by.is_none() && !disk.check().has_room() {
                tracing::warn!(camera = %url.without_credentials().masked(), "disk below its floor: capture paused");
                ffmpeg.interrupt();
                stop_by = Some(tokio::time::Instant::now() + settings.stop_grace);
            }
        }
    }
    capture.set_open(None);
    let report = ffmpeg.stop(settings.stop_grace).await;
    if closed == 0 && !cancel.is_cancelled() {
        let tail = report.stderr_tail.lines().last().unwrap_or("").to_owned();
        return Err(if tail.is_empty() {
            format!("ffmpeg exited ({:?}) without a segment", report.code)
        } else {
            tail
        });
    }
    Ok(closed)
}

/// Gives a segment FFmpeg just closed its wall-clock interval and final name in `dir`.
async fn close_segment(
    dir: &Path,
    tmp: &Path,
    entry: &ListEntry,
    anchor: &mut Option<DateTime<Utc>>,
) -> Option<Segment> {
    let start = wall_start(anchor, Utc::now(), entry)?;
    let duration = entry.duration();
    let name = segment::segment_name(start, duration);
    let path = dir.join(&name);
    let from = tmp.join(&entry.file);
    if let Err(e) = tokio::fs::rename(&from, &path).await {
        tracing::warn!(file = %entry.file, error = %e, "cannot move a closed segment into the ring");
        return None;
    }
    let bytes = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    Some(Segment {
        seq: 0,
        start,
        duration,
        bytes,
        path,
    })
}

/// The segment FFmpeg opened when it closed `entry`: the next file of the run, starting where
/// `entry` ended.
fn next_open(plan: &SegmentPlan, entry: &ListEntry, anchor: Option<DateTime<Utc>>) -> Option<Open> {
    let n: u64 = entry
        .file
        .strip_prefix(&plan.prefix)?
        .strip_suffix(".mp4")?
        .parse()
        .ok()?;
    let end = TimeDelta::try_milliseconds((entry.end * 1000.0).round() as i64)?;
    Some(Open {
        path: plan.dir.join(format!("{}{:06}.mp4", plan.prefix, n + 1)),
        start: anchor? + end,
    })
}

/// The wall-clock start of the segment `entry` lists, FFmpeg having closed it at `now`, updating
/// the run's `anchor` (the wall-clock time of media time zero; see the module documentation).
fn wall_start(
    anchor: &mut Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    entry: &ListEntry,
) -> Option<DateTime<Utc>> {
    let media = |secs: f64| TimeDelta::try_milliseconds((secs * 1000.0).round() as i64);
    let zero = now - media(entry.end)?;
    let a = match *anchor {
        Some(a) if (zero - a).abs() <= REANCHOR => a.min(zero),
        _ => zero,
    };
    *anchor = Some(a);
    Some(a + media(entry.start)?)
}

/// `text` without the camera's credential in any form.
pub fn scrub(text: &str, url: &RtspUrl) -> String {
    let mut out = scrub_userinfo(text);
    if let Some(p) = url.password().filter(|p| p.len() >= 3) {
        out = out.replace(p.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: f64, end: f64) -> ListEntry {
        ListEntry {
            file: "r1_000000.mp4".into(),
            start,
            end,
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn wall_clock_comes_from_the_least_delayed_listing() {
        let mut anchor = None;
        // Listed 300 ms after its end: media zero was at t=300.
        assert_eq!(
            wall_start(&mut anchor, t(2300), &entry(0.0, 2.0)),
            Some(t(300))
        );
        // The next one is listed 40 ms after its end: the anchor moves to t=40.
        assert_eq!(
            wall_start(&mut anchor, t(4040), &entry(2.0, 4.0)),
            Some(t(2040))
        );
        // A later, slower listing does not move it back.
        assert_eq!(
            wall_start(&mut anchor, t(6500), &entry(4.0, 6.0)),
            Some(t(4040))
        );
    }

    #[test]
    fn the_open_segment_is_the_next_file_starting_where_the_closed_one_ended() {
        let plan = SegmentPlan {
            input: RtspUrl::parse("rtsp://cam/x").unwrap(),
            dir: PathBuf::from("/ring/tmp"),
            prefix: "r2_".into(),
            segment: Duration::from_secs(1),
            io_timeout: Duration::from_secs(5),
            source: SourceInfo {
                video_codec: "h264".into(),
                audio_codec: None,
                width: 640,
                height: 360,
            },
        };
        let closed = ListEntry {
            file: "r2_000041.mp4".into(),
            start: 41.0,
            end: 42.04,
        };
        assert_eq!(
            next_open(&plan, &closed, Some(t(0))),
            Some(Open {
                path: PathBuf::from("/ring/tmp/r2_000042.mp4"),
                start: t(42_040),
            })
        );
        assert_eq!(next_open(&plan, &closed, None), None, "no wall clock yet");
        let other = ListEntry {
            file: "other.mp4".into(),
            ..closed
        };
        assert_eq!(next_open(&plan, &other, Some(t(0))), None);
    }

    #[test]
    fn a_media_clock_jump_starts_a_new_anchor() {
        let mut anchor = None;
        wall_start(&mut anchor, t(2000), &entry(0.0, 2.0));
        // The camera's timestamps jumped 100 s ahead: the wall clock did not.
        assert_eq!(
            wall_start(&mut anchor, t(4000), &entry(102.0, 104.0)),
            Some(t(2000))
        );
    }

    #[test]
    fn scrub_removes_the_password_in_every_form() {
        let url = RtspUrl::parse("rtsp://admin:s3cret@cam/x").unwrap();
        let out = scrub("401 at rtsp://admin:s3cret@cam/x for s3cret", &url);
        assert!(!out.contains("s3cret"), "{out}");
    }
}
