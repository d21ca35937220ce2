//! The checker: after the scenario, waits (bounded) until every playback is terminal, then reads
//! the outcome from four places and holds them against each other:
//! - the REST API (`GET /playbacks`, page by page): what the user sees;
//! - the object store (the S3 server's keys, `HEAD` of each clip): what is really stored;
//! - the streams (every message of `EVENTS` and `PLAYBACKS`): what was announced, how often;
//! - PostgreSQL (the outbox): what was committed and what was published.
//!
//! A *loss* is an acknowledged event (201) whose playback never became terminal within the
//! deadline, a `COMPLETED` playback without its object (or with an object of another size), or
//! an acknowledged create or end whose message never reached the stream. *Stuck* is any
//! playback still non-terminal. A clip in the object store whose playback is not `COMPLETED`
//! (e.g. failed `worker_lost` while its statuses waited out a NATS outage) fails the run too: the
//! recording was made and kept, but the user is told it failed. A *duplicate* is a second recording of one playback (two workers
//! recorded it, or two different clips were completed), a second `event.created`/`event.ended`
//! message for one event, an unexpected object under a playback's prefix, or uploaded segments
//! of two camera holders (two epochs) that overlap in time.

use crate::api::{Api, ApiError, PlaybackView};
use crate::cluster::Cluster;
use crate::coverage::{self, CoverageReport, Expectation};
use crate::faults::FaultKind;
use crate::plant::Planted;
use crate::scenario::Ledger;
use camrec_shared::messages::{Envelope, EventCreated, EventEnded, PlaybackStatus, StatusBody};
use camrec_shared::storage::ObjectKey;
use camrec_shared::subjects::{EventKind, Subject, EVENTS_STREAM, PLAYBACKS_STREAM};
use object_store::ObjectStore;
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// The outcome could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("event-api: {0}")]
    Api(#[from] ApiError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("object store: {0}")]
    Store(String),
}

/// Why an acknowledged event counts as lost.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LossKind {
    /// The API does not know its playback.
    NoPlayback,
    /// Its playback was still in this state at the deadline.
    NotTerminal(String),
    /// `COMPLETED`, but the clip is not in the object store.
    CompletedWithoutObject,
    /// `COMPLETED`, but the stored clip is not the size the playback says.
    ObjectSizeMismatch { api: Option<u64>, stored: u64 },
    /// No `event.created` message for it ever reached `EVENTS`.
    CreatedNeverPublished,
    /// Its end was acknowledged (200) but no `event.ended` reached `EVENTS`.
    EndNeverPublished,
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossKind::NoPlayback => f.write_str("no playback"),
            LossKind::NotTerminal(s) => write!(f, "never terminal (still {s})"),
            LossKind::CompletedWithoutObject => f.write_str("COMPLETED without object"),
            LossKind::ObjectSizeMismatch { api, stored } => {
                write!(f, "object size {stored} != fileSizeBytes {api:?}")
            }
            LossKind::CreatedNeverPublished => f.write_str("event.created never published"),
            LossKind::EndNeverPublished => f.write_str("event.ended never published"),
        }
    }
}

/// One lost event.
#[derive(Clone, Debug)]
pub struct Loss {
    pub event_id: Uuid,
    pub playback_id: Uuid,
    pub kind: LossKind,
}

/// One duplicate.
#[derive(Clone, Debug)]
pub struct Duplicate {
    /// The playback or event it concerns.
    pub id: Uuid,
    pub what: String,
}

/// Outbox rows of one kind (`event.created`, `event.ended`, `playback.failed`, ...).
#[derive(Clone, Debug, Default)]
pub struct OutboxCount {
    pub committed: i64,
    pub published: i64,
}

/// The checker's verdict and figures.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub posted: usize,
    pub acknowledged: usize,
    pub not_acknowledged: usize,
    pub end_not_acknowledged: usize,
    pub terminal: usize,
    pub completed: usize,
    pub failed_by_reason: BTreeMap<String, usize>,
    pub lost: Vec<Loss>,
    /// Playbacks (acknowledged or not) still non-terminal at the deadline.
    pub stuck: Vec<(Uuid, String)>,
    pub duplicates: Vec<Duplicate>,
    /// Playbacks the API shows that the scenario never got a 201 for (their create answered
    /// late or not at all, yet committed): checked for stuck, not counted as acknowledged.
    pub unacknowledged_playbacks: usize,
    pub outbox: BTreeMap<String, OutboxCount>,
    pub events_messages: BTreeMap<String, usize>,
    pub playbacks_messages: BTreeMap<String, usize>,
    pub undecodable_messages: usize,
    pub objects: usize,
    /// Clips in the object store whose playback is not `COMPLETED`: (playback, its status).
    pub clips_not_completed: Vec<(Uuid, String)>,
    pub recorded_sec: f64,
    pub requested_sec: f64,
    pub faults: BTreeMap<String, usize>,
    pub fault_errors: Vec<String>,
    /// Children (FFmpeg, ffprobe) killed with their worker.
    pub killed_children: usize,
    /// Children of killed workers that outlived them.
    pub orphan_processes: usize,
    /// Per NATS outage: how many playbacks were `RECORDING` when NATS was stopped.
    pub recordings_at_outage: Vec<usize>,
    pub planted: Vec<Planted>,
    pub elapsed: Duration,
    pub waited: Duration,
    /// The coverage of the completed clips, when the scenario set the cameras' rolls.
    pub coverage: Option<CoverageReport>,
    /// Per fake camera: the most RTSP sessions open at once, and how many were opened in all
    /// (one capture per camera: the peak stays 1 however many events overlap).
    pub rtsp_sessions: Vec<(u64, u64)>,
    /// The most events open at once on one camera.
    pub max_overlap: usize,
}

