//! P5: the cost of capture. With no event open, recorder-worker captures N cameras (one FFmpeg
//! each, writing the ring of segments); the worker and every child of it are sampled from /proc
//! for CPU and proportional memory (PSS), divided by N. The baseline is N bare FFmpegs with the
//! same `segment_argv` arguments on the same streams, sampled in the same window: both sides run
//! at once, so they share the machine's load and the libraries' pages alike.
//!
//! In the same window, each camera's ring on the worker's disk is summed: its bytes must be
//! within 10% of the bitrate (what the bare FFmpegs wrote per second of media) times the ring's
//! length (`preRollSec` + `RING_MARGIN_SEC`).

use crate::baseline::{BareCapture, Written};
use crate::ctx::{Camera, Ctx, ROLLS};
use crate::procstat::{self, Usage};
use crate::report::{Cell, Goal, Row, Unit};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Start-up work (connections, probes, first segments) is not steady-state cost.
const SETTLE: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_millis(250);
/// How many times a bare FFmpeg is started before its camera counts as failed.
const START_ATTEMPTS: u32 = 3;
const FIRST_SEGMENT_WITHIN: Duration = Duration::from_secs(30);

/// The bare FFmpegs, one per camera, each with the directory it writes.
async fn start_bare(ctx: &Ctx) -> anyhow::Result<Vec<(BareCapture, PathBuf)>> {
    let mut running = Vec::new();
    for camera in &ctx.cameras {
        let plan = ctx.segment_plan(camera).await?;
        // A camera that drops a new client is tried again, as the worker's capture retries.
        let mut attempt = 1;
        loop {
            match BareCapture::start(ctx.ffmpeg(), &plan, FIRST_SEGMENT_WITHIN).await {
                Ok((capture, _)) => {
                    running.push((capture, plan.dir.clone()));
                    break;
                }
                Err(e) if attempt < START_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "P5 baseline: FFmpeg did not start; trying again");
                    attempt += 1;
                }
                Err(e) => {
                    for (c, dir) in running {
                        c.stop(&dir).await;
                    }
                    return Err(e.into());
                }
            }
        }
    }
    Ok(running)
}

/// The bytes of the segment files directly in `dir` (not the one FFmpeg is writing, under
/// `tmp/`).
fn ring_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() && entry.file_name().to_string_lossy().ends_with(".mp4") {
            bytes += meta.len();
        }
    }
    Ok(bytes)
}

/// The mean over `window` of the rings' bytes per camera.
async fn sample_rings(dirs: &[PathBuf], window: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (mut sum, mut samples) = (0u64, 0u64);
    while started.elapsed() < window {
        tokio::time::sleep(INTERVAL).await;
        for d in dirs {
            sum += ring_bytes(d)?;
        }
        samples += 1;
    }
    Ok(sum as f64 / (samples.max(1) * dirs.len().max(1) as u64) as f64)
}

/// The ring's length: `preRollSec` + `RING_MARGIN_SEC`.
fn ring_secs(ctx: &Ctx) -> u64 {
    u64::from(ROLLS.pre_roll_sec) + ctx.plan.ring_margin_sec
}

struct Measured {
    camrec: Usage,
    bare: Usage,
    ring_bytes_per_camera: f64,
    written: Written,
}

async fn measure(ctx: &Ctx) -> anyhow::Result<Measured> {
    let worker = ctx
        .rig
        .worker
        .pid()
        .ok_or_else(|| anyhow::anyhow!("recorder-worker is not running"))?;
    // A full ring, and a segment more.
    ctx.captured(ring_secs(ctx) + 2).await?;
    let running = start_bare(ctx).await?;
    tokio::time::sleep(SETTLE).await;
    let pids: Vec<u32> = running.iter().filter_map(|(c, _)| c.pid()).collect();
    let rings: Vec<PathBuf> = ctx
        .cameras
        .iter()
        .map(|c: &Camera| ctx.ring_dir(c))
        .collect();
    let window = ctx.plan.p5_window;
    let roots = [worker];
    let (camrec, bare, ring) = tokio::join!(
        procstat::sample(&roots, window, INTERVAL),
        procstat::sample(&pids, window, INTERVAL),
        sample_rings(&rings, window),
    );
    let mut written = Written::default();
    for (c, dir) in running {
        let w = c.stop(&dir).await;
        written.bytes += w.bytes;
        written.media_secs += w.media_secs;
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    Ok(Measured {
        camrec: camrec?,
        bare: bare?,
        ring_bytes_per_camera: ring?,
        written,
    })
}

pub async fn run(ctx: &Ctx) -> Vec<Row> {
    let n = ctx.cameras.len();
    let what = format!("per captured camera, {n} cameras, steady state, no event");
    tracing::info!("P5: {what}");
    let m = match measure(ctx).await {
        Ok(m) => m,
        Err(e) => return vec![Row::error("P5", &what, &e)],
    };
    let per = |v: f64| v / n as f64;
    let cpu = |u: &Usage, worker: bool| {
        let mut d = format!("total {:.1}%, {} processes", u.cpu_percent, u.max_processes);
        if worker {
            d.push_str(&format!(", worker itself {:.2}%", u.roots_cpu_percent));
        }
        Cell::new(per(u.cpu_percent), Unit::CpuPercent).with_detail(d)
    };
    let pss = |u: &Usage, worker: bool| {
        let mut d = format!(
            "total PSS {:.0} MiB, RSS {:.0} MiB, {} processes",
            u.pss_mib, u.rss_mib, u.max_processes
        );
        if worker {
            d.push_str(&format!(", worker itself {:.1} MiB", u.roots_pss_mib));
        }
        Cell::new(per(u.pss_mib), Unit::MiB).with_detail(d)
    };
    let per_core = |u: &Usage| {
        let one = per(u.cpu_percent);
        Cell::new(if one > 0.0 { 100.0 / one } else { 0.0 }, Unit::Count)
    };
    let mut rows = vec![
        Row::new(
            "P5",
            format!("CPU {what}"),
            cpu(&m.camrec, true),
            Goal::AtMost(1.1),
        )
        .against(cpu(&m.bare, false)),
        Row::new(
            "P5",
            format!("memory (PSS) {what}"),
            pss(&m.camrec, true),
            Goal::AtMost(1.25),
        )
        .against(pss(&m.bare, false)),
        Row::new(
            "P5",
            "cameras captured per core (100% / CPU per camera)",
            per_core(&m.camrec),
            Goal::Info,
        )
        .against(per_core(&m.bare)),
    ];
    let ring_sec = ring_secs(ctx);
    let what = format!("ring on disk per camera ({ring_sec} s: preRollSec + RING_MARGIN_SEC)");
    if m.written.media_secs > 0.0 {
        let bitrate = m.written.bytes as f64 / m.written.media_secs;
        let mib = |b: f64| b / (1024.0 * 1024.0);
        rows.push(
            Row::new(
                "P5",
                what,
                Cell::new(mib(m.ring_bytes_per_camera), Unit::MiB)
                    .with_detail("segment files in _capture/<camera_id>/, mean of the window"),
                Goal::Within(0.1),
            )
            .against(
                Cell::new(mib(bitrate * ring_sec as f64), Unit::MiB).with_detail(format!(
                    "bitrate {:.0} kbit/s × {ring_sec} s",
                    bitrate * 8.0 / 1000.0
                )),
            ),
        );
    } else {
        rows.push(Row::error(
            "P5",
            &what,
            &anyhow::anyhow!("the bare FFmpegs wrote no segment"),
        ));
    }
    rows
}
