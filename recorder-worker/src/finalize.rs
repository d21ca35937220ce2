//! Finalizing a recording: fragmented-MP4 parts into one faststart MP4, and a thumbnail.
//!
//! A recording is a run of segments of the camera's capture (fragmented MP4, each starting on a
//! keyframe). [`finalize`] joins the parts that hold fragments (told from their top-level atoms,
//! which costs no process) with stream copy into one MP4 whose `moov` atom is at the front, so
//! the clip plays while it downloads: a single part is remuxed as it is, several go through the
//! concat demuxer, which lays each file after the previous one, so a gap in the capture is skipped
//! in the clip's timeline, not filled. Only when that join fails is each part probed with
//! ffprobe, the empty or unreadable ones skipped and the rest joined again. [`thumbnail`] grabs
//! one JPEG frame from the finished clip.

use crate::ffmpeg::MediaError;
use crate::probe::{has_fragments, last_line, probe_file, run_with_deadline};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one concatenation or thumbnail may take.
const STEP_DEADLINE: Duration = Duration::from_secs(300);

/// Joins the usable `parts` (in order) into `out`: stream copy, `+faststart`. Fails with
/// [`MediaError::NoMedia`] when no part holds playable video.
pub async fn finalize(ffmpeg: &Path, parts: &[PathBuf], out: &Path) -> Result<(), MediaError> {
    let candidates = parts_with_fragments(parts).await;
    let failed = if candidates.is_empty() {
        None
    } else {
        match join(ffmpeg, &candidates, out).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::warn!(%error, parts = candidates.len(), "joining the parts failed, probing each");
                Some(error)
            }
        }
    };
    let usable = usable_parts(&sibling_ffprobe(ffmpeg), parts).await;
    if usable.is_empty() {
        return Err(MediaError::NoMedia(format!(
            "none of the {} recorded parts is playable",
            parts.len()
        )));
    }
    match failed {
        Some(error) if usable == candidates => Err(error),
        _ => join(ffmpeg, &usable, out).await,
    }
}

/// The parts whose atoms show a `moov` and at least one fragment, in order. A part FFmpeg never
/// wrote a frame into (killed at once, a camera that sent nothing) has none.
pub async fn parts_with_fragments(parts: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for part in parts {
        if has_fragments(part).await.unwrap_or(false) {
            found.push(part.clone());
        }
    }
    found
}

/// Stream copy of `parts` into `out` with `moov` in front: one part is its own input, several
/// are read through the concat demuxer.
async fn join(ffmpeg: &Path, parts: &[PathBuf], out: &Path) -> Result<(), MediaError> {
    let mut cmd = crate::ffmpeg::media_command(ffmpeg);
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    let list = match parts {
        [one] => {
            cmd.args(["-protocol_whitelist", "file", "-i"])
                .arg(std::path::absolute(one)?);
            None
        }
        _ => {
            let list = out.with_extension("concat.txt");
            tokio::fs::write(&list, concat_list(parts)?).await?;
            cmd.args(["-f", "concat", "-safe", "0", "-protocol_whitelist", "file"])
                .arg("-i")
                .arg(&list);
            Some(list)
        }
    };
    cmd.args(["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy"])
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(out);
    let result = run_with_deadline(cmd, "ffmpeg", STEP_DEADLINE).await;
    if let Some(list) = list {
        let _ = tokio::fs::remove_file(&list).await;
    }
    match result? {
        (true, _, _) => Ok(()),
        (false, _, stderr) => Err(MediaError::Ffmpeg(last_line(&stderr))),
    }
}

/// The parts ffprobe can read and that hold some video.
async fn usable_parts(ffprobe: &Path, parts: &[PathBuf]) -> Vec<PathBuf> {
    let mut usable = Vec::new();
    for part in parts {
        match probe_file(ffprobe, part).await {
            Ok(info) if info.duration_sec > 0.0 => usable.push(part.clone()),
            Ok(_) => tracing::warn!(part = %part.display(), "skipping an empty part"),
            Err(error) => tracing::warn!(part = %part.display(), %error, "skipping a part"),
        }
    }
    usable
}

/// The concat demuxer's list file: one absolute, quoted path per line, with the segment's
/// duration from its name: a segment's timestamps run on from the one before it (they do not
/// start at zero), and the duration FFmpeg would read from such a file is its end time, not its
/// length.
fn concat_list(parts: &[PathBuf]) -> Result<String, MediaError> {
    let mut list = String::from("ffconcat version 1.0\n");
    for part in parts {
        let abs = std::path::absolute(part)?;
        let path = abs.to_str().ok_or_else(|| {
            MediaError::Io(std::io::Error::other("a part path is not valid UTF-8"))
        })?;
        if path.contains('\n') {
            return Err(MediaError::Io(std::io::Error::other(
                "a part path contains a line break",
            )));
        }
        list.push_str(&format!("file '{}'\n", path.replace('\'', r"'\''")));
        let name = part
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some((_, duration)) = crate::capture::segment::parse_segment_name(name) {
            list.push_str(&format!("duration {:.3}\n", duration.as_secs_f64()));
        }
    }
    Ok(list)
}

/// `ffprobe` next to `ffmpeg` when `ffmpeg` is a path, else `ffprobe` from `PATH`.
pub fn sibling_ffprobe(ffmpeg: &Path) -> PathBuf {
    match ffmpeg.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("ffprobe"),
        _ => PathBuf::from("ffprobe"),
    }
}

