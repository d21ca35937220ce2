//! The live view of a recording: `GET /playbacks/{id}/live.m3u8`, an HLS media playlist
//! (`camrec_shared::hls`) of the segments its worker has uploaded so far under
//! `playbacks/<id>/live/`, listed from storage at every request. Open (no `EXT-X-ENDLIST`)
//! while the playback is PENDING, RECORDING or PROCESSING; closed once it is COMPLETED or
//! FAILED, and served until the playback is deleted, so a watcher can seek back.
//!
//! Like `/media/`, the playlist is opened by a signed, expiring URL (a player cannot send a
//! bearer token): the signature covers the path `playbacks/<id>/live.m3u8`, which is no object
//! key, so it opens nothing else. The signature is checked before the database: a caller
//! without one learns nothing about which playbacks exist and costs no query (no signature:
//! 401; wrong or expired: 403; an `exp` that is no integer: 400); then an unknown or deleted
//! playback is a 404. Each segment's
//! URI is a fresh URL of its object (a signed `/media/` URL in local mode, presigned or public
//! in S3/R2), so a player refreshing the playlist always holds valid ones.

use super::error::ApiError;
use super::extract::Params;
use super::AppState;
use crate::media::Signature;
use crate::store::playbacks::{PlaybackRow, PlaybackState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use camrec_shared::hls::{media_playlist, playable, Listed};
use camrec_shared::storage::{segments_prefix, ObjectKey, PLAYLIST_CONTENT_TYPE};
use camrec_shared::PlaybackId;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use std::collections::HashMap;

/// What a live playlist's signature covers: its path, distinct from every object key.
fn signed_path(id: &str) -> String {
    format!("playbacks/{id}/live.m3u8")
}

/// The signed URL of playback `id`'s live playlist, valid for `SIGNED_URL_TTL_SEC` from now.
pub fn live_url(state: &AppState, id: PlaybackId) -> String {
    let path = signed_path(&id.to_string());
    let now = chrono::Utc::now().timestamp();
    let query = state.media_signer.fresh_query(&path, now);
    format!("{}/{path}?{query}", state.storage.config().media_base_url)
}

/// Whether a playback in `status` shows a `liveUrl`: from its first segment on, and after its
/// end (a watcher keeps the URL); a failed one has no clip to watch.
pub fn has_live_view(status: PlaybackState) -> bool {
    matches!(
        status,
        PlaybackState::Recording | PlaybackState::Processing | PlaybackState::Completed
    )
}

/// Whether the playlist of a playback in `status` is closed: nothing more will be uploaded.
fn is_closed(status: PlaybackState) -> bool {
    status.is_terminal()
}

#[utoipa::path(get, path = "/playbacks/{id}/live.m3u8", tag = "playbacks",
    params(("id" = String, Path), ("exp" = Option<i64>, Query, description = "expiry, unix seconds"),
        ("sig" = Option<String>, Query, description = "the signature, from `liveUrl`")),
    responses((status = 200, description = "the HLS media playlist (application/vnd.apple.mpegurl)", content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 401, description = "no signature"), (status = 403, description = "a wrong or expired signature"),
        (status = 404, description = "no such playback, or deleted"), (status = 503)))]
pub async fn playlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let signature = Signature::from_params(&params)?;
    let now = chrono::Utc::now().timestamp();
    state
        .media_signer
        .verify(&signed_path(&id), &signature, now)?;
    let id: uuid::Uuid = id.parse().map_err(|_| ApiError::NotFound("playback"))?;
    let playback = state
        .store
        .playback(id)
        .await
        .map_err(|e| ApiError::from_store("playback", e))?;
    let text = render(&state, &playback).await?;
    // No cache, even once closed: the segment URLs inside are signed and expire.
    Ok((
        [
            (header::CONTENT_TYPE, PLAYLIST_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response())
}

/// The playlist of `playback`'s uploaded segments, each with a fresh URL.
async fn render(state: &AppState, playback: &PlaybackRow) -> Result<String, ApiError> {
    let id = PlaybackId(playback.id);
    let segments = playable(list_segments(state, id).await?);
    let mut urls = HashMap::with_capacity(segments.len());
    for s in &segments {
        let key = ObjectKey::Segment(id, s.name);
        urls.insert(s.name, crate::media::object_url(state, &key).await?);
    }
    Ok(media_playlist(
        &segments,
        is_closed(playback.status),
        |name| urls.get(name).cloned().unwrap_or_default(),
    ))
}

/// The segments uploaded under the playback's prefix, with their sizes; an object whose name
/// is no segment of this playback (an upload in progress, a stray file) is skipped.
async fn list_segments(state: &AppState, id: PlaybackId) -> Result<Vec<Listed>, ApiError> {
    let prefix = ObjectPath::from(segments_prefix(id));
    let objects: Vec<_> = state
        .storage
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| ApiError::Unavailable {
            message: "object storage is unavailable; retry later",
            cause: e.to_string(),
        })?;
    Ok(objects
        .into_iter()
        .filter_map(|meta| match ObjectKey::parse(meta.location.as_ref())? {
            ObjectKey::Segment(pb, name) if pb == id => Some(Listed {
                name,
                size: meta.size,
            }),
            _ => None,
        })
        .collect())
}

pub fn router() -> Router<AppState> {
    Router::new().route("/playbacks/{id}/live.m3u8", get(playlist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_path_is_no_object_key() {
        let id = PlaybackId::new().to_string();
        assert_eq!(ObjectKey::parse(&signed_path(&id)), None);
    }

    #[test]
    fn live_view_follows_the_status() {
        let shown: Vec<_> = PlaybackState::ALL
            .into_iter()
            .filter(|s| has_live_view(*s))
            .collect();
        assert_eq!(
            shown,
            [
                PlaybackState::Recording,
                PlaybackState::Processing,
                PlaybackState::Completed
            ]
        );
        assert!(!is_closed(PlaybackState::Recording));
        assert!(is_closed(PlaybackState::Completed) && is_closed(PlaybackState::Failed));
    }
}
