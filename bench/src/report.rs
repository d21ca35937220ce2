//! The results table: one row per figure with camrec's value, the baseline measured in the same
//! run, their ratio, the goal and whether it was met; rendered as a Markdown table for the
//! terminal and for BENCHMARKS.md (with the machine's description and the command). A goal is
//! either absolute (a capacity: P1, P2) or a ratio to the baseline (P3 .. P5).

use crate::machine::Machine;
use std::fmt::{self, Write as _};

/// The unit of a measured value; decides how it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Requests (or transactions, or messages) per second.
    PerSec,
    Seconds,
    /// Percent of one core.
    CpuPercent,
    /// CPU time, in seconds.
    CpuSeconds,
    MiB,
    /// Bytes per second, shown in KiB/s.
    BytesPerSec,
    /// A plain number (sessions, cameras per core).
    Count,
}

/// One measured value, with optional context printed beside it (e.g. latency percentiles).
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub value: f64,
    pub unit: Unit,
    pub detail: Option<String>,
    /// The p99 latency of the requests behind a rate, in seconds, for a goal that bounds it.
    pub p99_sec: Option<f64>,
}

impl Cell {
    pub fn new(value: f64, unit: Unit) -> Self {
        Self {
            value,
            unit,
            detail: None,
            p99_sec: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_p99(mut self, p99: std::time::Duration) -> Self {
        self.p99_sec = Some(p99.as_secs_f64());
        self
    }
}

/// Formats seconds as `ms` below ten seconds (negative ones too), else as `s`.
pub fn fmt_secs(s: f64) -> String {
    if s.abs() < 10.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Unit::PerSec => write!(f, "{:.0}/s", self.value)?,
            Unit::Seconds => f.write_str(&fmt_secs(self.value))?,
            Unit::CpuPercent => write!(f, "{:.2}% CPU", self.value)?,
            Unit::CpuSeconds => write!(f, "{} CPU", fmt_secs(self.value))?,
            Unit::MiB => write!(f, "{:.1} MiB", self.value)?,
            Unit::BytesPerSec => write!(f, "{:.0} KiB/s", self.value / 1024.0)?,
            Unit::Count if self.value.fract() == 0.0 => write!(f, "{:.0}", self.value)?,
            Unit::Count => write!(f, "{:.1}", self.value)?,
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// What a figure must reach: an absolute figure of camrec's, or a ratio camrec / baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// camrec's rate (per second) >= x.
    RateAtLeast(f64),
    /// camrec's rate >= `per_sec` with its requests' p99 <= `p99_sec`.
    RateAndP99 { per_sec: f64, p99_sec: f64 },
    /// camrec's time (seconds) <= x.
    SecondsAtMost(f64),
    /// camrec's count <= x.
    CountAtMost(f64),
    /// camrec within this fraction of the baseline (an expected value): |ratio - 1| <= x.
    Within(f64),
    /// Lower is better: ratio <= x.
    AtMost(f64),
    /// Higher is better: ratio >= x.
    AtLeast(f64),
    /// Lower is better: ratio <= x and camrec's value below `secs` seconds.
    AtMostAndUnder { ratio: f64, secs: f64 },
    /// Reported for context; no goal.
    Info,
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::RateAtLeast(x) => write!(f, "≥ {x}/s"),
            Goal::RateAndP99 { per_sec, p99_sec } => {
                write!(f, "≥ {per_sec}/s and p99 ≤ {}", fmt_secs(*p99_sec))
            }
            Goal::SecondsAtMost(x) => write!(f, "≤ {}", fmt_secs(*x)),
            Goal::CountAtMost(x) => write!(f, "≤ {x}"),
            Goal::Within(x) => write!(f, "within ±{:.0}%", x * 100.0),
            Goal::AtMost(x) => write!(f, "≤ {x}×"),
            Goal::AtLeast(x) => write!(f, "≥ {x}×"),
            Goal::AtMostAndUnder { ratio, secs } => write!(f, "≤ {ratio}× and < {secs} s"),
            Goal::Info => f.write_str("-"),
        }
    }
}

