//! The camera-drop scenario (issue 16): a camera that drops for about 10 s during an event. The
//! event's clip must end `COMPLETED`, as one clip (not split, not `FAILED`), with one gap of
//! about the time the camera was away, and still hold its pre-roll and post-roll.
//!
//! One worker, one camera with `preRollSec=3`, `postRollSec=2`: the camera is captured, an event
//! is posted, the camera is killed `before` into it and brought back after `down`; once a worker
//! captures it again the event runs `after` longer and is ended. The clip is then downloaded,
//! probed and measured ([`crate::coverage`]).

use crate::api::{Api, PlaybackView, Rolls};
use crate::checker::{self, CheckError};
use crate::cluster::{self, Cluster, ClusterConfig, ServiceBinaries};
use crate::coverage::{ClipCoverage, Expectation, Violation};
use crate::scenario::{self, EventRecord, Ledger, ScenarioConfig};
use crate::LabError;
use chrono::{DateTime, Utc};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The shape of the drop.
#[derive(Clone, Debug)]
pub struct DropOptions {
    /// From the event's `201` to the camera's kill.
    pub before: Duration,
    /// How long the camera stays dead.
    pub down: Duration,
    /// From the camera's capture being back to the end of the event.
    pub after: Duration,
    pub log_dir: PathBuf,
}

impl DropOptions {
    /// 3 s of event, 10 s without the camera, 3 s of event once it is captured again.
    pub fn new(log_dir: PathBuf) -> Self {
        Self {
            before: Duration::from_secs(3),
            down: Duration::from_secs(10),
            after: Duration::from_secs(3),
            log_dir,
        }
    }
}

/// What became of the event whose camera dropped.
#[derive(Clone, Debug)]
pub struct DropReport {
    pub down: Duration,
    /// When the camera was killed and when it was started again.
    pub killed_at: DateTime<Utc>,
    pub back_at: DateTime<Utc>,
    /// The event's playback as the API shows it at the end.
    pub playback: Option<PlaybackView>,
    /// How many playbacks the API knows (one: the clip was not split).
    pub playbacks: usize,
    /// The clip measured against its window, or why it could not be.
    pub clip: Option<Result<ClipCoverage, Violation>>,
    /// Every rule of [`crate::coverage`] the clip breaks.
    pub violations: Vec<Violation>,
}

impl DropReport {
    /// The gaps of the clip, in seconds.
    pub fn gaps_sec(&self) -> Vec<f64> {
        self.playback
            .as_ref()
            .map(|p| p.gaps.iter().map(crate::api::Gap::seconds).collect())
            .unwrap_or_default()
    }

    /// `COMPLETED`, one playback, one gap within `tolerance` of the time the camera was away,
    /// and the clip within its window.
    pub fn passed(&self, tolerance: Duration) -> bool {
        let completed = self
            .playback
            .as_ref()
            .is_some_and(|p| p.recording_status == "COMPLETED");
        let gaps = self.gaps_sec();
        let one_gap =
            gaps.len() == 1 && (gaps[0] - self.down.as_secs_f64()).abs() <= tolerance.as_secs_f64();
        completed
            && self.playbacks == 1
            && one_gap
            && matches!(self.clip, Some(Ok(_)))
            && self.violations.is_empty()
    }
}

impl fmt::Display for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self
            .playback
            .as_ref()
            .map_or("(none)", |p| p.recording_status.as_str());
        writeln!(
            f,
            "camera dropped for {:.1} s ({} .. {})",
            self.down.as_secs_f64(),
            self.killed_at.format("%H:%M:%S%.3f"),
            self.back_at.format("%H:%M:%S%.3f")
        )?;
        writeln!(f, "playback: {status} (playbacks: {})", self.playbacks)?;
        if let Some(p) = &self.playback {
            for g in &p.gaps {
                writeln!(
                    f,
                    "gap {} .. {} ({:.3} s)",
                    g.from.format("%H:%M:%S%.3f"),
                    g.to.format("%H:%M:%S%.3f"),
                    g.seconds()
                )?;
            }
        }
        match &self.clip {
            Some(Ok(c)) => writeln!(
                f,
                "clip: lead {:+.3} s, tail {:+.3} s, endedAt - startedAt {:.3} s, file {:.3} s",
                c.lead_sec, c.tail_sec, c.wall_sec, c.file_sec
            )?,
            Some(Err(v)) => writeln!(f, "clip: {v}")?,
            None => writeln!(f, "clip: none")?,
        }
        for v in &self.violations {
            writeln!(f, "violation: {v}")?;
        }
        Ok(())
    }
}

