//! The `events` table and the transactions that start and end recordings: creating a recording
//! event writes the event, its `PENDING` playback and the `event.created` outbox row together
//! (in one statement); ending one writes `ended_at` and the `event.ended` outbox row together.

use super::cameras::{CameraRow, COLUMNS as CAMERA_COLUMNS};
use super::outbox::{enqueue, OutboxMessage, NOTIFY_CHANNEL};
use super::{deletions, Page, PageRequest, Store, StoreError};
use camrec_shared::messages::{
    EndReason, Envelope, EventCreated, EventEnded, EventType, RecordingLimits,
};
use camrec_shared::subjects::{event_msg_id, event_subject, EventKind, Site};
use camrec_shared::{CameraId, EventId, PlaybackId};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

const SELECT: &str = "SELECT e.id, e.camera_id, e.type, e.description, e.ack, e.created_at, \
     e.ended_at, e.end_reason, p.id AS playback_id, p.status AS recording_status \
     FROM events e LEFT JOIN playbacks p ON p.event_id = e.id AND p.deleted_at IS NULL";

/// One event with its (non-deleted) playback's id and status.
#[derive(Clone, Debug, FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub camera_id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub description: Option<String>,
    pub ack: bool,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub playback_id: Option<Uuid>,
    pub recording_status: Option<String>,
}

/// A new event.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub camera_id: Uuid,
    pub event_type: EventType,
    pub description: Option<String>,
}

/// The state of an event after `end` (or `stop`), whether or not this call ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndState {
    pub event_id: Uuid,
    pub playback_id: Option<Uuid>,
    pub recording_status: Option<String>,
}

/// `GET /events` filters.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub camera_id: Option<Uuid>,
    pub channel: Option<i32>,
    pub event_type: Option<EventType>,
    pub ack: Option<bool>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &EventFilter) {
    qb.push(" WHERE e.deleted_at IS NULL");
    if let Some(v) = f.camera_id {
        qb.push(" AND e.camera_id = ").push_bind(v);
    }
    if let Some(v) = f.channel {
        qb.push(" AND e.camera_id IN (SELECT id FROM cameras WHERE channel = ")
            .push_bind(v)
            .push(")");
    }
    if let Some(v) = f.event_type {
        qb.push(" AND e.type = ").push_bind(v.as_str());
    }
    if let Some(v) = f.ack {
        qb.push(" AND e.ack = ").push_bind(v);
    }
    if let Some(v) = f.created_from {
        qb.push(" AND e.created_at >= ").push_bind(v);
    }
    if let Some(v) = f.created_to {
        qb.push(" AND e.created_at <= ").push_bind(v);
    }
}

fn site_of(camera_site: &str) -> Result<Site, StoreError> {
    Site::new(camera_site).map_err(|_| StoreError::Conflict("the camera's site is not valid"))
}

