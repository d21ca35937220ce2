//! The short fault-injection run of the test command, and its control run.
//!
//! The service binaries are built by `cargo build -p event-api -p recorder-worker` into this test's
//! own target directory and profile (see `lab::cluster::ServiceBinaries::build_and_locate`); in a
//! workspace test run they are already built and that takes a second.

use lab::faults::FaultKind;
use lab::plant::Plant;
use lab::scenario::ScenarioConfig;
use lab::RunOptions;
use std::time::Duration;

fn init_logs() {
    camrec_shared::telemetry::init("info,lab=info");
}

/// ~90 events over three minutes, every fault kind once, among them NATS stopped for 30 s while
/// recordings run, twice event-api's `STALE_PLAYBACK_SEC` of 15 s: nothing lost, nothing stuck,
/// no duplicate, every stored clip `COMPLETED`, every fault undone, no FFmpeg outliving a killed
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_run_with_every_fault_loses_nothing() {
    init_logs();
    let mut scenario = ScenarioConfig::new(90, 0.5, 42);
    scenario.min_duration_sec = 3;
    scenario.max_duration_sec = 8;
    scenario.nats_outage = Duration::from_secs(30);
    let mut opts = RunOptions::new(scenario, 2, 3);
    opts.stale_playback_sec = 15;
    opts.drain_deadline = Duration::from_secs(110);
    let report = lab::run(&opts).await.expect("the run is carried out");
    println!("{report}");
    assert!(report.acknowledged >= 75, "most events are acknowledged");
    for kind in FaultKind::ALL {
        assert_eq!(
            report.faults.get(kind.as_str()),
            Some(&1),
            "{kind} injected once"
        );
    }
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert!(report.stuck.is_empty(), "stuck: {:?}", report.stuck);
    assert!(
        report.duplicates.is_empty(),
        "duplicates: {:?}",
        report.duplicates
    );
    assert!(
        report.clips_not_completed.is_empty(),
        "stored clips not COMPLETED: {:?}",
        report.clips_not_completed
    );
    assert!(
        report.recordings_at_outage.iter().all(|n| *n > 0),
        "NATS stopped while recordings ran: {:?}",
        report.recordings_at_outage
    );
    assert!(report.fault_errors.is_empty(), "{:?}", report.fault_errors);
    assert_eq!(report.orphan_processes, 0);
    assert!(report.completed > 0);
    assert!(report.passed());
}

/// The control run: an `event.created` outbox row deleted behind event-api's back while NATS is
/// down must show up as a loss of exactly that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_run_reports_a_planted_outbox_loss() {
    init_logs();
    let mut scenario = ScenarioConfig::new(16, 1.0, 7);
    scenario.min_duration_sec = 2;
    scenario.max_duration_sec = 4;
    scenario.faults = vec![FaultKind::NatsKill];
    scenario.plant = Some(Plant::DropOutbox);
    let mut opts = RunOptions::new(scenario, 1, 1);
    // The victim's playback stays PENDING until PENDING_TIMEOUT_SEC: no need to wait for it.
    opts.drain_deadline = Duration::from_secs(45);
    let report = lab::run(&opts).await.expect("the run is carried out");
    println!("{report}");
    assert_eq!(report.planted.len(), 1, "one row was deleted");
    assert!(!report.passed(), "the checker fails the run");
    assert!(
        report.caught_every_plant(),
        "the loss reported is the planted one: {:?}",
        report.lost
    );
}
