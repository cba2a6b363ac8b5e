//! Allocation workload: `allocate` + `release` loops over a country-sized store network.
//! WAL off: this measures the engine (geo search, candidate checks, holds, estimate).
//!
//! Network: `stores` stores at random positions in a box of about 900 x 650 km
//! (Germany-sized), `skus` SKUs interned. Stock is sparse so memory stays sane (a stock
//! page is 1,024 cells of 16 bytes, allocated on first use): every store stocks
//! `stocked_per_store` SKUs drawn from the `popular` first SKU ids (two pages), and the
//! requests ask for popular SKUs, one or two lines each.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use hdrhistogram::Histogram;
use pickline_engine::calendar::{
    CalendarConfig, LocalInterval, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
};
use pickline_engine::{
    AllocateOutcome, AllocateRequest, Engine, EngineConfig, Limits, LineRequest, PosDelta,
    PosDeltaKind, StoreDef, Timestamp,
};

use crate::zipf::Rng;

/// What to run.
#[derive(Debug, Clone)]
pub struct AllocBenchConfig {
    /// Stores in the network.
    pub stores: u32,
    /// SKUs interned.
    pub skus: u32,
    /// SKUs requests draw from (the first ids); every store stocks some of them.
    pub popular: u32,
    /// SKUs each store stocks, drawn from the popular ones.
    pub stocked_per_store: u32,
    /// Worker threads.
    pub threads: usize,
    /// Allocate + release loops per thread.
    pub ops_per_thread: usize,
    /// Give every store a pickup calendar (estimates and opening-hour checks on).
    pub calendars: bool,
}

impl Default for AllocBenchConfig {
    fn default() -> Self {
        AllocBenchConfig {
            stores: 2_000,
            skus: 20_000,
            popular: 2_000,
            stocked_per_store: 400,
            threads: 2,
            ops_per_thread: 300_000,
            calendars: false,
        }
    }
}

impl AllocBenchConfig {
    /// A small configuration for smoke tests.
    pub fn quick() -> Self {
        AllocBenchConfig {
            stores: 200,
            skus: 2_000,
            popular: 500,
            stocked_per_store: 200,
            threads: 2,
            ops_per_thread: 20_000,
            calendars: false,
        }
    }
}

/// The figures `pickline bench allocate` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocBenchReport {
    /// `allocate` calls per second over all threads (each followed by a release when
    /// allocated; the release is included in the wall time).
    pub allocations_per_s: f64,
    /// 99th percentile latency of one `allocate` call, microseconds.
    pub allocate_p99_us: f64,
    /// Median latency of one `allocate` call, microseconds.
    pub allocate_p50_us: f64,
    /// Share of calls that allocated.
    pub allocated_ratio: f64,
    /// Whether stores had calendars.
    pub calendars: bool,
}

impl AllocBenchReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"allocations_per_s\":{:.0},\"allocate_p99_us\":{:.2},",
                "\"allocate_p50_us\":{:.2},\"allocated_ratio\":{:.4},\"calendars\":{}}}"
            ),
            self.allocations_per_s,
            self.allocate_p99_us,
            self.allocate_p50_us,
            self.allocated_ratio,
            self.calendars
        )
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        format!(
            "{:<20} {:>14} {:>12}\n{:<20} {:>14.0} {:>12}\n{:<20} {:>14.2} {:>12}\n{:<20} {:>14.2} {:>12}\n{:<20} {:>14.4} {:>12}\n",
            "figure",
            "value",
            "target",
            "allocations_per_s",
            self.allocations_per_s,
            ">= 200,000",
            "allocate_p99_us",
            self.allocate_p99_us,
            "<= 50",
            "allocate_p50_us",
            self.allocate_p50_us,
            "",
            "allocated_ratio",
            self.allocated_ratio,
            ""
        )
    }
}

const T0: Timestamp = Timestamp(1_795_680_000_000); // 2026-11-26T08:00:00Z, a Thursday
const STOCK_PER_CELL: i64 = 1_000_000_000;
const LAT_RANGE: (f64, f64) = (47.5, 55.0);
const LON_RANGE: (f64, f64) = (6.0, 15.0);

fn uniform(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * (rng.below(1 << 30) as f64 / f64::from(1u32 << 30))
}

fn calendar() -> Option<CalendarConfig> {
    Some(CalendarConfig {
        time_zone: "Europe/Berlin".into(),
        weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((7, 0), (22, 0)).ok()?]),
        exceptions: Vec::new(),
        pickup: PickupConfig {
            slot_len_min: 30,
            lead_time_min: 30,
            hold_grace_min: 30,
            pickups_per_staff_per_slot: 10,
        },
        staffing: WeeklyStaffing::every_day(&[StaffShift::hm((7, 0), (22, 0), 4).ok()?]),
    })
}

