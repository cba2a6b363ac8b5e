//! An idempotency key names one request (common.proto): a retry that repeats the request
//! gets the first outcome back; a different request under a used key is refused with
//! `IdempotencyKeyReused` and changes nothing. Checked live, after recovery from the log
//! and after recovery from a snapshot, for holds (granted and rejected) and allocations.

mod common;

use std::sync::Arc;

use pickline_engine::durable::DurableEngine;
use pickline_engine::wal::MemStorage;
use pickline_engine::{
    AllocateRequest, Engine, EngineError, HoldOutcome, HoldRequest, LineRequest, PosDelta,
    PosDeltaKind, StoreDef, Timestamp,
};

const NOW: Timestamp = Timestamp::from_ms(1_795_000_000_000);

use common::manual_sync_options as options;

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
    // The hold time the request resolved to is part of it: the store's default (2 hours)
    // named explicitly is the same request; another hold time is not (issue 15, bug 4).
    match engine.hold(
        &hold("s1", &[("A", 2), ("B", 1)], "cart-1").with_ttl_ms(2 * 3_600_000),
        NOW,
    ) {
        Ok(HoldOutcome::Granted(a)) => assert!(
            matches!(granted, HoldOutcome::Granted(b) if b.hold == a.hold),
            "{a:?}"
        ),
        other => panic!("the same request with its default hold time: {other:?}"),
    }
    reused(engine.hold(
        &hold("s1", &[("A", 2), ("B", 1)], "cart-1").with_ttl_ms(600_000),
        NOW,
    ));
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

/// A batch kept under one key for the whole batch: its holds (no keys of their own).
fn keyed_batch() -> Vec<HoldRequest> {
    vec![
        HoldRequest::new("s1", vec![LineRequest::new("A", 2)]),
        HoldRequest::new("s2", vec![LineRequest::new("B", 50)]),
        HoldRequest::new(
            "s1",
            vec![LineRequest::new("B", 1), LineRequest::new("A", 1)],
        ),
    ]
}

