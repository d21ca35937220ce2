//! The clip's MP4 assembled in object storage while it is recorded, so it is ready about as soon
//! as the event ends, whatever its length (ADR 0022, superseding 0021).
//!
//! The clip is one faststart MP4, as a camera's "download" gives and every player seeks in:
//! `ftyp`, the `moov` whose sample tables list every sample and where it lies
//! ([`crate::mp4::moov::Tables`]), a `free` pad, then one `mdat` holding every sample of the
//! recording's segments (their fragments' `mdat` bodies one after another, the `moof` boxes left
//! out). It goes up as an S3/R2 multipart upload of equal parts: part 1 is the front plus the
//! first media bytes, every next part the media bytes that follow, sent as soon as they are
//! recorded ([`ClipStream::push`]). For that, the front's size is fixed when the media first fill
//! a part: room for the `moov` of the longest clip the recording can make, at the rate its tables
//! have grown so far ([`Assembler::reserve`]). At the end only part 1 (written last, with the
//! `moov`, the media read again from the segments on disk) and the tail of the media remain,
//! then the upload is completed ([`ClipStream::finish`]). A clip under one part is one PUT with
//! a front of exactly what it needs.
//!
//! Only one capture run can be assembled this way: all segments share one init section and
//! their decode times run on. A recording whose camera reconnected (another init, a break in the
//! timeline), one continued from another worker, or one recovered after a crash is joined by
//! FFmpeg at the end instead ([`crate::finalize`]), as is every clip on local storage.

use bytes::Bytes;
use camrec_shared::storage::ObjectKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::mp4::fragments::{fragments, Fragment};
use crate::mp4::moov::Tables;
use crate::mp4::{self, Init, Mp4Error};
use crate::upload::{Parts, UploadError, Uploader};
use object_store::multipart::PartId;

/// The size of every part of the clip's upload but the last: the smallest S3 and R2 take, so
/// that what is left to send when the event ends (the first part, the tail) is as small as it
/// can be.
pub const CLIP_PART_SIZE: usize = 5 * 1024 * 1024;

/// The `mdat` header: 64-bit size.
const MDAT_HEADER: usize = 16;
/// The header of the `free` box that pads a reserved front.
const FREE_HEADER: usize = 8;
/// The most room reserved for the `moov` at the front: about 20 minutes of 25 fps video with
/// audio (its tables take about 440 bytes a second). The `moov` of a longer clip goes after the media instead (still one MP4 that seeks).
pub const RESERVE_MAX: usize = 512 * 1024;

/// How a clip is laid out around its media ([`Assembler::layout`]).
#[derive(Clone, Debug)]
pub struct Layout {
    pub front: Vec<u8>,
    pub back: Vec<u8>,
    pub size: u64,
}

/// One segment joined into the clip.
#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    media_len: u64,
}

/// The segments joined so far: what the clip's bytes are, without holding them.
#[derive(Clone, Debug)]
pub struct Assembler {
    /// The capture's init section (`ftyp`, `moov`).
    init_bytes: Vec<u8>,
    init: Init,
    /// What precedes the `moov` in the init section: the clip's `ftyp`.
    ftyp: Vec<u8>,
    tables: Tables,
    entries: Vec<Entry>,
    media_len: u64,
}

impl Assembler {
    /// Starts a clip with its first segment; returns the segment's media bytes too.
    pub fn start(path: &Path, file: &[u8]) -> Result<(Self, Vec<u8>), Mp4Error> {
        let Some(len) = mp4::init_len(file) else {
            return Err(Mp4Error("no moof box".into()));
        };
        let init_bytes = file[..len as usize].to_vec();
        let init = Init::parse(&init_bytes)?;
        let ftyp: Vec<u8> = mp4::boxes(&init_bytes, 0..init_bytes.len())?
            .iter()
            .take_while(|b| &b.kind != b"moov")
            .flat_map(|b| init_bytes[b.start..b.end].to_vec())
            .collect();
        let mut a = Assembler {
            tables: Tables::new(&init),
            init_bytes,
            init,
            ftyp,
            entries: Vec::new(),
            media_len: 0,
        };
        let media = a.join(path, file)?;
        Ok((a, media))
    }

