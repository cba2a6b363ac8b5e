//! `Engine::replay_exclusive` (recovery's lock-free path for hold grants) against
//! `Engine::replay`: the same log gives the same state, and the same bad records give the
//! same errors.

use std::sync::Arc;

use pickline_engine::{
    Engine, EngineConfig, EngineError, Event, HoldId, HoldRequest, Line, LineRequest, MemoryLog,
    PosDelta, PosDeltaKind, Record, SkuId, StoreDef, StoreId, Timestamp,
};

const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);

fn receive(e: &Engine, store: &str, sku: &str, qty: i64) {
    e.apply_delta(
        &PosDelta {
            store: store.into(),
            sku: sku.into(),
            pos_event_id: format!("rcv-{store}-{sku}"),
            kind: PosDeltaKind::Receive,
            qty,
            order_ref: None,
            pos_time: T0,
        },
        T0,
    )
    .unwrap();
}

/// A log with grants (one and several lines, keyed and not), a rejection, an extension,
/// a confirmation and releases over two stores.
fn live_log() -> Vec<Record> {
    let log = Arc::new(MemoryLog::new());
    let e = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    for s in ["s1", "s2"] {
        e.define_store(StoreDef::new(s, 52.5, 13.4, "Europe/Berlin"), T0)
            .unwrap();
        for sku in ["A", "B", "C"] {
            receive(&e, s, sku, 50);
        }
    }
    let mut holds = Vec::new();
    for i in 0..40u32 {
        let store = if i % 3 == 0 { "s2" } else { "s1" };
        let mut lines = vec![LineRequest::new("A", 1)];
        if i % 4 == 0 {
            lines.push(LineRequest::new("C", 2));
        }
        let mut req = HoldRequest::new(store, lines);
        if i % 5 == 0 {
            req.idempotency_key = Some(format!("key-{i}"));
        }
        let out = e.hold(&req, T0.add_ms(i64::from(i))).unwrap();
        if let Some(g) = out.granted() {
            holds.push(g.hold);
        }
    }
    let mut too_much = HoldRequest::new("s1", vec![LineRequest::new("B", 500)]);
    too_much.idempotency_key = Some("rejected".into());
    assert!(e.hold(&too_much, T0).unwrap().granted().is_none());
    e.extend(holds[1], Some(600_000), T0.add_ms(100)).unwrap();
    e.confirm(holds[2], T0.add_ms(100)).unwrap();
    for h in holds.iter().step_by(3) {
        e.release(*h, T0.add_ms(200)).unwrap();
    }
    log.records()
        .into_iter()
        .map(|r| (*r.record).clone())
        .collect()
}

fn replay_both(records: &[Record]) -> (Engine, Engine) {
    let shared = Engine::new(EngineConfig::default()).unwrap();
    let mut exclusive = Engine::new(EngineConfig::default()).unwrap();
    for r in records {
        shared.replay(r).unwrap();
        exclusive.replay_exclusive(r).unwrap();
    }
    (shared, exclusive)
}

#[test]
fn exclusive_replay_rebuilds_the_same_state() {
    let records = live_log();
    let (shared, exclusive) = replay_both(&records);
    exclusive.check_conservation().unwrap();
    assert_eq!(shared.active_holds(), exclusive.active_holds());
    assert_eq!(shared.snapshot().unwrap(), exclusive.snapshot().unwrap());
}

#[test]
fn exclusive_replay_rejects_bad_grants_as_replay_does() {
    let records = live_log();
    let grant = |hold: HoldId, lines: Vec<Line>| Record {
        at: T0,
        events: vec![Event::HoldGranted {
            hold,
            key: None,
            lines,
            expires_at: T0.add_ms(60_000),
            slot: None,
        }],
    };
    let line = |sku: u32, qty: u32| Line {
        sku: SkuId(sku),
        qty,
    };
    let fresh = HoldId::new(StoreId(0), 1_000);
    let granted = records
        .iter()
        .flat_map(|r| &r.events)
        .find_map(|ev| match ev {
            Event::HoldGranted { hold, .. } if hold.store() == StoreId(0) => Some(*hold),
            _ => None,
        })
        .unwrap();
    // A slot no calendar has: the one start a hold record cannot keep (it means "no slot").
    let mut slot_at_min = grant(fresh, vec![line(0, 1)]);
    if let Event::HoldGranted { slot, .. } = &mut slot_at_min.events[0] {
        *slot = Some(i64::MIN);
    }
    let bad = [
        slot_at_min,
        grant(HoldId::new(StoreId(9), 1), vec![line(0, 1)]),
        grant(fresh, vec![line(u32::MAX - 1, 1)]),
        grant(fresh, vec![line(1, 1), line(0, 1)]),
        grant(fresh, vec![line(0, 1), line(0, 1)]),
        grant(granted, vec![line(0, 1)]),
        grant(fresh, vec![line(0, u32::MAX)]),
    ];
    for record in &bad {
        let (shared, mut exclusive) = replay_both(&records);
        let want = shared.replay(record).unwrap_err();
        let got = exclusive.replay_exclusive(record).unwrap_err();
        assert_eq!(want.to_string(), got.to_string());
        // A record that does not apply is a damaged log, not the caller's misuse: a
        // client must never be told INVALID_ARGUMENT for it.
        assert!(
            matches!(
                want,
                EngineError::Corrupt {
                    what: "log record",
                    ..
                }
            ),
            "{want:?}"
        );
        assert!(!want.is_misuse());
        // Nothing was applied by either.
        assert_eq!(shared.snapshot().unwrap(), exclusive.snapshot().unwrap());
    }
}
