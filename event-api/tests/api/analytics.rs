//! `GET /analytics`: the figures of a known set of playbacks inserted in SQL with fixed times,
//! by day and by hour, for one camera or all, and the bounds of its range.

use crate::support::spawn_app;
use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A playback (with its event) as a test lays it down.
pub struct Fixture<'a> {
    pub camera: &'a str,
    pub created: DateTime<Utc>,
    pub status: &'a str,
    pub error_code: Option<&'a str>,
    pub duration_sec: Option<f64>,
    pub size: Option<i64>,
    /// Seconds from the clip's end (one minute after `created`) to the last status.
    pub completion_sec: i64,
    pub deleted: bool,
}

impl<'a> Fixture<'a> {
    pub fn new(camera: &'a str, created: DateTime<Utc>, status: &'a str) -> Self {
        Self {
            camera,
            created,
            status,
            error_code: None,
            duration_sec: None,
            size: None,
            completion_sec: 0,
            deleted: false,
        }
    }

    pub fn clip(mut self, duration_sec: f64, size: i64, completion_sec: i64) -> Self {
        self.duration_sec = Some(duration_sec);
        self.size = Some(size);
        self.completion_sec = completion_sec;
        self
    }

    /// Inserts the event and the playback; returns the playback's id.
    pub async fn insert(&self, pool: &PgPool) -> Uuid {
        let camera: Uuid = self.camera.parse().unwrap();
        let event = Uuid::now_v7();
        let playback = Uuid::now_v7();
        let ended = self.created + Duration::minutes(1);
        sqlx::query(
            "INSERT INTO events (id, camera_id, type, created_at, ended_at) \
             VALUES ($1, $2, 'MOTION', $3, $4)",
        )
        .bind(event)
        .bind(camera)
        .bind(self.created)
        .bind(ended)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO playbacks (id, event_id, camera_id, status, error_code, duration_sec, \
             file_size_bytes, started_at, ended_at, last_status_at, created_at, deleted_at, \
             video_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $8, $11, $12)",
        )
        .bind(playback)
        .bind(event)
        .bind(camera)
        .bind(self.status)
        .bind(self.error_code)
        .bind(self.duration_sec)
        .bind(self.size)
        .bind(self.created)
        .bind((self.status != "RECORDING").then_some(ended))
        .bind(ended + Duration::seconds(self.completion_sec))
        .bind(self.deleted.then_some(self.created))
        .bind(format!("playbacks/{playback}/video.mp4"))
        .execute(pool)
        .await
        .unwrap();
        playback
    }
}

fn failed<'a>(camera: &'a str, created: DateTime<Utc>, code: Option<&'a str>) -> Fixture<'a> {
    Fixture {
        error_code: code,
        ..Fixture::new(camera, created, "FAILED")
    }
}

#[tokio::test]
async fn figures_per_bucket_and_camera_match_a_known_set_of_playbacks() {
    let app = spawn_app().await;
    let a = app.camera("10.0.0.5", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.camera("10.0.0.6", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let day1 = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    let at = |h: i64| day1 + Duration::hours(h);
    let set = [
        Fixture::new(&a, at(10), "COMPLETED").clip(60.0, 1000, 10),
        Fixture {
            deleted: true,
            ..Fixture::new(&a, at(11), "COMPLETED").clip(30.0, 500, 20)
        },
        Fixture::new(&a, at(12), "COMPLETED").clip(10.0, 100, 60),
        failed(&a, at(13), Some("camera_unreachable")),
        failed(&a, at(14), Some("camera_unreachable")),
        failed(&a, at(15), Some("worker_lost")),
        Fixture::new(&a, at(16), "RECORDING"),
        Fixture::new(&b, at(10), "COMPLETED").clip(5.0, 50, 5),
        failed(&a, at(24 + 9), None),
        // Outside [from, to).
        Fixture::new(&a, at(48), "COMPLETED").clip(1.0, 1, 1),
        Fixture::new(&a, day1 - Duration::seconds(1), "COMPLETED").clip(1.0, 1, 1),
    ];
    for f in &set {
        f.insert(&app.pool).await;
    }

    let viewer = app.token_for("VIEWER").await;
    let (status, body) = app
        .call(
            Method::GET,
            "/analytics?from=2025-03-01&to=2025-03-03&bucket=day",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{body}");
    let row_a = &rows[0];
    assert_eq!(row_a["bucket"], "2025-03-01T00:00:00Z");
    assert_eq!(row_a["cameraId"], a.as_str());
    assert_eq!(
        (&row_a["started"], &row_a["completed"], &row_a["failed"]),
        (&json!(7), &json!(3), &json!(3))
    );
    assert_eq!(
        row_a["failedByCode"],
        json!({"camera_unreachable": 2, "worker_lost": 1})
    );
    assert_eq!(row_a["successRate"], 0.5);
    assert_eq!(row_a["recordedSeconds"], 100.0);
    assert_eq!(
        row_a["bytesStored"], 1100,
        "the deleted clip's bytes are not stored"
    );
    assert_eq!(row_a["medianSecondsToCompleted"], 20.0);
    // percentile_cont over 10, 20, 60: 20 + 0.9 * (60 - 20).
    assert!((row_a["p95SecondsToCompleted"].as_f64().unwrap() - 56.0).abs() < 1e-9);
    let row_b = &rows[1];
    assert_eq!(row_b["cameraId"], b.as_str());
    assert_eq!(
        (&row_b["started"], &row_b["successRate"]),
        (&json!(1), &json!(1.0))
    );
    assert_eq!(row_b["medianSecondsToCompleted"], 5.0);
    let row_a2 = &rows[2];
    assert_eq!(row_a2["bucket"], "2025-03-02T00:00:00Z");
    assert_eq!(row_a2["failedByCode"], json!({"unknown": 1}));
    assert_eq!(row_a2["successRate"], 0.0);
    assert!(row_a2["medianSecondsToCompleted"].is_null());

    let (_, one) = app
        .get(&format!(
            "/analytics?from=2025-03-01&to=2025-03-03&cameraId={b}"
        ))
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["bucket"], "day");

    let (_, hourly) = app
        .get("/analytics?from=2025-03-01T10:00:00Z&to=2025-03-01T12:00:00Z&bucket=hour")
        .await;
    let hours: Vec<(String, i64)> = hourly["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bucket"].as_str().unwrap().to_owned(),
                r["started"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hours,
        [
            ("2025-03-01T10:00:00Z".to_owned(), 1),
            ("2025-03-01T10:00:00Z".to_owned(), 1),
            ("2025-03-01T11:00:00Z".to_owned(), 1)
        ],
        "{hourly}"
    );
}

#[tokio::test]
async fn analytics_ranges_are_bounded_and_parameters_named() {
    let app = spawn_app().await;
    for (query, field) in [
        ("bucket=week", "bucket"),
        ("from=2025-03-02&to=2025-03-01", "from"),
        ("from=2024-01-01&to=2025-03-01", "to"),
        ("from=2025-01-01&to=2025-03-01&bucket=hour", "to"),
        ("from=yesterday", "from"),
        ("cameraId=x", "cameraId"),
    ] {
        let (status, body) = app.get(&format!("/analytics?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, body): (StatusCode, Value) = app.get("/analytics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!([]));
    let (status, _) = app.call(Method::GET, "/analytics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
