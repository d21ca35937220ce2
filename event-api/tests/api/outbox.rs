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
        event_ids.insert(body["event"]["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = app.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Recordings held up by the outage are not "not started": their message has not gone out.
    let store = Store::connect(app.config.database_url.expose(), 2)
        .await
        .unwrap();
    let limits = Limits {
        stale_playback: Duration::from_secs(120),
        pending_timeout: Duration::from_secs(900),
    };
    let later = Utc::now() + chrono::Duration::seconds(1000);
    assert!(reconcile_once(&store, later, limits)
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
    testkit::wait_until(Duration::from_secs(20), "ready again", || async {
        (app.get("/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await
    .unwrap();

    // The projector's consumer survived the outage too.
    let (_, page) = app.get("/playbacks?pageSize=1").await;
    let created = json!({
        "playbackId": page["data"][0]["id"],
        "event": {"id": page["data"][0]["event"]["id"], "camera": {"id": cam_id}},
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
        1
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the unpublished row stays");
}

/// The relay takes every notification already received with one wake-up, so a burst of
/// committed rows costs one round instead of one round per row; and taking them never waits
/// for notifications that have not come.
#[tokio::test]
async fn one_wake_up_takes_every_notification_already_received() {
    let app = spawn_app().await;
    let url = app.config.database_url.expose().to_owned();
    let mut listener = Some(sqlx::postgres::PgListener::connect(&url).await.unwrap());
    let channel = "camrec_drain_test";
    listener.as_mut().unwrap().listen(channel).await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    const SENT: usize = 50;
    for i in 0..SENT {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(i.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // The first one is waited for, as the relay's wait does.
    tokio::time::timeout(Duration::from_secs(10), listener.as_mut().unwrap().recv())
        .await
        .expect("the first notification arrives")
        .unwrap();
    // The server delivers the rest asynchronously: drain until all 49 are taken.
    let mut taken = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        taken += event_api::outbox::drain(&mut listener).await;
        if taken >= SENT - 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {taken} of {} notifications drained in 10 s",
            SENT - 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(taken, SENT - 1, "no notification is taken twice");
    assert!(listener.is_some(), "a healthy listener is kept");
    // Nothing left: draining answers at once with 0 instead of waiting.
    let empty = tokio::time::timeout(
        Duration::from_secs(1),
        event_api::outbox::drain(&mut listener),
    )
    .await
    .expect("draining an empty listener does not wait");
    assert_eq!(empty, 0);
}

/// While rows keep coming the relay polls instead of listening (`outbox_polling_total`); once
/// they stop it listens again, and a later row is still published. Every row goes out once.
#[tokio::test]
async fn a_stream_of_rows_is_polled_then_the_relay_listens_again() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    let cam_id = cam["id"].as_str().unwrap().to_owned();
    app.outbox_drained().await;
    const CLIENTS: usize = 8;
    const EACH: usize = 60;
    let clients = (0..CLIENTS).map(|_| {
        let (app, cam_id) = (&app, cam_id.clone());
        async move {
            for _ in 0..EACH {
                app.motion(&cam_id).await;
            }
        }
    });
    futures::future::join_all(clients).await;
    app.outbox_drained().await;
    let text = app.metrics_text().await;
    let polled = counter(&text, "outbox_polling_total");
    assert!(polled >= 1.0, "the relay never polled:\n{text}");

    // Listening again: the listener's connection last ran LISTEN, none is left at UNLISTEN.
    let db = &app.pool;
    testkit::wait_until(
        Duration::from_secs(20),
        "the relay listening again",
        || async {
            let last: Vec<String> = sqlx::query_scalar(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() \
             AND query LIKE '%LISTEN \"camrec_outbox\"' AND query NOT LIKE 'SELECT%'",
            )
            .fetch_all(db)
            .await
            .unwrap();
            (!last.is_empty() && last.iter().all(|q| q.starts_with("LISTEN"))).then_some(())
        },
    )
    .await
    .unwrap();
    let late = app.motion(&cam_id).await;
    app.outbox_drained().await;
    let msgs = app.stream_messages("EVENTS", "event.created.").await;
    let ids: HashSet<String> = msgs.iter().map(|m| m.1.clone()).collect();
    assert_eq!(msgs.len(), CLIENTS * EACH + 1, "one message per event");
    assert_eq!(ids.len(), msgs.len());
    assert!(ids.contains(&format!(
        "{}:created",
        late["event"]["id"].as_str().unwrap()
    )));
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
    let text = app.metrics_text().await;
    let rounds = counter(&text, "outbox_rounds_total");
    assert!(
        rounds >= 3.0,
        "{rows} rows need three rounds at least:\n{text}"
    );
}

/// NATS stopping while a backlog drains two rounds at a time: the round in flight fails, the
/// round claimed after it is rolled back unsent, and once NATS is back every row goes out exactly
/// once (rows acked before the stop are marked; a resent copy is dropped by `Nats-Msg-Id`).
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