    /// Joins the next segment: it must share the clip's init section and go on where the last
    /// one's video ended (within half a second). Returns its media bytes.
    pub fn push(&mut self, path: &Path, file: &[u8]) -> Result<Vec<u8>, Mp4Error> {
        let len = self.init_bytes.len();
        if mp4::init_len(file).map(|l| l as usize) != Some(len) || file[..len] != self.init_bytes {
            return Err(Mp4Error(
                "the init section changed (the camera reconnected)".into(),
            ));
        }
        self.join(path, file)
    }

    fn join(&mut self, path: &Path, file: &[u8]) -> Result<Vec<u8>, Mp4Error> {
        let found = fragments(file, &self.init)?;
        let video = self.init.video();
        let Some(first) = found
            .iter()
            .flat_map(|f| &f.runs)
            .find(|r| r.track == video.id)
        else {
            return Err(Mp4Error("a segment without video".into()));
        };
        if let Some(next) = self.tables.next_decode_time(video.id) {
            if first.decode_time.abs_diff(next) > u64::from(video.timescale / 2) {
                return Err(Mp4Error("a break in the capture's timeline".into()));
            }
        }
        let mut media = Vec::new();
        for f in &found {
            let at = self.media_len + media.len() as u64;
            for run in &f.runs {
                self.tables
                    .push(run, at + (run.data.start - f.mdat.start) as u64)?;
            }
            media.extend_from_slice(&file[f.mdat.clone()]);
        }
        self.entries.push(Entry {
            path: path.to_path_buf(),
            media_len: media.len() as u64,
        });
        self.media_len += media.len() as u64;
        Ok(media)
    }

