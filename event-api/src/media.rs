//! Serving clips from local storage (`STORAGE_MODE=local`) at `GET /media/<key>`, with HTTP
//! Range support (tower-http's `ServeFile`) so browsers can seek and HLS players can fetch a
//! segment's init section and media as byte ranges. Only camrec's object keys are served
//! (`playbacks/<uuid>/video.mp4|thumb.jpg|index.m3u8|live/<segment>`); anything else is a 404.
//!
//! The URLs the API hands out are signed and expire, like the S3 modes' presigned URLs:
//! `?exp=<unix seconds>&sig=<hex HMAC-SHA256(key, "<object key>\n<exp>")>`, valid for
//! `SIGNED_URL_TTL_SEC`. Whoever has a URL from the API may play the clip until it expires,
//! without a bearer token (a `<video>` tag cannot send one). No signature: 401; a wrong or
//! expired one: 403. The signing key is derived from `JWT_SECRET`. The same signer opens the
//! live playlist (`crate::http::live`), over a path that is no object key, so neither kind of
//! signature opens the other.

use crate::http::error::ApiError;
use crate::http::extract::Params;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use camrec_shared::storage::{ObjectKey, Storage, StorageMode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Display;
use std::time::Duration;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// The query of a signed media URL.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Signature {
    exp: Option<i64>,
    sig: Option<String>,
}

impl Signature {
    /// The signature in a request's query; an `exp` that is no integer is a 400 naming it.
    pub fn from_params(params: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            exp: params.int("exp", i64::MIN, i64::MAX)?,
            sig: params.string("sig"),
        })
    }
}

/// Signs and checks local media URLs.
#[derive(Clone)]
pub struct MediaSigner {
    key: Vec<u8>,
    ttl: Duration,
}

impl std::fmt::Debug for MediaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaSigner(ttl {:?})", self.ttl)
    }
}

impl MediaSigner {
    /// A signer whose key is derived from `secret` (`JWT_SECRET`), so it needs no setting of
    /// its own and every replica signs alike.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"camrec media URLs v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
            ttl,
        }
    }

    /// `signed` is what the URL opens: an object key, or the live playlist's path.
    fn mac(&self, signed: &dyn Display, exp: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{signed}\n{exp}").as_bytes());
        mac
    }

    /// The query that makes the URL of `signed` valid until `exp` (unix seconds).
    pub fn query(&self, signed: &dyn Display, exp: i64) -> String {
        let sig = hex::encode(self.mac(signed, exp).finalize().into_bytes());
        format!("exp={exp}&sig={sig}")
    }

    /// The query that makes the URL of `signed` valid for the TTL from `now`.
    pub fn fresh_query(&self, signed: &dyn Display, now: i64) -> String {
        let exp = now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self.query(signed, exp)
    }

    /// The signed URL of `key` below `base`, valid for the TTL from `now`.
    pub fn url(&self, base: &str, key: &ObjectKey, now: i64) -> String {
        format!("{base}/media/{key}?{}", self.fresh_query(key, now))
    }

    /// Whether `signature` opens `signed` at `now`.
    pub fn verify(
        &self,
        signed: &dyn Display,
        signature: &Signature,
        now: i64,
    ) -> Result<(), ApiError> {
        let (Some(exp), Some(sig)) = (signature.exp, signature.sig.as_deref()) else {
            return Err(ApiError::Unauthorized(
                "a media URL needs its signature (exp, sig)",
            ));
        };
        let valid =
            hex::decode(sig).is_ok_and(|sig| self.mac(signed, exp).verify_slice(&sig).is_ok());
        if !valid || exp < now {
            return Err(ApiError::Forbidden(
                "the media URL's signature is wrong or expired",
            ));
        }
        Ok(())
    }
}

/// The URL a client fetches `key` at: a signed `/media/` URL in local mode, else storage's
/// (public or presigned).
pub async fn object_url(state: &AppState, key: &ObjectKey) -> Result<String, ApiError> {
    let config = state.storage.config();
    if config.mode == StorageMode::Local && config.public_url.is_none() {
        let now = chrono::Utc::now().timestamp();
        return Ok(state.media_signer.url(&config.media_base_url, key, now));
    }
    state
        .storage
        .url_for(key)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[utoipa::path(get, path = "/media/{key}", tag = "ops",
    params(("key" = String, Path, description = "playbacks/<playback_id>/video.mp4, thumb.jpg, index.m3u8 or live/<segment>.mp4")),
    responses((status = 200, description = "the object"), (status = 206, description = "a byte range"),
        (status = 404)))]
pub async fn media(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(signature): Query<Signature>,
    req: Request,
) -> Response {
    let Some(key) = ObjectKey::parse(&key) else {
        return ApiError::NotFound("object").into_response();
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = state.media_signer.verify(&key, &signature, now) {
        return e.into_response();
    }
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