/// The text stored in `events.end_reason` for `reason` (its wire name).
fn reason_text(reason: EndReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

/// The `event.ended` outbox message of an event that has a playback.
fn ended_message(
    event_id: Uuid,
    camera_id: Uuid,
    site: &str,
    playback_id: Uuid,
    reason: EndReason,
) -> Result<OutboxMessage, StoreError> {
    let site = site_of(site)?;
    let camera_id = CameraId(camera_id);
    let event_id = EventId(event_id);
    let msg = Envelope::new(
        Utc::now(),
        EventEnded {
            event_id,
            playback_id: Some(PlaybackId(playback_id)),
            camera_id,
            site: site.clone(),
            reason,
        },
    );
    Ok(OutboxMessage {
        subject: event_subject(EventKind::Ended, &site, camera_id),
        msg_id: event_msg_id(event_id, EventKind::Ended),
        payload: msg.to_bytes(),
    })
}

/// Ends `event_id` inside `conn`'s transaction if it is open, writing the `event.ended` outbox
/// row when the event has a playback. Returns whether this call ended it. The
/// `WHERE ended_at IS NULL` makes two racing calls produce one message.
async fn end_in_tx(
    conn: &mut PgConnection,
    event_id: Uuid,
    reason: EndReason,
) -> Result<bool, StoreError> {
    let ended: Option<(Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "UPDATE events e SET ended_at = now(), end_reason = $2 \
         WHERE e.id = $1 AND e.ended_at IS NULL AND e.deleted_at IS NULL \
         RETURNING e.camera_id, (SELECT site FROM cameras c WHERE c.id = e.camera_id), \
         (SELECT p.id FROM playbacks p WHERE p.event_id = e.id)",
    )
    .bind(event_id)
    .bind(reason_text(reason))
    .fetch_optional(&mut *conn)
    .await?;
    let Some((camera_id, site, playback_id)) = ended else {
        return Ok(false);
    };
    if let Some(playback_id) = playback_id {
        let msg = ended_message(event_id, camera_id, &site, playback_id, reason)?;
        enqueue(conn, &msg).await?;
    }
    Ok(true)
}

/// How often [`Store::end_event`] reads the event again when its write lost a race.
const END_ATTEMPTS: usize = 3;

/// An event as [`Store::end_event`] reads it before writing: what its `event.ended` message
/// carries, whether it has ended, and the state the call answers with.
#[derive(FromRow)]
struct EventToEnd {
    camera_id: Uuid,
    site: String,
    /// The playback the message names (deleted or not, as [`end_in_tx`] names it).
    message_playback: Option<Uuid>,
    ended: bool,
    /// The non-deleted playback and its status: the answer.
    playback_id: Option<Uuid>,
    recording_status: Option<String>,
}

const READ_EVENT_TO_END: &str = "SELECT e.camera_id, c.site, \
     (SELECT p.id FROM playbacks p WHERE p.event_id = e.id) AS message_playback, \
     e.ended_at IS NOT NULL AS ended, p.id AS playback_id, p.status AS recording_status \
     FROM events e JOIN cameras c ON c.id = e.camera_id \
     LEFT JOIN playbacks p ON p.event_id = e.id AND p.deleted_at IS NULL \
     WHERE e.id = $1 AND e.deleted_at IS NULL";

/// Ends event `$1` with reason `$2` if it is open, not deleted, and its camera's site is still
/// `$3` (the site its message names, as read); with it, when `$4` is not null, the
/// `event.ended` outbox row (`$4` subject, `$5` msg id, `$6` payload) and a `NOTIFY` of the
/// relay on `$7`. One statement, atomic without an explicit transaction. Returns one row:
/// whether this statement ended the event, and how many notifications it sent (selecting them
/// is what makes PostgreSQL evaluate the `notified` CTE).
const END_EVENT: &str = "WITH ended AS (\
     UPDATE events e SET ended_at = now(), end_reason = $2 \
     WHERE e.id = $1 AND e.ended_at IS NULL AND e.deleted_at IS NULL \
     AND (SELECT site FROM cameras c WHERE c.id = e.camera_id) = $3 RETURNING e.id), \
     queued AS (INSERT INTO outbox (subject, msg_id, payload) \
     SELECT $4, $5, $6 FROM ended WHERE $4::text IS NOT NULL \
     ON CONFLICT (msg_id) DO NOTHING RETURNING id), \
     notified AS (SELECT pg_notify($7, '') FROM queued) \
     SELECT (SELECT count(*) FROM ended) > 0 AS ended, (SELECT count(*) FROM notified) AS notified";

/// Marks the playback of `event_id` deleted; queues its objects when it is already finished
/// (a running one is queued by the projector when its terminal status arrives).
pub(super) async fn mark_playback_deleted(
    conn: &mut PgConnection,
    playback_id: Uuid,
) -> Result<(), StoreError> {
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE playbacks SET deleted_at = now(), updated_at = now() \
         WHERE id = $1 AND deleted_at IS NULL RETURNING status",
    )
    .bind(playback_id)
    .fetch_optional(&mut *conn)
    .await?;
    if matches!(status.as_deref(), Some("COMPLETED" | "FAILED")) {
        deletions::queue_playback_objects(conn, PlaybackId(playback_id)).await?;
    }
    Ok(())
}

