//! camrec's benchmark harness: starts the whole system on loopback ([`rig`]), measures the seven
//! figures ([`p1`] .. [`p7`]): P1 and P2 against absolute capacity goals, P4 against absolute
//! goals beside an on-demand recorder's first frame, P3, P5 and P7 against a baseline measured in
//! the same run (the baselines in [`baseline`] and [`pgbench`], which P1 and P2 print as info),
//! and renders one table ([`report`]) with the machine's description ([`machine`]).
//!
//! Run it with `cargo run --release --bin bench -- [--quick] [--out FILE] [--only P1,P4]`.
//! Figures run in the order P4, P3, P7, P5 (clips cut from the worker's captures, then the
//! captures' own cost), P6, P1, P2 (the load figures last, so their outbox rows and events do not weigh on
//! the clips'). The worker captures the cameras of its site throughout. A figure whose
//! measurement fails becomes an `ERROR` row; the others still run.

pub mod api;
pub mod baseline;
pub mod ctx;
pub mod load;
pub mod machine;
pub mod p1;
pub mod p2;
pub mod p3;
pub mod p4;
pub mod p5;
pub mod p6;
pub mod p7;
pub mod pgbench;
pub mod procstat;
pub mod report;
pub mod rig;
pub mod stats;

use ctx::{Ctx, Plan};
use report::{Row, RunInfo, Verdict};
use std::path::PathBuf;
use std::time::Instant;

/// The figures, in the order they run.
pub const FIGURES: [&str; 7] = ["P4", "P3", "P7", "P5", "P6", "P1", "P2"];

/// A command line that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("unknown figure {0} (known: P1 .. P7)")]
    UnknownFigure(String),
    #[error("unknown argument {0}")]
    Unknown(String),
}

pub const USAGE: &str = "usage: bench [--quick] [--out FILE] [--only P1,P2,...] [--logs DIR]\n\
  --quick   a smoke: every figure once with tiny counts (about a minute)\n\
  --out     where to write the Markdown report (default: BENCHMARKS.md in the workspace for a\n\
            full run, no file for --quick or --only)\n\
  --only    run only these figures\n\
  --logs    where the services write their logs (default: a new directory under /tmp)";

/// The command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub out: Option<PathBuf>,
    pub only: Option<Vec<String>>,
    pub log_dir: PathBuf,
    /// The arguments as given, for the report's command line.
    pub args: Vec<String>,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, UsageError> {
        let args: Vec<String> = args.into_iter().collect();
        let (mut quick, mut out, mut only, mut log_dir) = (false, None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--out" => {
                    out = Some(PathBuf::from(
                        it.next().ok_or(UsageError::MissingValue("--out"))?,
                    ))
                }
                "--logs" => {
                    log_dir = Some(PathBuf::from(
                        it.next().ok_or(UsageError::MissingValue("--logs"))?,
                    ))
                }
                "--only" => {
                    let list = it.next().ok_or(UsageError::MissingValue("--only"))?;
                    let figures: Vec<String> = list
                        .split(',')
                        .map(|f| f.trim().to_ascii_uppercase())
                        .collect();
                    if let Some(bad) = figures.iter().find(|f| !FIGURES.contains(&f.as_str())) {
                        return Err(UsageError::UnknownFigure(bad.clone()));
                    }
                    only = Some(figures);
                }
                other => return Err(UsageError::Unknown(other.to_owned())),
            }
        }
        // Only a full run replaces BENCHMARKS.md: a --quick or --only run is not the report.
        if out.is_none() && !quick && only.is_none() {
            out = Some(testkit::workspace_root().join("BENCHMARKS.md"));
        }
        let log_dir = log_dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "camrec-bench-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S")
            ))
        });
        Ok(Self {
            quick,
            out,
            only,
            log_dir,
            args,
        })
    }

    fn runs(&self, figure: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|f| f == figure))
    }
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// The BENCHMARKS.md text.
    pub markdown: String,
}

impl Outcome {
    /// True when no measurement failed (misses are results, not failures).
    pub fn measured_everything(&self) -> bool {
        self.rows.iter().all(|r| r.verdict() != Verdict::Error)
    }
}

/// Starts the rig, measures the selected figures and renders the report.
pub async fn run(opts: &Options) -> anyhow::Result<Outcome> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    let plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let rig = rig::Rig::start(plan.p5_cameras.max(1), plan.ring_margin_sec, &opts.log_dir).await?;
    tracing::info!(logs = %opts.log_dir.display(), "the system is up");
    let ctx = Ctx::new(plan, rig).await?;
    let postgres: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&ctx.db)
        .await?;
    let machine = machine::Machine::describe(&postgres);
    let mut rows = Vec::new();
    for figure in FIGURES.into_iter().filter(|f| opts.runs(f)) {
        rows.extend(match figure {
            "P1" => p1::run(&ctx).await,
            "P2" => p2::run(&ctx).await,
            "P3" => p3::run(&ctx).await,
            "P4" => p4::run(&ctx).await,
            "P5" => p5::run(&ctx).await,
            "P7" => p7::run(&ctx).await,
            _ => p6::run(&ctx).await,
        });
    }
    ctx.db.close().await;
    ctx.rig.shutdown().await;
    rows.sort_by_key(|r| r.id);
    let mut command = String::from(if cfg!(debug_assertions) {
        "cargo run --bin bench --"
    } else {
        "cargo run --release --bin bench --"
    });
    for a in &opts.args {
        command.push(' ');
        command.push_str(a);
    }
    let info = RunInfo {
        command,
        quick: opts.quick,
        started_at,
        duration_sec: clock.elapsed().as_secs_f64(),
    };
    let markdown = report::markdown(&info, &machine, &rows);
    Ok(Outcome { rows, markdown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, UsageError> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_the_command_line() {
        let full = parse(&[]).unwrap();
        assert!(!full.quick && full.out.unwrap().ends_with("BENCHMARKS.md"));
        let quick = parse(&["--quick"]).unwrap();
        assert!(quick.quick && quick.out.is_none());
        assert!(parse(&["--only", "P2"]).unwrap().out.is_none());
        let some = parse(&["--quick", "--out", "x.md", "--only", "p1,P6"]).unwrap();
        assert_eq!(some.out, Some(PathBuf::from("x.md")));
        assert!(some.runs("P1") && some.runs("P6") && !some.runs("P2"));
        assert!(matches!(
            parse(&["--only", "P8"]),
            Err(UsageError::UnknownFigure(_))
        ));
        assert!(matches!(
            parse(&["--out"]),
            Err(UsageError::MissingValue("--out"))
        ));
        assert!(matches!(parse(&["--fast"]), Err(UsageError::Unknown(_))));
    }
}
