//! The harness's smoke, part of the test command: `bench --quick` starts the whole system,
//! measures every figure once with tiny counts and prints a row for each, without a failed
//! measurement. (Debug builds: the figures themselves mean nothing here; the full run is
//! `cargo run --release --bin bench`.)

use std::process::Command;

#[test]
fn quick_run_measures_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench --quick failed\n{stdout}\n{stderr}"
    );
    let report = std::fs::read_to_string(&out).unwrap();
    for figure in ["P1", "P2", "P3", "P4", "P5", "P6"] {
        assert!(
            report.contains(&format!("| {figure} |")),
            "no {figure} row in\n{report}"
        );
    }
    assert!(!report.contains("| ERROR |"), "{report}");
    assert!(
        report.contains("## Machine") && report.contains("- ffmpeg: "),
        "{report}"
    );
    assert!(report.contains("--bin bench -- --quick"), "{report}");
    assert!(stdout.contains("| figure | camrec | baseline | ratio | goal | result |"));
}