/// Runs the scenario on a cluster of its own and stops it.
pub async fn run(opts: &DropOptions) -> Result<DropReport, LabError> {
    let binaries = ServiceBinaries::build_and_locate()?;
    std::fs::create_dir_all(&opts.log_dir)
        .map_err(|e| LabError::LogDir(opts.log_dir.clone(), e))?;
    let config = ClusterConfig::new(1, 1, opts.log_dir.clone());
    let mut cluster = Cluster::start(config, &binaries).await?;
    let result = drop_once(&mut cluster, opts).await;
    cluster.shutdown().await;
    result
}

async fn drop_once(cluster: &mut Cluster, opts: &DropOptions) -> Result<DropReport, LabError> {
    let api = Api::login(
        &cluster.api_url(),
        cluster::ADMIN_USERNAME,
        cluster.admin_password(),
    )
    .await?;
    let rolls = Rolls {
        pre_sec: 3,
        post_sec: 2,
    };
    let mut settings = ScenarioConfig::coverage(1, 1.0, 0);
    settings.rolls = Some(rolls);
    let cameras = scenario::create_cameras(cluster, &api, Some(rolls)).await?;
    scenario::wait_captured(&api, &cameras, &settings).await?;
    let occurred_at = Utc::now();
    let created = api.create_event(cameras[0], Some(occurred_at)).await?;
    tokio::time::sleep(opts.before).await;
    let killed_at = Utc::now();
    cluster.cameras[0].kill();
    tracing::info!(down = ?opts.down, "camera killed during the event");
    tokio::time::sleep(opts.down).await;
    cluster.cameras[0]
        .restart()
        .await
        .map_err(|source| cluster::ClusterError::Part {
            what: "fake camera",
            source,
        })?;
    let back_at = Utc::now();
    // The capture is back once a segment after the restart exists; `captureStatus` says
    // `capturing` again by then.
    settings.rolls = Some(Rolls {
        pre_sec: 0,
        ..rolls
    });
    scenario::wait_captured(&api, &cameras, &settings).await?;
    tokio::time::sleep(opts.after).await;
    api.end_event(created.id).await?;
    let ledger = Ledger {
        events: vec![EventRecord {
            index: 0,
            camera_id: cameras[0],
            occurred_at: Some(occurred_at),
            posted_at: Duration::ZERO,
            event_id: Some(created.id),
            playback_id: created.playback_id,
            planned: opts.before + opts.down + opts.after,
            requested: None,
            end_acknowledged: true,
            create_error: None,
        }],
        faults: Vec::new(),
        planted: Vec::new(),
        cameras,
        rolls: Some(rolls),
        elapsed: Duration::ZERO,
    };
    checker::wait_terminal(&api, &ledger, Duration::from_secs(60)).await;
    let all = api.all_playbacks().await?;
    let playback = created
        .playback_id
        .and_then(|id| all.iter().find(|p| p.id == id).cloned());
    let storage = cluster
        .s3
        .storage()
        .map_err(|e| CheckError::Store(e.to_string()))?;
    let expect = Expectation::lab(rolls, Duration::from_secs(cluster.config.max_recording_sec));
    let coverage = checker::measure_coverage(&storage, &ledger, &all, &expect).await;
    let clip = match (coverage.clips.first(), coverage.violations.first()) {
        (Some(c), _) => Some(Ok(c.clone())),
        (None, Some((_, v))) => Some(Err(v.clone())),
        (None, None) => None,
    };
    Ok(DropReport {
        down: (back_at - killed_at).to_std().unwrap_or(opts.down),
        killed_at,
        back_at,
        playback,
        playbacks: all.len(),
        clip,
        violations: coverage.violations.into_iter().map(|(_, v)| v).collect(),
    })
}
