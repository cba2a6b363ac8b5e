//! Durability workloads: durable holds with group commit, one fsync per hold, replay speed,
//! and restart time with 10M active holds (snapshot plus tail). Files go to a directory on
//! the real disk (not tmpfs), given by the caller.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::{Durability, FileStorage, WalConfig};
use pickline_engine::{
    Engine, EngineConfig, HoldOutcome, HoldRequest, Limits, LineRequest, PosDelta, PosDeltaKind,
    StoreDef, Timestamp, defer_durability,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct WalBenchConfig {
    /// Directory for the logs (a fresh subdirectory per workload).
    pub dir: PathBuf,
    /// Concurrent writers in the group-commit run.
    pub writers: usize,
    /// How long each throughput run lasts.
    pub run_ms: u64,
    /// Records written for the replay measurement.
    pub replay_records: u64,
    /// Active holds at restart.
    pub restart_holds: u64,
    /// Records after the snapshot at restart.
    pub restart_tail: u64,
    /// Stock cells in the snapshot workload (100 stores, `snapshot_cells / 100` SKUs each).
    pub snapshot_cells: u64,
    /// Active holds in the snapshot workload.
    pub snapshot_holds: u64,
    /// Holds written after the previous snapshot, before the measured checkpoint starts.
    pub snapshot_tail: u64,
}

impl WalBenchConfig {
    /// The figures of docs/BENCHMARKS.md.
    pub fn full(dir: PathBuf) -> Self {
        WalBenchConfig {
            dir,
            writers: 64,
            run_ms: 5_000,
            replay_records: 4_000_000,
            restart_holds: 10_000_000,
            restart_tail: 1_000_000,
            snapshot_cells: 10_000_000,
            snapshot_holds: 10_000_000,
            snapshot_tail: 1_000_000,
        }
    }

    /// A small configuration for smoke tests.
    pub fn quick(dir: PathBuf) -> Self {
        WalBenchConfig {
            dir,
            writers: 8,
            run_ms: 300,
            replay_records: 20_000,
            restart_holds: 20_000,
            restart_tail: 2_000,
            snapshot_cells: 20_000,
            snapshot_holds: 20_000,
            snapshot_tail: 2_000,
        }
    }
}

/// The figures `pickline bench wal` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct WalBenchReport {
    /// Durable holds per second, sync mode, `writers` concurrent writers as async tasks on
    /// 2 runtime workers (how the sidecar serves: one task per request), each waiting for
    /// its group commit without parking a thread (`defer_durability` + `poll_durable`).
    pub durable_holds_per_s: f64,
    /// p99 of hold latency (call to durable acknowledgement) in that run, ms.
    pub commit_p99_ms: f64,
    /// Median of the same, ms.
    pub commit_p50_ms: f64,
    /// Mean records per fsync batch in that run.
    pub records_per_batch: f64,
    /// The same workload with `writers` OS threads, each blocking in `wait_durable` (how an
    /// embedding service with a thread per request would call the engine).
    pub durable_holds_per_s_threads: f64,
    /// p99 of hold latency in the thread run, ms.
    pub commit_p99_ms_threads: f64,
    /// Durable holds per second with one writer: one fsync per hold (same run).
    pub fsync_per_op_holds_per_s: f64,
    /// Records replayed per second at recovery (log only, no snapshot).
    pub replay_records_per_s: f64,
    /// Seconds to reopen with `restart_holds` active holds (snapshot) plus the tail.
    pub restart_s_10m: f64,
    /// Active holds in that restart.
    pub restart_holds: u64,
    /// The longest a writer waited on one hold while a checkpoint ([`DurableEngine::
    /// checkpoint`]) of `snapshot_cells` cells and `snapshot_holds` active holds ran, ms:
    /// one writer thread placing holds back to back the whole time.
    pub snapshot_pause_ms: f64,
    /// p99 of that writer's hold latency while the checkpoint ran, ms.
    pub hold_p99_ms_during_snapshot: f64,
    /// Holds that writer placed while the checkpoint ran.
    pub holds_during_snapshot: u64,
    /// How long that checkpoint took (rebuild, encode, write), s.
    pub snapshot_s: f64,
    /// The hypervisor's steal time within that longest wait, ms (the most any one vCPU
    /// lost, from `/proc/stat` sampled every 2 ms; ticks of 10 ms): time the machine, not
    /// the process, could not run. `None` where `/proc/stat` has no steal counter.
    pub snapshot_pause_steal_ms: Option<f64>,
    /// The same writer's longest wait over as long a time with no checkpoint running
    /// (what the machine alone costs: preemption, page faults), ms.
    pub hold_max_ms_without_snapshot: f64,
    /// The hypervisor's steal time within that wait, ms (as `snapshot_pause_steal_ms`).
    pub hold_max_steal_ms_without_snapshot: Option<f64>,
    /// The same writer's longest wait during a checkpoint that stops writers while the
    /// state is encoded ([`DurableEngine::checkpoint_paused`], how every checkpoint was
    /// taken before), same state, ms.
    pub paused_snapshot_pause_ms: f64,
}

