//! The `events` table and the transactions that start and end recordings: creating a recording
//! event writes the event, its `PENDING` playback and the `event.created` outbox row together
//! (in one transaction); ending one writes `ended_at` and the `event.ended` outbox row together.

use super::cameras::{CameraRow, COLUMNS as CAMERA_COLUMNS};
use super::outbox::{enqueue, OutboxMessage};
use super::playbacks::PlaybackState;
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
     e.occurred_at, e.ended_at, e.end_reason, p.id AS playback_id, p.status AS recording_status \
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
    /// The moment of the event: given by the client, or the request time.
    pub occurred_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub playback_id: Option<Uuid>,
    pub recording_status: Option<PlaybackState>,
}

/// A new event.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub camera_id: Uuid,
    pub event_type: EventType,
    pub description: Option<String>,
    /// The moment of the event (checked by the caller against the request time).
    pub occurred_at: DateTime<Utc>,
}

/// The state of an event after `end` (or `stop`), whether or not this call ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndState {
    pub event_id: Uuid,
    pub playback_id: Option<Uuid>,
    pub recording_status: Option<PlaybackState>,
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

/// The `event.ended` outbox message of an event that has a playback.
fn ended_message(
    event_id: Uuid,
    camera_id: Uuid,
    site: &str,
    playback_id: Uuid,
    reason: EndReason,
    ended_at: DateTime<Utc>,
) -> Result<OutboxMessage, StoreError> {
    let site = site_of(site)?;
    let camera_id = CameraId(camera_id);
    let event_id = EventId(event_id);
    let msg = Envelope::new(
        ended_at,
        EventEnded {
            event_id,
            playback_id: Some(PlaybackId(playback_id)),
            camera_id,
            site: site.clone(),
            reason,
            ended_at: Some(ended_at),
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
    let ended: Option<(Uuid, String, Option<Uuid>, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE events e SET ended_at = now(), end_reason = $2 \
         WHERE e.id = $1 AND e.ended_at IS NULL AND e.deleted_at IS NULL \
         RETURNING e.camera_id, (SELECT site FROM cameras c WHERE c.id = e.camera_id), \
         (SELECT p.id FROM playbacks p WHERE p.event_id = e.id), e.ended_at",
    )
    .bind(event_id)
    .bind(reason.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((camera_id, site, playback_id, ended_at)) = ended else {
        return Ok(false);
    };
    if let Some(playback_id) = playback_id {
        let msg = ended_message(event_id, camera_id, &site, playback_id, reason, ended_at)?;
        enqueue(conn, &msg).await?;
    }
    Ok(true)
}

/// The state `end` answers with: the event's (non-deleted) playback and its status.
async fn end_state(conn: &mut PgConnection, event_id: Uuid) -> Result<EndState, StoreError> {
    let (playback_id, recording_status): (Option<Uuid>, Option<PlaybackState>) = sqlx::query_as(
        "SELECT p.id, p.status FROM events e \
         LEFT JOIN playbacks p ON p.event_id = e.id AND p.deleted_at IS NULL \
         WHERE e.id = $1 AND e.deleted_at IS NULL",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(EndState {
        event_id,
        playback_id,
        recording_status,
    })
}

/// Marks the playback of `event_id` deleted; queues its objects when it is already finished
/// (a running one is queued by the projector when its terminal status arrives).
pub(super) async fn mark_playback_deleted(
    conn: &mut PgConnection,
    playback_id: Uuid,
) -> Result<(), StoreError> {
    let status: Option<PlaybackState> = sqlx::query_scalar(
        "UPDATE playbacks SET deleted_at = now(), updated_at = now() \
         WHERE id = $1 AND deleted_at IS NULL RETURNING status",
    )
    .bind(playback_id)
    .fetch_optional(&mut *conn)
    .await?;
    if status.is_some_and(PlaybackState::is_terminal) {
        deletions::queue_playback_objects(conn, PlaybackId(playback_id)).await?;
    }
    Ok(())
}

/// The camera of a new event, locked `FOR SHARE` until the transaction ends, so that a
/// concurrent update or delete of the camera waits for the event (a delete then finds the event
/// and refuses, ADR 0007).
async fn camera_for_event(
    conn: &mut PgConnection,
    camera_id: Uuid,
) -> Result<CameraRow, StoreError> {
    sqlx::query_as::<_, CameraRow>(&format!(
        "SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = $1 FOR SHARE"
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
                EventMoment {
                    event_id: id,
                    playback_id,
                    event_type: new.event_type,
                    created_at,
                    occurred_at: new.occurred_at,
                },
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
            occurred_at: new.occurred_at,
            ended_at: None,
            end_reason: None,
            playback_id,
            recording_status: playback_id.map(|_| PlaybackState::Pending),
        }
    }
}

/// What `event.created` says of the new event itself.
struct EventMoment {
    event_id: EventId,
    playback_id: PlaybackId,
    event_type: EventType,
    created_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
}

/// The `event.created` outbox message of a new recording on `camera`: its window is
/// `occurred_at - pre_roll_sec` to the end plus `post_roll_sec`, the camera's rolls.
fn created_message(
    camera: &CameraRow,
    event: EventMoment,
    max_recording_sec: u32,
) -> Result<OutboxMessage, StoreError> {
    let EventMoment {
        event_id,
        playback_id,
        event_type,
        created_at,
        occurred_at,
    } = event;
    let rtsp_url = camera
        .rtsp_url_with_username()
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
            password_sealed: camera.password.clone(),
            limits: RecordingLimits {
                max_duration_sec: max_recording_sec,
                pre_roll_sec: u32::try_from(camera.pre_roll_sec).unwrap_or_default(),
                post_roll_sec: u32::try_from(camera.post_roll_sec).unwrap_or_default(),
            },
            occurred_at: Some(occurred_at),
        },
    );
    Ok(OutboxMessage {
        subject: event_subject(EventKind::Created, &site, camera_id),
        msg_id: event_msg_id(event_id, EventKind::Created),
        payload: msg.to_bytes(),
    })
}

/// Writes the planned event and, for a recording, its `PENDING` playback and outbox row.
async fn insert_event(
    conn: &mut PgConnection,
    new: &NewEvent,
    planned: &PlannedEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (id, camera_id, type, description, created_at, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(planned.id.0)
    .bind(new.camera_id)
    .bind(new.event_type.as_str())
    .bind(&new.description)
    .bind(planned.created_at)
    .bind(new.occurred_at)
    .execute(&mut *conn)
    .await?;
    if let Some((playback_id, msg)) = &planned.recording {
        sqlx::query("INSERT INTO playbacks (id, event_id, camera_id) VALUES ($1, $2, $3)")
            .bind(playback_id.0)
            .bind(planned.id.0)
            .bind(new.camera_id)
            .execute(&mut *conn)
            .await?;
        enqueue(conn, msg).await?;
    }
    Ok(())
}

impl Store {
    /// Creates an event; for a type the camera records, also its `PENDING` playback and the
    /// `event.created` outbox row, in one transaction.
    pub async fn create_event(
        &self,
        new: &NewEvent,
        max_recording_sec: u32,
    ) -> Result<(EventRow, CameraRow), StoreError> {
        let mut tx = self.pool.begin().await?;
        let camera = camera_for_event(&mut tx, new.camera_id).await?;
        if !camera.enabled {
            return Err(StoreError::Conflict("the camera is disabled"));
        }
        let planned = PlannedEvent::new(new, &camera, max_recording_sec)?;
        insert_event(&mut tx, new, &planned).await?;
        tx.commit().await?;
        Ok((planned.into_row(new), camera))
    }

    /// Ends an event (idempotent): the first call writes `ended_at` and the `event.ended`
    /// outbox row in one transaction; later calls write nothing. Either way it answers the
    /// event's current state.
    pub async fn end_event(&self, id: Uuid, reason: EndReason) -> Result<EndState, StoreError> {
        let mut tx = self.pool.begin().await?;
        end_in_tx(&mut tx, id, reason).await?;
        let state = end_state(&mut tx, id).await?;
        tx.commit().await?;
        Ok(state)
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
