//! The clip's MP4 assembled in object storage while it is recorded, so it is ready about as soon
//! as the event ends, whatever its length (ADR 0021).
//!
//! The clip is one fragmented MP4: a front of fixed size ([`HEADER_SIZE`]: `ftyp`, `moov` with
//! the clip's duration, a `free` pad, then per track a `sidx` with an entry per segment), then
//! the fragments of the recording's segments one after another ([`Assembler`]). It goes up as an
//! S3/R2 multipart upload of equal parts: part 1 is the front plus the first media bytes, every
//! next part the media bytes that follow. Because the front's size is fixed, every part but the
//! first can be sent as soon as its bytes are recorded ([`ClipStream::push`]); at the end only the
//! first part (written last, when the duration and index are known, from the segments on disk)
//! and the short tail remain, then the upload is completed ([`ClipStream::finish`]).
//!
//! Only one capture run can be assembled this way: all segments share one init section and
//! their decode times run on. A recording whose camera reconnected (another init, a break in the
//! timeline), one continued from another worker, or one recovered after a crash is joined by
//! FFmpeg at the end instead ([`crate::finalize`]), as is every clip on local storage.

use bytes::Bytes;
use camrec_shared::storage::ObjectKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::mp4::{self, Init, Mp4Error, Reference, Span, TrackIndex};
use crate::upload::{Parts, UploadError, Uploader};
use object_store::multipart::PartId;

/// The size of every part of the clip's upload but the last: the smallest S3 and R2 take, so
/// that what is left to send when the event ends (the first part, the tail) is as small as it
/// can be.
pub const CLIP_PART_SIZE: usize = 5 * 1024 * 1024;

/// How many of the media bytes go into the first part, after the front.
const FIRST_SHARE: u64 = (CLIP_PART_SIZE - HEADER_SIZE) as u64;

/// The size of the clip's front: room for `ftyp`, `moov` and a `sidx` of about 5,000 entries
/// (segments are grouped per entry beyond that).
pub const HEADER_SIZE: usize = 64 * 1024;

/// One segment joined into the clip.
#[derive(Clone, Debug)]
struct Entry {
    path: PathBuf,
    first_sequence: u32,
    moofs: u32,
    media_len: u64,
    /// Where each track's samples lie, in the capture's timeline; a duration is corrected to
    /// the next segment's start once that is joined.
    spans: Vec<Span>,
}

impl Entry {
    fn span(&self, track: u32) -> Option<Span> {
        self.spans.iter().copied().find(|s| s.track == track)
    }
}

/// The segments joined so far: what the clip's bytes are, without holding them.
#[derive(Clone, Debug)]
pub struct Assembler {
    init_bytes: Vec<u8>,
    init: Init,
    /// The first segment's earliest track start, `(ticks, timescale)`: subtracted from every
    /// track's decode times so the clip starts at 0 with its tracks in sync.
    origin: (u64, u32),
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
        let scan = mp4::scan(file, &init)?;
        let origin = scan
            .spans
            .iter()
            .filter_map(|s| {
                let t = init.tracks.iter().find(|t| t.id == s.track)?;
                Some((s.start, t.timescale))
            })
            .min_by(|a, b| {
                (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
            })
            .ok_or_else(|| Mp4Error("a segment without samples".into()))?;
        let mut a = Assembler {
            init_bytes,
            init,
            origin,
            entries: Vec::new(),
            media_len: 0,
        };
        let media = a.join(path, file, scan)?;
        Ok((a, media))
    }

    /// Joins the next segment: it must share the clip's init section and go on where the last
    /// one's video ended (within half a second). Returns its media bytes.
    pub fn push(&mut self, path: &Path, file: &[u8]) -> Result<Vec<u8>, Mp4Error> {
        let scan = mp4::scan(file, &self.init)?;
        if file[scan.init.clone()] != self.init_bytes[..] {
            return Err(Mp4Error(
                "the init section changed (the camera reconnected)".into(),
            ));
        }
        let video = self.init.video();
        let start = scan.span(video.id).map(|s| s.start);
        let last = self.entries.last().expect("start joined one");
        let end = last.span(video.id).map(|v| v.start + v.duration);
        match (start, end) {
            (Some(s), Some(end)) if s.abs_diff(end) <= u64::from(video.timescale / 2) => {}
            _ => return Err(Mp4Error("a break in the capture's timeline".into())),
        }
        self.join(path, file, scan)
    }