impl WalBenchReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"durable_holds_per_s\":{:.0},\"commit_p99_ms\":{:.3},\"commit_p50_ms\":{:.3},",
                "\"records_per_batch\":{:.1},\"durable_holds_per_s_threads\":{:.0},",
                "\"commit_p99_ms_threads\":{:.3},\"fsync_per_op_holds_per_s\":{:.0},",
                "\"replay_records_per_s\":{:.0},\"restart_s_10m\":{:.2},\"restart_holds\":{},",
                "\"snapshot_pause_ms\":{:.1},\"hold_p99_ms_during_snapshot\":{:.3},",
                "\"holds_during_snapshot\":{},\"snapshot_s\":{:.2},",
                "\"snapshot_pause_steal_ms\":{},",
                "\"hold_max_ms_without_snapshot\":{:.1},",
                "\"hold_max_steal_ms_without_snapshot\":{},",
                "\"paused_snapshot_pause_ms\":{:.1}}}"
            ),
            self.durable_holds_per_s,
            self.commit_p99_ms,
            self.commit_p50_ms,
            self.records_per_batch,
            self.durable_holds_per_s_threads,
            self.commit_p99_ms_threads,
            self.fsync_per_op_holds_per_s,
            self.replay_records_per_s,
            self.restart_s_10m,
            self.restart_holds,
            self.snapshot_pause_ms,
            self.hold_p99_ms_during_snapshot,
            self.holds_during_snapshot,
            self.snapshot_s,
            json_ms(self.snapshot_pause_steal_ms),
            self.hold_max_ms_without_snapshot,
            json_ms(self.hold_max_steal_ms_without_snapshot),
            self.paused_snapshot_pause_ms
        )
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let rows = [
            (
                "durable_holds_per_s",
                format!("{:.0}", self.durable_holds_per_s),
                ">= 200,000",
            ),
            (
                "commit_p99_ms",
                format!("{:.3}", self.commit_p99_ms),
                "<= 5",
            ),
            ("commit_p50_ms", format!("{:.3}", self.commit_p50_ms), ""),
            (
                "records_per_batch",
                format!("{:.1}", self.records_per_batch),
                "",
            ),
            (
                "durable_holds_per_s_threads",
                format!("{:.0}", self.durable_holds_per_s_threads),
                "",
            ),
            (
                "commit_p99_ms_threads",
                format!("{:.3}", self.commit_p99_ms_threads),
                "",
            ),
            (
                "fsync_per_op_holds_per_s",
                format!("{:.0}", self.fsync_per_op_holds_per_s),
                "",
            ),
            (
                "replay_records_per_s",
                format!("{:.0}", self.replay_records_per_s),
                ">= 2,000,000",
            ),
            (
                "restart_s_10m",
                format!("{:.2} ({} holds)", self.restart_s_10m, self.restart_holds),
                "< 10",
            ),
            (
                "snapshot_pause_ms",
                format!("{:.1}", self.snapshot_pause_ms),
                "<= 10",
            ),
            (
                "hold_p99_ms_during_snapshot",
                format!("{:.3}", self.hold_p99_ms_during_snapshot),
                "",
            ),
            (
                "holds_during_snapshot",
                format!("{}", self.holds_during_snapshot),
                "",
            ),
            ("snapshot_s", format!("{:.2}", self.snapshot_s), ""),
            (
                "snapshot_pause_steal_ms",
                json_ms(self.snapshot_pause_steal_ms),
                "",
            ),
            (
                "hold_max_ms_without_snapshot",
                format!("{:.1}", self.hold_max_ms_without_snapshot),
                "",
            ),
            (
                "hold_max_steal_ms_without_snapshot",
                json_ms(self.hold_max_steal_ms_without_snapshot),
                "",
            ),
            (
                "paused_snapshot_pause_ms",
                format!("{:.1}", self.paused_snapshot_pause_ms),
                "",
            ),
        ];
        let mut out = format!("{:<26} {:>26} {:>14}\n", "figure", "value", "target");
        for (k, v, t) in rows {
            out.push_str(&format!("{k:<26} {v:>26} {t:>14}\n"));
        }
        out
    }
}

