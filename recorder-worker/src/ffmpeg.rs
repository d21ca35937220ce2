//! FFmpeg: the pure argv builder of a camera's capture and the supervised child that runs it.
//!
//! [`segment_argv`] turns a [`SegmentPlan`] into FFmpeg's arguments (RTSP over TCP, an I/O
//! timeout, a protocol whitelist, video copied, audio copied/transcoded/dropped by codec,
//! keyframe-aligned fragmented-MP4 segments that survive a SIGKILL, each listed on stdout when it
//! closes). It is a pure function, unit-tested by its arguments; the camera URL is one argv
//! element and no shell is ever involved.
//!
//! [`Segmenter`] owns one running FFmpeg: it turns the segment list into a channel of
//! [`ListEntry`], keeps a bounded, credential-free tail of stderr, and stops the child gracefully
//! (SIGINT, then SIGKILL), always reaping it. The child dies with the worker (`kill_on_drop` plus a
//! parent-death signal). [`MediaError`], the error of the whole media engine, lives here too.

use camrec_shared::rtsp::{scrub_userinfo, RtspUrl};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The protocols FFmpeg may open for a camera: RTSP(S) over TCP and what it runs on (checked
/// against the fake camera: interleaved RTSP needs no `udp`/`rtp`). Anything else (`file`,
/// `http`, `concat`, ...) is refused even if a URL or an SDP asks for it.
pub const RTSP_PROTOCOLS: &str = "rtsp,rtsps,tcp,tls";

/// The AAC bitrate when transcoding G.711: above the encoder's cap for 8 kHz mono (48 kbit/s) it
/// only warns and clamps.
const AAC_TRANSCODE_BITRATE: &str = "32k";

/// Why a media step failed. Every message is free of credentials.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The camera did not answer or refused the stream.
    #[error("the camera cannot be reached: {0}")]
    Unreachable(String),
    /// Nothing playable: no video stream, empty or corrupt files.
    #[error("no usable media: {0}")]
    NoMedia(String),
    /// ffprobe could not read a file.
    #[error("ffprobe failed: {0}")]
    Probe(String),
    /// An FFmpeg post-processing step (concatenation, thumbnail) failed.
    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The tool could not be started (not installed, not executable).
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

/// The streams a camera serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// ffprobe's codec name, e.g. `h264` or `hevc`.
    pub video_codec: String,
    /// e.g. `aac`, `pcm_alaw`, `pcm_mulaw`; `None` when the camera sends no audio.
    pub audio_codec: Option<String>,
    pub width: u32,
    pub height: u32,
}

/// What one FFmpeg run of a camera's capture writes, and where.
#[derive(Clone, Debug)]
pub struct SegmentPlan {
    pub input: RtspUrl,
    /// Where FFmpeg writes this run's segments, under temporary names.
    pub dir: PathBuf,
    /// The file-name prefix of this run's segments (`<prefix>000000.mp4`, ...).
    pub prefix: String,
    /// The target segment length: FFmpeg cuts at the first keyframe after it.
    pub segment: Duration,
    /// FFmpeg's socket I/O timeout: a silent camera ends the run after this long.
    pub io_timeout: Duration,
    /// What the camera serves (from [`crate::probe::probe_source`]); decides the audio handling.
    pub source: SourceInfo,
}

/// FFmpeg's arguments for `plan`, program name excluded: the camera's streams (copied, audio to
/// AAC) cut into keyframe-aligned fragmented-MP4 segments, each listed on stdout as a CSV line
/// (`name,start,end` in media seconds) when it is closed.
pub fn segment_argv(plan: &SegmentPlan) -> Vec<String> {
    let mut argv = args(&[
        "-hide_banner",
        "-loglevel",
        "warning",
        "-nostats",
        "-nostdin",
        "-y",
    ]);
    argv.extend(input_args(&plan.input, plan.io_timeout));
    argv.extend(stream_args(&plan.source));
    argv.extend(args(&["-f", "segment", "-segment_time"]));
    argv.push(format!("{:.3}", plan.segment.as_secs_f64()));
    argv.extend(args(&[
        "-segment_format",
        "mp4",
        "-segment_format_options",
        SEGMENT_FORMAT_OPTIONS,
        "-segment_list",
        "pipe:1",
        "-segment_list_type",
        "csv",
    ]));
    argv.push(
        plan.dir
            .join(format!("{}%06d.mp4", plan.prefix))
            .to_string_lossy()
            .into_owned(),
    );
    argv
}

