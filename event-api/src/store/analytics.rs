//! The analytics query: playback figures per time bucket and camera, in one SQL statement over
//! `playbacks` (bucketed by `created_at`, read through `playbacks_created_idx` or, for one
//! camera, `playbacks_camera_idx`).

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::FromRow;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The width of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }
}

/// The figures of one camera in one bucket.
#[derive(Clone, Debug, FromRow)]
pub struct AnalyticsRow {
    /// The bucket's start (UTC).
    pub bucket: DateTime<Utc>,
    pub camera_id: Uuid,
    /// Playbacks created in the bucket.
    pub started: i64,
    pub completed: i64,
    pub failed: i64,
    /// Failed playbacks by `error_code` (`unknown` when it has none).
    pub failed_by_code: Json<BTreeMap<String, i64>>,
    /// Sum of the completed clips' durations.
    pub recorded_seconds: f64,
    /// Sum of the completed clips' sizes, deleted ones left out.
    pub bytes_stored: i64,
    /// Median and 95th percentile (interpolated) of the seconds from a clip's end to its
    /// `COMPLETED` status; `None` without completed clips.
    pub median_completion_sec: Option<f64>,
    pub p95_completion_sec: Option<f64>,
}

impl Store {
    /// The figures of playbacks created in `[from, to)`, per bucket and camera (only buckets
    /// that have playbacks), ordered by bucket then camera.
    pub async fn analytics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        camera_id: Option<Uuid>,
        bucket: Bucket,
    ) -> Result<Vec<AnalyticsRow>, StoreError> {
        Ok(sqlx::query_as::<_, AnalyticsRow>(
            "WITH p AS ( \
                 SELECT date_trunc($1, created_at, 'UTC') AS bucket, camera_id, status, \
                        error_code, duration_sec, file_size_bytes, deleted_at, \
                        CASE WHEN status = 'COMPLETED' AND ended_at IS NOT NULL \
                             THEN extract(epoch FROM last_status_at - ended_at)::float8 END \
                             AS completion_sec \
                 FROM playbacks \
                 WHERE created_at >= $2 AND created_at < $3 \
                   AND ($4::uuid IS NULL OR camera_id = $4)), \
             codes AS ( \
                 SELECT bucket, camera_id, jsonb_object_agg(code, n) AS failed_by_code \
                 FROM (SELECT bucket, camera_id, COALESCE(error_code, 'unknown') AS code, \
                              count(*) AS n \
                       FROM p WHERE status = 'FAILED' GROUP BY 1, 2, 3) f \
                 GROUP BY bucket, camera_id) \
             SELECT p.bucket, p.camera_id, \
                    count(*) AS started, \
                    count(*) FILTER (WHERE p.status = 'COMPLETED') AS completed, \
                    count(*) FILTER (WHERE p.status = 'FAILED') AS failed, \
                    COALESCE(codes.failed_by_code, '{}'::jsonb) AS failed_by_code, \
                    COALESCE(sum(p.duration_sec) FILTER (WHERE p.status = 'COMPLETED'), 0)::float8 \
                        AS recorded_seconds, \
                    COALESCE(sum(p.file_size_bytes) \
                        FILTER (WHERE p.status = 'COMPLETED' AND p.deleted_at IS NULL), 0)::int8 \
                        AS bytes_stored, \
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY p.completion_sec) \
                        AS median_completion_sec, \
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY p.completion_sec) \
                        AS p95_completion_sec \
             FROM p LEFT JOIN codes USING (bucket, camera_id) \
             GROUP BY p.bucket, p.camera_id, codes.failed_by_code \
             ORDER BY p.bucket, p.camera_id",
        )
        .bind(bucket.as_str())
        .bind(from)
        .bind(to)
        .bind(camera_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
