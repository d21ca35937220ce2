//! The samples of a fragmented MP4 segment: for each fragment (`moof` + `mdat`), each track's run
//! of samples (size, duration, keyframe or not, composition offset) and where its bytes lie.

use std::ops::Range;

use super::{be32, be64, boxes, err, Bx, Init, Mp4Error};

/// One sample, as its `trun` entry describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub size: u32,
    /// In the track's timescale.
    pub duration: u32,
    /// A sync sample (keyframe): not flagged `sample_is_non_sync_sample`.
    pub sync: bool,
    /// Composition time offset (presentation - decode), in the track's timescale.
    pub cto: i32,
}

/// One track's samples in one fragment: stored one after another in the fragment's `mdat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub track: u32,
    /// The `tfdt`: the first sample's decode time, in the track's timescale.
    pub decode_time: u64,
    /// Where the samples' bytes lie in the file.
    pub data: Range<usize>,
    pub samples: Vec<Sample>,
}

/// One fragment: the body of its `mdat` (in the file) and the runs its `moof` describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub mdat: Range<usize>,
    pub runs: Vec<Run>,
}

/// The fragments of the segment `file` whose init section reads as `init`, in order. Every
/// run's bytes must lie in its fragment's `mdat`.
pub fn fragments(file: &[u8], init: &Init) -> Result<Vec<Fragment>, Mp4Error> {
    let top = boxes(file, 0..file.len())?;
    let mut found = Vec::new();
    let mut pending: Option<&Bx> = None;
    for b in &top {
        match &b.kind {
            b"moof" => pending = Some(b),
            b"mdat" => {
                let Some(moof) = pending.take() else {
                    return err("an mdat without its moof");
                };
                let runs = moof_runs(file, moof, init)?;
                let mdat = b.body..b.end;
                if let Some(r) = runs
                    .iter()
                    .find(|r| r.data.start < mdat.start || r.data.end > mdat.end)
                {
                    return err(format!(
                        "track {}'s samples lie outside their mdat",
                        r.track
                    ));
                }
                found.push(Fragment { mdat, runs });
            }
            _ => {}
        }
    }
    if found.is_empty() {
        return err("no fragment");
    }
    Ok(found)
}

fn moof_runs(file: &[u8], moof: &Bx, init: &Init) -> Result<Vec<Run>, Mp4Error> {
    let mut runs = Vec::new();
    let mut next_data = moof.start;
    for traf in boxes(file, moof.body..moof.end)? {
        if &traf.kind != b"traf" {
            continue;
        }
        let kids = boxes(file, traf.body..traf.end)?;
        let Some(tfhd) = kids.iter().find(|b| &b.kind == b"tfhd") else {
            return err("a traf without tfhd");
        };
        let flags = be32(file, tfhd.body)? & 0x00ff_ffff;
        let id = be32(file, tfhd.body + 4)?;
        let track = init.track(id)?;
        if flags & 0x01 != 0 {
            return err("a tfhd with a base data offset (fragments cannot move)");
        }
        let mut at = tfhd.body + 8;
        let mut field = |present: bool| -> Result<Option<u32>, Mp4Error> {
            if !present {
                return Ok(None);
            }
            let v = be32(file, at)?;
            at += 4;
            Ok(Some(v))
        };
        field(flags & 0x02 != 0)?; // sample description index
        let duration = field(flags & 0x08 != 0)?.unwrap_or(track.default_duration);
        let size = field(flags & 0x10 != 0)?.unwrap_or(track.default_size);
        let sample_flags = field(flags & 0x20 != 0)?.unwrap_or(track.default_flags);
        // With `default-base-is-moof` (or for the first track) data offsets count from the
        // moof; otherwise from where the previous track's data ended.
        let base = if flags & 0x02_0000 != 0 || runs.is_empty() {
            moof.start
        } else {
            next_data
        };
        let Some(tfdt) = kids.iter().find(|b| &b.kind == b"tfdt") else {
            return err("a traf without tfdt");
        };
        let decode_time = if file.get(tfdt.body) == Some(&1) {
            be64(file, tfdt.body + 4)?
        } else {
            u64::from(be32(file, tfdt.body + 4)?)
        };
        let defaults = Sample {
            size,
            duration,
            sync: sample_flags & NON_SYNC == 0,
            cto: 0,
        };
        let mut data_at = base;
        let mut samples = Vec::new();
        let mut start = None;
        for trun in kids.iter().filter(|b| &b.kind == b"trun") {
            let (offset, more) = trun_samples(file, trun, defaults, sample_flags)?;
            if let Some(o) = offset {
                data_at = base
                    .checked_add_signed(o as isize)
                    .ok_or_else(|| Mp4Error("a data offset before the file".into()))?;
            }
            start.get_or_insert(data_at);
            data_at += more.iter().map(|s| s.size as usize).sum::<usize>();
            samples.extend(more);
        }
        let Some(start) = start else { continue };
        next_data = data_at;
        runs.push(Run {
            track: id,
            decode_time,
            data: start..data_at,
            samples,
        });
    }
    Ok(runs)
}