/// The outcome of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    Info,
    /// The measurement itself failed (the row's figure says why).
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::Error => "ERROR",
        })
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// `P1` .. `P6`.
    pub id: &'static str,
    pub figure: String,
    pub camrec: Option<Cell>,
    pub baseline: Option<Cell>,
    pub goal: Goal,
}

impl Row {
    pub fn new(id: &'static str, figure: impl Into<String>, camrec: Cell, goal: Goal) -> Self {
        Self {
            id,
            figure: figure.into(),
            camrec: Some(camrec),
            baseline: None,
            goal,
        }
    }

    pub fn against(mut self, baseline: Cell) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// A row for a measurement that could not be made.
    pub fn error(id: &'static str, what: &str, error: &anyhow::Error) -> Self {
        let msg = format!("{error:#}").replace(['|', '\n'], " ");
        Self {
            id,
            figure: format!("{what}: failed: {msg}"),
            camrec: None,
            baseline: None,
            goal: Goal::Info,
        }
    }

    /// camrec / baseline, when both exist and are positive (a negative time, a clip that
    /// starts before its event, has no meaningful ratio).
    pub fn ratio(&self) -> Option<f64> {
        let (c, b) = (self.camrec.as_ref()?, self.baseline.as_ref()?);
        (b.value > 0.0 && c.value >= 0.0).then(|| c.value / b.value)
    }

    pub fn verdict(&self) -> Verdict {
        let Some(camrec) = &self.camrec else {
            return Verdict::Error;
        };
        let ok = match (self.goal, self.ratio(), camrec.p99_sec) {
            (Goal::Info, _, _) => return Verdict::Info,
            (Goal::RateAtLeast(x), _, _) => camrec.value >= x,
            (Goal::RateAndP99 { per_sec, p99_sec }, _, Some(p99)) => {
                camrec.value >= per_sec && p99 <= p99_sec
            }
            (Goal::SecondsAtMost(x) | Goal::CountAtMost(x), _, _) => camrec.value <= x,
            (Goal::Within(_), None, _) => return Verdict::Error,
            (Goal::Within(x), Some(r), _) => (r - 1.0).abs() <= x,
            (Goal::RateAndP99 { .. }, _, None) => return Verdict::Error,
            (Goal::AtMost(_) | Goal::AtLeast(_) | Goal::AtMostAndUnder { .. }, None, _) => {
                return Verdict::Error
            }
            (Goal::AtLeast(x), Some(r), _) => r >= x,
            (Goal::AtMost(x), Some(r), _) => r <= x,
            (Goal::AtMostAndUnder { ratio: x, secs }, Some(r), _) => r <= x && camrec.value < secs,
        };
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
}

/// The whole table as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| | figure | camrec | baseline | ratio | goal | result |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let cell = |c: &Option<Cell>| c.as_ref().map_or("-".to_owned(), Cell::to_string);
        let ratio = r.ratio().map_or("-".to_owned(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.figure,
            cell(&r.camrec),
            cell(&r.baseline),
            ratio,
            r.goal,
            r.verdict()
        );
    }
    out
}

/// What a run was: its mode and the command that produced it.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub command: String,
    pub quick: bool,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_sec: f64,
}

/// The text of BENCHMARKS.md: the run, the machine, the table and what each figure measures.
pub fn markdown(run: &RunInfo, machine: &Machine, rows: &[Row]) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        out,
        "Produced by `{}` on {} ({} run, {:.0} s). P1 and P2 have absolute goals, the capacity \
         camrec must have on this machine; P4's goals are absolute too (a clip starts before \
         its event; one RTSP session per camera); P3 and P5 have goals relative to a baseline. \
         Every baseline is measured in the same run on the same machine; the ratio is camrec / \
         baseline (context where the goal is absolute). The machine is shared and noisy.\n",
        run.command,
        run.started_at.format("%Y-%m-%d %H:%M UTC"),
        if run.quick { "quick smoke" } else { "full" },
        run.duration_sec
    );
    out.push_str("## Machine\n\n");
    out.push_str(&machine.markdown());
    out.push_str("\n## Results\n\n");
    out.push_str(&table(rows));
    out.push_str("\n## What each figure measures\n\n");
    out.push_str(METHOD);
    out
}