/// Writes one JPEG frame of `video` taken at `at_sec` (or the first frame, when the video is
/// shorter than that) to `out`.
pub async fn thumbnail(
    ffmpeg: &Path,
    video: &Path,
    out: &Path,
    at_sec: f64,
) -> Result<(), MediaError> {
    let at = if at_sec.is_finite() {
        at_sec.max(0.0)
    } else {
        0.0
    };
    match frame_at(ffmpeg, video, out, at).await {
        Err(MediaError::NoMedia(_)) if at > 0.0 => frame_at(ffmpeg, video, out, 0.0).await,
        other => other,
    }
}

/// Writes a JPEG frame of `video` at `at` seconds to `out`; [`MediaError::NoMedia`] when the
/// video is shorter.
///
/// The frame is the keyframe at or before `at`, decoded alone on one thread: most of a
/// thumbnail's CPU is FFmpeg's start, and decoding every frame up to `at` on a thread per core
/// added a third to it. A stream without keyframes the decoder marks as such (intra refresh)
/// gives no frame that way; the frame at `at` is then decoded the full way.
async fn frame_at(ffmpeg: &Path, video: &Path, out: &Path, at: f64) -> Result<(), MediaError> {
    match grab(ffmpeg, video, out, at, Decode::KeyframeOnly).await {
        Err(MediaError::NoMedia(_)) => grab(ffmpeg, video, out, at, Decode::Every).await,
        other => other,
    }
}

/// How [`grab`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decode {
    /// The keyframe at or before the time, alone, on one thread.
    KeyframeOnly,
    /// Every frame from the keyframe before the time up to it.
    Every,
}

fn grab_args(video: &Path, out: &Path, at: f64, decode: Decode) -> Vec<std::ffi::OsString> {
    let keyframe_only: &[&str] = match decode {
        Decode::KeyframeOnly => &["-threads", "1", "-skip_frame", "nokey", "-noaccurate_seek"],
        Decode::Every => &[],
    };
    let at = format!("{at:.3}");
    let head = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"];
    let input = ["-ss", &at, "-protocol_whitelist", "file", "-i"];
    let output = [
        "-frames:v",
        "1",
        "-vf",
        "scale='min(640,iw)':-2",
        "-q:v",
        "4",
    ];
    let image = ["-f", "image2", "-update", "1"];
    let strs = head.iter().chain(keyframe_only).chain(&input);
    let mut args: Vec<std::ffi::OsString> = strs.map(Into::into).collect();
    args.push(video.into());
    args.extend(output.iter().chain(&image).map(Into::into));
    args.push(out.into());
    args
}

async fn grab(
    ffmpeg: &Path,
    video: &Path,
    out: &Path,
    at: f64,
    decode: Decode,
) -> Result<(), MediaError> {
    let _ = tokio::fs::remove_file(out).await;
    let mut cmd = crate::ffmpeg::media_command(ffmpeg);
    cmd.args(grab_args(video, out, at, decode));
    let (ok, _, stderr) = run_with_deadline(cmd, "ffmpeg", STEP_DEADLINE).await?;
    if !ok {
        return Err(MediaError::Ffmpeg(last_line(&stderr)));
    }
    match tokio::fs::metadata(out).await {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(MediaError::NoMedia(format!("no frame at {at:.3} s"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concat_list_quotes_paths() {
        let list = concat_list(&[
            PathBuf::from("/rec/p/part-0001.mp4"),
            PathBuf::from("/rec/it's/part-0002.mp4"),
        ])
        .unwrap();
        assert_eq!(
            list,
            "ffconcat version 1.0\nfile '/rec/p/part-0001.mp4'\nfile '/rec/it'\\''s/part-0002.mp4'\n"
        );
        assert!(concat_list(&[PathBuf::from("/a\nfile '/etc/passwd'")]).is_err());
        let segments = concat_list(&[PathBuf::from("/rec/p/1765000000000_1040.mp4")]).unwrap();
        assert_eq!(
            segments,
            "ffconcat version 1.0\nfile '/rec/p/1765000000000_1040.mp4'\nduration 1.040\n"
        );
    }

    #[test]
    fn a_keyframe_only_grab_decodes_one_keyframe_on_one_thread() {
        let args = |d| -> Vec<String> {
            grab_args(Path::new("/r/part.mp4"), Path::new("/r/thumb.jpg"), 1.0, d)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        let cheap = args(Decode::KeyframeOnly).join(" ");
        assert!(
            cheap.contains("-threads 1 -skip_frame nokey -noaccurate_seek -ss 1.000"),
            "{cheap}"
        );
        assert!(cheap.ends_with("-i /r/part.mp4 -frames:v 1 -vf scale='min(640,iw)':-2 -q:v 4 -f image2 -update 1 /r/thumb.jpg"), "{cheap}");
        let full = args(Decode::Every).join(" ");
        assert!(
            !full.contains("skip_frame") && !full.contains("noaccurate_seek"),
            "{full}"
        );
        assert!(
            full.contains("-ss 1.000 -protocol_whitelist file -i /r/part.mp4"),
            "{full}"
        );
    }

    #[test]
    fn ffprobe_is_found_next_to_ffmpeg() {
        assert_eq!(
            sibling_ffprobe(Path::new("/usr/bin/ffmpeg")),
            PathBuf::from("/usr/bin/ffprobe")
        );
        assert_eq!(
            sibling_ffprobe(Path::new("ffmpeg")),
            PathBuf::from("ffprobe")
        );
    }
}
