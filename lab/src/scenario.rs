//! The seeded, bounded scenario: cameras are created through the API, the scenario waits until a
//! worker captures each of them (`captureStatus.state == "capturing"`, learnt from the camera
//! catalog) and holds their pre-roll, then `MOTION` events are posted at a steady rate, each
//! ended after a random duration, while the fault schedule runs.
//!
//! Only a `201` to `POST /events` makes an event *acknowledged*: that is the promise the checker
//! holds the system to. The end of an event is retried (it is idempotent) while event-api is
//! down, for a bounded time. Every loop is bounded in count and time.

use crate::api::{Api, ApiError, Rolls};
use crate::cluster::{Cluster, ADMIN_USERNAME};
use crate::faults::{self, FaultKind, FaultRecord};
use crate::plant::{Plant, Planted};
use chrono::{DateTime, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// The knobs of one run.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub events: usize,
    /// Events per second.
    pub rate: f64,
    /// Shortest and longest event, in seconds.
    pub min_duration_sec: u64,
    pub max_duration_sec: u64,
    pub seed: u64,
    /// The fault kinds of the schedule (each at least once).
    pub faults: Vec<FaultKind>,
    pub plant: Option<Plant>,
    /// How long the end of one event is retried while event-api is unreachable.
    pub end_retry_for: Duration,
    /// How long [`FaultKind::NatsOutage`] keeps NATS stopped: longer than event-api's
    /// `STALE_PLAYBACK_SEC` ([`crate::RunOptions::stale_playback_sec`]).
    pub nats_outage: Duration,
    /// The cameras' `preRollSec`/`postRollSec` (event-api's defaults when `None`). When set, the
    /// checker also measures every completed clip against its window ([`crate::coverage`]).
    pub rolls: Option<Rolls>,
    /// When set, each event is posted with `occurredAt`: the request time minus a seeded random
    /// amount up to this (a trigger that reaches the API a little late).
    pub occurred_early: Option<Duration>,
    /// How long the scenario waits for every camera to be captured before the first event.
    pub capture_wait: Duration,
}

impl ScenarioConfig {
    pub fn new(events: usize, rate: f64, seed: u64) -> Self {
        Self {
            events,
            rate,
            min_duration_sec: 3,
            max_duration_sec: 12,
            seed,
            faults: FaultKind::ALL.to_vec(),
            plant: None,
            end_retry_for: Duration::from_secs(120),
            nats_outage: Duration::from_secs(180),
            rolls: None,
            occurred_early: None,
            capture_wait: Duration::from_secs(60),
        }
    }

    /// The coverage scenario (issue 16): no fault; cameras with `preRollSec=3`,
    /// `postRollSec=2`; every event posted with an `occurredAt` up to 500 ms before the request.
    pub fn coverage(events: usize, rate: f64, seed: u64) -> Self {
        Self {
            faults: Vec::new(),
            rolls: Some(Rolls {
                pre_sec: 3,
                post_sec: 2,
            }),
            occurred_early: Some(Duration::from_millis(500)),
            ..Self::new(events, rate, seed)
        }
    }

    /// How long the events take to post.
    pub fn posting_time(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / self.rate.max(0.01))
    }
}

/// One event the scenario posted.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub index: usize,
    pub camera_id: Uuid,
    /// The `occurredAt` sent with the create, if one was.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When the create was sent, from the start of the scenario.
    pub posted_at: Duration,
    /// `None` when `POST /events` did not answer 201 (not acknowledged).
    pub event_id: Option<Uuid>,
    pub playback_id: Option<Uuid>,
    /// The duration the scenario wanted.
    pub planned: Duration,
    /// From the 201 of the create to the 200 of the end: what the user asked to be recorded.
    pub requested: Option<Duration>,
    /// Whether `POST /events/:id/end` answered 200 (within the retry window).
    pub end_acknowledged: bool,
    /// Why the create was not acknowledged.
    pub create_error: Option<String>,
}

/// Everything the checker needs to know about what the scenario did.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub events: Vec<EventRecord>,
    pub faults: Vec<FaultRecord>,
    pub planted: Vec<Planted>,
    pub cameras: Vec<Uuid>,
    /// The cameras' rolls, when the scenario set them.
    pub rolls: Option<Rolls>,
    pub elapsed: Duration,
}

