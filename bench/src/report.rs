//! The results table: one row per figure with camrec's value, the baseline measured in the same
//! run, their ratio, the goal and whether it was met; rendered as a Markdown table for the
//! terminal and for BENCHMARKS.md (with the machine's description and the command).

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
}

/// One measured value, with optional context printed beside it (e.g. latency percentiles).
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub value: f64,
    pub unit: Unit,
    pub detail: Option<String>,
}

impl Cell {
    pub fn new(value: f64, unit: Unit) -> Self {
        Self {
            value,
            unit,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Formats seconds as `ms` below ten seconds, else as `s`.
pub fn fmt_secs(s: f64) -> String {
    if s < 10.0 {
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
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// What a figure must reach, as a ratio camrec / baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// Higher is better: ratio >= x.
    AtLeast(f64),
    /// Lower is better: ratio <= x.
    AtMost(f64),
    /// Lower is better: ratio <= x and camrec's value below `secs` seconds.
    AtMostAndUnder { ratio: f64, secs: f64 },
    /// Reported for context; no goal.
    Info,
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::AtLeast(x) => write!(f, "≥ {x}×"),
            Goal::AtMost(x) => write!(f, "≤ {x}×"),
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

    /// camrec / baseline, when both exist and the baseline is not zero.
    pub fn ratio(&self) -> Option<f64> {
        let (c, b) = (self.camrec.as_ref()?, self.baseline.as_ref()?);
        (b.value > 0.0).then(|| c.value / b.value)
    }

    pub fn verdict(&self) -> Verdict {
        let Some(camrec) = &self.camrec else {
            return Verdict::Error;
        };
        let ratio = self.ratio();
        let ok = match (self.goal, ratio) {
            (Goal::Info, _) => return Verdict::Info,
            (_, None) => return Verdict::Error,
            (Goal::AtLeast(x), Some(r)) => r >= x,
            (Goal::AtMost(x), Some(r)) => r <= x,
            (Goal::AtMostAndUnder { ratio: x, secs }, Some(r)) => r <= x && camrec.value < secs,
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
        "Produced by `{}` on {} ({} run, {:.0} s). Every figure is measured beside its baseline \
         in the same run on the same machine; the ratio is camrec / baseline. Absolute values \
         are context only: the machine is shared and noisy.\n",
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

const METHOD: &str = "\
- **P1** `POST /events` through event-api (release build, C concurrent clients, each with its \
own keep-alive HTTP/1.1 connection and the request's bytes built once, as `wrk` does, on at most \
two threads of their own, as pgbench's `-j 2`; one admin token) for a camera that records MOTION \
and does not record ERROR; baseline: `pgbench -n -M prepared -c C -j 2 -T s` running the same \
transaction (the camera `SELECT ... FOR SHARE`, the `events` insert and, for MOTION, the \
`playbacks` and outbox inserts plus `pg_notify`) against the same database. pgbench's outbox row \
goes to `bench_outbox`, a copy of `outbox` (same columns, indexes and constraints) that the relay \
does not read, and its notify to a channel nobody listens to: its turn measures the SQL alone, \
while camrec's turn includes the relay publishing camrec's rows (ADR 0014). Latencies are per request (p50 / p99 by nearest rank; \
pgbench's from its per-transaction log). camrec and pgbench take turns: each figure is two \
5-second slices of each, alternated (one slice in the smoke), so that a slower spell of the shared \
machine weighs on both sides of the ratio. The info row `GET /health` is the HTTP hop alone (no \
SQL) at C=1: at C=1 camrec's request is that hop plus pgbench's statements, so when the hop takes \
as long as pgbench's whole transaction, 0.5× at C=1 is out of reach for any server in front of \
the same SQL.\n\
- **P2** A backlog of N `event.created` outbox rows written while NATS is down, then NATS \
restarted: from the first message of the backlog in the EVENTS stream to the last outbox row \
marked published, as messages per second; baseline: the same payloads published with async-nats \
to the same stream (async publishes, 256 in flight, every ack awaited), also right after a NATS \
restart (the first acks after a restart are slow for both). The full run drains three backlogs, \
each followed by the baseline's publish, and takes each side's median rate. Each side starts \
when no autovacuum worker runs, and autovacuum stays off for `events`, `playbacks` and `outbox` \
from before the backlog until its drain is measured: a worker vacuuming after the backlog's \
inserts landed in the sub-second drain and halved it (ADR 0015).\n\
- **P3** From `POST /events/:id/end` to the `playback.completed` message (the worker's report \
after FFmpeg's stop, finalize, probe, upload of clip and thumbnail and verification; ADR 0010: \
FFmpeg finishes the faststart clip itself, the thumbnail is taken while recording and a waiting \
ffprobe reads the clip from a pipe), for a clip of 10 s (median of 3) and of 60 s; \
baseline: `ffprobe -print_format json` of the same final file plus an object_store upload of it \
to the same S3 server.\n\
- **P4** From `POST /events` to the `playback.recording` message (sent at FFmpeg's first progress \
block with frames > 0), median of several events; baseline: a bare FFmpeg with the worker's argv \
on the same camera, from spawn to its first `-progress` block with `frame=` > 0.\n\
- **P5** CPU and resident memory (VmRSS) of recorder-worker and all its children (FFmpegs, \
thumbnails and the ffprobe waiting for the next clip) while it records 10 streams, sampled from \
/proc every 250 ms and divided by 10; CPU is `utime + stime` plus `cutime + cstime`, so a child \
that starts and exits between two samples counts in full through its parent. Baseline: 10 bare \
FFmpeg processes with the worker's argv (part and direct clip, as `DIRECT_CLIP=1`) on the same \
streams. The goal rows are the steady state, what limits how many cameras one host records at \
once: both sides are sampled for 20 s from 2 s after every recording has its first frame and, \
for camrec, its thumbnail (taken 2 s into the recording). The one-off work of a clip is in the \
info row: CPU per clip over its whole life, from `POST /events` to `playback.completed` \
(start, thumbnail, finish, probe, upload) against a bare FFmpeg from spawn to exit, with what \
the steady rate does not explain.\n\
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
            row(Goal::AtLeast(0.5), 60.0, 100.0).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            row(Goal::AtLeast(0.5), 40.0, 100.0).verdict(),
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
        assert_eq!(row(Goal::AtLeast(0.5), 1.0, 0.0).verdict(), Verdict::Error);
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
    fn cells_and_ratios_print_readably() {
        let r = row(Goal::AtLeast(0.5), 1500.0, 3000.0);
        let t = table(&[r]);
        assert!(
            t.contains("| 1500/s | 3000/s | 0.50× | ≥ 0.5× | pass |"),
            "{t}"
        );
        let c = Cell::new(0.0123, Unit::Seconds).with_detail("p99 40.0 ms");
        assert_eq!(c.to_string(), "12.3 ms (p99 40.0 ms)");
        assert_eq!(Cell::new(61.5, Unit::Seconds).to_string(), "61.50 s");
        assert_eq!(Cell::new(1.234, Unit::CpuPercent).to_string(), "1.23% CPU");
        assert_eq!(Cell::new(20.0, Unit::MiB).to_string(), "20.0 MiB");
    }
}
