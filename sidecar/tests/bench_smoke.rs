//! `pickline bench grpc --quick` end to end: a server, its load generator and every phase.
//! The figures of so short a run mean nothing; this checks that each phase does its work
//! (every measured figure above zero, no failed request), so the benchmark cannot break
//! unnoticed. Timing is never asserted.

use pickline_sidecar::bench_grpc::{self, GrpcBenchConfig};
use pickline_sidecar::config::DurabilityMode;

#[test]
fn every_phase_of_the_grpc_bench_does_its_work() {
    let dir = std::env::temp_dir().join(format!("pickline-bench-smoke-{}", std::process::id()));
    let cfg = GrpcBenchConfig::quick(dir.clone(), DurabilityMode::Sync);
    let report = bench_grpc::run(&cfg, |_| {}).unwrap();
    assert!(report.ping_rps > 0.0, "{report:?}");
    assert!(report.hold_rps > 0.0, "{report:?}");
    // Only granted holds count: a response decoded wrongly would count none.
    assert!(report.batch_lines_per_s > 0.0, "{report:?}");
    assert!(report.batch_lines_per_s_hold_keys > 0.0, "{report:?}");
    assert!(report.p99_ms_at_half_load > 0.0, "{report:?}");
    // A failed request fails the smoke test; one the server shed (RESOURCE_EXHAUSTED, its
    // in-flight limit reached during a disk stall) is admission control doing its job.
    assert_eq!(report.open_loop_errors, 0, "{report:?}");
    assert!(!dir.exists(), "the bench removes its data directory");
}
