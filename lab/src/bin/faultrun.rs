//! `faultrun`: one fault-injection run from the command line, the checker's table at the end.
//!
//! ```text
//! cargo run -p lab --release --bin faultrun -- --events 1000 --rate 1 --workers 3 --cameras 4 --seed 1
//! cargo run -p lab --bin faultrun -- --events 30 --rate 1 --workers 2 --cameras 2 --seed 7 \
//!     --faults nats --plant drop-outbox
//! cargo run -p lab --bin faultrun -- --events 120 --rate 0.5 --faults nats-outage \
//!     --stale-playback 15 --nats-outage 30
//! cargo run -p lab --bin faultrun -- --coverage --events 200 --rate 1 --workers 2 --cameras 4 --seed 16
//! cargo run -p lab --release --bin faultrun -- --takeover --seed 1
//! ```
//!
//! `--coverage` is the coverage run of issue 16: cameras with `preRollSec=3`, `postRollSec=2`,
//! every event posted with an `occurredAt` up to 0.5 s before its request, no fault unless
//! `--faults` says otherwise; the checker also measures every completed clip against its window
//! (`lab::coverage`).
//!
//! `--takeover` is the takeover run of issue 17 (`lab::takeover`): 3 workers (`MAX_CAMERAS` 3),
//! 6 cameras, 18 events of 30-60 s at one a second, and 8 s in the worker with the most open
//! recordings is `kill -9`ed and kept down; every recording it had open must be continued by
//! another worker within 1.5 × the capture lease TTL and end `COMPLETED` partial with one gap.
//! Of the other options it takes only `--seed`, `--drain` and `--log-dir`; it prints the
//! checker's table, one line per taken-over playback and a `TAKEOVER SUMMARY` line.
//!
//! The `nats-outage` fault (in `all`) stops NATS for `--nats-outage` seconds (default 180), which
//! must be longer than event-api's `STALE_PLAYBACK_SEC` (`--stale-playback`, default 60).
//!
//! Exit status: 0 the verdict is PASS; 1 the verdict is FAIL (a loss, a stuck playback, a
//! duplicate, a fault not undone or a process outliving its worker); 2 the run could not be
//! carried out. With `--plant`, the expected outcome is 1 with the planted loss reported;
//! 3 means the checker missed the plant (the control run failed).

use anyhow::{bail, Context};
use lab::faults::FaultKind;
use lab::plant::Plant;
use lab::scenario::ScenarioConfig;
use lab::takeover::TakeoverOptions;
use lab::RunOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: faultrun [--events N] [--rate PER_SEC] [--workers K] [--cameras C] \
[--seed S] [--max-cameras M] [--min-duration SEC] [--max-duration SEC] [--drain SEC] \
[--stale-playback SEC] [--nats-outage SEC] \
[--faults all|none|worker,nats,api,s3,pg-restart,pg-kill,camera,nats-outage] \
[--plant drop-outbox|delete-object] [--coverage] [--takeover] [--log-dir DIR]";

/// What the command line asks for.
enum Mode {
    Faults(RunOptions),
    Takeover(TakeoverOptions),
}

