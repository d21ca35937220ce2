//! The `outbox` table: rows written inside the transaction of the state change they announce
//! ([`enqueue`], the one way a row is added), claimed and marked published (or dead) by the
//! relay (`crate::outbox`).

use super::{Store, StoreError};
use sqlx::{FromRow, PgConnection};

/// The channel `NOTIFY`ed when outbox rows are committed; the relay `LISTEN`s on it.
pub const NOTIFY_CHANNEL: &str = "camrec_outbox";

/// One message to publish.
#[derive(Clone, Debug)]
pub struct OutboxMessage {
    pub subject: String,
    /// The `Nats-Msg-Id`: the server drops a second publish with the same id.
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// A claimed, unpublished row.
#[derive(Debug, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// Adds `msg` to the outbox inside `conn`'s transaction and notifies the relay at commit, in
/// one statement. A message with an id already in the outbox is not added twice.
pub async fn enqueue(conn: &mut PgConnection, msg: &OutboxMessage) -> Result<(), StoreError> {
    sqlx::query(
        "WITH queued AS (INSERT INTO outbox (subject, msg_id, payload) VALUES ($1, $2, $3) \
         ON CONFLICT (msg_id) DO NOTHING) \
         SELECT pg_notify($4, '')",
    )
    .bind(&msg.subject)
    .bind(&msg.msg_id)
    .bind(&msg.payload)
    .bind(NOTIFY_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks up to `limit` unpublished rows (inside a transaction on `conn`), oldest first,
/// skipping rows another relay holds.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    Ok(sqlx::query_as::<_, OutboxRow>(
        "SELECT id, subject, msg_id, payload FROM outbox \
         WHERE published_at IS NULL AND dead_at IS NULL \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Marks rows published.
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets row `id` aside as dead (it can never be published) with `reason`; when it announced a
/// recording (`event.created`), that playback fails `undeliverable`, announced through the outbox
/// like a reconciler verdict.
pub async fn dead_letter(conn: &mut PgConnection, id: i64, reason: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET dead_at = now(), dead_reason = $2 WHERE id = $1")
        .bind(id)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    let message = format!("the recording request could not be delivered to the workers: {reason}");
    super::playbacks::fail_undeliverable(conn, id, &message).await
}

impl Store {
    /// Deletes rows published before `before`; returns how many. Unpublished rows are never
    /// deleted.
    pub async fn purge_published_outbox(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM outbox WHERE published_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// How many rows wait to be published (dead rows do not wait).
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many rows were set aside as dead.
    pub async fn outbox_dead(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
