//! camrec's event-api: the REST API over cameras, events, playbacks and users, plus the
//! background tasks that connect it to the recorders.
//!
//! [`serve`] is the whole service: it migrates the database, creates the first admin, starts the
//! outbox relay ([`outbox`]), the status projector ([`projector`]), the reconciler
//! ([`reconciler`]), the object-deletion sweeper ([`sweeper`]), the webhook consumer and sender
//! ([`webhooks`]), the retention sweeper ([`retention`]), the camera catalog's check
//! ([`catalog`]) and the capture lease watch ([`captures`]) under one cancellation token,
//! serves HTTP ([`http`], SQL in [`store`]) and returns after a graceful shutdown. Only this
//! crate touches PostgreSQL; it talks to the workers through JetStream only.

pub mod captures;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod http;
pub mod media;
pub mod nats_link;
pub mod outbox;
pub mod playbacks_feed;
pub mod projector;
pub mod reconciler;
pub mod retention;
pub mod store;
pub mod sweeper;
pub mod webhooks;

pub use config::{Config, ConfigError};
pub use http::AppState;

use camrec_shared::storage::{Storage, StorageError};
use http::auth::{hash_password, AuthKeys};
use std::sync::Arc;
use std::time::Duration;
use store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("nats: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("nats: {0}")]
    NatsConfig(#[from] camrec_shared::natsconn::NatsConfigError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot create the first admin: {0}")]
    Admin(String),
    #[error("webhook client: {0}")]
    Webhooks(#[from] reqwest::Error),
}

/// Creates the first admin from `ADMIN_USERNAME`/`ADMIN_PASSWORD` when no user exists.
async fn ensure_admin(store: &Store, config: &Config) -> Result<(), Error> {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    match (&config.admin_username, &config.admin_password) {
        (Some(name), Some(password)) => {
            let hash = hash_password(password.expose().to_owned())
                .await
                .map_err(|e| Error::Admin(e.to_string()))?;
            if store.ensure_first_admin(name, &hash).await? {
                tracing::info!(username = %name, "first admin created");
            }
        }
        _ => tracing::warn!(
            "no user exists and ADMIN_USERNAME/ADMIN_PASSWORD are not set: nobody can log in"
        ),
    }
    Ok(())
}

/// The router over `state` (for tests that call it without a socket).
pub fn router(state: AppState) -> axum::Router {
    http::router(state)
}

/// Runs event-api on `listener` until `shutdown` is cancelled, then stops the background tasks
/// and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_with_clock(config, listener, shutdown, clock::Clock::system()).await
}

/// [`serve`] with the clock requests are judged by (tests set it).
pub async fn serve_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    clock: clock::Clock,
) -> Result<(), Error> {
    let store = Store::connect(config.database_url.expose(), config.db_max_connections).await?;
    store.migrate().await?;
    ensure_admin(&store, &config).await?;
    let resealed = store
        .reseal_camera_passwords(&config.camera_keys, config.max_recording_sec)
        .await?;
    if resealed > 0 {
        tracing::info!(
            cameras = resealed,
            key_id = config.camera_keys.current_id(),
            "camera passwords sealed with the current key"
        );
    }
    let storage = Storage::open(config.storage.clone())?;
    let link = nats_link::NatsLink::default();
    let options = config
        .nats
        .options(camrec_shared::natsconn::inbox::EVENT_API)
        .await?;
    tracing::info!(nats = %config.nats.display_url(), "connecting to NATS");
    let nats = link
        .watch(options)
        .name("camrec-event-api")
        .retry_on_initial_connect()
        .connect(config.nats.servers())
        .await?;
    if nats.connection_state() == async_nats::connection::State::Connected {
        link.connected(chrono::Utc::now());
    }
    let js = async_nats::jetstream::new(nats.clone());

    let webhook_sender = webhooks::Sender::new(
        webhooks::NetworkPolicy::new(config.webhook_allowed_networks.clone()),
        config.webhook_timeout,
    )?;

    let tasks = shutdown.child_token();
    let tracker = TaskTracker::new();
    let replicas = config.nats_stream_replicas;
    tracker.spawn(outbox::run(
        store.clone(),
        nats.clone(),
        replicas,
        tasks.clone(),
    ));
    tracker.spawn(projector::run(
        store.clone(),
        js.clone(),
        replicas,
        tasks.clone(),
    ));
    tracker.spawn(catalog::run(
        store.clone(),
        js.clone(),
        replicas,
        config.max_recording_sec,
        tasks.clone(),
    ));
    let captures = captures::CaptureBoard::default();
    tracker.spawn(captures::run(
        store.clone(),
        js.clone(),
        replicas,
        captures.clone(),
        clock.clone(),
        tasks.clone(),
    ));
    tracker.spawn(webhooks::run(
        store.clone(),
        js,
        replicas,
        webhook_sender,
        tasks.clone(),
    ));
    tracker.spawn(retention::run(
        store.clone(),
        retention::Retention {
            default_days: config.retention_days,
            batch: config.retention_batch_size,
            max_per_minute: config.retention_max_deletes_per_min,
        },
        tasks.clone(),
    ));
    tracker.spawn(reconciler::run(
        store.clone(),
        link.clone(),
        reconciler::Limits {
            stale_playback: config.stale_playback,
            pending_timeout: config.pending_timeout,
        },
        config.reconcile_interval,
        tasks.clone(),
    ));
    tracker.spawn(sweeper::run(
        store.clone(),
        storage.clone(),
        config.reconcile_interval,
        tasks.clone(),
    ));
    tracker.close();

    let header_read_timeout = config.header_read_timeout;
    let state = AppState {
        auth: Arc::new(AuthKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.access_token_ttl,
            config.refresh_token_ttl,
        )),
        store,
        storage,
        login: Arc::new(http::login_guard::LoginGuard::new(config.login_limits)),
        media_signer: media::MediaSigner::new(
            config.jwt_secret.expose().as_bytes(),
            config.storage.signed_url_ttl,
        ),
        nats,
        nats_link: link,
        metrics: camrec_shared::telemetry::prometheus(),
        config: Arc::new(config),
        captures,
        clock,
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "event-api listening");
    let served = http::server::serve(
        listener,
        router(state),
        header_read_timeout,
        shutdown.clone(),
    )
    .await;
    tasks.cancel();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    tracing::info!("event-api stopped");
    served.map_err(Error::from)
}
