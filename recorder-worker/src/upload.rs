//! Uploading a finished clip to object storage, verified.
//!
//! [`Uploader::upload_file`] streams a local file to its [`ObjectKey`]: one `put` when it fits in
//! one part, else a multipart upload in fixed-size parts (R2 wants equal parts) where each part is
//! retried with backoff under its own part number and the whole upload is aborted on failure.
//! The file is never held in memory whole; its SHA-256 is computed while it is read. Afterwards
//! the object's size (and, where the store kept it, its `sha256` metadata) is compared with the
//! file: only a verified upload may let the caller delete the local copy.

use bytes::{Bytes, BytesMut};
use camrec_shared::backoff::Backoff;
use camrec_shared::storage::{ObjectKey, Storage, StorageMode};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{Attribute, Attributes, GetOptions, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The user metadata key that carries the clip's SHA-256 (hex) where the store keeps metadata.
const SHA256_METADATA: &str = "sha256";

/// How uploads are cut and retried.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Files larger than this go up in parts of this size (S3 wants at least 5 MiB).
    pub part_size: usize,
    /// How many times one request (a put or one part) is retried after a transient failure.
    pub part_retries: u32,
    /// The first retry waits this long; each next one twice as long, at most [`MAX_BACKOFF`].
    pub retry_backoff: Duration,
    /// The deadline of one request, retries of the store's HTTP client included.
    pub request_timeout: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            part_retries: 4,
            retry_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// The longest wait between two attempts of one request.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a verified upload stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReceipt {
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// Why an upload or delete failed. `transient` errors are worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The local file could not be read (missing, unreadable): retrying will not help.
    #[error("cannot read the local file: {0}")]
    Read(#[source] std::io::Error),
    #[error("object store: {source}")]
    Store {
        #[source]
        source: object_store::Error,
        transient: bool,
    },
    /// A request did not finish within [`UploadOptions::request_timeout`].
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    /// The stored object differs from the file.
    #[error("the uploaded object does not match the file: {0}")]
    Mismatch(String),
}

impl UploadError {
    /// True when a later attempt may succeed (network, server, timeout, a corrupted transfer).
    pub fn is_transient(&self) -> bool {
        match self {
            UploadError::Read(_) => false,
            UploadError::Store { transient, .. } => *transient,
            UploadError::Timeout { .. } | UploadError::Mismatch(_) => true,
        }
    }
}

impl From<object_store::Error> for UploadError {
    fn from(source: object_store::Error) -> Self {
        let transient = matches!(
            source,
            object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
        );
        UploadError::Store { source, transient }
    }
}

/// Uploads files to one storage backend.
#[derive(Clone, Debug)]
pub struct Uploader {
    storage: Storage,
    options: UploadOptions,
}

impl Uploader {
    pub fn new(storage: Storage, options: UploadOptions) -> Self {
        let part_size = options.part_size.max(1);
        Self {
            storage,
            options: UploadOptions {
                part_size,
                ..options
            },
        }
    }

    /// Uploads `path` to `key` and verifies the stored object.
    pub async fn upload_file(
        &self,
        key: &ObjectKey,
        path: &Path,
    ) -> Result<UploadReceipt, UploadError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(UploadError::Read)?;
        let size = file.metadata().await.map_err(UploadError::Read)?.len();
        let location = key.path();
        let mut hasher = Sha256::new();
        let first = read_chunk(&mut file, self.options.part_size, &mut hasher).await?;
        let sha256 = if first.len() as u64 >= size && size < self.options.part_size as u64 {
            let sha256 = hex::encode(hasher.finalize());
            self.put_single(key, first, &sha256).await?;
            sha256
        } else {
            match self.storage.multipart_store() {
                Some(mp) => {
                    self.put_parts(&mp, &location, first, &mut file, &mut hasher)
                        .await?
                }
                None => {
                    self.put_local_parts(&location, first, &mut file, &mut hasher)
                        .await?
                }
            }
            hex::encode(hasher.finalize())
        };
        self.verify(&location, size, &sha256).await?;
        Ok(UploadReceipt {
            size_bytes: size,
            sha256,
        })
    }

    /// Stores `data`, small enough for one request, at `key` (retried like a part).
    pub async fn put_bytes(&self, key: &ObjectKey, data: Bytes) -> Result<(), UploadError> {
        let sha256 = hex::encode(Sha256::digest(&data));
        self.put_single(key, data, &sha256).await
    }

    /// The bytes of a small object.
    pub async fn get(&self, key: &ObjectKey) -> Result<Bytes, UploadError> {
        let store = self.storage.store().clone();
        let location = key.path();
        self.attempt("get", || {
            let (store, location) = (store.clone(), location.clone());
            async move { store.get(&location).await?.bytes().await }
        })
        .await
    }

    /// The objects under `prefix`, with their sizes.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, UploadError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(prefix);
        let found: Vec<object_store::ObjectMeta> = self
            .storage
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect())
    }

    /// Deletes `key`; an object that is already gone is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), UploadError> {
        let store = self.storage.store().clone();
        let location = key.path();
        match self
            .attempt("delete", || {
                let (store, location) = (store.clone(), location.clone());
                async move { store.delete(&location).await }
            })
            .await
        {
            Err(UploadError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// One `put` of a small file, with its content type (and SHA-256 where metadata is kept).
    async fn put_single(
        &self,
        key: &ObjectKey,
        data: Bytes,
        sha256: &str,
    ) -> Result<(), UploadError> {
        let store = self.storage.store().clone();
        let location = key.path();
        let opts = PutOptions {
            attributes: self.attributes(key, sha256),
            ..Default::default()
        };
        let payload = PutPayload::from(data);
        self.attempt("put", || {
            let (store, location, payload, opts) = (
                store.clone(),
                location.clone(),
                payload.clone(),
                opts.clone(),
            );
            async move { store.put_opts(&location, payload, opts).await.map(drop) }
        })
        .await
    }

    /// The local file system keeps no attributes; S3 and R2 keep content type and metadata.
    fn attributes(&self, key: &ObjectKey, sha256: &str) -> Attributes {
        let mut attrs = Attributes::new();
        if self.storage.config().mode != StorageMode::Local {
            attrs.insert(Attribute::ContentType, key.content_type().into());
            attrs.insert(
                Attribute::Metadata(SHA256_METADATA.into()),
                sha256.to_owned().into(),
            );
        }
        attrs
    }

    /// An S3/R2 multipart upload: each part retried under its own number; aborted on failure.
    async fn put_parts(
        &self,
        mp: &Arc<dyn MultipartStore>,
        location: &ObjectPath,
        first: Bytes,
        file: &mut tokio::fs::File,
        hasher: &mut Sha256,
    ) -> Result<(), UploadError> {
        let id = self
            .attempt("create multipart upload", || {
                let (mp, location) = (mp.clone(), location.clone());
                async move { mp.create_multipart(&location).await }
            })
            .await?;
        let result = self
            .send_parts(mp, location, &id, first, file, hasher)
            .await;
        if result.is_err() {
            if let Err(error) = mp.abort_multipart(location, &id).await {
                tracing::warn!(%location, %error, "aborting a failed multipart upload failed");
            }
        }
        result
    }

    async fn send_parts(
        &self,
        mp: &Arc<dyn MultipartStore>,
        location: &ObjectPath,
        id: &str,
        first: Bytes,
        file: &mut tokio::fs::File,
        hasher: &mut Sha256,
    ) -> Result<(), UploadError> {
        let mut parts: Vec<PartId> = Vec::new();
        let mut chunk = first;
        while !chunk.is_empty() {
            let idx = parts.len();
            let payload = PutPayload::from(chunk);
            let part = self
                .attempt("upload part", || {
                    let (mp, location, id, payload) =
                        (mp.clone(), location.clone(), id.to_owned(), payload.clone());
                    async move { mp.put_part(&location, &id, idx, payload).await }
                })
                .await?;
            parts.push(part);
            chunk = read_chunk(file, self.options.part_size, hasher).await?;
        }
        let id = id.to_owned();
        self.attempt("complete multipart upload", || {
            let (mp, location, id, parts) =
                (mp.clone(), location.clone(), id.clone(), parts.clone());
            async move { mp.complete_multipart(&location, &id, parts).await.map(drop) }
        })
        .await
    }

    /// A large file on the local backend: streamed through `put_multipart` part by part.
    async fn put_local_parts(
        &self,
        location: &ObjectPath,
        first: Bytes,
        file: &mut tokio::fs::File,
        hasher: &mut Sha256,
    ) -> Result<(), UploadError> {
        let mut upload = self.storage.store().put_multipart(location).await?;
        let mut chunk = first;
        let result = async {
            while !chunk.is_empty() {
                upload.put_part(PutPayload::from(chunk)).await?;
                chunk = read_chunk(file, self.options.part_size, hasher).await?;
            }
            upload.complete().await.map(drop)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = upload.abort().await;
        }
        result
    }

    /// True where parts of one upload may be sent in any order (S3, R2).
    pub fn takes_parts(&self) -> bool {
        self.storage.multipart_store().is_some()
    }

    /// Starts a multipart upload to `key` whose parts may be sent in any order; `None` where the
    /// store has no such uploads (the local file system).
    pub async fn begin_parts(&self, key: &ObjectKey) -> Result<Option<Parts>, UploadError> {
        let Some(mp) = self.storage.multipart_store() else {
            return Ok(None);
        };
        let location = key.path();
        let id = self
            .attempt("create multipart upload", || {
                let (mp, location) = (mp.clone(), location.clone());
                async move { mp.create_multipart(&location).await }
            })
            .await?;
        Ok(Some(Parts { mp, location, id }))
    }

    /// Sends part `idx` (from 0) of `parts`, retried like any request.
    pub async fn put_part(
        &self,
        parts: &Parts,
        idx: usize,
        data: Bytes,
    ) -> Result<PartId, UploadError> {
        let payload = PutPayload::from(data);
        self.attempt("upload part", || {
            let (mp, location, id, payload) = (
                parts.mp.clone(),
                parts.location.clone(),
                parts.id.clone(),
                payload.clone(),
            );
            async move { mp.put_part(&location, &id, idx, payload).await }
        })
        .await
    }

    /// Makes the object of `parts` from `done`, the parts in order, and checks its size.
    pub async fn complete_parts(
        &self,
        parts: &Parts,
        done: Vec<PartId>,
        size: u64,
    ) -> Result<(), UploadError> {
        self.attempt("complete multipart upload", || {
            let (mp, location, id, done) = (
                parts.mp.clone(),
                parts.location.clone(),
                parts.id.clone(),
                done.clone(),
            );
            async move { mp.complete_multipart(&location, &id, done).await.map(drop) }
        })
        .await?;
        self.verify(&parts.location, size, "").await
    }

    /// Drops an unfinished multipart upload and the parts it holds (best effort).
    pub async fn abort_parts(&self, parts: &Parts) {
        if let Err(error) = parts.mp.abort_multipart(&parts.location, &parts.id).await {
            tracing::warn!(location = %parts.location, %error, "aborting a multipart upload failed");
        }
    }

    /// Stores `data` at `key` in one request, like [`Uploader::upload_file`] stores a small file,
    /// and verifies it.
    pub async fn put_verified(&self, key: &ObjectKey, data: Bytes) -> Result<(), UploadError> {
        let size = data.len() as u64;
        let sha256 = hex::encode(Sha256::digest(&data));
        self.put_single(key, data, &sha256).await?;
        self.verify(&key.path(), size, &sha256).await
    }

    /// Compares the stored object with the file: size always, SHA-256 when the store kept it.
    async fn verify(
        &self,
        location: &ObjectPath,
        size: u64,
        sha256: &str,
    ) -> Result<(), UploadError> {
        let store = self.storage.store().clone();
        let head = self
            .attempt("head", || {
                let (store, location) = (store.clone(), location.clone());
                let opts = GetOptions {
                    head: true,
                    ..Default::default()
                };
                async move { store.get_opts(&location, opts).await }
            })
            .await?;
        if head.meta.size != size {
            return Err(UploadError::Mismatch(format!(
                "{location}: stored {} bytes, the file has {size}",
                head.meta.size
            )));
        }
        let stored_sha = head
            .attributes
            .get(&Attribute::Metadata(SHA256_METADATA.into()))
            .map(|v| v.as_ref().to_owned());
        match stored_sha {
            Some(stored) if !stored.eq_ignore_ascii_case(sha256) => Err(UploadError::Mismatch(
                format!("{location}: stored SHA-256 {stored}, the file has {sha256}"),
            )),
            _ => Ok(()),
        }
    }

    /// Runs one request with a deadline, retrying transient failures with capped backoff.
    async fn attempt<T, F, Fut>(&self, what: &'static str, mut request: F) -> Result<T, UploadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let mut backoff = Backoff::new(self.options.retry_backoff, MAX_BACKOFF);
        let mut retries_left = self.options.part_retries;
        loop {
            let error = match tokio::time::timeout(self.options.request_timeout, request()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => UploadError::from(e),
                Err(_) => UploadError::Timeout {
                    what,
                    after: self.options.request_timeout,
                },
            };
            if retries_left == 0 || !error.is_transient() {
                return Err(error);
            }
            tracing::warn!(request = what, %error, retries_left, "object store request failed, retrying");
            retries_left -= 1;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// A multipart upload begun with [`Uploader::begin_parts`].
pub struct Parts {
    mp: Arc<dyn MultipartStore>,
    location: ObjectPath,
    id: String,
}

/// Reads up to `size` bytes (less only at the end of the file) and feeds them to `hasher`.
async fn read_chunk(
    file: &mut tokio::fs::File,
    size: usize,
    hasher: &mut Sha256,
) -> Result<Bytes, UploadError> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let n = (&mut *file)
            .take((size - buf.len()) as u64)
            .read_buf(&mut buf)
            .await
            .map_err(UploadError::Read)?;
        if n == 0 {
            break;
        }
    }
    hasher.update(&buf);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_shared::storage::StorageConfig;
    use camrec_shared::PlaybackId;

    fn local_uploader(dir: &Path, part_size: usize) -> Uploader {
        let mut cfg = StorageConfig::from_lookup(|_| None).unwrap();
        cfg.local_dir = dir.to_path_buf();
        let options = UploadOptions {
            part_size,
            ..Default::default()
        };
        Uploader::new(Storage::open(cfg).unwrap(), options)
    }

    async fn round_trip(part_size: usize, len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let uploader = local_uploader(&dir.path().join("objects"), part_size);
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let file = dir.path().join("clip.mp4");
        std::fs::write(&file, &data).unwrap();
        let key = ObjectKey::Video(PlaybackId::new());
        let receipt = uploader.upload_file(&key, &file).await.unwrap();
        assert_eq!(receipt.size_bytes, len as u64);
        assert_eq!(receipt.sha256, hex::encode(Sha256::digest(&data)));
        let stored = std::fs::read(dir.path().join("objects").join(key.to_string())).unwrap();
        assert!(stored == data, "the stored object differs");
        uploader.delete(&key).await.unwrap();
        uploader.delete(&key).await.unwrap();
        assert!(!dir.path().join("objects").join(key.to_string()).exists());
    }

    #[tokio::test]
    async fn small_and_large_files_round_trip_on_local_storage() {
        round_trip(1024, 0).await;
        round_trip(1024, 1000).await;
        round_trip(1024, 1024).await;
        round_trip(1024, 10 * 1024 + 7).await;
    }

    #[tokio::test]
    async fn a_missing_file_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let uploader = local_uploader(dir.path(), 1024);
        let err = uploader
            .upload_file(
                &ObjectKey::Video(PlaybackId::new()),
                &dir.path().join("nope"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::Read(_)));
        assert!(!err.is_transient());
    }
}
