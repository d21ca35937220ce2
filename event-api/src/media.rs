//! Serving clips from local storage (`STORAGE_MODE=local`) at `GET /media/<key>`, with HTTP
//! Range support (tower-http's `ServeFile`) so browsers can seek. Only camrec's object keys are
//! served (`playbacks/<uuid>/video.mp4|thumb.jpg`); anything else is a 404. The keys are
//! unguessable v7 UUIDs and work like the signed URLs of the S3 modes: whoever has the URL
//! from the API may play the clip, without a bearer token (a `<video>` tag cannot send one).

use crate::http::error::ApiError;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use camrec_shared::storage::{ObjectKey, Storage, StorageMode};
use tower::ServiceExt;
use tower_http::services::ServeFile;

#[utoipa::path(get, path = "/media/{key}", tag = "ops",
    params(("key" = String, Path, description = "playbacks/<playback_id>/video.mp4 or thumb.jpg")),
    responses((status = 200, description = "the object"), (status = 206, description = "a byte range"),
        (status = 404)))]
pub async fn media(
    State(state): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> Response {
    let Some(key) = ObjectKey::parse(&key) else {
        return ApiError::NotFound("object").into_response();
    };
    let path = state.storage.config().local_dir.join(key.to_string());
    // ServeFile derives the content type from the extension: video/mp4, image/jpeg.
    match ServeFile::new(path).oneshot(req).await {
        Ok(resp) if resp.status() == axum::http::StatusCode::NOT_FOUND => {
            ApiError::NotFound("object").into_response()
        }
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    }
}

/// The `/media` route in local mode; `None` otherwise.
pub fn router(storage: &Storage) -> Option<Router<AppState>> {
    (storage.config().mode == StorageMode::Local)
        .then(|| Router::new().route("/media/{*key}", get(media)))
}
