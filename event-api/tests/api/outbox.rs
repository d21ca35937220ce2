//! The outbox across a NATS outage: every committed event is published exactly once.

use crate::support::{spawn_app, TestApp};
use camrec_shared::messages::StatusBody;
use chrono::Utc;
use event_api::reconciler::{reconcile_once, Limits};
use event_api::store::Store;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// Waits until the outbox is empty and the relay has created the EVENTS stream.
async fn streams_ready(app: &TestApp) {
    app.outbox_drained().await;
    testkit::wait_until(Duration::from_secs(20), "EVENTS stream", || async {
        app.js().await.get_stream("EVENTS").await.ok().map(|_| ())
    })
    .await
    .unwrap();
}

/// A counter's value in a `/metrics` text (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn events_created_during_a_nats_outage_are_published_exactly_once() {
    let mut app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let cam_id = cam["id"].as_str().unwrap().to_owned();
    // The streams exist before the outage (the relay created them at start).
    streams_ready(&app).await;

    app.nats.stop();
    let mut event_ids = HashSet::new();
    for _ in 0..20 {
        let (status, body) = app
            .post("/events", json!({"cameraId": cam_id, "type": "MOTION"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        event_ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    // Still ready: requests succeed and the outbox carries them through the outage.
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["nats"], "disconnected");
    assert_eq!(ready["outboxBacklog"], 20);
    // Recordings held up by the outage are not "not started": their message has not gone out.
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let limits = Limits {
        stale_playback: Duration::from_secs(120),
        pending_timeout: Duration::from_secs(900),
    };
    let later = Utc::now() + chrono::Duration::seconds(1000);
    let nats_up_since = Some(Utc::now() - chrono::Duration::days(1));
    assert!(reconcile_once(&store, later, nats_up_since, limits)
        .await
        .unwrap()
        .is_empty());
    app.nats.restart().await.unwrap();

    app.outbox_drained().await;
    let msgs = testkit::wait_until(Duration::from_secs(30), "20 created messages", || async {
        let msgs = app.stream_messages("EVENTS", "event.created.").await;
        (msgs.len() >= 20).then_some(msgs)
    })
    .await
    .unwrap();
    assert_eq!(msgs.len(), 20);
    let ids: HashSet<String> = msgs.iter().map(|m| m.1.clone()).collect();
    assert_eq!(ids.len(), 20);
    let expected: HashSet<String> = event_ids.iter().map(|e| format!("{e}:created")).collect();
    assert_eq!(ids, expected);
    testkit::wait_until(Duration::from_secs(20), "NATS connected again", || async {
        (app.get("/ready").await.1["nats"] == "connected").then_some(())
    })
    .await
    .unwrap();

    // The projector's consumer survived the outage too.
    let (_, page) = app.get("/playbacks?pageSize=1").await;
    let created = json!({
        "playbackId": page["data"][0]["id"],
        "id": page["data"][0]["event"]["id"],
        "camera": {"id": cam_id},
    });
    app.publish_status(
        &created,
        1,
        StatusBody::Recording {
            started_at: Utc::now(),
        },
    )
    .await;
    app.wait_playback(
        page["data"][0]["id"].as_str().unwrap(),
        "status applied after the outage",
        |p| p["recordingStatus"] == "RECORDING",
    )
    .await;
}

#[tokio::test]
async fn published_rows_are_purged_after_the_retention_and_unpublished_never() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    app.motion(cam["id"].as_str().unwrap()).await;
    app.outbox_drained().await;
    sqlx::query(
        "INSERT INTO outbox (subject, msg_id, payload) VALUES ('x.y', 'never-published', '')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let retention = chrono::Duration::from_std(event_api::sweeper::OUTBOX_RETENTION).unwrap();
    assert_eq!(
        store
            .purge_published_outbox(Utc::now() - retention)
            .await
            .unwrap(),
        0
    );
    let later = Utc::now() + chrono::Duration::days(8);
    assert_eq!(
        store
            .purge_published_outbox(later - retention)
            .await
            .unwrap(),
        2,
        "the camera's spec and the event.created"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the unpublished row stays");
}

/// Writes `rows` outbox rows in one transaction: subjects `event.created.<name>.<n>`, msg ids
/// `<name>-<n>` with n zero-padded, so that they sort in commit order.
async fn insert_backlog(app: &TestApp, name: &str, rows: usize) {
    sqlx::query(
        "INSERT INTO outbox (subject, msg_id, payload) \
         SELECT 'event.created.' || $2 || '.' || g, $2 || '-' || lpad(g::text, 5, '0'), \
         convert_to('{}', 'UTF8') FROM generate_series(1, $1) g ORDER BY g",
    )
    .bind(rows as i32)
    .bind(name)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// A backlog of several full rounds (written while NATS is down) goes out exactly once and in
/// the order it was committed.
#[tokio::test]
async fn a_backlog_of_several_rounds_goes_out_once_and_in_order() {
    let mut app = spawn_app().await;
    streams_ready(&app).await;
    app.nats.stop();
    let rows = 2 * event_api::outbox::BATCH as usize + 100;
    insert_backlog(&app, "backlog", rows).await;
    app.nats.restart().await.unwrap();
    app.outbox_drained().await;
    let msgs = app
        .stream_messages("EVENTS", "event.created.backlog.")
        .await;
    let ids: Vec<String> = msgs.iter().map(|m| m.1.clone()).collect();
    let expected: Vec<String> = (1..=rows).map(|g| format!("backlog-{g:05}")).collect();
    assert_eq!(ids, expected, "every row once, in commit order");
}

/// NATS stopping while a backlog drains: the round in flight fails, and once NATS is back every
/// row goes out exactly once (rows acked before the stop are marked; a resent copy is dropped by
/// `Nats-Msg-Id`).
#[tokio::test]
async fn nats_stopping_mid_drain_loses_and_duplicates_nothing() {
    let mut app = spawn_app().await;
    streams_ready(&app).await;
    app.nats.stop();
    let rows = 20 * event_api::outbox::BATCH as usize;
    insert_backlog(&app, "middrain", rows).await;
    app.nats.restart().await.unwrap();
    // Stop NATS once the drain is under way (two rounds in, or later if it is fast).
    let js = app.js().await;
    testkit::wait_until(Duration::from_secs(30), "the drain under way", || async {
        let mut stream = js.get_stream("EVENTS").await.ok()?;
        let messages = stream.info().await.ok()?.state.messages;
        (messages >= 2 * event_api::outbox::BATCH as u64).then_some(())
    })
    .await
    .unwrap();
    app.nats.stop();
    let unpublished_at_stop: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.nats.restart().await.unwrap();
    app.outbox_drained().await;
    let msgs = app
        .stream_messages("EVENTS", "event.created.middrain.")
        .await;
    let ids: Vec<String> = msgs.iter().map(|m| m.1.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no row twice in the stream");
    assert_eq!(ids.len(), rows, "every row in the stream");
    eprintln!("{unpublished_at_stop} of {rows} rows were unpublished when NATS stopped");
}

/// A row NATS can never take (here, larger than the server's `max_payload`, as a 1.1 MB camera
/// URL once made) is set aside as dead with its reason, its recording fails `undeliverable`, and
/// the rows behind it, another camera's event among them, go out.
#[tokio::test]
async fn a_row_that_can_never_be_published_does_not_block_the_others() {
    let mut app = spawn_app().await;
    let bad_cam = app.camera("10.0.0.5", 1).await;
    let good_cam = app.camera("10.0.0.6", 1).await;
    streams_ready(&app).await;
    app.nats.stop();
    // What an event on a camera with a 1.1 MB URL wrote before URLs were capped.
    let (bad_event, bad_playback) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let bad_cam_id: uuid::Uuid = bad_cam["id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO events (id, camera_id, type) VALUES ($1, $2, 'MOTION')")
        .bind(bad_event)
        .bind(bad_cam_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO playbacks (id, event_id, camera_id) VALUES ($1, $2, $3)")
        .bind(bad_playback)
        .bind(bad_event)
        .bind(bad_cam_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO outbox (subject, msg_id, payload) VALUES ($1, $2, $3)")
        .bind(format!("event.created.default.{bad_cam_id}"))
        .bind(format!("{bad_event}:created"))
        .bind(vec![b' '; 1_100_000])
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let good = app.motion(good_cam["id"].as_str().unwrap()).await;
    app.nats.restart().await.unwrap();

    app.outbox_drained().await;
    let msgs = app.stream_messages("EVENTS", "event.created.").await;
    let ids: Vec<&str> = msgs.iter().map(|m| m.1.as_str()).collect();
    let good_id = format!("{}:created", good["id"].as_str().unwrap());
    assert_eq!(
        ids,
        [good_id.as_str()],
        "the good event went out, the bad one never"
    );
    let (reason,): (String,) =
        sqlx::query_as("SELECT dead_reason FROM outbox WHERE msg_id = $1 AND dead_at IS NOT NULL")
            .bind(format!("{bad_event}:created"))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(reason.contains("max_payload"), "{reason}");
    let pb = app
        .wait_playback(
            &bad_playback.to_string(),
            "the undeliverable recording failed",
            |p| p["recordingStatus"] == "FAILED",
        )
        .await;
    assert_eq!(pb["errorCode"], "undeliverable", "{pb}");
    let failed = app.stream_messages("PLAYBACKS", "playback.failed.").await;
    assert_eq!(failed.len(), 1, "the failure is announced");
    let (_, ready) = app.get("/ready").await;
    assert_eq!(ready["outboxDead"], 1, "{ready}");
    assert_eq!(ready["outboxBacklog"], 0, "{ready}");
    let text = app.metrics_text().await;
    assert!(counter(&text, "outbox_dead_total") >= 1.0, "{text}");
}