impl Ledger {
    /// The most events open at once on one camera (from each create to the `200` of its end).
    pub fn max_overlap(&self) -> usize {
        let mut edges: Vec<(Uuid, Duration, i32)> = Vec::new();
        for e in self.acknowledged() {
            if let Some(lasted) = e.requested {
                edges.push((e.camera_id, e.posted_at, 1));
                edges.push((e.camera_id, e.posted_at + lasted, -1));
            }
        }
        // Per camera, by time, an end before a start at the same instant.
        edges.sort_by_key(|&(camera, at, delta)| (camera, at, delta));
        let (mut best, mut open, mut camera) = (0i32, 0i32, None);
        for (c, _, delta) in edges {
            if camera != Some(c) {
                (camera, open) = (Some(c), 0);
            }
            open += delta;
            best = best.max(open);
        }
        usize::try_from(best).unwrap_or(0)
    }

    /// The events that got a 201 with a playback.
    pub fn acknowledged(&self) -> impl Iterator<Item = &EventRecord> {
        self.events
            .iter()
            .filter(|e| e.event_id.is_some() && e.playback_id.is_some())
    }
}

/// The scenario could not even begin.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("event-api: {0}")]
    Api(#[from] ApiError),
    #[error("camera {camera_id} not captured within {waited:?} (captureStatus: {state})")]
    NotCaptured {
        camera_id: Uuid,
        state: String,
        waited: Duration,
    },
}

/// Logs in, creates one API camera per fake camera, waits until each is captured, then runs the
/// events and the fault schedule side by side until both are done.
pub async fn run(cluster: &mut Cluster, config: &ScenarioConfig) -> Result<Ledger, ScenarioError> {
    let api = Api::login(&cluster.api_url(), ADMIN_USERNAME, cluster.admin_password()).await?;
    let cameras = create_cameras(cluster, &api, config.rolls).await?;
    wait_captured(&api, &cameras, config).await?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let shape = faults::Shape {
        workers: cluster.workers.len(),
        cameras: cluster.cameras.len(),
        nats_outage: config.nats_outage,
    };
    let schedule = faults::schedule(config.posting_time(), &config.faults, shape, &mut rng);
    let plan = plan(config, &cameras, &mut rng);
    let start = Instant::now();
    let mut plant = config.plant.filter(|p| *p == Plant::DropOutbox);
    let mut planted = Vec::new();
    let injector = async {
        let mut records = Vec::new();
        for fault in &schedule {
            tokio::time::sleep_until(start + fault.at).await;
            let at = start.elapsed().as_secs_f64();
            records.push(faults::inject(cluster, fault, at, &mut plant, &mut planted).await);
        }
        records
    };
    let (events, fault_records) = tokio::join!(post_events(&api, config, &plan, start), injector);
    Ok(Ledger {
        events,
        faults: fault_records,
        planted,
        cameras,
        rolls: config.rolls,
        elapsed: start.elapsed(),
    })
}

/// One API camera per fake camera of the cluster, with `rolls`; their ids.
pub async fn create_cameras(
    cluster: &Cluster,
    api: &Api,
    rolls: Option<Rolls>,
) -> Result<Vec<Uuid>, ScenarioError> {
    let mut cameras = Vec::new();
    for (i, cam) in cluster.cameras.iter().enumerate() {
        let channel = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let name = format!("lab camera {}", i + 1);
        cameras.push(api.create_camera(&name, &cam.url(), channel, rolls).await?);
    }
    Ok(cameras)
}

