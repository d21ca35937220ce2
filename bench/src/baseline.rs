//! The baselines: what the bare tools do for the same work, measured beside camrec in the same
//! run. A bare FFmpeg with the worker's own argv (first frame, and recording for P5), ffprobe
//! plus a plain object_store upload of a clip, and a plain async-nats publish of a backlog.

use async_nats::jetstream::context::{Publish, PublishAckFuture};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use recorder_worker::ffmpeg::{record_argv, RecordPlan};
use recorder_worker::progress::ProgressParser;
use std::future::IntoFuture;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A baseline that could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("ffmpeg wrote no frame within {0:?}")]
    NoFrame(Duration),
    #[error("ffprobe failed: {0}")]
    Probe(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("publish: {0}")]
    Publish(String),
}

/// A bare FFmpeg running the worker's argv for `plan`, its progress on stdout.
pub struct BareFfmpeg {
    child: Child,
    progress: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    parser: ProgressParser,
}

impl BareFfmpeg {
    pub fn spawn(ffmpeg: &Path, plan: &RecordPlan) -> Result<Self, BaselineError> {
        let mut child = Command::new(ffmpeg)
            .args(record_argv(plan))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("ffmpeg has no stdout"))?;
        Ok(Self {
            child,
            progress: BufReader::new(stdout).lines(),
            parser: ProgressParser::new(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the first progress block with `frame=` > 0.
    pub async fn first_frame(&mut self, timeout: Duration) -> Result<(), BaselineError> {
        let wait = async {
            while let Some(line) = self.progress.next_line().await? {
                if self.parser.feed_line(&line).is_some_and(|p| p.frames > 0) {
                    return Ok(());
                }
            }
            Err(BaselineError::NoFrame(timeout))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| BaselineError::NoFrame(timeout))?
    }

    /// Keeps reading progress so FFmpeg never blocks on a full pipe (what the worker does too).
    pub fn drain_progress(mut self) -> DrainedFfmpeg {
        let reader =
            tokio::spawn(async move { while let Ok(Some(_)) = self.progress.next_line().await {} });
        DrainedFfmpeg {
            child: self.child,
            reader,
        }
    }

    /// SIGINT (as the worker stops its FFmpeg), then a kill after `grace`; reaped.
    pub async fn stop(self, grace: Duration) {
        self.drain_progress().stop(grace).await;
    }
}

/// A bare FFmpeg whose progress is read in the background.
pub struct DrainedFfmpeg {
    child: Child,
    reader: tokio::task::JoinHandle<()>,
}

impl DrainedFfmpeg {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = self.child.wait().await;
        self.reader.abort();
    }
}

/// P4's baseline: from spawning a bare FFmpeg to its first frame, then stops it.
pub async fn ffmpeg_first_frame(
    ffmpeg: &Path,
    plan: &RecordPlan,
) -> Result<Duration, BaselineError> {
    let started = Instant::now();
    let mut f = BareFfmpeg::spawn(ffmpeg, plan)?;
    let first = f.first_frame(Duration::from_secs(30)).await;
    let took = started.elapsed();
    f.stop(Duration::from_secs(5)).await;
    first.map(|()| took)
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
