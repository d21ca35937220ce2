//! The fault schedule and its injection. A schedule is a seeded, bounded list of faults spread
//! over the run: every kind once per round, in a shuffled order, never two at once. Each fault
//! crashes (or stops) one part of the [`Cluster`] and brings it back after its down time.
//!
//! One kind is long on purpose: [`FaultKind::NatsOutage`] keeps NATS stopped for longer than
//! event-api's `STALE_PLAYBACK_SEC` while recordings run, so their statuses arrive long after
//! the reconciler could call them stale; the promise is that those recordings still end
//! `COMPLETED`.

use crate::cluster::{Cluster, ClusterError};
use crate::plant::{Plant, PlantError, Planted};
use rand::seq::SliceRandom;
use rand::Rng;
use sqlx::Connection;
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
    /// nats-server stopped (SIGTERM) while recordings run, kept down for the scenario's
    /// `nats_outage` (longer than `STALE_PLAYBACK_SEC`), then started on the same store.
    NatsOutage,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::WorkerKill,
        FaultKind::NatsKill,
        FaultKind::ApiKill,
        FaultKind::S3Down,
        FaultKind::PgRestart,
        FaultKind::PgKill,
        FaultKind::CameraKill,
        FaultKind::NatsOutage,
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
            FaultKind::NatsOutage => "nats-server stopped (long outage)",
        }
    }

    /// How long the part stays down, in seconds (drawn from this range); `None` for the
    /// outage, whose length the scenario sets.
    fn down_range(self) -> Option<(u64, u64)> {
        match self {
            FaultKind::WorkerKill => Some((3, 6)),
            FaultKind::NatsKill => Some((5, 9)),
            FaultKind::ApiKill => Some((2, 5)),
            FaultKind::S3Down => Some((8, 15)),
            FaultKind::PgRestart | FaultKind::PgKill => Some((0, 0)),
            FaultKind::CameraKill => Some((4, 10)),
            FaultKind::NatsOutage => None,
        }
    }

    /// How long after this fault's start the next one may start: [`MIN_SPACING`], or for the
    /// outage its length plus [`MIN_SPACING`] (what piled up while NATS was down goes out first).
    fn footprint(self, nats_outage: Duration) -> Duration {
        match self {
            FaultKind::NatsOutage => nats_outage + MIN_SPACING,
            _ => MIN_SPACING,
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

/// The smallest gap between two fault starts: the longest short down time plus time to settle.
pub const MIN_SPACING: Duration = Duration::from_secs(18);
/// The quiet time at the start of the run, before the first fault.
const LEAD_IN: Duration = Duration::from_secs(8);
/// How long the outage waits for a recording to be running before it stops NATS anyway.
const RECORDING_WAIT: Duration = Duration::from_secs(10);

/// What the schedule draws its targets and down times for.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub workers: usize,
    pub cameras: usize,
    /// The down time of [`FaultKind::NatsOutage`].
    pub nats_outage: Duration,
}

/// Each of `kinds` at least once, as many rounds as fit in `run_len` (each fault followed by
/// its [`FaultKind::footprint`], the time left over shared out evenly); each round in a
/// shuffled order; targets and down times drawn from `rng`.
pub fn schedule(
    run_len: Duration,
    kinds: &[FaultKind],
    shape: Shape,
    rng: &mut impl Rng,
) -> Vec<PlannedFault> {
    if kinds.is_empty() {
        return Vec::new();
    }
    let round: Duration = kinds.iter().map(|k| k.footprint(shape.nats_outage)).sum();
    let usable = run_len.saturating_sub(LEAD_IN);
    let rounds = (usable.as_secs() / round.as_secs().max(1)).max(1) as u32;
    let slots = rounds * kinds.len() as u32;
    let slack = usable.saturating_sub(round * rounds) / slots;
    let mut at = LEAD_IN;
    let mut out = Vec::with_capacity(slots as usize);
    for _ in 0..rounds {
        let mut order = kinds.to_vec();
        order.shuffle(rng);
        for kind in order {
            let down = match kind.down_range() {
                Some((lo, hi)) => Duration::from_secs(rng.gen_range(lo..=hi)),
                None => shape.nats_outage,
            };
            out.push(PlannedFault {
                at,
                kind,
                target: match kind {
                    FaultKind::WorkerKill => rng.gen_range(0..shape.workers.max(1)),
                    FaultKind::CameraKill => rng.gen_range(0..shape.cameras.max(1)),
                    _ => 0,
                },
                down,
            });
            at += kind.footprint(shape.nats_outage) + slack;
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
    /// Playbacks `RECORDING` when NATS was stopped for the outage (other kinds: 0).
    pub recordings: usize,
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
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
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
        recordings: 0,
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
        FaultKind::NatsOutage => {
            record.target = "nats-server".into();
            record.recordings = recording_soon(&cluster.database_url()).await?;
            cluster.nats.stop();
            tokio::time::sleep(fault.down).await;
            cluster.nats.restart().await.map_err(FaultError::Part)?;
        }
    }
    Ok(())
}

/// How many playbacks are `RECORDING`, waiting up to [`RECORDING_WAIT`] for at least one (the
/// outage is meant to fall on running recordings; it is reported, not forced, when none runs).
async fn recording_soon(database_url: &str) -> Result<usize, FaultError> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let deadline = tokio::time::Instant::now() + RECORDING_WAIT;
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM playbacks WHERE status = 'RECORDING'")
                .fetch_one(&mut conn)
                .await?;
        if n > 0 || tokio::time::Instant::now() >= deadline {
            conn.close().await?;
            return Ok(usize::try_from(n).unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many of `pids` are still alive 5 s after their parent was killed.
pub async fn count_survivors(pids: &[u32]) -> usize {
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

    fn shape(nats_outage_sec: u64) -> Shape {
        Shape {
            workers: 2,
            cameras: 3,
            nats_outage: Duration::from_secs(nats_outage_sec),
        }
    }

    #[test]
    fn every_kind_is_scheduled_spaced_and_within_the_run() {
        for (secs, outage) in [(60u64, 30), (180, 30), (1200, 180)] {
            let run = Duration::from_secs(secs);
            let mut rng = StdRng::seed_from_u64(secs);
            let plan = schedule(run, &FaultKind::ALL, shape(outage), &mut rng);
            for kind in FaultKind::ALL {
                assert!(plan.iter().any(|f| f.kind == kind), "{kind} in {secs}s");
            }
            for pair in plan.windows(2) {
                let gap = pair[1].at - pair[0].at;
                assert!(gap >= MIN_SPACING);
                if pair[0].kind == FaultKind::NatsOutage {
                    assert!(
                        gap >= pair[0].down + MIN_SPACING,
                        "NATS settles after the outage"
                    );
                }
            }
            for f in &plan {
                match f.kind {
                    FaultKind::NatsOutage => assert_eq!(f.down, Duration::from_secs(outage)),
                    _ => assert!(f.down < MIN_SPACING),
                }
                assert!(f.target < 3);
            }
            assert!(schedule(run, &[], shape(outage), &mut rng).is_empty());
            if secs >= 180 {
                let last = plan.last().unwrap();
                assert!(
                    last.at + last.down < run,
                    "the last fault ends within {secs}s"
                );
            }
            if secs >= 1200 {
                assert!(plan.len() >= 2 * FaultKind::ALL.len());
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let run = Duration::from_secs(300);
        let a = schedule(
            run,
            &FaultKind::ALL,
            shape(30),
            &mut StdRng::seed_from_u64(7),
        );
        let b = schedule(
            run,
            &FaultKind::ALL,
            shape(30),
            &mut StdRng::seed_from_u64(7),
        );
        let key = |p: &[PlannedFault]| {
            p.iter()
                .map(|f| (f.at, f.kind, f.target, f.down))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
    }
}