/// The heading of BENCHMARKS.md's hand-kept section of earlier measurements.
const HISTORY: &str = "\n## History\n";

/// `markdown` followed by the `## History` section of `previous` (the report it replaces), if
/// that has one.
pub fn keep_history(markdown: &str, previous: Option<&str>) -> String {
    match previous.and_then(|p| p.find(HISTORY).map(|at| &p[at..])) {
        Some(history) => format!("{}\n{history}", markdown.trim_end()),
        None => markdown.to_owned(),
    }
}

const METHOD: &str = "\
- **P1** `POST /events` through event-api (release build, C concurrent closed-loop clients, \
each with its own keep-alive HTTP/1.1 connection and the request's bytes built once, as `wrk` \
does, on at most two threads of their own; one admin token) for a camera that records MOTION \
(event, playback and outbox row in one transaction) and does not record ERROR, 10 s per run \
(1 s in the smoke). Goal: MOTION at C=16 sustains at least 500 requests/s with p99 at most \
50 ms (500 requests/s is about 30,000 cameras at one event a minute). The other rows are info. \
Beside each run, `pgbench -n -M prepared -c C -j 2 -T s` runs the same transaction against the \
same database (its SQL mirrors `create_event` and `outbox::enqueue`; its outbox rows are \
published by the relay, as camrec's are): an info baseline and its ratio. Latencies are per \
request (p50 / p99 by nearest rank; pgbench's from its per-transaction log). Each run starts \
with an empty outbox.\n\
- **P2** The outbox relay, two goals. Drain: N `event.created` rows (20,000; 200 in the \
smoke) written with event-api's `outbox::enqueue` in one transaction while the relay runs; \
from the commit until every row is marked published (none dead-lettered), as messages per second; goal at least \
5,000/s. Info baseline: the same payloads published with async-nats to the same stream (async \
publishes, 256 in flight, every ack awaited), and the ratio. Lag: `POST /events` (MOTION) at a \
steady 200 per second for 20 s (2 s in the smoke), each request sent at its due time whatever \
the previous answers did; for each event, from the request's send to the time JetStream stored \
its `event.created` message (the stream message's timestamp; the ack to the relay follows at \
once), on this host's wall clock; goal p99 at most 50 ms. The event commits between the send \
and the answer, so the figure is an upper bound of the lag from commit, by at most the \
request's own time, which the row prints.\n\
- **P3** From `POST /events/:id/end` to the `playback.completed` message (the worker waits until \
the capture has written the event's end: the whole fragments, of at most 0.2 s, of the segment \
being written that reach it; the clip's MP4 was assembled in the store while it recorded, so \
what remains is its first part with the index, its tail and the multipart completion, probing \
the first segment and a thumbnail, and the closed segment list), for a clip of 10 s \
(median of 3), 60 s and 600 s (4 s in the smoke; each plus the camera's 5 s pre-roll, recorded \
in wall time; the \
bench's cameras have `postRollSec` 0, so no post-roll is waited for); goal at most 1 s at any \
length (issue 17). Baseline: `ffprobe -print_format json` of the same final file plus an \
object_store upload of it to the same S3 server: what joining and uploading at the end costs at \
least.\n\
- **P7** Upload while recording (issue 17): 4 cameras record at once (one `MOTION` event each; \
1 camera and 5 s in the smoke); over 30 s from when all report `recording`, the bytes of the \
segments that started in the window and that the worker has stored under the playbacks' live \
prefixes by its end, per second. Baseline: a plain uploader in the bench that polls the same \
cameras' capture directories every 100 ms and puts each new segment file with one object_store \
`put` (to another prefix of the same S3 server), counted the same way. Both are bounded by what \
the cameras produce, so the ratio says whether camrec's uploads keep pace with capture as a \
plain upload of the same bytes does; goal at least 0.8×.\n\
- **P4** Event to the first frame of its clip, for every event the figure makes on a captured \
camera (`preRollSec` 5; each camera captured for longer than that first): `startedAt` of the \
`playback.completed` message (the wall-clock time of the clip's first frame, from the capture) \
minus the event's `occurredAt` (from the answer to `POST /events`); goal: at most 0 ms for every \
event (the clip starts before its event; about -preRollSec, to within a keyframe interval). \
The events: 1, 2 and 5 overlapping on one camera, then (full run) rounds of one event on every \
camera at once. Baseline: what an on-demand recorder pays, a fresh FFmpeg with the capture's \
own argv (`segment_argv`) on the same camera, from spawn to its first frame (the wall-clock \
time FFmpeg lists its first segment, minus that segment's media duration), median of several. \
The session rows count RTSP connections at the fake camera while 1, 2 and 5 events overlap on \
it (the peak since the round began, the capture's own included); goal 1.\n\
- **P5** The cost of capture, in steady state with no event: CPU and proportional memory \
(PSS, from `/proc/<pid>/smaps_rollup`, so shared libraries count once across the processes \
that map them) of recorder-worker and all its children (one FFmpeg per camera) while it \
captures N cameras, sampled from /proc every 250 ms and divided by N; CPU is `utime + stime` \
plus `cutime + cstime`, so a child that starts and exits between two samples counts in full \
through its parent. Baseline: N bare FFmpeg processes with the same `segment_argv` arguments \
(stream copy, the same 1 s fMP4 segments) on the same streams, sampled in the same window \
(both sides run at once, so they share the machine's load and the libraries' pages alike), \
after each wrote its first segment and a 2 s settling pause. Cameras per core: 100% divided by \
the CPU per camera. Ring disk: the bytes of the segment files in \
`RECORD_DIR/_capture/<camera_id>/` per camera (mean over the window's samples) against the \
bitrate (the bare FFmpegs' segment bytes over their media duration) times the ring length \
(`preRollSec` + `RING_MARGIN_SEC`); goal within 10%.\n\
- **P6** From a `playback.progress` status published to PLAYBACKS (ack awaited) until `GET \
/playbacks/:id` shows it (polled every 5 ms), p50 / p99.\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn row(goal: Goal, camrec: f64, baseline: f64) -> Row {
        Row::new("P1", "x", Cell::new(camrec, Unit::PerSec), goal)
            .against(Cell::new(baseline, Unit::PerSec))
    }

    #[test]
    fn verdicts_follow_the_goal() {
        assert_eq!(
            row(Goal::RateAtLeast(5000.0), 5000.0, 1e5).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            row(Goal::RateAtLeast(5000.0), 4999.0, 1.0).verdict(),
            Verdict::Miss
        );
        let capacity = Goal::RateAndP99 {
            per_sec: 500.0,
            p99_sec: 0.05,
        };
        let with_p99 = |rate: f64, ms: u64| {
            let mut r = row(capacity, rate, 1.0);
            r.camrec = r
                .camrec
                .map(|c| c.with_p99(std::time::Duration::from_millis(ms)));
            r.verdict()
        };
        assert_eq!(with_p99(600.0, 50), Verdict::Pass);
        assert_eq!(with_p99(600.0, 51), Verdict::Miss);
        assert_eq!(with_p99(499.0, 10), Verdict::Miss);
        assert_eq!(
            row(capacity, 600.0, 1.0).verdict(),
            Verdict::Error,
            "no p99"
        );
        assert_eq!(
            row(Goal::SecondsAtMost(0.05), 0.04, 0.0).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            row(Goal::SecondsAtMost(0.05), 0.06, 0.0).verdict(),
            Verdict::Miss
        );
        assert_eq!(row(Goal::AtMost(1.1), 1.0, 1.0).verdict(), Verdict::Pass);
        assert_eq!(row(Goal::AtMost(1.1), 1.2, 1.0).verdict(), Verdict::Miss);
        let both = Goal::AtMostAndUnder {
            ratio: 1.2,
            secs: 1.0,
        };
        assert_eq!(row(both, 0.9, 0.8).verdict(), Verdict::Pass);
        assert_eq!(row(both, 1.1, 1.0).verdict(), Verdict::Miss);
        assert_eq!(row(Goal::Info, 1.0, 0.0).verdict(), Verdict::Info);
        assert_eq!(
            row(Goal::CountAtMost(1.0), 1.0, 0.0).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            row(Goal::CountAtMost(1.0), 2.0, 0.0).verdict(),
            Verdict::Miss
        );
        assert_eq!(row(Goal::Within(0.1), 1.09, 1.0).verdict(), Verdict::Pass);
        assert_eq!(row(Goal::Within(0.1), 0.89, 1.0).verdict(), Verdict::Miss);
        assert_eq!(row(Goal::Within(0.1), 1.0, 0.0).verdict(), Verdict::Error);
        assert_eq!(
            row(Goal::SecondsAtMost(0.0), -4.9, 1.8).verdict(),
            Verdict::Pass,
            "a negative time passes and has no ratio"
        );
        assert_eq!(row(Goal::SecondsAtMost(0.0), -4.9, 1.8).ratio(), None);
        assert_eq!(row(Goal::AtMost(1.1), 1.0, 0.0).verdict(), Verdict::Error);
    }

    #[test]
    fn failed_measurements_render_as_errors_in_one_line() {
        let r = Row::error("P3", "60 s clip", &anyhow::anyhow!("a | b\nc"));
        assert_eq!(r.verdict(), Verdict::Error);
        let t = table(&[r]);
        assert_eq!(t.lines().count(), 3);
        assert!(t.contains("60 s clip: failed: a   b c"), "{t}");
    }

    #[test]
    fn a_new_report_keeps_the_history_of_the_old() {
        let old = "# Benchmarks\n\n## Results\nold\n\n## History\n\n### day 1\nfigures\n";
        let new = "# Benchmarks\n\n## Results\nnew\n";
        assert_eq!(
            keep_history(new, Some(old)),
            "# Benchmarks\n\n## Results\nnew\n\n## History\n\n### day 1\nfigures\n"
        );
        assert_eq!(keep_history(new, Some("# Benchmarks\nno history\n")), new);
        assert_eq!(keep_history(new, None), new);
    }

    #[test]
    fn cells_and_ratios_print_readably() {
        let r = row(Goal::RateAtLeast(1000.0), 1500.0, 3000.0);
        let t = table(&[r]);
        assert!(
            t.contains("| 1500/s | 3000/s | 0.50× | ≥ 1000/s | pass |"),
            "{t}"
        );
        let capacity = Goal::RateAndP99 {
            per_sec: 500.0,
            p99_sec: 0.05,
        };
        assert_eq!(capacity.to_string(), "≥ 500/s and p99 ≤ 50.0 ms");
        assert_eq!(Goal::SecondsAtMost(0.05).to_string(), "≤ 50.0 ms");
        let c = Cell::new(0.0123, Unit::Seconds).with_detail("p99 40.0 ms");
        assert_eq!(c.to_string(), "12.3 ms (p99 40.0 ms)");
        assert_eq!(Cell::new(61.5, Unit::Seconds).to_string(), "61.50 s");
        assert_eq!(Cell::new(1.234, Unit::CpuPercent).to_string(), "1.23% CPU");
        assert_eq!(Cell::new(20.0, Unit::MiB).to_string(), "20.0 MiB");
        assert_eq!(Cell::new(-4.95, Unit::Seconds).to_string(), "-4950.0 ms");
        assert_eq!(Cell::new(1.0, Unit::Count).to_string(), "1");
        assert_eq!(Cell::new(87.34, Unit::Count).to_string(), "87.3");
        assert_eq!(Goal::Within(0.1).to_string(), "within ±10%");
    }
}
