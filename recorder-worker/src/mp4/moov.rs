//! A progressive MP4's `moov`: every sample of every track in its sample tables, built up
//! fragment by fragment ([`Tables::push`]) and written once the last is in ([`Tables::moov`]).
//!
//! The tracks and their sample descriptions (`stsd`) are the capture's init section's; what
//! changes is that the tables, empty in a fragmented file, list every sample: durations (`stts`),
//! composition offsets (`ctts`), keyframes (`stss`), sizes (`stsz`), and one chunk per run of a
//! track's samples in a fragment (`stsc`, `co64`: where it lies in the file). The fragmented
//! file's `mvex` goes. A track that starts after the earliest one gets an edit list with an empty
//! edit that long, so the tracks stay in sync.

use super::fragments::Run;
use super::{be32, boxes, child, err, Bx, Init, Mp4Error};

/// One track's sample tables so far.
#[derive(Clone, Debug, Default)]
struct Track {
    id: u32,
    timescale: u32,
    /// The first run's decode time, and where the next sample's should be.
    first: Option<u64>,
    next: u64,
    /// `stts`: (count, duration).
    durations: Vec<(u32, u32)>,
    /// `ctts`: (count, offset).
    offsets: Vec<(u32, i32)>,
    /// `stss`: 1-based numbers of the keyframes.
    syncs: Vec<u32>,
    all_sync: bool,
    sizes: Vec<u32>,
    /// One chunk per run: (offset from the start of the media, samples).
    chunks: Vec<(u64, u32)>,
    samples: u32,
}

impl Track {
    fn duration(&self) -> u64 {
        self.durations
            .iter()
            .map(|&(n, d)| u64::from(n) * u64::from(d))
            .sum()
    }

    /// Sets the duration of the last sample (the muxer's guess until the next one is known).
    fn set_last_duration(&mut self, duration: u32) {
        let Some(last) = self.durations.last_mut() else {
            return;
        };
        if last.1 == duration {
            return;
        }
        last.0 -= 1;
        if last.0 == 0 {
            self.durations.pop();
        }
        push_rle(&mut self.durations, duration);
    }
}

fn push_rle<T: PartialEq + Copy>(runs: &mut Vec<(u32, T)>, value: T) {
    match runs.last_mut() {
        Some((n, v)) if *v == value => *n += 1,
        _ => runs.push((1, value)),
    }
}

/// The sample tables of every track of one init section.
#[derive(Clone, Debug)]
pub struct Tables {
    tracks: Vec<Track>,
}

impl Tables {
    pub fn new(init: &Init) -> Self {
        Self {
            tracks: init
                .tracks
                .iter()
                .map(|t| Track {
                    id: t.id,
                    timescale: t.timescale,
                    all_sync: true,
                    ..Track::default()
                })
                .collect(),
        }
    }

    /// Adds a run whose bytes start `offset` bytes into the clip's media. A run that starts later than the
    /// track's last sample ends (a hole, or the muxer's guess of the last duration being short)
    /// lengthens that sample; one that starts earlier shortens it (to 1 tick at least).
    pub fn push(&mut self, run: &Run, offset: u64) -> Result<(), Mp4Error> {
        let Some(t) = self.tracks.iter_mut().find(|t| t.id == run.track) else {
            return err(format!(
                "a run of track {}, which the moov lacks",
                run.track
            ));
        };
        if run.samples.is_empty() {
            return Ok(());
        }
        match t.first {
            None => t.first = Some(run.decode_time),
            Some(_) if run.decode_time != t.next => {
                let last = t.durations.last().map_or(0, |&(_, d)| d);
                let fixed = i64::from(last) + run.decode_time as i64 - t.next as i64;
                t.set_last_duration(u32::try_from(fixed.max(1)).unwrap_or(u32::MAX));
            }
            Some(_) => {}
        }
        for s in &run.samples {
            t.samples += 1;
            push_rle(&mut t.durations, s.duration);
            push_rle(&mut t.offsets, s.cto);
            t.sizes.push(s.size);
            if s.sync {
                t.syncs.push(t.samples);
            } else {
                t.all_sync = false;
            }
        }
        t.chunks.push((offset, run.samples.len() as u32));
        t.next = run.decode_time
            + run
                .samples
                .iter()
                .map(|s| u64::from(s.duration))
                .sum::<u64>();
        Ok(())
    }

    /// The duration of `track`'s samples so far, in its timescale.
    pub fn duration(&self, track: u32) -> u64 {
        self.tracks
            .iter()
            .find(|t| t.id == track)
            .map_or(0, Track::duration)
    }

    /// Where the next run of `track` should start, in its timescale.
    pub fn next_decode_time(&self, track: u32) -> Option<u64> {
        let t = self.tracks.iter().find(|t| t.id == track)?;
        t.first.map(|_| t.next)
    }

