//! The retention sweeper's statement: soft-deletes finished playbacks older than their camera's
//! retention (or the global one), queueing their objects exactly as `DELETE /playbacks/:id` does.

use super::events::mark_playback_deleted;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

impl Store {
    /// Deletes at most `limit` playbacks that are `COMPLETED` or `FAILED` and were created more
    /// than their camera's `retention_days` (or `default_days` when the camera has none) before
    /// `now`, oldest first, in one transaction; returns their ids. A playback that is not
    /// terminal is never selected; rows another sweeper holds are skipped.
    pub async fn delete_expired_playbacks(
        &self,
        now: DateTime<Utc>,
        default_days: Option<u32>,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let default_days = default_days.and_then(|d| i32::try_from(d).ok());
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT p.id FROM playbacks p JOIN cameras c ON c.id = p.camera_id \
             WHERE p.deleted_at IS NULL AND p.status IN ('COMPLETED', 'FAILED') \
             AND p.created_at < $1 - make_interval(days => COALESCE(c.retention_days, $2)) \
             ORDER BY p.created_at LIMIT $3 FOR UPDATE OF p SKIP LOCKED",
        )
        .bind(now)
        .bind(default_days)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for id in &ids {
            mark_playback_deleted(&mut tx, *id).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }
}
