//! In-process engine workloads: hold + release pairs, hot keys, 5-line orders, memory per
//! cell. WAL off: these measure the engine itself.
//!
//! Method: every workload runs `rounds` times, interleaved (uniform, Zipf, uniform, ...), so
//! that machine noise hits all of them alike; each figure is the median of its rounds.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pickline_engine::stream::{EventStream, STREAM_RETAINED_MAX};
use pickline_engine::{
    Engine, EngineConfig, HoldOutcome, HoldRequest, Limits, LineRequest, Lsn, NoLog, PosDelta,
    PosDeltaKind, StoreDef, Timestamp,
};

use crate::zipf::{Rng, Zipf};

/// What to run.
#[derive(Debug, Clone)]
pub struct EngineBenchConfig {
    /// Stores in the throughput workloads.
    pub stores: u32,
    /// SKUs per store in the throughput workloads.
    pub skus: u32,
    /// Hold + release pairs per thread per round.
    pub pairs_per_thread: usize,
    /// Rounds per workload (figures are medians).
    pub rounds: usize,
    /// Stores x SKUs of the memory measurement (10M cells by default).
    pub memory_stores: u32,
    /// SKUs per store of the memory measurement.
    pub memory_skus: u32,
    /// Zipf exponent of the hot-key workload.
    pub zipf_s: f64,
    /// Active holds in the memory-per-hold measurement.
    pub memory_holds: u64,
}

impl Default for EngineBenchConfig {
    fn default() -> Self {
        EngineBenchConfig {
            stores: 100,
            skus: 10_000,
            pairs_per_thread: 500_000,
            rounds: 5,
            memory_stores: 1_000,
            memory_skus: 10_000,
            zipf_s: 1.2,
            memory_holds: 10_000_000,
        }
    }
}

impl EngineBenchConfig {
    /// A small configuration for smoke tests.
    pub fn quick() -> Self {
        EngineBenchConfig {
            stores: 10,
            skus: 1_000,
            pairs_per_thread: 20_000,
            rounds: 3,
            memory_stores: 10,
            memory_skus: 10_000,
            zipf_s: 1.2,
            memory_holds: 100_000,
        }
    }
}

/// The figures `pickline bench engine` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineBenchReport {
    /// Single-line hold + release pairs per second, uniform keys, 1 thread.
    pub holds_per_s_1t: f64,
    /// The same, 2 threads.
    pub holds_per_s_2t: f64,
    /// The same with an idempotency key on every hold, 1 thread.
    pub keyed_holds_per_s_1t: f64,
    /// Pairs per second with Zipf-distributed keys, 2 threads.
    pub zipf_holds_per_s_2t: f64,
    /// `zipf_holds_per_s_2t / holds_per_s_2t`.
    pub hot_vs_uniform: f64,
    /// 5-line atomic hold + release pairs per second, 2 threads.
    pub orders5_per_s: f64,
    /// Resident memory per stock cell at `memory_stores x memory_skus` cells.
    pub bytes_per_cell: f64,
    /// Cells in the memory measurement.
    pub memory_cells: u64,
    /// Resident memory per active hold at `memory_holds` keyed one-line holds: the hold,
    /// its expiry entry, its idempotency entry and aging-queue entry (a 36-byte key), and
    /// its share of the event stream's retention (`STREAM_RETAINED_MAX` events).
    pub bytes_per_active_hold: f64,
    /// Active holds in that measurement.
    pub memory_holds: u64,
}

