//! An idempotency key names one request (common.proto): a retry that repeats the request
//! gets the first outcome back; a different request under a used key is refused with
//! `IdempotencyKeyReused` and changes nothing. Checked live, after recovery from the log
//! and after recovery from a snapshot, for holds (granted and rejected) and allocations.

use std::sync::Arc;

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::{Committer, Durability, MemStorage, WalConfig};
use pickline_engine::{
    AllocateRequest, Engine, EngineError, HoldOutcome, HoldRequest, LineRequest, PosDelta,
    PosDeltaKind, StoreDef, Timestamp,
};

const NOW: Timestamp = Timestamp::from_ms(1_795_000_000_000);

fn options() -> OpenOptions {
    OpenOptions {
        wal: WalConfig {
            durability: Durability::Sync,
            committer: Committer::Manual,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    }
}

fn setup(engine: &Engine) {
    for (name, lon) in [("s1", 13.40), ("s2", 13.45)] {
        engine
            .define_store(StoreDef::new(name, 52.5, lon, "Europe/Berlin"), NOW)
            .unwrap();
        for sku in ["A", "B"] {
            engine
                .apply_delta(
                    &PosDelta {
                        store: name.into(),
                        sku: sku.into(),
                        pos_event_id: format!("rcv-{name}-{sku}"),
                        kind: PosDeltaKind::Receive,
                        qty: 10,
                        order_ref: None,
                        pos_time: NOW,
                    },
                    NOW,
                )
                .unwrap();
        }
    }
}

fn hold(store: &str, lines: &[(&str, u32)], key: &str) -> HoldRequest {
    HoldRequest::new(
        store,
        lines
            .iter()
            .map(|(sku, qty)| LineRequest::new(*sku, *qty))
            .collect(),
    )
    .with_key(key)
}

fn allocate(lines: &[(&str, u32)], key: &str) -> AllocateRequest {
    let mut req = AllocateRequest::near(
        52.5,
        13.40,
        lines
            .iter()
            .map(|(sku, qty)| LineRequest::new(*sku, *qty))
            .collect(),
    );
    req.idempotency_key = Some(key.into());
    req
}

fn reused(r: Result<impl std::fmt::Debug, EngineError>) {
    match r {
        Err(EngineError::IdempotencyKeyReused { key }) => assert!(!key.is_empty()),
        other => panic!("a different request under a used key must be refused: {other:?}"),
    }
}

/// The checks that hold in every state of the engine (live, recovered, from a snapshot).
fn check(engine: &Engine, granted: &HoldOutcome) {
    let atp = |s: &str, k: &str| engine.availability(s, k).unwrap().atp();
    let before = (atp("s1", "A"), atp("s1", "B"), atp("s2", "A"));
    let holds = engine.active_holds();
    // The same request: the first outcome, whatever order its lines come in.
    let again = engine
        .hold(&hold("s1", &[("B", 1), ("A", 2)], "cart-1"), NOW)
        .unwrap();
    match (&again, granted) {
        (HoldOutcome::Granted(a), HoldOutcome::Granted(b)) => assert_eq!(a.hold, b.hold),
        other => panic!("{other:?}"),
    }
    // Other lines, another store, another slot, under the same key: refused.
    reused(engine.hold(&hold("s1", &[("A", 3), ("B", 1)], "cart-1"), NOW));
    reused(engine.hold(&hold("s1", &[("A", 2)], "cart-1"), NOW));
    reused(engine.hold(&hold("s2", &[("A", 2), ("B", 1)], "cart-1"), NOW));
    reused(engine.hold(
        &hold("s1", &[("A", 2), ("B", 1)], "cart-1").with_slot(NOW.as_ms()),
        NOW,
    ));
    // A recorded rejection replays; a different request under its key is refused live
    // (after recovery the rejection's lines are not in the log: it replays).
    assert!(matches!(
        engine
            .hold(&hold("s2", &[("B", 11)], "cart-big"), NOW)
            .unwrap(),
        HoldOutcome::Rejected(_)
    ));
    // Allocation: same request replays, a different one is refused.
    let first = engine
        .allocate(&allocate(&[("A", 1)], "alloc-1"), NOW)
        .unwrap();
    assert_eq!(
        engine
            .allocate(&allocate(&[("A", 1)], "alloc-1"), NOW)
            .unwrap()
            .parts()
            .map(|p| p[0].grant.hold),
        first.parts().map(|p| p[0].grant.hold),
    );
    reused(engine.allocate(&allocate(&[("A", 2)], "alloc-1"), NOW));
    reused(engine.allocate(&allocate(&[("B", 1)], "alloc-1"), NOW));
    // Nothing changed by any of it.
    assert_eq!((atp("s1", "A"), atp("s1", "B"), atp("s2", "A")), before);
    assert_eq!(engine.active_holds(), holds);
    engine.check_conservation().unwrap();
}

#[test]
fn a_key_names_one_request_live_after_replay_and_after_a_snapshot() {
    let storage = Arc::new(MemStorage::new());
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    setup(db.engine());
    let granted = db
        .engine()
        .hold(&hold("s1", &[("A", 1), ("B", 1), ("A", 1)], "cart-1"), NOW)
        .unwrap();
    assert!(matches!(granted, HoldOutcome::Granted(_)));
    // A live rejection is refused for a different request too.
    let big = hold("s2", &[("B", 11)], "cart-big");
    assert!(matches!(
        db.engine().hold(&big, NOW).unwrap(),
        HoldOutcome::Rejected(_)
    ));
    reused(db.engine().hold(&hold("s2", &[("B", 12)], "cart-big"), NOW));
    db.engine()
        .allocate(&allocate(&[("A", 1)], "alloc-1"), NOW)
        .unwrap();
    check(db.engine(), &granted);
    db.close().unwrap();

    // Recovered from the log.
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    check(db.engine(), &granted);
    // Recovered from a snapshot.
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = DurableEngine::open(storage, options()).unwrap();
    check(db.engine(), &granted);
}

#[test]
fn a_batch_with_a_reused_key_holds_nothing() {
    let engine = Engine::new(pickline_engine::EngineConfig::default()).unwrap();
    setup(&engine);
    engine
        .hold(&hold("s1", &[("A", 1)], "cart-1"), NOW)
        .unwrap();
    let holds = engine.active_holds();
    let batch = [
        hold("s1", &[("B", 1)], "cart-2"),
        hold("s1", &[("A", 5)], "cart-1"),
        hold("s2", &[("A", 1)], "cart-3"),
    ];
    reused(engine.hold_batch(&batch, NOW));
    assert_eq!(
        engine.active_holds(),
        holds,
        "no hold of the batch was applied"
    );
    assert_eq!(engine.availability("s1", "B").unwrap().atp(), 10);
    // The same batch with the first request repeated exactly goes through.
    let batch = [
        hold("s1", &[("B", 1)], "cart-2"),
        hold("s1", &[("A", 1)], "cart-1"),
    ];
    let out = engine.hold_batch(&batch, NOW).unwrap();
    assert!(out.iter().all(|o| matches!(o, Ok(HoldOutcome::Granted(_)))));
    assert_eq!(engine.active_holds(), holds + 1);
}
