//! The few ISO-BMFF (MP4) boxes the clip assembly reads and writes, in plain byte code.
//!
//! A capture segment is a fragmented MP4: an init section (`ftyp`, `moov` with `mvex`), then
//! fragments (`moof` + `mdat`), and FFmpeg closes it with an `mfra` index. [`init_len`] finds
//! where the init section ends (what the live playlist's `EXT-X-MAP` covers); [`Init::parse`] reads
//! the tracks of an init section; [`scan`] finds a segment's fragments, the decode time (`tfdt`)
//! each track starts at and how long its samples last; [`media`] copies the fragments out with
//! their sequence numbers (`mfhd`) and decode times rewritten, so segments of one capture run
//! follow each other in one file. [`header`] writes the front of that file, of a size fixed in
//! advance: `ftyp`, the `moov` with the clip's duration (`mehd`), a `free` pad, and a segment
//! index (`sidx`) per track that a player seeks with.

use std::ops::Range;

/// Why a file is not the fragmented MP4 the assembly expects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mp4: {0}")]
pub struct Mp4Error(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, Mp4Error> {
    Err(Mp4Error(what.into()))
}

/// One box: its type, where it starts and ends, and where its body (after the header) starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bx {
    pub kind: [u8; 4],
    pub start: usize,
    pub body: usize,
    pub end: usize,
}

/// The boxes of `data[range]`, in order; an error at a broken header.
pub fn boxes(data: &[u8], range: Range<usize>) -> Result<Vec<Bx>, Mp4Error> {
    let mut found = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let b = box_at(data, at, range.end)?;
        at = b.end;
        found.push(b);
    }
    Ok(found)
}

/// The box whose header starts at `at`, ending at or before `end`.
fn box_at(data: &[u8], at: usize, end: usize) -> Result<Bx, Mp4Error> {
    if at + 8 > end {
        return err("a truncated box header");
    }
    let size32 = be32(data, at)?;
    let kind: [u8; 4] = data[at + 4..at + 8].try_into().expect("4 bytes");
    let (size, header) = match size32 {
        0 => (end - at, 8),
        1 => (
            usize::try_from(be64(data, at + 8)?).unwrap_or(usize::MAX),
            16,
        ),
        n => (n as usize, 8),
    };
    match at.checked_add(size).filter(|&e| e <= end) {
        Some(box_end) if size >= header => Ok(Bx {
            kind,
            start: at,
            body: at + header,
            end: box_end,
        }),
        _ => err(format!("box {} overruns", String::from_utf8_lossy(&kind))),
    }
}

fn child(data: &[u8], parent: &Bx, kind: &[u8; 4]) -> Result<Option<Bx>, Mp4Error> {
    Ok(boxes(data, parent.body..parent.end)?
        .into_iter()
        .find(|b| &b.kind == kind))
}

fn be32(data: &[u8], at: usize) -> Result<u32, Mp4Error> {
    match data.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes(b.try_into().expect("4 bytes"))),
        None => err("a field past the end of its box"),
    }
}

fn be64(data: &[u8], at: usize) -> Result<u64, Mp4Error> {
    match data.get(at..at + 8) {
        Some(b) => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        None => err("a field past the end of its box"),
    }
}

/// The length of a fragmented MP4's initialization section: the offset of its first top-level
/// `moof` box. `None` when there is none or a box header is broken.
pub fn init_len(mp4: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at < mp4.len() {
        let b = box_at(mp4, at, mp4.len()).ok()?;
        if &b.kind == b"moof" {
            return u32::try_from(at).ok();
        }
        at = b.end;
    }
    None
}

/// The length of the part of a fragmented MP4 still being written that is whole: its init
/// section and every fragment (`moof` + `mdat`) written in full, up to the end of the last such
/// `mdat`. `None` while no fragment is whole (or a box header is broken).
pub fn whole_len(mp4: &[u8]) -> Option<usize> {
    let (mut at, mut moof, mut whole) = (0, false, None);
    while at + 8 <= mp4.len() {
        let Ok(b) = box_at(mp4, at, mp4.len()) else {
            // A box not yet written in full: what comes before it is all there is.
            break;
        };
        match &b.kind {
            b"moof" => moof = true,
            b"mdat" if moof => {
                whole = Some(b.end);
                moof = false;
            }
            _ => {}
        }
        at = b.end;
    }
    whole
}