/// How each segment is muxed: fragmented MP4 (readable while written, whole after a SIGKILL),
/// a fragment per keyframe and at most [`FRAGMENT`] long, each flushed to the file when done, so
/// a recording can end on the segment FFmpeg is still writing ([`crate::capture::cut`]);
/// `frag_discont` with negative timestamps allowed keeps the media timestamps (`tfdt`) running
/// on from one segment to the next instead of restarting each file at zero, so the segments of
/// one run play one after another as HLS without a discontinuity.
pub const SEGMENT_FORMAT_OPTIONS: &str = "movflags=+frag_keyframe+empty_moov+default_base_moof+frag_discont:frag_duration=200000:flush_packets=1:avoid_negative_ts=disabled";

/// The longest fragment of a segment (`frag_duration` above).
pub const FRAGMENT: Duration = Duration::from_millis(200);

/// One line of the segment list: a segment FFmpeg has closed.
#[derive(Clone, Debug, PartialEq)]
pub struct ListEntry {
    /// The file name, inside [`SegmentPlan::dir`].
    pub file: String,
    /// Media time of the segment's first and last frame, in seconds.
    pub start: f64,
    pub end: f64,
}

impl ListEntry {
    /// Parses `name,start,end`; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut it = line.trim_end().rsplitn(3, ',');
        let end: f64 = it.next()?.parse().ok()?;
        let start: f64 = it.next()?.parse().ok()?;
        let file = it.next()?.trim_matches('"').to_owned();
        let sane = start.is_finite() && end.is_finite() && end >= start && !file.is_empty();
        sane.then_some(Self { file, start, end })
    }

    /// The segment's media duration.
    pub fn duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.end - self.start).unwrap_or_default()
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// RTSP over TCP with an I/O timeout and the protocol whitelist; the URL is one element.
fn input_args(url: &RtspUrl, io_timeout: Duration) -> Vec<String> {
    let mut a = args(&["-rtsp_transport", "tcp", "-timeout"]);
    a.push(io_timeout.as_micros().max(1).to_string());
    a.extend(args(&["-protocol_whitelist", RTSP_PROTOCOLS, "-i"]));
    a.push(url.expose().to_owned());
    a
}

/// Video copied (H.265 tagged `hvc1`); audio copied when AAC, transcoded to AAC otherwise,
/// dropped when the camera sends none.
fn stream_args(source: &SourceInfo) -> Vec<String> {
    let mut a = args(&["-map", "0:v:0", "-c:v", "copy"]);
    if matches!(source.video_codec.as_str(), "hevc" | "h265") {
        a.extend(args(&["-tag:v", "hvc1"]));
    }
    match source.audio_codec.as_deref() {
        None => a.push("-an".to_owned()),
        Some("aac") => a.extend(args(&["-map", "0:a:0?", "-c:a", "copy"])),
        Some(_) => a.extend(args(&[
            "-map",
            "0:a:0?",
            "-c:a",
            "aac",
            "-b:a",
            AAC_TRANSCODE_BITRATE,
        ])),
    }
    a
}

/// How an FFmpeg run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// True when [`Segmenter::stop`] ended the run.
    pub stopped_by_us: bool,
    /// Exit 0, or 255 after our own SIGINT. A clean exit may still be short (a camera that went
    /// silent ends the run with 0): compare the probed duration with the wall clock.
    pub clean: bool,
    /// The last lines of stderr, without any credential.
    pub stderr_tail: String,
}

/// How much of stderr a report keeps.
const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 300;
/// How long to wait for the output pipes to drain after the child exited.
const DRAIN: Duration = Duration::from_secs(2);

/// A bounded, credential-free tail of a child's stderr.
#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: &str, secrets: &[String]) {
        let mut clean = scrub_userinfo(line);
        for s in secrets {
            clean = clean.replace(s.as_str(), "***");
        }
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines
            .push_back(clean.trim_end().chars().take(TAIL_LINE_CHARS).collect());
    }

    fn text(&self) -> String {
        Vec::from(self.lines.clone()).join("\n")
    }
}

/// One running FFmpeg child.
#[derive(Debug)]
pub struct Segmenter {
    child: Child,
    closed: mpsc::UnboundedReceiver<ListEntry>,
    tail: Arc<Mutex<Tail>>,
    readers: Vec<JoinHandle<()>>,
    stopped_by_us: bool,
    sigint_sent: bool,
    report: Option<ExitReport>,
}

/// A command for FFmpeg or ffprobe with an empty environment: the children parse bytes from
/// cameras and must not inherit the worker's secrets (S3 keys, the NATS credentials).
pub fn media_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    cmd
}

