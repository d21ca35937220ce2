//! NATS authentication and permissions (nats-users.conf, as testkit's servers run it), TLS, and
//! the projector's owner check: who may read and publish what, checked against a real
//! nats-server.

use crate::support::spawn_app;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use camrec_shared::messages::{Envelope, FailureCode, PlaybackStatus, StatusBody};
use camrec_shared::subjects::{playback_subject, Site};
use futures::StreamExt;
use std::time::Duration;
use testkit::{NatsServer, NatsUser};
use tokio::sync::mpsc;

/// A client of `user` that reports the server's errors (permission violations arrive as
/// `-ERR` lines, not as failures of the publish or subscribe call).
async fn client_with_errors(
    nats: &NatsServer,
    user: NatsUser,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = nats
        .options_as(user)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .expect("connect");
    (client, rx)
}

/// Waits for the server's permission violation naming `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> bool {
    let found = async {
        while let Some(e) = errors.recv().await {
            if e.contains("Permissions Violation") && e.contains(&format!("\"{subject}\"")) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(5), found)
        .await
        .unwrap_or(false)
}

/// Publishes `subject` as `user`; whether the server refused it.
async fn publish_refused(nats: &NatsServer, user: NatsUser, subject: &str) -> bool {
    let (client, mut errors) = client_with_errors(nats, user).await;
    client
        .publish(subject.to_owned(), "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    violation(&mut errors, subject).await
}

/// Subscribes to `subject` as `user`; whether the server refused it.
async fn subscribe_refused(nats: &NatsServer, user: NatsUser, subject: &str) -> bool {
    let (client, mut errors) = client_with_errors(nats, user).await;
    let _sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.flush().await.unwrap();
    violation(&mut errors, subject).await
}

async fn events_in_stream(app: &crate::support::TestApp) -> u64 {
    let js = app.js().await;
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn anonymous_clients_cannot_connect_so_cannot_read_events_or_publish() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.5", 1).await;
    app.motion(cam["id"].as_str().unwrap()).await;
    app.outbox_drained().await;
    assert_eq!(events_in_stream(&app).await, 1, "EVENTS holds the event");

    let anonymous = async_nats::ConnectOptions::new()
        .connect(app.nats.url())
        .await;
    let err = anonymous.expect_err("an anonymous client is refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("camrec-event-api".into(), "not-the-password".into())
        .connect(app.nats.url())
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn a_workers_user_cannot_publish_events_nor_speak_for_another_site() {
    let app = spawn_app().await;
    let cam = uuid::Uuid::new_v4();
    for subject in [
        format!("event.created.default.{cam}"),
        format!("event.ended.default.{cam}"),
        format!("playback.completed.north.{cam}"),
        "$JS.API.STREAM.UPDATE.EVENTS".to_owned(),
        "$JS.API.STREAM.DELETE.EVENTS".to_owned(),
        "$JS.API.STREAM.MSG.GET.EVENTS".to_owned(),
        "$JS.API.CONSUMER.CREATE.EVENTS.spy.event.created.north.>".to_owned(),
        "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.spy".to_owned(),
        "$JS.API.CONSUMER.MSG.NEXT.PLAYBACKS.event-api-projector".to_owned(),
    ] {
        assert!(
            publish_refused(&app.nats, NatsUser::Worker, &subject).await,
            "the worker's user published {subject}"
        );
    }
    for subject in ["event.>", "playback.>", "_INBOX_event_api.>", "_INBOX.>"] {
        assert!(
            subscribe_refused(&app.nats, NatsUser::Worker, subject).await,
            "the worker's user subscribed to {subject}"
        );
    }
    // What it is for is allowed (the end-to-end tests run the real worker with this user).
    assert!(
        !publish_refused(
            &app.nats,
            NatsUser::Worker,
            &format!("playback.progress.default.{cam}")
        )
        .await
    );
}

#[tokio::test]
async fn the_reader_reads_playbacks_and_publishes_nothing() {
    let app = spawn_app().await;
    let cam = uuid::Uuid::new_v4();
    for subject in [
        format!("playback.completed.default.{cam}"),
        format!("event.created.default.{cam}"),
        "$KV.camrec_recordings.stop.x".to_owned(),
        "$JS.API.STREAM.INFO.EVENTS".to_owned(),
        "$JS.API.CONSUMER.CREATE.PLAYBACKS.event-api-projector.playback.>".to_owned(),
        "$JS.API.CONSUMER.MSG.NEXT.PLAYBACKS.event-api-projector".to_owned(),
    ] {
        assert!(
            publish_refused(&app.nats, NatsUser::Reader, &subject).await,
            "the reader published {subject}"
        );
    }
    for subject in ["event.>", "_INBOX.>", "_INBOX_worker_default.>", "$KV.>"] {
        assert!(
            subscribe_refused(&app.nats, NatsUser::Reader, subject).await,
            "the reader subscribed to {subject}"
        );
    }

    // It follows statuses live, and through its own durable consumer on PLAYBACKS.
    let reader = app.nats.connect_as(NatsUser::Reader).await.unwrap();
    let mut live = reader.subscribe("playback.>").await.unwrap();
    reader.flush().await.unwrap();
    let created = app
        .motion(app.camera("10.0.0.6", 1).await["id"].as_str().unwrap())
        .await;
    app.publish_status(
        &created,
        10,
        StatusBody::Recording {
            started_at: chrono::Utc::now(),
        },
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("a live status")
        .unwrap();
    assert!(msg.subject.starts_with("playback.recording.default."));
    let js = async_nats::jetstream::new(reader);
    let consumer = js
        .get_stream("PLAYBACKS")
        .await
        .unwrap()
        .get_or_create_consumer(
            "camrec-reader",
            pull::Config {
                durable_name: Some("camrec-reader".into()),
                filter_subject: "playback.>".into(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("a stored status")
        .unwrap()
        .unwrap();
    msg.ack().await.unwrap();
}

#[tokio::test]
async fn event_apis_user_cannot_read_the_workers_deliveries() {
    let app = spawn_app().await;
    for subject in ["_INBOX_worker_default.>", "_INBOX.>", "event.>"] {
        assert!(
            subscribe_refused(&app.nats, NatsUser::EventApi, subject).await,
            "event-api's user subscribed to {subject}"
        );
    }
}

/// The service runs with its user and nothing it does is refused: an event goes out through the
/// outbox, statuses come back through the projector and the webhook consumer.
#[tokio::test]
async fn event_api_works_with_its_user_without_a_single_violation() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.7", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    app.outbox_drained().await;
    app.publish_status(
        &created,
        10,
        StatusBody::Failed {
            code: FailureCode::CameraUnreachable,
            message: "no route".into(),
        },
    )
    .await;
    app.wait_playback(&pb, "failed", |p| p["recordingStatus"] == "FAILED")
        .await;
    assert_eq!(app.nats.permission_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_status_from_another_worker_or_site_is_refused_and_counted() {
    let app = spawn_app().await;
    let cam = app.camera("10.0.0.8", 1).await;
    let created = app.motion(cam["id"].as_str().unwrap()).await;
    let pb = created["playbackId"].as_str().unwrap().to_owned();
    app.publish_status_from(
        &created,
        "w1",
        10,
        StatusBody::Recording {
            started_at: chrono::Utc::now(),
        },
    )
    .await;
    let p = app
        .wait_playback(&pb, "recording", |p| p["recordingStatus"] == "RECORDING")
        .await;
    assert_eq!(p["recordingStatus"], "RECORDING");

    // Another worker of the site claims it failed.
    let failed = || StatusBody::Failed {
        code: FailureCode::CameraUnreachable,
        message: "forged".into(),
    };
    app.publish_status_from(&created, "w2", 20, failed()).await;
    // The owner's name, but another site's message on this site's subject.
    let mut status = PlaybackStatus {
        playback_id: pb.parse().unwrap(),
        event_id: created["id"].as_str().unwrap().parse().unwrap(),
        camera_id: cam["id"].as_str().unwrap().parse().unwrap(),
        site: Site::new("north").unwrap(),
        worker_id: "w1".into(),
        seq: 30,
        takes_over_from: None,
        body: failed(),
    };
    let js = app.js().await;
    let envelope = |s: &PlaybackStatus| Envelope::new(chrono::Utc::now(), s.clone()).to_bytes();
    let default_subject = playback_subject(status.body.kind(), &Site::default(), status.camera_id);
    js.publish(default_subject, envelope(&status).into())
        .await
        .unwrap()
        .await
        .unwrap();
    // And another site's subject (only that site's workers may publish it).
    let north_subject = playback_subject(status.body.kind(), &status.site, status.camera_id);
    status.seq = 40;
    js.publish(north_subject, envelope(&status).into())
        .await
        .unwrap()
        .await
        .unwrap();

    testkit::wait_until(
        Duration::from_secs(20),
        "three refusals counted",
        || async {
            let text = app.metrics_text().await;
            let count = |reason: &str| {
                text.lines()
                    .find(|l| {
                        l.starts_with(&format!("projector_refused_total{{reason=\"{reason}\"}}"))
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (count("not_owner") == 1 && count("wrong_site") == 2).then_some(())
        },
    )
    .await
    .unwrap();
    let (_, p) = app.get(&format!("/playbacks/{pb}")).await;
    assert_eq!(p["recordingStatus"], "RECORDING", "{p}");
}

/// event-api's configuration against a TLS server: with `NATS_CA_FILE` it connects (as its user),
/// without it the server's certificate is not trusted and the error says so.
#[tokio::test]
async fn tls_needs_the_ca_file_and_says_so_without_it() {
    let nats = NatsServer::start_tls(testkit::tls::TestCa::generate().unwrap())
        .await
        .unwrap();
    let env = nats.env_as(NatsUser::EventApi);
    assert!(env[0].1.starts_with("tls://camrec-event-api:"));
    let config = |with_ca: bool| {
        let mut vars: std::collections::HashMap<&str, String> = env
            .iter()
            .filter(|(k, _)| with_ca || *k != "NATS_CA_FILE")
            .cloned()
            .collect();
        vars.insert(
            "JWT_SECRET",
            "test-secret-0123456789abcdef-0123456789".into(),
        );
        vars.insert("CAMERA_SECRET_KEY", crate::support::CAMERA_KEY.into());
        event_api::Config::from_lookup(|k| vars.get(k).cloned()).unwrap()
    };

    let trusted = config(true);
    assert!(trusted.nats.requires_tls());
    let client = trusted
        .nats
        .connect(camrec_shared::natsconn::inbox::EVENT_API)
        .await
        .expect("connects with NATS_CA_FILE");
    client.flush().await.expect("a round trip over TLS");
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );

    let err = config(false)
        .nats
        .connect(camrec_shared::natsconn::inbox::EVENT_API)
        .await
        .expect_err("refuses an unknown certificate authority");
    let text = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        !text.contains(&env[0].1),
        "no URL with its password in the error"
    );
}

/// A worker may create consumers on `EVENTS` only with its site's filter, which the request
/// subject carries; the server refuses a request whose body names another filter than its
/// subject, so the subject permission cannot be sidestepped.
#[tokio::test]
async fn a_worker_cannot_create_a_consumer_on_another_sites_events() {
    let app = spawn_app().await;
    app.outbox_drained().await;
    testkit::wait_until(Duration::from_secs(20), "EVENTS created", || async {
        app.js().await.get_stream("EVENTS").await.ok().map(|_| ())
    })
    .await
    .unwrap();
    let worker = app.nats.connect_as(NatsUser::Worker).await.unwrap();
    let body = serde_json::json!({
        "stream_name": "EVENTS",
        "config": {
            "durable_name": "spy",
            "filter_subject": "event.created.north.>",
            "ack_policy": "explicit",
        },
    });
    let reply = worker
        .request(
            "$JS.API.CONSUMER.CREATE.EVENTS.spy.event.created.default.>",
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    // 10131: the filter in the body does not match the one in the subject.
    assert_eq!(answer["error"]["err_code"], 10131, "{answer}");
    assert!(
        app.js()
            .await
            .get_stream("EVENTS")
            .await
            .unwrap()
            .consumer_info("spy")
            .await
            .is_err(),
        "no consumer was created"
    );
}
