//! The worker's HTTP endpoints on `PORT`, for probes and scrapes:
//!
//! - `GET /health`: 200 while the process serves requests (liveness).
//! - `GET /ready`: 200 only while the worker can take work: connected to NATS, free disk in
//!   `RECORD_DIR` at least `MIN_FREE_DISK_MB`, not shutting down; else 503. The body says which.
//! - `GET /metrics`: Prometheus text. The worker's own series: `recordings_active`,
//!   `capture_cameras{state}` (the cameras it holds, by capture state), `capture_segments_total`,
//!   `upload_bytes_total`, `upload_failures_total`, `disk_free_bytes`,
//!   `disk_floor_bytes`, `disk_below_floor`, `status_spooled` (state changes waiting in the spool
//!   for NATS) and `nats_connected`.
//!
//! The server starts before the worker connects to NATS (a worker waiting for NATS is alive but
//! not ready) and stops when the worker has stopped.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::disk::{DiskGuard, Reading};
use crate::status::StatusPublisher;

/// What the endpoints look at.
#[derive(Clone)]
pub struct Ops {
    pub disk: Arc<DiskGuard>,
    /// Set once the worker has connected (the client reconnects by itself afterwards).
    pub nats: Arc<OnceLock<async_nats::Client>>,
    pub status: StatusPublisher,
    /// Cancelled when the worker starts shutting down: it takes no more work.
    pub shutdown: CancellationToken,
    metrics: PrometheusHandle,
}

impl Ops {
    pub fn new(disk: Arc<DiskGuard>, status: StatusPublisher, shutdown: CancellationToken) -> Self {
        Self {
            disk,
            nats: Arc::new(OnceLock::new()),
            status,
            shutdown,
            metrics: camrec_shared::telemetry::prometheus(),
        }
    }

    fn nats_connected(&self) -> bool {
        self.nats
            .get()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }
}

/// The body of `/ready`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// `ready` or `not ready`.
    status: &'static str,
    /// `connected`, `disconnected` or `not connected yet`.
    nats: &'static str,
    /// `ok`, `below floor` or `unknown` (the free space could not be read).
    disk: &'static str,
    disk_free_bytes: Option<u64>,
    min_free_disk_bytes: u64,
    shutting_down: bool,
}

/// The readiness verdict and its reasons.
fn readiness(nats: &'static str, disk: Reading, shutting_down: bool) -> (StatusCode, Readiness) {
    let disk_word = match disk.free_bytes {
        None => "unknown",
        Some(_) if disk.has_room() => "ok",
        Some(_) => "below floor",
    };
    let ready = nats == "connected" && disk.has_room() && !shutting_down;
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" },
        nats,
        disk: disk_word,
        disk_free_bytes: disk.free_bytes,
        min_free_disk_bytes: disk.floor_bytes,
        shutting_down,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(ops): State<Ops>) -> (StatusCode, Json<Readiness>) {
    let nats = match (ops.nats.get(), ops.nats_connected()) {
        (None, _) => "not connected yet",
        (Some(_), true) => "connected",
        (Some(_), false) => "disconnected",
    };
    let (code, body) = readiness(nats, ops.disk.check(), ops.shutdown.is_cancelled());
    (code, Json(body))
}

/// The gauges that are read when scraped are set first, then everything is rendered.
async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    ops.disk.check();
    metrics::gauge!("status_spooled").set(ops.status.spooled() as f64);
    metrics::gauge!("nats_connected").set(if ops.nats_connected() { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

/// Binds `0.0.0.0:port` (0: a free port).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, ops: Ops, stop: CancellationToken) {
    let served = axum::serve(listener, router(ops))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP endpoints stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: Reading = Reading {
        free_bytes: Some(10),
        floor_bytes: 10,
    };

    #[test]
    fn ready_needs_nats_room_and_no_shutdown_and_says_what_is_missing() {
        let (code, body) = readiness("connected", ROOM, false);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            (body.status, body.nats, body.disk),
            ("ready", "connected", "ok")
        );

        let full = Reading {
            free_bytes: Some(9),
            ..ROOM
        };
        let (code, body) = readiness("connected", full, false);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!((body.status, body.disk), ("not ready", "below floor"));
        assert_eq!(body.disk_free_bytes, Some(9));
        assert_eq!(body.min_free_disk_bytes, 10);

        let unknown = Reading {
            free_bytes: None,
            ..ROOM
        };
        assert_eq!(readiness("connected", unknown, false).1.disk, "unknown");
        assert_eq!(
            readiness("disconnected", ROOM, false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            readiness("not connected yet", ROOM, false).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (code, body) = readiness("connected", ROOM, true);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.shutting_down);
    }
}
