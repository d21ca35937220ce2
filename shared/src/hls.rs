//! HLS media playlists (RFC 8216, version 7, fragmented MP4) of a playback's uploaded segments:
//! event-api serves one while the clip is recorded (`liveUrl`), the worker stores the closed one
//! beside the clip (`playbacks/<id>/index.m3u8`). One pure function, so both write the same.
//!
//! Each segment object is a whole fragmented MP4: its first `init_len` bytes are the
//! initialization section (`ftyp`+`moov`), the rest its media (`moof`+`mdat`). So every segment
//! gets its own `EXT-X-MAP` (a byte range of its object) and an `EXT-X-BYTERANGE` for its media:
//! no object is written twice and no separate init object is needed.
//!
//! Segments of one capture run have continuous media timestamps; a run that starts after a
//! hole (the camera dropped, another worker took the camera over) restarts them, so a segment
//! that does not follow its predecessor is marked `EXT-X-DISCONTINUITY`. Every segment carries
//! its wall-clock time (`EXT-X-PROGRAM-DATE-TIME`), so a player shows when it was filmed.

use crate::storage::SegmentName;
use chrono::{DateTime, SecondsFormat, Utc};
use std::fmt::Write;

/// The shortest `EXT-X-TARGETDURATION`: a player starts three target durations behind the live
/// edge, so a short one keeps a live view close to the camera.
pub const MIN_TARGET_SEC: u32 = 2;
/// A hole longer than this between two segments starts a new run (`EXT-X-DISCONTINUITY`).
pub const CONTINUOUS_WITHIN_MS: i64 = 500;

/// One uploaded segment: its name and its object's size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: SegmentName,
    pub size: u64,
}

/// The segments a playlist lists, in time order: a segment that starts inside the one before
/// it (two holders at once, which fencing prevents) is left out, and so is one too small to
/// hold media after its init section.
pub fn playable(mut segments: Vec<Listed>) -> Vec<Listed> {
    segments.sort_by_key(|s| (s.name.start_ms, s.name.epoch));
    let mut kept: Vec<Listed> = Vec::with_capacity(segments.len());
    for s in segments {
        if s.size <= u64::from(s.name.init_len) {
            continue;
        }
        if kept
            .last()
            .is_some_and(|p| s.name.start_ms < p.name.end_ms() - CONTINUOUS_WITHIN_MS)
        {
            continue;
        }
        kept.push(s);
    }
    kept
}

/// The media playlist of `segments` (as [`playable`] returns them); `closed` adds
/// `EXT-X-ENDLIST` (the recording is over); `uri` gives each segment's URI.
pub fn media_playlist(
    segments: &[Listed],
    closed: bool,
    uri: impl Fn(&SegmentName) -> String,
) -> String {
    let longest_ms = segments
        .iter()
        .map(|s| s.name.duration_ms)
        .max()
        .unwrap_or(0);
    let target = longest_ms.div_ceil(1000).max(MIN_TARGET_SEC);
    let mut out = String::with_capacity(160 + segments.len() * 400);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    out.push_str(
        "#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    );
    let mut previous: Option<&SegmentName> = None;
    for s in segments {
        let n = &s.name;
        if previous.is_some_and(|p| !follows(p, n)) {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let u = uri(n);
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", wall_clock(n.start_ms));
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{u}\",BYTERANGE=\"{}@0\"", n.init_len);
        let media = s.size - u64::from(n.init_len);
        let _ = writeln!(out, "#EXT-X-BYTERANGE:{media}@{}", n.init_len);
        let _ = writeln!(out, "#EXTINF:{:.3},", f64::from(n.duration_ms) / 1000.0);
        out.push_str(&u);
        out.push('\n');
        previous = Some(n);
    }
    if closed {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Whether `next` continues `previous`'s run: same holder, no hole between them.
fn follows(previous: &SegmentName, next: &SegmentName) -> bool {
    previous.epoch == next.epoch && next.start_ms - previous.end_ms() <= CONTINUOUS_WITHIN_MS
}

fn wall_clock(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, duration_ms: u32, epoch: u64) -> Listed {
        Listed {
            name: SegmentName {
                start_ms,
                duration_ms,
                init_len: 700,
                epoch,
            },
            size: 10_700,
        }
    }

    fn uri(n: &SegmentName) -> String {
        format!("live/{n}")
    }

    #[test]
    fn an_open_playlist_lists_every_segment_with_its_map_and_range() {
        let t0 = 1_765_000_000_000;
        let list = playable(vec![seg(t0 + 1000, 1000, 7), seg(t0, 1000, 7)]);
        let text = media_playlist(&list, false, uri);
        let expected = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-12-06T05:46:40.000Z\n\
             #EXT-X-MAP:URI=\"live/{t0}_1000_700_7.mp4\",BYTERANGE=\"700@0\"\n\
             #EXT-X-BYTERANGE:10000@700\n#EXTINF:1.000,\nlive/{t0}_1000_700_7.mp4\n\
             #EXT-X-PROGRAM-DATE-TIME:2025-12-06T05:46:41.000Z\n\
             #EXT-X-MAP:URI=\"live/{}_1000_700_7.mp4\",BYTERANGE=\"700@0\"\n\
             #EXT-X-BYTERANGE:10000@700\n#EXTINF:1.000,\nlive/{}_1000_700_7.mp4\n",
            t0 + 1000,
            t0 + 1000
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_closed_playlist_ends_and_a_long_segment_raises_the_target() {
        let list = playable(vec![seg(0, 4200, 1)]);
        let text = media_playlist(&list, true, uri);
        assert!(text.contains("#EXT-X-TARGETDURATION:5\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(media_playlist(&[], true, uri)
            .ends_with("#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn a_hole_or_another_holder_starts_a_discontinuity() {
        let list = playable(vec![
            seg(0, 1000, 1),
            seg(1200, 1000, 1), // within the tolerance: same run
            seg(4000, 1000, 1), // a hole
            seg(5000, 1000, 2), // another holder
        ]);
        let text = media_playlist(&list, false, uri);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 2);
        let first_disc = text.find("#EXT-X-DISCONTINUITY").unwrap();
        assert!(text[first_disc..].contains("4000_1000_700_1.mp4"));
    }

    #[test]
    fn overlapping_and_empty_segments_are_left_out() {
        let mut empty = seg(9000, 1000, 1);
        empty.size = 700;
        let list = playable(vec![
            seg(0, 2000, 1),
            seg(1000, 1000, 2),
            seg(2000, 1000, 2),
            empty,
        ]);
        let starts: Vec<i64> = list.iter().map(|s| s.name.start_ms).collect();
        assert_eq!(starts, vec![0, 2000]);
    }
}
