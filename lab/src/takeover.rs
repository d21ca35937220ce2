//! The takeover run (issue 17): a worker dies for good while it records, and the cameras' next
//! holders continue its open recordings into the same playbacks.
//!
//! Three workers share six cameras of one site (`MAX_CAMERAS` 3, so the two survivors have room
//! for all six); long events (30-60 s) are posted at a steady rate; a few seconds in, the worker
//! with the most open recordings is `kill -9`ed and never started again. For every playback it
//! was recording at the kill (its `recording` sent, nothing after), the run requires, from the
//! status stream `PLAYBACKS` and the REST API:
//! - **continued**: another worker reports it, naming the killed one in `takes_over_from`
//!   (the projector then hands the playback to it);
//! - **in time**: the takeover time, from the kill to that worker's first status (sent once its
//!   first segment of the camera is linked), is at most 1.5 × `CAPTURE_LEASE_TTL` (15 s);
//! - **one hole**: it ends `COMPLETED`, `partial`, with exactly one gap, no longer than the
//!   takeover time plus one segment plus [`GAP_TOLERANCE`];
//! - and the standard checker ([`crate::checker`]) finds nothing lost, stuck or duplicated
//!   (a playback reported by two workers is a duplicate unless the second names the first, and
//!   segments of two holders must not overlap).
//!
//! Events on the killed worker's cameras posted after the kill are recorded by the new holder
//! like any other; the checker holds them to the standard promises.
//!
//! The full run kills at the moment an event is posted, so a recording claimed a few
//! milliseconds before the kill is among the followed ones: its pre-roll, still waiting for its
//! upload on the killed worker, is lost with it and its gap starts that much earlier (each
//! followed playback prints how long it had been `RECORDING` and where its gap lies against the
//! kill; docs/reliability.md has the figures).

use crate::api::{Api, PlaybackView};
use crate::checker::{self, Report};
use crate::cluster::{self, Cluster, ClusterConfig, ServiceBinaries};
use crate::faults::{FaultKind, FaultRecord};
use crate::scenario::{self, Ledger, ScenarioConfig};
use crate::LabError;
use camrec_shared::capture::CAPTURE_LEASE_TTL;
use camrec_shared::messages::{Envelope, PlaybackStatus, StatusBody};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The capture's segment length (`SEGMENT_SEC`, 1 s; the fake cameras send a keyframe a second).
pub const SEGMENT: Duration = Duration::from_secs(1);
/// What a gap may exceed the takeover time plus one segment by. The gap runs from the end of the
/// last segment the killed worker uploaded to the start of the next holder's first segment; the
/// takeover time ends when that first segment has closed (a segment after the gap's end), so
/// the allowance covers the segment that was being written at the kill (lost with the worker).
/// On top of that a closed segment may still have been waiting for its upload at the kill (the
/// live upload runs behind the capture by its upload time), and each capture's segment times
/// come from its own wall-clock anchor; one more segment length covers both.
pub const GAP_TOLERANCE: Duration = Duration::from_secs(1);

/// The promise: a camera's next holder continues within 1.5 × the capture lease TTL.
pub fn takeover_limit() -> Duration {
    CAPTURE_LEASE_TTL * 3 / 2
}

/// The shape of one takeover run.
#[derive(Clone, Debug)]
pub struct TakeoverOptions {
    pub seed: u64,
    pub workers: usize,
    pub cameras: usize,
    /// The workers' `MAX_CAMERAS`: low enough that the cameras are spread, high enough that
    /// the survivors can hold them all.
    pub max_cameras: usize,
    pub events: usize,
    /// Events per second.
    pub rate: f64,
    pub min_duration_sec: u64,
    pub max_duration_sec: u64,
    /// From the first event to the kill.
    pub kill_after: Duration,
    /// How long the checker waits, after the last event's end, for every playback to finish.
    pub drain: Duration,
    pub log_dir: Option<PathBuf>,
}