/// One track of an init section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: u32,
    /// Ticks per second of the track's decode times.
    pub timescale: u32,
    /// `trex`'s default sample duration, for fragments that name none.
    pub default_duration: u32,
    pub video: bool,
}

/// What the assembly needs of an init section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    pub tracks: Vec<Track>,
    /// `mvhd`'s timescale, that of `mehd`.
    pub movie_timescale: u32,
}

impl Init {
    /// Reads `ftyp` + `moov` (the bytes before a segment's first `moof`).
    pub fn parse(init: &[u8]) -> Result<Init, Mp4Error> {
        let top = boxes(init, 0..init.len())?;
        let Some(moov) = top.iter().find(|b| &b.kind == b"moov") else {
            return err("no moov box");
        };
        let mut movie_timescale = 1000;
        let mut tracks = Vec::new();
        let mut trex = Vec::new();
        for b in boxes(init, moov.body..moov.end)? {
            match &b.kind {
                b"mvhd" => {
                    let wide = init.get(b.body) == Some(&1);
                    movie_timescale = be32(init, b.body + if wide { 20 } else { 12 })?;
                }
                b"trak" => tracks.push(track(init, &b)?),
                b"mvex" => {
                    for t in boxes(init, b.body..b.end)? {
                        if &t.kind == b"trex" {
                            trex.push((be32(init, t.body + 4)?, be32(init, t.body + 12)?));
                        }
                    }
                }
                _ => {}
            }
        }
        for t in &mut tracks {
            if let Some((_, d)) = trex.iter().find(|(id, _)| *id == t.id) {
                t.default_duration = *d;
            }
        }
        if !tracks.iter().any(|t| t.video) {
            return err("no video track");
        }
        Ok(Init {
            tracks,
            movie_timescale,
        })
    }

    /// The (first) video track.
    pub fn video(&self) -> &Track {
        self.tracks.iter().find(|t| t.video).expect("parse checked")
    }

    fn track(&self, id: u32) -> Result<&Track, Mp4Error> {
        match self.tracks.iter().find(|t| t.id == id) {
            Some(t) => Ok(t),
            None => err(format!("a fragment of track {id}, which the moov lacks")),
        }
    }
}

fn track(data: &[u8], trak: &Bx) -> Result<Track, Mp4Error> {
    let Some(tkhd) = child(data, trak, b"tkhd")? else {
        return err("a trak without tkhd");
    };
    let wide = data.get(tkhd.body) == Some(&1);
    let id = be32(data, tkhd.body + if wide { 20 } else { 12 })?;
    let Some(mdia) = child(data, trak, b"mdia")? else {
        return err("a trak without mdia");
    };
    let Some(mdhd) = child(data, &mdia, b"mdhd")? else {
        return err("a trak without mdhd");
    };
    let wide = data.get(mdhd.body) == Some(&1);
    let timescale = be32(data, mdhd.body + if wide { 20 } else { 12 })?;
    let video = match child(data, &mdia, b"hdlr")? {
        Some(h) => data.get(h.body + 8..h.body + 12) == Some(b"vide"),
        None => false,
    };
    if timescale == 0 {
        return err(format!("track {id} has timescale 0"));
    }
    Ok(Track {
        id,
        timescale,
        default_duration: 0,
        video,
    })
}

/// Where a track's samples lie in time, in one segment (in the track's timescale, as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub track: u32,
    /// The first fragment's `tfdt`.
    pub start: u64,
    /// The sum of the segment's sample durations.
    pub duration: u64,
}

/// A field [`media`] rewrites: an `mfhd` sequence number, or a `tfdt` of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Patch {
    Sequence { at: usize },
    DecodeTime { at: usize, wide: bool, track: u32 },
}

/// A segment's fragments, found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The init section: the bytes before the first `moof`.
    pub init: Range<usize>,
    /// From the first `moof` to the end of the last `mdat` (FFmpeg's closing `mfra` left out).
    pub media: Range<usize>,
    /// How many `moof` boxes: the sequence numbers the segment takes.
    pub moofs: u32,
    pub spans: Vec<Span>,
    patches: Vec<Patch>,
}

impl Scan {
    pub fn span(&self, track: u32) -> Option<Span> {
        self.spans.iter().copied().find(|s| s.track == track)
    }