impl EngineBenchReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"holds_per_s_1t\":{:.0},\"holds_per_s_2t\":{:.0},",
                "\"keyed_holds_per_s_1t\":{:.0},\"zipf_holds_per_s_2t\":{:.0},",
                "\"hot_vs_uniform\":{:.3},\"orders5_per_s\":{:.0},",
                "\"bytes_per_cell\":{:.2},\"memory_cells\":{},",
                "\"bytes_per_active_hold\":{:.1},\"memory_holds\":{}}}"
            ),
            self.holds_per_s_1t,
            self.holds_per_s_2t,
            self.keyed_holds_per_s_1t,
            self.zipf_holds_per_s_2t,
            self.hot_vs_uniform,
            self.orders5_per_s,
            self.bytes_per_cell,
            self.memory_cells,
            self.bytes_per_active_hold,
            self.memory_holds
        )
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let rows = [
            (
                "holds_per_s_1t",
                format!("{:.0}", self.holds_per_s_1t),
                ">= 1,000,000",
            ),
            ("holds_per_s_2t", format!("{:.0}", self.holds_per_s_2t), ""),
            (
                "keyed_holds_per_s_1t",
                format!("{:.0}", self.keyed_holds_per_s_1t),
                "",
            ),
            (
                "zipf_holds_per_s_2t",
                format!("{:.0}", self.zipf_holds_per_s_2t),
                "",
            ),
            (
                "hot_vs_uniform",
                format!("{:.3}", self.hot_vs_uniform),
                ">= 0.8",
            ),
            ("orders5_per_s", format!("{:.0}", self.orders5_per_s), ""),
            (
                "bytes_per_cell",
                format!("{:.2} ({} cells)", self.bytes_per_cell, self.memory_cells),
                "<= 32",
            ),
            (
                "bytes_per_active_hold",
                format!(
                    "{:.1} ({} holds)",
                    self.bytes_per_active_hold, self.memory_holds
                ),
                "<= 200",
            ),
        ];
        let mut out = format!("{:<22} {:>28} {:>14}\n", "figure", "median", "target");
        for (k, v, t) in rows {
            out.push_str(&format!("{k:<22} {v:>28} {t:>14}\n"));
        }
        out
    }
}

const T0: Timestamp = Timestamp(1_780_000_000_000);
const STOCK_PER_CELL: i64 = 1_000_000_000;

fn store_name(i: u32) -> String {
    format!("store-{i:05}")
}

fn sku_name(i: u32) -> String {
    format!("SKU-{i:07}")
}

