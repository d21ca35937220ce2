//! A recording's segments uploaded while it is recorded, so the clip lives in object storage as
//! it happens (event-api lists them as the live playlist, `liveUrl`) and not on one worker's
//! disk only.
//!
//! Every segment the recording links ([`crate::recording`]) is queued here and uploaded, in
//! order, to `playbacks/<id>/live/<start_ms>_<duration_ms>_<init_len>_<epoch>.mp4`
//! ([`ObjectKey::Segment`]). A failed upload (S3 down) is retried with backoff, the queue waiting
//! behind it: the segments wait on disk, where the recording holds them by hard links, and go up
//! in order once the store answers again.
//!
//! **Fencing.** A segment is written only while this worker certainly holds the camera
//! ([`Tenure::holds`]): its lease's last confirmed renewal plus the TTL, less a margin. A worker
//! cut off from NATS stops writing before its lease can expire and another worker take the
//! camera; one that learns another worker holds the camera ([`Capture::is_lost`]) writes
//! nothing more. Each segment's name carries the epoch (lease revision) it was written under.
//!
//! When the recording ends, [`segment_list`] uploads what is still missing (a crash may have
//! left segments behind) and writes the closed playlist `playbacks/<id>/index.m3u8`.

use bytes::Bytes;
use camrec_shared::backoff::nth_delay;
use camrec_shared::hls::{media_playlist, playable, Listed};
use camrec_shared::storage::{segments_prefix, ObjectKey, SegmentName};
use camrec_shared::PlaybackId;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::assemble::ClipStream;
use crate::capture::segment::{segment_name, segments_in, Segment};
use crate::capture::{Capture, Tenure};
use crate::upload::{UploadError, Uploader};

/// How long before its lease could expire a worker stops writing segments.
pub const FENCE_MARGIN: Duration = Duration::from_secs(1);
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a segment was not uploaded.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("segment file: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a fragmented MP4 segment (no moof box)")]
    NotFragmented,
    #[error("{0}")]
    Upload(#[from] UploadError),
}

/// The uploader of one recording's segments; dropping the queue's last sender ends it.
pub struct LiveUpload {
    queue: mpsc::UnboundedSender<Segment>,
    task: tokio::task::JoinHandle<()>,
    /// The clip's MP4 assembled from the same segments ([`crate::assemble`]), where the store
    /// takes multipart uploads.
    clip: Option<(
        mpsc::UnboundedSender<std::path::PathBuf>,
        tokio::task::JoinHandle<ClipStream>,
    )>,
}

