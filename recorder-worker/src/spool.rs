//! The status spool, `RECORD_DIR/_spool/`: every state change a worker reports (`recording`,
//! `processing`, `completed`, `failed`) is a file here from the moment it is reported until the
//! `PLAYBACKS` stream has acknowledged it, so neither a NATS outage of any length nor a worker
//! restart loses one (the next start sends what it finds, in order).
//!
//! A file holds the exact bytes that are published, an `Envelope<PlaybackStatus>`. Its name,
//! `<seq>-<playback_id>.json` with `seq` zero-padded ([`SpoolKey`]), sorts the files of one
//! playback in the order they were reported. A file is written atomically (a temporary file,
//! fsync, rename, fsync of the directory): after a crash it is either whole or absent. A file
//! that cannot be read back is renamed `*.unreadable` and left for an operator.

use bytes::Bytes;
use camrec_shared::messages::{DecodeError, Envelope, PlaybackStatus};
use camrec_shared::subjects::playback_subject;
use camrec_shared::PlaybackId;
use chrono::Utc;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The spool's directory under `RECORD_DIR`.
pub const SPOOL_DIR: &str = "_spool";

/// Orders the spool: a playback's `seq`, then the playback. The file name codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpoolKey {
    pub seq: u64,
    pub playback_id: PlaybackId,
}

impl SpoolKey {
    /// `<seq, 20 digits>-<playback_id>.json`: the names sort as the keys do.
    pub fn file_name(&self) -> String {
        format!("{:020}-{}.json", self.seq, self.playback_id)
    }

    /// The key of a spool file name; `None` for any other file.
    pub fn parse(name: &str) -> Option<Self> {
        let (seq, id) = name.strip_suffix(".json")?.split_once('-')?;
        if seq.len() != 20 {
            return None;
        }
        Some(Self {
            seq: seq.parse().ok()?,
            playback_id: id.parse().ok()?,
        })
    }
}

/// A status ready to publish: where, under which `Nats-Msg-Id`, and the bytes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub key: SpoolKey,
    pub subject: String,
    /// `<playback_id>:<seq>`: a status sent twice (an ack lost in an outage) is stored once.
    pub msg_id: String,
    pub payload: Bytes,
}

impl Outgoing {
    pub fn new(status: PlaybackStatus) -> Self {
        Self::with_payload(
            &status,
            Envelope::new(Utc::now(), status.clone()).to_bytes().into(),
        )
    }

    /// Reads back a spooled status.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let status = Envelope::<PlaybackStatus>::from_slice(&payload)?.payload;
        Ok(Self::with_payload(&status, payload))
    }

    fn with_payload(status: &PlaybackStatus, payload: Bytes) -> Self {
        Self {
            key: SpoolKey {
                seq: status.seq,
                playback_id: status.playback_id,
            },
            subject: playback_subject(status.body.kind(), &status.site, status.camera_id),
            msg_id: status.msg_id(),
            payload,
        }
    }
}

/// The spool directory.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens `RECORD_DIR/_spool/` (creating it) and returns what it holds, in key order. Temporary
    /// files of a write that a crash interrupted are removed.
    pub async fn open(record_dir: &Path) -> std::io::Result<(Self, Vec<Outgoing>)> {
        let dir = record_dir.join(SPOOL_DIR);
        tokio::fs::create_dir_all(&dir).await?;
        let mut held = Vec::new();
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) {
                tokio::fs::remove_file(entry.path()).await?;
            } else if let Some(key) = SpoolKey::parse(&name) {
                if let Some(m) = read_entry(&entry.path(), key).await? {
                    held.push(m);
                }
            }
        }
        held.sort_by_key(|m| m.key);
        Ok((Self { dir }, held))
    }

    /// Writes `m` durably; it is in the spool when this returns.
    pub async fn put(&self, m: &Outgoing) -> std::io::Result<()> {
        let (dir, name, bytes) = (self.dir.clone(), m.key.file_name(), m.payload.clone());
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Removes the file of `key` (sent and acknowledged). A file already gone is fine.
    pub async fn remove(&self, key: SpoolKey) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.dir.join(key.file_name())).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn temporary_name(name: &str) -> String {
    format!(".{name}.tmp")
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// A spooled status, or `None` (logged, the file set aside) when it does not read back as the
/// status its name says.
async fn read_entry(path: &Path, key: SpoolKey) -> std::io::Result<Option<Outgoing>> {
    let bytes = tokio::fs::read(path).await?;
    match Outgoing::decode(bytes.into()) {
        Ok(m) if m.key == key => return Ok(Some(m)),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "spooled status does not match its name; set aside")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "unreadable spooled status; set aside")
        }
    }
    tokio::fs::rename(path, path.with_extension("unreadable")).await?;
    Ok(None)
}

