//! The `object_deletions` queue: object keys to delete from storage, filled when a finished
//! playback is deleted (or a deleted one finishes) and drained by the sweeper (`crate::sweeper`).
//! A key ending in `/` is a prefix: everything under it goes (a playback's live segments, whose
//! names only a listing knows).

use super::{Store, StoreError};
use camrec_shared::storage::{segments_prefix, ObjectKey};
use camrec_shared::PlaybackId;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Queues every object of `playback` for deletion (idempotent): its named objects and the
/// prefix of its segments.
pub async fn queue_playback_objects(
    conn: &mut PgConnection,
    playback: PlaybackId,
) -> Result<(), StoreError> {
    let keys: Vec<String> = ObjectKey::all_for(playback)
        .iter()
        .map(ToString::to_string)
        .chain([segments_prefix(playback)])
        .collect();
    sqlx::query(
        "INSERT INTO object_deletions (key) SELECT unnest($1::text[]) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Store {
    /// Keys due for deletion at `now`, oldest first.
    pub async fn due_deletions(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, i32)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT key, attempts FROM object_deletions WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The object is gone.
    pub async fn deletion_done(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM object_deletions WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The deletion failed; try again at `retry_at`.
    pub async fn deletion_failed(
        &self,
        key: &str,
        retry_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE object_deletions SET attempts = attempts + 1, due_at = $2, last_error = $3 \
             WHERE key = $1",
        )
        .bind(key)
        .bind(retry_at)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many deletions are queued (tests and metrics).
    pub async fn queued_deletions(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM object_deletions")
            .fetch_one(&self.pool)
            .await?)
    }
}
