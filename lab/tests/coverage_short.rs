//! The short coverage run of the test command (issue 16): cameras with `preRollSec=3` and
//! `postRollSec=2`, events posted with an `occurredAt` a little before their request, and every
//! completed clip downloaded, probed and held against its window (`lab::coverage`). The full
//! run (200 events on 4 cameras) is `faultrun --coverage`, figures in docs/reliability.md.

use lab::scenario::ScenarioConfig;
use lab::RunOptions;
use std::time::Duration;

/// 12 events of 2-6 s on 2 cameras, one worker, no fault: every event completes, and every
/// clip starts within a keyframe interval of `occurredAt - 3 s`, ends no earlier than 0.5 s
/// before `end + 2 s`, and its file's duration agrees with `endedAt - startedAt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_coverage_run_holds_every_pre_and_post_roll() {
    camrec_shared::telemetry::init("info,lab=info");
    let mut scenario = ScenarioConfig::coverage(12, 1.0, 16);
    scenario.min_duration_sec = 2;
    scenario.max_duration_sec = 6;
    let mut opts = RunOptions::new(scenario, 1, 2);
    opts.drain_deadline = Duration::from_secs(60);
    let report = lab::run(&opts).await.expect("the run is carried out");
    println!("{report}");
    assert_eq!(report.acknowledged, 12);
    assert_eq!(report.completed, 12, "no fault: every event completes");
    let coverage = report.coverage.as_ref().expect("coverage is measured");
    assert_eq!(coverage.checked(), 12);
    assert!(coverage.violations.is_empty(), "{:?}", coverage.violations);
    assert!(coverage.lead().max <= 1.0);
    assert!(coverage.tail().min >= -0.5);
    assert!(report.passed());
}