impl LiveUpload {
    /// Starts uploading the segments queued with [`LiveUpload::push`] for playback `id`, and,
    /// when `assemble` gives the longest the clip can be and the store takes multipart
    /// uploads, the clip they make.
    pub fn spawn(
        uploader: Uploader,
        id: PlaybackId,
        capture: Capture,
        assemble: Option<std::time::Duration>,
    ) -> Self {
        let clip = assemble.filter(|_| uploader.takes_parts()).map(|longest| {
            let (tx, mut rx) = mpsc::unbounded_channel::<std::path::PathBuf>();
            let mut stream = ClipStream::new(uploader.clone(), ObjectKey::Video(id), longest);
            let task = tokio::spawn(async move {
                while let Some(path) = rx.recv().await {
                    stream.push(&path).await;
                }
                stream
            });
            (tx, task)
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(upload_queue(uploader, id, capture, rx));
        Self { queue, task, clip }
    }

    /// Queues a segment just linked into the recording.
    pub fn push(&self, segment: Segment) {
        if let Some((clip, _)) = &self.clip {
            let _ = clip.send(segment.path.clone());
        }
        let _ = self.queue.send(segment);
    }

    /// Lets the queue drain for at most `within`, then stops it: what is left is uploaded by
    /// [`segment_list`]. Returns the clip's stream once it has joined what it was given.
    pub async fn drain(self, within: Duration) -> Option<ClipStream> {
        let LiveUpload {
            queue,
            mut task,
            clip,
        } = self;
        drop(queue);
        let clip = clip.map(|(tx, task)| {
            drop(tx);
            task
        });
        // Both queues drain side by side: the live one for at most `within`, the clip's until
        // it has joined what it was given.
        let live = async {
            if tokio::time::timeout(within, &mut task).await.is_err() {
                task.abort();
            }
        };
        let clip = async {
            match clip {
                Some(task) => task.await.ok(),
                None => None,
            }
        };
        tokio::join!(live, clip).1
    }
}

async fn upload_queue(
    uploader: Uploader,
    id: PlaybackId,
    capture: Capture,
    mut rx: mpsc::UnboundedReceiver<Segment>,
) {
    let mut tenure = capture.tenure();
    while let Some(segment) = rx.recv().await {
        let mut failures = 0u32;
        loop {
            let Some(held) = wait_for_tenure(&capture, &mut tenure).await else {
                tracing::warn!(playback_id = %id, "another worker holds the camera: no more segments uploaded");
                return;
            };
            match upload_segment(&uploader, id, &segment.path, held.epoch).await {
                Ok(_) => break,
                Err(LiveError::Read(e)) => {
                    tracing::warn!(playback_id = %id, segment = %segment.name(), error = %e, "segment not uploaded: unreadable");
                    break;
                }
                Err(LiveError::NotFragmented) => {
                    tracing::warn!(playback_id = %id, segment = %segment.name(), "segment not uploaded: not a fragmented MP4");
                    break;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(playback_id = %id, segment = %segment.name(), error = %e, "segment upload failed; retrying");
                    }
                    tokio::time::sleep(nth_delay(failures, RETRY_FIRST, RETRY_MAX)).await;
                }
            }
        }
    }
}

/// Waits until this worker certainly holds the camera; `None` once another worker does.
async fn wait_for_tenure(
    capture: &Capture,
    tenure: &mut tokio::sync::watch::Receiver<Tenure>,
) -> Option<Tenure> {
    loop {
        if capture.is_lost() {
            return None;
        }
        let held = *tenure.borrow_and_update();
        if held.holds(Instant::now(), FENCE_MARGIN) {
            return Some(held);
        }
        let closed = capture.closed();
        tokio::select! {
            changed = tenure.changed() => if changed.is_err() { return None },
            _ = closed.cancelled(), if !capture.is_lost() => {
                // A camera released (disabled, deleted, worker shutting down) keeps what its
                // recordings hold: they are uploaded by `segment_list` at the end.
                return None;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Uploads one segment file under its key; returns what was stored.
pub async fn upload_segment(
    uploader: &Uploader,
    id: PlaybackId,
    path: &Path,
    epoch: u64,
) -> Result<Listed, LiveError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some((start, duration)) = crate::capture::segment::parse_segment_name(name) else {
        return Err(LiveError::Read(std::io::Error::other(
            "not a segment file name",
        )));
    };
    let data = Bytes::from(tokio::fs::read(path).await?);
    let init_len = crate::mp4::init_len(&data).ok_or(LiveError::NotFragmented)?;
    let name = SegmentName {
        start_ms: start.timestamp_millis(),
        duration_ms: u32::try_from(duration.as_millis()).unwrap_or(u32::MAX),
        init_len,
        epoch,
    };
    let size = data.len() as u64;
    uploader
        .put_bytes(&ObjectKey::Segment(id, name), data)
        .await?;
    Ok(Listed { name, size })
}

/// The end of a recording's upload: every segment in `dir` that the store does not hold yet is
/// uploaded (under `epoch`), then the closed playlist of all the playback's segments is written
/// to `playbacks/<id>/index.m3u8`; returns that key.
pub async fn segment_list(
    uploader: &Uploader,
    id: PlaybackId,
    dir: &Path,
    epoch: u64,
) -> Result<ObjectKey, LiveError> {
    let mut stored = listed(uploader, id).await?;
    let local: Vec<Segment> = segments_in(dir).await.unwrap_or_default();
    for s in local {
        let start_ms = s.start.timestamp_millis();
        if stored.iter().any(|l| l.name.start_ms == start_ms) {
            continue;
        }
        match upload_segment(uploader, id, &s.path, epoch).await {
            Ok(l) => stored.push(l),
            Err(LiveError::Upload(e)) => return Err(LiveError::Upload(e)),
            Err(e) => {
                tracing::warn!(playback_id = %id, segment = %s.name(), error = %e, "segment left out of the list")
            }
        }
    }
    let list = playable(stored);
    let text = media_playlist(&list, true, |n| format!("live/{n}"));
    let key = ObjectKey::SegmentList(id);
    uploader.put_bytes(&key, Bytes::from(text)).await?;
    Ok(key)
}

/// Downloads into `dir` the playback's stored segments it does not hold (those a previous
/// holder of the camera uploaded), named as the capture names them; returns how many.
pub async fn fetch_missing(
    uploader: &Uploader,
    id: PlaybackId,
    dir: &Path,
) -> Result<usize, LiveError> {
    let local: Vec<i64> = segments_in(dir)
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| s.start.timestamp_millis())
        .collect();
    let mut fetched = 0;
    for l in listed(uploader, id).await? {
        if local.contains(&l.name.start_ms) {
            continue;
        }
        let Some(start) = chrono::DateTime::from_timestamp_millis(l.name.start_ms) else {
            continue;
        };
        let duration = Duration::from_millis(u64::from(l.name.duration_ms));
        let bytes = uploader.get(&ObjectKey::Segment(id, l.name)).await?;
        let target = dir.join(segment_name(start, duration));
        let tmp = target.with_extension("part");
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &target).await?;
        fetched += 1;
    }
    Ok(fetched)
}

/// The playback's segments the store holds.
pub async fn listed(uploader: &Uploader, id: PlaybackId) -> Result<Vec<Listed>, LiveError> {
    let objects = uploader.list(&segments_prefix(id)).await?;
    Ok(objects
        .into_iter()
        .filter_map(|(key, size)| match ObjectKey::parse(&key) {
            Some(ObjectKey::Segment(_, name)) => Some(Listed { name, size }),
            _ => None,
        })
        .collect())
}