/// How often [`Store::create_event`] reads the camera again when it changed under it.
const CREATE_ATTEMPTS: usize = 3;

/// Writes the event of a type the camera does not record, if the camera row is still the
/// version read (`$2`, its `xmin`) and enabled. `FOR SHARE` holds off a concurrent update or
/// delete of the camera until this statement commits (a delete then finds the event and
/// refuses, ADR 0007); one that committed first makes the statement write nothing. One
/// statement, so no explicit transaction: it is atomic on its own. Returns the event's id when
/// it was written. bench/src/pgbench.rs runs the same SQL.
pub const INSERT_EVENT: &str = "WITH camera AS (\
     SELECT id FROM cameras WHERE id = $1 AND xmin::text = $2 AND enabled FOR SHARE), \
     event AS (INSERT INTO events (id, camera_id, type, description, created_at) \
     SELECT $3, id, $4, $5, $6 FROM camera RETURNING id) \
     SELECT id FROM event";

/// [`INSERT_EVENT`] for a type the camera records: also the `PENDING` playback (`$7`) and the
/// `event.created` outbox row (`$8` subject, `$9` msg id, `$10` payload), and a `NOTIFY` of the
/// relay on channel `$11` (delivered at commit).
pub const INSERT_RECORDING_EVENT: &str = "WITH camera AS (\
     SELECT id FROM cameras WHERE id = $1 AND xmin::text = $2 AND enabled FOR SHARE), \
     event AS (INSERT INTO events (id, camera_id, type, description, created_at) \
     SELECT $3, id, $4, $5, $6 FROM camera RETURNING id), \
     playback AS (INSERT INTO playbacks (id, event_id, camera_id) SELECT $7, id, $1 FROM event), \
     queued AS (INSERT INTO outbox (subject, msg_id, payload) SELECT $8, $9, $10 FROM event \
     ON CONFLICT (msg_id) DO NOTHING) \
     SELECT id, pg_notify($11, '') FROM event";

/// A camera row with its row version (`xmin`, as text), which changes with every update.
#[derive(FromRow)]
struct VersionedCamera {
    #[sqlx(flatten)]
    row: CameraRow,
    version: String,
}

