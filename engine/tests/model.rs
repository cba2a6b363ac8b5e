//! Model-based property test: random sequences of every engine operation against a simple
//! sequential model, with the SPEC section 3 invariants checked after every step, and a
//! replay of the engine's own log into a fresh engine compared with the live state at the
//! end (determinism).
//!
//! `PICKLINE_PROPTEST_CASES` raises the number of cases.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pickline_engine::{
    ConfirmOutcome, Engine, EngineConfig, EngineError, ExtendOutcome, HoldId, HoldOutcome,
    HoldRejection, HoldRequest, Line, LineRequest, MemoryLog, PosCount, PosDelta, PosDeltaKind,
    PosOutcome, ReleaseOutcome, StoreDef, StoreStatus, Timestamp,
};
use proptest::prelude::*;

const STORES: [&str; 2] = ["s0", "s1"];
const SKUS: [&str; 3] = ["A", "B", "C"];
const DEFAULT_SAFETY: u32 = 1;
const DEFAULT_HOLD_MS: i64 = 10_000;
const MAX_HOLD_MS: i64 = 100_000;

#[derive(Debug, Clone)]
enum Op {
    Hold {
        store: usize,
        lines: Vec<(usize, u32)>,
        key: Option<u8>,
        ttl_ms: Option<i64>,
    },
    Extend {
        hold: usize,
        ttl_ms: i64,
    },
    Confirm {
        hold: usize,
    },
    Release {
        hold: usize,
    },
    Advance {
        ms: i64,
    },
    Expire,
    Delta {
        store: usize,
        sku: usize,
        kind: u8,
        qty: i64,
        id: u8,
        pos_back_ms: i64,
    },
    Count {
        store: usize,
        sku: usize,
        counted: u32,
        id: u8,
        as_of_back_ms: i64,
    },
    Safety {
        store: usize,
        sku: usize,
        qty: u32,
    },
    Pause {
        store: usize,
        paused: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, proptest::collection::vec((0..3usize, 1..6u32), 1..4), proptest::option::of(0..6u8),
              proptest::option::of(1_000..50_000i64))
            .prop_map(|(store, lines, key, ttl_ms)| Op::Hold { store, lines, key, ttl_ms }),
        1 => (any::<usize>(), 1_000..60_000i64).prop_map(|(hold, ttl_ms)| Op::Extend { hold, ttl_ms }),
        1 => any::<usize>().prop_map(|hold| Op::Confirm { hold }),
        2 => any::<usize>().prop_map(|hold| Op::Release { hold }),
        2 => (1..8_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Expire),
        3 => (0..2usize, 0..3usize, 0..4u8, -8..12i64, 0..40u8, 0..5_000i64)
            .prop_map(|(store, sku, kind, qty, id, pos_back_ms)| Op::Delta { store, sku, kind, qty, id, pos_back_ms }),
        1 => (0..2usize, 0..3usize, 0..15u32, 0..40u8, 0..5_000i64)
            .prop_map(|(store, sku, counted, id, as_of_back_ms)| Op::Count { store, sku, counted, id, as_of_back_ms }),
        1 => (0..2usize, 0..3usize, 0..3u32).prop_map(|(store, sku, qty)| Op::Safety { store, sku, qty }),
        1 => (0..2usize, any::<bool>()).prop_map(|(store, paused)| Op::Pause { store, paused }),
    ]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MCell {
    on_hand: u32,
    held: u32,
    safety: Option<u32>,
}

impl MCell {
    fn atp(&self) -> u32 {
        self.on_hand
            .saturating_sub(self.held)
            .saturating_sub(self.safety.unwrap_or(DEFAULT_SAFETY))
    }
}

#[derive(Debug, Clone)]
struct MHold {
    lines: BTreeMap<usize, u32>,
    expires_at: i64,
    confirmed: bool,
}

/// What a keyed hold asked for: store, and merged lines (SKU index -> units).
/// What a key names: store, merged lines and the hold time the request resolved to.
type KeyedRequest = (usize, BTreeMap<usize, u32>, i64);

