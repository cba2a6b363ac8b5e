//! A batch of holds under one idempotency key, and an allocation under a key, log their
//! holds first and their answer (`BatchKept`, `AllocationKept`) after them. A crash in
//! between leaves holds nobody was told about: recovery releases them (their records are
//! marked `KeyedPart`), so the caller's retry holds afresh, once, instead of holding the
//! same stock a second time until the first holds expire. Checked at every point at which
//! a crash can cut the log.

mod common;

use std::sync::Arc;

use pickline_engine::durable::DurableEngine;
use pickline_engine::event::RECORD_KIND_EVENTS;
use pickline_engine::log::MemoryLog;
use pickline_engine::wal::{MemStorage, RecoveryMode, Wal};
use pickline_engine::{
    AllocateOutcome, AllocateRequest, Engine, EngineConfig, Event, HoldOutcome, HoldRequest,
    LineRequest, LoggedRecord, PosDelta, PosDeltaKind, StoreDef, Timestamp,
};

const NOW: Timestamp = Timestamp::from_ms(1_795_000_000_000);

/// Holds of the keyed batch at s1: more than one group (256 holds), so the batch spans
/// several records before its answer.
const BATCH_AT_S1: usize = 300;
/// Holds of the keyed batch at s2.
const BATCH_AT_S2: usize = 2;

use common::manual_sync_options as options;

/// Two stores: A and B at both, C only at s1, D only at s2 (so the allocation splits).
fn setup(engine: &Engine) {
    for (name, lon, skus) in [
        ("s1", 13.40, ["A", "B", "C"]),
        ("s2", 13.45, ["A", "B", "D"]),
    ] {
        engine
            .define_store(StoreDef::new(name, 52.5, lon, "Europe/Berlin"), NOW)
            .unwrap();
        for sku in skus {
            engine
                .apply_delta(
                    &PosDelta {
                        store: name.into(),
                        sku: sku.into(),
                        pos_event_id: format!("rcv-{name}-{sku}"),
                        kind: PosDeltaKind::Receive,
                        qty: 1_000,
                        order_ref: None,
                        pos_time: NOW,
                    },
                    NOW,
                )
                .unwrap();
        }
    }
}

fn batch() -> Vec<HoldRequest> {
    let at = |store: &str, sku: &str| HoldRequest::new(store, vec![LineRequest::new(sku, 1)]);
    let mut holds: Vec<HoldRequest> = (0..BATCH_AT_S1).map(|_| at("s1", "A")).collect();
    holds.extend((0..BATCH_AT_S2).map(|_| at("s2", "B")));
    holds
}

fn allocation() -> AllocateRequest {
    let mut req = AllocateRequest::near(
        52.5,
        13.40,
        vec![LineRequest::new("C", 2), LineRequest::new("D", 1)],
    );
    req.allow_split = true;
    req.idempotency_key = Some("order-1".into());
    req
}

/// Runs both keyed requests on a fresh engine; returns every record it logged, the number
/// of records of the setup, and the first answers (hold ids of the batch and of the
/// allocation).
fn logged() -> (Vec<LoggedRecord>, usize, Vec<u64>, Vec<u64>) {
    let log = Arc::new(MemoryLog::new());
    let engine = Engine::with_log(EngineConfig::default(), log.clone()).unwrap();
    setup(&engine);
    let setup_len = log.records().len();
    let batch_holds = granted(&engine.hold_batch_keyed("batch-1", &batch(), NOW).unwrap());
    let alloc_holds = allocated(&engine.allocate(&allocation(), NOW).unwrap());
    (log.records(), setup_len, batch_holds, alloc_holds)
}

fn granted(
    out: &[Result<pickline_engine::LoggedOutcome, pickline_engine::EngineError>],
) -> Vec<u64> {
    out.iter()
        .map(|a| match a {
            Ok((HoldOutcome::Granted(g), _)) => g.hold.0,
            other => panic!("every hold of the batch is granted: {other:?}"),
        })
        .collect()
}

fn allocated(out: &AllocateOutcome) -> Vec<u64> {
    let AllocateOutcome::Allocated { parts, .. } = out else {
        panic!("the allocation allocates: {out:?}");
    };
    parts.iter().map(|p| p.grant.hold.0).collect()
}