    /// The `moov` of the clip whose media start `media_start` bytes into the file:
    /// `init_bytes`'s (an init section that [`Init::parse`] read as `init`) with these tables,
    /// the durations, and an edit list on each track that starts after the earliest one. Its
    /// size does not depend on `media_start`.
    pub fn moov(
        &self,
        init_bytes: &[u8],
        init: &Init,
        media_start: u64,
    ) -> Result<Vec<u8>, Mp4Error> {
        let top = boxes(init_bytes, 0..init_bytes.len())?;
        let Some(moov) = top.iter().find(|b| &b.kind == b"moov") else {
            return err("no moov box");
        };
        let movie = u64::from(init.movie_timescale.max(1));
        // Each track's start and length in seconds, as (ticks, timescale).
        let secs = |ticks: u64, scale: u32| ticks as f64 / f64::from(scale.max(1));
        let origin = self
            .tracks
            .iter()
            .filter_map(|t| t.first.map(|f| secs(f, t.timescale)))
            .fold(f64::INFINITY, f64::min);
        let delay = |t: &Track| -> u64 {
            t.first
                .map(|f| ((secs(f, t.timescale) - origin).max(0.0) * movie as f64).round() as u64)
                .unwrap_or(0)
        };
        let in_movie = |t: &Track| {
            (u128::from(t.duration()) * u128::from(movie) / u128::from(t.timescale.max(1))) as u64
        };
        let movie_duration = self
            .tracks
            .iter()
            .map(|t| delay(t) + in_movie(t))
            .max()
            .unwrap_or(0);
        let mut body = Vec::new();
        for b in boxes(init_bytes, moov.body..moov.end)? {
            match &b.kind {
                b"mvhd" => {
                    let mut mvhd = init_bytes[b.start..b.end].to_vec();
                    set_duration(&mut mvhd, b, 16, 24, movie_duration)?;
                    body.extend_from_slice(&mvhd);
                }
                b"trak" => {
                    let id = trak_id(init_bytes, &b)?;
                    let Some(t) = self.tracks.iter().find(|t| t.id == id) else {
                        return err(format!("track {id} has no tables"));
                    };
                    let edit = (delay(t), in_movie(t), t.offsets.first().map_or(0, |o| o.1));
                    trak(init_bytes, &b, t, edit, media_start, &mut body)?;
                }
                b"mvex" => {}
                _ => body.extend_from_slice(&init_bytes[b.start..b.end]),
            }
        }
        Ok(boxed(b"moov", &body))
    }
}

fn trak_id(data: &[u8], trak: &Bx) -> Result<u32, Mp4Error> {
    let Some(tkhd) = child(data, trak, b"tkhd")? else {
        return err("a trak without tkhd");
    };
    let wide = data.get(tkhd.body) == Some(&1);
    be32(data, tkhd.body + if wide { 20 } else { 12 })
}

/// A copy of the box at `b` (its bytes at the start of `boxed`) with its duration field, at
/// `v0` (32-bit) or `v1` (64-bit) bytes into the body after the version and flags, set.
fn set_duration(
    boxed: &mut [u8],
    b: Bx,
    v0: usize,
    v1: usize,
    duration: u64,
) -> Result<(), Mp4Error> {
    let header = b.body - b.start;
    if boxed.get(header) == Some(&1) {
        let at = header + 4 + v1 - 4;
        boxed
            .get_mut(at..at + 8)
            .ok_or_else(|| Mp4Error("a short header box".into()))?
            .copy_from_slice(&duration.to_be_bytes());
    } else {
        let at = header + 4 + v0 - 4;
        let d = u32::try_from(duration)
            .map_err(|_| Mp4Error("a duration too long for a version 0 header".into()))?;
        boxed
            .get_mut(at..at + 4)
            .ok_or_else(|| Mp4Error("a short header box".into()))?
            .copy_from_slice(&d.to_be_bytes());
    }
    Ok(())
}

/// Writes `trak` with its durations set, the edit list `(delay, duration, media_time)` (movie
/// timescale; none when there is nothing to edit) and `t`'s sample tables.
fn trak(
    data: &[u8],
    trak: &Bx,
    t: &Track,
    (delay, duration, media_time): (u64, u64, i32),
    media_start: u64,
    out: &mut Vec<u8>,
) -> Result<(), Mp4Error> {
    let mut body = Vec::new();
    for b in boxes(data, trak.body..trak.end)? {
        match &b.kind {
            b"tkhd" => {
                let mut tkhd = data[b.start..b.end].to_vec();
                set_duration(&mut tkhd, b, 20, 28, delay + duration)?;
                body.extend_from_slice(&tkhd);
                if delay > 0 || media_time > 0 {
                    body.extend_from_slice(&edts(delay, duration, media_time));
                }
            }
            b"edts" => {}
            b"mdia" => {
                let mut mdia = Vec::new();
                for m in boxes(data, b.body..b.end)? {
                    match &m.kind {
                        b"mdhd" => {
                            let mut mdhd = data[m.start..m.end].to_vec();
                            set_duration(&mut mdhd, m, 16, 24, t.duration())?;
                            mdia.extend_from_slice(&mdhd);
                        }
                        b"minf" => mdia.extend_from_slice(&minf(data, &m, t, media_start)?),
                        _ => mdia.extend_from_slice(&data[m.start..m.end]),
                    }
                }
                body.extend_from_slice(&boxed(b"mdia", &mdia));
            }
            _ => body.extend_from_slice(&data[b.start..b.end]),
        }
    }
    out.extend_from_slice(&boxed(b"trak", &body));
    Ok(())
}

