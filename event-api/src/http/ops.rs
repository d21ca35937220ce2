//! Operations routes: liveness (`/health`), readiness (`/ready`: the database answers and the
//! NATS connection is up) and Prometheus metrics (`/metrics`).

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

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    status: &'static str,
    database: &'static str,
    nats: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let db_ok = state.store.ping().await.is_ok();
    let nats_ok = state.nats.connection_state() == async_nats::connection::State::Connected;
    let body = Readiness {
        status: if db_ok && nats_ok {
            "ready"
        } else {
            "not ready"
        },
        database: if db_ok { "ok" } else { "unavailable" },
        nats: if nats_ok { "connected" } else { "disconnected" },
    };
    let code = if db_ok && nats_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(backlog) = state.store.outbox_backlog().await {
        metrics::gauge!("outbox_backlog").set(backlog as f64);
    }
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
