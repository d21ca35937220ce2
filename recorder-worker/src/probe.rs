//! ffprobe: what a camera serves before we record it, and what a recorded file holds.
//!
//! [`probe_source`] asks the camera (over RTSP/TCP, with an I/O timeout and a wall-clock deadline)
//! which codecs it sends, so the recorder knows whether to copy or transcode the audio.
//! [`probe_file`] reads a finished clip: duration, codecs and resolution come from
//! `ffprobe -print_format json` (never from FFmpeg's stderr or the camera row), the size from the
//! file system, and whether `moov` precedes `mdat` (faststart) from the file's top-level atoms.
//! The JSON parser [`parse_ffprobe_json`] is pure and tested on real ffprobe output.

use crate::ffmpeg::{MediaError, RTSP_PROTOCOLS};
use camrec_shared::rtsp::{scrub_userinfo, RtspUrl};
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::Command;

/// The streams a camera serves (what [`probe_source`] finds).
pub use crate::ffmpeg::SourceInfo;

/// What a recorded file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipInfo {
    pub duration_sec: f64,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub audio_codec: Option<String>,
    pub size_bytes: u64,
    /// True when the `moov` atom comes before `mdat`: the file plays while it downloads.
    pub moov_before_mdat: bool,
}

/// The streams and duration ffprobe reports (the pure part of a probe).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbedStreams {
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub audio_codec: Option<String>,
    /// The container duration; `None` when ffprobe reports none (a live source).
    pub duration_sec: Option<f64>,
}

#[derive(Deserialize)]
struct FfprobeOutput {
    #[serde(default)]
    streams: Vec<FfprobeStream>,
    #[serde(default)]
    format: Option<FfprobeFormat>,
}

#[derive(Deserialize)]
struct FfprobeStream {
    #[serde(default)]
    codec_type: Option<String>,
    #[serde(default)]
    codec_name: Option<String>,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    duration: Option<String>,
}

#[derive(Deserialize)]
struct FfprobeFormat {
    #[serde(default)]
    duration: Option<String>,
}

/// Parses `ffprobe -print_format json -show_format -show_streams` output. The first video stream
/// with a codec and a resolution decides the video; the first audio stream the audio.
pub fn parse_ffprobe_json(json: &[u8]) -> Result<ProbedStreams, MediaError> {
    let out: FfprobeOutput = serde_json::from_slice(json)
        .map_err(|e| MediaError::Probe(format!("ffprobe printed no valid JSON: {e}")))?;
    let video = out
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && s.codec_name.is_some())
        .ok_or_else(|| MediaError::NoMedia("no video stream".into()))?;
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(MediaError::NoMedia(
                "the video stream has no resolution".into(),
            ))
        }
    };
    let audio_codec = out
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .and_then(|s| s.codec_name.clone());
    let duration_sec = out
        .format
        .as_ref()
        .and_then(|f| parse_duration(f.duration.as_deref()))
        .or_else(|| parse_duration(video.duration.as_deref()));
    Ok(ProbedStreams {
        video_codec: video.codec_name.clone().unwrap_or_default(),
        width,
        height,
        audio_codec,
        duration_sec,
    })
}

fn parse_duration(s: Option<&str>) -> Option<f64> {
    s?.parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0)
}

/// How much longer than its I/O timeout ffprobe may take in all: it reads the stream until it
/// has seen every codec's parameters, which takes up to one keyframe interval.
pub const SOURCE_PROBE_MARGIN: Duration = Duration::from_secs(10);

/// Asks the camera what it serves, with `timeout` as the socket I/O timeout. Fails with
/// [`MediaError::Unreachable`] when ffprobe cannot open the stream (refused, wrong credential,
/// silent for `timeout`) and [`MediaError::Timeout`] when it takes longer than
/// `timeout + SOURCE_PROBE_MARGIN` in all.
pub async fn probe_source(
    ffprobe: &Path,
    url: &RtspUrl,
    timeout: Duration,
) -> Result<SourceInfo, MediaError> {
    let io_timeout_us = timeout.as_micros().max(1).to_string();
    let mut cmd = crate::ffmpeg::media_command(ffprobe);
    cmd.args(["-v", "error", "-rtsp_transport", "tcp", "-timeout"])
        .arg(&io_timeout_us)
        .args(["-protocol_whitelist", RTSP_PROTOCOLS])
        .args(["-print_format", "json", "-show_streams", "-i"])
        .arg(url.expose());
    let deadline = timeout + SOURCE_PROBE_MARGIN;
    let (ok, stdout, stderr) = run_with_deadline(cmd, "ffprobe", deadline).await?;
    if !ok {
        return Err(MediaError::Unreachable(last_line(&stderr)));
    }
    let streams = parse_ffprobe_json(&stdout)?;
    Ok(SourceInfo {
        video_codec: streams.video_codec,
        audio_codec: streams.audio_codec,
        width: streams.width,
        height: streams.height,
    })
}