/// Waits (up to `capture_wait`) until a worker reports every camera `capturing`, then until
/// each capture has been running for its pre-roll plus a keyframe interval, so that the first
/// events find their pre-roll in the ring. Returns when the last capture started.
pub async fn wait_captured(
    api: &Api,
    cameras: &[Uuid],
    config: &ScenarioConfig,
) -> Result<DateTime<Utc>, ScenarioError> {
    let started = Instant::now();
    let deadline = started + config.capture_wait;
    let mut since = DateTime::<Utc>::MIN_UTC;
    for &camera_id in cameras {
        loop {
            let state = match api.capture_status(camera_id).await {
                Ok(s) if s.state == "capturing" => {
                    since = since.max(s.since.unwrap_or_else(Utc::now));
                    break;
                }
                Ok(s) => s.state,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ScenarioError::NotCaptured {
                    camera_id,
                    state,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let pre_roll = config.rolls.map_or(5, |r| u64::from(r.pre_sec));
    let held_from = since + chrono::TimeDelta::seconds(i64::try_from(pre_roll + 1).unwrap_or(60));
    let wait = (held_from - Utc::now()).to_std().unwrap_or_default();
    tracing::info!(
        cameras = cameras.len(),
        after = ?started.elapsed(),
        pre_roll_wait = ?wait,
        "every camera is captured"
    );
    tokio::time::sleep(wait).await;
    Ok(since)
}

/// The events of a run, drawn from `rng`: event `i` on camera `i mod cameras`, with a duration
/// in `[min_duration_sec, max_duration_sec]` and, when the config says so, an earlier
/// `occurredAt`.
pub fn plan(config: &ScenarioConfig, cameras: &[Uuid], rng: &mut StdRng) -> Vec<Planned> {
    (0..config.events)
        .map(|i| {
            let secs = rng.gen_range(config.min_duration_sec..=config.max_duration_sec);
            let early = config
                .occurred_early
                .map(|max| Duration::from_millis(rng.gen_range(0..=max.as_millis() as u64)));
            Planned {
                camera_id: cameras[i % cameras.len()],
                duration: Duration::from_secs(secs),
                early,
            }
        })
        .collect()
}

/// Posts event `i` at `start + i / rate`, ends it after its duration; returns every record.
pub async fn post_events(
    api: &Api,
    config: &ScenarioConfig,
    plan: &[Planned],
    start: Instant,
) -> Vec<EventRecord> {
    let mut tasks = JoinSet::new();
    for (index, planned) in plan.iter().copied().enumerate() {
        let due = start + Duration::from_secs_f64(index as f64 / config.rate.max(0.01));
        tokio::time::sleep_until(due).await;
        let api = api.clone();
        let retry_for = config.end_retry_for;
        tasks.spawn(async move { one_event(&api, index, planned, start, retry_for).await });
        if (index + 1) % 50 == 0 {
            tracing::info!(posted = index + 1, of = plan.len(), "events");
        }
    }
    let mut out: Vec<EventRecord> = tasks.join_all().await;
    out.sort_by_key(|e| e.index);
    out
}

/// One event of the plan: on which camera, how long, and how much earlier than its request
/// its `occurredAt` is (`None`: not sent).
#[derive(Clone, Copy, Debug)]
pub struct Planned {
    camera_id: Uuid,
    duration: Duration,
    early: Option<Duration>,
}

async fn one_event(
    api: &Api,
    index: usize,
    plan: Planned,
    start: Instant,
    retry_for: Duration,
) -> EventRecord {
    let occurred_at = plan.early.map(|early| {
        Utc::now().trunc_subsecs(6) - chrono::TimeDelta::from_std(early).unwrap_or_default()
    });
    let mut record = EventRecord {
        index,
        camera_id: plan.camera_id,
        occurred_at,
        posted_at: start.elapsed(),
        event_id: None,
        playback_id: None,
        planned: plan.duration,
        requested: None,
        end_acknowledged: false,
        create_error: None,
    };
    let created = match api.create_event(plan.camera_id, occurred_at).await {
        Ok(c) => c,
        Err(e) => {
            record.create_error = Some(e.to_string());
            return record;
        }
    };
    let acked_at = Instant::now();
    record.event_id = Some(created.id);
    record.playback_id = created.playback_id;
    tokio::time::sleep(plan.duration).await;
    let deadline = Instant::now() + retry_for;
    loop {
        match api.end_event(created.id).await {
            Ok(()) => {
                record.end_acknowledged = true;
                record.requested = Some(acked_at.elapsed());
                return record;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(event_id = %created.id, error = %e, "end not acknowledged yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::warn!(event_id = %created.id, error = %e, "end never acknowledged");
                return record;
            }
        }
    }
}
