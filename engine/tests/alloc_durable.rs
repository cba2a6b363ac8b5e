//! An allocation made under an idempotency key survives a crash and a snapshot: a retry
//! after recovery gets the same holds back and holds nothing a second time (common.proto:
//! "Retrying with the same key returns the original outcome and changes nothing").
//! Without the `AllocationKept` record, the retry would allocate again and hold the
//! units twice until the first holds expired.

mod common;

use std::sync::Arc;

use pickline_engine::durable::DurableEngine;
use pickline_engine::wal::MemStorage;
use pickline_engine::{
    AllocateOutcome, AllocateRequest, AllocatedPart, Engine, LineRequest, PosDelta, PosDeltaKind,
    StoreDef, Timestamp,
};

const NOW: Timestamp = Timestamp::from_ms(1_795_000_000_000);

use common::manual_sync_options as options;

fn receive(engine: &Engine, store: &str, sku: &str, qty: i64) {
    engine
        .apply_delta(
            &PosDelta {
                store: store.into(),
                sku: sku.into(),
                pos_event_id: format!("rcv-{store}-{sku}"),
                kind: PosDeltaKind::Receive,
                qty,
                order_ref: None,
                pos_time: NOW,
            },
            NOW,
        )
        .unwrap();
}

/// Three stores east of the customer; A only at s1, B only at s2, C at s0.
fn network(engine: &Engine) {
    for (i, lon) in [13.40, 13.45, 13.50].iter().enumerate() {
        engine
            .define_store(
                StoreDef::new(format!("s{i}"), 52.5, *lon, "Europe/Berlin"),
                NOW,
            )
            .unwrap();
    }
    receive(engine, "s0", "C", 5);
    receive(engine, "s1", "A", 5);
    receive(engine, "s2", "B", 5);
}

/// One keyed allocation split over two stores, one over a single store.
fn requests() -> [AllocateRequest; 2] {
    let mut split = AllocateRequest::near(
        52.5,
        13.40,
        vec![LineRequest::new("A", 2), LineRequest::new("B", 1)],
    );
    split.allow_split = true;
    split.idempotency_key = Some("order-split".into());
    let mut single = AllocateRequest::near(52.5, 13.40, vec![LineRequest::new("C", 3)]);
    single.idempotency_key = Some("order-single".into());
    [split, single]
}

/// What a retry must give back of a part: the same hold, store, expiry, lines and distance.
fn essentials(parts: &[AllocatedPart]) -> Vec<(u64, String, i64, Vec<LineRequest>, u64)> {
    parts
        .iter()
        .map(|p| {
            (
                p.grant.hold.0,
                p.store_external_id.clone(),
                p.grant.expires_at.as_ms(),
                p.lines.clone(),
                p.distance_km.to_bits(),
            )
        })
        .collect()
}

/// Availability of every (store, SKU) the network stocks.
fn atp(engine: &Engine) -> Vec<u32> {
    [("s0", "C"), ("s1", "A"), ("s2", "B")]
        .iter()
        .map(|(s, k)| engine.availability(s, k).unwrap().atp())
        .collect()
}

/// Retries every request and checks each gets its first parts back with nothing held
/// again.
fn retry_all(engine: &Engine, first: &[Vec<AllocatedPart>], atp_before: &[u32], holds: usize) {
    for (req, parts) in requests().iter().zip(first) {
        let again = engine.allocate(req, NOW).unwrap();
        let AllocateOutcome::Allocated { parts: got, .. } = &again else {
            panic!("a retry of an allocation must allocate: {again:?}");
        };
        assert_eq!(essentials(got), essentials(parts));
    }
    assert_eq!(engine.active_holds(), holds, "nothing held a second time");
    assert_eq!(atp(engine), atp_before);
    engine.check_conservation().unwrap();
}

#[test]
fn a_retried_allocation_after_a_crash_gets_its_holds_back() {
    for seed in 0..8 {
        let storage = Arc::new(MemStorage::new());
        let db = DurableEngine::open(storage.clone(), options()).unwrap();
        network(db.engine());
        let first: Vec<Vec<AllocatedPart>> = requests()
            .iter()
            .map(|req| match db.engine().allocate(req, NOW).unwrap() {
                AllocateOutcome::Allocated { parts, .. } => parts,
                other => panic!("the network can serve it: {other:?}"),
            })
            .collect();
        assert_eq!(first[0].len(), 2, "A and B come from two stores");
        let holds = db.engine().active_holds();
        assert_eq!(holds, 3);
        let atp_before = atp(db.engine());
        // A power cut right after the answers: only what was synced survives.
        let (crashed, _) = storage.crash(seed);
        drop(db);
        let crashed = Arc::new(crashed);
        let db = DurableEngine::open(crashed.clone(), options()).unwrap();
        retry_all(db.engine(), &first, &atp_before, holds);
        // And from a snapshot, with the log before it gone.
        db.checkpoint().unwrap();
        db.close().unwrap();
        let db = DurableEngine::open(crashed, options()).unwrap();
        retry_all(db.engine(), &first, &atp_before, holds);
    }
}

#[test]
fn a_different_key_after_a_restart_still_allocates_afresh() {
    let storage = Arc::new(MemStorage::new());
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    network(db.engine());
    let [_, single] = requests();
    db.engine().allocate(&single, NOW).unwrap();
    db.close().unwrap();
    let db = DurableEngine::open(storage, options()).unwrap();
    let mut other = single.clone();
    other.idempotency_key = Some("order-other".into());
    other.lines = vec![LineRequest::new("C", 2)];
    let out = db.engine().allocate(&other, NOW).unwrap();
    assert!(out.parts().is_some(), "{out:?}");
    assert_eq!(db.engine().active_holds(), 2);
    assert_eq!(db.engine().availability("s0", "C").unwrap().atp(), 0);
}

mod codec {
    use pickline_engine::calendar::Slot;
    use pickline_engine::{Event, HoldId, KeptPart, LineRequest, Record, Timestamp};
    use proptest::prelude::*;

    fn part() -> impl Strategy<Value = KeptPart> {
        (
            any::<u64>(),
            any::<i64>(),
            0.0f64..20_000.0,
            prop::collection::vec(("[A-Za-z0-9-]{1,12}", 1u32..1_000), 1..4),
            prop::option::of((any::<i64>(), any::<i64>(), any::<u32>())),
        )
            .prop_map(|(hold, expires, km, lines, slot)| KeptPart {
                hold: HoldId(hold),
                expires_at: Timestamp(expires),
                distance_km: km,
                lines: lines
                    .into_iter()
                    .map(|(sku, qty)| LineRequest::new(sku, qty))
                    .collect(),
                slot: slot.map(|(start_ms, end_ms, capacity)| Slot {
                    start_ms,
                    end_ms,
                    capacity,
                }),
            })
    }

    proptest! {
        /// A kept allocation decodes to itself, and no strict prefix of it decodes.
        #[test]
        fn a_kept_allocation_round_trips(
            key in "[ -~]{1,40}",
            parts in prop::collection::vec(part(), 0..4),
            at in any::<i64>(),
        ) {
            let rec = Record {
                at: Timestamp(at),
                events: vec![Event::AllocationKept { key, request: at as u32, parts }],
            };
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            prop_assert_eq!(Record::decode(&buf).unwrap(), rec);
            for cut in 0..buf.len() {
                prop_assert!(Record::decode(&buf[..cut]).is_err());
            }
        }
    }
}