    fn join(&mut self, path: &Path, file: &[u8], scan: mp4::Scan) -> Result<Vec<u8>, Mp4Error> {
        if scan.span(self.init.video().id).is_none() {
            return Err(Mp4Error("a segment without video".into()));
        }
        if let Some(last) = self.entries.last_mut() {
            // The next segment's start is more exact than the muxer's guess of the last
            // sample's duration.
            for span in &mut last.spans {
                if let Some(next) = scan.span(span.track) {
                    if next.start > span.start {
                        span.duration = next.start - span.start;
                    }
                }
            }
        }
        let first_sequence = self
            .entries
            .last()
            .map_or(1, |e| e.first_sequence + e.moofs);
        let media = mp4::media(file, &scan, first_sequence, |t| self.shift(t));
        self.entries.push(Entry {
            path: path.to_path_buf(),
            first_sequence,
            moofs: scan.moofs,
            media_len: scan.media_len(),
            spans: scan.spans.clone(),
        });
        self.media_len += scan.media_len();
        Ok(media)
    }

    /// What is subtracted from `track`'s decode times.
    fn shift(&self, track: u32) -> u64 {
        let timescale = self
            .init
            .tracks
            .iter()
            .find(|t| t.id == track)
            .map_or(1, |t| t.timescale);
        let (ticks, scale) = self.origin;
        (u128::from(ticks) * u128::from(timescale) / u128::from(scale)) as u64
    }

    /// The segment files joined, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|e| e.path.as_path())
    }

    /// The clip's length in bytes: front and media.
    pub fn size(&self) -> u64 {
        HEADER_SIZE as u64 + self.media_len
    }

    /// The bytes of media joined so far.
    pub fn media_len(&self) -> u64 {
        self.media_len
    }

    /// The clip's duration: its video track's.
    pub fn duration_sec(&self) -> f64 {
        let video = self.init.video();
        self.track_duration(video.id) as f64 / f64::from(video.timescale)
    }

    fn track_duration(&self, track: u32) -> u64 {
        self.entries
            .iter()
            .filter_map(|e| e.span(track))
            .map(|s| s.duration)
            .sum()
    }

    /// The clip's front: `ftyp`, `moov` with the duration, and an index per track, padded to
    /// [`HEADER_SIZE`]. Segments share an index entry when there are too many for the front.
    pub fn header(&self) -> Result<Vec<u8>, Mp4Error> {
        let tracks = self.init.tracks.len().max(1);
        let room = HEADER_SIZE.saturating_sub(self.init_bytes.len() + 20 + 8 + 32 * tracks)
            / (12 * tracks);
        let indexes: Vec<TrackIndex> = self
            .init
            .tracks
            .iter()
            .map(|t| {
                let each: Vec<Reference> = self
                    .entries
                    .iter()
                    .map(|e| Reference {
                        size: e.media_len,
                        duration: e.span(t.id).map_or(0, |s| s.duration),
                    })
                    .collect();
                let first = self.entries.iter().find_map(|e| e.span(t.id));
                TrackIndex {
                    track: t.id,
                    timescale: t.timescale,
                    start: first.map_or(0, |s| s.start.saturating_sub(self.shift(t.id))),
                    references: grouped(&each, room),
                }
            })
            .collect();
        let duration = self.track_duration(self.init.video().id);
        mp4::header(
            &self.init_bytes,
            &self.init,
            duration,
            &indexes,
            HEADER_SIZE,
        )
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
            let scan = mp4::scan(&file, &self.init)?;
            let media = mp4::media(&file, &scan, e.first_sequence, |t| self.shift(t));
            if media.len() as u64 != e.media_len {
                return Err(ReplayError::Changed(e.path.clone()));
            }
            let take = (limit - given).min(media.len() as u64) as usize;
            each(&media[..take]);
            given += take as u64;
        }
        Ok(())
    }
}

