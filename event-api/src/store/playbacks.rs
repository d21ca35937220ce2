//! The `playbacks` table: reads for the API, the projector's one-statement status update and
//! the reconciler's verdicts (each with its `playback.failed` outbox row).

use super::outbox::{enqueue, OutboxMessage};
use super::{deletions, Page, PageRequest, Store, StoreError};
use camrec_shared::messages::{
    EndReason, Envelope, FailureCode, Gap, PlaybackStatus, StatusBody, StatusKind, StopCause,
};
use camrec_shared::subjects::{playback_subject, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, QueryBuilder};
use uuid::Uuid;

const COLUMNS: &str = "id, event_id, camera_id, status, last_seq, last_status_at, worker_id, \
     video_key, thumb_key, file_size_bytes, duration_sec, codec, audio_codec, width, height, \
     sha256, partial, frames, bitrate_kbps, media_time_sec, started_at, ended_at, error_code, \
     error_message, deleted_at, created_at, updated_at, gaps, started_late, segment_list_key";

/// One playback as stored.
#[derive(Clone, Debug, FromRow)]
pub struct PlaybackRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub camera_id: Uuid,
    pub status: PlaybackState,
    pub last_seq: i64,
    pub last_status_at: DateTime<Utc>,
    pub worker_id: Option<String>,
    pub video_key: Option<String>,
    pub thumb_key: Option<String>,
    pub file_size_bytes: Option<i64>,
    pub duration_sec: Option<f64>,
    pub codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub sha256: Option<String>,
    pub partial: bool,
    pub frames: Option<i64>,
    pub bitrate_kbps: Option<f64>,
    pub media_time_sec: Option<f64>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Where the camera delivered nothing inside the clip (from `completed`).
    pub gaps: sqlx::types::Json<Vec<Gap>>,
    /// The capture did not hold the clip's whole pre-roll (from `completed`).
    pub started_late: bool,
    /// The closed HLS playlist of the clip's segments (from `completed`), if its worker wrote one.
    pub segment_list_key: Option<String>,
}

/// `GET /playbacks` filters.
#[derive(Clone, Debug, Default)]
pub struct PlaybackFilter {
    pub event_id: Option<Uuid>,
    pub camera_id: Option<Uuid>,
    pub status: Option<PlaybackState>,
    pub started_from: Option<DateTime<Utc>>,
    pub started_to: Option<DateTime<Utc>>,
}

/// A playback's status, stored as its name (`playbacks.status`, text with a CHECK).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaybackState {
    Pending,
    Recording,
    Processing,
    Completed,
    Failed,
}

impl PlaybackState {
    pub const ALL: [PlaybackState; 5] = [
        PlaybackState::Pending,
        PlaybackState::Recording,
        PlaybackState::Processing,
        PlaybackState::Completed,
        PlaybackState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PlaybackState::Pending => "PENDING",
            PlaybackState::Recording => "RECORDING",
            PlaybackState::Processing => "PROCESSING",
            PlaybackState::Completed => "COMPLETED",
            PlaybackState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// `COMPLETED` or `FAILED`: nothing moves a playback out of these, except a report of its
    /// worker overriding a presumed failure ([`PRESUMED_FAILURES`]).
    pub fn is_terminal(self) -> bool {
        matches!(self, PlaybackState::Completed | PlaybackState::Failed)
    }
}

impl sqlx::Type<Postgres> for PlaybackState {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'q> sqlx::Encode<'q, Postgres> for PlaybackState {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode_by_ref(&self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for PlaybackState {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<Postgres>>::decode(value)?;
        Self::parse(s).ok_or_else(|| format!("unknown playback status {s:?}").into())
    }
}

/// The stored status a message moves a playback to.
pub fn target_status(kind: StatusKind) -> PlaybackState {
    match kind {
        StatusKind::Recording | StatusKind::Progress => PlaybackState::Recording,
        StatusKind::Processing => PlaybackState::Processing,
        StatusKind::Completed => PlaybackState::Completed,
        StatusKind::Failed => PlaybackState::Failed,
    }
}

/// The states a playback may be in for a message that moves it to `target` to apply
/// (ADR 0001): nothing leaves `COMPLETED` or `FAILED`, and nothing goes back to `RECORDING`
/// from `PROCESSING`. (A presumed failure is the one exception: see [`Store::apply_status`].)
pub fn allowed_from(target: PlaybackState) -> &'static [PlaybackState] {
    use PlaybackState::*;

