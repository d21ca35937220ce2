//! The ring of one camera: the closed segments its capture holds, and the pure rules over them
//! (retention, the segments a clip window needs, gaps). Time is always passed in, so every rule is
//! tested without a clock.
//!
//! Retention: a segment is kept while it ends less than `keep` before now, where `keep` is the
//! camera's `preRollSec` plus the ring margin. A recording never needs the ring to keep anything
//! longer: it hard-links each segment it needs into its own directory when the segment closes (or,
//! for the pre-roll, when the recording starts), so deleting the ring's name frees nothing a clip
//! still uses.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::VecDeque;
use std::time::Duration;

use super::segment::Segment;

/// An interval with no frames, inside a clip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The closed segments of one capture, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    segments: VecDeque<Segment>,
}

impl Ring {
    /// Adds a segment that just closed (segments close in time order).
    pub fn push(&mut self, segment: Segment) {
        self.segments.push_back(segment);
    }

    /// Removes and returns the segments that ended more than `keep` before `now`.
    pub fn expire(&mut self, now: DateTime<Utc>, keep: Duration) -> Vec<Segment> {
        let horizon = now - delta(keep);
        let mut gone = Vec::new();
        while self.segments.front().is_some_and(|s| s.end() < horizon) {
            gone.extend(self.segments.pop_front());
        }
        gone
    }

    /// The segments a clip starting at `from` needs from the ring: the one that holds `from`
    /// (so the clip starts on the keyframe before it) and every later one.
    pub fn from(&self, from: DateTime<Utc>) -> Vec<Segment> {
        self.segments
            .iter()
            .filter(|s| s.end() > from)
            .cloned()
            .collect()
    }

    /// The segments that closed after `seq`.
    pub fn after(&self, seq: u64) -> Vec<Segment> {
        self.segments
            .iter()
            .filter(|s| s.seq > seq)
            .cloned()
            .collect()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Wall-clock time the ring covers, from its oldest segment's start to its newest's end.
    pub fn span(&self) -> Option<Span> {
        Some(Span {
            from: self.segments.front()?.start,
            to: self.segments.back()?.end(),
        })
    }
}

/// The intervals longer than `tolerance` between consecutive segments (in time order): where
/// the camera delivered nothing.
pub fn gaps(segments: &[Segment], tolerance: Duration) -> Vec<Span> {
    segments
        .windows(2)
        .filter_map(|w| {
            let (prev_end, next_start) = (w[0].end(), w[1].start);
            (next_start - prev_end > delta(tolerance)).then_some(Span {
                from: prev_end,
                to: next_start,
            })
        })
        .collect()
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn t(sec: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + sec, 0).unwrap()
    }

    fn seg(seq: u64, start: i64, dur: u64) -> Segment {
        Segment {
            seq,
            start: t(start),
            duration: Duration::from_secs(dur),
            bytes: 100,
            path: PathBuf::from(format!("{seq}.mp4")),
        }
    }

    fn ring(segs: &[Segment]) -> Ring {
        let mut r = Ring::default();
        for s in segs {
            r.push(s.clone());
        }
        r
    }

    #[test]
    fn retention_keeps_what_ended_within_keep() {
        let mut r = ring(&[seg(1, 0, 2), seg(2, 2, 2), seg(3, 4, 2), seg(4, 6, 2)]);
        // At t=12 with keep 7 s, the horizon is t=5: segments ending at 2 and 4 go.
        let gone = r.expire(t(12), Duration::from_secs(7));
        assert_eq!(gone.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.bytes(), 200);
        assert_eq!(
            r.span(),
            Some(Span {
                from: t(4),
                to: t(8)
            })
        );
        assert!(r.expire(t(12), Duration::from_secs(7)).is_empty());
    }

    #[test]
    fn a_clip_starts_on_the_segment_holding_its_start() {
        let r = ring(&[seg(1, 0, 2), seg(2, 2, 2), seg(3, 4, 2)]);
        let from = r.from(t(3));
        assert_eq!(from.iter().map(|s| s.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(
            from[0].start,
            t(2),
            "the clip starts at or before its window"
        );
        assert_eq!(
            r.from(t(-60)).len(),
            3,
            "the oldest frame held when the ring is short"
        );
        assert!(r.from(t(6)).is_empty(), "nothing yet after the newest");
        assert_eq!(r.after(1).iter().map(|s| s.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn gaps_are_the_holes_longer_than_the_tolerance() {
        let segs = [seg(1, 0, 2), seg(2, 2, 2), seg(3, 14, 2), seg(4, 16, 2)];
        assert_eq!(
            gaps(&segs, Duration::from_secs(1)),
            [Span {
                from: t(4),
                to: t(14)
            }]
        );
        let jitter = [seg(1, 0, 2), seg(2, 2, 2)];
        assert!(gaps(&jitter, Duration::from_secs(1)).is_empty());
        assert!(gaps(&[], Duration::from_secs(1)).is_empty());
    }
}
