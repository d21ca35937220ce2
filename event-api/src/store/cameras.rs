//! The `cameras` table. The stored `rtsp_url` never holds a credential; `username` and
//! `password` are columns of their own, and `password` holds the password sealed for its camera
//! (`camrec_shared::sealed`): event-api never needs it in clear, it hands the sealed value to
//! the worker in `event.created`.
//!
//! Every change of a camera also writes, in its transaction, the outbox row that publishes the
//! camera's [`CameraSpec`] to the KV bucket `camrec_cameras` (the camera catalog the workers of
//! its site watch): a create, an update (to the old key too, `deleted`, when the site changed), a
//! delete (`deleted`) and a re-seal of the password.

use super::outbox::{enqueue, OutboxMessage};
use super::{on_unique, Page, PageRequest, Store, StoreError};
use camrec_shared::capture::{camera_spec_subject, CameraSpec};
use camrec_shared::rtsp::RtspUrl;
use camrec_shared::sealed::CameraKeys;
use camrec_shared::subjects::Site;
use camrec_shared::CameraId;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use std::fmt;
use uuid::Uuid;

pub(super) const COLUMNS: &str =
    "id, name, ip_address, channel, rtsp_port, rtsp_url, username, password, \
     codec, resolution, vendor, enabled, site, record_event_types, created_at, updated_at, \
     retention_days, pre_roll_sec, post_roll_sec";

/// One camera as stored.
#[derive(Clone, FromRow)]
pub struct CameraRow {
    pub id: Uuid,
    pub name: String,
    pub ip_address: String,
    pub channel: i32,
    pub rtsp_port: i32,
    pub rtsp_url: String,
    pub username: Option<String>,
    /// Sealed (`v1.<key id>.<...>`); cleartext only in a row written before sealing, until the
    /// next start of event-api seals it.
    pub password: Option<String>,
    pub codec: Option<String>,
    pub resolution: Option<String>,
    pub vendor: Option<String>,
    pub enabled: bool,
    pub site: String,
    pub record_event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many days its finished playbacks are kept; `None`: the global `RETENTION_DAYS`.
    pub retention_days: Option<i32>,
    /// Seconds of capture kept before an event's moment (0-60).
    pub pre_roll_sec: i32,
    /// Seconds recorded after an event's end (0-300).
    pub post_roll_sec: i32,
}

impl fmt::Debug for CameraRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CameraRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("rtsp_url", &self.rtsp_url)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl CameraRow {
    /// The URL with the username and no password: the one `event.created` carries (beside the
    /// sealed password).
    pub fn rtsp_url_with_username(&self) -> Option<RtspUrl> {
        RtspUrl::parse(&self.rtsp_url)
            .ok()
            .map(|u| u.with_credentials(self.username.as_deref(), None))
    }

    /// The URL as clients see it: `rtsp://user:***@host/...` when a password is stored.
    pub fn masked_rtsp_url(&self) -> String {
        let marker = self.password.as_ref().map(|_| "***");
        match RtspUrl::parse(&self.rtsp_url) {
            Ok(u) => u
                .with_credentials(self.username.as_deref(), marker)
                .masked(),
            Err(_) => self.rtsp_url.clone(),
        }
    }

    /// Whether events of `event_type` record on this camera.
    pub fn records(&self, event_type: &str) -> bool {
        self.record_event_types.iter().any(|t| t == event_type)
    }

    /// The camera's spec for the catalog, `max_duration_sec` the global `MAX_RECORDING_SEC`;
    /// `None` when the stored URL or site does not read (never written by the API). A password
    /// still in clear (a row from before sealing, until the next start seals it) is left out:
    /// the spec never carries one.
    pub fn spec(&self, max_duration_sec: u32) -> Option<CameraSpec> {
        Some(CameraSpec {
            camera_id: CameraId(self.id),
            site: Site::new(&self.site).ok()?,
            name: self.name.clone(),
            rtsp_url: self.rtsp_url_with_username()?,
            password_sealed: self
                .password
                .clone()
                .filter(|p| CameraKeys::key_id(p).is_some()),
            enabled: self.enabled,
            deleted: false,
            pre_roll_sec: u32::try_from(self.pre_roll_sec).unwrap_or_default(),
            post_roll_sec: u32::try_from(self.post_roll_sec).unwrap_or_default(),
            max_duration_sec,
            updated_at: self.updated_at,
        })
    }
}