/// Probes a local file: streams and duration via ffprobe, size and atom order from the file.
pub async fn probe_file(ffprobe: &Path, path: &Path) -> Result<ClipInfo, MediaError> {
    let size_bytes = tokio::fs::metadata(path).await?.len();
    if size_bytes == 0 {
        return Err(MediaError::NoMedia("the file is empty".into()));
    }
    let mut cmd = crate::ffmpeg::media_command(ffprobe);
    cmd.args(["-v", "error", "-print_format", "json"])
        .args(["-show_format", "-show_streams", "-i"])
        .arg(path);
    let (ok, stdout, stderr) = run_with_deadline(cmd, "ffprobe", FILE_PROBE_DEADLINE).await?;
    if !ok {
        return Err(MediaError::Probe(last_line(&stderr)));
    }
    let streams = parse_ffprobe_json(&stdout)?;
    let duration_sec = streams
        .duration_sec
        .ok_or_else(|| MediaError::Probe("ffprobe reports no duration".into()))?;
    Ok(ClipInfo {
        duration_sec,
        video_codec: streams.video_codec,
        width: streams.width,
        height: streams.height,
        audio_codec: streams.audio_codec,
        size_bytes,
        moov_before_mdat: moov_before_mdat(path).await?,
    })
}

/// How long ffprobe may take to read a local file.
const FILE_PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a short-lived tool with piped output, killing it at the deadline.
/// Returns (exited with 0, stdout, stderr).
pub(crate) async fn run_with_deadline(
    mut cmd: Command,
    program: &'static str,
    deadline: Duration,
) -> Result<(bool, Vec<u8>, String), MediaError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| MediaError::Spawn {
        program: program.into(),
        source,
    })?;
    let out = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .map_err(|_| MediaError::Timeout {
            what: program,
            after: deadline,
        })??;
    let stderr = scrub_userinfo(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), out.stdout, stderr))
}

/// The last non-empty line of a tool's stderr, for an error message.
pub(crate) fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .chars()
        .take(300)
        .collect()
}

/// Walks the top-level MP4 atoms and tells whether `moov` comes before `mdat`.
pub async fn moov_before_mdat(path: &Path) -> Result<bool, MediaError> {
    let mut first = None;
    walk_atoms(path, |kind| {
        let found = matches!(kind, b"moov" | b"mdat");
        if found {
            first = Some(*kind);
        }
        found
    })
    .await?;
    Ok(first == Some(*b"moov"))
}

/// True when the file has a `moov` atom followed by a fragment (`moof`): a fragmented-MP4 part
/// that holds at least one fragment of frames. Tells it without starting a process.
pub async fn has_fragments(path: &Path) -> Result<bool, MediaError> {
    let mut moov = false;
    walk_atoms(path, |kind| {
        moov |= kind == b"moov";
        moov && kind == b"moof"
    })
    .await
}

/// Calls `until` with the type of each top-level atom, in file order, until it returns true;
/// returns whether it did. A malformed or truncated atom ends the walk.
async fn walk_atoms(
    path: &Path,
    mut until: impl FnMut(&[u8; 4]) -> bool,
) -> Result<bool, MediaError> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let mut offset = 0u64;
    while offset + 8 <= len {
        let mut header = [0u8; 16];
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let n = file.read(&mut header).await?;
        let Some((kind, size)) = atom_header(&header[..n], len - offset) else {
            return Ok(false);
        };
        if until(&kind) {
            return Ok(true);
        }
        offset += size;
    }
    Ok(false)
}

