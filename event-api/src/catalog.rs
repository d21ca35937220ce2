//! The camera catalog's check at start: the KV bucket `camrec_cameras` follows the database
//! through the outbox (`store::cameras`), but a bucket can lose its store (a NATS server rebuilt
//! without its disk) or miss a change (a bucket created after it). At every start event-api
//! compares the two and, through the outbox like any change, publishes
//! - the spec of every camera whose spec is missing from the bucket or differs from the database;
//! - a `deleted` spec at every key whose camera no longer exists there (deleted, or moved to
//!   another site) and does not say so yet.
//!
//! The specs are built again inside the transaction that queues them, from the rows locked then,
//! so a change that commits while the check runs is never overwritten by an older spec.

use crate::store::{Store, StoreError};
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::Context;
use camrec_shared::backoff::{sleep_or_cancel, Backoff};
use camrec_shared::capture::{parse_camera_key, CameraSpec};
use camrec_shared::subjects::Site;
use camrec_shared::CameraId;
use futures::TryStreamExt;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Cameras read per query.
const PAGE: i64 = 500;

/// Why the check did not finish; it is tried again.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(#[from] async_nats::Error),
}

/// What the check queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Specs missing from the bucket or different there.
    pub published: usize,
    /// Keys marked deleted because their camera is gone from that site.
    pub retired: usize,
}

/// The spec stored at `key`, if it reads.
async fn stored_spec(kv: &kv::Store, key: &str) -> Result<Option<CameraSpec>, CatalogError> {
    let entry = kv.entry(key).await.map_err(async_nats::Error::from)?;
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}

/// Runs the check once (see the module docs).
pub async fn repair(
    store: &Store,
    js: &Context,
    replicas: usize,
    max_duration_sec: u32,
) -> Result<Repaired, CatalogError> {
    let kv = camrec_shared::streams::ensure_cameras_bucket(js, replicas).await?;
    let mut current: HashMap<CameraId, Site> = HashMap::new();
    let mut stale = Vec::new();
    let mut after = Uuid::nil();
    loop {
        let rows = store.cameras_after(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in rows {
            let Some(spec) = row.spec(max_duration_sec) else {
                continue;
            };
            current.insert(spec.camera_id, spec.site.clone());
            if stored_spec(&kv, &spec.key()).await?.as_ref() != Some(&spec) {
                stale.push(spec.camera_id);
            }
        }
    }
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(async_nats::Error::from)?
        .try_collect()
        .await
        .map_err(async_nats::Error::from)?;
    let mut gone = Vec::new();
    let mut seen = HashSet::new();
    for key in keys {
        let Ok((site, camera_id)) = parse_camera_key(&key) else {
            continue;
        };
        if current.get(&camera_id) == Some(&site) || !seen.insert(key.clone()) {
            continue;
        }
        if let Some(spec) = stored_spec(&kv, &key).await? {
            if !spec.deleted {
                gone.push(spec);
            }
        }
    }
    let published = store.republish_cameras(&stale, max_duration_sec).await?;
    let retired = store.retire_specs(gone).await?;
    Ok(Repaired { published, retired })
}

/// Runs the check until it succeeds once (NATS or the database may not be up yet), or until
/// `shutdown`.
pub async fn run(
    store: Store,
    js: Context,
    replicas: usize,
    max_duration_sec: u32,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = repair(&store, &js, replicas, max_duration_sec) => r,
        };
        match result {
            Ok(r) => {
                if r != Repaired::default() {
                    tracing::info!(
                        published = r.published,
                        retired = r.retired,
                        "camera catalog repaired from the database"
                    );
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot check the camera catalog yet; retrying"),
        }
        if !sleep_or_cancel(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}
