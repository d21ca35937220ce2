//! The camera-drop scenario of issue 16 in the test command: a camera killed for 10 s during
//! an event leaves one `COMPLETED` clip with one gap of about 10 s, not `FAILED`, not split.

use lab::camera_drop::{self, DropOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_camera_lost_for_ten_seconds_leaves_one_completed_clip_with_one_gap() {
    camrec_shared::telemetry::init("info,lab=info");
    let log_dir = std::env::temp_dir().join(format!(
        "camrec-lab-drop-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id()
    ));
    let report = camera_drop::run(&DropOptions::new(log_dir))
        .await
        .expect("the run is carried out");
    println!("{report}");
    let playback = report
        .playback
        .as_ref()
        .expect("the event has its playback");
    assert_eq!(playback.recording_status, "COMPLETED", "{report}");
    assert_eq!(report.playbacks, 1, "one clip, not split");
    assert_eq!(report.gaps_sec().len(), 1, "{report}");
    assert!(
        report.passed(Duration::from_secs(4)),
        "one gap within 4 s of the drop and the clip within its window: {report}"
    );
}
