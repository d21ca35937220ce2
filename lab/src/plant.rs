//! Planted defects for the control run: the checker must be able to fail. Each plant breaks the
//! promise in one place, behind the services' back, and says which event or playback it broke, so
//! the control run can check that the checker reported exactly that loss.

use crate::cluster::Cluster;
use object_store::ObjectStore;
use sqlx::Connection;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// A defect to plant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// While NATS is down, delete one committed but unpublished `event.created` outbox row
    /// straight from the database: an acknowledged event whose message never leaves.
    DropOutbox,
    /// After the run, delete one uploaded clip from the object store: a `COMPLETED` playback
    /// without its object.
    DeleteObject,
}

impl FromStr for Plant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop-outbox" => Ok(Plant::DropOutbox),
            "delete-object" => Ok(Plant::DeleteObject),
            other => Err(format!(
                "unknown plant {other:?} (drop-outbox or delete-object)"
            )),
        }
    }
}

impl fmt::Display for Plant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plant::DropOutbox => "drop-outbox",
            Plant::DeleteObject => "delete-object",
        })
    }
}

/// What a plant broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planted {
    /// The event whose `event.created` row was deleted.
    OutboxRow { event_id: Uuid },
    /// The playback whose video object was deleted.
    Object { playback_id: Uuid },
}

/// A defect could not be planted.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("no unpublished event.created row appeared within {0:?} (is an event created while NATS is down?)")]
    NoUnpublishedRow(Duration),
    #[error("an outbox msg_id that is not <event_id>:created: {0}")]
    MsgId(String),
    #[error("no COMPLETED playback to delete the object of")]
    NoCompletedPlayback,
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("object store: {0}")]
    Storage(String),
}

impl Plant {
    /// Deletes one unpublished `event.created` row within `window` (NATS is down meanwhile, so
    /// rows committed then stay unpublished). Rows the relay holds are skipped, not waited for.
    pub async fn drop_outbox_row(
        database_url: &str,
        window: Duration,
    ) -> Result<Planted, PlantError> {
        let window = window.max(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + window;
        let mut conn = sqlx::PgConnection::connect(database_url).await?;
        loop {
            let row: Option<(String,)> = sqlx::query_as(
                "DELETE FROM outbox WHERE id = (
                     SELECT id FROM outbox
                     WHERE published_at IS NULL AND subject LIKE 'event.created.%'
                     ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING msg_id",
            )
            .fetch_optional(&mut conn)
            .await?;
            if let Some((msg_id,)) = row {
                let event_id = msg_id
                    .strip_suffix(":created")
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| PlantError::MsgId(msg_id.clone()))?;
                tracing::warn!(%event_id, "planted: deleted the event.created outbox row");
                tokio::time::sleep_until(deadline).await;
                return Ok(Planted::OutboxRow { event_id });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlantError::NoUnpublishedRow(window));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes the video object of `playback_id` (a `COMPLETED` playback) from the S3 server.
    pub async fn delete_object(
        cluster: &Cluster,
        playback_id: Uuid,
    ) -> Result<Planted, PlantError> {
        let storage = cluster
            .s3
            .storage()
            .map_err(|e| PlantError::Storage(e.to_string()))?;
        let key = camrec_shared::storage::ObjectKey::Video(camrec_shared::PlaybackId(playback_id));
        storage.store().delete(&key.path()).await?;
        tracing::warn!(%playback_id, "planted: deleted the uploaded clip");
        Ok(Planted::Object { playback_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plants_parse_and_print() {
        for p in [Plant::DropOutbox, Plant::DeleteObject] {
            assert_eq!(p.to_string().parse::<Plant>(), Ok(p));
        }
        assert!("ack-early".parse::<Plant>().is_err());
    }
}
