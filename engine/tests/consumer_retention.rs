//! Event-stream consumers across restarts: checkpoints keep the log back to the slowest
//! durable consumer cursor (within `WalConfig::consumer_retention_len_max`), and a restarted
//! engine serves a consumer that lagged behind the snapshot from the log files.

use std::sync::Arc;

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::stream::StreamError;
use pickline_engine::wal::{Committer, MemStorage, WalConfig};
use pickline_engine::{LoggedRecord, Lsn, PosDelta, PosDeltaKind, StoreDef, Timestamp};

const NOW: Timestamp = Timestamp(1_700_000_000_000);

fn options(consumer_retention_len_max: u64) -> OpenOptions {
    OpenOptions {
        wal: WalConfig {
            committer: Committer::Manual,
            segment_len_max: 4096,
            consumer_retention_len_max,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    }
}

fn open(storage: &MemStorage, consumer_retention_len_max: u64) -> DurableEngine {
    DurableEngine::open(
        Arc::new(storage.clone()),
        options(consumer_retention_len_max),
    )
    .unwrap()
}

/// Appends `count` POS receipts (one record each).
fn receive(db: &DurableEngine, from: u64, count: u64) {
    for i in from..from + count {
        let delta = PosDelta {
            store: "s1".into(),
            sku: format!("SKU{}", i % 7),
            pos_event_id: format!("e{i}"),
            kind: PosDeltaKind::Receive,
            qty: 1,
            order_ref: None,
            pos_time: NOW.add_ms(i as i64),
        };
        db.engine()
            .apply_delta(&delta, NOW.add_ms(i as i64))
            .unwrap();
    }
}

fn segment_count(storage: &MemStorage) -> usize {
    use pickline_engine::wal::Storage;
    storage
        .list()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with("wal-"))
        .count()
}

/// A consumer acknowledges LSN `k`, then many records and checkpoints go by. Returns the
/// acknowledged LSN and every record after it, as the live stream served them.
fn lagging_consumer_scenario(db: &DurableEngine) -> (Lsn, Vec<LoggedRecord>) {
    db.engine()
        .define_store(StoreDef::new("s1", 50.1, 8.7, "Europe/Berlin"), NOW)
        .unwrap();
    db.stream().register_consumer("slow").unwrap();
    db.stream().register_consumer("fast").unwrap();
    receive(db, 0, 30);
    let acked = db.engine().log().last_lsn();
    db.engine().ack_consumer("slow", acked, NOW).unwrap();
    for round in 0..10 {
        receive(db, 100 + round * 100, 100);
        let last = db.engine().log().last_lsn();
        db.engine().ack_consumer("fast", last, NOW).unwrap();
        db.checkpoint().unwrap();
    }
    receive(db, 5_000, 20);
    let live = db.stream().read("slow", acked, usize::MAX).unwrap();
    assert_eq!(live.first().unwrap().lsn, Lsn(acked.0 + 1));
    (acked, live)
}

#[test]
fn a_consumer_behind_the_snapshot_reads_on_after_a_restart() {
    let storage = MemStorage::new();
    let db = open(&storage, 1 << 30);
    let (acked, live) = lagging_consumer_scenario(&db);
    let cp = db.checkpoint().unwrap();
    assert!(
        cp.lsn.0 > acked.0 + 1_000,
        "the snapshot is far ahead of the consumer"
    );
    assert!(cp.log_readable_after <= acked, "{cp:?}");
    assert!(cp.consumers_beyond_retention.is_empty(), "{cp:?}");
    db.close().unwrap();
    // Segments behind the previous snapshot were kept only for the slow consumer.
    assert!(segment_count(&storage) > 10);

    let db = open(&storage, 1 << 30);
    let backfill = db
        .stream_backfill()
        .expect("a consumer lags behind the snapshot");
    assert_eq!(backfill.problem, None);
    assert_eq!(backfill.wanted_after, acked);
    assert_eq!(backfill.first_lsn, Some(Lsn(acked.0 + 1)));
    assert_eq!(db.stream().register_consumer("slow").unwrap(), acked);
    let after_restart = db.stream().read("slow", acked, usize::MAX).unwrap();
    // Everything the live stream had, then the checkpoint's own records (none: a
    // checkpoint appends nothing), identical and contiguous.
    assert_eq!(after_restart, live);
    // Acknowledging lets the next checkpoint prune back to the previous snapshot.
    let last = db.engine().log().last_lsn();
    db.engine().ack_consumer("slow", last, NOW).unwrap();
    db.engine().ack_consumer("fast", last, NOW).unwrap();
    let before = segment_count(&storage);
    db.checkpoint().unwrap();
    receive(&db, 9_000, 50);
    db.checkpoint().unwrap();
    assert!(
        segment_count(&storage) < before,
        "retained segments are released"
    );
}

