//! The HTTP layer: one module per resource, the error kinds ([`error`]), the extractors that
//! name bad fields ([`extract`]), authentication ([`auth`], with [`login_guard`] and
//! [`passwords`]), the ops routes ([`ops`]), the OpenAPI document ([`openapi`]) and the review
//! page ([`ui`]), webhooks ([`webhooks`]), analytics ([`analytics`]) and the live playlist
//! ([`live`]). Handlers validate input and call the store; they never touch NATS (the outbox
//! relay does).

pub mod analytics;
pub mod auth;
pub mod cameras;
pub mod error;
pub mod events;
pub mod extract;
pub mod live;
pub mod login_guard;
pub mod openapi;
pub mod ops;
pub mod passwords;
pub mod playbacks;
pub mod server;
pub mod ui;
pub mod users;
pub mod webhooks;

use crate::config::Config;
use crate::store::{PageRequest, Store};
use auth::AuthKeys;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use camrec_shared::storage::Storage;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub storage: Storage,
    pub auth: Arc<AuthKeys>,
    /// Failed-login limits.
    pub login: Arc<login_guard::LoginGuard>,
    /// Signs and checks `/media/` URLs (local storage mode).
    pub media_signer: crate::media::MediaSigner,
    pub nats: async_nats::Client,
    /// Whether (and since when) the NATS connection is up.
    pub nats_link: crate::nats_link::NatsLink,
    pub metrics: PrometheusHandle,
    pub config: Arc<Config>,
    /// The capture leases of the cameras, kept by `crate::captures::run`.
    pub captures: crate::captures::CaptureBoard,
    /// The time requests are judged by.
    pub clock: crate::clock::Clock,
}

/// One page of a list: `{data, total, page, pageSize, totalPages}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageJson<T> {
    data: Vec<T>,
    total: i64,
    page: u32,
    page_size: u32,
    total_pages: i64,
}

impl<T> PageJson<T> {
    pub fn new(data: Vec<T>, total: i64, req: PageRequest) -> Self {
        let size = i64::from(req.page_size.max(1));
        Self {
            data,
            total,
            page: req.page,
            page_size: req.page_size,
            total_pages: (total + size - 1) / size,
        }
    }
}

/// Counts requests by route template, method and status, and logs the cause of every 5xx
/// answer (the one place request errors are logged).
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if let Some(error::ErrorCause(cause)) = resp.extensions().get() {
        if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(%route, %method, status = status.as_u16(), error = %cause, "request failed");
        } else {
            tracing::error!(%route, %method, status = status.as_u16(), error = %cause, "request failed");
        }
    }
    metrics::counter!(
        "http_requests_total",
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}

/// How long a request may take to be answered (its body may stream for longer: `/media`).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Requests handled at once; more wait for a place (the database pool bounds the real work).
const MAX_CONCURRENT_REQUESTS: usize = 512;

/// The page and the API reference load everything from this origin (camera sites are often
/// offline); clips and thumbnails may come from object storage's URLs.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data: blob: https: http:; \
     media-src 'self' blob: https: http:; style-src 'self' 'unsafe-inline'; \
     worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every answer carries unless its handler set them.
const SECURITY_HEADERS: [(axum::http::HeaderName, &str); 4] = [
    (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (axum::http::header::X_FRAME_OPTIONS, "DENY"),
    (axum::http::header::REFERRER_POLICY, "no-referrer"),
    (
        axum::http::header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    ),
];

/// Every route, with request metrics and JSON 404s.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .merge(auth::router())
        .merge(users::router())
        .merge(cameras::router())
        .merge(events::router())
        .merge(playbacks::router())
        .merge(live::router())
        .merge(ops::router())
        .merge(webhooks::router())
        .merge(analytics::router())
        .merge(openapi::router())
        .merge(ui::router());
    if let Some(media) = crate::media::router(&state.storage) {
        app = app.merge(media);
    }
    app = app
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(track))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    for (name, value) in SECURITY_HEADERS {
        app = app.layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                name,
                HeaderValue::from_static(value),
            ),
        );
    }
    app.with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_pages_rounds_up() {
        let req = PageRequest {
            page: 2,
            page_size: 10,
        };
        assert_eq!(PageJson::<u8>::new(vec![], 0, req).total_pages, 0);
        assert_eq!(PageJson::<u8>::new(vec![], 10, req).total_pages, 1);
        assert_eq!(PageJson::<u8>::new(vec![], 11, req).total_pages, 2);
    }
}
