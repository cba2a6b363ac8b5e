//! Benchmark workloads shared by the criterion benches (`cargo bench -p pickline-benches`)
//! and the `pickline bench` command, so both measure the same code paths.

pub mod alloc_bench;
pub mod compare;
pub mod engine_bench;
pub mod sim;
pub mod wal_bench;
pub mod zipf;
