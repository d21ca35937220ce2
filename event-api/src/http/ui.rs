//! The review page: a small web app (plain HTML, CSS and ES modules in `event-api/web/`, no build
//! step) embedded in the binary, so `cargo build` alone gives a working page and nothing is
//! fetched from the internet. `GET /` answers the page, `GET /ui/<file>` its other files. The app
//! is a client of the REST API like any other: it logs in and sends the user's bearer token; the
//! files themselves are public and carry no data.
//!
//! Files are answered with an `ETag` and `Cache-Control: no-cache`, so a browser revalidates
//! them cheaply and never runs an old script after an upgrade.

use super::error::ApiError;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::LazyLock;

/// One embedded file of the app.
struct Asset {
    /// The path under `event-api/web/`, which is also its URL under `/ui/`.
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const INDEX: Asset = asset!("index.html", HTML);

/// Every file `index.html` loads, directly or through an import.
const ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("views/login.js", JS),
    asset!("views/cameras.js", JS),
    asset!("views/timeline.js", JS),
    asset!("views/player.js", JS),
    asset!("vendor/hls/hls.light.min.mjs", JS),
];

/// What the page may load: its own files and API, and clips and thumbnails from wherever
/// `videoUrl`/`thumbnailUrl` point (event-api's `/media/` in local mode, S3 or R2 otherwise);
/// the live view's playlist and segments, which hls.js fetches (`connect-src`) from wherever
/// `liveUrl` and the segment URIs point and hands the video as a `blob:` media source. No
/// inline script or style, no plugin, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: http: https:; media-src 'self' blob: http: https:; \
    connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// A strong validator per file: the start of its SHA-256, computed once.
static ETAGS: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|a| {
            let digest = hex::encode(Sha256::digest(a.bytes));
            let tag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32]))
                .expect("a hex digest is a valid header value");
            (a.path, tag)
        })
        .collect()
});

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::NotFound("file").into_response(),
    }
}

/// The file, or `304 Not Modified` when the browser already has this version.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = ETAGS[asset.path].clone();
    let fresh = request.get(IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let headers = resp.headers_mut();
    headers.insert(ETAG, etag);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp
}

/// `GET /` and `GET /ui/<file>`; stateless.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_with(uri: &str, if_none_match: Option<&HeaderValue>) -> Response {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(resp: Response) -> String {
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The `/ui/...` URLs a file refers to: `src="/ui/x"`, `href="/ui/x"` and relative imports
    /// (`from "./x.js"`, `from "../x.js"`), resolved against the file's own directory.
    fn references(asset: &Asset) -> Vec<String> {
        let text = std::str::from_utf8(asset.bytes).unwrap();
        let dir = asset.path.rsplit_once('/').map_or("", |(d, _)| d);
        let mut out = Vec::new();
        for quote in ['"', '\''] {
            for (i, _) in text.match_indices(&format!("{quote}/ui/")) {
                let rest = &text[i + 5..];
                out.push(rest[..rest.find(quote).unwrap()].to_owned());
            }
            for (i, _) in text.match_indices(&format!("from {quote}")) {
                let rest = &text[i + 6..];
                let spec = &rest[..rest.find(quote).unwrap()];
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for part in spec.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                out.push(parts.join("/"));
            }
        }
        out
    }

    /// camrec's own files; the vendored ones are unmodified releases, pinned by their README.
    fn own_files() -> impl Iterator<Item = &'static Asset> {
        std::iter::once(&INDEX).chain(ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")))
    }

    #[test]
    fn every_file_the_page_refers_to_is_served() {
        let mut seen = 0;
        for asset in own_files() {
            for path in references(asset) {
                seen += 1;
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} refers to /ui/{path}, which is not in ASSETS",
                    asset.path
                );
            }
        }
        assert!(seen >= ASSETS.len(), "only {seen} references found");
    }

    #[test]
    fn the_vendored_hls_js_is_the_release_its_readme_pins() {
        let readme = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/web/vendor/hls/README.md"
        ));
        let hls = ASSETS
            .iter()
            .find(|a| a.path == "vendor/hls/hls.light.min.mjs")
            .unwrap();
        let digest = hex::encode(Sha256::digest(hls.bytes));
        assert!(
            readme.contains(&digest),
            "sha256 {digest} not in the README"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for asset in own_files() {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{} names an outside URL",
                asset.path
            );
            assert!(
                !text.contains("innerHTML") && !text.contains("<script>"),
                "{} uses innerHTML or an inline script",
                asset.path
            );
        }
    }

    #[tokio::test]
    async fn the_root_answers_the_page_with_its_policy() {
        let resp = get_with("/", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], HTML);
        assert_eq!(resp.headers()[CONTENT_SECURITY_POLICY], CSP);
        assert!(text(resp).await.contains(r#"src="/ui/app.js""#));
    }

    #[tokio::test]
    async fn files_are_served_with_their_type_and_revalidated_by_etag() {
        let resp = get_with("/ui/views/player.js", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], JS);
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-cache");
        let etag = resp.headers()[ETAG].clone();

        let again = get_with("/ui/views/player.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[ETAG], etag);
        assert!(text(again).await.is_empty());

        let other = get_with("/ui/app.css", Some(&etag)).await;
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "another file's tag must not match"
        );
    }

    #[tokio::test]
    async fn unknown_files_are_404() {
        for uri in [
            "/ui/nope.js",
            "/ui/../Cargo.toml",
            "/ui/vendor/redoc/LICENSE",
        ] {
            assert_eq!(
                get_with(uri, None).await.status(),
                StatusCode::NOT_FOUND,
                "{uri}"
            );
        }
    }
}