    match target {
        Recording => &[Pending, Recording],
        Processing | Completed | Failed => &[Pending, Recording, Processing],
        Pending => &[],
    }
}

/// The failure codes the reconciler presumes when nobody reported (it observed nothing): a later
/// report from the playback's own worker overrides them.
pub const PRESUMED_FAILURES: [FailureCode; 2] = [FailureCode::WorkerLost, FailureCode::NotStarted];

/// What the projector did with a status message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The row moved (or its figures were updated).
    Applied,
    /// The playback's worker reported after the reconciler had presumed it failed (the code
    /// given): its report replaced the presumption.
    Overrode(FailureCode),
    /// Older than the last applied message, a transition that is not allowed, an unknown
    /// playback, or event-api's own announcement coming back (already applied when written).
    Ignored,
    /// Not from the playback's worker: see [`Refusal`].
    Refused(Refusal),
}

/// Why a status was refused: it cannot come from the worker that owns the playback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another worker reported the playback first: it owns it.
    NotOwner,
    /// The status names another site than the camera's: the NATS user of that site's workers
    /// sent it (the subject's site is what the server's permissions enforce).
    WrongSite,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotOwner => "not_owner",
            Refusal::WrongSite => "wrong_site",
        }
    }
}

/// A playback the reconciler failed.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub playback_id: Uuid,
    pub code: FailureCode,
}

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &PlaybackFilter) {
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(v) = f.event_id {
        qb.push(" AND event_id = ").push_bind(v);
    }
    if let Some(v) = f.camera_id {
        qb.push(" AND camera_id = ").push_bind(v);
    }
    if let Some(v) = f.status {
        qb.push(" AND status = ").push_bind(v);
    }
    if let Some(v) = f.started_from {
        qb.push(" AND started_at >= ").push_bind(v);
    }
    if let Some(v) = f.started_to {
        qb.push(" AND started_at <= ").push_bind(v);
    }
}