impl TakeoverOptions {
    /// The run of the issue: 3 workers, 6 cameras, 18 events of 30-60 s at one a second, the
    /// kill 8 s in.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            workers: 3,
            cameras: 6,
            max_cameras: 3,
            events: 18,
            rate: 1.0,
            min_duration_sec: 30,
            max_duration_sec: 60,
            kill_after: Duration::from_secs(8),
            drain: Duration::from_secs(120),
            log_dir: None,
        }
    }
}

/// One playback the killed worker was recording at the kill, and what became of it.
#[derive(Clone, Debug)]
pub struct TakenOver {
    pub playback_id: Uuid,
    /// The first other worker that reported it naming the killed one.
    pub new_owner: Option<String>,
    /// From the kill to the new owner's first status, seconds.
    pub takeover_sec: Option<f64>,
    /// How long the killed worker had been reporting it `RECORDING` at the kill, seconds.
    pub recording_for_sec: f64,
    /// Where the single gap lies against the kill: it starts this long before it (footage the
    /// killed worker had captured but not uploaded) and ends this long after it, seconds.
    pub gap_around_kill: Option<(f64, f64)>,
    /// The playback at the end, as the API shows it.
    pub status: String,
    pub partial: bool,
    /// The clip's gaps, seconds.
    pub gaps_sec: Vec<f64>,
    /// Every promise it broke.
    pub problems: Vec<String>,
}

/// What the takeover run found.
#[derive(Clone, Debug)]
pub struct TakeoverReport {
    pub seed: u64,
    /// The worker killed and kept down.
    pub victim: String,
    pub killed_at: DateTime<Utc>,
    /// Seconds from the first event to the kill.
    pub kill_sec: f64,
    /// Per worker: the cameras it captured and the recordings it had open just before the kill.
    pub cameras_at_kill: BTreeMap<String, usize>,
    pub open_at_kill: BTreeMap<String, usize>,
    /// The killed worker's open recordings, followed.
    pub taken: Vec<TakenOver>,
    /// Playbacks continued from the killed worker that were not yet `RECORDING` at the kill.
    pub continued_not_recording: usize,
    /// Events on the killed worker's cameras posted after the kill: how many, how many
    /// `COMPLETED`.
    pub after_kill: (usize, usize),
    /// The standard checker's verdict on the whole run.
    pub check: Report,
}

impl TakeoverReport {
    /// At least one recording was taken over, each kept every promise, and the checker passed.
    pub fn passed(&self) -> bool {
        !self.taken.is_empty()
            && self.taken.iter().all(|t| t.problems.is_empty())
            && self.check.passed()
    }

    /// The takeover times measured, seconds.
    pub fn takeover_times(&self) -> Vec<f64> {
        self.taken.iter().filter_map(|t| t.takeover_sec).collect()
    }

    /// The single gap of each taken-over clip that has exactly one, seconds.
    pub fn gaps(&self) -> Vec<f64> {
        self.taken
            .iter()
            .filter(|t| t.gaps_sec.len() == 1)
            .map(|t| t.gaps_sec[0])
            .collect()
    }
}

/// Runs the takeover scenario on a cluster of its own and stops it.
pub async fn run(opts: &TakeoverOptions) -> Result<TakeoverReport, LabError> {
    let binaries = ServiceBinaries::build_and_locate()?;
    let log_dir = opts.log_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "camrec-lab-takeover-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ))
    });
    std::fs::create_dir_all(&log_dir).map_err(|e| LabError::LogDir(log_dir.clone(), e))?;
    tracing::info!(logs = %log_dir.display(), "starting the cluster");
    let mut config = ClusterConfig::new(opts.workers, opts.cameras, log_dir);
    config.max_cameras = opts.max_cameras;
    // Above the longest event plus its post-roll: every recording ends at its event's end.
    config.max_recording_sec = opts.max_duration_sec + 30;
    let mut cluster = Cluster::start(config, &binaries).await?;
    let result = takeover_once(&mut cluster, opts).await;
    tracing::info!(logs = %cluster.config.log_dir.display(), "takeover run done; stopping the cluster");
    cluster.shutdown().await;
    result
}

