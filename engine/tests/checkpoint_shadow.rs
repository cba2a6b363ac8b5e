//! Checkpoints without a pause: `DurableEngine::checkpoint` rebuilds the snapshot beside
//! the writers (a shadow engine loads the newest snapshot file and replays the log files
//! after it). Its bytes must be exactly those of a snapshot taken with writers stopped at
//! the same LSN:
//!
//! - property: random operations (holds, releases, POS, expiries, the pickup lifecycle,
//!   consumer acknowledgements) with checkpoints and restarts in between; at every
//!   checkpoint the file written equals `Engine::snapshot` taken just before, at the same
//!   LSN, and no writer was paused;
//! - writers running during checkpoints: each checkpoint equals the state replayed from
//!   the log alone up to its LSN, and a restart recovers the live state;
//! - the fallback: no log files (`Off`) or a snapshot file that does not read back, and the
//!   checkpoint is taken with writers paused, still correct.

mod sim_ops;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pickline_engine::durable::{DurableEngine, OpenOptions};
use pickline_engine::event::RECORD_KIND_EVENTS;
use pickline_engine::wal::{
    Committer, Durability, MemStorage, SimRng, Storage, WalConfig, format::snapshot_file_name,
};
use pickline_engine::{
    Engine, EngineConfig, HoldId, HoldOutcome, HoldRequest, LineRequest, Lsn, Record, Timestamp,
};
use proptest::prelude::*;
use sim_ops::{Op, apply, draw, setup};

fn options(durability: Durability, committer: Committer) -> OpenOptions {
    OpenOptions {
        wal: WalConfig {
            durability,
            committer,
            // Several segments, so the shadow reads across segment ends and pruning runs.
            segment_len_max: 4096,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    }
}

fn manual() -> OpenOptions {
    options(Durability::Sync, Committer::Manual)
}

/// A checkpoint, checked against the snapshot taken with writers stopped just before it.
fn checked_checkpoint(db: &DurableEngine) -> Result<(), TestCaseError> {
    let (lsn, stopped) = db.engine().snapshot().unwrap();
    let cp = db.checkpoint().unwrap();
    prop_assert!(!cp.writers_paused, "the checkpoint fell back to pausing");
    prop_assert_eq!(cp.lsn, lsn);
    let written = db.wal().read_snapshot(cp.lsn).unwrap();
    prop_assert!(written == stopped, "checkpoint at {} differs", lsn);
    Ok(())
}

fn run(seed: u64, steps: u64) -> Result<(), TestCaseError> {
    let storage = Arc::new(MemStorage::new());
    let mut rng = SimRng::new(seed);
    let mut now = Timestamp(1_700_000_000_000);
    let mut db = DurableEngine::open(storage.clone(), manual()).unwrap();
    setup(db.engine(), now).unwrap();
    let mut holds: Vec<HoldId> = Vec::new();
    let mut codes = std::collections::HashMap::new();
    for step in 0..steps {
        now = now.add_ms(1 + rng.below(3_000) as i64);
        match rng.below(40) {
            0 => checked_checkpoint(&db)?,
            1 => {
                // A restart: the next checkpoint's base is the snapshot recovery used.
                let before = db.engine().snapshot().unwrap().1;
                db.close().unwrap();
                db = DurableEngine::open(storage.clone(), manual()).unwrap();
                prop_assert!(db.engine().snapshot().unwrap().1 == before);
            }
            2 => {
                let last = db.wal().next_lsn().0 - 1;
                let consumer = if rng.below(2) == 0 { "mail" } else { "kpi" };
                db.engine()
                    .ack_consumer(consumer, Lsn(rng.below(last + 1)), now)
                    .unwrap();
            }
            _ => match draw(&mut rng, step) {
                Op::Checkpoint => checked_checkpoint(&db)?,
                op => apply(db.engine(), &op, now, &mut holds, &mut codes).unwrap(),
            },
        }
    }
    checked_checkpoint(&db)?;
    db.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_checkpoint_equals_the_snapshot_with_writers_stopped(seed in any::<u64>()) {
        run(seed, 400)?;
    }
}

/// The state after replaying the log's records `1..=through` into a fresh engine.
fn replayed_from_log(db: &DurableEngine, through: Lsn) -> Vec<u8> {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let records = db.wal().read_records(Lsn::ZERO, through).unwrap();
    assert_eq!(
        records.len(),
        through.0,
        "the whole log is still in the files"
    );
    for rec in records.iter() {
        assert_eq!(rec.kind, RECORD_KIND_EVENTS);
        engine
            .replay(&Record::decode(rec.payload).unwrap())
            .unwrap();
    }
    engine.snapshot().unwrap().1
}

#[test]
fn checkpoints_while_writers_run_equal_the_log_replayed_to_their_lsn() {
    let storage = Arc::new(MemStorage::new());
    let opts = OpenOptions {
        wal: WalConfig {
            // One segment: nothing is pruned, so the whole log can be replayed afterwards.
            segment_len_max: 64 << 20,
            ..options(Durability::Sync, Committer::Thread).wal
        },
        ..OpenOptions::default()
    };
    let now = Timestamp(1_700_000_000_000);
    let db = DurableEngine::open(storage.clone(), opts.clone()).unwrap();
    setup(db.engine(), now).unwrap();
    for store in sim_ops::STORES {
        for sku in sim_ops::SKUS {
            db.engine()
                .apply_delta(
                    &pickline_engine::PosDelta {
                        store: store.into(),
                        sku: sku.into(),
                        pos_event_id: format!("stock-{sku}"),
                        kind: pickline_engine::PosDeltaKind::Receive,
                        qty: 1_000_000,
                        order_ref: None,
                        pos_time: now,
                    },
                    now,
                )
                .unwrap();
        }
    }
    let stop = AtomicBool::new(false);
    let checkpoints = std::thread::scope(|scope| {
        for (w, store) in sim_ops::STORES.iter().enumerate() {
            let db = &db;
            let stop = &stop;
            scope.spawn(move || {
                let mut i = 0u64;
                let mut mine: Vec<HoldId> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sku = sim_ops::SKUS[(i % 4) as usize];
                    let mut req = HoldRequest::new(*store, vec![LineRequest::new(sku, 1)]);
                    if i.is_multiple_of(3) {
                        req = req.with_key(format!("w{w}-{i}"));
                    }
                    let at = now.add_ms(i as i64);
                    if let HoldOutcome::Granted(g) = db.engine().hold(&req, at).unwrap() {
                        mine.push(g.hold);
                    }
                    if i % 2 == 1 && !mine.is_empty() {
                        let h = mine.swap_remove((i as usize * 7) % mine.len());
                        db.engine().release(h, at).unwrap();
                    }
                    i += 1;
                }
            });
        }
        let mut done = Vec::new();
        for _ in 0..4 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let cp = db.checkpoint().unwrap();
            assert!(!cp.writers_paused, "the checkpoint fell back to pausing");
            done.push(cp.lsn);
        }
        stop.store(true, Ordering::Relaxed);
        done
    });
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "{checkpoints:?}"
    );
    // The last two snapshot files are kept: each equals the log replayed to its LSN.
    for lsn in &checkpoints[2..] {
        assert!(
            db.wal().read_snapshot(*lsn).unwrap() == replayed_from_log(&db, *lsn),
            "checkpoint at {lsn}"
        );
    }
    let live = db.engine().snapshot().unwrap().1;
    db.close().unwrap();
    let db = DurableEngine::open(storage, opts).unwrap();
    assert!(db.engine().snapshot().unwrap().1 == live);
}