/// `ms` with one decimal, or `null`.
fn json_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "null".to_owned(), |ms| format!("{ms:.1}"))
}

const T0: Timestamp = Timestamp(1_780_000_000_000);
const SKUS: u32 = 1_000;
const STORES: u32 = 100;

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create bench dir");
    d
}

fn open(dir: &Path, durability: Durability) -> DurableEngine {
    let storage = Arc::new(FileStorage::open(dir).expect("open dir"));
    DurableEngine::open(
        storage,
        OpenOptions {
            engine: EngineConfig {
                limits: Limits {
                    store_active_holds_max: 50_000_000,
                    ..Limits::default()
                },
            },
            wal: WalConfig {
                durability,
                ..WalConfig::default()
            },
            ..OpenOptions::default()
        },
    )
    .expect("open durable engine")
}

fn stock(engine: &Engine) {
    stock_skus(engine, SKUS);
}

/// `STORES` stores with `skus` SKUs each in stock.
fn stock_skus(engine: &Engine, skus: u32) {
    for s in 0..STORES {
        let store = format!("store-{s}");
        let mut def = StoreDef::new(store.clone(), 52.0, 13.0, "Europe/Berlin");
        def.max_hold_ms = 14 * 24 * 3_600_000;
        engine.define_store(def, T0).expect("store");
        for k in 0..skus {
            engine
                .apply_delta(
                    &PosDelta {
                        store: store.clone(),
                        sku: format!("SKU-{k}"),
                        pos_event_id: format!("init-{k}"),
                        kind: PosDeltaKind::Receive,
                        qty: 1_000_000_000,
                        order_ref: None,
                        pos_time: T0,
                    },
                    T0,
                )
                .expect("stock");
        }
    }
}

fn requests(n: usize, seed: u64) -> Vec<HoldRequest> {
    requests_over(n, seed, SKUS)
}

/// `n` single-line holds of one unit over `STORES` stores and `skus` SKUs, uniform.
fn requests_over(n: usize, seed: u64, skus: u32) -> Vec<HoldRequest> {
    let mut rng = crate::zipf::Rng::new(seed);
    (0..n)
        .map(|_| {
            HoldRequest::new(
                format!("store-{}", rng.below(u64::from(STORES))),
                vec![LineRequest::new(
                    format!("SKU-{}", rng.below(u64::from(skus))),
                    1,
                )],
            )
        })
        .collect()
}

/// `writers` threads placing durable holds for `run_ms`; returns (holds/s, latency histogram).
fn durable_run(engine: &Arc<Engine>, writers: usize, run_ms: u64) -> (f64, Histogram<u64>) {
    let barrier = Arc::new(Barrier::new(writers + 1));
    let deadline = Duration::from_millis(run_ms);
    let handles: Vec<_> = (0..writers)
        .map(|t| {
            let engine = engine.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let reqs = requests(4096, t as u64 + 1);
                let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
                barrier.wait();
                let start = Instant::now();
                let mut n = 0usize;
                while start.elapsed() < deadline {
                    let t0 = Instant::now();
                    if let Ok(HoldOutcome::Granted(_)) = engine.hold(&reqs[n % reqs.len()], T0) {
                        n += 1;
                    }
                    let _ = hist.record(t0.elapsed().as_micros() as u64);
                }
                (n, hist)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
    for h in handles {
        let (n, h) = h.join().expect("writer");
        total += n;
        hist.add(h).expect("hist add");
    }
    (total as f64 / start.elapsed().as_secs_f64(), hist)
}

/// `writers` async tasks on a 2-worker runtime placing durable holds for `run_ms`, each
/// awaiting its group commit as the sidecar does; returns (holds/s, latency histogram).
fn durable_run_async(
    db: &Arc<DurableEngine>,
    writers: usize,
    run_ms: u64,
) -> (f64, Histogram<u64>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Duration::from_millis(run_ms);
    let start = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..writers {
            let db = db.clone();
            let reqs = requests(4096, t as u64 + 1);
            tasks.spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
                let mut n = 0usize;
                while start.elapsed() < deadline {
                    let t0 = Instant::now();
                    let d = defer_durability(|| db.engine().hold(&reqs[n % reqs.len()], T0));
                    let granted = matches!(d.value, Ok(HoldOutcome::Granted(_)));
                    if let Some(lsn) = d.wait_for {
                        db.wal().durable(lsn).await.expect("durable");
                    }
                    if granted {
                        n += 1;
                    }
                    let _ = hist.record(t0.elapsed().as_micros() as u64);
                }
                (n, hist)
            });
        }
        tasks.join_all().await
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("hist");
    for (n, h) in results {
        total += n;
        hist.add(h).expect("hist add");
    }
    (total as f64 / elapsed, hist)
}