/// A log holding exactly `records`, as a crash after the last of them would leave it.
fn log_of(records: &[LoggedRecord]) -> Arc<MemStorage> {
    let storage = Arc::new(MemStorage::new());
    let (wal, _) = Wal::open(storage.clone(), options().wal, RecoveryMode::default()).unwrap();
    for r in records {
        let lsn = wal
            .append(RECORD_KIND_EVENTS, |buf| r.record.encode(buf))
            .unwrap();
        assert_eq!(lsn, r.lsn);
    }
    wal.close().unwrap();
    storage
}

fn has(records: &[LoggedRecord], kept: impl Fn(&Event) -> bool) -> bool {
    records.iter().any(|r| r.record.events.iter().any(&kept))
}

#[test]
fn holds_of_a_keyed_request_cut_off_before_its_answer_are_released_at_recovery() {
    let (records, setup_len, batch_holds, alloc_holds) = logged();
    let marked = records
        .iter()
        .filter(|r| matches!(r.record.events.first(), Some(Event::KeyedPart { .. })))
        .count();
    // The batch's groups (256 + 44 holds at s1, 2 at s2) and the allocation's two holds.
    assert_eq!(marked, 5, "records marked as parts of a keyed request");
    let total = BATCH_AT_S1 + BATCH_AT_S2 + 2;
    for cut in setup_len..=records.len() {
        let prefix = &records[..cut];
        let storage = log_of(prefix);
        // Open checks conservation after the releases.
        let db = DurableEngine::open(storage.clone(), options()).unwrap();
        let engine = db.engine();
        let batch_kept = has(prefix, |e| matches!(e, Event::BatchKept { .. }));
        let alloc_kept = has(prefix, |e| matches!(e, Event::AllocationKept { .. }));
        let expected = if batch_kept { batch_holds.len() } else { 0 }
            + if alloc_kept { alloc_holds.len() } else { 0 };
        assert_eq!(engine.active_holds(), expected, "cut after {cut} records");
        // The callers retry: answered requests get their answers back, the others hold
        // afresh, and either way every unit is held once.
        let again = granted(&engine.hold_batch_keyed("batch-1", &batch(), NOW).unwrap());
        if batch_kept {
            assert_eq!(again, batch_holds, "cut after {cut}");
        }
        let again = allocated(&engine.allocate(&allocation(), NOW).unwrap());
        if alloc_kept {
            assert_eq!(again, alloc_holds, "cut after {cut}");
        }
        assert_eq!(engine.active_holds(), total, "cut after {cut}: held once");
        assert_eq!(
            engine.availability("s1", "A").unwrap().atp() as usize,
            1_000 - BATCH_AT_S1
        );
        assert_eq!(engine.availability("s1", "C").unwrap().atp(), 998);
        assert_eq!(engine.availability("s2", "D").unwrap().atp(), 999);
        // The releases were logged: the next recovery has the same holds, releases
        // nothing more, and the retries' answers are kept.
        db.close().unwrap();
        let db = DurableEngine::open(storage, options()).unwrap();
        assert_eq!(
            db.engine().active_holds(),
            total,
            "cut after {cut}: reopened"
        );
        let out = db
            .engine()
            .hold_batch_keyed("batch-1", &batch(), NOW)
            .unwrap();
        assert!(
            out.iter()
                .all(|a| matches!(a, Ok((HoldOutcome::Granted(_), _)))),
            "cut after {cut}"
        );
        assert_eq!(db.engine().active_holds(), total);
    }
}

#[test]
fn a_keyed_part_record_survives_its_encoding() {
    use pickline_engine::{KeptOf, Record};
    for of in [KeptOf::Batch, KeptOf::Allocation] {
        let record = Record {
            at: NOW,
            events: vec![Event::KeyedPart {
                key: "batch-1".into(),
                of,
            }],
        };
        let mut buf = Vec::new();
        record.encode(&mut buf);
        assert_eq!(Record::decode(&buf).unwrap(), record);
        for len in 0..buf.len() {
            assert!(Record::decode(&buf[..len]).is_err(), "cut at {len}");
        }
        // An unknown kind is an error, not another kind.
        let last = buf.len() - 1;
        buf[last] = 2;
        assert!(Record::decode(&buf).is_err());
    }
}
