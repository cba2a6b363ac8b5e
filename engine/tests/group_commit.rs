//! Group commit with the committer thread: writers woken by one commit ride the next one
//! together (`WalConfig::commit_delay_us`), and gathering never loses or reorders records.

use std::sync::{Arc, Barrier};

use pickline_engine::wal::{Durability, MemStorage, RecoveryMode, Wal, WalConfig};

const WRITERS: usize = 8;
const ROUNDS: usize = 300;

/// `WRITERS` threads, each appending a record and waiting for it to be durable, `ROUNDS`
/// times. Returns the mean records per commit, and checks every record came back.
fn closed_loop(commit_delay_us: u64) -> f64 {
    let storage = MemStorage::new();
    let config = WalConfig {
        durability: Durability::Sync,
        commit_delay_us,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(
        Arc::new(storage.clone()),
        config,
        RecoveryMode::AbsoluteConsistency,
    )
    .expect("open");
    let wal = Arc::new(wal);
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (wal, barrier) = (wal.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    let lsn = wal
                        .append(1, |b| b.extend_from_slice(&[t as u8, i as u8]))
                        .expect("append");
                    wal.wait_durable(lsn).expect("durable");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let m = wal.metrics();
    assert_eq!(m.records_written, (WRITERS * ROUNDS) as u64);
    Arc::into_inner(wal)
        .expect("writers done")
        .close()
        .expect("close");
    let (_, recovery) = Wal::open(
        Arc::new(storage.crash(1).0),
        config,
        RecoveryMode::AbsoluteConsistency,
    )
    .expect("reopen");
    assert_eq!(recovery.records.len(), (WRITERS * ROUNDS) as u64);
    m.records_written as f64 / m.batches_written as f64
}

#[test]
fn woken_writers_ride_the_next_commit_together() {
    // With an instant "disk", commits without a gathering window hold one or two records:
    // the committer starts the next commit as soon as the first woken writer is back.
    // With a window, it waits for all of them (the window is long enough not to expire on
    // a loaded machine, and a full cohort ends the wait long before it does).
    let per_commit = closed_loop(10_000);
    assert!(
        per_commit >= 0.75 * WRITERS as f64,
        "{per_commit:.2} records per commit with the gathering window, want about {WRITERS}"
    );
}

#[test]
fn without_a_window_every_record_still_commits() {
    // `closed_loop` checks that every record was written and comes back after a crash.
    closed_loop(0);
}
