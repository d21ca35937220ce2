//! The coverage check (issue 16): does every completed clip hold the moment that triggered it?
//!
//! A clip should cover `[occurredAt - preRollSec, end + postRollSec]`, `end` being the event's
//! end (or `occurredAt + MAX_RECORDING_SEC` when that comes first). For every `COMPLETED`
//! playback of an acknowledged event the checker reads the playback's `startedAt`, `endedAt`
//! and `gaps` (the capture's wall clock), downloads the clip and probes its duration (the file's
//! own timestamps), and requires:
//! - **start**: `startedAt ≤ occurredAt - preRollSec + one keyframe interval` (a clip starts on the
//!   keyframe at or before its window's start, so it may begin up to one interval late only when
//!   the capture's segment boundaries say so);
//! - **end**: `endedAt ≥ end + postRollSec - 0.5 s`;
//! - **file**: `endedAt - startedAt` agrees with the file's duration within one keyframe interval
//!   plus the gaps (a gap is skipped in the file, not filled).
//!
//! The lead (`startedAt - (occurredAt - preRollSec)`, negative: the clip starts early) and the
//! tail (`endedAt - (end + postRollSec)`, positive: the clip runs longer) are reported as
//! distributions.

use crate::api::{PlaybackView, Rolls};
use chrono::{DateTime, TimeDelta, Utc};
use std::fmt;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// How far the end may fall short of `end + postRollSec`.
pub const END_SLACK: Duration = Duration::from_millis(500);

/// What a clip is measured against.
#[derive(Clone, Copy, Debug)]
pub struct Expectation {
    pub rolls: Rolls,
    /// The camera's keyframe interval (the fake camera: `key-int-max = fps`, one second).
    pub keyframe: Duration,
    /// event-api's `MAX_RECORDING_SEC`: the window ends there if the event is not ended before.
    pub max_duration: Duration,
}

impl Expectation {
    /// The lab's fake cameras (one keyframe a second) with `rolls` and `max_duration`.
    pub fn lab(rolls: Rolls, max_duration: Duration) -> Self {
        Self {
            rolls,
            keyframe: Duration::from_secs(1),
            max_duration,
        }
    }

    /// The window `[start, end]` a clip of an event at `occurred_at`, ended at `ended_at`,
    /// should cover.
    pub fn window(
        &self,
        occurred_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let pre = secs(self.rolls.pre_sec);
        let post = secs(self.rolls.post_sec);
        let deadline = occurred_at + delta(self.max_duration);
        let end = (ended_at.max(occurred_at) + post).min(deadline);
        (occurred_at - pre, end)
    }
}

/// One completed clip, measured.
#[derive(Clone, Debug)]
pub struct ClipCoverage {
    pub playback_id: Uuid,
    /// `startedAt - (occurredAt - preRollSec)`, seconds (≤ 0: the clip holds the whole pre-roll).
    pub lead_sec: f64,
    /// `endedAt - (end + postRollSec)`, seconds (≥ 0: the clip holds the whole post-roll).
    pub tail_sec: f64,
    /// `endedAt - startedAt`, seconds.
    pub wall_sec: f64,
    /// The downloaded file's probed duration, seconds.
    pub file_sec: f64,
    /// The sum of the playback's gaps, seconds.
    pub gaps_sec: f64,
    pub gap_count: usize,
    pub started_late: bool,
}

/// Why a clip fails the check.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// The clip starts after its window's start plus one keyframe interval.
    StartsLate { lead_sec: f64 },
    /// The clip ends before its window's end minus [`END_SLACK`].
    EndsEarly { tail_sec: f64 },
    /// `endedAt - startedAt` and the file's duration disagree by more than a keyframe interval
    /// plus the gaps.
    FileDisagrees { wall_sec: f64, file_sec: f64 },
    /// The playback lacks what the check needs (its event's moment or end, its times).
    Unmeasurable(String),
    /// The clip could not be downloaded or probed.
    Unreadable(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StartsLate { lead_sec } => {
                write!(f, "starts {lead_sec:+.3} s from its window's start")
            }
            Violation::EndsEarly { tail_sec } => {
                write!(f, "ends {tail_sec:+.3} s from its window's end")
            }
            Violation::FileDisagrees { wall_sec, file_sec } => write!(
                f,
                "endedAt - startedAt {wall_sec:.3} s, file {file_sec:.3} s"
            ),
            Violation::Unmeasurable(why) => write!(f, "unmeasurable: {why}"),
            Violation::Unreadable(why) => write!(f, "clip unreadable: {why}"),
        }
    }
}

