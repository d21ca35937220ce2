//! One closed segment of a camera's capture, and its file-name codec.
//!
//! A segment is a short fragmented MP4 that starts on a keyframe. Its name carries its wall-clock
//! start and its duration, `<start_ms>_<duration_ms>.mp4` (milliseconds since the Unix epoch,
//! zero-padded to 13 digits so names sort by time), so a directory of segments, in the ring or
//! hard-linked into a recording, says what it covers without an index beside it.

use chrono::{DateTime, TimeDelta, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The extension of every segment file.
const EXT: &str = ".mp4";

/// A closed segment: where it is and what wall-clock interval it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Per capture, strictly increasing in the order segments close.
    pub seq: u64,
    /// Wall-clock time of the segment's first frame.
    pub start: DateTime<Utc>,
    /// Media duration of the segment.
    pub duration: Duration,
    pub bytes: u64,
    pub path: PathBuf,
}

impl Segment {
    /// Wall-clock time just after the segment's last frame.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + TimeDelta::from_std(self.duration).unwrap_or(TimeDelta::MAX)
    }

    /// The segment's file name (see the module documentation).
    pub fn name(&self) -> String {
        segment_name(self.start, self.duration)
    }
}

/// `<start_ms>_<duration_ms>.mp4`.
pub fn segment_name(start: DateTime<Utc>, duration: Duration) -> String {
    format!(
        "{:013}_{}{EXT}",
        start.timestamp_millis().max(0),
        duration.as_millis()
    )
}

/// The start and duration a segment's file name carries; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<(DateTime<Utc>, Duration)> {
    let stem = name.strip_suffix(EXT)?;
    let (start, duration) = stem.split_once('_')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(start) || !all_digits(duration) {
        return None;
    }
    let start = DateTime::from_timestamp_millis(start.parse().ok()?)?;
    let duration = Duration::from_millis(duration.parse().ok()?);
    Some((start, duration))
}

/// The segments in `dir`, in time order, read from their names (other files are skipped). The
/// `seq` of each is its index in that order.
pub async fn segments_in(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((start, duration)) = parse_segment_name(&name) else {
            continue;
        };
        let bytes = entry.metadata().await.map(|m| m.len()).unwrap_or(0);
        found.push(Segment {
            seq: 0,
            start,
            duration,
            bytes,
            path: entry.path(),
        });
    }
    found.sort_by_key(|s| s.start);
    for (i, s) in found.iter_mut().enumerate() {
        s.seq = i as u64;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_sort_by_time_and_say_what_they_cover() {
        let t = DateTime::from_timestamp_millis(1_796_548_623_885).unwrap();
        let name = segment_name(t, Duration::from_millis(2040));
        assert_eq!(name, "1796548623885_2040.mp4");
        assert_eq!(
            parse_segment_name(&name),
            Some((t, Duration::from_millis(2040)))
        );
        let early = segment_name(DateTime::from_timestamp_millis(5).unwrap(), Duration::ZERO);
        assert!(early < name, "zero-padded names sort by time");
    }

    #[test]
    fn other_files_are_not_segments() {
        for name in [
            "manifest.json",
            "video.mp4",
            "1_2.mp4.tmp",
            "_5.mp4",
            "5_.mp4",
            "12a_5.mp4",
            "-1_5.mp4",
            "1_-5.mp4",
        ] {
            assert_eq!(parse_segment_name(name), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn the_name_codec_round_trips(ms in 0i64..4_000_000_000_000, dur in 0u64..600_000) {
            let start = DateTime::from_timestamp_millis(ms).unwrap();
            let d = Duration::from_millis(dur);
            prop_assert_eq!(parse_segment_name(&segment_name(start, d)), Some((start, d)));
        }

        #[test]
        fn arbitrary_names_never_panic(name in "\\PC{0,40}") {
            let _ = parse_segment_name(&name);
        }
    }
}
