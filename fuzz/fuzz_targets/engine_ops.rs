//! `engine_ops`: arbitrary operation sequences against the engine and a naive model.
//!
//! Each input byte stream decodes into operations (holds alone, batched and under a batch
//! key, releases, confirms, extends, expiries, POS deltas and counts, safety stock,
//! pauses, kept replies). After every operation the engine
//! must agree with a plain sequential model on `on_hand` and `held` of every cell, keep
//! conservation, and never panic; at the end a replay of its own log into a fresh engine
//! must give byte-identical snapshot bytes, and a replay of a prefix of it (a crash) must
//! release exactly the holds of keyed batches whose answer the cut dropped.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pickline_engine::{
    Engine, EngineConfig, Event, HoldId, HoldOutcome, HoldRequest, LineRequest, MemoryLog,
    PosCount, PosDelta, PosDeltaKind, PosOutcome, StoreDef, StoreStatus, Timestamp,
};

const STORES: [&str; 2] = ["s0", "s1"];
const SKUS: [&str; 3] = ["A", "B", "C"];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

#[derive(Default, Clone, Copy)]
struct Cell {
    on_hand: i64,
    held: i64,
}

/// Small tables: the fuzzer builds an engine per input.
fn config() -> EngineConfig {
    EngineConfig {
        limits: pickline_engine::Limits {
            stores_max: 16,
            skus_max: 1024,
            ..Default::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let log = Arc::new(MemoryLog::new());
    let engine = Engine::with_log(config(), log.clone()).unwrap();
    let mut now = 1_700_000_000_000i64;
    for s in STORES {
        engine
            .define_store(StoreDef::new(s, 1.0, 2.0, "UTC"), Timestamp(now))
            .unwrap();
    }
    let mut model: HashMap<(usize, usize), Cell> = HashMap::new();
    let mut holds: Vec<(HoldId, Vec<(usize, i64)>)> = Vec::new();
    let mut active: HashMap<HoldId, (Vec<(usize, i64)>, i64)> = HashMap::new();
    let mut b = Bytes(data);
    while let Some(op) = b.u8() {
        let arg = b.u8().unwrap_or(0);
        let arg2 = b.u8().unwrap_or(0);
        let store = (arg & 1) as usize;
        let sku = (arg as usize >> 1) % 3;
        let t = Timestamp(now);
        match op % 10 {
            0 => {
                let n = 1 + (arg2 % 3) as usize;
                let lines: Vec<LineRequest> = (0..n)
                    .map(|i| LineRequest::new(SKUS[(sku + i) % 3], 1 + u32::from(arg2 >> 4)))
                    .collect();
                let req = HoldRequest::new(STORES[store], lines.clone())
                    .with_ttl_ms(1_000 + i64::from(arg2) * 100);
                // Bit 3: the same hold twice in one batch (one lock set, one record); bit 4:
                // that batch under a batch key from a small set, so keys repeat (a retry
                // answers with the holds it granted before, which the model already has).
                let outcomes = if arg2 & 16 != 0 {
                    engine
                        .hold_batch_keyed(&format!("batch-{}", arg % 4), &[req.clone(), req], t)
                        .map(|o| o.into_iter().map(|r| r.map(|(o, _)| o)).collect())
                        .unwrap_or_default()
                } else if arg2 & 8 != 0 {
                    engine
                        .hold_batch(&[req.clone(), req], t)
                        .unwrap_or_default()
                } else {
                    vec![engine.hold(&req, t)]
                };
                for outcome in outcomes {
                    let Ok(HoldOutcome::Granted(g)) = outcome else {
                        continue;
                    };
                    if holds.iter().any(|(h, _)| *h == g.hold) {
                        continue;
                    }
                    let l: Vec<(usize, i64)> = lines
                        .iter()
                        .map(|l| {
                            (
                                SKUS.iter().position(|s| *s == l.sku).unwrap(),
                                i64::from(l.qty),
                            )
                        })
                        .collect();
                    for (k, q) in &l {
                        model.entry((store, *k)).or_default().held += q;
                    }
                    holds.push((g.hold, l.clone()));
                    active.insert(g.hold, (l, g.expires_at.0));
                }
            }
            1 => {
                if let Some((h, _)) = holds.get(arg as usize % holds.len().max(1)).cloned() {
                    let _ = engine.release(h, t);
                    if let Some((l, _)) = active.remove(&h) {
                        for (k, q) in l {
                            model.get_mut(&(h.store().0 as usize, k)).unwrap().held -= q;
                        }
                    }
                }
            }
            2 => {
                if let Some((h, _)) = holds.get(arg as usize % holds.len().max(1)).cloned() {
                    let _ = engine.confirm(h, t);
                }
            }
            3 => {
                if let Some((h, _)) = holds.get(arg as usize % holds.len().max(1)).cloned()
                    && let Ok(pickline_engine::ExtendOutcome::Extended { expires_at }) =
                        engine.extend(h, Some(1_000 + i64::from(arg2) * 100), t)
                {
                    active.get_mut(&h).unwrap().1 = expires_at.0;
                }
            }
            4 => {
                now += i64::from(arg) * 97;
                let t = Timestamp(now);
                let expired = engine.expire(t, usize::MAX).unwrap();
                for e in expired {
                    let (l, _) = active.remove(&e.hold).unwrap();
                    for (k, q) in l {
                        model.get_mut(&(e.hold.store().0 as usize, k)).unwrap().held -= q;
                    }
                }
                assert!(
                    active.values().all(|(_, exp)| *exp > now),
                    "a due hold did not expire"
                );
            }
            5 | 6 => {
                let kind = match arg2 % 4 {
                    0 => PosDeltaKind::Sale,
                    1 => PosDeltaKind::Return,
                    2 => PosDeltaKind::Receive,
                    _ => PosDeltaKind::Adjust,
                };
                let qty = i64::from(arg2 >> 2).max(1)
                    * if kind == PosDeltaKind::Adjust && arg2 & 2 != 0 {
                        -1
                    } else {
                        1
                    };
                let out = engine.apply_delta(
                    &PosDelta {
                        store: STORES[store].into(),
                        sku: SKUS[sku].into(),
                        pos_event_id: format!("p{}", arg2 % 64),
                        kind,
                        qty,
                        order_ref: None,
                        pos_time: t,
                    },
                    t,
                );
                if let Ok(PosOutcome::Applied { on_hand, .. }) = out {
                    model.entry((store, sku)).or_default().on_hand = i64::from(on_hand);
                }
            }
            7 => {
                let out = engine.apply_count(
                    &PosCount {
                        store: STORES[store].into(),
                        sku: SKUS[sku].into(),
                        pos_event_id: format!("p{}", arg2 % 64),
                        counted: u32::from(arg2 % 20),
                        as_of: Timestamp(now - i64::from(arg2) * 10),
                    },
                    t,
                );
                if let Ok(PosOutcome::Applied { on_hand, .. }) = out {
                    model.entry((store, sku)).or_default().on_hand = i64::from(on_hand);
                }
            }
            8 => {
                // A kept reply under a small set of callers and keys, so keys are kept
                // again; the replay and the snapshot below must agree on what is kept.
                let principal = ["oms", "pos"][store];
                let key = format!("r{}", arg2 % 8);
                let response = vec![arg; usize::from(arg2 % 32)];
                engine
                    .keep_reply(principal, &key, u64::from(arg), response.clone(), t)
                    .unwrap();
                let kept = engine.kept_reply(principal, &key, t).unwrap();
                assert_eq!(
                    (kept.fingerprint, &*kept.response),
                    (u64::from(arg), &response[..])
                );
            }
            _ => {
                let status = if arg2 & 1 == 0 {
                    StoreStatus::Open
                } else {
                    StoreStatus::PickupsPaused
                };
                engine.set_store_status(STORES[store], status, t).unwrap();
            }
        }
        engine.check_conservation().unwrap();
        for ((s, k), c) in &model {
            let v = engine.availability(STORES[*s], SKUS[*k]).unwrap();
            assert_eq!(i64::from(v.held), c.held, "held");
            assert_eq!(i64::from(v.on_hand), c.on_hand, "on_hand");
        }
    }
    let fresh = Engine::new(config()).unwrap();
    for r in log.records() {
        let mut buf = Vec::new();
        r.record.encode(&mut buf);
        fresh
            .replay(&pickline_engine::Record::decode(&buf).unwrap())
            .unwrap();
    }
    assert_eq!(
        engine.snapshot().unwrap().1,
        fresh.snapshot().unwrap().1,
        "replay differs"
    );
    // A crash may cut the log after any record. Recovery replays the prefix and releases
    // the holds of keyed batches whose answer (`BatchKept`) was cut off, and only those.
    let records = log.records();
    let cut = data.last().map_or(0, |b| usize::from(*b) * 7_919) % (records.len() + 1);
    let crashed = Engine::new(config()).unwrap();
    let mut unanswered: HashMap<String, Vec<HoldId>> = HashMap::new();
    for r in &records[..cut] {
        crashed.replay(&r.record).unwrap();
        match r.record.events.first() {
            Some(Event::KeyedPart { key, .. }) => {
                let granted = r.record.events.iter().filter_map(|e| match e {
                    Event::HoldGranted { hold, .. } => Some(*hold),
                    _ => None,
                });
                unanswered.entry(key.clone()).or_default().extend(granted);
            }
            Some(Event::BatchKept { key, .. }) => {
                unanswered.remove(key);
            }
            _ => {}
        }
    }
    let at = records[..cut]
        .last()
        .map_or(Timestamp(now), |r| r.record.at);
    let was_active = |e: &Engine, h: &HoldId| e.hold_info(*h).is_some();
    let expected = unanswered
        .values()
        .flatten()
        .filter(|h| was_active(&crashed, h))
        .count();
    assert_eq!(crashed.release_unanswered(at).unwrap(), expected);
    assert!(
        unanswered
            .values()
            .flatten()
            .all(|h| !was_active(&crashed, h))
    );
    crashed.check_conservation().unwrap();
});
