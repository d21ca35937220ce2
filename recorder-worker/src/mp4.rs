//! The few ISO-BMFF (MP4) boxes the clip assembly reads and writes, in plain byte code.
//!
//! A capture segment is a fragmented MP4: an init section (`ftyp`, `moov` with `mvex`), then
//! fragments (`moof` + `mdat`), and FFmpeg closes it with an `mfra` index. [`init_len`] finds
//! where the init section ends (what the live playlist's `EXT-X-MAP` covers), [`whole_len`] how
//! much of a segment still being written is whole fragments; [`Init::parse`] reads the tracks of
//! an init section; [`fragments::fragments`] reads every sample of a segment (size, duration,
//! keyframe, where its bytes are); [`moov::Tables`] gathers them into the sample tables of a
//! progressive MP4's `moov`, the index a player seeks with.

pub mod fragments;
pub mod moov;

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
    /// `trex`'s default sample duration, size and flags, for fragments that name none.
    pub default_duration: u32,
    pub default_size: u32,
    pub default_flags: u32,
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
                            trex.push((
                                be32(init, t.body + 4)?,
                                [
                                    be32(init, t.body + 12)?,
                                    be32(init, t.body + 16)?,
                                    be32(init, t.body + 20)?,
                                ],
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        for t in &mut tracks {
            if let Some((_, [duration, size, flags])) = trex.iter().find(|(id, _)| *id == t.id) {
                (t.default_duration, t.default_size, t.default_flags) = (*duration, *size, *flags);
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
        default_size: 0,
        default_flags: 0,
        video,
    })
}

#[cfg(test)]
pub(crate) mod tests {
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

    fn trex(id: u32, duration: u32, size: u32) -> Vec<u8> {
        let mut b = id.to_be_bytes().to_vec();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&duration.to_be_bytes());
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        bx(b"trex", &full(0, 0, &b))
    }

    pub(super) fn init() -> Vec<u8> {
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
                    bx(b"mvex", &cat(&[trex(1, 0, 0), trex(2, 1024, 5)])),
                ]),
            ),
        ])
    }

    /// A fragment: `samples` video samples of 2 bytes, the first a keyframe, with default
    /// duration 512 in tfhd and the rest flagged non-sync; then 2 audio samples of 5 bytes with
    /// trex's defaults. Both runs name their data offset (from the moof).
    pub(super) fn fragment(sequence: u32, video_t: u64, audio_t: u32, samples: u32) -> Vec<u8> {
        let traf = |data_offset: u32| {
            let mut vtfhd = 1u32.to_be_bytes().to_vec();
            vtfhd.extend_from_slice(&512u32.to_be_bytes());
            vtfhd.extend_from_slice(&0x0001_0000u32.to_be_bytes());
            let video = bx(
                b"traf",
                &cat(&[
                    bx(b"tfhd", &full(0, 0x02_0028, &vtfhd)),
                    bx(b"tfdt", &full(1, 0, &video_t.to_be_bytes())),
                    bx(
                        b"trun",
                        &full(
                            0,
                            0x205,
                            &cat(&[
                                samples.to_be_bytes().to_vec(),
                                data_offset.to_be_bytes().to_vec(),
                                0x0200_0000u32.to_be_bytes().to_vec(),
                                2u32.to_be_bytes().repeat(samples as usize),
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
                        &full(
                            0,
                            0x001,
                            &cat(&[
                                2u32.to_be_bytes().to_vec(),
                                (data_offset + 2 * samples).to_be_bytes().to_vec(),
                            ]),
                        ),
                    ),
                ]),
            );
            bx(
                b"moof",
                &cat(&[
                    bx(b"mfhd", &full(0, 0, &sequence.to_be_bytes())),
                    video,
                    audio,
                ]),
            )
        };
        // The moof's size does not depend on the offset's value: measure it, then write it.
        let moof_len = traf(0).len() as u32;
        let media: Vec<u8> = (0..2 * samples + 10).map(|i| i as u8).collect();
        cat(&[traf(moof_len + 8), bx(b"mdat", &media)])
    }

    pub(super) fn segment(video_t: u64, audio_t: u32) -> Vec<u8> {
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
                    default_size: 0,
                    default_flags: 0,
                    video: true
                },
                Track {
                    id: 2,
                    timescale: 8000,
                    default_duration: 1024,
                    default_size: 5,
                    default_flags: 0,
                    video: false
                },
            ]
        );
        assert!(Init::parse(&bx(b"ftyp", b"isom")).is_err());
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