/// What the kill did.
struct Kill {
    victim: String,
    at: DateTime<Utc>,
    record: FaultRecord,
    cameras: BTreeMap<String, usize>,
    open: BTreeMap<String, usize>,
    victim_cameras: Vec<Uuid>,
}

async fn takeover_once(
    cluster: &mut Cluster,
    opts: &TakeoverOptions,
) -> Result<TakeoverReport, LabError> {
    let api = Api::login(
        &cluster.api_url(),
        cluster::ADMIN_USERNAME,
        cluster.admin_password(),
    )
    .await?;
    let mut settings = ScenarioConfig::new(opts.events, opts.rate, opts.seed);
    settings.faults = Vec::new();
    settings.min_duration_sec = opts.min_duration_sec;
    settings.max_duration_sec = opts.max_duration_sec;
    let cameras = scenario::create_cameras(cluster, &api, None).await?;
    scenario::wait_captured(&api, &cameras, &settings).await?;
    let plan = scenario::plan(&settings, &cameras, &mut StdRng::seed_from_u64(opts.seed));
    let start = Instant::now();
    let nats_url = cluster.nats.url_as(testkit::NatsUser::Admin);
    let (events, kill) = tokio::join!(
        scenario::post_events(&api, &settings, &plan, start),
        kill_busiest(cluster, &api, &cameras, &nats_url, start, opts.kill_after),
    );
    let kill = kill?;
    let ledger = Ledger {
        events,
        faults: vec![kill.record.clone()],
        planted: Vec::new(),
        cameras,
        rolls: None,
        elapsed: start.elapsed(),
    };
    tracing::info!("events done; waiting for every playback to finish");
    let waited = checker::wait_terminal(&api, &ledger, opts.drain).await;
    let mut check = checker::check(cluster, &api, &ledger).await?;
    check.waited = waited;
    let statuses = checker::read_statuses(&nats_url).await?;
    let playbacks = api.all_playbacks().await?;
    let taken = assess(&kill.victim, kill.at, &statuses, &playbacks);
    let open_ids: Vec<Uuid> = taken.iter().map(|t| t.playback_id).collect();
    let continued_not_recording = continued_from(&kill.victim, &statuses)
        .into_iter()
        .filter(|id| !open_ids.contains(id))
        .count();
    Ok(TakeoverReport {
        seed: opts.seed,
        after_kill: after_kill(&ledger, &kill, &playbacks),
        kill_sec: kill.record.at_sec,
        victim: kill.victim,
        killed_at: kill.at,
        cameras_at_kill: kill.cameras,
        open_at_kill: kill.open,
        taken,
        continued_not_recording,
        check,
    })
}