impl Segmenter {
    /// Starts FFmpeg for `plan`. Call it from a runtime worker thread (not `spawn_blocking`): the
    /// parent-death signal follows the thread that spawned the child.
    pub fn spawn(ffmpeg: &Path, plan: &SegmentPlan) -> Result<Segmenter, MediaError> {
        let mut cmd = media_command(ffmpeg);
        cmd.args(segment_argv(plan))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| MediaError::Spawn {
            program: ffmpeg.display().to_string(),
            source,
        })?;
        let secrets = credential_forms(&plan.input);
        let (tx, closed) = mpsc::unbounded_channel();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_list(out, tx)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_tail(err, tail.clone(), secrets)));
        }
        Ok(Segmenter {
            child,
            closed,
            tail,
            readers,
            stopped_by_us: false,
            sigint_sent: false,
            report: None,
        })
    }

    /// The next segment FFmpeg closed; `None` once its output has ended (it exited).
    pub async fn next_closed(&mut self) -> Option<ListEntry> {
        self.closed.recv().await
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resolves when the child has exited (by itself or after [`Segmenter::stop`]). Cancel-safe;
    /// after the first resolution it returns the same report at once.
    pub async fn exited(&mut self) -> ExitReport {
        if let Some(report) = &self.report {
            return report.clone();
        }
        let status = self.child.wait().await;
        // A reader is dropped as soon as it finished or timed out, so a cancelled call never polls
        // a completed JoinHandle again.
        while let Some(reader) = self.readers.last_mut() {
            let _ = tokio::time::timeout(DRAIN, reader).await;
            self.readers.pop();
        }
        let report = self.report_for(status);
        self.report = Some(report.clone());
        report
    }

    /// Stops the child: SIGINT (FFmpeg finishes its outputs and exits with 255; it reads `q`
    /// only every 100 ms), then SIGKILL after `grace`. Always reaps the child before returning.
    pub async fn stop(mut self, grace: Duration) -> ExitReport {
        if self.report.is_none() {
            self.stopped_by_us = true;
            self.send_sigint();
            if !self.wait_for(grace).await {
                let _ = self.child.kill().await;
            }
        }
        self.exited().await
    }

    /// Asks the child to finish (SIGINT) without waiting; [`Segmenter::stop`] then reaps it.
    pub fn interrupt(&mut self) {
        if self.report.is_none() {
            self.stopped_by_us = true;
            self.send_sigint();
        }
    }

    fn send_sigint(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            self.sigint_sent = kill(Pid::from_raw(pid), Signal::SIGINT).is_ok();
        }
    }

    /// Waits up to `deadline` for the child to exit; true when it did.
    async fn wait_for(&mut self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .is_ok()
    }

    fn report_for(&self, status: std::io::Result<ExitStatus>) -> ExitReport {
        let mut stderr_tail = self.tail.lock().map(|t| t.text()).unwrap_or_default();
        let (code, signal) = match status {
            Ok(s) => (s.code(), s.signal()),
            Err(e) => {
                stderr_tail.push_str(&format!("\nwaiting for ffmpeg failed: {e}"));
                (None, None)
            }
        };
        let clean = code == Some(0) || (code == Some(255) && self.sigint_sent);
        ExitReport {
            code,
            signal,
            stopped_by_us: self.stopped_by_us,
            clean,
            stderr_tail,
        }
    }
}

/// The password as it may appear in FFmpeg's output: raw and percent-encoded.
fn credential_forms(url: &RtspUrl) -> Vec<String> {
    let Some(raw) = url.password().filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let encoded = url
        .expose()
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw.to_owned());
    let mut forms = vec![raw];
    forms.extend(encoded.filter(|e| !forms.contains(e)));
    forms
}

/// Makes the kernel SIGKILL the child when the worker dies, so FFmpeg never outlives it.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It only calls prctl(2) and
    // getppid(2), both async-signal-safe, allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::other("the parent exited during spawn"));
            }
            Ok(())
        });
    }
}

async fn read_list(out: impl AsyncRead + Unpin, tx: mpsc::UnboundedSender<ListEntry>) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(entry) = ListEntry::parse(&line) {
            let _ = tx.send(entry);
        }
    }
}