impl Report {
    /// No loss, nothing stuck, no duplicate, every stored clip `COMPLETED`, every fault undone,
    /// no orphan process; and, when coverage was measured, every completed clip within its
    /// window.
    pub fn passed(&self) -> bool {
        self.coverage
            .as_ref()
            .is_none_or(|c| c.violations.is_empty())
            && self.lost.is_empty()
            && self.stuck.is_empty()
            && self.duplicates.is_empty()
            && self.clips_not_completed.is_empty()
            && self.fault_errors.is_empty()
            && self.orphan_processes == 0
    }

    /// How many acknowledged events are lost (an event may be lost in more than one way).
    pub fn lost_events(&self) -> usize {
        self.lost
            .iter()
            .map(|l| l.event_id)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// True when every planted defect shows up as a loss of the event or playback it broke.
    pub fn caught_every_plant(&self) -> bool {
        !self.planted.is_empty()
            && self.planted.iter().all(|p| {
                self.lost.iter().any(|l| match p {
                    Planted::OutboxRow { event_id } => l.event_id == *event_id,
                    Planted::Object { playback_id } => l.playback_id == *playback_id,
                })
            })
    }
}

/// Waits until no playback is non-terminal, or `deadline` passes. Returns how long it waited.
pub async fn wait_terminal(api: &Api, ledger: &Ledger, deadline: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    let expected: BTreeSet<Uuid> = ledger
        .acknowledged()
        .filter_map(|e| e.playback_id)
        .collect();
    let mut last_log = started;
    loop {
        let open = match api.all_playbacks().await {
            Ok(all) => {
                let seen: BTreeSet<Uuid> = all.iter().map(|p| p.id).collect();
                all.iter().filter(|p| !p.is_terminal()).count() + expected.difference(&seen).count()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list playbacks yet");
                usize::MAX
            }
        };
        if open == 0 || started.elapsed() >= deadline {
            return started.elapsed();
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!(open, "waiting for playbacks to finish");
            last_log = tokio::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Reads the outcome and builds the [`Report`].
pub async fn check(cluster: &Cluster, api: &Api, ledger: &Ledger) -> Result<Report, CheckError> {
    let playbacks = api.all_playbacks().await?;
    let streams = read_streams(&cluster.nats.url_as(testkit::NatsUser::Admin)).await?;
    let objects = cluster.s3.keys();
    let outbox = read_outbox(&cluster.database_url()).await?;
    let storage = cluster
        .s3
        .storage()
        .map_err(|e| CheckError::Store(e.to_string()))?;
    let mut sizes = HashMap::new();
    for p in playbacks
        .iter()
        .filter(|p| p.recording_status == "COMPLETED")
    {
        let key = ObjectKey::Video(camrec_shared::PlaybackId(p.id));
        match storage.store().head(&key.path()).await {
            Ok(meta) => {
                sizes.insert(p.id, meta.size);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(CheckError::Store(e.to_string())),
        }
    }
    let mut report = assess(ledger, &playbacks, &streams, &objects, &sizes);
    report.outbox = outbox;
    if let Some(rolls) = ledger.rolls {
        let max = Duration::from_secs(cluster.config.max_recording_sec);
        let expect = Expectation::lab(rolls, max);
        report.coverage = Some(measure_coverage(&storage, ledger, &playbacks, &expect).await);
    }
    Ok(report)
}

/// Downloads and probes the clip of every `COMPLETED` playback of an acknowledged event and
/// measures it against its window ([`coverage`]).
pub async fn measure_coverage(
    storage: &camrec_shared::storage::Storage,
    ledger: &Ledger,
    playbacks: &[PlaybackView],
    expect: &Expectation,
) -> CoverageReport {
    let acknowledged: BTreeSet<Uuid> = ledger
        .acknowledged()
        .filter_map(|e| e.playback_id)
        .collect();
    let mut report = CoverageReport {
        rolls: Some(expect.rolls),
        ..CoverageReport::default()
    };
    let completed = playbacks
        .iter()
        .filter(|p| p.recording_status == "COMPLETED" && acknowledged.contains(&p.id));
    for p in completed {
        let measured = match download_duration(storage, p.id).await {
            Ok(file_sec) => coverage::measure(p, file_sec, expect),
            Err(why) => Err(coverage::Violation::Unreadable(why)),
        };
        match measured {
            Ok(clip) => {
                report.violations.extend(
                    coverage::judge(&clip, expect)
                        .into_iter()
                        .map(|v| (p.id, v)),
                );
                report.clips.push(clip);
            }
            Err(v) => report.violations.push((p.id, v)),
        }
    }
    report
}

/// The probed duration of the playback's clip, downloaded from the object store.
async fn download_duration(
    storage: &camrec_shared::storage::Storage,
    playback_id: Uuid,
) -> Result<f64, String> {
    let key = ObjectKey::Video(camrec_shared::PlaybackId(playback_id));
    let bytes = async { storage.store().get(&key.path()).await?.bytes().await }
        .await
        .map_err(|e| e.to_string())?;
    let file = tempfile::Builder::new()
        .prefix("camrec-lab-clip-")
        .suffix(".mp4")
        .tempfile()
        .map_err(|e| e.to_string())?;
    tokio::fs::write(file.path(), &bytes)
        .await
        .map_err(|e| e.to_string())?;
    coverage::probe_duration(file.path()).await
}

/// What the streams hold, counted.
#[derive(Clone, Debug, Default)]
pub struct StreamCounts {
    pub created: HashMap<Uuid, usize>,
    pub ended: HashMap<Uuid, usize>,
    /// Per playback: the SHA-256 of every `completed` message.
    pub completed: HashMap<Uuid, Vec<String>>,
    /// Per playback: the workers that said they were recording it.
    pub recorders: HashMap<Uuid, BTreeSet<String>>,
    /// Per playback: `(worker, the worker it says it took the camera over from)`, from the
    /// statuses carrying `takes_over_from`.
    pub takeovers: HashMap<Uuid, BTreeSet<(String, String)>>,
    pub events_by_kind: BTreeMap<String, usize>,
    pub playbacks_by_kind: BTreeMap<String, usize>,
    pub undecodable: usize,
}

impl StreamCounts {
    fn add_event(&mut self, subject: &str, payload: &[u8]) {
        let kind = match Subject::parse(subject) {
            Ok(Subject::Event { kind, .. }) => kind,
            _ => {
                self.undecodable += 1;
                return;
            }
        };
        *self
            .events_by_kind
            .entry(format!("event.{}", kind.as_str()))
            .or_default() += 1;
        let event_id = match kind {
            EventKind::Created => {
                Envelope::<EventCreated>::from_slice(payload).map(|e| e.payload.event_id.0)
            }
            EventKind::Ended => {
                Envelope::<EventEnded>::from_slice(payload).map(|e| e.payload.event_id.0)
            }
        };
        match (event_id, kind) {
            (Ok(id), EventKind::Created) => *self.created.entry(id).or_default() += 1,
            (Ok(id), EventKind::Ended) => *self.ended.entry(id).or_default() += 1,
            (Err(_), _) => self.undecodable += 1,
        }
    }

    fn add_status(&mut self, subject: &str, payload: &[u8]) {
        let Ok(env) = Envelope::<PlaybackStatus>::from_slice(payload) else {
            self.undecodable += 1;
            return;
        };
        let status = env.payload;
        let token = subject.split('.').nth(1).unwrap_or("?");
        *self
            .playbacks_by_kind
            .entry(format!("playback.{token}"))
            .or_default() += 1;
        let id = status.playback_id.0;
        if let Some(previous) = &status.takes_over_from {
            self.takeovers
                .entry(id)
                .or_default()
                .insert((status.worker_id.clone(), previous.clone()));
        }
        match &status.body {
            StatusBody::Recording { .. } | StatusBody::Progress { .. } => {
                self.recorders
                    .entry(id)
                    .or_default()
                    .insert(status.worker_id.clone());
            }
            StatusBody::Completed(clip) => {
                self.recorders
                    .entry(id)
                    .or_default()
                    .insert(status.worker_id.clone());
                self.completed
                    .entry(id)
                    .or_default()
                    .push(clip.sha256.clone());
            }
            StatusBody::Processing { .. } | StatusBody::Failed { .. } => {}
        }
    }
}

/// Reads every message of `EVENTS` and `PLAYBACKS` (by sequence; the lab's streams are small),
/// connected to `nats_url` (with a login that may read both streams).
pub async fn read_streams(nats_url: &str) -> Result<StreamCounts, CheckError> {
    let js = jetstream(nats_url).await?;
    let mut counts = StreamCounts::default();
    each_message(&js, EVENTS_STREAM, |subject, payload| {
        counts.add_event(subject, payload)
    })
    .await?;
    each_message(&js, PLAYBACKS_STREAM, |subject, payload| {
        counts.add_status(subject, payload)
    })
    .await?;
    Ok(counts)
}

/// Every status message of `PLAYBACKS` that decodes, in stream order, with its envelope (whose
/// `occurred_at` is when its worker sent it).
pub async fn read_statuses(nats_url: &str) -> Result<Vec<Envelope<PlaybackStatus>>, CheckError> {
    let js = jetstream(nats_url).await?;
    let mut out = Vec::new();
    each_message(&js, PLAYBACKS_STREAM, |_, payload| {
        out.extend(Envelope::<PlaybackStatus>::from_slice(payload).ok())
    })
    .await?;
    Ok(out)
}

fn nats_error(e: &dyn fmt::Display) -> CheckError {
    CheckError::Nats(e.to_string())
}

async fn jetstream(nats_url: &str) -> Result<async_nats::jetstream::Context, CheckError> {
    let client = camrec_shared::natsconn::NatsConfig::from_url(nats_url)
        .map_err(|e| nats_error(&e))?
        .connect("_INBOX")
        .await
        .map_err(|e| nats_error(&e))?;
    Ok(async_nats::jetstream::new(client))
}

/// Calls `f` with the subject and payload of every message of the stream `name`, by sequence.
async fn each_message(
    js: &async_nats::jetstream::Context,
    name: &str,
    mut f: impl FnMut(&str, &[u8]),
) -> Result<(), CheckError> {
    let mut stream = js.get_stream(name).await.map_err(|e| nats_error(&e))?;
    let state = stream
        .info()
        .await
        .map_err(|e| nats_error(&e))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(());
    }
    for seq in state.first_sequence..=state.last_sequence {
        match stream.get_raw_message(seq).await {
            Ok(msg) => f(msg.subject.as_str(), &msg.payload),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(nats_error(&e)),
        }
    }
    Ok(())
}

/// Outbox rows by kind (`<root>.<kind>` of the subject): committed and published.
pub async fn read_outbox(database_url: &str) -> Result<BTreeMap<String, OutboxCount>, CheckError> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT split_part(subject, '.', 1) || '.' || split_part(subject, '.', 2),
                count(*), count(published_at)
         FROM outbox GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(rows
        .into_iter()
        .map(|(kind, committed, published)| {
            (
                kind,
                OutboxCount {
                    committed,
                    published,
                },
            )
        })
        .collect())
}

/// The pure part of the checker: holds the API's view, the streams and the store against the
/// ledger. `sizes` holds the stored size of each `COMPLETED` playback's clip that exists.
pub fn assess(
    ledger: &Ledger,
    playbacks: &[PlaybackView],
    streams: &StreamCounts,
    object_keys: &[String],
    sizes: &HashMap<Uuid, u64>,
) -> Report {
    let by_id: HashMap<Uuid, &PlaybackView> = playbacks.iter().map(|p| (p.id, p)).collect();
    let mut r = Report {
        posted: ledger.events.len(),
        not_acknowledged: ledger
            .events
            .iter()
            .filter(|e| e.event_id.is_none())
            .count(),
        planted: ledger.planted.clone(),
        elapsed: ledger.elapsed,
        events_messages: streams.events_by_kind.clone(),
        playbacks_messages: streams.playbacks_by_kind.clone(),
        undecodable_messages: streams.undecodable,
        objects: object_keys.len(),
        max_overlap: ledger.max_overlap(),
        ..Report::default()
    };
    let mut acknowledged_playbacks = BTreeSet::new();
    for e in ledger.acknowledged() {
        let (Some(event_id), Some(playback_id)) = (e.event_id, e.playback_id) else {
            continue;
        };
        r.acknowledged += 1;
        acknowledged_playbacks.insert(playback_id);
        let mut lose = |kind| {
            r.lost.push(Loss {
                event_id,
                playback_id,
                kind,
            })
        };
        match streams.created.get(&event_id).copied().unwrap_or(0) {
            0 => lose(LossKind::CreatedNeverPublished),
            1 => {}
            n => r.duplicates.push(Duplicate {
                id: event_id,
                what: format!("{n} event.created messages"),
            }),
        }
        if e.end_acknowledged {
            r.requested_sec += e.requested.map_or(0.0, |d| d.as_secs_f64());
            match streams.ended.get(&event_id).copied().unwrap_or(0) {
                0 => lose(LossKind::EndNeverPublished),
                1 => {}
                n => r.duplicates.push(Duplicate {
                    id: event_id,
                    what: format!("{n} event.ended messages"),
                }),
            }
        } else {
            r.end_not_acknowledged += 1;
        }
        let Some(p) = by_id.get(&playback_id) else {
            lose(LossKind::NoPlayback);
            continue;
        };
        match p.recording_status.as_str() {
            "COMPLETED" => {
                r.terminal += 1;
                r.completed += 1;
                r.recorded_sec += p.duration_sec.unwrap_or(0.0);
                match sizes.get(&playback_id) {
                    None => lose(LossKind::CompletedWithoutObject),
                    Some(&stored) if p.file_size_bytes != Some(stored) => {
                        lose(LossKind::ObjectSizeMismatch {
                            api: p.file_size_bytes,
                            stored,
                        })
                    }
                    Some(_) => {}
                }
            }
            "FAILED" => {
                r.terminal += 1;
                let reason = p.error_code.clone().unwrap_or_else(|| "(none)".into());
                *r.failed_by_reason.entry(reason).or_default() += 1;
            }
            other => lose(LossKind::NotTerminal(other.to_owned())),
        }
    }
    r.unacknowledged_playbacks = playbacks
        .iter()
        .filter(|p| !acknowledged_playbacks.contains(&p.id))
        .count();
    r.stuck = playbacks
        .iter()
        .filter(|p| !p.is_terminal())
        .map(|p| (p.id, p.recording_status.clone()))
        .collect();
    for (id, workers) in &streams.recorders {
        let no_takeover = BTreeSet::new();
        let takeovers = streams.takeovers.get(id).unwrap_or(&no_takeover);
        if workers.len() > 1 && independent_recorders(workers, takeovers) != 1 {
            r.duplicates.push(Duplicate {
                id: *id,
                what: format!(
                    "recorded by {} workers ({}), not one handing over to the next",
                    workers.len(),
                    workers.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    for (id, shas) in &streams.completed {
        let distinct: BTreeSet<&String> = shas.iter().collect();
        if distinct.len() > 1 {
            r.duplicates.push(Duplicate {
                id: *id,
                what: format!("{} different clips completed", distinct.len()),
            });
        }
    }
    let mut segments: BTreeMap<Uuid, Vec<camrec_shared::storage::SegmentName>> = BTreeMap::new();
    for key in object_keys {
        match ObjectKey::parse(key) {
            Some(ObjectKey::Segment(id, name)) => segments.entry(id.0).or_default().push(name),
            Some(ObjectKey::Video(id)) => {
                let status = by_id
                    .get(&id.0)
                    .map_or("(unknown playback)", |p| p.recording_status.as_str());
                if status != "COMPLETED" {
                    r.clips_not_completed.push((id.0, status.to_owned()));
                }
            }
            Some(_) => {}
            None => r.duplicates.push(Duplicate {
                id: Uuid::nil(),
                what: format!("unexpected object {key}"),
            }),
        }
    }
    for (id, mut names) in segments {
        names.sort();
        for pair in names.windows(2) {
            if pair[1].start_ms < pair[0].end_ms() && pair[0].epoch != pair[1].epoch {
                r.duplicates.push(Duplicate {
                    id,
                    what: format!(
                        "segments of two holders overlap: epochs {} and {} at {}",
                        pair[0].epoch, pair[1].epoch, pair[1].start_ms
                    ),
                });
            }
        }
    }
    r.faults = ledger.faults.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.kind.to_string()).or_default() += 1;
        m
    });
    r.fault_errors = ledger
        .faults
        .iter()
        .filter_map(|f| {
            f.error
                .as_ref()
                .map(|e| format!("{} at {:.0}s: {e}", f.kind, f.at_sec))
        })
        .collect();
    r.killed_children = ledger.faults.iter().map(|f| f.children).sum();
    r.orphan_processes = ledger.faults.iter().map(|f| f.orphans).sum();
    r.recordings_at_outage = ledger
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::NatsOutage)
        .map(|f| f.recordings)
        .collect();
    r.lost
        .sort_by(|a, b| a.kind.cmp(&b.kind).then(a.event_id.cmp(&b.event_id)));
    r
}

/// How many of a playback's `recorders` started recording it on their own, rather than by
/// taking the camera over from another of its recorders (`takeovers`: `(worker, previous)`).
/// One is a recording handed on from holder to holder; more than one is two workers recording
/// the same playback (and none a handover loop).
fn independent_recorders(
    recorders: &BTreeSet<String>,
    takeovers: &BTreeSet<(String, String)>,
) -> usize {
    recorders
        .iter()
        .filter(|w| {
            !takeovers
                .iter()
                .any(|(by, from)| by == *w && from != *w && recorders.contains(from))
        })
        .count()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        row("events posted", self.posted.to_string());
        row("acknowledged (201)", self.acknowledged.to_string());
        row("not acknowledged", self.not_acknowledged.to_string());
        row(
            "end not acknowledged",
            self.end_not_acknowledged.to_string(),
        );
        row(
            "terminal",
            format!("{} of {}", self.terminal, self.acknowledged),
        );
        row("COMPLETED", self.completed.to_string());
        let failed: usize = self.failed_by_reason.values().sum();
        row("FAILED", failed.to_string());
        for (reason, n) in &self.failed_by_reason {
            row(&format!("  FAILED {reason}"), n.to_string());
        }
        row("LOST", self.lost_events().to_string());
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for l in &self.lost {
            let kind = match &l.kind {
                LossKind::NotTerminal(_) => "never terminal".to_owned(),
                LossKind::ObjectSizeMismatch { .. } => "object size mismatch".to_owned(),
                other => other.to_string(),
            };
            *by_kind.entry(kind).or_default() += 1;
        }
        for (kind, n) in by_kind {
            row(&format!("  lost: {kind}"), n.to_string());
        }
        row("STUCK (non-terminal)", self.stuck.len().to_string());
        row("DUPLICATES", self.duplicates.len().to_string());
        row(
            "other playbacks (no 201)",
            self.unacknowledged_playbacks.to_string(),
        );
        for (kind, c) in &self.outbox {
            row(
                &format!("outbox {kind}"),
                format!("committed {} / published {}", c.committed, c.published),
            );
        }
        for (kind, n) in &self.events_messages {
            row(&format!("stream EVENTS {kind}"), n.to_string());
        }
        for (kind, n) in &self.playbacks_messages {
            row(&format!("stream PLAYBACKS {kind}"), n.to_string());
        }
        row(
            "undecodable messages",
            self.undecodable_messages.to_string(),
        );
        row("objects stored", self.objects.to_string());
        row(
            "CLIPS STORED, NOT COMPLETED",
            self.clips_not_completed.len().to_string(),
        );
        let ratio = if self.requested_sec > 0.0 {
            100.0 * self.recorded_sec / self.requested_sec
        } else {
            0.0
        };
        row(
            "recorded / requested s",
            format!(
                "{:.0} / {:.0} ({ratio:.1}%)",
                self.recorded_sec, self.requested_sec
            ),
        );
        for (kind, n) in &self.faults {
            row(&format!("fault: {kind}"), n.to_string());
        }
        if !self.recordings_at_outage.is_empty() {
            let counts: Vec<String> = self
                .recordings_at_outage
                .iter()
                .map(ToString::to_string)
                .collect();
            row("RECORDING at each NATS outage", counts.join(", "));
        }
        row("faults not undone", self.fault_errors.len().to_string());
        row(
            "most events open on one camera",
            self.max_overlap.to_string(),
        );
        if !self.rtsp_sessions.is_empty() {
            let per_camera: Vec<String> = self
                .rtsp_sessions
                .iter()
                .map(|(peak, total)| format!("{peak}/{total}"))
                .collect();
            row(
                "RTSP sessions per camera: peak/total",
                per_camera.join(", "),
            );
        }
        row(
            "children of killed workers / alive after",
            format!("{} / {}", self.killed_children, self.orphan_processes),
        );
        row(
            "scenario / drain s",
            format!(
                "{:.0} / {:.0}",
                self.elapsed.as_secs_f64(),
                self.waited.as_secs_f64()
            ),
        );
        if let Some(c) = &self.coverage {
            for (k, v) in c.rows() {
                row(&k, v);
            }
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        row("VERDICT", verdict.to_owned());
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let line = "-".repeat(width + 24);
        writeln!(f, "{line}")?;
        for (k, v) in &rows {
            writeln!(f, "{k:<width$} | {v}")?;
        }
        writeln!(f, "{line}")?;
        for l in self.lost.iter().take(20) {
            writeln!(
                f,
                "lost: event {} playback {}: {}",
                l.event_id, l.playback_id, l.kind
            )?;
        }
        for (id, status) in self.stuck.iter().take(20) {
            writeln!(f, "stuck: playback {id} in {status}")?;
        }
        for d in self.duplicates.iter().take(20) {
            writeln!(f, "duplicate: {} {}", d.id, d.what)?;
        }
        for (id, status) in self.clips_not_completed.iter().take(20) {
            writeln!(f, "clip stored, playback {id} is {status}")?;
        }
        for e in &self.fault_errors {
            writeln!(f, "fault not undone: {e}")?;
        }
        for p in &self.planted {
            writeln!(f, "planted: {p:?}")?;
        }
        if let Some(c) = &self.coverage {
            for (id, v) in c.violations.iter().take(20) {
                writeln!(f, "coverage: playback {id} {v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NestedEvent;
    use crate::scenario::EventRecord;

    fn ledger(n: usize) -> Ledger {
        Ledger {
            events: (0..n)
                .map(|index| EventRecord {
                    index,
                    camera_id: Uuid::new_v4(),
                    event_id: Some(Uuid::new_v4()),
                    playback_id: Some(Uuid::new_v4()),
                    planned: Duration::from_secs(5),
                    requested: Some(Duration::from_secs(5)),
                    occurred_at: None,
                    posted_at: Duration::ZERO,
                    end_acknowledged: true,
                    create_error: None,
                })
                .collect(),
            faults: Vec::new(),
            planted: Vec::new(),
            cameras: Vec::new(),
            rolls: None,
            elapsed: Duration::from_secs(60),
        }
    }

    /// The world in which every acknowledged event completed, once, with its object.
    fn perfect(
        l: &Ledger,
    ) -> (
        Vec<PlaybackView>,
        StreamCounts,
        Vec<String>,
        HashMap<Uuid, u64>,
    ) {
        let mut streams = StreamCounts::default();
        let mut playbacks = Vec::new();
        let mut keys = Vec::new();
        let mut sizes = HashMap::new();
        for e in l.acknowledged() {
            let (ev, pb) = (e.event_id.unwrap(), e.playback_id.unwrap());
            streams.created.insert(ev, 1);
            streams.ended.insert(ev, 1);
            streams.completed.insert(pb, vec!["abc".into()]);
            streams.recorders.insert(pb, ["w0".to_owned()].into());
            playbacks.push(PlaybackView {
                id: pb,
                recording_status: "COMPLETED".into(),
                file_size_bytes: Some(1000),
                duration_sec: Some(4.8),
                error_code: None,
                event: Some(NestedEvent {
                    id: ev,
                    occurred_at: None,
                    ended_at: None,
                }),
                started_at: None,
                ended_at: None,
                gaps: Vec::new(),
                started_late: false,
                partial: false,
            });
            keys.push(ObjectKey::Video(camrec_shared::PlaybackId(pb)).to_string());
            keys.push(ObjectKey::Thumbnail(camrec_shared::PlaybackId(pb)).to_string());
            sizes.insert(pb, 1000);
        }
        (playbacks, streams, keys, sizes)
    }

    #[test]
    fn a_perfect_run_passes() {
        let l = ledger(5);
        let (p, s, k, z) = perfect(&l);
        let r = assess(&l, &p, &s, &k, &z);
        assert!(r.passed(), "{r}");
        assert_eq!((r.acknowledged, r.terminal, r.completed), (5, 5, 5));
        assert!((r.recorded_sec - 24.0).abs() < 1e-9);
        assert!(r.to_string().contains("PASS"));
    }

    #[test]
    fn every_kind_of_loss_stuck_and_duplicate_is_caught() {
        let l = ledger(6);
        let (mut p, mut s, mut k, mut z) = perfect(&l);
        let ids: Vec<(Uuid, Uuid)> = l
            .acknowledged()
            .map(|e| (e.event_id.unwrap(), e.playback_id.unwrap()))
            .collect();
        // 0: object deleted; 1: still RECORDING; 2: never published; 3: recorded twice;
        // 4: FAILED with a reason (not a loss); 5: missing from the API.
        z.remove(&ids[0].1);
        k.retain(|key| !key.contains(&ids[0].1.to_string()) || key.ends_with("thumb.jpg"));
        p[1].recording_status = "RECORDING".into();
        s.created.remove(&ids[2].0);
        s.recorders.get_mut(&ids[3].1).unwrap().insert("w1".into());
        p[4].recording_status = "FAILED".into();
        p[4].error_code = Some("camera_unreachable".into());
        p.retain(|pb| pb.id != ids[5].1);
        let r = assess(&l, &p, &s, &k, &z);
        assert!(!r.passed());
        let kinds: Vec<(Uuid, LossKind)> = r
            .lost
            .iter()
            .map(|x| (x.playback_id, x.kind.clone()))
            .collect();
        assert!(kinds.contains(&(ids[0].1, LossKind::CompletedWithoutObject)));
        assert!(kinds.contains(&(ids[1].1, LossKind::NotTerminal("RECORDING".into()))));
        assert!(kinds.contains(&(ids[2].1, LossKind::CreatedNeverPublished)));
        assert!(kinds.contains(&(ids[5].1, LossKind::NoPlayback)));
        assert_eq!(r.stuck.len(), 1);
        assert_eq!(r.duplicates.len(), 1);
        assert_eq!(r.failed_by_reason.get("camera_unreachable"), Some(&1));
        assert!(r.to_string().contains("FAIL"));
    }

    #[test]
    fn a_recording_handed_to_the_cameras_next_holder_is_no_duplicate() {
        let l = ledger(1);
        let (p, mut s, k, z) = perfect(&l);
        let pb = l.acknowledged().next().unwrap().playback_id.unwrap();
        s.recorders.get_mut(&pb).unwrap().insert("w1".into());
        s.takeovers
            .insert(pb, [("w1".to_owned(), "w0".to_owned())].into());
        assert!(assess(&l, &p, &s, &k, &z).passed());
        // A third worker that names nobody who recorded it is a second recording.
        s.recorders.get_mut(&pb).unwrap().insert("w2".into());
        let r = assess(&l, &p, &s, &k, &z);
        assert_eq!(r.duplicates.len(), 1, "{r}");
        // Two workers naming each other is no handover either.
        s.recorders.get_mut(&pb).unwrap().remove("w2");
        s.takeovers
            .get_mut(&pb)
            .unwrap()
            .insert(("w0".to_owned(), "w1".to_owned()));
        assert_eq!(assess(&l, &p, &s, &k, &z).duplicates.len(), 1);
    }

    #[test]
    fn segments_of_two_holders_that_overlap_are_duplicates() {
        let l = ledger(1);
        let (p, s, mut k, z) = perfect(&l);
        let pb = camrec_shared::PlaybackId(l.acknowledged().next().unwrap().playback_id.unwrap());
        let seg = |start_ms, epoch| {
            let name = camrec_shared::storage::SegmentName {
                start_ms,
                duration_ms: 1000,
                init_len: 700,
                epoch,
            };
            ObjectKey::Segment(pb, name).to_string()
        };
        // One holder, then a takeover after a hole: fine.
        k.extend([seg(0, 1), seg(1000, 1), seg(9000, 2)]);
        assert!(assess(&l, &p, &s, &k, &z).passed());
        // The old holder wrote on after the takeover.
        k.push(seg(9500, 1));
        let r = assess(&l, &p, &s, &k, &z);
        assert!(!r.passed());
        assert!(
            r.to_string().contains("segments of two holders overlap"),
            "{r}"
        );
    }

    #[test]
    fn a_stored_clip_of_a_failed_playback_fails_the_run() {
        let l = ledger(3);
        let (mut p, mut s, mut k, mut z) = perfect(&l);
        // 0: failed by the reconciler, though its clip was uploaded; 1: failed, nothing stored.
        for i in [0, 1] {
            p[i].recording_status = "FAILED".into();
            p[i].error_code = Some("worker_lost".into());
            s.completed.remove(&p[i].id);
            z.remove(&p[i].id);
        }
        let kept = p[1].id.to_string();
        k.retain(|key| !key.contains(&kept));
        let r = assess(&l, &p, &s, &k, &z);
        assert!(r.lost.is_empty() && r.stuck.is_empty() && r.duplicates.is_empty());
        assert_eq!(r.clips_not_completed, vec![(p[0].id, "FAILED".to_owned())]);
        assert!(!r.passed());
        let text = r.to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("CLIPS STORED, NOT COMPLETED"));
        assert!(line.is_some_and(|l| l.ends_with("| 1")), "{text}");
        k.retain(|key| !key.contains(&p[0].id.to_string()));
        assert!(assess(&l, &p, &s, &k, &z).passed());
    }

    #[test]
    fn overlapping_events_are_counted_per_camera() {
        let mut l = ledger(5);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // Camera a: [0, 5), [2, 7), [5, 10): at most 2 open; camera b: [1, 6), [3, 8): 2.
        for (e, (camera, at)) in l
            .events
            .iter_mut()
            .zip([(a, 0), (a, 2), (a, 5), (b, 1), (b, 3)])
        {
            e.camera_id = camera;
            e.posted_at = Duration::from_secs(at);
        }
        assert_eq!(l.max_overlap(), 2);
        l.events[2].posted_at = Duration::from_secs(4);
        assert_eq!(l.max_overlap(), 3);
    }

    #[test]
    fn a_planted_loss_is_recognised() {
        let l0 = ledger(3);
        let (p, mut s, k, z) = perfect(&l0);
        let victim = l0.events[1].event_id.unwrap();
        s.created.remove(&victim);
        let mut l = l0.clone();
        l.planted = vec![Planted::OutboxRow { event_id: victim }];
        let r = assess(&l, &p, &s, &k, &z);
        assert!(r.caught_every_plant());
        let (p, s, k, z) = perfect(&l0);
        let r = assess(&l, &p, &s, &k, &z);
        assert!(!r.caught_every_plant());
    }
}