/// `after` the scenario's `start`, `kill -9` the worker with the most open recordings (waiting up
/// to 10 s more for one to be open) and keep it down.
async fn kill_busiest(
    cluster: &mut Cluster,
    api: &Api,
    cameras: &[Uuid],
    nats_url: &str,
    start: Instant,
    after: Duration,
) -> Result<Kill, LabError> {
    tokio::time::sleep_until(start + after).await;
    let give_up = Instant::now() + Duration::from_secs(10);
    let open = loop {
        let open = open_by_worker(&checker::read_statuses(nats_url).await?);
        if !open.is_empty() || Instant::now() >= give_up {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut holders = BTreeMap::new();
    let mut by_camera = HashMap::new();
    for &camera in cameras {
        if let Some(w) = api.capture_status(camera).await?.worker_id {
            *holders.entry(w.clone()).or_insert(0) += 1;
            by_camera.insert(camera, w);
        }
    }
    let index = busiest(&open, &holders, cluster.workers.len());
    let worker = &mut cluster.workers[index];
    let victim = worker.name().to_owned();
    let at = Utc::now();
    let at_sec = start.elapsed().as_secs_f64();
    tracing::info!(%victim, ?open, ?holders, "kill -9 of the busiest worker; it stays down");
    let children = worker.kill();
    let orphans = crate::faults::count_survivors(&children).await;
    let record = FaultRecord {
        kind: FaultKind::WorkerKill,
        at_sec,
        target: victim.clone(),
        down: Duration::MAX,
        error: None,
        children: children.len(),
        orphans,
        recordings: 0,
    };
    let victim_cameras = by_camera
        .into_iter()
        .filter(|(_, w)| *w == victim)
        .map(|(c, _)| c)
        .collect();
    Ok(Kill {
        victim,
        at,
        record,
        cameras: holders,
        open,
        victim_cameras,
    })
}

/// The index of the worker (named `worker-<i>`) with the most open recordings, then the most
/// cameras, then the lowest index.
fn busiest(
    open: &BTreeMap<String, usize>,
    cameras: &BTreeMap<String, usize>,
    workers: usize,
) -> usize {
    (0..workers)
        .max_by_key(|i| {
            let name = format!("worker-{i}");
            let load = (
                open.get(&name).copied().unwrap_or(0),
                cameras.get(&name).copied().unwrap_or(0),
            );
            (load, std::cmp::Reverse(*i))
        })
        .unwrap_or(0)
}

/// Per worker, the playbacks whose latest status (in stream order) is its `recording` or
/// `progress`.
pub fn open_by_worker(statuses: &[Envelope<PlaybackStatus>]) -> BTreeMap<String, usize> {
    let mut last: HashMap<Uuid, &PlaybackStatus> = HashMap::new();
    for s in statuses {
        last.insert(s.payload.playback_id.0, &s.payload);
    }
    let mut out = BTreeMap::new();
    for s in last.values().filter(|s| is_recording(&s.body)) {
        *out.entry(s.worker_id.clone()).or_insert(0) += 1;
    }
    out
}

fn is_recording(body: &StatusBody) -> bool {
    matches!(
        body,
        StatusBody::Recording { .. } | StatusBody::Progress { .. }
    )
}

/// The playbacks `victim` was recording at `at`: it had sent their `recording` (or `progress`)
/// by then, and nobody had sent `processing`, `completed` or `failed`.
pub fn open_at(
    statuses: &[Envelope<PlaybackStatus>],
    victim: &str,
    at: DateTime<Utc>,
) -> Vec<Uuid> {
    let mut open: Vec<Uuid> = Vec::new();
    let mut over: Vec<Uuid> = Vec::new();
    for s in statuses.iter().filter(|s| s.occurred_at <= at) {
        let id = s.payload.playback_id.0;
        if !is_recording(&s.payload.body) {
            over.push(id);
        } else if s.payload.worker_id == victim && !open.contains(&id) {
            open.push(id);
        }
    }
    open.retain(|id| !over.contains(id));
    open
}

/// The playbacks another worker reported naming `victim` in `takes_over_from`.
fn continued_from(victim: &str, statuses: &[Envelope<PlaybackStatus>]) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = statuses
        .iter()
        .filter(|s| s.payload.takes_over_from.as_deref() == Some(victim))
        .map(|s| s.payload.playback_id.0)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Follows every playback `victim` was recording at `killed_at` through the statuses (stream
/// order) and the API's final view, and notes every promise of the module documentation it
/// broke.
pub fn assess(
    victim: &str,
    killed_at: DateTime<Utc>,
    statuses: &[Envelope<PlaybackStatus>],
    playbacks: &[PlaybackView],
) -> Vec<TakenOver> {
    open_at(statuses, victim, killed_at)
        .into_iter()
        .map(|id| follow(id, victim, killed_at, statuses, playbacks))
        .collect()
}

fn follow(
    id: Uuid,
    victim: &str,
    killed_at: DateTime<Utc>,
    statuses: &[Envelope<PlaybackStatus>],
    playbacks: &[PlaybackView],
) -> TakenOver {
    let mut problems = Vec::new();
    let mine = || statuses.iter().filter(|s| s.payload.playback_id.0 == id);
    let recording_for_sec = mine()
        .find(|s| s.payload.worker_id == victim && is_recording(&s.payload.body))
        .map_or(0.0, |s| (killed_at - s.occurred_at).as_seconds_f64());
    let first = mine().find(|s| s.payload.worker_id != victim);
    let (new_owner, takeover_sec) = match first {
        Some(s) if s.payload.takes_over_from.as_deref() == Some(victim) => (
            Some(s.payload.worker_id.clone()),
            Some((s.occurred_at - killed_at).as_seconds_f64()),
        ),
        Some(s) => {
            problems.push(format!(
                "{} reported it ({}) without naming {victim} in takes_over_from",
                s.payload.worker_id,
                s.payload.body.kind().as_token()
            ));
            (None, None)
        }
        None => {
            problems.push("no other worker continued it".to_owned());
            (None, None)
        }
    };
    let limit = takeover_limit().as_secs_f64();
    if let Some(t) = takeover_sec.filter(|t| *t > limit) {
        problems.push(format!(
            "continued {t:.3} s after the kill, more than {limit} s"
        ));
    }
    if let Some(late) = mine().find(|s| s.occurred_at > killed_at && s.payload.worker_id == victim)
    {
        problems.push(format!(
            "the killed worker reported after the kill ({})",
            late.payload.body.kind().as_token()
        ));
    }
    let view = playbacks.iter().find(|p| p.id == id);
    let status = view.map_or("(unknown to the API)".to_owned(), |p| {
        p.recording_status.clone()
    });
    let gaps_sec: Vec<f64> = view
        .map(|p| p.gaps.iter().map(crate::api::Gap::seconds).collect())
        .unwrap_or_default();
    let partial = view.is_some_and(|p| p.partial);
    let gap_around_kill = view.and_then(|p| match p.gaps.as_slice() {
        [g] => Some((
            (killed_at - g.from).as_seconds_f64(),
            (g.to - killed_at).as_seconds_f64(),
        )),
        _ => None,
    });
    if status != "COMPLETED" {
        problems.push(format!("ended {status}, not COMPLETED"));
    } else {
        if !partial {
            problems.push("COMPLETED without partial".to_owned());
        }
        match (gaps_sec.as_slice(), takeover_sec) {
            ([gap], Some(t)) => {
                let bound = t + (SEGMENT + GAP_TOLERANCE).as_secs_f64();
                if *gap > bound {
                    problems.push(format!(
                        "gap {gap:.3} s, more than the takeover {t:.3} s + one segment + tolerance"
                    ));
                }
            }
            ([_], None) => {}
            (gaps, _) => problems.push(format!("{} gaps, not one", gaps.len())),
        }
    }
    TakenOver {
        playback_id: id,
        new_owner,
        takeover_sec,
        recording_for_sec,
        gap_around_kill,
        status,
        partial,
        gaps_sec,
        problems,
    }
}

/// Events on the killed worker's cameras posted after the kill: how many were acknowledged, how
/// many `COMPLETED`.
fn after_kill(ledger: &Ledger, kill: &Kill, playbacks: &[PlaybackView]) -> (usize, usize) {
    let posted_after = Duration::from_secs_f64(kill.record.at_sec.max(0.0));
    let ids: Vec<Uuid> = ledger
        .acknowledged()
        .filter(|e| kill.victim_cameras.contains(&e.camera_id) && e.posted_at > posted_after)
        .filter_map(|e| e.playback_id)
        .collect();
    let completed = playbacks
        .iter()
        .filter(|p| ids.contains(&p.id) && p.recording_status == "COMPLETED")
        .count();
    (ids.len(), completed)
}

fn stats(values: &[f64]) -> String {
    let d = crate::coverage::Distribution::of(values.iter().copied());
    if d.n == 0 {
        return "none".to_owned();
    }
    format!(
        "n {} min {:.3} p50 {:.3} max {:.3}",
        d.n, d.min, d.p50, d.max
    )
}

fn counts(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(w, n)| format!("{w} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for TakeoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.check)?;
        writeln!(
            f,
            "takeover: seed {}, killed {} at {:.1} s ({}), kept down",
            self.seed,
            self.victim,
            self.kill_sec,
            self.killed_at.format("%H:%M:%S%.3f")
        )?;
        writeln!(
            f,
            "takeover: cameras at the kill: {}",
            counts(&self.cameras_at_kill)
        )?;
        writeln!(
            f,
            "takeover: open recordings at the kill: {}",
            counts(&self.open_at_kill)
        )?;
        for t in &self.taken {
            let gaps: Vec<String> = t.gaps_sec.iter().map(|g| format!("{g:.3}")).collect();
            let around = t.gap_around_kill.map_or(String::new(), |(before, after)| {
                format!(" (from {before:.3} s before the kill to {after:.3} s after)")
            });
            writeln!(
                f,
                "takeover: playback {} (RECORDING for {:.3} s) -> {} after {} s, {} partial={} gaps [{}]{around}{}",
                t.playback_id,
                t.recording_for_sec,
                t.new_owner.as_deref().unwrap_or("(nobody)"),
                t.takeover_sec.map_or("-".to_owned(), |s| format!("{s:.3}")),
                t.status,
                t.partial,
                gaps.join(", "),
                if t.problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.problems.join("; "))
                }
            )?;
        }
        writeln!(
            f,
            "takeover: continued though not yet RECORDING at the kill: {}",
            self.continued_not_recording
        )?;
        writeln!(
            f,
            "takeover: events on its cameras posted after the kill: {} acknowledged, {} COMPLETED",
            self.after_kill.0, self.after_kill.1
        )?;
        let limit = takeover_limit().as_secs_f64();
        writeln!(
            f,
            "TAKEOVER SUMMARY seed={} taken_over={} takeover_s=[{}] gap_s=[{}] limit_s={limit} verdict={}",
            self.seed,
            self.taken.len(),
            stats(&self.takeover_times()),
            stats(&self.gaps()),
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Gap;
    use camrec_shared::messages::CompletedClip;
    use camrec_shared::subjects::Site;
    use camrec_shared::{CameraId, EventId, PlaybackId};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn status(
        id: Uuid,
        at: i64,
        worker: &str,
        from: Option<&str>,
        body: StatusBody,
    ) -> Envelope<PlaybackStatus> {
        Envelope::new(
            t(at),
            PlaybackStatus {
                playback_id: PlaybackId(id),
                event_id: EventId::new(),
                camera_id: CameraId::new(),
                site: Site::default(),
                worker_id: worker.into(),
                seq: u64::try_from(at).unwrap(),
                takes_over_from: from.map(str::to_owned),
                body,
            },
        )
    }

    fn recording() -> StatusBody {
        StatusBody::Recording { started_at: t(0) }
    }

    fn completed() -> StatusBody {
        StatusBody::Completed(CompletedClip {
            object_key: "k".into(),
            url: None,
            thumb_key: None,
            size_bytes: 1,
            duration_sec: 30.0,
            video_codec: "h264".into(),
            width: 640,
            height: 360,
            audio_codec: None,
            sha256: "00".into(),
            started_at: t(0),
            ended_at: t(40_000),
            partial: true,
            gaps: Vec::new(),
            started_late: false,
            segment_list_key: None,
        })
    }

    fn view(id: Uuid, status: &str, partial: bool, gaps: &[(i64, i64)]) -> PlaybackView {
        PlaybackView {
            id,
            recording_status: status.into(),
            file_size_bytes: Some(1),
            duration_sec: None,
            error_code: None,
            event: None,
            started_at: None,
            ended_at: None,
            gaps: gaps
                .iter()
                .map(|(a, b)| Gap {
                    from: t(*a),
                    to: t(*b),
                })
                .collect(),
            started_late: false,
            partial,
        }
    }

    /// The kill at 10 s; `a` open on w0 and continued by w1 at 22 s; `b` of w0 already
    /// processing before the kill; `c` recorded by w1 all along.
    fn world() -> (Vec<Envelope<PlaybackStatus>>, [Uuid; 3]) {
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let [a, b, c] = ids;
        let processing = StatusBody::Processing {
            ended_at: t(9_000),
            stopped_by: None,
        };
        let statuses = vec![
            status(a, 1_000, "w0", None, recording()),
            status(b, 1_500, "w0", None, recording()),
            status(c, 2_000, "w1", None, recording()),
            status(b, 9_000, "w0", None, processing),
            status(a, 22_000, "w1", Some("w0"), recording()),
            status(a, 50_000, "w1", Some("w0"), completed()),
        ];
        (statuses, ids)
    }

    #[test]
    fn the_open_recordings_of_the_killed_worker_are_found() {
        let (statuses, [a, _, c]) = world();
        assert_eq!(open_at(&statuses, "w0", t(10_000)), vec![a]);
        assert_eq!(open_at(&statuses, "w1", t(10_000)), vec![c]);
        let open = open_by_worker(&statuses[..4]);
        assert_eq!(open.get("w0"), Some(&1));
        assert_eq!(open.get("w1"), Some(&1));
        let cameras: BTreeMap<String, usize> = [("worker-1".to_owned(), 2)].into();
        let open: BTreeMap<String, usize> = [("worker-2".to_owned(), 3)].into();
        assert_eq!(busiest(&open, &cameras, 3), 2);
        assert_eq!(busiest(&BTreeMap::new(), &cameras, 3), 1);
        assert_eq!(busiest(&BTreeMap::new(), &BTreeMap::new(), 3), 0);
    }

    #[test]
    fn a_recording_continued_in_time_with_one_short_gap_keeps_the_promises() {
        let (statuses, [a, ..]) = world();
        let playbacks = [view(a, "COMPLETED", true, &[(9_500, 21_000)])];
        let taken = assess("w0", t(10_000), &statuses, &playbacks);
        assert_eq!(taken.len(), 1);
        let x = &taken[0];
        assert_eq!(x.new_owner.as_deref(), Some("w1"));
        assert!((x.takeover_sec.unwrap() - 12.0).abs() < 1e-9);
        assert!((x.recording_for_sec - 9.0).abs() < 1e-9);
        let (before, after) = x.gap_around_kill.unwrap();
        assert!((before - 0.5).abs() < 1e-9 && (after - 11.0).abs() < 1e-9);
        assert!(x.problems.is_empty(), "{:?}", x.problems);
    }

    #[test]
    fn a_late_takeover_a_long_gap_and_a_whole_clip_are_each_caught() {
        let (mut statuses, [a, ..]) = world();
        statuses[4] = status(a, 26_000, "w1", Some("w0"), recording());
        let playbacks = [view(a, "COMPLETED", false, &[(9_000, 26_500)])];
        let problems = &assess("w0", t(10_000), &statuses, &playbacks)[0].problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("more than 15"), "{problems:?}");
        assert!(problems[1].contains("without partial"), "{problems:?}");
        let (statuses, [a, ..]) = world();
        let playbacks = [view(a, "COMPLETED", true, &[(5_000, 25_000)])];
        let problems = &assess("w0", t(10_000), &statuses, &playbacks)[0].problems;
        assert!(problems[0].starts_with("gap 20.000 s"), "{problems:?}");
    }

    #[test]
    fn a_recording_nobody_continued_or_continued_without_naming_the_owner_fails() {
        let (statuses, [a, ..]) = world();
        let playbacks = [view(a, "FAILED", false, &[])];
        let problems = &assess("w0", t(10_000), &statuses[..4], &playbacks)[0].problems;
        assert_eq!(
            problems,
            &vec![
                "no other worker continued it".to_owned(),
                "ended FAILED, not COMPLETED".to_owned()
            ]
        );
        let mut statuses = statuses;
        statuses[4].payload.takes_over_from = None;
        let problems = &assess("w0", t(10_000), &statuses, &playbacks)[0].problems;
        assert!(problems[0].contains("without naming w0"), "{problems:?}");
        assert_eq!(continued_from("w0", &world().0).len(), 1);
    }
}