async fn read_tail(err: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>, secrets: Vec<String>) {
    let mut reader = BufReader::new(err);
    let mut buf = Vec::new();
    while matches!(reader.read_until(b'\n', &mut buf).await, Ok(n) if n > 0) {
        let line = String::from_utf8_lossy(&buf);
        if let Ok(mut t) = tail.lock() {
            t.push(&line, &secrets);
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(video: &str, audio: Option<&str>) -> SegmentPlan {
        SegmentPlan {
            input: RtspUrl::parse("rtsp://admin:pa%20ss@10.0.0.5:554/live?ch=1&x=$(reboot)")
                .unwrap(),
            dir: PathBuf::from("/rec/_capture/7/tmp"),
            prefix: "r3_".into(),
            segment: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            source: SourceInfo {
                video_codec: video.into(),
                audio_codec: audio.map(str::to_owned),
                width: 640,
                height: 360,
            },
        }
    }

    fn value_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
        let i = argv.iter().position(|a| a == flag)?;
        argv.get(i + 1).map(String::as_str)
    }

    #[test]
    fn h264_with_aac_copies_both_streams() {
        let argv = segment_argv(&plan("h264", Some("aac")));
        assert_eq!(value_after(&argv, "-c:v"), Some("copy"));
        assert_eq!(value_after(&argv, "-c:a"), Some("copy"));
        assert!(!argv.contains(&"-an".to_owned()));
        assert!(!argv.contains(&"-tag:v".to_owned()));
    }

    #[test]
    fn g711_audio_is_transcoded_to_aac() {
        for codec in ["pcm_alaw", "pcm_mulaw"] {
            let argv = segment_argv(&plan("h264", Some(codec)));
            assert_eq!(value_after(&argv, "-c:v"), Some("copy"));
            assert_eq!(value_after(&argv, "-c:a"), Some("aac"), "{codec}");
            assert_eq!(value_after(&argv, "-b:a"), Some(AAC_TRANSCODE_BITRATE));
        }
    }

    #[test]
    fn no_audio_means_an() {
        let argv = segment_argv(&plan("h264", None));
        assert!(argv.contains(&"-an".to_owned()));
        assert_eq!(value_after(&argv, "-c:a"), None);
    }

    #[test]
    fn h265_is_tagged_hvc1() {
        let argv = segment_argv(&plan("hevc", Some("aac")));
        assert_eq!(value_after(&argv, "-tag:v"), Some("hvc1"));
        assert_eq!(value_after(&argv, "-c:v"), Some("copy"));
    }

    #[test]
    fn input_is_rtsp_over_tcp_with_timeout_whitelist_and_one_url_element() {
        let p = plan("h264", Some("aac"));
        let argv = segment_argv(&p);
        assert_eq!(value_after(&argv, "-rtsp_transport"), Some("tcp"));
        assert_eq!(value_after(&argv, "-timeout"), Some("5000000"));
        assert_eq!(
            value_after(&argv, "-protocol_whitelist"),
            Some(RTSP_PROTOCOLS)
        );
        assert_eq!(value_after(&argv, "-i"), Some(p.input.expose()));
        assert_eq!(
            argv.iter().filter(|a| a.contains("10.0.0.5")).count(),
            1,
            "the URL is exactly one element"
        );
        let whitelist_at = argv.iter().position(|a| a == "-protocol_whitelist");
        let input_at = argv.iter().position(|a| a == "-i");
        assert!(whitelist_at < input_at, "input options precede -i");
    }

    #[test]
    fn output_is_keyframe_aligned_fragmented_mp4_segments_listed_on_stdout() {
        let argv = segment_argv(&plan("h264", None));
        assert_eq!(value_after(&argv, "-f"), Some("segment"));
        assert_eq!(value_after(&argv, "-segment_time"), Some("2.000"));
        assert_eq!(value_after(&argv, "-segment_format"), Some("mp4"));
        let muxer = value_after(&argv, "-segment_format_options").unwrap();
        for option in [
            "+frag_keyframe",
            "+empty_moov",
            "+frag_discont",
            "frag_duration=200000",
            "flush_packets=1",
        ] {
            assert!(muxer.contains(option), "{option} in {muxer}");
        }
        assert_eq!(FRAGMENT, Duration::from_micros(200_000));
        assert_eq!(value_after(&argv, "-segment_list"), Some("pipe:1"));
        assert_eq!(value_after(&argv, "-segment_list_type"), Some("csv"));
        assert!(argv.contains(&"-nostats".to_owned()));
        assert!(argv.contains(&"-nostdin".to_owned()), "stopped by SIGINT");
        assert_eq!(argv.iter().filter(|a| *a == "-i").count(), 1, "one input");
        assert_eq!(
            argv.last().map(String::as_str),
            Some("/rec/_capture/7/tmp/r3_%06d.mp4")
        );
    }

    #[test]
    fn segment_list_lines_parse_and_garbage_does_not() {
        let e = ListEntry::parse("r3_000012.mp4,24.080000,26.080000\n").unwrap();
        assert_eq!(e.file, "r3_000012.mp4");
        assert_eq!(e.duration(), Duration::from_secs(2));
        for bad in [
            "",
            "x",
            "a,b,c",
            "a.mp4,3,2",
            ",1,2",
            "a.mp4,NaN,2",
            "a.mp4,1,inf",
        ] {
            assert_eq!(ListEntry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_tail_is_bounded_and_credential_free() {
        let url = RtspUrl::parse("rtsp://admin:s%40cret@cam/x").unwrap();
        let secrets = credential_forms(&url);
        assert_eq!(secrets, vec!["s@cret".to_owned(), "s%40cret".to_owned()]);
        let mut tail = Tail::default();
        for i in 0..100 {
            tail.push(
                &format!("line {i} password s@cret in {}", url.expose()),
                &secrets,
            );
        }
        let text = tail.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.contains("line 99") && !text.contains("line 79 "));
        assert!(!text.contains("cret"), "{text}");
    }
}