/// The answers of `keyed_batch` as comparable strings: grants by hold id, rejections.
fn answers(out: &[Result<pickline_engine::LoggedOutcome, EngineError>]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Ok((HoldOutcome::Granted(g), _)) => format!("granted {}", g.hold),
            Ok((other, _)) => format!("{other:?}"),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

/// The checks of a kept batch in every state (live, recovered, from a snapshot): the same
/// batch gets `first` back, with LSNs at or below the log head (a retry's), and changes
/// nothing; other holds under the key are refused.
fn check_batch(engine: &Engine, first: &[String]) {
    let atp = |s: &str, k: &str| engine.availability(s, k).unwrap().atp();
    let before = (atp("s1", "A"), atp("s1", "B"), atp("s2", "B"));
    let holds = engine.active_holds();
    let head = engine.log().last_lsn();
    let again = engine
        .hold_batch_keyed("batch-1", &keyed_batch(), NOW)
        .unwrap();
    assert_eq!(answers(&again), first);
    assert!(
        again
            .iter()
            .all(|o| matches!(o, Ok((_, Some(lsn))) if *lsn <= head)),
        "{again:?}"
    );
    let mut other = keyed_batch();
    other[1].lines[0].qty = 49;
    reused(engine.hold_batch_keyed("batch-1", &other, NOW));
    reused(engine.hold_batch_keyed("batch-1", &keyed_batch()[..2], NOW));
    assert_eq!((atp("s1", "A"), atp("s1", "B"), atp("s2", "B")), before);
    assert_eq!(engine.active_holds(), holds);
}

#[test]
fn a_batch_key_names_one_batch_live_after_replay_and_after_a_snapshot() {
    let storage = Arc::new(MemStorage::new());
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    setup(db.engine());
    // Misuse refuses the whole batch and uses up nothing: holds with keys of their own,
    // a malformed hold.
    let mut keyed = keyed_batch();
    keyed[0] = keyed[0].clone().with_key("own");
    let refused = |r: Result<_, EngineError>, at: usize| match r {
        Err(EngineError::InBatch { index, error }) => {
            assert_eq!(index, at);
            assert!(
                matches!(*error, EngineError::InvalidRequest { .. }),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    };
    refused(db.engine().hold_batch_keyed("batch-1", &keyed, NOW), 0);
    let mut malformed = keyed_batch();
    malformed[2].lines[0].qty = 0;
    refused(db.engine().hold_batch_keyed("batch-1", &malformed, NOW), 2);
    assert_eq!(db.engine().active_holds(), 0);
    let first = db
        .engine()
        .hold_batch_keyed("batch-1", &keyed_batch(), NOW)
        .unwrap();
    let first = answers(&first);
    assert!(first[0].starts_with("granted") && first[2].starts_with("granted"));
    assert!(first[1].contains("InsufficientStock"), "{first:?}");
    assert_eq!(db.engine().active_holds(), 2);
    check_batch(db.engine(), &first);
    db.close().unwrap();

    // Recovered from the log.
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    check_batch(db.engine(), &first);
    // Recovered from a snapshot.
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = DurableEngine::open(storage, options()).unwrap();
    check_batch(db.engine(), &first);
}

#[test]
fn a_kept_batch_keeps_a_full_store_too() {
    let mut config = pickline_engine::EngineConfig::default();
    config.limits.store_active_holds_max = 1;
    let engine = Engine::new(config).unwrap();
    setup(&engine);
    let batch = [
        HoldRequest::new("s1", vec![LineRequest::new("A", 1)]),
        HoldRequest::new("s1", vec![LineRequest::new("A", 1)]),
    ];
    let out = engine.hold_batch_keyed("full", &batch, NOW).unwrap();
    let first = answers(&out);
    assert!(first[0].starts_with("granted"), "{first:?}");
    assert!(first[1].contains("store_active_holds_max"), "{first:?}");
    // The retry gets the same answers, even once the store has room again.
    let Ok((HoldOutcome::Granted(g), _)) = &out[0] else {
        panic!("{out:?}")
    };
    engine.release(g.hold, NOW).unwrap();
    let again = answers(&engine.hold_batch_keyed("full", &batch, NOW).unwrap());
    assert_eq!(again, first);
    assert_eq!(engine.active_holds(), 0);
}

#[test]
fn a_batch_kept_record_survives_its_encoding() {
    use pickline_engine::{Event, HoldId, HoldRejection, KeptAnswer, LineShortage, Record};
    let record = Record {
        at: NOW,
        events: vec![Event::BatchKept {
            key: "batch-1".into(),
            request: 0xdead_beef,
            answers: vec![
                KeptAnswer::Granted {
                    hold: HoldId(7),
                    expires_at: Timestamp(NOW.as_ms() + 60_000),
                },
                KeptAnswer::Rejected(HoldRejection::InsufficientStock {
                    shortages: vec![LineShortage {
                        sku: "A".into(),
                        requested: 3,
                        available: 1,
                    }],
                }),
                KeptAnswer::LimitReached {
                    limit: "store_active_holds_max".into(),
                    value: 1,
                },
            ],
        }],
    };
    let mut buf = Vec::new();
    record.encode(&mut buf);
    assert_eq!(Record::decode(&buf).unwrap(), record);
    // Every cut of it is an error, never a panic or a different record.
    for len in 0..buf.len() {
        assert!(Record::decode(&buf[..len]).is_err(), "cut at {len}");
    }
}

#[test]
fn a_batch_key_is_forgotten_after_the_dedupe_window() {
    let engine = Engine::new(pickline_engine::EngineConfig::default()).unwrap();
    setup(&engine);
    let one = [HoldRequest::new("s1", vec![LineRequest::new("A", 1)])];
    let two = [HoldRequest::new("s1", vec![LineRequest::new("A", 2)])];
    engine.hold_batch_keyed("batch-1", &one, NOW).unwrap();
    reused(engine.hold_batch_keyed("batch-1", &two, NOW));
    let window = pickline_engine::EngineConfig::default()
        .limits
        .dedupe_window_ms;
    let later = Timestamp(NOW.as_ms() + window + 1);
    let out = engine.hold_batch_keyed("batch-1", &two, later).unwrap();
    assert!(
        matches!(out[0], Ok((HoldOutcome::Granted(_), _))),
        "{out:?}"
    );
}

/// Rejections name every short SKU, so a batch of big keyed rejections is far larger than
/// one log record may be (1 MiB): the batch splits its groups by size, and every answer is
/// logged and survives a restart.
#[test]
fn a_batch_of_big_rejections_fits_the_log() {
    let storage = Arc::new(MemStorage::new());
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    setup(db.engine());
    let limits = pickline_engine::EngineConfig::default().limits;
    let sku = |i: usize| format!("{i:0>width$}", width = limits.external_id_len_max);
    let lines: Vec<LineRequest> = (0..limits.hold_lines_max)
        .map(|i| LineRequest::new(sku(i), 1))
        .collect();
    let key = |i: usize| format!("{i:0>width$}", width = limits.key_len_max);
    let batch: Vec<HoldRequest> = (0..256)
        .map(|i| HoldRequest::new("s1", lines.clone()).with_key(key(i)))
        .collect();
    let out = db.engine().hold_batch(&batch, NOW).unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, Ok(HoldOutcome::Rejected(_)))),
        "{:?}",
        out.first()
    );
    db.close().unwrap();
    let db = DurableEngine::open(storage, options()).unwrap();
    // Every rejection was logged under its key: the retry replays it.
    let again = db.engine().hold_batch(&batch[255..], NOW).unwrap();
    assert!(matches!(again[0], Ok(HoldOutcome::Rejected(_))));
}