#[test]
fn a_consumer_beyond_the_retention_cap_is_reported_and_truncated_after_a_restart() {
    let storage = MemStorage::new();
    // Two small segments' worth of extra log for consumers: far less than the lag.
    let cap = 2 * 4096;
    let db = open(&storage, cap);
    let (acked, _) = lagging_consumer_scenario(&db);
    let cp = db.checkpoint().unwrap();
    assert!(cp.log_readable_after > acked, "{cp:?}");
    assert_eq!(
        cp.consumers_beyond_retention,
        vec![("slow".to_string(), acked)],
        "only the slow consumer lags beyond the cap"
    );
    db.close().unwrap();

    let db = open(&storage, cap);
    let backfill = db.stream_backfill().unwrap();
    assert_eq!(backfill.problem, None);
    let first = backfill
        .first_lsn
        .expect("the capped part of the log is served");
    assert!(first.0 > acked.0 + 1 && first.0 <= cp.log_readable_after.0 + 1);
    db.stream().register_consumer("slow").unwrap();
    match db.stream().read("slow", acked, 10) {
        Err(e @ StreamError::Truncated { after, oldest }) => {
            assert_eq!((after, oldest), (acked.0, first.0));
            assert!(e.to_string().contains("were dropped"), "{e}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // The consumer that kept up is unaffected.
    let fast = db.stream().register_consumer("fast").unwrap();
    assert!(db.stream().read("fast", fast, 10).is_ok());
}

#[test]
fn the_retention_cap_is_validated() {
    let mut opts = options(pickline_engine::wal::CONSUMER_RETENTION_LEN_MAX_LIMIT + 1);
    opts.wal.committer = Committer::Manual;
    let err = DurableEngine::open(Arc::new(MemStorage::new()), opts).unwrap_err();
    assert!(
        err.to_string().contains("consumer_retention_len_max"),
        "{err}"
    );
}

/// A consumer registered before a restart is still registered after it and reads on from
/// its durable cursor without registering again, with thousands of records in the log:
/// through log replay alone, through a snapshot, and after a power cut.
#[test]
fn a_registered_consumer_resumes_after_a_restart_without_registering_again() {
    for (name, checkpoint, crash) in [
        ("replay", false, false),
        ("snapshot", true, false),
        ("crash", false, true),
        ("snapshot+crash", true, true),
    ] {
        let storage = MemStorage::new();
        let db = open(&storage, 1 << 30);
        db.engine()
            .define_store(StoreDef::new("s1", 50.1, 8.7, "Europe/Berlin"), NOW)
            .unwrap();
        db.stream().register_consumer("c").unwrap();
        receive(&db, 0, 2_000);
        let acked = db.engine().log().last_lsn();
        db.engine().ack_consumer("c", acked, NOW).unwrap();
        receive(&db, 10_000, 1_500);
        if checkpoint {
            db.checkpoint().unwrap();
            receive(&db, 20_000, 100);
        }
        let live = db.stream().read("c", acked, usize::MAX).unwrap();
        db.wal().flush().unwrap();
        let storage = if crash {
            drop(db);
            storage.crash(7).0
        } else {
            db.close().unwrap();
            storage
        };

        let db = open(&storage, 1 << 30);
        assert_eq!(db.stream().cursor("c"), Some(acked), "{name}");
        let after = db
            .stream()
            .read("c", acked, usize::MAX)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(after, live, "{name}");
        // Registering again is idempotent and keeps the cursor.
        assert_eq!(db.stream().register_consumer("c").unwrap(), acked, "{name}");
    }
}