/// The outbox message that puts `spec` at its key of the camera catalog. Its message id is unique
/// per row (a relay retry of the row is deduplicated; a later spec never is).
pub fn spec_message(spec: &CameraSpec) -> OutboxMessage {
    OutboxMessage {
        subject: camera_spec_subject(&spec.site, spec.camera_id),
        msg_id: format!("camera:{}:{}", spec.camera_id, uuid::Uuid::now_v7()),
        payload: serde_json::to_vec(spec).unwrap_or_default(),
    }
}

/// Queues `row`'s spec (marked `deleted` when asked) for the camera catalog in `conn`'s
/// transaction. A row whose spec does not read is logged and skipped: its camera cannot record.
async fn publish_spec(
    conn: &mut PgConnection,
    row: &CameraRow,
    max_duration_sec: u32,
    deleted: bool,
) -> Result<(), StoreError> {
    let Some(mut spec) = row.spec(max_duration_sec) else {
        tracing::warn!(camera_id = %row.id, "camera has no valid URL or site; not in the catalog");
        return Ok(());
    };
    spec.deleted = deleted;
    if deleted {
        spec.updated_at = Utc::now();
    }
    enqueue(conn, &spec_message(&spec)).await
}

/// Every writable column of a camera (a create, or a patch merged onto the stored row).
#[derive(Clone)]
pub struct CameraFields {
    pub name: String,
    pub ip_address: String,
    pub channel: i32,
    pub rtsp_port: i32,
    /// Without credentials.
    pub rtsp_url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub codec: Option<String>,
    pub resolution: Option<String>,
    pub vendor: Option<String>,
    pub enabled: bool,
    pub site: String,
    pub record_event_types: Vec<String>,
    pub retention_days: Option<i32>,
    pub pre_roll_sec: i32,
    pub post_roll_sec: i32,
}

impl CameraFields {
    /// What makes the camera unique: its stream ([`RtspUrl::stream_key`]).
    pub fn stream_key(&self) -> Option<String> {
        RtspUrl::parse(&self.rtsp_url).ok().map(|u| u.stream_key())
    }
}

impl From<CameraRow> for CameraFields {
    fn from(r: CameraRow) -> Self {
        Self {
            name: r.name,
            ip_address: r.ip_address,
            channel: r.channel,
            rtsp_port: r.rtsp_port,
            rtsp_url: r.rtsp_url,
            username: r.username,
            password: r.password,
            codec: r.codec,
            resolution: r.resolution,
            vendor: r.vendor,
            enabled: r.enabled,
            site: r.site,
            record_event_types: r.record_event_types,
            retention_days: r.retention_days,
            pre_roll_sec: r.pre_roll_sec,
            post_roll_sec: r.post_roll_sec,
        }
    }
}

/// `GET /cameras` filters.
#[derive(Clone, Debug, Default)]
pub struct CameraFilter {
    pub enabled: Option<bool>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    pub ip_address: Option<String>,
    pub channel: Option<i32>,
    pub site: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

/// The sortable columns of `GET /cameras` (a whitelist: the API name maps to a column here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraSort {
    Name,
    IpAddress,
    Channel,
    CreatedAt,
    UpdatedAt,
}

