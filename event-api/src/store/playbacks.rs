//! The `playbacks` table: reads for the API, the projector's one-statement status update and
//! the reconciler's verdicts (each with its `playback.failed` outbox row).

use super::outbox::{enqueue, OutboxMessage};
use super::{deletions, Page, PageRequest, Store, StoreError};
use camrec_shared::messages::{Envelope, FailureCode, PlaybackStatus, StatusBody, StatusKind};
use camrec_shared::subjects::{playback_subject, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, QueryBuilder};
use uuid::Uuid;

const COLUMNS: &str = "id, event_id, camera_id, status, last_seq, last_status_at, worker_id, \
     video_key, thumb_key, file_size_bytes, duration_sec, codec, audio_codec, width, height, \
     sha256, partial, frames, bitrate_kbps, media_time_sec, started_at, ended_at, error_code, \
     error_message, deleted_at, created_at, updated_at";

/// One playback as stored.
#[derive(Clone, Debug, FromRow)]
pub struct PlaybackRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub camera_id: Uuid,
    pub status: String,
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
}

/// `GET /playbacks` filters.
#[derive(Clone, Debug, Default)]
pub struct PlaybackFilter {
    pub event_id: Option<Uuid>,
    pub camera_id: Option<Uuid>,
    pub status: Option<String>,
    pub started_from: Option<DateTime<Utc>>,
    pub started_to: Option<DateTime<Utc>>,
}

/// The stored status a message moves a playback to.
pub fn target_status(kind: StatusKind) -> &'static str {
    match kind {
        StatusKind::Recording | StatusKind::Progress => "RECORDING",
        StatusKind::Processing => "PROCESSING",
        StatusKind::Completed => "COMPLETED",
        StatusKind::Failed => "FAILED",
    }
}

/// The states a playback may be in for a message that moves it to `target` to apply
/// (ADR 0001): nothing leaves `COMPLETED` or `FAILED`, and nothing goes back to `RECORDING`
/// from `PROCESSING`.
pub fn allowed_from(target: &str) -> &'static [&'static str] {
    match target {
        "RECORDING" => &["PENDING", "RECORDING"],
        "PROCESSING" | "COMPLETED" | "FAILED" => &["PENDING", "RECORDING", "PROCESSING"],
        _ => &[],
    }
}

