//! Retention: cameras' `retentionDays` (validated), and the sweeper deleting only finished
//! playbacks older than their camera's (or the global) retention, in bounded batches, through
//! the object-deletion queue. Time is injected: the playbacks are dated relative to a `now` far
//! in the future, so the service's own sweeper (running on the real clock) never selects them.

use crate::analytics::Fixture;
use crate::support::spawn_app;
use chrono::{Duration, Utc};
use event_api::retention::{sweep_once, Retention};
use event_api::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn cameras_retention_days_is_validated_and_can_be_cleared() {
    let app = spawn_app().await;
    for bad in [json!(0), json!(36_501), json!("30"), json!(1.5)] {
        let (status, body) = app
            .post(
                "/cameras",
                json!({"name": "gate", "ipAddress": "10.0.0.9", "retentionDays": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "retentionDays", "{bad}: {body}");
    }
    let cam = app.camera("10.0.0.5", 1).await;
    assert!(cam["retentionDays"].is_null());
    let path = format!("/cameras/{}", cam["id"].as_str().unwrap());
    let admin = Some(app.admin_token.as_str());
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"retentionDays": 30})),
        )
        .await;
    assert_eq!(
        (status, &body["retentionDays"]),
        (StatusCode::OK, &json!(30))
    );
    let (_, body) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(body["retentionDays"], 30, "absent leaves it alone");
    let (_, body) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"retentionDays": null})),
        )
        .await;
    assert!(body["retentionDays"].is_null(), "{body}");
}

async fn deleted(pool: &sqlx::PgPool, id: Uuid) -> bool {
    sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM playbacks WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_expired_finished_playbacks_are_deleted_in_batches_with_their_objects() {
    let app = spawn_app().await;
    let a = app.camera("10.0.0.5", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.camera("10.0.0.6", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/cameras/{a}"),
            Some(&app.admin_token),
            Some(json!({"retentionDays": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let now = Utc::now() + Duration::days(1000);
    let ago = |d: i64| now - Duration::days(d);
    let a_old_done = Fixture::new(&a, ago(40), "COMPLETED")
        .clip(5.0, 10, 1)
        .insert(&app.pool)
        .await;
    let a_old_failed = Fixture::new(&a, ago(31), "FAILED").insert(&app.pool).await;
    let a_old_running = Fixture::new(&a, ago(100), "RECORDING")
        .insert(&app.pool)
        .await;
    let a_old_pending = Fixture::new(&a, ago(90), "PENDING").insert(&app.pool).await;
    let a_young = Fixture::new(&a, ago(10), "COMPLETED")
        .clip(5.0, 10, 1)
        .insert(&app.pool)
        .await;
    let b_old = Fixture::new(&b, ago(40), "COMPLETED")
        .clip(5.0, 10, 1)
        .insert(&app.pool)
        .await;

    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let keep_by_default = Retention {
        default_days: None,
        batch: 1,
        max_per_minute: 600,
    };
    assert_eq!(
        sweep_once(&store, keep_by_default, now).await.unwrap(),
        1,
        "one batch"
    );
    assert!(
        deleted(&app.pool, a_old_done).await,
        "the oldest goes first"
    );
    assert!(!deleted(&app.pool, a_old_failed).await);
    assert_eq!(sweep_once(&store, keep_by_default, now).await.unwrap(), 1);
    assert_eq!(sweep_once(&store, keep_by_default, now).await.unwrap(), 0);
    assert!(deleted(&app.pool, a_old_failed).await);
    for kept in [a_old_running, a_old_pending, a_young, b_old] {
        assert!(!deleted(&app.pool, kept).await, "{kept}");
    }
    let queued: Vec<String> = sqlx::query_scalar("SELECT key FROM object_deletions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        queued.contains(&format!("playbacks/{a_old_done}/video.mp4")),
        "{queued:?}"
    );
    assert!(
        queued.contains(&format!("playbacks/{a_old_failed}/video.mp4")),
        "{queued:?}"
    );
    assert!(
        queued.contains(&format!("playbacks/{a_old_done}/live/")),
        "the live segments go too: {queued:?}"
    );
    let (status, _) = app.get(&format!("/playbacks/{a_old_done}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A global default reaches the camera without its own retention, not the camera with one.
    let twenty_days = Retention {
        default_days: Some(20),
        batch: 100,
        max_per_minute: 600,
    };
    assert_eq!(sweep_once(&store, twenty_days, now).await.unwrap(), 1);
    assert!(deleted(&app.pool, b_old).await);
    assert!(!deleted(&app.pool, a_young).await);
    for kept in [a_old_running, a_old_pending] {
        assert!(
            !deleted(&app.pool, kept).await,
            "never a playback that is not finished"
        );
    }
    assert!(app.metrics_text().await.contains("retention_deleted_total"));
}