/// Writes the replay workload's log (stock, then `replay_records` single-line holds, no
/// snapshot) into a fresh directory and returns it.
pub fn write_replay_log(cfg: &WalBenchConfig) -> PathBuf {
    let dir = fresh_dir(&cfg.dir, "replay");
    let (db, _) = stocked_with_holds(&dir, cfg.replay_records, 7);
    db.close().expect("close");
    dir
}

/// An engine in `dir` (async durability: building state, not measuring commits) with the
/// bench's stock and `holds` single-line holds; returns it with the requests, for a tail.
fn stocked_with_holds(dir: &Path, holds: u64, seed: u64) -> (DurableEngine, Vec<HoldRequest>) {
    let db = open(
        dir,
        Durability::Async {
            flush_interval_ms: 10,
        },
    );
    stock(db.engine());
    let reqs = requests(65_536, seed);
    for i in 0..holds as usize {
        let _ = db.engine().hold(&reqs[i % reqs.len()], T0);
    }
    (db, reqs)
}

/// Reopens the log in `dir` (recovery replays every record) and returns the records
/// replayed per second. The log is left as it was: reopening does not write records.
pub fn time_replay(dir: &Path) -> f64 {
    let start = Instant::now();
    let db = open(dir, Durability::Sync);
    let replay_s = start.elapsed().as_secs_f64();
    let replayed = db.recovery_report().records_replayed;
    drop(db);
    replayed as f64 / replay_s.max(1e-9)
}

/// Only the replay workload: writes the log once, then times `rounds` reopens of it (the
/// machine may be noisy; the caller takes the median). Returns records/s per round.
pub fn run_replay_only(
    cfg: &WalBenchConfig,
    rounds: usize,
    mut progress: impl FnMut(&str),
) -> Vec<f64> {
    progress("replay: writing the log");
    let dir = write_replay_log(cfg);
    let out = (0..rounds)
        .map(|r| {
            progress(&format!("replay: reopen {}/{rounds}", r + 1));
            time_replay(&dir)
        })
        .collect();
    let _ = std::fs::remove_dir_all(&cfg.dir);
    out
}

/// Runs every WAL workload.
pub fn run(cfg: &WalBenchConfig, mut progress: impl FnMut(&str)) -> WalBenchReport {
    // Group commit vs one fsync per hold, same engine, same run.
    progress("durable holds (group commit)");
    let dir = fresh_dir(&cfg.dir, "durable");
    let db = Arc::new(open(&dir, Durability::Sync));
    stock(db.engine());
    let engine = db.engine().clone();
    let before = db.wal().metrics();
    let (durable_holds_per_s, hist) = durable_run_async(&db, cfg.writers, cfg.run_ms);
    let after = db.wal().metrics();
    progress("durable holds (group commit, threads)");
    let (durable_holds_per_s_threads, hist_threads) = durable_run(&engine, cfg.writers, cfg.run_ms);
    let batches = after
        .batches_written
        .saturating_sub(before.batches_written)
        .max(1);
    let records = after.records_written.saturating_sub(before.records_written);
    progress("durable holds (one writer: one fsync per hold)");
    let (fsync_per_op_holds_per_s, _) = durable_run(&engine, 1, cfg.run_ms);
    drop(engine);
    Arc::into_inner(db)
        .expect("the bench's tasks are done")
        .close()
        .expect("close");

    // Replay: a log of holds, no snapshot.
    progress("replay");
    let dir = write_replay_log(cfg);
    let replay_records_per_s = time_replay(&dir);

    // Restart with many active holds: snapshot plus a tail.
    progress("restart: building state");
    let dir = fresh_dir(&cfg.dir, "restart");
    {
        let (db, reqs) = stocked_with_holds(&dir, cfg.restart_holds, 11);
        progress("restart: snapshot");
        db.checkpoint_paused().expect("snapshot");
        for i in 0..cfg.restart_tail as usize {
            let _ = db.engine().hold(&reqs[i % reqs.len()], T0);
        }
        db.close().expect("close");
    }
    progress("restart: recovering");
    let start = Instant::now();
    let db = open(&dir, Durability::Sync);
    let restart_s_10m = start.elapsed().as_secs_f64();
    let restart_holds = db.engine().active_holds() as u64;
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);

    let snap = snapshot_stalls(cfg, &mut progress);
    let _ = std::fs::remove_dir_all(&cfg.dir);

    WalBenchReport {
        durable_holds_per_s,
        commit_p99_ms: hist.value_at_quantile(0.99) as f64 / 1e3,
        commit_p50_ms: hist.value_at_quantile(0.50) as f64 / 1e3,
        records_per_batch: records as f64 / batches as f64,
        durable_holds_per_s_threads,
        commit_p99_ms_threads: hist_threads.value_at_quantile(0.99) as f64 / 1e3,
        fsync_per_op_holds_per_s,
        replay_records_per_s,
        restart_s_10m,
        restart_holds,
        snapshot_pause_ms: snap.checkpoint.longest_ms,
        hold_p99_ms_during_snapshot: snap.checkpoint.p99_ms,
        holds_during_snapshot: snap.checkpoint.holds,
        snapshot_s: snap.checkpoint_s,
        snapshot_pause_steal_ms: snap.checkpoint.longest_steal_ms,
        hold_max_ms_without_snapshot: snap.idle.longest_ms,
        hold_max_steal_ms_without_snapshot: snap.idle.longest_steal_ms,
        paused_snapshot_pause_ms: snap.paused.longest_ms,
    }
}

