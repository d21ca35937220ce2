//! The wall-clock window of one clip, and when it is complete: pure rules, tested on given times.
//!
//! A clip covers `[occurred_at - pre_roll, end + post_roll]`, where `end` is the event's end, or
//! `occurred_at + max_duration` if the event is not ended by then (the recording stops there,
//! post-roll included). It is cut from whole segments: it starts on the keyframe at or before its
//! window's start and ends with the first segment that reaches its window's end.

use camrec_shared::messages::StopCause;
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// How far a clip's first frame may lie after its window's start before the playback says the
/// capture did not hold it (`startedLate`), and the smallest hole between segments reported as a
/// gap: wall-clock times of segments carry a delivery jitter of tens of milliseconds.
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// One event's clip window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub occurred_at: DateTime<Utc>,
    pub pre_roll: Duration,
    pub post_roll: Duration,
    pub max_duration: Duration,
}

impl Window {
    /// The first instant the clip should hold.
    pub fn start(&self) -> DateTime<Utc> {
        self.occurred_at - delta(self.pre_roll)
    }

    /// When the recording stops if the event is not ended first.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.occurred_at + delta(self.max_duration)
    }

    /// The last instant the clip should hold, and why, once the event `ended_at` (None while it
    /// is open, in which case the deadline applies).
    pub fn end(&self, ended_at: Option<DateTime<Utc>>) -> (DateTime<Utc>, StopCause) {
        let deadline = self.deadline();
        match ended_at {
            Some(at) if at + delta(self.post_roll) < deadline => (
                at.max(self.occurred_at) + delta(self.post_roll),
                StopCause::EventEnded,
            ),
            _ => (deadline, StopCause::MaxDuration),
        }
    }

    /// Whether a clip whose first frame is at `first_frame` lacks part of its pre-roll.
    pub fn started_late(&self, first_frame: DateTime<Utc>) -> bool {
        first_frame > self.start() + delta(TOLERANCE)
    }
}

/// Whether a segment `[start, end)` belongs in a clip from `from` to `until` (None: still open).
pub fn wanted(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> bool {
    end > from && until.is_none_or(|u| start < u)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + sec, 0).unwrap()
    }

    fn window() -> Window {
        Window {
            occurred_at: t(100),
            pre_roll: Duration::from_secs(5),
            post_roll: Duration::from_secs(3),
            max_duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_window_runs_from_pre_roll_to_post_roll() {
        let w = window();
        assert_eq!(w.start(), t(95));
        assert_eq!(w.end(Some(t(110))), (t(113), StopCause::EventEnded));
        assert_eq!(w.deadline(), t(160));
    }

    #[test]
    fn max_duration_ends_an_open_or_long_event() {
        let w = window();
        assert_eq!(w.end(None), (t(160), StopCause::MaxDuration));
        assert_eq!(w.end(Some(t(158))), (t(160), StopCause::MaxDuration));
    }

    #[test]
    fn an_end_before_the_moment_still_gets_its_post_roll() {
        // An event ended (by its sender's clock) before its own occurredAt: the clip still
        // covers pre-roll and post-roll around the moment.
        assert_eq!(window().end(Some(t(90))), (t(103), StopCause::EventEnded));
    }

    #[test]
    fn a_clip_lacks_pre_roll_only_beyond_the_tolerance() {
        let w = window();
        assert!(!w.started_late(t(94)));
        assert!(
            !w.started_late(t(96)),
            "within a second of the window's start"
        );
        assert!(w.started_late(t(97)));
    }

    #[test]
    fn segments_are_wanted_while_they_overlap_the_window() {
        assert!(wanted(t(94), t(96), t(95), None), "holds the start");
        assert!(!wanted(t(93), t(95), t(95), None), "ends at the start");
        assert!(
            wanted(t(112), t(114), t(95), Some(t(113))),
            "reaches the end"
        );
        assert!(
            !wanted(t(113), t(115), t(95), Some(t(113))),
            "after the end"
        );
    }
}
