//! Object storage: the key layout (a codec with round-trip tests), the configuration both
//! services read from the environment, and the one place an `object_store` backend is opened.
//!
//! The worker writes objects; event-api serves their URLs and deletes them. Both open storage
//! through [`Storage::open`] so they agree on bucket, prefix and URL scheme.
//!
//! `STORAGE_MODE` is `local` (the embedded default: a directory on disk, served by event-api at
//! `/media/<key>`), `s3` or `r2`. The old Camera API's variables keep working.

use crate::ids::PlaybackId;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The objects of one playback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `playbacks/<playback_id>/video.mp4`
    Video(PlaybackId),
    /// `playbacks/<playback_id>/thumb.jpg`
    Thumbnail(PlaybackId),
    /// `playbacks/<playback_id>/live/<segment name>`: one piece of the clip, uploaded while it
    /// is recorded (what the live playlist lists).
    Segment(PlaybackId, SegmentName),
    /// `playbacks/<playback_id>/index.m3u8`: the closed playlist of the clip's segments (URIs
    /// relative to it), written when the clip completes; what `playback.completed` names.
    SegmentList(PlaybackId),
}

/// The name of an uploaded segment: `<start_ms>_<duration_ms>_<init_len>_<epoch>.mp4`.
///
/// - `start_ms`: wall-clock time of its first frame, Unix milliseconds (names sort by time when
///   listed; every segment of the next 280 years has 13 digits).
/// - `duration_ms`: its media duration.
/// - `init_len`: the byte length of its initialization section (`ftyp`+`moov`); the rest of the
///   object is its media (`moof`+`mdat`), so a playlist addresses both with byte ranges without
///   reading the object.
/// - `epoch`: the capture lease this segment was written under (the revision of the
///   `camrec_captures` entry that made its worker the camera's holder): segments of two holders
///   never overlap in time, which is what a checker verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName {
    pub start_ms: i64,
    pub duration_ms: u32,
    pub init_len: u32,
    pub epoch: u64,
}

impl SegmentName {
    /// The end of its media, Unix milliseconds.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + i64::from(self.duration_ms)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let stem = s.strip_suffix(".mp4")?;
        let mut parts = stem.split('_');
        let mut next = || {
            parts
                .next()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        let name = SegmentName {
            start_ms: next()?.parse().ok()?,
            duration_ms: next()?.parse().ok()?,
            init_len: next()?.parse().ok()?,
            epoch: next()?.parse().ok()?,
        };
        (parts.next().is_none() && name.to_string() == s).then_some(name)
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}.mp4",
            self.start_ms, self.duration_ms, self.init_len, self.epoch
        )
    }
}

/// The prefix under which a playback's segments are uploaded: `playbacks/<playback_id>/live/`.
pub fn segments_prefix(id: PlaybackId) -> String {
    format!("playbacks/{id}/live/")
}

impl ObjectKey {
    pub fn playback_id(&self) -> PlaybackId {
        match self {
            ObjectKey::Video(id)
            | ObjectKey::Thumbnail(id)
            | ObjectKey::Segment(id, _)
            | ObjectKey::SegmentList(id) => *id,
        }
    }

    /// Every object of a playback with a fixed name (its segments are listed under
    /// [`segments_prefix`]).
    pub fn all_for(id: PlaybackId) -> [ObjectKey; 3] {
        [
            ObjectKey::Video(id),
            ObjectKey::Thumbnail(id),
            ObjectKey::SegmentList(id),
        ]
    }

    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("playbacks/")?;
        let (id, file) = rest.split_once('/')?;
        let id: PlaybackId = id.parse().ok()?;
        match file {
            "video.mp4" => Some(ObjectKey::Video(id)),
            "thumb.jpg" => Some(ObjectKey::Thumbnail(id)),
            "index.m3u8" => Some(ObjectKey::SegmentList(id)),
            _ => {
                let name = file.strip_prefix("live/")?;
                Some(ObjectKey::Segment(id, SegmentName::parse(name)?))
            }
        }
    }

    pub fn path(&self) -> ObjectPath {
        ObjectPath::from(self.to_string())
    }

    /// The `Content-Type` of the object.
    pub fn content_type(&self) -> &'static str {
        match self {
            ObjectKey::Video(_) | ObjectKey::Segment(..) => "video/mp4",
            ObjectKey::Thumbnail(_) => "image/jpeg",
            ObjectKey::SegmentList(_) => PLAYLIST_CONTENT_TYPE,
        }
    }
}