/// One writer's hold latencies while something else ran.
struct WriterWaits {
    longest_ms: f64,
    /// The hypervisor's steal within the longest wait ([`steal_within`]).
    longest_steal_ms: Option<f64>,
    p99_ms: f64,
    holds: u64,
}

/// Each vCPU's steal counter (`/proc/stat`, in ticks of 1/100 s), or `None` where there is
/// none to read.
fn steal_ticks() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let per_cpu: Vec<u64> = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| l.split_whitespace().nth(8).and_then(|v| v.parse().ok()))
        .collect::<Option<_>>()?;
    (!per_cpu.is_empty()).then_some(per_cpu)
}

/// The most steal any one vCPU counted between the last sample at or before `from` and the
/// first at or after `to`, ms; `None` without samples around the span.
fn steal_within(samples: &[(Instant, Vec<u64>)], from: Instant, to: Instant) -> Option<f64> {
    let before = samples.iter().rev().find(|(t, _)| *t <= from)?;
    let after = samples.iter().find(|(t, _)| *t >= to)?;
    let ticks = before
        .1
        .iter()
        .zip(&after.1)
        .filter_map(|(b, a)| a.checked_sub(*b))
        .max()?;
    Some(ticks as f64 * 10.0)
}

struct SnapshotStalls {
    checkpoint: WriterWaits,
    checkpoint_s: f64,
    idle: WriterWaits,
    paused: WriterWaits,
}

/// Runs `during` on this thread while one writer thread places holds back to back, and
/// returns its result with the writer's hold latencies over exactly that time.
fn writer_during<T>(
    engine: &Engine,
    reqs: &[HoldRequest],
    during: impl FnOnce() -> T,
) -> (T, WriterWaits) {
    use std::sync::atomic::{AtomicU8, Ordering};
    const WARMING: u8 = 0;
    const MEASURING: u8 = 1;
    const STOP: u8 = 2;
    let phase = AtomicU8::new(WARMING);
    std::thread::scope(|scope| {
        // The hypervisor's steal counters every 2 ms, to tell a stall of the machine from
        // one of the process.
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            while phase.load(Ordering::Acquire) != STOP {
                match steal_ticks() {
                    Some(ticks) => samples.push((Instant::now(), ticks)),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(ticks) = steal_ticks() {
                samples.push((Instant::now(), ticks));
            }
            samples
        });
        let writer = scope.spawn(|| {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
            let mut longest = Duration::ZERO;
            let mut longest_span = None;
            let mut n = 0usize;
            loop {
                let at_start = phase.load(Ordering::Acquire);
                if at_start == STOP {
                    break;
                }
                let t0 = Instant::now();
                let _ = engine.hold(&reqs[n % reqs.len()], T0);
                let took = t0.elapsed();
                n += 1;
                if at_start == MEASURING {
                    if took > longest {
                        longest = took;
                        longest_span = Some((t0, t0 + took));
                    }
                    let _ = hist.record((took.as_micros() as u64).max(1));
                }
            }
            (hist, longest, longest_span)
        });
        // Let the writer get going before the measured window opens.
        std::thread::sleep(Duration::from_millis(200));
        phase.store(MEASURING, Ordering::Release);
        let out = during();
        phase.store(STOP, Ordering::Release);
        let (hist, longest, longest_span) = writer.join().expect("writer");
        let samples = sampler.join().expect("steal sampler");
        (
            out,
            WriterWaits {
                longest_ms: longest.as_secs_f64() * 1e3,
                longest_steal_ms: longest_span
                    .and_then(|(from, to)| steal_within(&samples, from, to)),
                p99_ms: hist.value_at_quantile(0.99) as f64 / 1e3,
                holds: hist.len(),
            },
        )
    })
}