/// Decodes one atom header: its type and total size (`None` for a malformed header).
fn atom_header(h: &[u8], remaining: u64) -> Option<([u8; 4], u64)> {
    if h.len() < 8 {
        return None;
    }
    let kind: [u8; 4] = h[4..8].try_into().ok()?;
    let size = match u32::from_be_bytes(h[0..4].try_into().ok()?) {
        0 => remaining,
        1 => u64::from_be_bytes(h.get(8..16)?.try_into().ok()?),
        n => u64::from(n),
    };
    (size >= 8 && size <= remaining).then_some((kind, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_JSON: &str = r#"{
    "streams": [
        { "index": 0, "codec_name": "h264", "codec_type": "video", "width": 640, "height": 360,
          "r_frame_rate": "25/1", "duration": "4.040000" },
        { "index": 1, "codec_name": "aac", "codec_type": "audio", "sample_rate": "48000",
          "duration": "4.011000" }
    ],
    "format": { "filename": "x.mp4", "nb_streams": 2, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
                "duration": "4.040000", "size": "412345" }
}"#;

    #[test]
    fn parses_a_file_probe() {
        let p = parse_ffprobe_json(FILE_JSON.as_bytes()).unwrap();
        assert_eq!(p.video_codec, "h264");
        assert_eq!((p.width, p.height), (640, 360));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        assert_eq!(p.duration_sec, Some(4.04));
    }

    #[test]
    fn a_live_source_has_no_duration_and_may_have_no_audio() {
        let json = r#"{"streams":[{"codec_name":"hevc","codec_type":"video","width":1920,
                       "height":1080}]}"#;
        let p = parse_ffprobe_json(json.as_bytes()).unwrap();
        assert_eq!(p.video_codec, "hevc");
        assert_eq!(p.audio_codec, None);
        assert_eq!(p.duration_sec, None);
    }

    #[test]
    fn no_video_or_bad_json_are_errors_not_panics() {
        let audio_only = r#"{"streams":[{"codec_name":"aac","codec_type":"audio"}]}"#;
        assert!(matches!(
            parse_ffprobe_json(audio_only.as_bytes()),
            Err(MediaError::NoMedia(_))
        ));
        let no_size = r#"{"streams":[{"codec_name":"h264","codec_type":"video","width":0}]}"#;
        assert!(matches!(
            parse_ffprobe_json(no_size.as_bytes()),
            Err(MediaError::NoMedia(_))
        ));
        assert!(matches!(
            parse_ffprobe_json(b"{}"),
            Err(MediaError::NoMedia(_))
        ));
        assert!(matches!(
            parse_ffprobe_json(b"not json"),
            Err(MediaError::Probe(_))
        ));
    }

    #[test]
    fn atom_headers_decode_sizes_and_reject_garbage() {
        let mut h = Vec::from(24u32.to_be_bytes());
        h.extend_from_slice(b"ftyp");
        assert_eq!(atom_header(&h, 100), Some((*b"ftyp", 24)));
        assert_eq!(atom_header(&h, 10), None, "an atom larger than the file");
        let mut zero = Vec::from(0u32.to_be_bytes());
        zero.extend_from_slice(b"mdat");
        assert_eq!(atom_header(&zero, 50), Some((*b"mdat", 50)));
        let mut large = Vec::from(1u32.to_be_bytes());
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&40u64.to_be_bytes());
        assert_eq!(atom_header(&large, 40), Some((*b"mdat", 40)));
        assert_eq!(atom_header(b"abc", 100), None);
        assert_eq!(
            atom_header(&[0, 0, 0, 4, b'x', b'x', b'x', b'x'], 100),
            None
        );
    }

    #[tokio::test]
    async fn atom_order_is_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let atom = |kind: &[u8; 4], body: usize| {
            let mut a = Vec::from(((8 + body) as u32).to_be_bytes());
            a.extend_from_slice(kind);
            a.extend(std::iter::repeat_n(0u8, body));
            a
        };
        let fast = dir.path().join("fast.mp4");
        let slow = dir.path().join("slow.mp4");
        std::fs::write(
            &fast,
            [atom(b"ftyp", 16), atom(b"moov", 8), atom(b"mdat", 32)].concat(),
        )
        .unwrap();
        std::fs::write(
            &slow,
            [atom(b"ftyp", 16), atom(b"mdat", 32), atom(b"moov", 8)].concat(),
        )
        .unwrap();
        assert!(moov_before_mdat(&fast).await.unwrap());
        assert!(!moov_before_mdat(&slow).await.unwrap());

        let fragmented = dir.path().join("part-000.mp4");
        let no_frames = dir.path().join("part-001.mp4");
        let cut_fragment = dir.path().join("part-002.mp4");
        let mut cut = [atom(b"ftyp", 16), atom(b"moov", 8), atom(b"moof", 24)].concat();
        cut.truncate(cut.len() - 4);
        std::fs::write(
            &fragmented,
            [
                atom(b"ftyp", 16),
                atom(b"moov", 8),
                atom(b"moof", 8),
                atom(b"mdat", 32),
            ]
            .concat(),
        )
        .unwrap();
        std::fs::write(&no_frames, [atom(b"ftyp", 16), atom(b"moov", 8)].concat()).unwrap();
        std::fs::write(&cut_fragment, cut).unwrap();
        assert!(has_fragments(&fragmented).await.unwrap());
        assert!(!has_fragments(&no_frames).await.unwrap());
        assert!(!has_fragments(&cut_fragment).await.unwrap());
        assert!(!has_fragments(&slow).await.unwrap(), "no moof at all");
    }
}