/// The `Content-Type` of an HLS playlist (RFC 8216 §4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Video(id) => write!(f, "playbacks/{id}/video.mp4"),
            ObjectKey::Thumbnail(id) => write!(f, "playbacks/{id}/thumb.jpg"),
            ObjectKey::Segment(id, name) => write!(f, "{}{name}", segments_prefix(*id)),
            ObjectKey::SegmentList(id) => write!(f, "playbacks/{id}/index.m3u8"),
        }
    }
}

/// Which backend holds the clips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    Local,
    S3,
    R2,
}

/// A secret string: stored, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Storage settings, from the environment.
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `STORAGE_MODE` | `local` | `local`, `s3` or `r2` |
/// | `LOCAL_STORAGE_DIR` | `./data/objects` | `local`: where objects live |
/// | `MEDIA_BASE_URL` | `http://localhost:3000` | the event-api base URL clients reach: `/media/<key>` (`local`) and the live playlist (`liveUrl`, every mode) |
/// | `R2_ENDPOINT` / `S3_ENDPOINT` | none | `s3`/`r2`: the endpoint URL (required for r2) |
/// | `R2_ACCESS_KEY_ID` / `S3_ACCESS_KEY_ID` | none | access key |
/// | `R2_SECRET_ACCESS_KEY` / `S3_SECRET_ACCESS_KEY` | none | secret key |
/// | `R2_BUCKET_NAME` / `S3_BUCKET` | none | bucket (required) |
/// | `R2_PUBLIC_URL` / `S3_PUBLIC_URL` | none | public base URL; else URLs are signed |
/// | `S3_REGION` | `auto` | region |
/// | `SIGNED_URL_TTL_SEC` | `3600` | lifetime of a signed URL |
#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub mode: StorageMode,
    pub local_dir: PathBuf,
    pub media_base_url: String,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub bucket: Option<String>,
    pub public_url: Option<String>,
    pub region: String,
    pub signed_url_ttl: Duration,
}

/// A storage setting that is missing or wrong. Names the variable, never its value.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} is not set or not valid")]
    Config(&'static str),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot create the local storage directory: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageConfig {
    /// Reads the variables in the table above from the process environment.
    pub fn from_env() -> Result<Self, StorageError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, StorageError> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        let mode = match var(&["STORAGE_MODE"])
            .unwrap_or_else(|| "local".into())
            .to_ascii_lowercase()
            .as_str()
        {
            "local" => StorageMode::Local,
            "s3" => StorageMode::S3,
            "r2" => StorageMode::R2,
            _ => return Err(StorageError::Config("STORAGE_MODE")),
        };
        let ttl = match var(&["SIGNED_URL_TTL_SEC"]) {
            None => 3600,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=7 * 24 * 3600).contains(s))
                .ok_or(StorageError::Config("SIGNED_URL_TTL_SEC"))?,
        };
        let cfg = Self {
            mode,
            local_dir: PathBuf::from(
                var(&["LOCAL_STORAGE_DIR"]).unwrap_or_else(|| "./data/objects".into()),
            ),
            media_base_url: var(&["MEDIA_BASE_URL"])
                .unwrap_or_else(|| "http://localhost:3000".into())
                .trim_end_matches('/')
                .to_owned(),
            endpoint: var(&["S3_ENDPOINT", "R2_ENDPOINT"]),
            access_key_id: var(&["S3_ACCESS_KEY_ID", "R2_ACCESS_KEY_ID"]),
            secret_access_key: var(&["S3_SECRET_ACCESS_KEY", "R2_SECRET_ACCESS_KEY"])
                .map(Secret::new),
            bucket: var(&["S3_BUCKET", "R2_BUCKET_NAME"]),
            public_url: var(&["S3_PUBLIC_URL", "R2_PUBLIC_URL"])
                .map(|u| u.trim_end_matches('/').to_owned()),
            region: var(&["S3_REGION"]).unwrap_or_else(|| "auto".into()),
            signed_url_ttl: Duration::from_secs(ttl),
        };
        if cfg.mode != StorageMode::Local {
            if cfg.bucket.is_none() {
                return Err(StorageError::Config("R2_BUCKET_NAME"));
            }
            if cfg.mode == StorageMode::R2 && cfg.endpoint.is_none() {
                return Err(StorageError::Config("R2_ENDPOINT"));
            }
        }
        Ok(cfg)
    }
}