/// The column values one status message sets; `None` keeps the stored value.
#[derive(Default)]
struct StatusColumns {
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    frames: Option<i64>,
    bitrate_kbps: Option<f64>,
    media_time_sec: Option<f64>,
    video_key: Option<String>,
    thumb_key: Option<String>,
    file_size_bytes: Option<i64>,
    duration_sec: Option<f64>,
    codec: Option<String>,
    audio_codec: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    sha256: Option<String>,
    partial: Option<bool>,
    gaps: Option<sqlx::types::Json<Vec<Gap>>>,
    started_late: Option<bool>,
    segment_list_key: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

fn columns_of(body: &StatusBody) -> StatusColumns {
    match body {
        StatusBody::Recording { started_at } => StatusColumns {
            started_at: Some(*started_at),
            ..Default::default()
        },
        StatusBody::Progress {
            frames,
            bitrate_kbps,
            media_time_sec,
            ..
        } => StatusColumns {
            frames: i64::try_from(*frames).ok(),
            bitrate_kbps: *bitrate_kbps,
            media_time_sec: Some(*media_time_sec),
            ..Default::default()
        },
        StatusBody::Processing { ended_at, .. } => StatusColumns {
            ended_at: Some(*ended_at),
            ..Default::default()
        },
        StatusBody::Completed(c) => StatusColumns {
            started_at: Some(c.started_at),
            ended_at: Some(c.ended_at),
            video_key: Some(c.object_key.clone()),
            thumb_key: c.thumb_key.clone(),
            file_size_bytes: i64::try_from(c.size_bytes).ok(),
            duration_sec: Some(c.duration_sec),
            codec: Some(c.video_codec.clone()),
            audio_codec: c.audio_codec.clone(),
            width: i32::try_from(c.width).ok(),
            height: i32::try_from(c.height).ok(),
            sha256: Some(c.sha256.clone()),
            partial: Some(c.partial),
            gaps: Some(sqlx::types::Json(c.gaps.clone())),
            started_late: Some(c.started_late),
            segment_list_key: c.segment_list_key.clone(),
            ..Default::default()
        },
        StatusBody::Failed { code, message } => StatusColumns {
            error_code: Some(code.as_str().to_owned()),
            error_message: Some(message.clone()),
            ..Default::default()
        },
    }
}

impl Store {
    pub async fn playback(&self, id: Uuid) -> Result<PlaybackRow, StoreError> {
        sqlx::query_as::<_, PlaybackRow>(&format!(
            "SELECT {COLUMNS} FROM playbacks WHERE id = $1 AND deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// A playback whether or not it is deleted (tests and the projector's checks).
    pub async fn playback_any(&self, id: Uuid) -> Result<PlaybackRow, StoreError> {
        sqlx::query_as::<_, PlaybackRow>(&format!("SELECT {COLUMNS} FROM playbacks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_playbacks(
        &self,
        filter: &PlaybackFilter,
        page: PageRequest,
    ) -> Result<Page<PlaybackRow>, StoreError> {
        let mut count = QueryBuilder::new("SELECT count(*) FROM playbacks");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM playbacks"));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.limit())
            .push(" OFFSET ")
            .push_bind(page.offset());
        let rows = qb
            .build_query_as::<PlaybackRow>()
            .fetch_all(&self.pool)
            .await?;
        Ok(Page { rows, total })
    }

    /// Applies one status message when [`decide`] says so, in one transaction that locks the
    /// row. A terminal status of a deleted playback queues its objects for deletion.
    pub async fn apply_status(&self, status: &PlaybackStatus) -> Result<Applied, StoreError> {
        let Ok(seq) = i64::try_from(status.seq) else {
            return Ok(Applied::Ignored);
        };
        let mut tx = self.pool.begin().await?;
        let current: Option<Current> = sqlx::query_as(
            "SELECT p.status, p.last_seq, p.worker_id, p.error_code, \
               p.deleted_at IS NOT NULL AS deleted, c.site \
             FROM playbacks p JOIN cameras c ON c.id = p.camera_id \
             WHERE p.id = $1 FOR UPDATE OF p",
        )
        .bind(status.playback_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            return Ok(Applied::Ignored);
        };
        let target = target_status(status.body.kind());
        let applied = decide(
            &current,
            &Report {
                seq,
                target,
                worker_id: &status.worker_id,
                site: status.site.as_str(),
                takes_over_from: status.takes_over_from.as_deref(),
            },
            Utc::now().timestamp_micros(),
        );
        if matches!(applied, Applied::Ignored | Applied::Refused(_)) {
            return Ok(applied);
        }
        let c = columns_of(&status.body);
        sqlx::query(
            "UPDATE playbacks SET status = $3, last_seq = $2, last_status_at = now(), \
             updated_at = now(), worker_id = CASE WHEN $25 THEN $4 ELSE COALESCE(worker_id, $4) END, \
             started_at = COALESCE($5, started_at), ended_at = COALESCE($6, ended_at), \
             frames = COALESCE($7, frames), bitrate_kbps = COALESCE($8, bitrate_kbps), \
             media_time_sec = COALESCE($9, media_time_sec), video_key = COALESCE($10, video_key), \
             thumb_key = COALESCE($11, thumb_key), \
             file_size_bytes = COALESCE($12, file_size_bytes), \
             duration_sec = COALESCE($13, duration_sec), codec = COALESCE($14, codec), \
             audio_codec = COALESCE($15, audio_codec), width = COALESCE($16, width), \
             height = COALESCE($17, height), sha256 = COALESCE($18, sha256), \
             partial = COALESCE($19, partial), \
             error_code = CASE WHEN $22 THEN $20 ELSE COALESCE($20, error_code) END, \
             error_message = CASE WHEN $22 THEN $21 ELSE COALESCE($21, error_message) END, \
             gaps = COALESCE($23, gaps), started_late = COALESCE($24, started_late), \
             segment_list_key = COALESCE($26, segment_list_key) \
             WHERE id = $1",
        )
        .bind(status.playback_id.0)
        .bind(seq)
        .bind(target)
        .bind(&status.worker_id)
        .bind(c.started_at)
        .bind(c.ended_at)
        .bind(c.frames)
        .bind(c.bitrate_kbps)
        .bind(c.media_time_sec)
        .bind(c.video_key)
        .bind(c.thumb_key)
        .bind(c.file_size_bytes)
        .bind(c.duration_sec)
        .bind(c.codec)
        .bind(c.audio_codec)
        .bind(c.width)
        .bind(c.height)
        .bind(c.sha256)
        .bind(c.partial)
        .bind(c.error_code)
        .bind(c.error_message)
        .bind(matches!(applied, Applied::Overrode(_)))
        .bind(c.gaps)
        .bind(c.started_late)
        .bind(current.worker_id.as_deref().is_some_and(|w| w != status.worker_id))
        .bind(c.segment_list_key)
        .execute(&mut *tx)
        .await?;
        if current.deleted && target.is_terminal() {
            deletions::queue_playback_objects(&mut tx, status.playback_id).await?;
        }
        if let StatusBody::Processing {
            stopped_by: Some(StopCause::MaxDuration),
            ..
        } = status.body
        {
            end_at_max_duration(&mut tx, status.playback_id).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Presumes failed every playback whose worker went quiet (`RECORDING`/`PROCESSING` with
    /// no status since `stale_before`: `worker_lost`) or that no worker took (`PENDING` created,
    /// and its `event.created` published, before `pending_before`: `not_started`; a recording
    /// delayed by a NATS outage is not failed while its message waits in the outbox), announcing
    /// each verdict with a `playback.failed` outbox row in the same transaction. `last_seq` is
    /// left alone, so the worker's own later reports still apply ([`decide`]).
    pub async fn reconcile(
        &self,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        pending_before: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let failed: Vec<FailedRow> = sqlx::query_as(&format!(
            "WITH due AS ( \
               SELECT id FROM playbacks \
               WHERE (status IN ('RECORDING', 'PROCESSING') AND last_status_at < $1) \
                  OR (status = 'PENDING' AND created_at < $2 AND NOT EXISTS ( \
                        SELECT 1 FROM outbox o \
                        WHERE o.msg_id = playbacks.event_id::text || ':created' \
                          AND (o.published_at IS NULL OR o.published_at >= $2))) \
               FOR UPDATE SKIP LOCKED) \
             UPDATE playbacks p SET \
               status = 'FAILED', \
               error_code = CASE WHEN p.status = 'PENDING' THEN 'not_started' ELSE 'worker_lost' END, \
               error_message = CASE WHEN p.status = 'PENDING' \
                 THEN 'no worker started the recording in time' \
                 ELSE 'the recording worker stopped reporting' END, \
               last_status_at = now(), updated_at = now() \
             FROM due WHERE p.id = due.id RETURNING {FAILED_COLUMNS}"
        ))
        .bind(stale_before)
        .bind(pending_before)
        .fetch_all(&mut *tx)
        .await?;
        let verdicts = announce_failures(&mut tx, failed, now).await?;
        tx.commit().await?;
        Ok(verdicts)
    }
}

/// The `worker_id` of the statuses event-api itself announces (reconciler, relay).
pub const RECONCILER_ID: &str = "event-api";

/// What `RETURNING` gives of a playback just failed, for its `playback.failed` message.
const FAILED_COLUMNS: &str = "p.id, p.event_id, p.camera_id, \
     (SELECT site FROM cameras c WHERE c.id = p.camera_id) AS site, p.error_code, \
     p.error_message, p.last_seq";

#[derive(FromRow)]
struct FailedRow {
    id: Uuid,
    event_id: Uuid,
    camera_id: Uuid,
    site: String,
    error_code: String,
    error_message: String,
    last_seq: i64,
}

/// Queues the `playback.failed` message of each playback event-api failed itself, with
/// `worker_id` [`RECONCILER_ID`], the next `seq`, and a message id of its own (a worker's
/// `<playback_id>:<seq>` could otherwise collide with it).
async fn announce_failures(
    conn: &mut sqlx::PgConnection,
    failed: Vec<FailedRow>,
    now: DateTime<Utc>,
) -> Result<Vec<Verdict>, StoreError> {
    let mut verdicts = Vec::with_capacity(failed.len());
    for row in failed {
        let code = FailureCode::parse(&row.error_code);
        let seq = u64::try_from(row.last_seq).unwrap_or_default() + 1;
        let status = PlaybackStatus {
            playback_id: PlaybackId(row.id),
            event_id: EventId(row.event_id),
            camera_id: CameraId(row.camera_id),
            site: Site::new(row.site).unwrap_or_default(),
            worker_id: RECONCILER_ID.to_owned(),
            seq,
            takes_over_from: None,
            body: StatusBody::Failed {
                code,
                message: row.error_message,
            },
        };
        let msg = OutboxMessage {
            subject: playback_subject(StatusKind::Failed, &status.site, status.camera_id),
            msg_id: format!("{}:{}:{seq}", row.id, code.as_str()),
            payload: Envelope::new(now, status).to_bytes(),
        };
        enqueue(conn, &msg).await?;
        verdicts.push(Verdict {
            playback_id: row.id,
            code,
        });
    }
    Ok(verdicts)
}

/// Fails the playback announced by outbox row `outbox_id` (an `event.created` that can never be
/// published), unless it already ended, and announces it. Other rows fail nothing.
pub(super) async fn fail_undeliverable(
    conn: &mut sqlx::PgConnection,
    outbox_id: i64,
    message: &str,
) -> Result<(), StoreError> {
    let failed: Vec<FailedRow> = sqlx::query_as(&format!(
        "UPDATE playbacks p SET status = 'FAILED', error_code = $2, error_message = $3, \
           last_status_at = now(), updated_at = now() \
         FROM outbox o WHERE o.id = $1 AND o.msg_id = p.event_id::text || ':created' \
           AND p.status NOT IN ('COMPLETED', 'FAILED') \
         RETURNING {FAILED_COLUMNS}"
    ))
    .bind(outbox_id)
    .bind(FailureCode::Undeliverable.as_str())
    .bind(message)
    .fetch_all(&mut *conn)
    .await?;
    for v in announce_failures(conn, failed, Utc::now()).await? {
        tracing::warn!(playback_id = %v.playback_id, "playback failed: its recording request is undeliverable");
    }
    Ok(())
}

/// A playback's row as [`decide`] needs it.
#[derive(Clone, Debug, FromRow)]
pub struct Current {
    pub status: PlaybackState,
    pub last_seq: i64,
    pub worker_id: Option<String>,
    pub error_code: Option<String>,
    pub deleted: bool,
    /// The camera's site.
    pub site: String,
}

/// What a status message says, as [`decide`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    pub seq: i64,
    /// The stored status the message moves the playback to.
    pub target: PlaybackState,
    pub worker_id: &'a str,
    pub site: &'a str,
    /// The owner the sender says it took the camera over from ([`PlaybackStatus::takes_over_from`]).
    pub takes_over_from: Option<&'a str>,
}

/// How far ahead of this host's clock a `seq` may be (workers derive it from their clocks, in
/// microseconds): further is refused, or one forged status with a huge `seq` would freeze the
/// playback against every real one.
pub const MAX_SEQ_AHEAD_MICROS: i64 = 3_600_000_000;

/// Whether a status `report` applies to `current` at `now_micros`:
/// - never one naming event-api as its worker: event-api applied its own verdicts when it wrote
///   them, and a worker must not pass for it;
/// - only from the playback's site and its owner, the worker that reported it first (its
///   `worker_id` is stored then), or from a worker of the site that took the camera over from
///   that owner while the playback is open ([`takes_over`]; it is the owner from then on):
///   anything else is [`Applied::Refused`];
/// - only a newer `seq` that is not far in the future, only an allowed transition (ADR 0001);
/// - a report from the owner (or, for `not_started`, the first worker) replaces a failure the
///   reconciler only presumed, and a clip uploaded on retry completes a playback whose upload
///   had been given up.
pub fn decide(current: &Current, report: &Report<'_>, now_micros: i64) -> Applied {
    let Report {
        seq,
        target,
        worker_id,
        site,
        ..
    } = *report;
    if worker_id == RECONCILER_ID {
        return Applied::Ignored;
    }
    if site != current.site {
        return Applied::Refused(Refusal::WrongSite);
    }
    if current.worker_id.as_deref().is_some_and(|w| w != worker_id) && !takes_over(current, report)
    {
        return Applied::Refused(Refusal::NotOwner);
    }
    if seq <= current.last_seq || seq > now_micros.saturating_add(MAX_SEQ_AHEAD_MICROS) {
        return Applied::Ignored;
    }
    if allowed_from(target).contains(&current.status) {
        return Applied::Applied;
    }
    // A clip whose upload was given up is retried from `_failed/` later, by the same worker
    // (its WORKER_ID is stable across restarts): its `completed` is what the user wants to see.
    if current.status == PlaybackState::Failed
        && current.error_code.as_deref() == Some(FailureCode::UploadFailed.as_str())
        && target == PlaybackState::Completed
    {
        return Applied::Overrode(FailureCode::UploadFailed);
    }
    let presumed = PRESUMED_FAILURES
        .into_iter()
        .find(|code| current.error_code.as_deref() == Some(code.as_str()));
    match presumed {
        Some(code) if current.status == PlaybackState::Failed => Applied::Overrode(code),
        _ => Applied::Ignored,
    }
}

/// Whether `report` hands the playback to its sender: it names the current owner as the worker
/// it took the camera over from, and the playback is still open (or only presumed lost).
pub fn takes_over(current: &Current, report: &Report<'_>) -> bool {
    let open = matches!(
        current.status,
        PlaybackState::Pending | PlaybackState::Recording | PlaybackState::Processing
    ) || (current.status == PlaybackState::Failed
        && current.error_code.as_deref() == Some(FailureCode::WorkerLost.as_str()));
    open && report.takes_over_from.is_some()
        && report.takes_over_from == current.worker_id.as_deref()
}

/// Ends the event of a playback whose worker stopped at the event's maximum duration, with that
/// reason (no `event.ended` is written: the recording has already stopped).
async fn end_at_max_duration(
    conn: &mut sqlx::PgConnection,
    playback_id: PlaybackId,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE events SET ended_at = now(), end_reason = $2 \
         WHERE id = (SELECT event_id FROM playbacks WHERE id = $1) AND ended_at IS NULL",
    )
    .bind(playback_id.0)
    .bind(EndReason::MaxDuration.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use PlaybackState::*;

    const NOW: i64 = 1_000_000;

    fn current(status: PlaybackState, code: Option<FailureCode>, worker: Option<&str>) -> Current {
        Current {
            status,
            last_seq: 10,
            worker_id: worker.map(str::to_owned),
            error_code: code.map(|c| c.as_str().to_owned()),
            deleted: false,
            site: "default".into(),
        }
    }

    /// Whether a status of the site `default` applies.
    fn decide(
        cur: &Current,
        seq: i64,
        target: PlaybackState,
        worker_id: &str,
        now_micros: i64,
    ) -> Applied {
        super::decide(
            cur,
            &Report {
                seq,
                target,
                worker_id,
                site: "default",
                takes_over_from: None,
            },
            now_micros,
        )
    }

    #[test]
    fn terminal_states_never_move() {
        for kind in StatusKind::ALL {
            let from = allowed_from(target_status(kind));
            assert!(!from.contains(&Completed), "{kind:?}");
            assert!(!from.contains(&Failed), "{kind:?}");
        }
    }

    #[test]
    fn transition_table_matches_adr_0001() {
        assert_eq!(allowed_from(Recording), [Pending, Recording]);
        assert_eq!(target_status(StatusKind::Progress), Recording);
        assert!(allowed_from(Processing).contains(&Processing));
        assert!(!allowed_from(Recording).contains(&Processing));
        assert!(allowed_from(Completed).contains(&Pending));
        assert!(allowed_from(Pending).is_empty());
    }

    #[test]
    fn only_newer_statuses_apply() {
        let cur = current(Recording, None, Some("w1"));
        assert_eq!(decide(&cur, 10, Processing, "w1", NOW), Applied::Ignored);
        assert_eq!(decide(&cur, 11, Processing, "w1", NOW), Applied::Applied);
    }

    #[test]
    fn the_owning_workers_report_overrides_a_presumed_failure() {
        let lost = current(Failed, Some(FailureCode::WorkerLost), Some("w1"));
        assert_eq!(
            decide(&lost, 11, Completed, "w1", NOW),
            Applied::Overrode(FailureCode::WorkerLost)
        );
        assert_eq!(
            decide(&lost, 11, Recording, "w1", NOW),
            Applied::Overrode(FailureCode::WorkerLost),
            "a worker still recording takes the playback back"
        );
        assert_eq!(
            decide(&lost, 11, Completed, "w2", NOW),
            Applied::Refused(Refusal::NotOwner),
            "not its owner"
        );
        assert_eq!(
            decide(&lost, 11, Failed, RECONCILER_ID, NOW),
            Applied::Ignored
        );
        assert_eq!(
            decide(&lost, 9, Completed, "w1", NOW),
            Applied::Ignored,
            "older"
        );
        let not_started = current(Failed, Some(FailureCode::NotStarted), None);
        assert_eq!(
            decide(&not_started, 11, Recording, "w7", NOW),
            Applied::Overrode(FailureCode::NotStarted)
        );
    }

    #[test]
    fn a_seq_far_in_the_future_is_refused() {
        let cur = current(Recording, None, Some("w1"));
        let ahead = NOW + MAX_SEQ_AHEAD_MICROS;
        assert_eq!(decide(&cur, ahead, Processing, "w1", NOW), Applied::Applied);
        assert_eq!(
            decide(&cur, ahead + 1, Processing, "w1", NOW),
            Applied::Ignored
        );
        assert_eq!(
            decide(&cur, i64::MAX, Completed, "w1", NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn a_clip_uploaded_on_retry_completes_a_failed_upload() {
        let failed = current(Failed, Some(FailureCode::UploadFailed), Some("w1"));
        assert_eq!(
            decide(&failed, 11, Completed, "w1", NOW),
            Applied::Overrode(FailureCode::UploadFailed)
        );
        assert_eq!(decide(&failed, 11, Recording, "w1", NOW), Applied::Ignored);
        assert_eq!(decide(&failed, 9, Completed, "w1", NOW), Applied::Ignored);
    }

    #[test]
    fn only_the_owner_of_the_playbacks_site_is_heard() {
        let cur = current(Recording, None, Some("w1"));
        assert_eq!(
            decide(&cur, 11, Failed, "w2", NOW),
            Applied::Refused(Refusal::NotOwner)
        );
        let other_site = super::decide(
            &cur,
            &Report {
                seq: 11,
                target: Failed,
                worker_id: "w1",
                site: "north",
                takes_over_from: None,
            },
            NOW,
        );
        assert_eq!(other_site, Applied::Refused(Refusal::WrongSite));
        let unclaimed = current(Pending, None, None);
        assert_eq!(
            decide(&unclaimed, 11, Recording, "w2", NOW),
            Applied::Applied,
            "the first worker to report becomes the owner"
        );
    }

    #[test]
    fn a_worker_that_took_the_camera_over_from_the_owner_becomes_the_owner() {
        let report = |takes_over_from, target| Report {
            seq: 11,
            target,
            worker_id: "w2",
            site: "default",
            takes_over_from,
        };
        for open in [
            current(Recording, None, Some("w1")),
            current(Processing, None, Some("w1")),
            current(Failed, Some(FailureCode::WorkerLost), Some("w1")),
        ] {
            assert!(takes_over(&open, &report(Some("w1"), Recording)));
            assert_ne!(
                super::decide(&open, &report(Some("w1"), Recording), NOW),
                Applied::Refused(Refusal::NotOwner)
            );
        }
        let open = current(Recording, None, Some("w1"));
        // Not from the owner it names, or naming nobody: refused.
        for from in [Some("w3"), None] {
            assert_eq!(
                super::decide(&open, &report(from, Recording), NOW),
                Applied::Refused(Refusal::NotOwner)
            );
        }
        // A finished playback stays with the worker that finished it.
        let done = current(Completed, None, Some("w1"));
        assert_eq!(
            super::decide(&done, &report(Some("w1"), Completed), NOW),
            Applied::Refused(Refusal::NotOwner)
        );
    }

    #[test]
    fn nobody_passes_for_event_api() {
        for status in [Pending, Recording, Processing] {
            let cur = current(status, None, Some("w1"));
            assert_eq!(
                decide(&cur, 11, Failed, RECONCILER_ID, NOW),
                Applied::Ignored,
                "{status:?}"
            );
        }
    }

    #[test]
    fn observed_failures_and_completions_never_move() {
        for code in [FailureCode::CameraUnreachable, FailureCode::Undeliverable] {
            let failed = current(Failed, Some(code), Some("w1"));
            assert_eq!(decide(&failed, 11, Completed, "w1", NOW), Applied::Ignored);
        }
        let done = current(Completed, None, Some("w1"));
        assert_eq!(decide(&done, 11, Failed, "w1", NOW), Applied::Ignored);
    }
}
