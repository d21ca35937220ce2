//! camrec's event-api: the REST API over cameras, events, playbacks and users, plus the
//! background tasks that connect it to the recorders.
//!
//! [`serve`] is the whole service: it migrates the database, creates the first admin, starts the
//! outbox relay ([`outbox`]), the status projector ([`projector`]), the reconciler
//! ([`reconciler`]) and the object-deletion sweeper ([`sweeper`]) under one cancellation token,
//! serves HTTP ([`http`], SQL in [`store`]) and returns after a graceful shutdown. Only this
//! crate touches PostgreSQL; it talks to the workers through JetStream only.

pub mod config;
pub mod http;
pub mod media;
pub mod nats_link;
pub mod outbox;
pub mod projector;
pub mod reconciler;
pub mod store;
pub mod sweeper;

pub use config::{Config, ConfigError};
pub use http::AppState;

use camrec_shared::storage::{Storage, StorageError};
use http::auth::{hash_password, AuthKeys};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
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
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot create the first admin: {0}")]
    Admin(String),
}

/// The process-wide Prometheus recorder (a process has one global recorder; tests that run
/// several services in one process share it).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
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
    let store = Store::connect(config.database_url.expose(), config.db_max_connections).await?;
    store.migrate().await?;
    ensure_admin(&store, &config).await?;
    let storage = Storage::open(config.storage.clone())?;
    let link = nats_link::NatsLink::default();
    let nats = link
        .watch(async_nats::ConnectOptions::new())
        .name("camrec-event-api")
        .retry_on_initial_connect()
        .connect(config.nats_url.as_str())
        .await?;
    if nats.connection_state() == async_nats::connection::State::Connected {
        link.connected(chrono::Utc::now());
    }
    let js = async_nats::jetstream::new(nats.clone());

    let tasks = shutdown.child_token();
    let tracker = TaskTracker::new();
    let replicas = config.nats_stream_replicas;
    tracker.spawn(outbox::run(
        store.clone(),
        nats.clone(),
        replicas,
        tasks.clone(),
    ));
    tracker.spawn(projector::run(store.clone(), js, replicas, tasks.clone()));
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

    let state = AppState {
        auth: Arc::new(AuthKeys::new(
            config.jwt_secret.expose().as_bytes(),
            config.access_token_ttl,
            config.refresh_token_ttl,
        )),
        store,
        storage,
        login: Arc::new(http::login_guard::LoginGuard::new(config.login_limits)),
        nats,
        nats_link: link,
        metrics: prometheus(),
        config: Arc::new(config),
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "event-api listening");
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
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
