//! The end of a clip cut from the segment FFmpeg is still writing, so that a recording ends as
//! soon as its end has been captured rather than when the camera's next keyframe closes the
//! segment (one keyframe interval later: 1-4 s for most cameras).
//!
//! FFmpeg writes each segment as fragments of at most [`crate::ffmpeg::FRAGMENT`] and flushes
//! each to the file as it is done. The fragments written in full are a valid fragmented MP4 of
//! their own: the segment's init section and its first keyframe, then what follows. [`cut`]
//! copies them into the recording as a segment file of their own, named by their wall-clock
//! interval like any other, once they reach the clip's end.

use chrono::{DateTime, TimeDelta, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::segment::{segment_name, Segment};
use crate::mp4;

/// The segment FFmpeg is writing: its file and the wall-clock time of its first frame (the end
/// of the segment before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub path: PathBuf,
    pub start: DateTime<Utc>,
}

/// The whole fragments of `open` written so far, as a segment file in `dir`, when they reach
/// `until`; `None` while they do not, or when the segment is no longer open (it was closed and
/// moved into the ring meanwhile: the recording takes it from there).
pub async fn cut(open: &Open, until: DateTime<Utc>, dir: &Path) -> Option<Segment> {
    let file = tokio::fs::read(&open.path).await.ok()?;
    let (len, duration) = whole(&file)?;
    let segment = Segment {
        seq: 0,
        start: open.start,
        duration,
        bytes: len as u64,
        path: dir.join(segment_name(open.start, duration)),
    };
    if segment.end() < until {
        return None;
    }
    if let Err(e) = tokio::fs::write(&segment.path, &file[..len]).await {
        tracing::warn!(segment = %segment.name(), error = %e, "cannot write the clip's last segment");
        return None;
    }
    Some(segment)
}

/// How many bytes of `file` are whole fragments, and how long their video lasts.
fn whole(file: &[u8]) -> Option<(usize, Duration)> {
    let len = mp4::whole_len(file)?;
    let init_len = mp4::init_len(file)? as usize;
    let init = mp4::Init::parse(&file[..init_len]).ok()?;
    let video = init.video();
    let ticks: u64 = mp4::fragments::fragments(&file[..len], &init)
        .ok()?
        .iter()
        .flat_map(|f| &f.runs)
        .filter(|r| r.track == video.id)
        .flat_map(|r| &r.samples)
        .map(|s| u64::from(s.duration))
        .sum();
    let ms = u128::from(ticks) * 1000 / u128::from(video.timescale.max(1));
    let duration = Duration::from_millis(u64::try_from(ms).ok()?);
    (TimeDelta::from_std(duration).is_ok() && !duration.is_zero()).then_some((len, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 s of 25 fps video with a keyframe a second, in fragments of at most 0.2 s, as the
    /// capture writes them.
    fn segment(dir: &Path) -> Vec<u8> {
        let path = dir.join("s.mp4");
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args(["-i", "testsrc2=size=320x180:rate=25", "-t", "3"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
            .args(["-f", "mp4", "-movflags"])
            .arg("+frag_keyframe+empty_moov+default_base_moof")
            .args(["-frag_duration", "200000"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        std::fs::read(path).expect("written")
    }

    #[tokio::test]
    async fn the_whole_fragments_of_an_open_segment_are_cut_once_they_reach_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let file = segment(tmp.path());
        let (all, duration) = whole(&file).expect("a whole file");
        assert!(
            duration.as_millis().abs_diff(3000) <= 40,
            "3 s of video: {duration:?}"
        );
        // FFmpeg is half way through: its file holds 1.5 s and a bit of the next fragment.
        let mid = all / 2;
        let (len, part) = whole(&file[..mid]).expect("whole fragments");
        assert!(len <= mid && len > all / 4, "{len} of {mid}");
        assert!(
            part < duration && part > Duration::from_millis(600),
            "{part:?}"
        );
        // Written in fragments of at most 0.2 s: the cut is never far behind what was written.
        let (_, more) = whole(&file[..len + (all - len) / 2]).unwrap();
        assert!(more > part, "{more:?} after {part:?}");

        let open = Open {
            path: tmp.path().join("open.mp4"),
            start: DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
        };
        std::fs::write(&open.path, &file[..mid]).unwrap();
        let out = tmp.path().join("rec");
        std::fs::create_dir(&out).unwrap();
        let end_of_part = open.start + TimeDelta::from_std(part).unwrap();
        // Not yet at the end: nothing is cut.
        let later = end_of_part + TimeDelta::milliseconds(1);
        assert_eq!(cut(&open, later, &out).await, None);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // At the end: a segment named by its interval, a valid MP4 that FFmpeg reads whole.
        let s = cut(&open, end_of_part, &out).await.expect("cut");
        assert_eq!(
            (s.start, s.duration, s.bytes),
            (open.start, part, len as u64)
        );
        assert_eq!(s.path, out.join(segment_name(open.start, part)));
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(&s.path)
            .output()
            .unwrap();
        assert!(probe.status.success());
        let frames: u64 = String::from_utf8_lossy(&probe.stdout)
            .trim()
            .parse()
            .unwrap();
        let expected = part.as_millis() as u64 / 40;
        assert!(
            frames.abs_diff(expected) <= 1,
            "{frames} frames for {part:?}"
        );
        // A segment closed (moved away) meanwhile: nothing to cut here.
        std::fs::remove_file(&open.path).unwrap();
        assert_eq!(cut(&open, open.start, &out).await, None);
    }
}
