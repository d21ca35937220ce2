//! `GET /analytics` (VIEWER and up): recordings started, completed and failed (by code), success
//! rate, recorded seconds, bytes stored and the time from a clip's end to `COMPLETED`, per hour
//! or day and camera. The range is bounded so an answer stays small: at most 366 days by day,
//! 31 days by hour.

use super::auth::AuthUser;
use super::error::ApiError;
use super::extract::Params;
use super::AppState;
use crate::store::analytics::{AnalyticsRow, Bucket};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The figures of one camera in one bucket.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsBucketJson {
    /// The bucket's start (UTC).
    bucket: DateTime<Utc>,
    camera_id: Uuid,
    /// Playbacks created in the bucket.
    started: i64,
    completed: i64,
    failed: i64,
    /// Failed playbacks by failure code.
    failed_by_code: BTreeMap<String, i64>,
    /// completed / (completed + failed); `null` when none finished.
    success_rate: Option<f64>,
    recorded_seconds: f64,
    /// Bytes of the completed clips still stored.
    bytes_stored: i64,
    /// Seconds from a clip's end to its COMPLETED status.
    median_seconds_to_completed: Option<f64>,
    p95_seconds_to_completed: Option<f64>,
}

impl From<AnalyticsRow> for AnalyticsBucketJson {
    fn from(r: AnalyticsRow) -> Self {
        let finished = r.completed + r.failed;
        Self {
            bucket: r.bucket,
            camera_id: r.camera_id,
            started: r.started,
            completed: r.completed,
            failed: r.failed,
            failed_by_code: r.failed_by_code.0,
            success_rate: (finished > 0).then(|| r.completed as f64 / finished as f64),
            recorded_seconds: r.recorded_seconds,
            bytes_stored: r.bytes_stored,
            median_seconds_to_completed: r.median_completion_sec,
            p95_seconds_to_completed: r.p95_completion_sec,
        }
    }
}

/// The answer: the range actually used and its buckets.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsJson {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: &'static str,
    data: Vec<AnalyticsBucketJson>,
}

/// The widest range a bucket width answers.
fn max_span(bucket: Bucket) -> Duration {
    match bucket {
        Bucket::Hour => Duration::days(31),
        Bucket::Day => Duration::days(366),
    }
}

/// `from` and `to` as given or defaulted (`to`: now; `from`: 7 days before `to` by day, 1 day
/// by hour), checked: `from` before `to`, within [`max_span`].
pub fn range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    bucket: Bucket,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = to.unwrap_or(now);
    let default_span = match bucket {
        Bucket::Hour => Duration::days(1),
        Bucket::Day => Duration::days(7),
    };
    let from = from.unwrap_or(to - default_span);
    if from >= to {
        return Err(ApiError::invalid("from", "must be before to"));
    }
    if to - from > max_span(bucket) {
        return Err(ApiError::invalid(
            "to",
            format!(
                "must be at most {} days after from for bucket={}",
                max_span(bucket).num_days(),
                bucket.as_str()
            ),
        ));
    }
    Ok((from, to))
}

#[utoipa::path(get, path = "/analytics", tag = "analytics", security(("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "ISO-8601; default: 7 days (bucket=day) or 1 day (bucket=hour) before to"),
        ("to" = Option<String>, Query, description = "ISO-8601, exclusive; default now"),
        ("cameraId" = Option<Uuid>, Query),
        ("bucket" = Option<String>, Query, description = "hour or day (default); at most 31 days by hour, 366 by day")),
    responses((status = 200, body = AnalyticsJson), (status = 400), (status = 401)))]
pub async fn get_analytics(
    State(state): State<AppState>,
    _user: AuthUser,
    params: Params,
) -> Result<Json<AnalyticsJson>, ApiError> {
    let bucket = params
        .one_of("bucket", "hour, day", Bucket::parse)?
        .unwrap_or(Bucket::Day);
    let camera_id = params.uuid("cameraId")?;
    let (from, to) = range(params.time("from")?, params.time("to")?, bucket, Utc::now())?;
    let rows = state
        .store
        .analytics(from, to, camera_id, bucket)
        .await
        .map_err(|e| ApiError::from_store("analytics", e))?;
    Ok(Json(AnalyticsJson {
        from,
        to,
        bucket: bucket.as_str(),
        data: rows.into_iter().map(AnalyticsBucketJson::from).collect(),
    }))
}

pub fn router() -> Router<AppState> {
    Router::new().route("/analytics", get(get_analytics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_and_are_bounded() {
        let now = Utc::now();
        let (from, to) = range(None, None, Bucket::Day, now).unwrap();
        assert_eq!((to, to - from), (now, Duration::days(7)));
        let (from, _) = range(None, None, Bucket::Hour, now).unwrap();
        assert_eq!(now - from, Duration::days(1));
        assert!(range(Some(now - Duration::days(366)), Some(now), Bucket::Day, now).is_ok());
        let field = |r: Result<_, ApiError>| match r {
            Err(ApiError::Invalid { field, .. }) => field,
            _ => panic!("expected Invalid"),
        };
        assert_eq!(
            field(range(
                Some(now - Duration::days(367)),
                Some(now),
                Bucket::Day,
                now
            )),
            "to"
        );
        assert_eq!(
            field(range(
                Some(now - Duration::days(32)),
                Some(now),
                Bucket::Hour,
                now
            )),
            "to"
        );
        assert_eq!(field(range(Some(now), Some(now), Bucket::Day, now)), "from");
    }
}
