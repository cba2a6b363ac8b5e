//! `pickline bench grpc --quick` end to end: a server, its load generator and every phase.
//! The figures of so short a run mean nothing; this checks that each phase does its work
//! (every measured figure above zero, no failed request), so the benchmark cannot break
//! unnoticed. Timing is never asserted.
//!
//! The benchmark drivers are modules of the `pickline` binary, not of the library, so the
//! test runs the binary and reads its `--json` report.

use std::process::Command;

#[test]
fn every_phase_of_the_grpc_bench_does_its_work() {
    let dir = std::env::temp_dir().join(format!("pickline-bench-smoke-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_pickline"))
        .args([
            "bench",
            "grpc",
            "--quick",
            "--json",
            "--durability",
            "sync",
            "--dir",
        ])
        .arg(&dir)
        .env_remove("PICKLINE_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let figure = |name: &str| {
        report[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no figure {name}: {report}"))
    };
    assert_eq!(report["durability"], "sync", "{report}");
    assert!(figure("ping_rps") > 0.0, "{report}");
    assert!(figure("hold_rps") > 0.0, "{report}");
    // Only granted holds count: a response decoded wrongly would count none.
    assert!(figure("batch_lines_per_s") > 0.0, "{report}");
    assert!(figure("batch_lines_per_s_hold_keys") > 0.0, "{report}");
    assert!(figure("p99_ms_at_half_load") > 0.0, "{report}");
    // A failed request fails the smoke test; one the server shed (RESOURCE_EXHAUSTED, its
    // in-flight limit reached during a disk stall) is admission control doing its job.
    assert_eq!(report["open_loop_errors"], 0, "{report}");
    assert!(!dir.exists(), "the bench removes its data directory");
}