/// Measures a `COMPLETED` playback whose clip's probed duration is `file_sec`.
pub fn measure(
    p: &PlaybackView,
    file_sec: f64,
    expect: &Expectation,
) -> Result<ClipCoverage, Violation> {
    let missing = |what: &str| Violation::Unmeasurable(format!("no {what}"));
    let event = p.event.as_ref().ok_or_else(|| missing("event"))?;
    let occurred_at = event.occurred_at.ok_or_else(|| missing("occurredAt"))?;
    let event_end = event.ended_at.ok_or_else(|| missing("event endedAt"))?;
    let started_at = p.started_at.ok_or_else(|| missing("startedAt"))?;
    let ended_at = p.ended_at.ok_or_else(|| missing("endedAt"))?;
    let (from, until) = expect.window(occurred_at, event_end);
    Ok(ClipCoverage {
        playback_id: p.id,
        lead_sec: (started_at - from).as_seconds_f64(),
        tail_sec: (ended_at - until).as_seconds_f64(),
        wall_sec: (ended_at - started_at).as_seconds_f64(),
        file_sec,
        gaps_sec: p.gaps.iter().map(crate::api::Gap::seconds).sum(),
        gap_count: p.gaps.len(),
        started_late: p.started_late,
    })
}

/// The rules of the module documentation, applied to one measured clip.
pub fn judge(c: &ClipCoverage, expect: &Expectation) -> Vec<Violation> {
    let keyframe = expect.keyframe.as_secs_f64();
    let mut out = Vec::new();
    if c.lead_sec > keyframe {
        out.push(Violation::StartsLate {
            lead_sec: c.lead_sec,
        });
    }
    if c.tail_sec < -END_SLACK.as_secs_f64() {
        out.push(Violation::EndsEarly {
            tail_sec: c.tail_sec,
        });
    }
    if (c.wall_sec - c.file_sec).abs() > keyframe + c.gaps_sec {
        out.push(Violation::FileDisagrees {
            wall_sec: c.wall_sec,
            file_sec: c.file_sec,
        });
    }
    out
}

/// The clip file's duration as ffprobe reads it from the file's own timestamps.
pub async fn probe_duration(file: &Path) -> Result<f64, String> {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration"])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .arg(file)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ffprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!("ffprobe exited {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("ffprobe printed no duration ({:?})", text.trim()))
}

/// Summary statistics of a set of seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Distribution {
    pub n: usize,
    pub min: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
    pub mean: f64,
}

impl Distribution {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            n: v.len(),
            min: v[0],
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n {} min {:+.3} p10 {:+.3} p50 {:+.3} p90 {:+.3} max {:+.3} mean {:+.3}",
            self.n, self.min, self.p10, self.p50, self.p90, self.max, self.mean
        )
    }
}

/// The coverage of a run's completed clips.
#[derive(Clone, Debug, Default)]
pub struct CoverageReport {
    pub rolls: Option<Rolls>,
    pub clips: Vec<ClipCoverage>,
    pub violations: Vec<(Uuid, Violation)>,
}

impl CoverageReport {
    /// Completed clips looked at (measured or not).
    pub fn checked(&self) -> usize {
        self.clips.len()
            + self
                .violations
                .iter()
                .filter(|(_, v)| matches!(v, Violation::Unmeasurable(_) | Violation::Unreadable(_)))
                .count()
    }

    /// Clips that pass every rule.
    pub fn passing(&self) -> usize {
        let failed: std::collections::BTreeSet<Uuid> =
            self.violations.iter().map(|(id, _)| *id).collect();
        self.checked() - failed.len()
    }

    pub fn lead(&self) -> Distribution {
        Distribution::of(self.clips.iter().map(|c| c.lead_sec))
    }

    pub fn tail(&self) -> Distribution {
        Distribution::of(self.clips.iter().map(|c| c.tail_sec))
    }

    /// `(endedAt - startedAt) - gaps - file duration`.
    pub fn file_residual(&self) -> Distribution {
        Distribution::of(
            self.clips
                .iter()
                .map(|c| c.wall_sec - c.gaps_sec - c.file_sec),
        )
    }