/// An engine with `stores x skus` cells, each with plenty of stock.
pub fn stocked_engine(stores: u32, skus: u32) -> Engine {
    let engine = Engine::new(EngineConfig {
        limits: Limits {
            skus_max: skus.next_power_of_two().max(1024),
            stores_max: stores.next_power_of_two().max(16),
            ..Limits::default()
        },
    })
    .expect("bench config is valid");
    for s in 0..stores {
        let mut def = StoreDef::new(store_name(s), 52.0, 13.0, "Europe/Berlin");
        def.max_hold_ms = 24 * 3_600_000;
        engine.define_store(def, T0).expect("store");
        for k in 0..skus {
            engine
                .apply_delta(
                    &PosDelta {
                        store: store_name(s),
                        sku: sku_name(k),
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

/// Pre-built requests: one per (store, SKU) cell, plus key sequences per thread.
struct Workload {
    requests: Vec<HoldRequest>,
}

impl Workload {
    fn single_line(stores: u32, skus: u32) -> Self {
        let mut requests = Vec::with_capacity((stores * skus) as usize);
        for s in 0..stores {
            for k in 0..skus {
                requests.push(HoldRequest::new(
                    store_name(s),
                    vec![LineRequest::new(sku_name(k), 1)],
                ));
            }
        }
        Workload { requests }
    }
}

#[derive(Clone, Copy)]
enum Keys {
    Uniform,
    Zipf(f64),
}

fn key_sequence(n_keys: usize, len: usize, keys: Keys, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    match keys {
        Keys::Uniform => (0..len).map(|_| rng.below(n_keys as u64) as u32).collect(),
        Keys::Zipf(s) => {
            let z = Zipf::new(n_keys, s);
            // Scatter ranks over the key space, so the hot keys are not all in one store.
            let scatter: Vec<u32> = {
                let mut v: Vec<u32> = (0..n_keys as u32).collect();
                let mut r = Rng::new(seed ^ 0x5555);
                for i in (1..v.len()).rev() {
                    v.swap(i, r.below(i as u64 + 1) as usize);
                }
                v
            };
            (0..len).map(|_| scatter[z.sample(&mut rng)]).collect()
        }
    }
}

/// Runs `threads` threads, each doing hold + release for every request index in its
/// sequence; returns pairs per second.
fn run_pairs(
    engine: &Arc<Engine>,
    requests: &Arc<Vec<HoldRequest>>,
    seqs: Vec<Vec<u32>>,
    keyed: bool,
) -> f64 {
    let threads = seqs.len();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = seqs
        .into_iter()
        .enumerate()
        .map(|(t, seq)| {
            let engine = engine.clone();
            let requests = requests.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let keyed_reqs: Vec<HoldRequest> = if keyed {
                    seq.iter()
                        .enumerate()
                        .map(|(i, k)| {
                            requests[*k as usize]
                                .clone()
                                .with_key(format!("k{t}-{i}-{}", T0.0))
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                barrier.wait();
                let mut ok = 0usize;
                for (i, k) in seq.iter().enumerate() {
                    let req = if keyed {
                        &keyed_reqs[i]
                    } else {
                        &requests[*k as usize]
                    };
                    if let Ok(HoldOutcome::Granted(g)) = engine.hold(req, T0) {
                        ok += 1;
                        let _ = engine.release(g.hold, T0);
                    }
                }
                barrier.wait();
                ok
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let elapsed = start.elapsed();
    let ok: usize = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .sum();
    ok as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Resident set size of this process in bytes (Linux), if readable.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY-free: the page size on x86_64 Linux is 4 KiB; sysconf is not needed here.
    Some(pages * 4096)
}

/// Resident bytes per stock cell at `stores x skus` cells, every cell touched.
pub fn bytes_per_cell(stores: u32, skus: u32) -> f64 {
    let before = rss_bytes().unwrap_or(0);
    let engine = Engine::new(EngineConfig {
        limits: Limits {
            skus_max: skus.max(1024),
            stores_max: stores.max(16),
            ..Limits::default()
        },
    })
    .expect("config");
    let sku_names: Vec<String> = (0..skus).map(sku_name).collect();
    for s in 0..stores {
        let name = store_name(s);
        engine
            .define_store(StoreDef::new(name.clone(), 50.0, 10.0, "Europe/Berlin"), T0)
            .expect("store");
        for k in &sku_names {
            engine.set_safety_stock(&name, k, 0, T0).expect("cell");
        }
    }
    let after = rss_bytes().unwrap_or(0);
    let cells = u64::from(stores) * u64::from(skus);
    drop(engine);
    after.saturating_sub(before) as f64 / cells as f64
}

/// Resident bytes per active hold at `holds` keyed one-line holds over `STORES_FOR_HOLDS`
/// stores of 1,000 SKUs, with the event stream in front of the log as the sidecar runs
/// it: the hold, its expiry entry, its idempotency entry (a 36-byte key, as a UUID) with
/// its aging-queue entry, and its share of the stream's retention.
pub fn bytes_per_active_hold(holds: u64) -> f64 {
    const STORES_FOR_HOLDS: u32 = 100;
    const SKUS_FOR_HOLDS: u32 = 1_000;
    let stream = Arc::new(EventStream::starting_after(
        Arc::new(NoLog::default()),
        STREAM_RETAINED_MAX,
        Lsn::ZERO,
    ));
    let engine = Engine::with_log(
        EngineConfig {
            limits: Limits {
                store_active_holds_max: usize::try_from(holds).unwrap_or(usize::MAX),
                ..Limits::default()
            },
        },
        stream.clone(),
    )
    .expect("config");
    for s in 0..STORES_FOR_HOLDS {
        let mut def = StoreDef::new(store_name(s), 52.0, 13.0, "Europe/Berlin");
        def.max_hold_ms = 24 * 3_600_000;
        engine.define_store(def, T0).expect("store");
        for k in 0..SKUS_FOR_HOLDS {
            engine
                .apply_delta(
                    &PosDelta {
                        store: store_name(s),
                        sku: sku_name(k),
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
    let sku_names: Vec<String> = (0..SKUS_FOR_HOLDS).map(sku_name).collect();
    let store_names: Vec<String> = (0..STORES_FOR_HOLDS).map(store_name).collect();
    let mut rng = Rng::new(5);
    let before = rss_bytes().unwrap_or(0);
    for _ in 0..holds {
        let a = rng.next_u64();
        let b = rng.next_u64();
        let key = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        let req = HoldRequest::new(
            store_names[rng.below(u64::from(STORES_FOR_HOLDS)) as usize].clone(),
            vec![LineRequest::new(
                sku_names[rng.below(u64::from(SKUS_FOR_HOLDS)) as usize].clone(),
                1,
            )],
        )
        .with_key(key);
        let granted = matches!(engine.hold(&req, T0), Ok(HoldOutcome::Granted(_)));
        assert!(granted, "every hold of the memory measurement is granted");
    }
    let after = rss_bytes().unwrap_or(0);
    assert_eq!(engine.active_holds() as u64, holds);
    drop(engine);
    drop(stream);
    after.saturating_sub(before) as f64 / holds.max(1) as f64
}

/// Runs every engine workload.
pub fn run(cfg: &EngineBenchConfig, mut progress: impl FnMut(&str)) -> EngineBenchReport {
    progress("memory per cell");
    let bytes_per_cell = bytes_per_cell(cfg.memory_stores, cfg.memory_skus);
    progress("memory per active hold");
    let bytes_per_active_hold = bytes_per_active_hold(cfg.memory_holds);

    progress("stocking the engine");
    let engine = Arc::new(stocked_engine(cfg.stores, cfg.skus));
    let requests = Arc::new(Workload::single_line(cfg.stores, cfg.skus).requests);
    let n_keys = requests.len();
    let orders5: Arc<Vec<HoldRequest>> = Arc::new({
        let mut rng = Rng::new(99);
        (0..n_keys.min(200_000))
            .map(|_| {
                let s = rng.below(u64::from(cfg.stores)) as u32;
                let mut skus: Vec<u32> = Vec::new();
                while skus.len() < 5 {
                    let k = rng.below(u64::from(cfg.skus)) as u32;
                    if !skus.contains(&k) {
                        skus.push(k);
                    }
                }
                HoldRequest::new(
                    store_name(s),
                    skus.iter()
                        .map(|k| LineRequest::new(sku_name(*k), 1))
                        .collect(),
                )
            })
            .collect()
    });

    let n = cfg.pairs_per_thread;
    let mut r1 = Vec::new();
    let mut r2 = Vec::new();
    let mut rk = Vec::new();
    let mut rz = Vec::new();
    let mut r5 = Vec::new();
    for round in 0..cfg.rounds {
        let seed = 1 + round as u64 * 1000;
        progress(&format!("round {}/{}", round + 1, cfg.rounds));
        r1.push(run_pairs(
            &engine,
            &requests,
            vec![key_sequence(n_keys, n, Keys::Uniform, seed)],
            false,
        ));
        r2.push(run_pairs(
            &engine,
            &requests,
            (0..2)
                .map(|t| key_sequence(n_keys, n, Keys::Uniform, seed + t))
                .collect(),
            false,
        ));
        rz.push(run_pairs(
            &engine,
            &requests,
            (0..2)
                .map(|t| key_sequence(n_keys, n, Keys::Zipf(cfg.zipf_s), seed + t))
                .collect(),
            false,
        ));
        rk.push(run_pairs(
            &engine,
            &requests,
            vec![key_sequence(n_keys, n / 2, Keys::Uniform, seed + 7)],
            true,
        ));
        r5.push(run_pairs(
            &engine,
            &orders5,
            (0..2)
                .map(|t| key_sequence(orders5.len(), n / 5, Keys::Uniform, seed + 11 + t))
                .collect(),
            false,
        ));
        // Keyed holds leave idempotency entries; age them out so rounds stay comparable.
        let _ = engine.expire(T0.add_ms(engine.config().limits.dedupe_window_ms + 1), 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let holds_per_s_2t = median(r2);
    let zipf = median(rz);
    EngineBenchReport {
        holds_per_s_1t: median(r1),
        holds_per_s_2t,
        keyed_holds_per_s_1t: median(rk),
        zipf_holds_per_s_2t: zipf,
        hot_vs_uniform: zipf / holds_per_s_2t.max(1e-9),
        orders5_per_s: median(r5),
        bytes_per_cell,
        memory_cells: u64::from(cfg.memory_stores) * u64::from(cfg.memory_skus),
        bytes_per_active_hold,
        memory_holds: cfg.memory_holds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_run_produces_sane_figures() {
        let mut cfg = EngineBenchConfig::quick();
        cfg.pairs_per_thread = 2_000;
        cfg.rounds = 1;
        let r = run(&cfg, |_| {});
        assert!(r.holds_per_s_1t > 0.0 && r.orders5_per_s > 0.0 && r.keyed_holds_per_s_1t > 0.0);
        // Resident memory is per process, and the other tests of this binary free memory
        // while they run: a measurement may see none grow. One of a few must.
        let grew = r.bytes_per_cell > 0.0
            || (0..5).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(500));
                bytes_per_cell(cfg.memory_stores, cfg.memory_skus) > 0.0
            });
        assert!(grew, "resident memory never grew while cells were made");
        assert!(r.to_json().starts_with("{\"holds_per_s_1t\":"));
    }
}
