//! The baselines: what the bare tools do for the same work, measured beside camrec in the same
//! run. A bare FFmpeg with the capture's own argv (`segment_argv`: its first frame for P4, its
//! steady cost and bitrate for P5), ffprobe plus a plain object_store upload of a clip, and a
//! plain async-nats publish of a backlog.

use async_nats::jetstream::context::{Publish, PublishAckFuture};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use recorder_worker::ffmpeg::{ListEntry, SegmentPlan, Segmenter};
use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A baseline that could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("ffmpeg: {0}")]
    Ffmpeg(#[from] recorder_worker::ffmpeg::MediaError),
    #[error("ffmpeg wrote no segment within {0:?}")]
    NoFrame(Duration),
    #[error("ffprobe failed: {0}")]
    Probe(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("publish: {0}")]
    Publish(String),
}

/// How long a bare FFmpeg is given to stop after SIGINT.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A bare FFmpeg with the capture's argv for `plan` (through the worker's own [`Segmenter`], the
/// process wrapper, not the worker), its segment list read in the background.
pub struct BareCapture {
    pid: Option<u32>,
    stop: oneshot::Sender<()>,
    /// Ends with every segment FFmpeg listed, once it was stopped.
    listed: JoinHandle<Vec<ListEntry>>,
}

/// What a bare capture wrote: its segments' bytes and media duration.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Written {
    pub bytes: u64,
    pub media_secs: f64,
}

impl BareCapture {
    /// Starts FFmpeg and waits for its first segment (up to `timeout`); returns the capture and
    /// the time from the spawn to its first frame: the wall-clock time FFmpeg listed its first
    /// segment minus that segment's media duration (a live camera delivers in real time).
    pub async fn start(
        ffmpeg: &Path,
        plan: &SegmentPlan,
        timeout: Duration,
    ) -> Result<(Self, Duration), BaselineError> {
        let spawned = Instant::now();
        let mut segmenter = Segmenter::spawn(ffmpeg, plan)?;
        let first = match tokio::time::timeout(timeout, segmenter.next_closed()).await {
            Ok(Some(first)) => first,
            Ok(None) | Err(_) => {
                segmenter.stop(STOP_GRACE).await;
                return Err(BaselineError::NoFrame(timeout));
            }
        };
        let first_frame = spawned.elapsed().saturating_sub(first.duration());
        let pid = segmenter.pid();
        let (stop, stopped) = oneshot::channel();
        let listed = tokio::spawn(async move {
            let mut entries = vec![first];
            let mut stopped = std::pin::pin!(stopped);
            loop {
                tokio::select! {
                    e = segmenter.next_closed() => match e {
                        Some(e) => entries.push(e),
                        None => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            segmenter.stop(STOP_GRACE).await;
            entries
        });
        Ok((Self { pid, stop, listed }, first_frame))
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops FFmpeg (SIGINT, then a kill; reaped) and sums the segments it listed in `dir`.
    pub async fn stop(self, dir: &Path) -> Written {
        let _ = self.stop.send(());
        let entries = self.listed.await.unwrap_or_default();
        let mut written = Written::default();
        for e in entries {
            if let Ok(meta) = tokio::fs::metadata(dir.join(&e.file)).await {
                written.bytes += meta.len();
                written.media_secs += e.duration().as_secs_f64();
            }
        }
        written
    }
}

/// P4's baseline: a fresh FFmpeg's time from spawn to its first frame (see
/// [`BareCapture::start`]), then stops it.
pub async fn ffmpeg_first_frame(
    ffmpeg: &Path,
    plan: &SegmentPlan,
) -> Result<Duration, BaselineError> {
    let (capture, took) = BareCapture::start(ffmpeg, plan, Duration::from_secs(30)).await?;
    capture.stop(&plan.dir).await;
    Ok(took)
}

/// P3's baseline: `ffprobe -print_format json` of `file`, then a plain object_store upload of it
/// to `key` (one put up to 8 MiB, else a multipart upload in 8 MiB parts).
pub async fn probe_and_upload(
    ffprobe: &Path,
    file: &Path,
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
) -> Result<Duration, BaselineError> {
    const PART: usize = 8 * 1024 * 1024;
    let started = Instant::now();
    let probe = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(file)
        .kill_on_drop(true)
        .output()
        .await?;
    if !probe.status.success() {
        return Err(BaselineError::Probe(
            String::from_utf8_lossy(&probe.stderr).trim().to_owned(),
        ));
    }
    let data = tokio::fs::read(file).await?;
    if data.len() <= PART {
        store.put(key, data.into()).await?;
    } else {
        let upload = store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        writer.write(&data);
        writer.finish().await?;
    }
    Ok(started.elapsed())
}

/// One message of a backlog.
#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub msg_id: String,
    pub payload: Bytes,
}

/// P2's baseline: publishes `messages` to JetStream with async publishes, at most `in_flight`
/// unacknowledged, awaiting every ack. Returns the time from the first publish to the last ack.
pub async fn publish_all(
    js: &async_nats::jetstream::Context,
    messages: &[Message],
    in_flight: usize,
) -> Result<Duration, BaselineError> {
    let started = Instant::now();
    let mut pending: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesUnordered::new();
    for m in messages {
        if pending.len() >= in_flight {
            if let Some(ack) = pending.next().await {
                ack.map_err(|e| BaselineError::Publish(e.to_string()))?;
            }
        }
        let publish = Publish::build()
            .payload(m.payload.clone())
            .message_id(&m.msg_id);
        let ack = js
            .send_publish(m.subject.clone(), publish)
            .await
            .map_err(|e| BaselineError::Publish(e.to_string()))?;
        pending.push(ack.into_future());
    }
    while let Some(ack) = pending.next().await {
        ack.map_err(|e| BaselineError::Publish(e.to_string()))?;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_a_backlog_and_every_ack_arrives() {
        let nats = testkit::NatsServer::start().await.unwrap();
        let client = camrec_shared::natsconn::NatsConfig::from_url(
            &nats.url_as(testkit::NatsUser::EventApi),
        )
        .unwrap()
        .connect(camrec_shared::natsconn::inbox::EVENT_API)
        .await
        .unwrap();
        let js = async_nats::jetstream::new(client);
        camrec_shared::streams::ensure_streams(&js, 1)
            .await
            .unwrap();
        let messages: Vec<Message> = (0..300)
            .map(|i| Message {
                subject: "event.created.bench.x".into(),
                msg_id: format!("m{i}"),
                payload: Bytes::from_static(b"{}"),
            })
            .collect();
        let took = publish_all(&js, &messages, 32).await.unwrap();
        assert!(took > Duration::ZERO);
        let mut stream = js.get_stream("EVENTS").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 300);
    }

    #[tokio::test]
    async fn probes_and_uploads_a_clip() {
        let s3 = testkit::S3Server::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("clip.mp4");
        testkit::make_test_clip(&clip, 1).unwrap();
        let storage = s3.storage().unwrap();
        let key = ObjectPath::from("bench/clip.mp4");
        let took = probe_and_upload(Path::new("ffprobe"), &clip, storage.store(), &key)
            .await
            .unwrap();
        assert!(took > Duration::ZERO);
        assert_eq!(s3.keys(), vec!["bench/clip.mp4".to_owned()]);
        let not_media = dir.path().join("x.mp4");
        std::fs::write(&not_media, b"nope").unwrap();
        assert!(matches!(
            probe_and_upload(Path::new("ffprobe"), &not_media, storage.store(), &key).await,
            Err(BaselineError::Probe(_))
        ));
    }
}