#[test]
fn without_log_files_or_a_readable_base_the_checkpoint_pauses_writers_and_is_still_right() {
    // `Off`: nothing is written, so there is nothing to rebuild from.
    let db = DurableEngine::open(
        Arc::new(MemStorage::new()),
        options(Durability::Off, Committer::Thread),
    )
    .unwrap();
    setup(db.engine(), Timestamp(1_700_000_000_000)).unwrap();
    assert!(db.checkpoint().unwrap().writers_paused);
    drop(db);

    // A base snapshot that no longer reads back: the paused snapshot is the way out.
    let storage = Arc::new(MemStorage::new());
    let now = Timestamp(1_700_000_000_000);
    let db = DurableEngine::open(storage.clone(), manual()).unwrap();
    setup(db.engine(), now).unwrap();
    let first = db.checkpoint().unwrap();
    assert!(!first.writers_paused);
    storage
        .write_atomic(&snapshot_file_name(first.lsn), b"not a snapshot")
        .unwrap();
    let mut holds = Vec::new();
    let mut codes = std::collections::HashMap::new();
    let mut rng = SimRng::new(5);
    for step in 0..50 {
        let op = draw(&mut rng, step);
        if !matches!(op, Op::Checkpoint) {
            apply(
                db.engine(),
                &op,
                now.add_ms(step as i64),
                &mut holds,
                &mut codes,
            )
            .unwrap();
        }
    }
    let (lsn, stopped) = db.engine().snapshot().unwrap();
    let cp = db.checkpoint().unwrap();
    assert!(cp.writers_paused);
    assert_eq!(cp.lsn, lsn);
    assert!(db.wal().read_snapshot(lsn).unwrap() == stopped);
    db.close().unwrap();
    let db = DurableEngine::open(storage, manual()).unwrap();
    assert!(db.engine().snapshot().unwrap().1 == stopped);
}