    /// The rows of the checker's table.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        if let Some(r) = self.rolls {
            rows.push((
                "coverage: preRollSec / postRollSec".into(),
                format!("{} / {}", r.pre_sec, r.post_sec),
            ));
        }
        let pct = if self.checked() > 0 {
            100.0 * self.passing() as f64 / self.checked() as f64
        } else {
            0.0
        };
        rows.push((
            "COVERAGE: clips within window".into(),
            format!("{} of {} ({pct:.1}%)", self.passing(), self.checked()),
        ));
        rows.push((
            "  startedAt - (occurredAt - pre) s".into(),
            self.lead().to_string(),
        ));
        rows.push(("  endedAt - (end + post) s".into(), self.tail().to_string()));
        rows.push((
            "  wall - gaps - file duration s".into(),
            self.file_residual().to_string(),
        ));
        let late = self.clips.iter().filter(|c| c.started_late).count();
        let gapped = self.clips.iter().filter(|c| c.gap_count > 0).count();
        rows.push((
            "  startedLate / with gaps".into(),
            format!("{late} / {gapped}"),
        ));
        rows
    }
}

fn secs(s: u32) -> TimeDelta {
    TimeDelta::seconds(i64::from(s))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Gap, NestedEvent};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn expect() -> Expectation {
        Expectation::lab(
            Rolls {
                pre_sec: 3,
                post_sec: 2,
            },
            Duration::from_secs(40),
        )
    }

    /// An event at 10 s ended at 20 s; a clip from `start` to `end` (ms), with `gaps`.
    fn playback(start: i64, end: i64, gaps: &[(i64, i64)]) -> PlaybackView {
        PlaybackView {
            id: Uuid::new_v4(),
            recording_status: "COMPLETED".into(),
            file_size_bytes: Some(1),
            duration_sec: None,
            error_code: None,
            event: Some(NestedEvent {
                id: Uuid::new_v4(),
                occurred_at: Some(t(10_000)),
                ended_at: Some(t(20_000)),
            }),
            started_at: Some(t(start)),
            ended_at: Some(t(end)),
            gaps: gaps
                .iter()
                .map(|(a, b)| Gap {
                    from: t(*a),
                    to: t(*b),
                })
                .collect(),
            started_late: false,
            partial: false,
        }
    }

    #[test]
    fn the_window_is_pre_roll_to_post_roll_capped_by_the_max_duration() {
        let e = expect();
        assert_eq!(e.window(t(10_000), t(20_000)), (t(7_000), t(22_000)));
        assert_eq!(e.window(t(10_000), t(5_000)), (t(7_000), t(12_000)));
        assert_eq!(e.window(t(10_000), t(60_000)), (t(7_000), t(50_000)));
    }

    #[test]
    fn a_clip_covering_its_window_passes() {
        let e = expect();
        let c = measure(&playback(6_400, 22_300, &[]), 15.9, &e).unwrap();
        assert!((c.lead_sec + 0.6).abs() < 1e-9);
        assert!((c.tail_sec - 0.3).abs() < 1e-9);
        assert!(judge(&c, &e).is_empty());
        // Up to a keyframe interval late at the start, half a second short at the end.
        let c = measure(&playback(8_000, 21_500, &[]), 13.5, &e).unwrap();
        assert!(judge(&c, &e).is_empty());
    }

    #[test]
    fn a_late_start_a_short_end_and_a_wrong_file_are_each_caught() {
        let e = expect();
        let c = measure(&playback(8_100, 21_400, &[]), 10.0, &e).unwrap();
        let v = judge(&c, &e);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(matches!(v[0], Violation::StartsLate { .. }));
        assert!(matches!(v[1], Violation::EndsEarly { .. }));
        assert!(matches!(v[2], Violation::FileDisagrees { .. }));
    }

    #[test]
    fn a_gap_excuses_a_shorter_file_by_its_length() {
        let e = expect();
        let p = playback(7_000, 22_000, &[(12_000, 22_000 - 5_000)]);
        let c = measure(&p, 10.2, &e).unwrap();
        assert_eq!(c.gap_count, 1);
        assert!((c.gaps_sec - 5.0).abs() < 1e-9);
        assert!(judge(&c, &e).is_empty());
        let c = measure(&p, 8.5, &e).unwrap();
        assert!(matches!(
            judge(&c, &e)[..],
            [Violation::FileDisagrees { .. }]
        ));
    }

    #[test]
    fn a_playback_without_times_is_unmeasurable() {
        let mut p = playback(7_000, 22_000, &[]);
        p.started_at = None;
        assert!(matches!(
            measure(&p, 15.0, &expect()),
            Err(Violation::Unmeasurable(_))
        ));
    }

    #[test]
    fn distributions_are_read_from_sorted_values() {
        let d = Distribution::of((0..=10).rev().map(f64::from));
        assert_eq!(
            (d.n, d.min, d.p10, d.p50, d.p90, d.max),
            (11, 0.0, 1.0, 5.0, 9.0, 10.0)
        );
        assert!((d.mean - 5.0).abs() < 1e-9);
        assert_eq!(Distribution::of([]), Distribution::default());
    }
}