/// Content types by key suffix, so that requests that carry no attributes (a multipart upload
/// created through `MultipartStore`) still store `video/mp4` / `image/jpeg` and play in a browser.
fn content_types() -> ClientOptions {
    ClientOptions::new()
        .with_content_type_for_suffix("mp4", "video/mp4")
        .with_content_type_for_suffix("jpg", "image/jpeg")
        .with_content_type_for_suffix("m3u8", PLAYLIST_CONTENT_TYPE)
}

/// An opened object store plus what it takes to give out URLs for its objects.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<AmazonS3>>,
    config: StorageConfig,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("mode", &self.config.mode)
            .field("store", &self.store.to_string())
            .finish()
    }
}

impl Storage {
    /// Opens the backend `config` names. For `local`, creates the directory.
    pub fn open(config: StorageConfig) -> Result<Self, StorageError> {
        match config.mode {
            StorageMode::Local => {
                std::fs::create_dir_all(&config.local_dir)?;
                let fs = LocalFileSystem::new_with_prefix(&config.local_dir)?;
                Ok(Self {
                    store: Arc::new(fs),
                    signer: None,
                    config,
                })
            }
            StorageMode::S3 | StorageMode::R2 => {
                let bucket = config
                    .bucket
                    .clone()
                    .ok_or(StorageError::Config("R2_BUCKET_NAME"))?;
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(config.region.clone())
                    .with_client_options(content_types());
                if let Some(ep) = &config.endpoint {
                    b = b
                        .with_endpoint(ep.clone())
                        .with_allow_http(ep.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(k) = &config.access_key_id {
                    b = b.with_access_key_id(k.clone());
                }
                if let Some(s) = &config.secret_access_key {
                    b = b.with_secret_access_key(s.expose().to_owned());
                }
                let s3 = Arc::new(b.build()?);
                Ok(Self {
                    store: s3.clone(),
                    signer: Some(s3),
                    config,
                })
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// The low-level multipart API of an S3/R2 backend (`None` for `local`): it lets an uploader
    /// retry one part under the same part number, which `ObjectStore::put_multipart` cannot.
    pub fn multipart_store(&self) -> Option<Arc<dyn MultipartStore>> {
        self.signer.clone().map(|s3| s3 as Arc<dyn MultipartStore>)
    }

    /// The URL a client uses to fetch `key`: the public URL when one is set, the event-api media
    /// route in local mode, else a signed URL valid for `SIGNED_URL_TTL_SEC`.
    pub async fn url_for(&self, key: &ObjectKey) -> Result<String, StorageError> {
        if let Some(base) = &self.config.public_url {
            return Ok(format!("{base}/{key}"));
        }
        match (&self.signer, self.config.mode) {
            (Some(s3), _) => {
                let url = s3
                    .signed_url(http::Method::GET, &key.path(), self.config.signed_url_ttl)
                    .await?;
                Ok(url.to_string())
            }
            (None, _) => Ok(format!("{}/media/{key}", self.config.media_base_url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_round_trip() {
        let id = PlaybackId::new();
        for key in ObjectKey::all_for(id) {
            assert_eq!(ObjectKey::parse(&key.to_string()), Some(key));
            assert_eq!(key.path().as_ref(), key.to_string());
            assert_eq!(key.playback_id(), id);
        }
        assert_eq!(
            ObjectKey::Video(id).to_string(),
            format!("playbacks/{id}/video.mp4")
        );
        for bad in [
            "",
            "playbacks/x/video.mp4",
            "playbacks//video.mp4",
            "other/0190a1b2-0000-7000-8000-000000000000/video.mp4",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/1_2_3.mp4",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/1_2_3_4_5.mp4",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/01_2_3_4.mp4",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/-1_2_3_4.mp4",
            "playbacks/0190a1b2-0000-7000-8000-000000000000/live/1_2_3_4.m4s",
        ] {
            assert_eq!(ObjectKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_keys_live_under_the_prefix() {
        let id = PlaybackId::new();
        let name = SegmentName {
            start_ms: 1_765_000_000_123,
            duration_ms: 1001,
            init_len: 812,
            epoch: 42,
        };
        let key = ObjectKey::Segment(id, name);
        assert_eq!(
            key.to_string(),
            format!("playbacks/{id}/live/1765000000123_1001_812_42.mp4")
        );
        assert!(key.to_string().starts_with(&segments_prefix(id)));
        assert_eq!(ObjectKey::parse(&key.to_string()), Some(key));
        assert_eq!(name.end_ms(), 1_765_000_001_124);
        assert_eq!(
            ObjectKey::parse(&format!("playbacks/{id}/index.m3u8")),
            Some(ObjectKey::SegmentList(id))
        );
    }

    proptest::proptest! {
        #[test]
        fn segment_names_round_trip(start_ms in 0i64..i64::MAX / 2, duration_ms: u32, init_len: u32, epoch: u64) {
            let name = SegmentName { start_ms, duration_ms, init_len, epoch };
            proptest::prop_assert_eq!(SegmentName::parse(&name.to_string()), Some(name));
        }

        #[test]
        fn any_text_parses_to_a_key_that_prints_back(s in "\\PC{0,80}") {
            if let Some(key) = ObjectKey::parse(&s) {
                proptest::prop_assert_eq!(key.to_string(), s);
            }
        }
    }

    fn cfg(vars: &[(&str, &str)]) -> Result<StorageConfig, StorageError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StorageConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn old_r2_variables_keep_working() {
        let c = cfg(&[
            ("STORAGE_MODE", "r2"),
            ("R2_ENDPOINT", "https://acct.r2.cloudflarestorage.com"),
            ("R2_ACCESS_KEY_ID", "AK"),
            ("R2_SECRET_ACCESS_KEY", "very-secret"),
            ("R2_BUCKET_NAME", "clips"),
            ("R2_PUBLIC_URL", "https://cdn.example/"),
        ])
        .unwrap();
        assert_eq!(c.mode, StorageMode::R2);
        assert_eq!(c.bucket.as_deref(), Some("clips"));
        assert_eq!(c.public_url.as_deref(), Some("https://cdn.example"));
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn local_is_the_default_and_bad_modes_name_the_variable() {
        assert_eq!(cfg(&[]).unwrap().mode, StorageMode::Local);
        let e = cfg(&[("STORAGE_MODE", "ftp")]).unwrap_err();
        assert!(e.to_string().contains("STORAGE_MODE"));
        let e = cfg(&[("STORAGE_MODE", "s3")]).unwrap_err();
        assert!(e.to_string().contains("R2_BUCKET_NAME"));
    }

    #[tokio::test]
    async fn urls_follow_the_mode() {
        let dir = std::env::temp_dir().join(format!("camrec-storage-{}", PlaybackId::new()));
        let mut c = cfg(&[("MEDIA_BASE_URL", "http://api:3000/")]).unwrap();
        c.local_dir = dir.clone();
        let s = Storage::open(c).unwrap();
        let key = ObjectKey::Video(PlaybackId::new());
        assert_eq!(
            s.url_for(&key).await.unwrap(),
            format!("http://api:3000/media/{key}")
        );
        let s3 = Storage::open(
            cfg(&[
                ("STORAGE_MODE", "s3"),
                ("S3_ENDPOINT", "http://127.0.0.1:9"),
                ("S3_BUCKET", "b"),
                ("S3_ACCESS_KEY_ID", "k"),
                ("S3_SECRET_ACCESS_KEY", "s"),
            ])
            .unwrap(),
        )
        .unwrap();
        let url = s3.url_for(&key).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:9/b/playbacks/"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
