//! Criterion benches of the engine's hot paths (WAL off). `cargo bench -p pickline-benches`.
//! The figures quoted in docs/BENCHMARKS.md come from `pickline bench engine`, which runs
//! the same workloads multi-threaded; these benches are for comparing changes.

use criterion::{Criterion, criterion_group, criterion_main};
use pickline_benches::engine_bench::stocked_engine;
use pickline_engine::{HoldOutcome, HoldRequest, LineRequest, Timestamp};
use std::hint::black_box;

fn hold_release(c: &mut Criterion) {
    let engine = stocked_engine(4, 1_000);
    let now = Timestamp(1_780_000_000_000);
    let one = HoldRequest::new("store-00001", vec![LineRequest::new("SKU-0000042", 1)]);
    let five = HoldRequest::new(
        "store-00002",
        (0..5)
            .map(|k| LineRequest::new(format!("SKU-{:07}", k * 97), 1))
            .collect(),
    );
    let mut g = c.benchmark_group("engine");
    g.bench_function("hold_release_1_line", |b| {
        b.iter(|| {
            if let HoldOutcome::Granted(h) = engine.hold(black_box(&one), now).unwrap() {
                engine.release(h.hold, now).unwrap();
            }
        })
    });
    g.bench_function("hold_release_5_lines", |b| {
        b.iter(|| {
            if let HoldOutcome::Granted(h) = engine.hold(black_box(&five), now).unwrap() {
                engine.release(h.hold, now).unwrap();
            }
        })
    });
    g.bench_function("availability_read", |b| {
        b.iter(|| {
            engine
                .availability(black_box("store-00003"), black_box("SKU-0000007"))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, hold_release);
criterion_main!(benches);
