//! Multi-threaded stress: 8 threads on a few hot cells doing multi-line holds (alone and in
//! batches), releases, expiries and POS deltas. Afterwards conservation holds, and the recorded history (the
//! engine's log, in LSN order) replayed by an independent checker shows that no hold was
//! ever granted beyond availability, that every multi-line hold was all-or-nothing, and that
//! the final state equals the history's.
//!
//! `PICKLINE_STRESS_OPS` sets the operations per thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use pickline_engine::{
    Engine, EngineConfig, EngineError, Event, HoldOutcome, HoldRequest, LineRequest, MemoryLog,
    PosDelta, PosDeltaKind, ReleaseReason, StoreDef, Timestamp,
};

const THREADS: usize = 8;
const STORES: [&str; 2] = ["hot", "cold"];
const SKUS: [&str; 4] = ["H1", "H2", "H3", "H4"];

/// xorshift: a seeded, dependency-free generator for the workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn hot_cells_under_eight_threads_never_oversell() {
    let ops_per_thread: usize = std::env::var("PICKLINE_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let log = Arc::new(MemoryLog::new());
    let engine = Arc::new(Engine::with_log(EngineConfig::default(), log.clone()).unwrap());
    let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
    let t0 = Timestamp(clock.load(Ordering::SeqCst));
    for s in STORES {
        let mut def = StoreDef::new(s, 48.1, 11.6, "Europe/Berlin");
        def.default_safety_stock = 1;
        engine.define_store(def, t0).unwrap();
        for (i, k) in SKUS.iter().enumerate() {
            engine
                .apply_delta(
                    &PosDelta {
                        store: s.into(),
                        sku: (*k).into(),
                        pos_event_id: format!("init-{k}"),
                        kind: PosDeltaKind::Receive,
                        qty: 20 + i as i64,
                        order_ref: None,
                        pos_time: t0,
                    },
                    t0,
                )
                .unwrap();
        }
    }

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1234_5678_9abc_def1));
                let mut mine = Vec::new();
                let mut granted = 0u64;
                for i in 0..ops_per_thread {
                    let now = Timestamp(clock.fetch_add(1, Ordering::SeqCst));
                    let store = STORES[(rng.below(10) == 0) as usize];
                    match rng.below(10) {
                        0..=4 => {
                            // One hold, or a batch of up to 8 (both stores, one lock set
                            // and one record per store).
                            let batch = if rng.below(4) == 0 {
                                1 + rng.below(8) as usize
                            } else {
                                0
                            };
                            let reqs: Vec<HoldRequest> = (0..batch.max(1))
                                .map(|_| {
                                    let n = 1 + rng.below(3) as usize;
                                    let lines = (0..n)
                                        .map(|_| {
                                            LineRequest::new(
                                                SKUS[rng.below(4) as usize],
                                                1 + rng.below(3) as u32,
                                            )
                                        })
                                        .collect();
                                    let store = STORES[(rng.below(10) == 0) as usize];
                                    let mut req = HoldRequest::new(store, lines)
                                        .with_ttl_ms(1_000 + rng.below(5_000) as i64);
                                    if rng.below(4) == 0 {
                                        req = req.with_key(format!("t{t}-k{}", rng.below(50)));
                                    }
                                    req
                                })
                                .collect();
                            let outcomes = if batch > 0 {
                                match engine.hold_batch(&reqs, now) {
                                    Ok(outcomes) => outcomes,
                                    // A key drawn again for other lines: the batch is
                                    // refused whole, nothing held.
                                    Err(EngineError::IdempotencyKeyReused { .. }) => Vec::new(),
                                    Err(e) => panic!("{e}"),
                                }
                            } else {
                                vec![engine.hold(&reqs[0], now)]
                            };
                            for outcome in outcomes {
                                match outcome {
                                    Ok(HoldOutcome::Granted(g)) => {
                                        mine.push(g.hold);
                                        granted += 1;
                                    }
                                    // A key drawn again for other lines: refused.
                                    Ok(_) | Err(EngineError::IdempotencyKeyReused { .. }) => {}
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                        5..=6 => {
                            if !mine.is_empty() {
                                let h = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                                engine.release(h, now).unwrap();
                            }
                        }
                        7 => {
                            engine.expire(now, 64).unwrap();
                        }
                        _ => {
                            let kind = if rng.below(2) == 0 {
                                PosDeltaKind::Sale
                            } else {
                                PosDeltaKind::Receive
                            };
                            engine
                                .apply_delta(
                                    &PosDelta {
                                        store: store.into(),
                                        sku: SKUS[rng.below(4) as usize].into(),
                                        pos_event_id: format!("t{t}-e{i}"),
                                        kind,
                                        qty: 1 + rng.below(3) as i64,
                                        order_ref: None,
                                        pos_time: now,
                                    },
                                    now,
                                )
                                .unwrap();
                        }
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u64 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(
        granted > 100,
        "the workload should grant holds; granted {granted}"
    );
    engine.check_conservation().unwrap();

    // Independent history check, in LSN order.
    let mut skus: HashMap<u32, String> = HashMap::new();
    let mut cells: HashMap<(u32, u32), (i64, i64, i64)> = HashMap::new(); // on_hand, held, safety
    let mut store_safety: HashMap<u32, i64> = HashMap::new();
    let mut holds: HashMap<u64, Vec<(u32, i64)>> = HashMap::new();
    let mut grants_checked = 0;
    for r in log.records() {
        for ev in &r.record.events {
            match ev {
                Event::StoreDefined { store, def } => {
                    store_safety.insert(store.0, i64::from(def.default_safety_stock));
                }
                Event::SkuRegistered { sku, external_id } => {
                    skus.insert(sku.0, external_id.clone());
                }
                Event::HoldGranted { hold, lines, .. } => {
                    let store = hold.store().0;
                    for l in lines {
                        let c = cells.entry((store, l.sku.0)).or_insert((0, 0, -1));
                        let safety = if c.2 < 0 { store_safety[&store] } else { c.2 };
                        let atp = (c.0 - c.1 - safety).max(0);
                        assert!(
                            i64::from(l.qty) <= atp,
                            "lsn {:?}: hold {hold} granted {} of {} with atp {atp}",
                            r.lsn,
                            l.qty,
                            skus[&l.sku.0]
                        );
                        c.1 += i64::from(l.qty);
                    }
                    holds.insert(
                        hold.0,
                        lines.iter().map(|l| (l.sku.0, i64::from(l.qty))).collect(),
                    );
                    grants_checked += 1;
                }
                Event::HoldReleased { hold, reason, .. } => {
                    let lines = holds.remove(&hold.0).expect("released hold was granted");
                    if *reason == ReleaseReason::Expired {
                        assert!(r.record.at.0 >= 0);
                    }
                    for (sku, q) in lines {
                        let c = cells.get_mut(&(hold.store().0, sku)).unwrap();
                        c.1 -= q;
                        assert!(c.1 >= 0, "held went negative");
                    }
                }
                Event::PosDelta {
                    store,
                    sku,
                    qty,
                    after,
                    ..
                } => {
                    let c = cells.entry((store.0, sku.0)).or_insert((0, 0, -1));
                    assert_eq!(
                        (c.0 + qty).max(0),
                        i64::from(after.on_hand),
                        "delta arithmetic"
                    );
                    // The event carries the cell as it was then, not as it is now.
                    assert_eq!(c.1, i64::from(after.held), "held as of the delta");
                    c.0 = i64::from(after.on_hand);
                }
                Event::SafetyStockSet {
                    store,
                    sku,
                    safety_stock,
                } => {
                    cells.entry((store.0, sku.0)).or_insert((0, 0, -1)).2 =
                        i64::from(*safety_stock);
                }
                _ => {}
            }
        }
    }
    // Keyed retries return the original grant without a new record: the history holds at
    // most as many grants as the threads saw, and at least one.
    assert!(grants_checked as u64 <= granted && grants_checked > 0);
    // The history's final state is the engine's.
    for ((store, sku), (on_hand, held, _)) in cells {
        let v = engine
            .availability(STORES[store as usize], &skus[&sku])
            .unwrap();
        assert_eq!((i64::from(v.on_hand), i64::from(v.held)), (on_hand, held));
    }
    assert_eq!(engine.active_holds(), holds.len());
}