fn main() -> ExitCode {
    camrec_shared::telemetry::init("info,lab=info");
    let mode = match parse(std::env::args().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("faultrun: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("faultrun: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Faults(opts) => fault_run(&runtime, &opts),
        Mode::Takeover(opts) => match runtime.block_on(lab::takeover::run(&opts)) {
            Ok(report) => {
                println!("{report}");
                ExitCode::from(if report.passed() { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("faultrun: the takeover run could not be carried out: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn fault_run(runtime: &tokio::runtime::Runtime, opts: &RunOptions) -> ExitCode {
    let report = match runtime.block_on(lab::run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faultrun: the run could not be carried out: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    match (opts.scenario.plant, report.passed()) {
        (None, true) => ExitCode::SUCCESS,
        (None, false) => ExitCode::from(1),
        (Some(plant), false) if report.caught_every_plant() => {
            println!("control run ({plant}): the checker reported the planted loss, as it must");
            ExitCode::from(1)
        }
        (Some(plant), _) => {
            println!("CONTROL RUN FAILED ({plant}): the planted loss was not reported");
            ExitCode::from(3)
        }
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Mode> {
    let mut scenario = ScenarioConfig::new(100, 1.0, 1);
    let (mut workers, mut cameras, mut max_cameras) = (2usize, 3usize, 16usize);
    let mut drain = Duration::from_secs(240);
    let mut stale_playback_sec = lab::cluster::STALE_PLAYBACK_SEC;
    let mut log_dir = None;
    let (mut coverage, mut faults_given, mut takeover) = (false, false, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => scenario.events = value()?.parse().context("--events")?,
            "--rate" => scenario.rate = value()?.parse().context("--rate")?,
            "--workers" => workers = value()?.parse().context("--workers")?,
            "--cameras" => cameras = value()?.parse().context("--cameras")?,
            "--seed" => scenario.seed = value()?.parse().context("--seed")?,
            "--max-cameras" => max_cameras = value()?.parse().context("--max-cameras")?,
            "--min-duration" => {
                scenario.min_duration_sec = value()?.parse().context("--min-duration")?
            }
            "--max-duration" => {
                scenario.max_duration_sec = value()?.parse().context("--max-duration")?
            }
            "--drain" => drain = Duration::from_secs(value()?.parse().context("--drain")?),
            "--stale-playback" => {
                stale_playback_sec = value()?.parse().context("--stale-playback")?
            }
            "--nats-outage" => {
                scenario.nats_outage =
                    Duration::from_secs(value()?.parse().context("--nats-outage")?)
            }
            "--faults" => {
                scenario.faults = parse_faults(&value()?)?;
                faults_given = true;
            }
            "--coverage" => coverage = true,
            "--takeover" => takeover = true,
            "--plant" => {
                scenario.plant = Some(value()?.parse::<Plant>().map_err(anyhow::Error::msg)?)
            }
            "--log-dir" => log_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => bail!("help"),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if takeover {
        let mut opts = TakeoverOptions::new(scenario.seed);
        opts.drain = drain;
        opts.log_dir = log_dir;
        return Ok(Mode::Takeover(opts));
    }
    if coverage {
        let settings = ScenarioConfig::coverage(scenario.events, scenario.rate, scenario.seed);
        scenario.rolls = settings.rolls;
        scenario.occurred_early = settings.occurred_early;
        if !faults_given {
            scenario.faults = settings.faults;
        }
    }
    if scenario.events == 0 || workers == 0 || cameras == 0 || max_cameras == 0 {
        bail!("--events, --workers, --cameras and --max-cameras must be at least 1");
    }
    if !(scenario.rate > 0.0 && scenario.rate <= 20.0) {
        bail!("--rate must be in (0, 20] events per second");
    }
    if scenario.min_duration_sec == 0 || scenario.min_duration_sec > scenario.max_duration_sec {
        bail!("need 1 <= --min-duration <= --max-duration");
    }
    if scenario.plant == Some(Plant::DropOutbox) && !scenario.faults.contains(&FaultKind::NatsKill)
    {
        bail!("--plant drop-outbox needs the nats fault (it deletes a row while NATS is down)");
    }
    if scenario.faults.contains(&FaultKind::NatsOutage)
        && scenario.nats_outage.as_secs() <= stale_playback_sec
    {
        bail!("--nats-outage must be longer than --stale-playback");
    }
    let mut opts = RunOptions::new(scenario, workers, cameras);
    opts.max_cameras = max_cameras;
    opts.stale_playback_sec = stale_playback_sec;
    opts.drain_deadline = drain;
    opts.log_dir = log_dir;
    Ok(Mode::Faults(opts))
}

fn parse_faults(s: &str) -> anyhow::Result<Vec<FaultKind>> {
    match s {
        "all" => return Ok(FaultKind::ALL.to_vec()),
        "none" => return Ok(Vec::new()),
        _ => {}
    }
    s.split(',')
        .map(|name| {
            Ok(match name.trim() {
                "worker" => FaultKind::WorkerKill,
                "nats" => FaultKind::NatsKill,
                "api" => FaultKind::ApiKill,
                "s3" => FaultKind::S3Down,
                "pg-restart" => FaultKind::PgRestart,
                "pg-kill" => FaultKind::PgKill,
                "camera" => FaultKind::CameraKill,
                "nats-outage" => FaultKind::NatsOutage,
                other => bail!("unknown fault {other:?}"),
            })
        })
        .collect()
}