    pub fn media_len(&self) -> u64 {
        (self.media.end - self.media.start) as u64
    }
}

/// Finds the fragments of the segment `file` whose init section reads as `init`.
pub fn scan(file: &[u8], init: &Init) -> Result<Scan, Mp4Error> {
    let top = boxes(file, 0..file.len())?;
    let Some(first) = top.iter().position(|b| &b.kind == b"moof") else {
        return err("no moof box");
    };
    let Some(last) = top.iter().rposition(|b| &b.kind == b"mdat") else {
        return err("no mdat box");
    };
    if last < first {
        return err("no mdat after the first moof");
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut patches = Vec::new();
    let mut moofs = 0;
    for moof in top[first..=last].iter().filter(|b| &b.kind == b"moof") {
        moofs += 1;
        for b in boxes(file, moof.body..moof.end)? {
            match &b.kind {
                b"mfhd" => patches.push(Patch::Sequence { at: b.body + 4 }),
                b"traf" => traf(file, &b, init, &mut spans, &mut patches)?,
                _ => {}
            }
        }
    }
    Ok(Scan {
        init: 0..top[first].start,
        media: top[first].start..top[last].end,
        moofs,
        spans,
        patches,
    })
}

fn traf(
    file: &[u8],
    traf: &Bx,
    init: &Init,
    spans: &mut Vec<Span>,
    patches: &mut Vec<Patch>,
) -> Result<(), Mp4Error> {
    let kids = boxes(file, traf.body..traf.end)?;
    let Some(tfhd) = kids.iter().find(|b| &b.kind == b"tfhd") else {
        return err("a traf without tfhd");
    };
    let flags = be32(file, tfhd.body)? & 0x00ff_ffff;
    let id = be32(file, tfhd.body + 4)?;
    let track = init.track(id)?;
    let mut at = tfhd.body + 8;
    if flags & 0x01 != 0 {
        return err("a tfhd with a base data offset (fragments cannot move)");
    }
    if flags & 0x02 != 0 {
        at += 4;
    }
    let default = if flags & 0x08 != 0 {
        be32(file, at)?
    } else {
        track.default_duration
    };
    let Some(tfdt) = kids.iter().find(|b| &b.kind == b"tfdt") else {
        return err("a traf without tfdt");
    };
    let wide = file.get(tfdt.body) == Some(&1);
    let start = if wide {
        be64(file, tfdt.body + 4)?
    } else {
        u64::from(be32(file, tfdt.body + 4)?)
    };
    patches.push(Patch::DecodeTime {
        at: tfdt.body + 4,
        wide,
        track: id,
    });
    let mut duration = 0u64;
    for trun in kids.iter().filter(|b| &b.kind == b"trun") {
        duration += trun_duration(file, trun, default)?;
    }
    match spans.iter_mut().find(|s| s.track == id) {
        Some(s) => s.duration += duration,
        None => spans.push(Span {
            track: id,
            start,
            duration,
        }),
    }
    Ok(())
}

/// The summed sample durations of one `trun`.
fn trun_duration(file: &[u8], trun: &Bx, default: u32) -> Result<u64, Mp4Error> {
    let flags = be32(file, trun.body)? & 0x00ff_ffff;
    let count = u64::from(be32(file, trun.body + 4)?);
    if flags & 0x100 == 0 {
        return Ok(count * u64::from(default));
    }
    let mut at = trun.body + 8;
    at += 4 * usize::from(flags & 0x01 != 0) + 4 * usize::from(flags & 0x04 != 0);
    let per_sample = 4 * [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count();
    let mut sum = 0u64;
    for _ in 0..count {
        sum += u64::from(be32(file, at)?);
        at += per_sample;
    }
    Ok(sum)
}

/// The fragments of `file` (as [`scan`] found them) with the sequence numbers counting on from
/// `first_sequence` and each track's decode times less `shift(track)`.
pub fn media(file: &[u8], scan: &Scan, first_sequence: u32, shift: impl Fn(u32) -> u64) -> Vec<u8> {
    let base = scan.media.start;
    let mut out = file[scan.media.clone()].to_vec();
    let mut sequence = first_sequence;
    for patch in &scan.patches {
        match *patch {
            Patch::Sequence { at } => {
                out[at - base..at - base + 4].copy_from_slice(&sequence.to_be_bytes());
                sequence = sequence.wrapping_add(1);
            }
            Patch::DecodeTime { at, wide, track } => {
                let at = at - base;
                if wide {
                    let t = u64::from_be_bytes(out[at..at + 8].try_into().expect("8 bytes"));
                    let t = t.saturating_sub(shift(track));
                    out[at..at + 8].copy_from_slice(&t.to_be_bytes());
                } else {
                    let t = u32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes"));
                    let t = u64::from(t).saturating_sub(shift(track)) as u32;
                    out[at..at + 4].copy_from_slice(&t.to_be_bytes());
                }
            }
        }
    }
    out
}

/// One entry of the segment index: a run of whole fragments starting with a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Bytes, `moof` to the end of the last `mdat`.
    pub size: u64,
    /// In the video track's timescale.
    pub duration: u64,
}

/// One track's segment index: its entries and the decode time its first one starts at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackIndex {
    pub track: u32,
    pub timescale: u32,
    pub start: u64,
    pub references: Vec<Reference>,
}

