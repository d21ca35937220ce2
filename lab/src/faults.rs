//! The fault schedule and its injection. A schedule is a seeded, bounded list of faults spread
//! over the run: every kind once per round, in a shuffled order, never two at once. Each fault
//! crashes (or stops) one part of the [`Cluster`] and brings it back after its down time.

use crate::cluster::{Cluster, ClusterError};
use crate::plant::{Plant, PlantError, Planted};
use rand::seq::SliceRandom;
use rand::Rng;
use std::fmt;
use std::time::Duration;

/// What can go wrong on a recorder site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9` of one recorder-worker (its FFmpegs must die with it), restarted with the same
    /// `WORKER_ID` and `RECORD_DIR`.
    WorkerKill,
    /// `kill -9` of nats-server, restarted on the same store.
    NatsKill,
    /// `kill -9` of event-api, restarted.
    ApiKill,
    /// The S3 server stopped for a while, then started on the same data.
    S3Down,
    /// PostgreSQL restarted cleanly (`pg_ctl restart -m fast`).
    PgRestart,
    /// `kill -9` of the PostgreSQL postmaster, then a start (crash recovery).
    PgKill,
    /// A camera killed (lost power) and brought back on the same address.
    CameraKill,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::WorkerKill,
        FaultKind::NatsKill,
        FaultKind::ApiKill,
        FaultKind::S3Down,
        FaultKind::PgRestart,
        FaultKind::PgKill,
        FaultKind::CameraKill,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "kill -9 worker",
            FaultKind::NatsKill => "kill -9 nats-server",
            FaultKind::ApiKill => "kill -9 event-api",
            FaultKind::S3Down => "S3 down",
            FaultKind::PgRestart => "PostgreSQL restart",
            FaultKind::PgKill => "kill -9 PostgreSQL",
            FaultKind::CameraKill => "camera killed",
        }
    }

    /// How long the part stays down, in seconds (drawn from this range).
    fn down_range(self) -> (u64, u64) {
        match self {
            FaultKind::WorkerKill => (3, 6),
            FaultKind::NatsKill => (5, 9),
            FaultKind::ApiKill => (2, 5),
            FaultKind::S3Down => (8, 15),
            FaultKind::PgRestart | FaultKind::PgKill => (0, 0),
            FaultKind::CameraKill => (4, 10),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug)]
pub struct PlannedFault {
    /// When, from the start of the scenario.
    pub at: Duration,
    pub kind: FaultKind,
    /// Which worker or camera (ignored by the other kinds).
    pub target: usize,
    /// How long the part stays down before it is brought back.
    pub down: Duration,
}

/// The smallest gap between two fault starts: the longest down time plus time to settle.
pub const MIN_SPACING: Duration = Duration::from_secs(18);
/// The quiet time at the start of the run, before the first fault.
const LEAD_IN: Duration = Duration::from_secs(8);

/// Each of `kinds` at least once, as many rounds as fit in `run_len` with [`MIN_SPACING`]
/// between faults; each round in a shuffled order; targets and down times drawn from `rng`.
pub fn schedule(
    run_len: Duration,
    kinds: &[FaultKind],
    workers: usize,
    cameras: usize,
    rng: &mut impl Rng,
) -> Vec<PlannedFault> {
    if kinds.is_empty() {
        return Vec::new();
    }
    let per_round = kinds.len() as u64;
    let usable = run_len.saturating_sub(LEAD_IN).as_secs();
    let rounds = (usable / (per_round * MIN_SPACING.as_secs())).max(1);
    let slots = rounds * per_round;
    let spacing = Duration::from_secs((usable / slots).max(MIN_SPACING.as_secs()));
    let mut out = Vec::with_capacity(slots as usize);
    for round in 0..rounds {
        let mut order = kinds.to_vec();
        order.shuffle(rng);
        for (i, kind) in order.into_iter().enumerate() {
            let slot = round * per_round + i as u64;
            let (lo, hi) = kind.down_range();
            out.push(PlannedFault {
                at: LEAD_IN + spacing * slot as u32,
                kind,
                target: match kind {
                    FaultKind::WorkerKill => rng.gen_range(0..workers.max(1)),
                    FaultKind::CameraKill => rng.gen_range(0..cameras.max(1)),
                    _ => 0,
                },
                down: Duration::from_secs(rng.gen_range(lo..=hi)),
            });
        }
    }
    out
}

/// What happened when a fault was injected.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Seconds from the start of the scenario.
    pub at_sec: f64,
    pub target: String,
    pub down: Duration,
    /// Why the part could not be brought back, if it could not.
    pub error: Option<String>,
    /// Children (FFmpeg, ffprobe) a killed worker had when it was killed.
    pub children: usize,
    /// Of those, how many were still alive 5 s after it died (must be 0).
    pub orphans: usize,
}

/// A fault could not be injected or undone.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Part(anyhow::Error),
    #[error(transparent)]
    Plant(#[from] PlantError),
}

