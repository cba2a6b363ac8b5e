//! Recovery replays a log in two stages on two threads (one decodes, the other applies and
//! feeds the event stream), handing records over in batches. Over logs of several batches:
//! the recovered state and stream equal the live ones record for record (nothing dropped,
//! nothing reordered), and a bad record anywhere in a long log, batch boundaries included,
//! is reported with its own LSN, the first bad one winning whichever stage finds it.

use std::sync::Arc;

use pickline_engine::durable::{DurableEngine, OpenError, OpenOptions};
use pickline_engine::event::RECORD_KIND_EVENTS;
use pickline_engine::wal::{Committer, Durability, MemStorage, RecoveryMode, Wal, WalConfig};
use pickline_engine::{
    Event, HoldId, HoldRequest, Line, LineRequest, Lsn, PosDelta, PosDeltaKind, Record, SkuId,
    StoreDef, StoreId, Timestamp,
};

const T0: Timestamp = Timestamp::from_ms(1_795_000_000_000);

/// Records after the prefix in the logs built here: several decoder batches.
const GRANTS: u64 = 5_000;

fn options() -> OpenOptions {
    OpenOptions {
        wal: WalConfig {
            durability: Durability::Sync,
            committer: Committer::Manual,
            // Several segments, so records cross segment ends as well as batch ends.
            segment_len_max: 64 << 10,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    }
}

fn receive(db: &DurableEngine, sku: &str) {
    db.engine()
        .apply_delta(
            &PosDelta {
                store: "s".into(),
                sku: sku.into(),
                pos_event_id: format!("rcv-{sku}"),
                kind: PosDeltaKind::Receive,
                qty: 1_000_000,
                order_ref: None,
                pos_time: T0,
            },
            T0,
        )
        .unwrap();
}

/// A fresh log holding a store with SKUs "A" (id 0) and "B"; returns its last LSN.
fn prefix(storage: &Arc<MemStorage>) -> Lsn {
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    db.engine()
        .define_store(StoreDef::new("s", 52.5, 13.4, "Europe/Berlin"), T0)
        .unwrap();
    receive(&db, "A");
    receive(&db, "B");
    let last = db.wal().next_lsn();
    db.close().unwrap();
    Lsn(last.0 - 1)
}

#[test]
fn a_long_log_recovers_the_live_state_and_stream_record_for_record() {
    let storage = Arc::new(MemStorage::new());
    prefix(&storage);
    let db = DurableEngine::open(storage.clone(), options()).unwrap();
    let e = db.engine();
    let mut holds = Vec::new();
    for i in 0..GRANTS {
        // One- and two-line holds, some keyed; releases, confirmations and a consumer's
        // acknowledgements in between, so records differ from their neighbours.
        let mut lines = vec![LineRequest::new("A", 1 + (i % 3) as u32)];
        if i % 4 == 0 {
            lines.push(LineRequest::new("B", 2));
        }
        let mut req = HoldRequest::new("s", lines);
        if i % 5 == 0 {
            req = req.with_key(format!("key-{i}"));
        }
        let now = T0.add_ms(i as i64);
        holds.push(e.hold(&req, now).unwrap().granted().unwrap().hold);
        match i % 7 {
            3 => {
                e.release(holds[holds.len() / 2], now).unwrap();
            }
            5 => {
                e.confirm(holds[holds.len() - 2], now).unwrap();
            }
            6 if i % 100 == 6 => {
                let last = db.wal().next_lsn().0 - 1;
                e.ack_consumer("c", Lsn(last / 2), now).unwrap();
            }
            _ => {}
        }
    }
    let live_state = e.snapshot().unwrap().1;
    let live_stream = db.stream().clone();
    live_stream.register_consumer("reader").unwrap();
    let live_records = live_stream.read("reader", Lsn::ZERO, usize::MAX).unwrap();
    let live_cursor = live_stream.cursor("c");
    drop(live_stream);
    db.close().unwrap();

    let db = DurableEngine::open(storage, options()).unwrap();
    assert_eq!(
        db.recovery_report().records_replayed,
        live_records.len() as u64
    );
    assert_eq!(db.engine().snapshot().unwrap().1, live_state);
    db.engine().check_conservation().unwrap();
    // `c` has a durable cursor, so it is registered again after the restart and the
    // stream keeps only what it has not acknowledged: compare from its cursor on.
    let cursor = live_cursor.expect("c acknowledged");
    assert_eq!(db.stream().register_consumer("reader").unwrap(), cursor);
    let records = db.stream().read("reader", cursor, usize::MAX).unwrap();
    let live_records: Vec<_> = live_records
        .into_iter()
        .filter(|r| r.lsn > cursor)
        .collect();
    assert_eq!(records.len(), live_records.len());
    // Field by field first, so a failure names the first record out of place.
    for (got, want) in records.iter().zip(&live_records) {
        assert_eq!(got, want);
    }
    assert!(live_cursor.is_some());
    assert_eq!(db.stream().cursor("c"), live_cursor);
}

/// A record that recovery must refuse.
#[derive(Debug, Clone, Copy)]
enum Bad {
    /// Decodes, but grants a hold in a store that does not exist.
    Apply,
    /// Does not decode.
    Decode,
    /// An unknown record kind.
    Kind,
}

/// The prefix, then `GRANTS` hold grants appended straight to the WAL, with each bad record
/// put in at the LSN given; returns the storage.
fn log_with(bad: &[(Lsn, Bad)]) -> Arc<MemStorage> {
    let storage = Arc::new(MemStorage::new());
    let mut next = prefix(&storage).0 + 1;
    let (wal, _) = Wal::open(storage.clone(), options().wal, RecoveryMode::default()).unwrap();
    let grant = |store: u32, seq: u64| Record {
        at: T0,
        events: vec![Event::HoldGranted {
            hold: HoldId::new(StoreId(store), seq),
            key: None,
            lines: vec![Line {
                sku: SkuId(0),
                qty: 1,
            }],
            expires_at: T0.add_ms(600_000),
            slot: None,
        }],
    };
    let mut seq = 0;
    while seq < GRANTS || bad.iter().any(|(at, _)| at.0 == next) {
        let lsn = match bad.iter().find(|(at, _)| at.0 == next) {
            Some((_, Bad::Apply)) => wal.append(RECORD_KIND_EVENTS, |buf| grant(7, 1).encode(buf)),
            Some((_, Bad::Decode)) => wal.append(RECORD_KIND_EVENTS, |buf| buf.push(0xff)),
            Some((_, Bad::Kind)) => wal.append(RECORD_KIND_EVENTS + 1, |buf| {
                grant(0, 1 << 30).encode(buf);
            }),
            None => {
                seq += 1;
                wal.append(RECORD_KIND_EVENTS, |buf| grant(0, seq).encode(buf))
            }
        };
        assert_eq!(lsn.unwrap().0, next);
        next += 1;
    }
    wal.flush().unwrap();
    storage
}

fn open_error(bad: &[(Lsn, Bad)]) -> OpenError {
    match DurableEngine::open(log_with(bad), options()) {
        Ok(_) => panic!("recovery accepted a log with bad records at {bad:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_log_without_bad_records_opens() {
    let db = DurableEngine::open(log_with(&[]), options()).unwrap();
    assert_eq!(db.engine().active_holds() as u64, GRANTS);
    db.engine().check_conservation().unwrap();
}

#[test]
fn a_record_that_does_not_apply_is_reported_with_its_lsn_anywhere_in_a_long_log() {
    // Around the ends of the decoder's batches of 1,024 records, the first and last
    // record after the prefix, and one in the middle.
    let first = prefix(&Arc::new(MemStorage::new())).0 + 1;
    let last = first + GRANTS;
    for lsn in [first, 1_023, 1_024, 1_025, 2_048, 2_049, 2_600, last] {
        let lsn = Lsn(lsn);
        match open_error(&[(lsn, Bad::Apply)]) {
            OpenError::Apply { lsn: got, error } => {
                assert_eq!(got, lsn, "{error}");
                assert!(error.to_string().contains("unknown store"), "{error}");
            }
            other => panic!("bad record at {lsn}: {other}"),
        }
    }
}

#[test]
fn the_first_bad_record_is_reported_whichever_stage_finds_it() {
    // The decoder reaches the later record first; the applier must still report the
    // earlier one.
    match open_error(&[(Lsn(2_600), Bad::Apply), (Lsn(2_700), Bad::Decode)]) {
        OpenError::Apply { lsn, .. } => assert_eq!(lsn, Lsn(2_600)),
        other => panic!("{other}"),
    }
    match open_error(&[(Lsn(1_500), Bad::Decode), (Lsn(3_000), Bad::Apply)]) {
        OpenError::Decode { lsn, .. } => assert_eq!(lsn, Lsn(1_500)),
        other => panic!("{other}"),
    }
    match open_error(&[(Lsn(1_024), Bad::Kind), (Lsn(1_025), Bad::Apply)]) {
        OpenError::Kind { lsn, kind } => {
            assert_eq!((lsn, kind), (Lsn(1_024), RECORD_KIND_EVENTS + 1));
        }
        other => panic!("{other}"),
    }
    match open_error(&[(Lsn(1_023), Bad::Apply), (Lsn(1_024), Bad::Kind)]) {
        OpenError::Apply { lsn, .. } => assert_eq!(lsn, Lsn(1_023)),
        other => panic!("{other}"),
    }
}