/// What the projector did with a status message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The row moved (or its figures were updated).
    Applied,
    /// Older than the last applied message, a transition that is not allowed, or an unknown
    /// playback.
    Ignored,
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
    if let Some(v) = &f.status {
        qb.push(" AND status = ").push_bind(v.clone());
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

    /// Applies one status message in one statement, only when its `seq` is newer than the last
    /// applied one and the transition is allowed. A terminal status of a deleted playback queues
    /// its objects for deletion in the same transaction.
    pub async fn apply_status(&self, status: &PlaybackStatus) -> Result<Applied, StoreError> {
        let Ok(seq) = i64::try_from(status.seq) else {
            return Ok(Applied::Ignored);
        };
        let target = target_status(status.body.kind());
        let from: Vec<&str> = allowed_from(target).to_vec();
        let c = columns_of(&status.body);
        let mut tx = self.pool.begin().await?;
        let deleted: Option<bool> = sqlx::query_scalar(
            "UPDATE playbacks SET status = $3, last_seq = $2, last_status_at = now(), \
             updated_at = now(), worker_id = $4, \
             started_at = COALESCE($5, started_at), ended_at = COALESCE($6, ended_at), \
             frames = COALESCE($7, frames), bitrate_kbps = COALESCE($8, bitrate_kbps), \
             media_time_sec = COALESCE($9, media_time_sec), video_key = COALESCE($10, video_key), \
             thumb_key = COALESCE($11, thumb_key), \
             file_size_bytes = COALESCE($12, file_size_bytes), \
             duration_sec = COALESCE($13, duration_sec), codec = COALESCE($14, codec), \
             audio_codec = COALESCE($15, audio_codec), width = COALESCE($16, width), \
             height = COALESCE($17, height), sha256 = COALESCE($18, sha256), \
             partial = COALESCE($19, partial), error_code = COALESCE($20, error_code), \
             error_message = COALESCE($21, error_message) \
             WHERE id = $1 AND last_seq < $2 AND status = ANY($22) \
             RETURNING deleted_at IS NOT NULL",
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
        .bind(&from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(deleted) = deleted else {
            return Ok(Applied::Ignored);
        };
        if deleted && matches!(target, "COMPLETED" | "FAILED") {
            deletions::queue_playback_objects(&mut tx, status.playback_id).await?;
        }
        tx.commit().await?;
        Ok(Applied::Applied)
    }

    /// Fails every playback whose worker went quiet (`RECORDING`/`PROCESSING` with no status
    /// since `stale_before`: `worker_lost`) or that no worker took (`PENDING` created, and its
    /// `event.created` published, before `pending_before`: `not_started`; a recording delayed
    /// by a NATS outage is not failed while its message waits in the outbox), writing a `playback.failed` outbox row for each in the
    /// same transaction. `now` stamps the messages and their sequence numbers.
    pub async fn reconcile(
        &self,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
        pending_before: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, Uuid, Uuid, String, String, String, i64)> = sqlx::query_as(
            "WITH due AS ( \
               SELECT id FROM playbacks \
               WHERE (status IN ('RECORDING', 'PROCESSING') AND last_status_at < $2) \
                  OR (status = 'PENDING' AND created_at < $3 AND NOT EXISTS ( \
                        SELECT 1 FROM outbox o \
                        WHERE o.msg_id = playbacks.event_id::text || ':created' \
                          AND (o.published_at IS NULL OR o.published_at >= $3))) \
               FOR UPDATE SKIP LOCKED) \
             UPDATE playbacks p SET \
               status = 'FAILED', \
               error_code = CASE WHEN p.status = 'PENDING' THEN 'not_started' ELSE 'worker_lost' END, \
               error_message = CASE WHEN p.status = 'PENDING' \
                 THEN 'no worker started the recording in time' \
                 ELSE 'the recording worker stopped reporting' END, \
               last_seq = GREATEST(p.last_seq + 1, $1), last_status_at = now(), updated_at = now() \
             FROM due WHERE p.id = due.id \
             RETURNING p.id, p.event_id, p.camera_id, \
               (SELECT site FROM cameras c WHERE c.id = p.camera_id), p.error_code, \
               p.error_message, p.last_seq",
        )
        .bind(now.timestamp_micros())
        .bind(stale_before)
        .bind(pending_before)
        .fetch_all(&mut *tx)
        .await?;
        let mut verdicts = Vec::with_capacity(rows.len());
        for (id, event_id, camera_id, site, code, message, seq) in rows {
            let code = if code == "not_started" {
                FailureCode::NotStarted
            } else {
                FailureCode::WorkerLost
            };
            let status = PlaybackStatus {
                playback_id: PlaybackId(id),
                event_id: EventId(event_id),
                camera_id: CameraId(camera_id),
                site: Site::new(site).unwrap_or_default(),
                worker_id: "event-api".to_owned(),
                seq: u64::try_from(seq).unwrap_or_default(),
                body: StatusBody::Failed { code, message },
            };
            enqueue(
                &mut tx,
                &OutboxMessage {
                    subject: playback_subject(StatusKind::Failed, &status.site, status.camera_id),
                    msg_id: status.msg_id(),
                    payload: Envelope::new(now, status).to_bytes(),
                },
            )
            .await?;
            verdicts.push(Verdict {
                playback_id: id,
                code,
            });
        }
        tx.commit().await?;
        Ok(verdicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_move() {
        for kind in StatusKind::ALL {
            let from = allowed_from(target_status(kind));
            assert!(!from.contains(&"COMPLETED"), "{kind:?}");
            assert!(!from.contains(&"FAILED"), "{kind:?}");
        }
    }

    #[test]
    fn transition_table_matches_adr_0001() {
        assert_eq!(allowed_from("RECORDING"), ["PENDING", "RECORDING"]);
        assert_eq!(target_status(StatusKind::Progress), "RECORDING");
        assert!(allowed_from("PROCESSING").contains(&"PROCESSING"));
        assert!(!allowed_from("RECORDING").contains(&"PROCESSING"));
        assert!(allowed_from("COMPLETED").contains(&"PENDING"));
        assert!(allowed_from("PENDING").is_empty());
    }
}