impl TrackIndex {
    fn sidx_len(&self) -> usize {
        8 + 4 + 4 + 4 + 8 + 8 + 2 + 2 + 12 * self.references.len()
    }
}

/// The front of the clip: the init section's `ftyp` (and whatever precedes `moov`), its `moov`
/// with an `mehd` of `duration` (video timescale) added to `mvex`, a `free` box that pads the
/// front to `size` bytes, and one `sidx` per track over the same fragments, which follow the
/// last `sidx` at once (a player that finds a track without an index, or a gap after it, reads
/// every `moof` to learn the times). An error when it does not fit.
pub fn header(
    init_bytes: &[u8],
    init: &Init,
    duration: u64,
    indexes: &[TrackIndex],
    size: usize,
) -> Result<Vec<u8>, Mp4Error> {
    let video = init.video();
    let top = boxes(init_bytes, 0..init_bytes.len())?;
    let mut out = Vec::with_capacity(size);
    for b in &top {
        if &b.kind == b"moov" {
            moov_with_duration(init_bytes, b, init, duration, video.timescale, &mut out)?;
        } else {
            out.extend_from_slice(&init_bytes[b.start..b.end]);
        }
    }
    let all: usize = indexes.iter().map(TrackIndex::sidx_len).sum();
    let pad = size
        .checked_sub(out.len() + all)
        .filter(|&p| p >= 8)
        .ok_or_else(|| Mp4Error("the segment index does not fit the front".into()))?;
    // The pad goes before the indexes: Chromium reads the fragments as starting right after
    // the last `sidx` (a `free` box in between made it read every `moof` to learn the times).
    out.extend_from_slice(&(pad as u32).to_be_bytes());
    out.extend_from_slice(b"free");
    out.resize(out.len() + pad - 8, 0);
    let mut after = all;
    for index in indexes {
        after -= index.sidx_len();
        sidx(index, after as u64, &mut out)?;
    }
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

/// A `sidx` (version 1: 64-bit earliest presentation time and first offset) whose first entry
/// starts `first_offset` bytes after it.
fn sidx(index: &TrackIndex, first_offset: u64, out: &mut Vec<u8>) -> Result<(), Mp4Error> {
    let count = u16::try_from(index.references.len())
        .map_err(|_| Mp4Error("too many references for one sidx".into()))?;
    out.extend_from_slice(&(index.sidx_len() as u32).to_be_bytes());
    out.extend_from_slice(b"sidx");
    out.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    out.extend_from_slice(&index.track.to_be_bytes());
    out.extend_from_slice(&index.timescale.to_be_bytes());
    out.extend_from_slice(&index.start.to_be_bytes());
    out.extend_from_slice(&first_offset.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for r in &index.references {
        let size = u32::try_from(r.size)
            .ok()
            .filter(|s| *s < 1 << 31)
            .ok_or_else(|| Mp4Error("a reference over 2 GiB".into()))?;
        let duration = u32::try_from(r.duration)
            .map_err(|_| Mp4Error("a reference longer than the sidx can say".into()))?;
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&duration.to_be_bytes());
        // starts_with_SAP = 1, SAP_type = 1, SAP_delta_time = 0.
        out.extend_from_slice(&0x9000_0000u32.to_be_bytes());
    }
    Ok(())
}

/// Writes `moov` with an `mehd` (version 1) at the front of its `mvex`.
fn moov_with_duration(
    data: &[u8],
    moov: &Bx,
    init: &Init,
    duration: u64,
    video_timescale: u32,
    out: &mut Vec<u8>,
) -> Result<(), Mp4Error> {
    const MEHD_LEN: usize = 20;
    let movie =
        u128::from(duration) * u128::from(init.movie_timescale) / u128::from(video_timescale);
    let mut mehd = Vec::with_capacity(MEHD_LEN);
    mehd.extend_from_slice(&(MEHD_LEN as u32).to_be_bytes());
    mehd.extend_from_slice(b"mehd");
    mehd.extend_from_slice(&0x0100_0000u32.to_be_bytes());
    mehd.extend_from_slice(&(movie as u64).to_be_bytes());
    let mut body = Vec::new();
    let mut found = false;
    for b in boxes(data, moov.body..moov.end)? {
        if &b.kind == b"mvex" {
            found = true;
            let mut mvex = Vec::new();
            for k in boxes(data, b.body..b.end)? {
                if &k.kind != b"mehd" {
                    mvex.extend_from_slice(&data[k.start..k.end]);
                }
            }
            body.extend_from_slice(&((8 + MEHD_LEN + mvex.len()) as u32).to_be_bytes());
            body.extend_from_slice(b"mvex");
            body.extend_from_slice(&mehd);
            body.extend_from_slice(&mvex);
        } else {
            body.extend_from_slice(&data[b.start..b.end]);
        }
    }
    if !found {
        return err("a moov without mvex");
    }
    out.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(b"moov");
    out.extend_from_slice(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn full(version: u8, flags: u32, rest: &[u8]) -> Vec<u8> {
        let mut b = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn the_whole_part_of_a_file_being_written_ends_with_its_last_whole_fragment() {
        let init = cat(&[bx(b"ftyp", b"isom"), bx(b"moov", &[0; 16])]);
        let first = cat(&[bx(b"moof", &[1; 24]), bx(b"mdat", &[2; 100])]);
        let second = cat(&[bx(b"moof", &[3; 24]), bx(b"mdat", &[4; 100])]);
        let file = cat(&[init.clone(), first.clone(), second.clone()]);
        let one = init.len() + first.len();
        assert_eq!(whole_len(&file), Some(file.len()));
        // Cut anywhere inside the second fragment (its moof, its mdat's header or body): the
        // first is what is whole.
        for cut in [one + 3, one + 20, one + 32 + 4, file.len() - 1] {
            assert_eq!(whole_len(&file[..cut]), Some(one), "cut at {cut}");
        }
        // No whole fragment yet: only the init section, or a moof without its mdat.
        assert_eq!(whole_len(&init), None);
        assert_eq!(whole_len(&file[..init.len() + 32]), None);
        // A closing index after the fragments is not media.
        let closed = cat(&[file.clone(), bx(b"mfra", &[0; 8])]);
        assert_eq!(whole_len(&closed), Some(file.len()));
    }

    fn trak(id: u32, timescale: u32, handler: &[u8; 4]) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.resize(80, 0);
        let mut mdhd = vec![0u8; 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.resize(20, 0);
        let mut hdlr = vec![0u8; 4];
        hdlr.extend_from_slice(handler);
        hdlr.resize(20, 0);
        bx(
            b"trak",
            &cat(&[
                bx(b"tkhd", &full(0, 3, &tkhd)),
                bx(
                    b"mdia",
                    &cat(&[
                        bx(b"mdhd", &full(0, 0, &mdhd)),
                        bx(b"hdlr", &full(0, 0, &hdlr)),
                    ]),
                ),
            ]),
        )
    }

    fn trex(id: u32, duration: u32) -> Vec<u8> {
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&duration.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        bx(b"trex", &full(0, 0, &b))
    }

    fn init() -> Vec<u8> {
        let mut mvhd = vec![0u8; 8];
        mvhd.extend_from_slice(&1000u32.to_be_bytes());
        mvhd.resize(96, 0);
        cat(&[
            bx(b"ftyp", b"isom\0\0\x02\0"),
            bx(
                b"moov",
                &cat(&[
                    bx(b"mvhd", &full(0, 0, &mvhd)),
                    trak(1, 12800, b"vide"),
                    trak(2, 8000, b"soun"),
                    bx(b"mvex", &cat(&[trex(1, 0), trex(2, 1024)])),
                ]),
            ),
        ])
    }

    /// A fragment: video with default duration 512 per sample in tfhd, audio from trex.
    fn fragment(sequence: u32, video_t: u64, audio_t: u32, samples: u32) -> Vec<u8> {
        let mut vtfhd = 1u32.to_be_bytes().to_vec();
        vtfhd.extend_from_slice(&512u32.to_be_bytes());
        let video = bx(
            b"traf",
            &cat(&[
                bx(b"tfhd", &full(0, 0x02_0008, &vtfhd)),
                bx(b"tfdt", &full(1, 0, &video_t.to_be_bytes())),
                bx(
                    b"trun",
                    &full(
                        0,
                        0x201,
                        &cat(&[
                            samples.to_be_bytes().to_vec(),
                            vec![0; 4],
                            vec![0; 4 * samples as usize],
                        ]),
                    ),
                ),
            ]),
        );
        let audio = bx(
            b"traf",
            &cat(&[
                bx(b"tfhd", &full(0, 0x02_0000, &2u32.to_be_bytes())),
                bx(b"tfdt", &full(0, 0, &audio_t.to_be_bytes())),
                bx(
                    b"trun",
                    &full(0, 0x001, &cat(&[2u32.to_be_bytes().to_vec(), vec![0; 4]])),
                ),
            ]),
        );
        cat(&[
            bx(
                b"moof",
                &cat(&[
                    bx(b"mfhd", &full(0, 0, &sequence.to_be_bytes())),
                    video,
                    audio,
                ]),
            ),
            bx(b"mdat", &[7; 10]),
        ])
    }

    fn segment(video_t: u64, audio_t: u32) -> Vec<u8> {
        cat(&[
            init(),
            fragment(1, video_t, audio_t, 25),
            fragment(2, video_t + 25 * 512, audio_t + 2048, 25),
            bx(b"mfra", &[0; 8]),
        ])
    }

    #[test]
    fn an_init_section_names_its_tracks_and_timescales() {
        let init = Init::parse(&init()).unwrap();
        assert_eq!(init.movie_timescale, 1000);
        assert_eq!(
            init.tracks,
            vec![
                Track {
                    id: 1,
                    timescale: 12800,
                    default_duration: 0,
                    video: true
                },
                Track {
                    id: 2,
                    timescale: 8000,
                    default_duration: 1024,
                    video: false
                },
            ]
        );
        assert!(Init::parse(&bx(b"ftyp", b"isom")).is_err());
    }

    #[test]
    fn a_scan_finds_the_fragments_their_start_and_length() {
        let file = segment(1_000_000, 600_000);
        let init_len = init().len();
        let parsed = Init::parse(&file[..init_len]).unwrap();
        let s = scan(&file, &parsed).unwrap();
        assert_eq!(s.init, 0..init_len);
        assert_eq!(s.moofs, 2);
        assert_eq!(s.media.end, file.len() - 16, "the mfra is left out");
        assert_eq!(
            s.span(1),
            Some(Span {
                track: 1,
                start: 1_000_000,
                duration: 50 * 512
            })
        );
        assert_eq!(
            s.span(2),
            Some(Span {
                track: 2,
                start: 600_000,
                duration: 4 * 1024
            })
        );
    }

    #[test]
    fn media_rewrites_sequence_numbers_and_decode_times_in_place() {
        let file = segment(1_000_000, 600_000);
        let init = Init::parse(&file[..init().len()]).unwrap();
        let s = scan(&file, &init).unwrap();
        let out = media(&file, &s, 40, |t| if t == 1 { 1_000_000 } else { 600_000 });
        assert_eq!(out.len() as u64, s.media_len());
        let again = scan(&cat(&[init_bytes(), out.clone()]), &init).unwrap();
        assert_eq!(again.span(1).unwrap().start, 0);
        assert_eq!(again.span(2).unwrap().start, 0);
        let seqs: Vec<u32> = again
            .patches
            .iter()
            .filter_map(|p| match p {
                Patch::Sequence { at } => {
                    Some(be32(&cat(&[init_bytes(), out.clone()]), *at).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![40, 41]);
    }

    fn init_bytes() -> Vec<u8> {
        init()
    }

    #[test]
    fn a_fragment_of_an_unknown_track_or_without_moof_is_refused() {
        let init_ = Init::parse(&init()).unwrap();
        assert!(scan(&init(), &init_).is_err());
        let only_video = Init {
            tracks: vec![init_.tracks[0].clone()],
            movie_timescale: 1000,
        };
        assert!(scan(&segment(0, 0), &only_video).is_err());
        let mut broken = segment(0, 0);
        broken.truncate(broken.len() - 3);
        assert!(scan(&broken, &init_).is_err());
    }

    #[test]
    fn the_header_carries_the_duration_and_an_index_per_track_padded_to_its_size() {
        let bytes = init();
        let init_ = Init::parse(&bytes).unwrap();
        let refs = |d: u64| {
            vec![
                Reference {
                    size: 300,
                    duration: 2 * d,
                },
                Reference {
                    size: 200,
                    duration: d,
                },
            ]
        };
        let indexes = [
            TrackIndex {
                track: 1,
                timescale: 12800,
                start: 0,
                references: refs(6400),
            },
            TrackIndex {
                track: 2,
                timescale: 8000,
                start: 1024,
                references: refs(4000),
            },
        ];
        let h = header(&bytes, &init_, 19200, &indexes, 4096).unwrap();
        assert_eq!(h.len(), 4096);
        let top = boxes(&h, 0..h.len()).unwrap();
        let kinds: Vec<&[u8; 4]> = top.iter().map(|b| &b.kind).collect();
        assert_eq!(kinds, vec![b"ftyp", b"moov", b"free", b"sidx", b"sidx"]);
        let moov = top[1];
        let mvex = child(&h, &moov, b"mvex").unwrap().unwrap();
        let mehd = child(&h, &mvex, b"mehd").unwrap().unwrap();
        assert_eq!(
            be64(&h, mehd.body + 4).unwrap(),
            1500,
            "1.5 s in the movie timescale"
        );
        assert_eq!(
            Init::parse(&h[..moov.end]).unwrap(),
            init_,
            "the moov still parses"
        );
        for (sidx, track, timescale) in [(top[3], 1, 12800), (top[4], 2, 8000)] {
            assert_eq!(be32(&h, sidx.body + 4).unwrap(), track);
            assert_eq!(be32(&h, sidx.body + 8).unwrap(), timescale);
            let first_offset = be64(&h, sidx.body + 20).unwrap() as usize;
            assert_eq!(
                sidx.end + first_offset,
                4096,
                "each index's first entry is the media's"
            );
            assert_eq!(be32(&h, sidx.body + 32).unwrap(), 300);
        }
        assert_eq!(
            be64(&h, top[4].body + 12).unwrap(),
            1024,
            "the audio index's start"
        );
        assert_eq!(be32(&h, top[4].body + 36).unwrap(), 8000);
        assert!(
            header(&bytes, &init_, 19200, &indexes, 300).is_err(),
            "too small"
        );
    }

    fn plain_box(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((8 + body) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(8 + body, 0);
        b
    }

    #[test]
    fn the_init_section_ends_where_the_first_moof_starts() {
        let mut file = plain_box(b"ftyp", 20);
        file.extend(plain_box(b"moov", 700));
        file.extend(plain_box(b"moof", 100));
        file.extend(plain_box(b"mdat", 5000));
        assert_eq!(init_len(&file), Some(28 + 708));
    }

    #[test]
    fn a_file_without_fragments_or_with_a_broken_header_has_no_init_section() {
        let mut plain = plain_box(b"ftyp", 20);
        plain.extend(plain_box(b"moov", 10));
        plain.extend(plain_box(b"mdat", 10));
        assert_eq!(init_len(&plain), None);
        let mut broken = plain_box(b"ftyp", 20);
        broken.extend_from_slice(&[0, 0, 0, 3, b'm', b'o', b'o', b'v']);
        broken.extend(plain_box(b"moof", 10));
        assert_eq!(init_len(&broken), None);
        assert_eq!(init_len(&[]), None);
        assert_eq!(init_len(&[0xff; 7]), None);
    }

    #[test]
    fn a_large_box_size_is_read_from_its_64_bit_field() {
        let mut file = vec![0, 0, 0, 1];
        file.extend_from_slice(b"free");
        file.extend_from_slice(&24u64.to_be_bytes());
        file.resize(24, 0);
        file.extend(plain_box(b"moof", 4));
        assert_eq!(init_len(&file), Some(24));
    }
}