impl CameraSort {
    /// The API names, for validation messages.
    pub const NAMES: &'static str = "name, ipAddress, channel, createdAt, updatedAt";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::Name,
            "ipAddress" => Self::IpAddress,
            "channel" => Self::Channel,
            "createdAt" => Self::CreatedAt,
            "updatedAt" => Self::UpdatedAt,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::IpAddress => "ip_address",
            Self::Channel => "channel",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

const DUPLICATE: &str = "a camera with this stream (host, port and path of rtspUrl) already exists";
const UNIQUE: &str = "cameras_stream_key_key";

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &CameraFilter) {
    qb.push(" WHERE true");
    if let Some(v) = f.enabled {
        qb.push(" AND enabled = ").push_bind(v);
    }
    if let Some(v) = &f.name {
        let pattern = format!(
            "%{}%",
            v.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        qb.push(" AND name ILIKE ").push_bind(pattern);
    }
    if let Some(v) = &f.ip_address {
        qb.push(" AND ip_address = ").push_bind(v.clone());
    }
    if let Some(v) = f.channel {
        qb.push(" AND channel = ").push_bind(v);
    }
    if let Some(v) = &f.site {
        qb.push(" AND site = ").push_bind(v.clone());
    }
    if let Some(v) = f.created_from {
        qb.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = f.created_to {
        qb.push(" AND created_at <= ").push_bind(v);
    }
}

impl Store {
    /// Seals with `keys`' current key every stored password that is not sealed with it: a
    /// cleartext one from before sealing, or one sealed with a retired key (key rotation).
    /// Returns how many were sealed again. A value that does not open is left as it is, counted
    /// in the log (its camera needs its password given again).
    /// Each re-sealed camera's new spec goes to the catalog (`max_duration_sec`: the global
    /// `MAX_RECORDING_SEC`) in the transaction of its update.
    pub async fn reseal_camera_passwords(
        &self,
        keys: &CameraKeys,
        max_duration_sec: u32,
    ) -> Result<u64, StoreError> {
        // Key ids may hold `_`, a LIKE wildcard.
        let current = format!("v1.{}.%", keys.current_id().replace('_', "\\_"));
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, password FROM cameras WHERE password IS NOT NULL AND password NOT LIKE $1",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?;
        let mut sealed = 0;
        for (id, stored) in rows {
            let plain = match CameraKeys::key_id(&stored) {
                None => stored,
                Some(_) => match keys.open(id, &stored) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(camera_id = %id, error = %e, "a camera's password does not open; give it again");
                        continue;
                    }
                },
            };
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query_as::<_, CameraRow>(&format!(
                "UPDATE cameras SET password = $2 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(keys.seal(id, &plain))
            .fetch_one(&mut *tx)
            .await?;
            publish_spec(&mut tx, &row, max_duration_sec, false).await?;
            tx.commit().await?;
            sealed += 1;
        }
        Ok(sealed)
    }

    /// Stores camera `id` (the id is chosen by the caller: a password is sealed for it) and
    /// queues its spec for the catalog.
    pub async fn create_camera(
        &self,
        id: Uuid,
        c: &CameraFields,
        max_duration_sec: u32,
    ) -> Result<CameraRow, StoreError> {
        let sql = format!(
            "INSERT INTO cameras (id, name, ip_address, channel, rtsp_port, rtsp_url, username, \
             password, codec, resolution, vendor, enabled, site, record_event_types, stream_key, \
             retention_days, pre_roll_sec, post_roll_sec) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18) \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, CameraRow>(&sql)
            .bind(id)
            .bind(&c.name)
            .bind(&c.ip_address)
            .bind(c.channel)
            .bind(c.rtsp_port)
            .bind(&c.rtsp_url)
            .bind(&c.username)
            .bind(&c.password)
            .bind(&c.codec)
            .bind(&c.resolution)
            .bind(&c.vendor)
            .bind(c.enabled)
            .bind(&c.site)
            .bind(&c.record_event_types)
            .bind(c.stream_key())
            .bind(c.retention_days)
            .bind(c.pre_roll_sec)
            .bind(c.post_roll_sec)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| on_unique(e, UNIQUE, DUPLICATE))?;
        publish_spec(&mut tx, &row, max_duration_sec, false).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Stores the new fields of camera `id` and queues its spec for the catalog; when the site
    /// changed, also a `deleted` spec at the old site's key, so that site's workers let it go.
    pub async fn update_camera(
        &self,
        id: Uuid,
        c: &CameraFields,
        max_duration_sec: u32,
    ) -> Result<CameraRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let old = sqlx::query_as::<_, CameraRow>(&format!(
            "SELECT {COLUMNS} FROM cameras WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let sql = format!(
            "UPDATE cameras SET name = $2, ip_address = $3, channel = $4, rtsp_port = $5, \
             rtsp_url = $6, username = $7, password = $8, codec = $9, resolution = $10, \
             vendor = $11, enabled = $12, site = $13, record_event_types = $14, stream_key = $15, \
             retention_days = $16, pre_roll_sec = $17, post_roll_sec = $18, updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query_as::<_, CameraRow>(&sql)
            .bind(id)
            .bind(&c.name)
            .bind(&c.ip_address)
            .bind(c.channel)
            .bind(c.rtsp_port)
            .bind(&c.rtsp_url)
            .bind(&c.username)
            .bind(&c.password)
            .bind(&c.codec)
            .bind(&c.resolution)
            .bind(&c.vendor)
            .bind(c.enabled)
            .bind(&c.site)
            .bind(&c.record_event_types)
            .bind(c.stream_key())
            .bind(c.retention_days)
            .bind(c.pre_roll_sec)
            .bind(c.post_roll_sec)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| on_unique(e, UNIQUE, DUPLICATE))?;
        if old.site != row.site {
            publish_spec(&mut tx, &old, max_duration_sec, true).await?;
        }
        publish_spec(&mut tx, &row, max_duration_sec, false).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn camera(&self, id: Uuid) -> Result<CameraRow, StoreError> {
        sqlx::query_as::<_, CameraRow>(&format!("SELECT {COLUMNS} FROM cameras WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// The cameras with these ids (for nesting into events and playbacks).
    pub async fn cameras_by_ids(&self, ids: &[Uuid]) -> Result<Vec<CameraRow>, StoreError> {
        Ok(sqlx::query_as::<_, CameraRow>(&format!(
            "SELECT {COLUMNS} FROM cameras WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_cameras(
        &self,
        filter: &CameraFilter,
        sort: CameraSort,
        descending: bool,
        page: PageRequest,
    ) -> Result<Page<CameraRow>, StoreError> {
        let mut count = QueryBuilder::new("SELECT count(*) FROM cameras");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM cameras"));
        push_filter(&mut qb, filter);
        let dir = if descending { "DESC" } else { "ASC" };
        qb.push(format!(" ORDER BY {} {dir}, id {dir}", sort.column()));
        qb.push(" LIMIT ").push_bind(page.limit());
        qb.push(" OFFSET ").push_bind(page.offset());
        let rows = qb
            .build_query_as::<CameraRow>()
            .fetch_all(&self.pool)
            .await?;
        Ok(Page { rows, total })
    }

    /// Deletes a camera that has no events (one with events is a conflict: disable it instead)
    /// and queues its `deleted` spec for the catalog.
    pub async fn delete_camera(&self, id: Uuid, max_duration_sec: u32) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, CameraRow>(&format!(
            "SELECT {COLUMNS} FROM cameras WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let has_events: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE camera_id = $1)")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if has_events {
            return Err(StoreError::Conflict(
                "the camera has events; disable it (enabled: false) instead of deleting it",
            ));
        }
        sqlx::query("DELETE FROM cameras WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        publish_spec(&mut tx, &row, max_duration_sec, true).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every camera's id and whether it is enabled (the capture gauge).
    pub async fn camera_switches(&self) -> Result<Vec<(CameraId, bool)>, StoreError> {
        let rows: Vec<(Uuid, bool)> = sqlx::query_as("SELECT id, enabled FROM cameras")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, on)| (CameraId(id), on))
            .collect())
    }

    /// Every camera (the catalog's check at start), in pages of `limit` after `after`.
    pub async fn cameras_after(
        &self,
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<CameraRow>, StoreError> {
        Ok(sqlx::query_as::<_, CameraRow>(&format!(
            "SELECT {COLUMNS} FROM cameras WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Queues the current spec of each camera of `ids` for the catalog, built from the rows as
    /// locked in this transaction (a change committing meanwhile is never overwritten by an older
    /// spec). Returns how many were queued.
    pub async fn republish_cameras(
        &self,
        ids: &[CameraId],
        max_duration_sec: u32,
    ) -> Result<usize, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as::<_, CameraRow>(&format!(
            "SELECT {COLUMNS} FROM cameras WHERE id = ANY($1) ORDER BY id FOR SHARE"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            publish_spec(&mut tx, row, max_duration_sec, false).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// Queues `specs` again marked `deleted` (their keys are stale: the camera is gone, or lives
    /// at another site now), except a camera that lives at that key by now. Returns how many.
    pub async fn retire_specs(&self, specs: Vec<CameraSpec>) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut retired = 0;
        for mut spec in specs {
            let site: Option<String> =
                sqlx::query_scalar("SELECT site FROM cameras WHERE id = $1 FOR SHARE")
                    .bind(spec.camera_id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            if site.as_deref() == Some(spec.site.as_str()) {
                continue;
            }
            spec.deleted = true;
            spec.updated_at = Utc::now();
            enqueue(&mut tx, &spec_message(&spec)).await?;
            retired += 1;
        }
        tx.commit().await?;
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(url: &str, username: Option<&str>, password: Option<&str>) -> CameraRow {
        CameraRow {
            id: Uuid::nil(),
            name: "gate".into(),
            ip_address: "10.0.0.5".into(),
            channel: 1,
            rtsp_port: 554,
            rtsp_url: url.into(),
            username: username.map(Into::into),
            password: password.map(Into::into),
            codec: None,
            resolution: None,
            vendor: None,
            enabled: true,
            site: "default".into(),
            record_event_types: vec!["MOTION".into()],
            created_at: Utc::now(),
            updated_at: Utc::now(),
            retention_days: None,
            pre_roll_sec: 5,
            post_roll_sec: 7,
        }
    }

    #[test]
    fn the_spec_carries_the_username_and_the_sealed_password_only() {
        let r = row(
            "rtsp://10.0.0.5:554/live",
            Some("admin"),
            Some("v1.k1.c2VhbGVk"),
        );
        let spec = r.spec(600).unwrap();
        assert_eq!(spec.rtsp_url.expose(), "rtsp://admin@10.0.0.5:554/live");
        assert_eq!(spec.password_sealed.as_deref(), Some("v1.k1.c2VhbGVk"));
        assert_eq!((spec.pre_roll_sec, spec.post_roll_sec), (5, 7));
        assert_eq!(spec.max_duration_sec, 600);
        assert!(spec.enabled && !spec.deleted);
        let msg = spec_message(&spec);
        assert_eq!(msg.subject, format!("$KV.camrec_cameras.default.{}", r.id));
        assert_ne!(spec_message(&spec).msg_id, msg.msg_id);
        let mut bad = r.clone();
        bad.site = "a b".into();
        assert!(bad.spec(600).is_none());
        let clear = row("rtsp://10.0.0.5:554/live", Some("admin"), Some("in-clear"));
        assert_eq!(clear.spec(600).unwrap().password_sealed, None);
    }

    #[test]
    fn the_password_is_masked_for_clients_and_never_in_the_url() {
        let r = row(
            "rtsp://10.0.0.5:554/live",
            Some("admin"),
            Some("v1.k1.c2VhbGVk"),
        );
        assert_eq!(r.masked_rtsp_url(), "rtsp://admin:***@10.0.0.5:554/live");
        let url = r.rtsp_url_with_username().unwrap();
        assert_eq!(url.username().as_deref(), Some("admin"));
        assert_eq!(url.password(), None);
        assert!(!format!("{r:?}").contains("v1.k1"));
        let none = row("rtsp://10.0.0.5:554/live", None, None);
        assert_eq!(none.masked_rtsp_url(), "rtsp://10.0.0.5:554/live");
        assert!(none.records("MOTION") && !none.records("ALERT"));
    }
}