/// Crashes the part, waits `down`, brings it back. A planted `drop-outbox` defect is applied
/// while NATS is down (the only time an outbox row stays unpublished long enough).
pub async fn inject(
    cluster: &mut Cluster,
    fault: &PlannedFault,
    at_sec: f64,
    plant: &mut Option<Plant>,
    planted: &mut Vec<Planted>,
) -> FaultRecord {
    let mut record = FaultRecord {
        kind: fault.kind,
        at_sec,
        target: String::new(),
        down: fault.down,
        error: None,
        children: 0,
        orphans: 0,
    };
    tracing::info!(fault = %fault.kind, at_sec, down = ?fault.down, "injecting");
    let result = apply(cluster, fault, &mut record, plant, planted).await;
    if let Err(e) = result {
        tracing::error!(fault = %fault.kind, error = %e, "fault could not be undone");
        record.error = Some(e.to_string());
    }
    record
}

async fn apply(
    cluster: &mut Cluster,
    fault: &PlannedFault,
    record: &mut FaultRecord,
    plant: &mut Option<Plant>,
    planted: &mut Vec<Planted>,
) -> Result<(), FaultError> {
    match fault.kind {
        FaultKind::WorkerKill => {
            let n = cluster.workers.len();
            let worker = &mut cluster.workers[fault.target % n];
            record.target = worker.name().to_owned();
            let children = worker.kill();
            record.children = children.len();
            record.orphans = count_survivors(&children).await;
            tokio::time::sleep(fault.down).await;
            worker.start()?;
        }
        FaultKind::NatsKill => {
            record.target = "nats-server".into();
            cluster.nats.kill();
            if *plant == Some(Plant::DropOutbox) {
                planted.push(Plant::drop_outbox_row(&cluster.database_url(), fault.down).await?);
                *plant = None;
            } else {
                tokio::time::sleep(fault.down).await;
            }
            cluster.nats.restart().await.map_err(FaultError::Part)?;
        }
        FaultKind::ApiKill => {
            record.target = "event-api".into();
            cluster.api.kill();
            tokio::time::sleep(fault.down).await;
            cluster.start_api().await?;
        }
        FaultKind::S3Down => {
            record.target = "s3s-fs".into();
            cluster.s3.stop();
            tokio::time::sleep(fault.down).await;
            cluster.s3.restart().await.map_err(FaultError::Part)?;
        }
        FaultKind::PgRestart => {
            record.target = "postgres".into();
            cluster
                .pg
                .restart()
                .await
                .map_err(|e| FaultError::Cluster(e.into()))?;
        }
        FaultKind::PgKill => {
            record.target = "postgres".into();
            cluster
                .pg
                .kill_and_restart()
                .await
                .map_err(|e| FaultError::Cluster(e.into()))?;
        }
        FaultKind::CameraKill => {
            let n = cluster.cameras.len();
            let cam = &mut cluster.cameras[fault.target % n];
            record.target = format!("camera on port {}", cam.port);
            cam.kill();
            tokio::time::sleep(fault.down).await;
            cam.restart().await.map_err(FaultError::Part)?;
        }
    }
    Ok(())
}

/// How many of `pids` are still alive 5 s after their parent was killed.
async fn count_survivors(pids: &[u32]) -> usize {
    let all_dead = testkit::wait_until(Duration::from_secs(5), "children to die", || {
        let alive = pids.iter().any(|p| crate::process::is_alive(*p));
        async move { (!alive).then_some(()) }
    })
    .await;
    if all_dead.is_ok() {
        0
    } else {
        pids.iter()
            .filter(|p| crate::process::is_alive(**p))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn every_kind_is_scheduled_spaced_and_within_the_run() {
        for secs in [60u64, 150, 1200] {
            let run = Duration::from_secs(secs);
            let mut rng = StdRng::seed_from_u64(secs);
            let plan = schedule(run, &FaultKind::ALL, 2, 3, &mut rng);
            for kind in FaultKind::ALL {
                assert!(plan.iter().any(|f| f.kind == kind), "{kind} in {secs}s");
            }
            for pair in plan.windows(2) {
                assert!(pair[1].at - pair[0].at >= MIN_SPACING);
            }
            for f in &plan {
                assert!(f.down < MIN_SPACING);
                assert!(f.target < 3);
            }
            assert!(schedule(run, &[], 2, 3, &mut rng).is_empty());
            if secs >= 1200 {
                assert!(plan.len() >= 2 * FaultKind::ALL.len());
                assert!(plan.last().unwrap().at < run);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let run = Duration::from_secs(300);
        let a = schedule(run, &FaultKind::ALL, 2, 3, &mut StdRng::seed_from_u64(7));
        let b = schedule(run, &FaultKind::ALL, 2, 3, &mut StdRng::seed_from_u64(7));
        let key = |p: &[PlannedFault]| {
            p.iter()
                .map(|f| (f.at, f.kind, f.target, f.down))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
    }
}