/// `each` (one index entry per segment) in at most `room` entries: neighbours share one when
/// there are more.
fn grouped(each: &[Reference], room: usize) -> Vec<Reference> {
    let per = each
        .len()
        .div_ceil(room.clamp(1, usize::from(u16::MAX)))
        .max(1);
    each.chunks(per)
        .map(|group| Reference {
            size: group.iter().map(|r| r.size).sum(),
            duration: group.iter().map(|r| r.duration).sum(),
        })
        .collect()
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
    assembler: Option<Assembler>,
    /// Media bytes recorded past the first part's share and the parts sent.
    pending: Vec<u8>,
    parts: Option<Parts>,
    /// The parts sent, from the second on.
    sent: Vec<PartId>,
    /// Why the clip cannot be assembled while it records: FFmpeg joins it at the end.
    broken: Option<String>,
}

impl ClipStream {
    /// A stream for the clip at `key` (only where the store has multipart uploads: S3, R2).
    pub fn new(uploader: Uploader, key: ObjectKey) -> Self {
        Self {
            uploader,
            key,
            assembler: None,
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
        let before = self.assembler.as_ref().map_or(0, |a| a.media_len());
        let media = match &mut self.assembler {
            None => {
                let (a, media) = Assembler::start(path, &file).map_err(|e| e.to_string())?;
                self.assembler = Some(a);
                media
            }
            Some(a) => a.push(path, &file).map_err(|e| e.to_string())?,
        };
        let skip = FIRST_SHARE.saturating_sub(before).min(media.len() as u64) as usize;
        self.pending.extend_from_slice(&media[skip..]);
        let size = CLIP_PART_SIZE;
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
        let header = a.header().map_err(|e| e.to_string())?;
        let size_bytes = a.size();
        let hashing = {
            let (a, header) = (a.clone(), header.clone());
            tokio::task::spawn_blocking(move || {
                let mut hasher = Sha256::new();
                hasher.update(&header);
                a.replay(u64::MAX, |m| hasher.update(m))
                    .map(|()| hex::encode(hasher.finalize()))
            })
        };
        let front = match self.parts {
            None => u64::MAX,
            Some(_) => FIRST_SHARE,
        };
        let first = {
            let a = a.clone();
            tokio::task::spawn_blocking(move || {
                let mut first = header;
                a.replay(front, |m| first.extend_from_slice(m))
                    .map(|()| first)
            })
        };
        let first = first
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let first_at = timer.elapsed();
        let stored = match &self.parts {
            None => self.uploader.put_verified(&self.key, first.into()).await,
            Some(parts) => {
                let tail = std::mem::take(&mut self.pending);
                let tail_idx = 1 + self.sent.len();
                let (first, tail) =
                    tokio::join!(self.uploader.put_part(parts, 0, first.into()), async {
                        match tail.is_empty() {
                            true => Ok(None),
                            false => self
                                .uploader
                                .put_part(parts, tail_idx, tail.into())
                                .await
                                .map(Some),
                        }
                    });
                match (first, tail) {
                    (Ok(first), Ok(tail)) => {
                        let mut done = vec![first];
                        done.append(&mut self.sent);
                        done.extend(tail);
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

    #[test]
    fn an_index_with_more_segments_than_room_groups_neighbours() {
        let each: Vec<Reference> = (0..10u64)
            .map(|i| Reference {
                size: 100 + i,
                duration: 12800,
            })
            .collect();
        assert_eq!(grouped(&each, 16), each, "room for all: one entry each");
        let two = grouped(&each, 5);
        assert_eq!(two.len(), 5);
        assert_eq!(
            two[0],
            Reference {
                size: 201,
                duration: 25600
            }
        );
        let three = grouped(&each, 4);
        assert_eq!(three.len(), 4, "10 segments in entries of 3, 3, 3 and 1");
        assert_eq!(
            three.iter().map(|r| r.size).sum::<u64>(),
            each.iter().map(|r| r.size).sum::<u64>()
        );
        assert_eq!(
            three[3],
            Reference {
                size: 109,
                duration: 12800
            }
        );
        assert!(grouped(&[], 4).is_empty());
    }
}