/// The snapshot workload: `snapshot_cells` cells and `snapshot_holds` active holds; a
/// checkpoint that stops writers (the previous snapshot, as a running server has one),
/// `snapshot_tail` more holds, then the measured checkpoint, each with one writer placing
/// holds throughout.
fn snapshot_stalls(cfg: &WalBenchConfig, progress: &mut impl FnMut(&str)) -> SnapshotStalls {
    progress("snapshot: building state");
    let dir = fresh_dir(&cfg.dir, "snapshot");
    let db = open(
        &dir,
        Durability::Async {
            flush_interval_ms: 10,
        },
    );
    let skus = u32::try_from((cfg.snapshot_cells / u64::from(STORES)).max(1)).expect("skus");
    stock_skus(db.engine(), skus);
    let reqs = requests_over(65_536, 13, skus);
    for i in 0..cfg.snapshot_holds as usize {
        let _ = db.engine().hold(&reqs[i % reqs.len()], T0);
    }
    let writer_reqs = requests_over(65_536, 17, skus);
    progress("snapshot: checkpoint with writers paused");
    let (paused, paused_waits) =
        writer_during(db.engine(), &writer_reqs, || db.checkpoint_paused());
    paused.expect("paused checkpoint");
    for i in 0..cfg.snapshot_tail as usize {
        let _ = db.engine().hold(&reqs[i % reqs.len()], T0);
    }
    progress("snapshot: checkpoint");
    let ((cp, checkpoint_s), waits) = writer_during(db.engine(), &writer_reqs, || {
        let t = Instant::now();
        let cp = db.checkpoint();
        (cp, t.elapsed().as_secs_f64())
    });
    let cp = cp.expect("checkpoint");
    assert!(
        !cp.writers_paused,
        "the checkpoint was rebuilt beside the writer"
    );
    progress("snapshot: the writer alone");
    let ((), idle) = writer_during(db.engine(), &writer_reqs, || {
        std::thread::sleep(Duration::from_secs_f64(checkpoint_s));
    });
    db.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
    SnapshotStalls {
        checkpoint: waits,
        checkpoint_s,
        idle,
        paused: paused_waits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_within_a_span_is_the_most_one_vcpu_lost_between_the_samples_around_it() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let samples = vec![
            (at(0), vec![5, 7]),
            (at(10), vec![5, 7]),
            (at(20), vec![9, 8]),
            (at(30), vec![9, 8]),
        ];
        // 12..18 ms lies between the samples at 10 and 20: vCPU 0 lost 4 ticks.
        assert_eq!(steal_within(&samples, at(12), at(18)), Some(40.0));
        assert_eq!(steal_within(&samples, at(21), at(29)), Some(0.0));
        // No sample after the span: unknown, not zero.
        assert_eq!(steal_within(&samples, at(25), at(35)), None);
    }

    #[test]
    fn quick_run_produces_sane_figures() {
        let dir = std::env::temp_dir().join(format!("pickline-walbench-{}", std::process::id()));
        let mut cfg = WalBenchConfig::quick(dir);
        cfg.run_ms = 100;
        let r = run(&cfg, |_| {});
        assert!(r.durable_holds_per_s > 0.0 && r.fsync_per_op_holds_per_s > 0.0);
        assert!(r.replay_records_per_s > 0.0);
        assert_eq!(r.restart_holds, cfg.restart_holds + cfg.restart_tail);
        assert!(r.holds_during_snapshot > 0 && r.snapshot_s > 0.0);
    }
}