/// Temporary file, fsync, rename, fsync of the directory (so the rename survives a power loss).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(temporary_name(name));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use camrec_shared::messages::{StatusBody, StatusKind};
    use camrec_shared::subjects::Site;
    use camrec_shared::{CameraId, EventId};

    fn status(playback_id: PlaybackId, seq: u64, body: StatusBody) -> PlaybackStatus {
        PlaybackStatus {
            playback_id,
            event_id: EventId::new(),
            camera_id: CameraId::new(),
            site: Site::default(),
            worker_id: "w1".into(),
            seq,
            takes_over_from: None,
            body,
        }
    }

    fn recording() -> StatusBody {
        StatusBody::Recording {
            started_at: Utc::now(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn keys_round_trip_through_file_names_and_sort_alike() {
        let id = PlaybackId::new();
        let small = SpoolKey {
            seq: 9,
            playback_id: id,
        };
        let large = SpoolKey {
            seq: 1_700_000_000_000_000,
            playback_id: id,
        };
        assert_eq!(SpoolKey::parse(&small.file_name()), Some(small));
        assert_eq!(SpoolKey::parse(&large.file_name()), Some(large));
        assert!(small.file_name() < large.file_name());
        for other in [
            "manifest.json",
            "9-x.json",
            &temporary_name(&small.file_name()),
        ] {
            assert_eq!(SpoolKey::parse(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn statuses_come_back_in_order_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (PlaybackId::new(), PlaybackId::new());
        let (spool, held) = Spool::open(tmp.path()).await.unwrap();
        assert!(held.is_empty());
        let written = [
            Outgoing::new(status(a, 30, recording())),
            Outgoing::new(status(b, 20, recording())),
            Outgoing::new(status(
                a,
                1_000,
                StatusBody::Failed {
                    code: camrec_shared::messages::FailureCode::NoMedia,
                    message: "nothing".into(),
                },
            )),
        ];
        for m in &written {
            spool.put(m).await.unwrap();
        }
        spool.remove(written[1].key).await.unwrap();
        spool.remove(written[1].key).await.unwrap();

        let (_, held) = Spool::open(tmp.path()).await.unwrap();
        let keys: Vec<SpoolKey> = held.iter().map(|m| m.key).collect();
        assert_eq!(keys, [written[0].key, written[2].key]);
        let back = &held[1];
        assert_eq!(
            back.payload, written[2].payload,
            "the bytes as they were spooled"
        );
        assert_eq!(back.msg_id, format!("{a}:1000"));
        assert!(back
            .subject
            .starts_with(&format!("playback.{}.", StatusKind::Failed.as_token())));
    }

    #[tokio::test]
    async fn writes_leave_no_temporary_file_and_interrupted_ones_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(tmp.path()).await.unwrap();
        let m = Outgoing::new(status(PlaybackId::new(), 5, recording()));
        spool.put(&m).await.unwrap();
        let dir = tmp.path().join(SPOOL_DIR);
        assert_eq!(names(&dir), [m.key.file_name()]);

        // A crash between the temporary file and the rename, and a file that is not a status.
        let torn = SpoolKey {
            seq: 6,
            playback_id: m.key.playback_id,
        };
        std::fs::write(dir.join(temporary_name(&torn.file_name())), b"{\"schema").unwrap();
        let garbage = SpoolKey {
            seq: 7,
            playback_id: m.key.playback_id,
        };
        std::fs::write(dir.join(garbage.file_name()), b"not json").unwrap();

        let (_, held) = Spool::open(tmp.path()).await.unwrap();
        assert_eq!(held.iter().map(|m| m.key).collect::<Vec<_>>(), [m.key]);
        let unreadable = garbage.file_name().replace(".json", ".unreadable");
        assert_eq!(names(&dir), [m.key.file_name(), unreadable]);
    }
}
