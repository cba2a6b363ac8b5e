//! `defer_durability` and the WAL's non-blocking wait: engine calls under deferral apply and
//! append but do not wait; the LSN they report is exactly what must become durable; the
//! progress hook fires when it does. Driven through a manual committer, so nothing becomes
//! durable until the test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::wal::{Committer, Durability, MemStorage, WalConfig, WalError};
use pickline_engine::{
    HoldOutcome, HoldRequest, LineRequest, Lsn, PosDelta, PosDeltaKind, StoreDef, Timestamp,
    defer_durability,
};

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fn open(storage: &MemStorage) -> DurableEngine {
    let opts = OpenOptions {
        wal: WalConfig {
            durability: Durability::Sync,
            committer: Committer::Manual,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    };
    DurableEngine::open(Arc::new(storage.clone()), opts).expect("open")
}

fn stock(db: &DurableEngine, qty: i64) {
    let engine = db.engine();
    engine
        .define_store(StoreDef::new("s1", 52.5, 13.4, "Europe/Berlin"), NOW)
        .unwrap();
    engine
        .apply_delta(
            &PosDelta {
                store: "s1".into(),
                sku: "sku-a".into(),
                pos_event_id: "e1".into(),
                kind: PosDeltaKind::Receive,
                qty,
                order_ref: None,
                pos_time: NOW,
            },
            NOW,
        )
        .unwrap();
}

fn hold(key: &str, qty: u32) -> HoldRequest {
    HoldRequest::new("s1", vec![LineRequest::new("sku-a", qty)]).with_key(key)
}

#[test]
fn deferred_calls_do_not_wait_and_name_the_newest_lsn() {
    let storage = MemStorage::new();
    let db = open(&storage);
    stock(&db, 10);
    let wal = db.wal();
    let before = wal.durable_lsn();
    assert_eq!(
        before,
        Lsn(wal.next_lsn().0 - 1),
        "setup calls waited, so all is durable"
    );

    let hooks = Arc::new(AtomicUsize::new(0));
    let counter = hooks.clone();
    wal.set_progress_hook(Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }))
    .map_err(|_| "hook")
    .unwrap();
    assert!(
        wal.set_progress_hook(Box::new(|| {})).is_err(),
        "one hook per WAL"
    );

    let engine = db.engine();
    let deferred = defer_durability(|| {
        let a = engine.hold(&hold("k1", 3), NOW).unwrap();
        let b = engine.hold(&hold("k2", 4), NOW).unwrap();
        (a, b)
    });
    assert!(matches!(deferred.value.0, HoldOutcome::Granted(_)));
    assert!(matches!(deferred.value.1, HoldOutcome::Granted(_)));
    let wait_for = deferred.wait_for.expect("two holds appended records");
    assert_eq!(
        wait_for,
        Lsn(wal.next_lsn().0 - 1),
        "the newest record of the closure"
    );
    assert_eq!(
        wal.durable_lsn(),
        before,
        "a manual committer synced nothing"
    );
    assert!(!wal.poll_durable(wait_for).unwrap(), "not durable yet");
    assert_eq!(hooks.load(Ordering::SeqCst), 0);

    wal.flush().unwrap();
    assert!(wal.poll_durable(wait_for).unwrap());
    assert!(
        hooks.load(Ordering::SeqCst) >= 1,
        "the hook fired on progress"
    );
    assert!(matches!(
        wal.poll_durable(wal.next_lsn()),
        Err(WalError::LsnNotAssigned { .. })
    ));

    // Outside a deferral the engine waits again (here: commits inline).
    engine.hold(&hold("k3", 1), NOW).unwrap();
    assert_eq!(wal.durable_lsn(), Lsn(wal.next_lsn().0 - 1));
}

#[test]
fn nested_deferrals_carry_the_inner_lsn_out() {
    let storage = MemStorage::new();
    let db = open(&storage);
    stock(&db, 2);
    let engine = db.engine();

    let outer = defer_durability(|| {
        let inner = defer_durability(|| engine.hold(&hold("k1", 2), NOW).unwrap());
        assert!(inner.wait_for.is_some());
        inner.wait_for
    });
    assert_eq!(
        outer.wait_for, outer.value,
        "the outer deferral saw the inner LSN"
    );

    // Nothing left: the rejection is an outcome; its shortage event is logged after the
    // grant, so waiting for it also covers the grant.
    let rejected = defer_durability(|| engine.hold(&hold("k2", 1), NOW).unwrap());
    assert!(matches!(rejected.value, HoldOutcome::Rejected(_)));
    assert!(rejected.wait_for.is_none_or(|l| Some(l) > outer.wait_for));
}

#[test]
fn a_crash_before_the_deferred_lsn_is_durable_keeps_everything_acknowledged() {
    for seed in 0..50 {
        let storage = MemStorage::new();
        let crashed = {
            let db = open(&storage);
            stock(&db, 10);
            let engine = db.engine();
            let d = defer_durability(|| engine.hold(&hold("k1", 5), NOW).unwrap());
            assert!(!db.wal().poll_durable(d.wait_for.unwrap()).unwrap());
            storage.crash(seed).0
        };
        let db = open(&crashed);
        let view = db.engine().availability("s1", "sku-a").unwrap();
        assert_eq!(
            view.on_hand, 10,
            "seed {seed}: the acknowledged receipt survived"
        );
        assert!(
            view.held == 0 || view.held == 5,
            "seed {seed}: the unacknowledged hold is whole or absent, held = {}",
            view.held
        );
    }
}
