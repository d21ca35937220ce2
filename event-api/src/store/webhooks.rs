//! The `webhooks` and `webhook_deliveries` tables: the receivers of playback notifications and
//! one row per notification per receiver, with its attempts (sent by `crate::webhooks`). The
//! secret leaves this module only inside [`DueDelivery`], to sign a request.

use super::{Page, PageRequest, Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

const COLUMNS: &str = "id, url, secret, events, camera_ids, enabled, created_at, updated_at";

/// One webhook as stored.
#[derive(Clone, FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    /// `None`: every camera.
    pub camera_ids: Option<Vec<Uuid>>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Every writable column of a webhook (a create, or a patch merged onto the stored row).
#[derive(Clone)]
pub struct WebhookFields {
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub camera_ids: Option<Vec<Uuid>>,
    pub enabled: bool,
}

impl From<WebhookRow> for WebhookFields {
    fn from(r: WebhookRow) -> Self {
        Self {
            url: r.url,
            secret: r.secret,
            events: r.events,
            camera_ids: r.camera_ids,
            enabled: r.enabled,
        }
    }
}

/// One delivery as `GET /webhooks/:id/deliveries` shows it.
#[derive(Clone, Debug, FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub message_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A delivery claimed for sending, with what the request needs.
#[derive(Clone, FromRow)]
pub struct DueDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_type: String,
    pub body: String,
    pub url: String,
    pub secret: String,
    pub attempts: i32,
    pub first_attempt_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { status_code: i32 },
    /// Any other answer, or no answer; `retry_at` `None` means the delivery is dead.
    Failed {
        status_code: Option<i32>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

const DELIVERY_COLUMNS: &str = "id, message_id, event_type, status, attempts, status_code, \
     last_error, next_attempt_at, first_attempt_at, last_attempt_at, delivered_at, created_at";

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1))
}

impl Store {
    pub async fn create_webhook(&self, w: &WebhookFields) -> Result<WebhookRow, StoreError> {
        Ok(sqlx::query_as::<_, WebhookRow>(&format!(
            "INSERT INTO webhooks (id, url, secret, events, camera_ids, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&w.url)
        .bind(&w.secret)
        .bind(&w.events)
        .bind(&w.camera_ids)
        .bind(w.enabled)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn update_webhook(
        &self,
        id: Uuid,
        w: &WebhookFields,
    ) -> Result<WebhookRow, StoreError> {
        sqlx::query_as::<_, WebhookRow>(&format!(
            "UPDATE webhooks SET url = $2, secret = $3, events = $4, camera_ids = $5, \
             enabled = $6, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&w.url)
        .bind(&w.secret)
        .bind(&w.events)
        .bind(&w.camera_ids)
        .bind(w.enabled)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    pub async fn webhook(&self, id: Uuid) -> Result<WebhookRow, StoreError> {
        sqlx::query_as::<_, WebhookRow>(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_webhooks(&self, page: PageRequest) -> Result<Page<WebhookRow>, StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query_as::<_, WebhookRow>(&format!(
            "SELECT {COLUMNS} FROM webhooks ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Page { rows, total })
    }

    /// Deletes a webhook and its deliveries.
    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Which of `ids` are not cameras.
    pub async fn unknown_cameras(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM unnest($1::uuid[]) AS given(id) \
             WHERE NOT EXISTS (SELECT 1 FROM cameras c WHERE c.id = given.id)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Adds one delivery of `body` for every enabled webhook that wants `event_type` from
    /// `camera_id`, in one statement; one already added for this message is left alone.
    /// Returns how many were added.
    pub async fn add_deliveries(
        &self,
        message_id: &str,
        event_type: &str,
        camera_id: Uuid,
        body: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, message_id, event_type, body) \
             SELECT gen_random_uuid(), id, $1, $2, $4 FROM webhooks \
             WHERE enabled AND $2 = ANY(events) AND (camera_ids IS NULL OR $3 = ANY(camera_ids)) \
             ON CONFLICT ON CONSTRAINT webhook_deliveries_message_key DO NOTHING",
        )
        .bind(message_id)
        .bind(event_type)
        .bind(camera_id)
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims up to `limit` deliveries due at `now` (of enabled webhooks) for `lease`: until
    /// then no other claim returns them, so a sender on another replica does not send them too,
    /// and a claimer that dies mid-send leaves them due again when the lease ends.
    pub async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        Ok(sqlx::query_as::<_, DueDelivery>(
            "WITH due AS ( \
                 SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'PENDING' AND d.next_attempt_at <= $1 AND w.enabled \
                 ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
             UPDATE webhook_deliveries d SET next_attempt_at = $2 \
             FROM due, webhooks w WHERE d.id = due.id AND w.id = d.webhook_id \
             RETURNING d.id, d.webhook_id, d.event_type, d.body, w.url, w.secret, d.attempts, \
                 d.first_attempt_at",
        )
        .bind(now)
        .bind(now + chrono(lease))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the attempt made at `now`.
    pub async fn record_attempt(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let (status, code, error, next) = match outcome {
            Outcome::Delivered { status_code } => ("DELIVERED", Some(*status_code), None, None),
            Outcome::Failed {
                status_code,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    "PENDING"
                } else {
                    "DEAD"
                },
                *status_code,
                Some(error.as_str()),
                *retry_at,
            ),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, \
             status_code = $4, last_error = $5, next_attempt_at = COALESCE($6, next_attempt_at), \
             first_attempt_at = COALESCE(first_attempt_at, $2), last_attempt_at = $2, \
             delivered_at = CASE WHEN $3 = 'DELIVERED' THEN $2 END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(status)
        .bind(code)
        .bind(error)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The deliveries of a webhook, newest first.
    pub async fn deliveries(
        &self,
        webhook_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<DeliveryRow>, StoreError> {
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1")
                .bind(webhook_id)
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query_as::<_, DeliveryRow>(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(webhook_id)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Page { rows, total })
    }
}
