//! The parser of FFmpeg's `-progress` output.
//!
//! FFmpeg writes blocks of `key=value` lines to the progress pipe, each block closed by
//! `progress=continue` (or `progress=end` as the last one). The text comes from a child process
//! fed by a camera, so it is untrusted: unknown keys, `N/A` values, garbage and overlong lines are
//! ignored, never a panic. [`ProgressParser`] turns the lines into one [`Progress`] per block.

/// One block of FFmpeg progress: the figures the `progress` status message reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Video frames written so far.
    pub frames: u64,
    /// Frames per second FFmpeg currently achieves (`None` when it reports none).
    pub fps: Option<f64>,
    /// Output bitrate in kbit/s (`None` while FFmpeg reports `N/A`).
    pub bitrate_kbps: Option<f64>,
    /// Bytes written to the output so far.
    pub total_size: u64,
    /// Media time written so far, in seconds.
    pub out_time_sec: f64,
    /// Processing speed relative to real time (`1.0` for a live camera).
    pub speed: Option<f64>,
    /// True for the last block FFmpeg writes before it exits.
    pub end: bool,
}

/// Lines longer than this are not FFmpeg progress lines; they are skipped.
const MAX_LINE: usize = 256;

/// Accumulates `key=value` lines; yields a [`Progress`] at the end of each block.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: Progress,
}

impl ProgressParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (with or without its line ending). Returns the finished block when the line
    /// is `progress=continue` or `progress=end`.
    pub fn feed_line(&mut self, line: &str) -> Option<Progress> {
        if line.len() > MAX_LINE {
            return None;
        }
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "frame" => set_if_some(&mut self.current.frames, value.parse().ok()),
            "fps" => self.current.fps = parse_f64(value),
            "bitrate" => self.current.bitrate_kbps = parse_f64(value.trim_end_matches("kbits/s")),
            "total_size" => set_if_some(&mut self.current.total_size, value.parse().ok()),
            "out_time_us" | "out_time_ms" => {
                if let Some(us) = value.parse::<i64>().ok().filter(|us| *us >= 0) {
                    self.current.out_time_sec = us as f64 / 1_000_000.0;
                }
            }
            "speed" => self.current.speed = parse_f64(value.trim_end_matches('x')),
            "progress" => return self.finish_block(value),
            _ => {}
        }
        None
    }

    fn finish_block(&mut self, value: &str) -> Option<Progress> {
        let end = match value {
            "continue" => false,
            "end" => true,
            _ => return None,
        };
        let mut block = self.current.clone();
        block.end = end;
        Some(block)
    }
}

fn set_if_some<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// A finite, non-negative number; `N/A`, `inf`, `nan` and negatives are `None`.
fn parse_f64(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REAL_BLOCKS: &str = "frame=50\nfps=25.00\nstream_0_0_q=-1.0\nbitrate= 812.3kbits/s\n\
total_size=204848\nout_time_us=2016000\nout_time_ms=2016000\nout_time=00:00:02.016000\n\
dup_frames=0\ndrop_frames=0\nspeed=1.01x\nprogress=continue\n\
frame=75\nfps=25.00\nstream_0_0_q=-1.0\nbitrate=N/A\ntotal_size=N/A\nout_time_us=N/A\n\
out_time_ms=N/A\nout_time=N/A\ndup_frames=0\ndrop_frames=0\nspeed=N/A\nprogress=end\n";

    fn parse_all(text: &str) -> Vec<Progress> {
        let mut p = ProgressParser::new();
        text.lines().filter_map(|l| p.feed_line(l)).collect()
    }

    #[test]
    fn parses_real_ffmpeg_blocks() {
        let blocks = parse_all(REAL_BLOCKS);
        assert_eq!(blocks.len(), 2);
        let first = &blocks[0];
        assert_eq!(first.frames, 50);
        assert_eq!(first.fps, Some(25.0));
        assert_eq!(first.bitrate_kbps, Some(812.3));
        assert_eq!(first.total_size, 204_848);
        assert!((first.out_time_sec - 2.016).abs() < 1e-9);
        assert_eq!(first.speed, Some(1.01));
        assert!(!first.end);
        let last = &blocks[1];
        assert_eq!(last.frames, 75);
        assert!(last.end);
        assert_eq!(last.bitrate_kbps, None, "N/A is no figure");
        assert_eq!(last.total_size, 204_848, "N/A keeps the last known size");
        assert!((last.out_time_sec - 2.016).abs() < 1e-9);
    }

    #[test]
    fn crlf_and_unknown_progress_values_are_tolerated() {
        let blocks = parse_all("frame=3\r\nprogress=paused\r\nframe=4\r\nprogress=continue\r\n");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].frames, 4);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let mut p = ProgressParser::new();
            for line in text.split(['\n', '\r']) {
                if let Some(b) = p.feed_line(line) {
                    prop_assert!(b.out_time_sec >= 0.0);
                }
            }
        }

        #[test]
        fn never_panics_on_key_value_noise(
            lines in proptest::collection::vec(
                ("(frame|fps|bitrate|total_size|out_time_us|speed|progress|x)", ".{0,30}"),
                0..40,
            )
        ) {
            let mut p = ProgressParser::new();
            for (k, v) in lines {
                let _ = p.feed_line(&format!("{k}={v}"));
            }
        }

        #[test]
        fn parses_generated_blocks(frames in 0u64..10_000_000, size in 0u64..u64::MAX / 2,
                                   us in 0i64..1_000_000_000_000, end in any::<bool>()) {
            let text = format!(
                "frame={frames}\nbitrate=100.5kbits/s\ntotal_size={size}\nout_time_us={us}\n\
                 speed=1x\nprogress={}\n",
                if end { "end" } else { "continue" }
            );
            let blocks = parse_all(&text);
            prop_assert_eq!(blocks.len(), 1);
            prop_assert_eq!(blocks[0].frames, frames);
            prop_assert_eq!(blocks[0].total_size, size);
            prop_assert!((blocks[0].out_time_sec - us as f64 / 1e6).abs() < 1e-6);
            prop_assert_eq!(blocks[0].end, end);
        }
    }
}