async fn camera_version(
    conn: &mut PgConnection,
    camera_id: Uuid,
) -> Result<VersionedCamera, StoreError> {
    sqlx::query_as::<_, VersionedCamera>(&format!(
        "SELECT {CAMERA_COLUMNS}, xmin::text AS version FROM cameras WHERE id = $1"
    ))
    .bind(camera_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// The rows an event creation writes, decided from the camera as read.
struct PlannedEvent {
    id: EventId,
    /// Set here, not by the database, because `event.created` carries it; truncated to
    /// PostgreSQL's microseconds so the answer shows what is stored.
    created_at: DateTime<Utc>,
    recording: Option<(PlaybackId, OutboxMessage)>,
}

impl PlannedEvent {
    fn new(new: &NewEvent, camera: &CameraRow, max_recording_sec: u32) -> Result<Self, StoreError> {
        let id = EventId::new();
        let created_at = Utc::now().trunc_subsecs(6);
        let recording = if camera.records(new.event_type.as_str()) {
            let playback_id = PlaybackId::new();
            let message = created_message(
                camera,
                id,
                playback_id,
                new.event_type,
                created_at,
                max_recording_sec,
            )?;
            Some((playback_id, message))
        } else {
            None
        };
        Ok(Self {
            id,
            created_at,
            recording,
        })
    }

    fn into_row(self, new: &NewEvent) -> EventRow {
        let playback_id = self.recording.map(|(p, _)| p.0);
        EventRow {
            id: self.id.0,
            camera_id: new.camera_id,
            event_type: new.event_type.as_str().to_owned(),
            description: new.description.clone(),
            ack: false,
            created_at: self.created_at,
            ended_at: None,
            end_reason: None,
            playback_id,
            recording_status: playback_id.map(|_| "PENDING".to_owned()),
        }
    }
}

/// The `event.created` outbox message of a new recording on `camera`.
fn created_message(
    camera: &CameraRow,
    event_id: EventId,
    playback_id: PlaybackId,
    event_type: EventType,
    created_at: DateTime<Utc>,
    max_recording_sec: u32,
) -> Result<OutboxMessage, StoreError> {
    let rtsp_url = camera
        .rtsp_url_with_credentials()
        .ok_or(StoreError::Conflict("the camera's RTSP URL is not valid"))?;
    let site = site_of(&camera.site)?;
    let camera_id = CameraId(camera.id);
    let msg = Envelope::new(
        created_at,
        EventCreated {
            event_id,
            playback_id,
            camera_id,
            camera_name: camera.name.clone(),
            site: site.clone(),
            event_type,
            rtsp_url,
            limits: RecordingLimits {
                max_duration_sec: max_recording_sec,
                pre_roll_sec: 0,
                post_roll_sec: 0,
            },
        },
    );
    Ok(OutboxMessage {
        subject: event_subject(EventKind::Created, &site, camera_id),
        msg_id: event_msg_id(event_id, EventKind::Created),
        payload: msg.to_bytes(),
    })
}

/// Runs [`INSERT_EVENT`] or [`INSERT_RECORDING_EVENT`]; false when the camera is no longer the
/// version read (or was disabled or deleted meanwhile): then nothing was written.
async fn insert_event(
    conn: &mut PgConnection,
    new: &NewEvent,
    planned: &PlannedEvent,
    camera: &VersionedCamera,
) -> Result<bool, StoreError> {
    let sql = match planned.recording {
        Some(_) => INSERT_RECORDING_EVENT,
        None => INSERT_EVENT,
    };
    let mut query = sqlx::query_scalar::<_, Uuid>(sql)
        .bind(camera.row.id)
        .bind(&camera.version)
        .bind(planned.id.0)
        .bind(new.event_type.as_str())
        .bind(&new.description)
        .bind(planned.created_at);
    if let Some((playback_id, msg)) = &planned.recording {
        query = query
            .bind(playback_id.0)
            .bind(&msg.subject)
            .bind(&msg.msg_id)
            .bind(&msg.payload)
            .bind(NOTIFY_CHANNEL);
    }
    Ok(query.fetch_optional(&mut *conn).await?.is_some())
}

impl Store {
    /// Creates an event; for a type the camera records, also its `PENDING` playback and the
    /// `event.created` outbox row, atomically, in two round trips: the camera is read, then one
    /// statement ([`INSERT_EVENT`] or [`INSERT_RECORDING_EVENT`]) writes every row if the camera
    /// is still that version and enabled. A camera changed in between is read again.
    pub async fn create_event(
        &self,
        new: &NewEvent,
        max_recording_sec: u32,
    ) -> Result<(EventRow, CameraRow), StoreError> {
        let mut conn = self.hot().await?;
        for _ in 0..CREATE_ATTEMPTS {
            let camera = camera_version(&mut conn, new.camera_id).await?;
            if !camera.row.enabled {
                conn.keep();
                return Err(StoreError::Conflict("the camera is disabled"));
            }
            let planned = PlannedEvent::new(new, &camera.row, max_recording_sec)?;
            if insert_event(&mut conn, new, &planned, &camera).await? {
                conn.keep();
                return Ok((planned.into_row(new), camera.row));
            }
        }
        conn.keep();
        Err(StoreError::Conflict(
            "the camera changed while the event was created; try again",
        ))
    }

    /// Ends an event (idempotent): the first call writes `ended_at` and the `event.ended`
    /// outbox row; later calls write nothing and return the current state. Two round trips and
    /// no explicit transaction: the event is read ([`READ_EVENT_TO_END`]), then one statement
    /// ([`END_EVENT`]) ends it and queues its message, unless it ended meanwhile or its camera
    /// moved to another site (then it is read again). An event already ended costs one.
    pub async fn end_event(&self, id: Uuid, reason: EndReason) -> Result<EndState, StoreError> {
        let mut conn = self.hot().await?;
        for _ in 0..END_ATTEMPTS {
            let read: EventToEnd = sqlx::query_as(READ_EVENT_TO_END)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
            let state = EndState {
                event_id: id,
                playback_id: read.playback_id,
                recording_status: read.recording_status.clone(),
            };
            if read.ended {
                conn.keep();
                return Ok(state);
            }
            let msg = match read.message_playback {
                Some(playback) => Some(ended_message(
                    id,
                    read.camera_id,
                    &read.site,
                    playback,
                    reason,
                )?),
                None => None,
            };
            let (ended, _notified): (bool, i64) = sqlx::query_as(END_EVENT)
                .bind(id)
                .bind(reason_text(reason))
                .bind(&read.site)
                .bind(msg.as_ref().map(|m| m.subject.as_str()))
                .bind(msg.as_ref().map(|m| m.msg_id.as_str()))
                .bind(msg.as_ref().map(|m| m.payload.as_slice()))
                .bind(NOTIFY_CHANNEL)
                .fetch_one(&mut *conn)
                .await?;
            if ended {
                conn.keep();
                return Ok(state);
            }
        }
        conn.keep();
        Err(StoreError::Conflict(
            "the event changed while it was ended; try again",
        ))
    }

    pub async fn event(&self, id: Uuid) -> Result<EventRow, StoreError> {
        sqlx::query_as::<_, EventRow>(&format!(
            "{SELECT} WHERE e.id = $1 AND e.deleted_at IS NULL"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Events by id, deleted ones included (a deleted playback's event still nests).
    pub async fn events_by_ids(&self, ids: &[Uuid]) -> Result<Vec<EventRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, EventRow>(&format!("{SELECT} WHERE e.id = ANY($1)"))
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn list_events(
        &self,
        filter: &EventFilter,
        page: PageRequest,
    ) -> Result<Page<EventRow>, StoreError> {
        let mut count = QueryBuilder::new("SELECT count(*) FROM events e");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut qb = QueryBuilder::new(SELECT);
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY e.created_at DESC, e.id DESC LIMIT ")
            .push_bind(page.limit())
            .push(" OFFSET ")
            .push_bind(page.offset());
        let rows = qb
            .build_query_as::<EventRow>()
            .fetch_all(&self.pool)
            .await?;
        Ok(Page { rows, total })
    }

    pub async fn ack_event(&self, id: Uuid) -> Result<EventRow, StoreError> {
        let done = sqlx::query("UPDATE events SET ack = true WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.event(id).await
    }

    /// Deletes an event: ends it first when open (the recording stops), marks it and its
    /// playback deleted and queues the playback's objects once it is finished.
    pub async fn delete_event(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        end_in_tx(&mut tx, id, EndReason::Deleted).await?;
        let deleted: Option<Uuid> = sqlx::query_scalar(
            "UPDATE events SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if deleted.is_none() {
            return Err(StoreError::NotFound);
        }
        let playback: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM playbacks WHERE event_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(playback) = playback {
            mark_playback_deleted(&mut tx, playback).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stops a playback by ending its event; same answer as [`Store::end_event`].
    pub async fn stop_playback(&self, playback_id: Uuid) -> Result<EndState, StoreError> {
        let event_id: Uuid = sqlx::query_scalar(
            "SELECT event_id FROM playbacks WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(playback_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        self.end_event(event_id, EndReason::PlaybackStopped).await
    }

    /// Deletes a playback: a running one has its event ended first; its objects are queued for
    /// deletion once it is finished.
    pub async fn delete_playback(&self, playback_id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let event_id: Uuid = sqlx::query_scalar(
            "SELECT event_id FROM playbacks WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(playback_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        end_in_tx(&mut tx, event_id, EndReason::Deleted).await?;
        mark_playback_deleted(&mut tx, playback_id).await?;
        tx.commit().await?;
        Ok(())
    }
}