/// The store network with sparse stock.
pub fn network(cfg: &AllocBenchConfig) -> Engine {
    let engine = Engine::new(EngineConfig {
        limits: Limits {
            skus_max: cfg.skus.next_power_of_two().max(1024),
            stores_max: cfg.stores.next_power_of_two().max(16),
            ..Limits::default()
        },
    })
    .expect("bench config is valid");
    for k in 0..cfg.skus {
        engine.intern_sku(&format!("SKU-{k:07}"), T0).expect("sku");
    }
    let mut rng = Rng::new(42);
    for s in 0..cfg.stores {
        let name = format!("store-{s:05}");
        let def = StoreDef::new(
            name.clone(),
            uniform(&mut rng, LAT_RANGE),
            uniform(&mut rng, LON_RANGE),
            "Europe/Berlin",
        );
        engine.define_store(def, T0).expect("store");
        if cfg.calendars
            && let Some(c) = calendar()
        {
            engine.set_calendar(&name, c, T0).expect("calendar");
        }
        for _ in 0..cfg.stocked_per_store {
            let k = rng.below(u64::from(cfg.popular.max(1)));
            engine
                .apply_delta(
                    &PosDelta {
                        store: name.clone(),
                        sku: format!("SKU-{k:07}"),
                        pos_event_id: format!("init-{k}"),
                        kind: PosDeltaKind::Receive,
                        qty: STOCK_PER_CELL,
                        order_ref: None,
                        pos_time: T0,
                    },
                    T0,
                )
                .expect("stock");
        }
    }
    engine
}

/// Pre-built requests, so the loop measures `allocate`, not formatting.
fn requests(cfg: &AllocBenchConfig, seed: u64, n: usize) -> Vec<AllocateRequest> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let mut lines = vec![LineRequest::new(
                format!("SKU-{:07}", rng.below(u64::from(cfg.popular.max(1)))),
                1,
            )];
            if i % 4 == 0 {
                lines.push(LineRequest::new(
                    format!("SKU-{:07}", rng.below(u64::from(cfg.popular.max(1)))),
                    1,
                ));
            }
            let mut req = AllocateRequest::near(
                uniform(&mut rng, LAT_RANGE),
                uniform(&mut rng, LON_RANGE),
                lines,
            );
            req.max_distance_km = 50.0;
            req.max_candidates = 10;
            req.alternatives_max = 3;
            req
        })
        .collect()
}

/// Runs the workload.
pub fn run(cfg: &AllocBenchConfig, mut progress: impl FnMut(&str)) -> AllocBenchReport {
    progress("building the store network");
    let engine = Arc::new(network(cfg));
    progress("running allocate + release loops");
    const DISTINCT_REQUESTS: usize = 4_096;
    let barrier = Arc::new(Barrier::new(cfg.threads + 1));
    let handles: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let engine = engine.clone();
            let barrier = barrier.clone();
            let reqs = requests(cfg, 1_000 + t as u64, DISTINCT_REQUESTS);
            let ops = cfg.ops_per_thread;
            std::thread::spawn(move || {
                // 1 ns .. 1 s, 3 significant digits.
                let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)
                    .expect("histogram bounds are valid");
                let mut allocated = 0u64;
                barrier.wait();
                for i in 0..ops {
                    let req = &reqs[i % reqs.len()];
                    let start = Instant::now();
                    let out = engine.allocate(req, T0).expect("allocate");
                    let ns = start.elapsed().as_nanos() as u64;
                    let _ = hist.record(ns.max(1));
                    if let AllocateOutcome::Allocated { parts, .. } = out {
                        allocated += 1;
                        for p in parts {
                            engine.release(p.grant.hold, T0).expect("release");
                        }
                    }
                }
                (hist, allocated)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("histogram bounds are valid");
    let mut allocated = 0u64;
    for h in handles {
        let (th, a) = h.join().expect("worker");
        let _ = hist.add(th);
        allocated += a;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = (cfg.ops_per_thread * cfg.threads) as f64;
    AllocBenchReport {
        allocations_per_s: total / secs,
        allocate_p99_us: hist.value_at_quantile(0.99) as f64 / 1_000.0,
        allocate_p50_us: hist.value_at_quantile(0.5) as f64 / 1_000.0,
        allocated_ratio: allocated as f64 / total,
        calendars: cfg.calendars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_allocates_and_reports() {
        let cfg = AllocBenchConfig {
            ops_per_thread: 2_000,
            calendars: true,
            ..AllocBenchConfig::quick()
        };
        let r = run(&cfg, |_| {});
        assert!(r.allocations_per_s > 0.0);
        assert!(r.allocated_ratio > 0.5, "{r:?}");
        assert!(r.to_json().starts_with("{\"allocations_per_s\":"));
    }
}