/// The sequential model: plain maps, no locks, no cleverness.
#[derive(Default)]
struct Model {
    cells: HashMap<(usize, usize), MCell>,
    holds: BTreeMap<HoldId, MHold>,
    /// Outcome per key, with the request it answered.
    idem: HashMap<u8, (HoldOutcome, KeyedRequest)>,
    pos_seen: std::collections::HashSet<(usize, u8)>,
    deltas: Vec<(usize, usize, i64, i64)>,
    last_count: HashMap<(usize, usize), i64>,
    paused: [bool; 2],
    next_seq: [u64; 2],
}

fn cell_key(store: usize, sku: usize) -> (usize, usize) {
    (store, sku)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let log = Arc::new(MemoryLog::new());
    let engine = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    let mut now = 1_700_000_000_000i64;
    for s in STORES {
        let mut def = StoreDef::new(s, 52.5, 13.4, "Europe/Berlin");
        def.default_safety_stock = DEFAULT_SAFETY;
        def.default_hold_ms = DEFAULT_HOLD_MS;
        def.max_hold_ms = MAX_HOLD_MS;
        engine.define_store(def, Timestamp(now)).unwrap();
    }
    let mut m = Model::default();
    let mut granted: Vec<HoldId> = Vec::new();

    for op in ops {
        let t = Timestamp(now);
        match op {
            Op::Hold {
                store,
                lines,
                key,
                ttl_ms,
            } => {
                let mut req = HoldRequest::new(
                    STORES[store],
                    lines
                        .iter()
                        .map(|(s, q)| LineRequest::new(SKUS[*s], *q))
                        .collect(),
                );
                if let Some(k) = key {
                    req = req.with_key(format!("key-{k}"));
                }
                req.ttl_ms = ttl_ms;
                let mut merged: BTreeMap<usize, u32> = BTreeMap::new();
                for (s, q) in &lines {
                    *merged.entry(*s).or_default() += q;
                }
                let result = engine.hold(&req, t);
                // A key used before for another store or other lines: refused, no change.
                if let Some(k) = key
                    && m.idem.get(&k).is_some_and(|(_, request)| {
                        *request != (store, merged.clone(), ttl_ms.unwrap_or(DEFAULT_HOLD_MS))
                    })
                {
                    prop_assert!(
                        matches!(result, Err(EngineError::IdempotencyKeyReused { .. })),
                        "{:?}",
                        result
                    );
                    continue;
                }
                let got = result.unwrap();
                // Model.
                let want = if let Some((prev, _)) = key.and_then(|k| m.idem.get(&k)) {
                    prev.clone()
                } else {
                    let outcome = if m.paused[store] {
                        HoldOutcome::Rejected(HoldRejection::StoreNotAccepting {
                            status: StoreStatus::PickupsPaused,
                        })
                    } else {
                        let short: Vec<_> = merged
                            .iter()
                            .filter(|(s, q)| {
                                m.cells
                                    .get(&cell_key(store, **s))
                                    .copied()
                                    .unwrap_or_default()
                                    .atp()
                                    < **q
                            })
                            .collect();
                        if short.is_empty() {
                            // Sequences start at 1 (id 0 is never issued).
                            let seq = m.next_seq[store].max(1);
                            m.next_seq[store] = seq + 1;
                            let hold = HoldId::new(pickline_engine::StoreId(store as u32), seq);
                            for (s, q) in &merged {
                                m.cells.entry(cell_key(store, *s)).or_default().held += q;
                            }
                            let expires_at = now + ttl_ms.unwrap_or(DEFAULT_HOLD_MS);
                            m.holds.insert(
                                hold,
                                MHold {
                                    lines: merged.clone(),
                                    expires_at,
                                    confirmed: false,
                                },
                            );
                            HoldOutcome::Granted(pickline_engine::HoldGrant {
                                hold,
                                expires_at: Timestamp(expires_at),
                                lsn: Default::default(),
                            })
                        } else {
                            HoldOutcome::Rejected(HoldRejection::InsufficientStock {
                                shortages: Vec::new(),
                            })
                        }
                    };
                    if let Some(k) = key {
                        let request = (store, merged.clone(), ttl_ms.unwrap_or(DEFAULT_HOLD_MS));
                        m.idem.insert(k, (outcome.clone(), request));
                    }
                    outcome
                };
                match (&got, &want) {
                    (HoldOutcome::Granted(g), HoldOutcome::Granted(w)) => {
                        prop_assert_eq!(g.hold, w.hold);
                        prop_assert_eq!(g.expires_at, w.expires_at);
                        if !granted.contains(&g.hold) {
                            granted.push(g.hold);
                        }
                    }
                    (
                        HoldOutcome::Rejected(HoldRejection::InsufficientStock { shortages }),
                        HoldOutcome::Rejected(HoldRejection::InsufficientStock { .. }),
                    ) => {
                        prop_assert!(!shortages.is_empty());
                        for s in shortages {
                            prop_assert!(s.available < s.requested);
                        }
                    }
                    (
                        HoldOutcome::Rejected(HoldRejection::StoreNotAccepting { .. }),
                        HoldOutcome::Rejected(HoldRejection::StoreNotAccepting { .. }),
                    ) => {}
                    _ => prop_assert!(false, "engine {got:?} vs model {want:?}"),
                }
            }
            Op::Extend { hold, ttl_ms } => {
                let Some(&h) = pick(&granted, hold) else {
                    continue;
                };
                let got = engine.extend(h, Some(ttl_ms), t).unwrap();
                match m.holds.get_mut(&h) {
                    Some(mh) => {
                        mh.expires_at = now + ttl_ms;
                        prop_assert_eq!(
                            got,
                            ExtendOutcome::Extended {
                                expires_at: Timestamp(now + ttl_ms)
                            }
                        );
                    }
                    None => prop_assert!(matches!(got, ExtendOutcome::NotActive(_))),
                }
            }
            Op::Confirm { hold } => {
                let Some(&h) = pick(&granted, hold) else {
                    continue;
                };
                let got = engine.confirm(h, t).unwrap();
                match m.holds.get_mut(&h) {
                    Some(mh) => {
                        mh.confirmed = true;
                        prop_assert_eq!(
                            got,
                            ConfirmOutcome::Confirmed {
                                expires_at: Timestamp(mh.expires_at)
                            }
                        );
                    }
                    None => prop_assert!(matches!(got, ConfirmOutcome::NotActive(_))),
                }
            }
            Op::Release { hold } => {
                let Some(&h) = pick(&granted, hold) else {
                    continue;
                };
                let (got, released) = engine.release_described(h, t).unwrap();
                match m.holds.remove(&h) {
                    Some(mh) => {
                        prop_assert_eq!(got, ReleaseOutcome::Released);
                        // The hold as it was when released.
                        let info = released.expect("a release describes the hold it ended");
                        prop_assert_eq!(info.hold, h);
                        prop_assert_eq!(info.expires_at, Timestamp(mh.expires_at));
                        prop_assert_eq!(info.confirmed, mh.confirmed);
                        prop_assert_eq!(&model_lines(&engine, &info.lines), &mh.lines);
                        for (s, q) in mh.lines {
                            m.cells
                                .get_mut(&cell_key(h.store().0 as usize, s))
                                .unwrap()
                                .held -= q;
                        }
                    }
                    None => {
                        prop_assert_eq!(got, ReleaseOutcome::AlreadyEnded);
                        prop_assert!(released.is_none());
                    }
                }
            }
            Op::Advance { ms } => now += ms,
            Op::Expire => {
                let mut got: Vec<HoldId> = engine
                    .expire(t, usize::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.hold)
                    .collect();
                got.sort();
                let due: Vec<HoldId> = m
                    .holds
                    .iter()
                    .filter(|(_, h)| h.expires_at <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for h in &due {
                    let mh = m.holds.remove(h).unwrap();
                    for (s, q) in mh.lines {
                        m.cells
                            .get_mut(&cell_key(h.store().0 as usize, s))
                            .unwrap()
                            .held -= q;
                    }
                }
                prop_assert_eq!(got, due);
            }
            Op::Delta {
                store,
                sku,
                kind,
                qty,
                id,
                pos_back_ms,
            } => {
                let (kind, qty) = match kind {
                    0 => (PosDeltaKind::Sale, qty.abs().max(1)),
                    1 => (PosDeltaKind::Return, qty.abs().max(1)),
                    2 => (PosDeltaKind::Receive, qty.abs().max(1)),
                    _ => (PosDeltaKind::Adjust, if qty == 0 { 1 } else { qty }),
                };
                let pos_time = now - pos_back_ms;
                let got = engine
                    .apply_delta(
                        &PosDelta {
                            store: STORES[store].into(),
                            sku: SKUS[sku].into(),
                            pos_event_id: format!("pos-{id}"),
                            kind,
                            qty,
                            order_ref: None,
                            pos_time: Timestamp(pos_time),
                        },
                        t,
                    )
                    .unwrap();
                if !m.pos_seen.insert((store, id)) {
                    prop_assert_eq!(got, PosOutcome::Duplicate);
                } else {
                    let signed = if kind == PosDeltaKind::Sale {
                        -qty
                    } else {
                        qty
                    };
                    let c = m.cells.entry(cell_key(store, sku)).or_default();
                    c.on_hand = (i64::from(c.on_hand) + signed).max(0) as u32;
                    m.deltas.push((store, sku, pos_time, signed));
                    let PosOutcome::Applied {
                        on_hand, shortage, ..
                    } = got
                    else {
                        return Err(TestCaseError::fail(format!("delta not applied: {got:?}")));
                    };
                    prop_assert_eq!(on_hand, c.on_hand);
                    prop_assert_eq!(shortage.is_some(), c.on_hand < c.held);
                    if let Some(s) = shortage {
                        check_shortage(&m, store, sku, &s)?;
                    }
                }
            }
            Op::Count {
                store,
                sku,
                counted,
                id,
                as_of_back_ms,
            } => {
                let as_of = now - as_of_back_ms;
                let got = engine
                    .apply_count(
                        &PosCount {
                            store: STORES[store].into(),
                            sku: SKUS[sku].into(),
                            pos_event_id: format!("pos-{id}"),
                            counted,
                            as_of: Timestamp(as_of),
                        },
                        t,
                    )
                    .unwrap();
                if m.pos_seen.contains(&(store, id)) {
                    prop_assert_eq!(got, PosOutcome::Duplicate);
                } else if m.last_count.get(&(store, sku)).is_some_and(|l| *l > as_of) {
                    prop_assert_eq!(got, PosOutcome::StaleCount);
                } else {
                    m.pos_seen.insert((store, id));
                    m.last_count.insert((store, sku), as_of);
                    let later: i64 = m
                        .deltas
                        .iter()
                        .filter(|d| d.0 == store && d.1 == sku && d.2 > as_of)
                        .map(|d| d.3)
                        .sum();
                    let c = m.cells.entry(cell_key(store, sku)).or_default();
                    let before = c.on_hand;
                    c.on_hand = (i64::from(counted) + later).max(0) as u32;
                    let PosOutcome::Applied {
                        on_hand,
                        matched,
                        shortage,
                        ..
                    } = got
                    else {
                        return Err(TestCaseError::fail(format!("count not applied: {got:?}")));
                    };
                    prop_assert_eq!(on_hand, c.on_hand);
                    prop_assert_eq!(matched, Some(before == c.on_hand));
                    prop_assert_eq!(shortage.is_some(), c.on_hand < c.held);
                    if let Some(s) = shortage {
                        check_shortage(&m, store, sku, &s)?;
                    }
                }
            }
            Op::Safety { store, sku, qty } => {
                engine
                    .set_safety_stock(STORES[store], SKUS[sku], qty, t)
                    .unwrap();
                m.cells.entry(cell_key(store, sku)).or_default().safety = Some(qty);
            }
            Op::Pause { store, paused } => {
                let status = if paused {
                    StoreStatus::PickupsPaused
                } else {
                    StoreStatus::Open
                };
                engine.set_store_status(STORES[store], status, t).unwrap();
                m.paused[store] = paused;
            }
        }
        check_invariants(&engine, &m)?;
    }

    // Determinism: the log replayed into a fresh engine rebuilds the same state.
    let replayed = Engine::new(EngineConfig::default()).unwrap();
    for r in log.records() {
        replayed.replay(&r.record).unwrap();
    }
    prop_assert!(replayed.check_conservation().is_ok());
    for (si, s) in STORES.iter().enumerate() {
        for k in SKUS {
            prop_assert_eq!(
                engine.availability(s, k).unwrap(),
                replayed.availability(s, k).unwrap(),
                "store {} sku {}",
                si,
                k
            );
        }
    }
    for h in &granted {
        prop_assert_eq!(engine.hold_info(*h), replayed.hold_info(*h));
    }

    // Snapshot round trip: the state rebuilt from a snapshot equals the live state, and
    // behaves the same (idempotent retries, POS dedupe) afterwards.
    let (_, bytes) = engine.snapshot().unwrap();
    let restored =
        Engine::from_snapshot(EngineConfig::default(), Arc::new(MemoryLog::new()), &bytes).unwrap();
    let (_, again) = restored.snapshot().unwrap();
    prop_assert_eq!(&bytes, &again, "snapshot of a restored engine differs");
    for s in STORES {
        for k in SKUS {
            prop_assert_eq!(
                engine.availability(s, k).unwrap(),
                restored.availability(s, k).unwrap()
            );
        }
    }
    for h in &granted {
        prop_assert_eq!(engine.hold_info(*h), restored.hold_info(*h));
    }
    Ok(())
}

fn pick<T>(v: &[T], i: usize) -> Option<&T> {
    if v.is_empty() {
        None
    } else {
        v.get(i % v.len())
    }
}

fn check_shortage(
    m: &Model,
    store: usize,
    sku: usize,
    s: &pickline_engine::Shortage,
) -> Result<(), TestCaseError> {
    // Newest first, and just enough holds to cover the missing units.
    let mut on_cell: Vec<(HoldId, u32)> = m
        .holds
        .iter()
        .filter(|(id, _)| id.store().0 as usize == store)
        .filter_map(|(id, h)| h.lines.get(&sku).map(|q| (*id, *q)))
        .collect();
    on_cell.sort_by_key(|h| std::cmp::Reverse(h.0));
    let deficit = s.held - s.on_hand;
    let mut covered = 0;
    let mut want = Vec::new();
    for (id, q) in on_cell {
        if covered >= deficit {
            break;
        }
        covered += q;
        want.push(id);
    }
    prop_assert_eq!(&s.holds, &want);
    Ok(())
}

fn check_invariants(engine: &Engine, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(engine.check_conservation(), Ok(()));
    for (si, s) in STORES.iter().enumerate() {
        for (ki, k) in SKUS.iter().enumerate() {
            let got = engine.availability(s, k).unwrap();
            let want = m.cells.get(&(si, ki)).copied().unwrap_or_default();
            prop_assert_eq!(got.on_hand, want.on_hand, "on_hand {} {}", s, k);
            prop_assert_eq!(got.held, want.held, "held {} {}", s, k);
            prop_assert_eq!(got.atp(), want.atp(), "atp {} {}", s, k);
        }
    }
    prop_assert_eq!(engine.active_holds(), m.holds.len());
    for (id, h) in &m.holds {
        let info = engine
            .hold_info(*id)
            .expect("model hold is active in the engine");
        prop_assert_eq!(info.expires_at, Timestamp(h.expires_at));
        prop_assert_eq!(info.confirmed, h.confirmed);
        prop_assert_eq!(&model_lines(engine, &info.lines), &h.lines);
    }
    Ok(())
}

/// An engine hold's lines as the model keeps them (SKU index -> qty).
fn model_lines(engine: &Engine, lines: &[Line]) -> BTreeMap<usize, u32> {
    lines
        .iter()
        .map(|l| {
            let name = engine.sku_name(l.sku).unwrap();
            (SKUS.iter().position(|s| *s == name).unwrap(), l.qty)
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("PICKLINE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