/// `sample_is_non_sync_sample` in a sample's flags.
const NON_SYNC: u32 = 0x0001_0000;

/// A `trun`'s data offset (when present) and samples.
fn trun_samples(
    file: &[u8],
    trun: &Bx,
    defaults: Sample,
    default_flags: u32,
) -> Result<(Option<i32>, Vec<Sample>), Mp4Error> {
    let version = file.get(trun.body).copied().unwrap_or(0);
    let flags = be32(file, trun.body)? & 0x00ff_ffff;
    let count = be32(file, trun.body + 4)?;
    let mut at = trun.body + 8;
    let mut next = || -> Result<u32, Mp4Error> {
        let v = be32(file, at)?;
        at += 4;
        Ok(v)
    };
    let offset = if flags & 0x01 != 0 {
        Some(next()? as i32)
    } else {
        None
    };
    let first_flags = if flags & 0x04 != 0 {
        Some(next()?)
    } else {
        None
    };
    let mut samples = Vec::with_capacity(count.min(1 << 16) as usize);
    for i in 0..count {
        let duration = if flags & 0x100 != 0 {
            next()?
        } else {
            defaults.duration
        };
        let size = if flags & 0x200 != 0 {
            next()?
        } else {
            defaults.size
        };
        let sample_flags = if flags & 0x400 != 0 {
            next()?
        } else {
            default_flags
        };
        let sample_flags = match (i, first_flags) {
            (0, Some(f)) => f,
            _ => sample_flags,
        };
        let cto = if flags & 0x800 != 0 {
            let raw = next()?;
            // Version 0 offsets are unsigned; version 1 signed.
            if version == 0 {
                i32::try_from(raw).map_err(|_| Mp4Error("a composition offset too large".into()))?
            } else {
                raw as i32
            }
        } else {
            0
        };
        samples.push(Sample {
            size,
            duration,
            sync: sample_flags & NON_SYNC == 0,
            cto,
        });
    }
    Ok((offset, samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::tests::{init, segment};

    #[test]
    fn every_sample_of_every_fragment_is_read_with_where_its_bytes_lie() {
        let file = segment(1_000_000, 600_000);
        let parsed = Init::parse(&init()).unwrap();
        let found = fragments(&file, &parsed).unwrap();
        assert_eq!(found.len(), 2, "the mfra is not a fragment");
        let f = &found[0];
        assert_eq!(f.runs.len(), 2);
        let (video, audio) = (&f.runs[0], &f.runs[1]);
        assert_eq!((video.track, video.decode_time), (1, 1_000_000));
        assert_eq!(video.samples.len(), 25);
        assert_eq!(
            video.samples[0],
            Sample {
                size: 2,
                duration: 512,
                sync: true,
                cto: 0
            },
            "the first sample's own flags"
        );
        assert!(video.samples[1..].iter().all(|s| !s.sync && s.size == 2));
        // The video's 50 bytes open the mdat, the audio's 10 (trex's size) follow.
        assert_eq!(video.data, f.mdat.start..f.mdat.start + 50);
        assert_eq!(audio.data, f.mdat.start + 50..f.mdat.end);
        assert_eq!((audio.track, audio.decode_time), (2, 600_000));
        assert!(audio.samples.iter().all(|s| s.sync && s.duration == 1024));
        assert_eq!(found[1].runs[0].decode_time, 1_000_000 + 25 * 512);
    }

    #[test]
    fn a_fragment_of_an_unknown_track_or_data_outside_its_mdat_is_refused() {
        let parsed = Init::parse(&init()).unwrap();
        assert!(fragments(&init(), &parsed).is_err(), "no fragment");
        let only_video = Init {
            tracks: vec![parsed.tracks[0].clone()],
            movie_timescale: 1000,
        };
        assert!(fragments(&segment(0, 0), &only_video).is_err());
        // An mdat cut short: the audio's bytes are not all in it.
        let mut file = segment(0, 0);
        let second = fragments(&file, &parsed).unwrap()[1].mdat.clone();
        let mdat_header = second.start - 8;
        let short = (second.end - second.start - 1 + 8) as u32;
        file[mdat_header..mdat_header + 4].copy_from_slice(&short.to_be_bytes());
        file.remove(second.end - 1);
        assert!(fragments(&file, &parsed).is_err());
    }
}
