//! Operations routes: liveness (`/health`), readiness (`/ready`: the database answers; NATS and
//! the outbox backlog are reported in the body) and Prometheus metrics (`/metrics`).

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Readiness: the status code says whether event-api can take requests (its database answers);
/// NATS and the outbox are reported, not required: while NATS is down, requests still succeed
/// and the outbox carries their messages through the outage.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    status: &'static str,
    database: &'static str,
    nats: &'static str,
    /// Outbox rows waiting to be published (absent when the database does not answer).
    outbox_backlog: Option<i64>,
    /// Outbox rows set aside because they can never be published.
    outbox_dead: Option<i64>,
}

#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = Readiness, description = "the database answers (NATS may be down)"),
        (status = 503, body = Readiness, description = "the database does not answer")))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let backlog = state.store.outbox_backlog().await.ok();
    let dead = state.store.outbox_dead().await.ok();
    let db_ok = backlog.is_some();
    let body = Readiness {
        status: if db_ok { "ready" } else { "not ready" },
        database: if db_ok { "ok" } else { "unavailable" },
        nats: if state.nats_link.up_since().is_some() {
            "connected"
        } else {
            "disconnected"
        },
        outbox_backlog: backlog,
        outbox_dead: dead,
    };
    let code = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}