/// `edts` with an `elst` (version 1): an empty edit of `delay`, then the media from
/// `media_time` for `duration`.
fn edts(delay: u64, duration: u64, media_time: i32) -> Vec<u8> {
    let mut entries: Vec<(u64, i64)> = Vec::new();
    if delay > 0 {
        entries.push((delay, -1));
    }
    entries.push((duration, i64::from(media_time.max(0))));
    let mut elst = full(1, 0);
    elst.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (d, m) in entries {
        elst.extend_from_slice(&d.to_be_bytes());
        elst.extend_from_slice(&m.to_be_bytes());
        elst.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    }
    boxed(b"edts", &boxed(b"elst", &elst))
}

fn minf(data: &[u8], minf: &Bx, t: &Track, media_start: u64) -> Result<Vec<u8>, Mp4Error> {
    let mut body = Vec::new();
    for b in boxes(data, minf.body..minf.end)? {
        if &b.kind != b"stbl" {
            body.extend_from_slice(&data[b.start..b.end]);
            continue;
        }
        let Some(stsd) = child(data, &b, b"stsd")? else {
            return err("an stbl without stsd");
        };
        let mut stbl = data[stsd.start..stsd.end].to_vec();
        stbl.extend_from_slice(&tables(t, media_start));
        body.extend_from_slice(&boxed(b"stbl", &stbl));
    }
    Ok(boxed(b"minf", &body))
}

/// `stts`, `ctts` (when any sample has an offset), `stss` (when not every sample is a
/// keyframe), `stsc`, `stsz` and `co64`.
fn tables(t: &Track, media_start: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stts = full(0, 0);
    stts.extend_from_slice(&(t.durations.len() as u32).to_be_bytes());
    for &(n, d) in &t.durations {
        stts.extend_from_slice(&n.to_be_bytes());
        stts.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(&boxed(b"stts", &stts));
    if t.offsets.iter().any(|&(_, o)| o != 0) {
        let signed = t.offsets.iter().any(|&(_, o)| o < 0);
        let mut ctts = full(u8::from(signed), 0);
        ctts.extend_from_slice(&(t.offsets.len() as u32).to_be_bytes());
        for &(n, o) in &t.offsets {
            ctts.extend_from_slice(&n.to_be_bytes());
            ctts.extend_from_slice(&o.to_be_bytes());
        }
        out.extend_from_slice(&boxed(b"ctts", &ctts));
    }
    if !t.all_sync {
        let mut stss = full(0, 0);
        stss.extend_from_slice(&(t.syncs.len() as u32).to_be_bytes());
        for n in &t.syncs {
            stss.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&boxed(b"stss", &stss));
    }
    // Chunks in runs of the same sample count: (first chunk, samples per chunk, description 1).
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (i, &(_, n)) in t.chunks.iter().enumerate() {
        if runs.last().is_none_or(|&(_, last)| last != n) {
            runs.push((i as u32 + 1, n));
        }
    }
    let mut stsc = full(0, 0);
    stsc.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for (first, n) in runs {
        stsc.extend_from_slice(&first.to_be_bytes());
        stsc.extend_from_slice(&n.to_be_bytes());
        stsc.extend_from_slice(&1u32.to_be_bytes());
    }
    out.extend_from_slice(&boxed(b"stsc", &stsc));
    let mut stsz = full(0, 0);
    stsz.extend_from_slice(&0u32.to_be_bytes());
    stsz.extend_from_slice(&(t.sizes.len() as u32).to_be_bytes());
    for s in &t.sizes {
        stsz.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(&boxed(b"stsz", &stsz));
    let mut co64 = full(0, 0);
    co64.extend_from_slice(&(t.chunks.len() as u32).to_be_bytes());
    for &(offset, _) in &t.chunks {
        co64.extend_from_slice(&(media_start + offset).to_be_bytes());
    }
    out.extend_from_slice(&boxed(b"co64", &co64));
    out
}

/// A full box's version and flags.
fn full(version: u8, flags: u32) -> Vec<u8> {
    ((u32::from(version) << 24) | (flags & 0x00ff_ffff))
        .to_be_bytes()
        .to_vec()
}

/// A box of `kind` around `body` (a 64-bit size when it does not fit 32 bits).
fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    match u32::try_from(body.len() + 8) {
        Ok(size) => out.extend_from_slice(&size.to_be_bytes()),
        Err(_) => {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(&(body.len() as u64 + 16).to_be_bytes());
            out.extend_from_slice(body);
            return out;
        }
    }
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}