    /// The segment files joined, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|e| e.path.as_path())
    }

    /// The bytes of media joined so far.
    pub fn media_len(&self) -> u64 {
        self.media_len
    }

    /// The clip's duration: its video track's.
    pub fn duration_sec(&self) -> f64 {
        let video = self.init.video();
        self.tables.duration(video.id) as f64 / f64::from(video.timescale)
    }

    /// The size of the front to reserve for a clip that may last `longest`: `ftyp`, room for a
    /// `moov` whose tables grow on at the rate they have so far (with a fifth and 4 KiB to
    /// spare) but at most [`RESERVE_MAX`], and the `mdat` header.
    pub fn reserve(&self, longest: std::time::Duration) -> Result<usize, Mp4Error> {
        let empty = Tables::new(&self.init)
            .moov(&self.init_bytes, &self.init, 0)?
            .len();
        let now = self.tables.moov(&self.init_bytes, &self.init, 0)?.len();
        let per_sec = (now - empty) as f64 / self.duration_sec().max(0.5);
        let room = empty + (per_sec * longest.as_secs_f64() * 1.2) as usize + 4096;
        Ok(self.ftyp.len() + room.min(RESERVE_MAX).max(now + FREE_HEADER) + MDAT_HEADER)
    }

    /// The clip as it is to be stored: the bytes before the media, those after, and the whole
    /// size. With `reserved: None`, `ftyp`, the `moov` (every sample so far) and the `mdat`
    /// header (faststart). With a front of `reserved` bytes, the same with a `free` pad up to
    /// it, or, when the `moov` has outgrown it, the front all `free` and the `moov` after the
    /// media.
    pub fn layout(&self, reserved: Option<usize>) -> Result<Layout, Mp4Error> {
        let len = self.tables.moov(&self.init_bytes, &self.init, 0)?.len();
        let needed = self.ftyp.len() + len + MDAT_HEADER;
        let size = reserved.unwrap_or(needed);
        let fits = size == needed || size >= needed + FREE_HEADER;
        let moov = self
            .tables
            .moov(&self.init_bytes, &self.init, size as u64)?;
        let mut front = self.ftyp.clone();
        let mut back = Vec::new();
        match fits {
            true => front.extend(moov),
            false => back = moov,
        }
        let pad = (size - MDAT_HEADER)
            .checked_sub(front.len())
            .filter(|&p| p == 0 || p >= FREE_HEADER)
            .ok_or_else(|| Mp4Error(format!("a front of {size} bytes leaves no room")))?;
        if pad > 0 {
            front.extend_from_slice(&(pad as u32).to_be_bytes());
            front.extend_from_slice(b"free");
            front.resize(front.len() + pad - FREE_HEADER, 0);
        }
        front.extend_from_slice(&1u32.to_be_bytes());
        front.extend_from_slice(b"mdat");
        front.extend_from_slice(&(MDAT_HEADER as u64 + self.media_len).to_be_bytes());
        debug_assert_eq!(front.len(), size);
        let size = (size + back.len()) as u64 + self.media_len;
        Ok(Layout { front, back, size })
    }

    /// Calls `each` with the clip's media bytes, segment by segment, read again from the files
    /// (they are what [`Assembler::start`] and [`Assembler::push`] returned), until `limit`
    /// bytes have been given.
    pub fn replay(&self, limit: u64, mut each: impl FnMut(&[u8])) -> Result<(), ReplayError> {
        let mut given = 0u64;
        for e in &self.entries {
            if given >= limit {
                break;
            }
            let file = std::fs::read(&e.path)?;
            let found: Vec<Fragment> = fragments(&file, &self.init)?;
            let len: usize = found.iter().map(|f| f.mdat.len()).sum();
            if len as u64 != e.media_len {
                return Err(ReplayError::Changed(e.path.clone()));
            }
            for f in &found {
                let take = (limit - given).min(f.mdat.len() as u64) as usize;
                each(&file[f.mdat.start..f.mdat.start + take]);
                given += take as u64;
                if given >= limit {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Why the clip's bytes could not be read again.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("segment file: {0}")]
    Read(#[from] std::io::Error),
    #[error("{0}")]
    Mp4(#[from] Mp4Error),
    #[error("segment {0} changed since it was joined")]
    Changed(PathBuf),
}

/// What [`ClipStream::finish`] stored at the clip's key.
#[derive(Clone, Debug, PartialEq)]
pub struct Streamed {
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_sec: f64,
}

/// The clip's upload while it records, fed each segment of the recording in order.
pub struct ClipStream {
    uploader: Uploader,
    key: ObjectKey,
    /// The longest the clip can be: its front is reserved for an index that long.
    longest: std::time::Duration,
    assembler: Option<Assembler>,
    /// The front's size, fixed once the media fill the first part.
    front: Option<usize>,
    /// Media bytes not yet sent: all of them until the front is fixed, then those past the
    /// first part's share and the parts sent.
    pending: Vec<u8>,
    parts: Option<Parts>,
    /// The parts sent, from the second on.
    sent: Vec<PartId>,
    /// Why the clip cannot be assembled while it records: FFmpeg joins it at the end.
    broken: Option<String>,
}

impl ClipStream {
    /// A stream for the clip at `key` (only where the store has multipart uploads: S3, R2)
    /// that lasts at most `longest`.
    pub fn new(uploader: Uploader, key: ObjectKey, longest: std::time::Duration) -> Self {
        Self {
            uploader,
            key,
            longest,
            assembler: None,
            front: None,
            pending: Vec::new(),
            parts: None,
            sent: Vec::new(),
            broken: None,
        }
    }

    /// Joins the segment at `path`; sends every part it completes.
    pub async fn push(&mut self, path: &Path) {
        if self.broken.is_some() {
            return;
        }
        if let Err(why) = self.try_push(path).await {
            self.give_up(why).await;
        }
    }

    async fn try_push(&mut self, path: &Path) -> Result<(), String> {
        let file = tokio::fs::read(path)
            .await
            .map_err(|e| format!("segment file: {e}"))?;
        let media = match &mut self.assembler {
            None => {
                let (a, media) = Assembler::start(path, &file).map_err(|e| e.to_string())?;
                self.assembler = Some(a);
                media
            }
            Some(a) => a.push(path, &file).map_err(|e| e.to_string())?,
        };
        self.pending.extend_from_slice(&media);
        let size = CLIP_PART_SIZE;
        if self.front.is_none() {
            let a = self.assembler.as_ref().expect("started above");
            if self.pending.len() < size {
                return Ok(());
            }
            // The media fill the first part whatever the front: fix the front, and keep the
            // media past the first part's share.
            let front = a.reserve(self.longest).map_err(|e| e.to_string())?;
            self.front = Some(front);
            self.pending.drain(..size - front);
        }
        while self.pending.len() >= size {
            if self.parts.is_none() {
                self.parts = match self.uploader.begin_parts(&self.key).await {
                    Ok(Some(parts)) => Some(parts),
                    Ok(None) => return Err("the store has no multipart uploads".into()),
                    Err(e) => return Err(e.to_string()),
                };
            }
            let parts = self.parts.as_ref().expect("begun above");
            let chunk = Bytes::copy_from_slice(&self.pending[..size]);
            let part = self
                .uploader
                .put_part(parts, 1 + self.sent.len(), chunk)
                .await
                .map_err(|e| e.to_string())?;
            self.sent.push(part);
            self.pending.drain(..size);
        }
        Ok(())
    }

    async fn give_up(&mut self, why: String) {
        tracing::info!(key = %self.key, reason = %why, "the clip is joined at the end instead");
        self.abandon_parts().await;
        self.pending = Vec::new();
        self.broken = Some(why);
    }

    async fn abandon_parts(&mut self) {
        if let Some(parts) = self.parts.take() {
            self.uploader.abort_parts(&parts).await;
        }
    }

    /// Drops what was sent (the recording is not finished here).
    pub async fn abandon(mut self) {
        self.abandon_parts().await;
    }

    /// Completes the clip from the recording's segment files `local`, in order (those the
    /// stream has not had yet are joined first): the first part (front and first media bytes,
    /// read again from the files) and the tail are sent and the upload completed, or, for a
    /// clip that never filled a part, the whole clip is put at once. The error says why the
    /// clip must be joined by FFmpeg instead; nothing is left at the key then.
    pub async fn finish(mut self, local: &[PathBuf]) -> Result<Streamed, String> {
        let joined: Vec<std::ffi::OsString> = self
            .assembler
            .iter()
            .flat_map(|a| a.paths())
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        let names: Vec<std::ffi::OsString> = local
            .iter()
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        if !names.starts_with(&joined) {
            self.give_up("the recording's segments differ from those joined".into())
                .await;
        }
        for path in local.iter().skip(joined.len()) {
            self.push(path).await;
        }
        if let Some(why) = self.broken.take() {
            return Err(why);
        }
        let Some(a) = self.assembler.take() else {
            return Err("no segment".into());
        };
        let result = self.store(&a).await;
        if result.is_err() {
            self.abandon_parts().await;
        }
        result
    }

    async fn store(&mut self, a: &Assembler) -> Result<Streamed, String> {
        let timer = std::time::Instant::now();
        let reserved = match self.parts {
            None => None,
            Some(_) => self.front,
        };
        let Layout {
            front,
            back,
            size: size_bytes,
        } = a.layout(reserved).map_err(|e| e.to_string())?;
        let hashing = {
            let (a, front, back) = (a.clone(), front.clone(), back.clone());
            tokio::task::spawn_blocking(move || {
                let mut hasher = Sha256::new();
                hasher.update(&front);
                a.replay(u64::MAX, |m| hasher.update(m))?;
                hasher.update(&back);
                Ok::<_, ReplayError>(hex::encode(hasher.finalize()))
            })
        };
        let share = match self.parts {
            None => u64::MAX,
            Some(_) => (CLIP_PART_SIZE - front.len()) as u64,
        };
        let first = {
            let a = a.clone();
            tokio::task::spawn_blocking(move || {
                let mut first = front;
                a.replay(share, |m| first.extend_from_slice(m))
                    .map(|()| first)
            })
        };
        let mut first = first
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let first_at = timer.elapsed();
        let stored = match &self.parts {
            None => {
                first.extend_from_slice(&back);
                self.uploader.put_verified(&self.key, first.into()).await
            }
            Some(parts) => {
                // The rest of the media (and a moov that did not fit the front): in parts of
                // the same size, the last one shorter.
                let mut tail = std::mem::take(&mut self.pending);
                tail.extend_from_slice(&back);
                let from = 1 + self.sent.len();
                let tails = tail.chunks(CLIP_PART_SIZE).enumerate().map(|(i, chunk)| {
                    self.uploader
                        .put_part(parts, from + i, Bytes::copy_from_slice(chunk))
                });
                let (first, tails) = tokio::join!(
                    self.uploader.put_part(parts, 0, first.into()),
                    futures::future::try_join_all(tails)
                );
                match (first, tails) {
                    (Ok(first), Ok(tails)) => {
                        let mut done = vec![first];
                        done.append(&mut self.sent);
                        done.extend(tails);
                        self.uploader.complete_parts(parts, done, size_bytes).await
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
        };
        stored.map_err(|e: UploadError| e.to_string())?;
        self.parts = None;
        let stored_at = timer.elapsed();
        let sha256 = hashing
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        tracing::debug!(
            key = %self.key,
            bytes = size_bytes,
            front_bytes = reserved,
            index_at_the_end = !back.is_empty(),
            first_part_ms = first_at.as_millis() as u64,
            stored_ms = stored_at.as_millis() as u64,
            hashed_ms = timer.elapsed().as_millis() as u64,
            "assembled clip completed"
        );
        Ok(Streamed {
            size_bytes,
            sha256,
            duration_sec: a.duration_sec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` segments of 1 s as the capture writes them (H.264 with a keyframe a second and AAC,
    /// fragments of at most 0.2 s, decode times running on), in `dir`.
    fn segments(dir: &Path, n: usize) -> Vec<PathBuf> {
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &n.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .args(["-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args([
                "-f",
                "segment",
                "-segment_time",
                "1",
                "-segment_format",
                "mp4",
            ])
            .args([
                "-segment_format_options",
                crate::ffmpeg::SEGMENT_FORMAT_OPTIONS,
            ])
            .arg(dir.join("s%03d.mp4"))
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        assert_eq!(paths.len(), n);
        paths
    }

    fn ffprobe(path: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error"])
            .args(args)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn segments_become_one_faststart_mp4_with_every_sample_in_its_index() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = segments(tmp.path(), 4);
        let first = std::fs::read(&paths[0]).unwrap();
        let (mut a, mut media) = Assembler::start(&paths[0], &first).unwrap();
        for p in &paths[1..] {
            media.extend(a.push(p, &std::fs::read(p).unwrap()).unwrap());
        }
        assert_eq!(a.media_len(), media.len() as u64);
        assert!(
            (a.duration_sec() - 4.0).abs() < 0.05,
            "{}",
            a.duration_sec()
        );
        let mut replayed = Vec::new();
        a.replay(u64::MAX, |m| replayed.extend_from_slice(m))
            .unwrap();
        assert_eq!(replayed, media, "the files give the same bytes again");
        let mut some = Vec::new();
        a.replay(1000, |m| some.extend_from_slice(m)).unwrap();
        assert_eq!(some, media[..1000]);

        // Exactly what the front needs (a clip sent in one PUT); a reserved front with a pad
        // (one sent in parts); a front the index outgrew, which then follows the media: the
        // same samples, played the same way.
        let exact = a.layout(None).unwrap();
        assert!(exact.back.is_empty());
        assert_eq!(exact.size, exact.front.len() as u64 + media.len() as u64);
        let reserved = a.reserve(std::time::Duration::from_secs(60)).unwrap();
        assert!(
            reserved > exact.front.len() + 8,
            "{reserved} for {}",
            exact.front.len()
        );
        let padded = a.layout(Some(reserved)).unwrap();
        assert_eq!((padded.front.len(), padded.back.len()), (reserved, 0));
        let outgrown = a.layout(Some(exact.front.len() - 1)).unwrap();
        assert_eq!(outgrown.front.len(), exact.front.len() - 1);
        assert!(
            a.layout(Some(MDAT_HEADER + 1)).is_err(),
            "not even room for the ftyp"
        );
        for (layout, kinds) in [
            (exact, vec![*b"ftyp", *b"moov", *b"mdat"]),
            (padded, vec![*b"ftyp", *b"moov", *b"free", *b"mdat"]),
            (outgrown, vec![*b"ftyp", *b"free", *b"mdat", *b"moov"]),
        ] {
            let clip = [layout.front, media.clone(), layout.back].concat();
            assert_eq!(clip.len() as u64, layout.size);
            let found: Vec<[u8; 4]> = mp4::boxes(&clip, 0..clip.len())
                .unwrap()
                .iter()
                .map(|b| b.kind)
                .collect();
            assert_eq!(found, kinds);
            plays_whole(tmp.path(), &clip);
        }
        // A clip that can run an hour reserves at most RESERVE_MAX for its index.
        let hour = a.reserve(std::time::Duration::from_secs(3600)).unwrap();
        assert!(hour <= RESERVE_MAX + 100, "{hour}");
    }

    /// Plays `clip` in FFmpeg: every frame, keyframes marked, audio as long as the video, and
    /// no decoding error.
    fn plays_whole(dir: &Path, clip: &[u8]) {
        let out = dir.join("clip.mp4");
        std::fs::write(&out, clip).unwrap();
        // Every frame, in order, decodable; audio and video as long as the segments.
        let counted = ffprobe(
            &out,
            &[
                "-select_streams",
                "v:0",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames,nb_frames",
                "-of",
                "csv=p=0",
            ],
        );
        assert_eq!(
            counted, "100,100",
            "4 s at 25 fps, all in the index and decoded"
        );
        let keyframes = ffprobe(
            &out,
            &[
                "-select_streams",
                "v:0",
                "-skip_frame",
                "nokey",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
            ],
        );
        assert_eq!(keyframes, "4", "a keyframe a second, marked in stss");
        let audio: f64 = ffprobe(
            &out,
            &[
                "-select_streams",
                "a:0",
                "-show_entries",
                "stream=duration",
                "-of",
                "csv=p=0",
            ],
        )
        .parse()
        .unwrap();
        assert!((audio - 4.0).abs() < 0.1, "audio {audio} s");
        // A decode of the whole file finds no error.
        let decode = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-xerror", "-i"])
            .arg(&out)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            decode.status.success() && decode.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&decode.stderr)
        );
    }

    #[test]
    fn another_init_section_or_a_break_in_the_timeline_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = segments(tmp.path(), 3);
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        let (mut a, _) = Assembler::start(&paths[0], &read(&paths[0])).unwrap();
        // Skipping a segment leaves a hole of a second in the decode times.
        let err = a.push(&paths[2], &read(&paths[2])).unwrap_err();
        assert!(err.0.contains("break"), "{err}");
        let mut other = read(&paths[1]);
        other[20] ^= 1;
        let err = a.push(&paths[1], &other).unwrap_err();
        assert!(err.0.contains("init section"), "{err}");
        a.push(&paths[1], &read(&paths[1])).unwrap();
    }
}
