//! camrec's fault-injection lab: proves, with figures, that no acknowledged clip is lost and no
//! playback is left stuck when the parts of the system crash.
//!
//! - [`cluster`]: PostgreSQL, NATS, the S3 server, fake cameras, event-api and the workers, on
//!   loopback, each of which can be crashed and brought back;
//! - [`scenario`]: the seeded, bounded load (events at a steady rate) and the fault schedule
//!   ([`faults`]) running side by side;
//! - [`checker`]: the verdict, read from the REST API, the object store, the streams and the
//!   outbox, printed as one table; with [`coverage`], whether every completed clip holds its
//!   event's pre-roll and post-roll;
//! - [`plant`]: defects planted on purpose, to show the checker can fail;
//! - [`camera_drop`]: a camera lost for ~10 s during an event, whose clip must complete with
//!   one gap;
//! - [`takeover`]: a worker killed for good while it records, whose open recordings the
//!   cameras' next holders must continue into the same playbacks.
//!
//! [`run`] does all of it; `cargo run -p lab --bin faultrun` is its command line
//! (docs/reliability.md).

pub mod api;
pub mod camera_drop;
pub mod checker;
pub mod cluster;
pub mod coverage;
pub mod faults;
pub mod pg;
pub mod plant;
pub mod process;
pub mod scenario;
pub mod takeover;

use api::Api;
use checker::Report;
use cluster::{Cluster, ClusterConfig, ServiceBinaries};
use faults::FaultKind;
use plant::Plant;
use scenario::ScenarioConfig;
use std::path::PathBuf;
use std::time::Duration;

/// A run could not be carried out (as opposed to a run whose verdict is FAIL).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Check(#[from] checker::CheckError),
    #[error(transparent)]
    Plant(#[from] plant::PlantError),
    #[error("creating the log directory {0}: {1}")]
    LogDir(PathBuf, std::io::Error),
    #[error("the NATS outage ({outage:?}) must be longer than STALE_PLAYBACK_SEC ({stale:?})")]
    OutageTooShort { outage: Duration, stale: Duration },
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: ScenarioConfig,
    pub workers: usize,
    pub cameras: usize,
    /// The workers' `MAX_CAMERAS`.
    pub max_cameras: usize,
    /// event-api's `STALE_PLAYBACK_SEC`; the scenario's NATS outage must outlast it.
    pub stale_playback_sec: u64,
    /// How long the checker waits, after the scenario, for every playback to be terminal.
    pub drain_deadline: Duration,
    /// Where the processes' logs go (default: a new directory under the system temp dir,
    /// kept after the run).
    pub log_dir: Option<PathBuf>,
}

impl RunOptions {
    pub fn new(scenario: ScenarioConfig, workers: usize, cameras: usize) -> Self {
        Self {
            scenario,
            workers,
            cameras,
            max_cameras: 16,
            stale_playback_sec: cluster::STALE_PLAYBACK_SEC,
            drain_deadline: Duration::from_secs(180),
            log_dir: None,
        }
    }
}

/// Starts the cluster, runs the scenario with its faults, plants the requested defect, waits
/// for the playbacks to finish, checks, stops everything, and returns the report.
pub async fn run(opts: &RunOptions) -> Result<Report, LabError> {
    let stale = Duration::from_secs(opts.stale_playback_sec);
    if opts.scenario.faults.contains(&FaultKind::NatsOutage) && opts.scenario.nats_outage <= stale {
        return Err(LabError::OutageTooShort {
            outage: opts.scenario.nats_outage,
            stale,
        });
    }
    let binaries = ServiceBinaries::build_and_locate()?;
    let log_dir = match &opts.log_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "camrec-lab-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&log_dir).map_err(|e| LabError::LogDir(log_dir.clone(), e))?;
    tracing::info!(logs = %log_dir.display(), "starting the cluster");
    let mut config = ClusterConfig::new(opts.workers, opts.cameras, log_dir);
    config.max_cameras = opts.max_cameras;
    config.stale_playback_sec = opts.stale_playback_sec;
    let mut cluster = Cluster::start(config, &binaries).await?;
    tracing::info!(api = %cluster.api_url(), "cluster up; running the scenario");
    let mut ledger = scenario::run(&mut cluster, &opts.scenario).await?;
    let api = Api::login(
        &cluster.api_url(),
        cluster::ADMIN_USERNAME,
        cluster.admin_password(),
    )
    .await?;
    tracing::info!("scenario done; waiting for every playback to finish");
    let waited = checker::wait_terminal(&api, &ledger, opts.drain_deadline).await;
    if opts.scenario.plant == Some(Plant::DeleteObject) {
        let victim = api
            .all_playbacks()
            .await?
            .into_iter()
            .find(|p| p.recording_status == "COMPLETED")
            .ok_or(plant::PlantError::NoCompletedPlayback)?;
        ledger
            .planted
            .push(Plant::delete_object(&cluster, victim.id).await?);
    }
    let mut report = checker::check(&cluster, &api, &ledger).await?;
    report.waited = waited;
    report.rtsp_sessions = cluster
        .cameras
        .iter()
        .map(|c| {
            let s = c.sessions();
            (s.peak, s.total)
        })
        .collect();
    tracing::info!(logs = %cluster.config.log_dir.display(), "run checked; stopping the cluster");
    cluster.shutdown().await;
    Ok(report)
}
