//! Where the engine's records go: the narrow interface between the state machine and the
//! write-ahead log.
//!
//! Architecture invariant: the engine calls [`EventLog::append`] while it still holds the
//! locks of every piece of state the record changes. Two records that touch the same state
//! therefore get log sequence numbers in the order they were applied, and replaying the log
//! in LSN order rebuilds the same state. Records that touch disjoint state commute.
//!
//! The engine applies a mutation in memory, appends its record, releases its locks, and
//! only then waits for durability before it acknowledges. Any later mutation that saw the
//! new state appends after it, so it has a larger LSN and is acknowledged only once that
//! prefix of the log is durable. A crash therefore loses only unacknowledged suffixes, and
//! the state recovered from the durable prefix is one the engine really passed through.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::EngineError;
use crate::event::{LoggedRecord, Record};
use crate::types::Lsn;

/// Sink for the engine's records.
pub trait EventLog: Send + Sync {
    /// Appends `record` and returns its log sequence number. Called with the state's locks
    /// held, so it must be quick: no I/O, no waiting for durability.
    fn append(&self, record: &Record) -> Result<Lsn, EngineError>;

    /// [`EventLog::append`] of a record the caller shares: a log that keeps records (the
    /// event stream, [`MemoryLog`]) keeps this one without copying it. The default appends
    /// by reference.
    fn append_shared(&self, record: &Arc<Record>) -> Result<Lsn, EngineError> {
        self.append(record)
    }

    /// Blocks until the record with `lsn` is as durable as the configured mode promises.
    fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError>;

    /// The last LSN handed out.
    fn last_lsn(&self) -> Lsn;
}

thread_local! {
    /// `Some(newest)` while [`defer_durability`] runs on this thread: the engine records
    /// the LSN it would have waited for instead of blocking.
    static DEFERRED: Cell<Option<Option<Lsn>>> = const { Cell::new(None) };
}

/// The result of engine calls made under [`defer_durability`], and the LSN that must be
/// durable before any of it may be acknowledged.
#[derive(Debug)]
#[must_use = "nothing in `value` may be acknowledged before `wait_for` is durable"]
pub struct Deferred<T> {
    /// What the closure returned.
    pub value: T,
    /// The newest LSN the engine calls would have waited for (`None`: nothing to wait for).
    pub wait_for: Option<Lsn>,
}

/// Runs `f` on this thread with the engine's durability waits deferred: every engine call
/// inside applies its mutation and appends its record as usual, but instead of blocking
/// until the record is durable it notes the LSN. The caller must wait for
/// [`Deferred::wait_for`] (for example by awaiting [`crate::wal::Wal::durable`]) before
/// acknowledging anything `f` produced.
///
/// Why this is safe: LSNs are assigned in apply order, and durability is a prefix of the
/// log, so waiting once for the newest LSN of `f` covers every record `f` appended. Any
/// other caller that read state `f` changed appended after it and waits for a larger LSN
/// (see the module docs), so deferring changes only *when* `f`'s caller acknowledges, never
/// what is acknowledged. Calls nest: an inner deferral's LSN is carried to the outer one.
pub fn defer_durability<T>(f: impl FnOnce() -> T) -> Deferred<T> {
    struct Restore(Option<Option<Lsn>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let inner = DEFERRED.get().flatten();
            // Carry what this level noted to an enclosing deferral, if any.
            DEFERRED.set(self.0.map(|outer| outer.max(inner)));
        }
    }
    let restore = Restore(DEFERRED.replace(Some(None)));
    let value = f();
    let wait_for = DEFERRED.get().flatten();
    drop(restore);
    Deferred { value, wait_for }
}

/// Waits until `lsn` is durable, or, under [`defer_durability`], notes it and returns at
/// once. Every durability wait of the engine goes through here.
pub(crate) fn wait_durable_or_defer(log: &dyn EventLog, lsn: Lsn) -> Result<(), EngineError> {
    match DEFERRED.get() {
        Some(newest) => {
            DEFERRED.set(Some(newest.max(Some(lsn))));
            Ok(())
        }
        None => log.wait_durable(lsn),
    }
}

/// A log that keeps nothing: LSNs only. For benchmarks and embedding without durability.
#[derive(Debug, Default)]
pub struct NoLog {
    next: AtomicU64,
}

impl NoLog {
    /// A log whose next LSN is `last + 1`.
    pub fn starting_after(last: Lsn) -> Self {
        NoLog {
            next: AtomicU64::new(last.0),
        }
    }
}

impl EventLog for NoLog {
    fn append(&self, _record: &Record) -> Result<Lsn, EngineError> {
        Ok(Lsn(self.next.fetch_add(1, Ordering::Relaxed) + 1))
    }

    fn wait_durable(&self, _lsn: Lsn) -> Result<(), EngineError> {
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        Lsn(self.next.load(Ordering::Relaxed))
    }
}

/// A log that keeps every record in memory, in LSN order. For tests: replaying its records
/// into a fresh engine must rebuild the same state.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Mutex<Vec<LoggedRecord>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log that already holds `records` (LSNs 1..=n, in order); the next append gets n+1.
    pub fn with_records(records: Vec<LoggedRecord>) -> Self {
        MemoryLog {
            records: Mutex::new(records),
        }
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<LoggedRecord> {
        self.records.lock().clone()
    }
}

impl EventLog for MemoryLog {
    fn append(&self, record: &Record) -> Result<Lsn, EngineError> {
        self.append_shared(&Arc::new(record.clone()))
    }

    fn append_shared(&self, record: &Arc<Record>) -> Result<Lsn, EngineError> {
        let mut records = self.records.lock();
        let lsn = Lsn(records.len() as u64 + 1);
        records.push(LoggedRecord {
            lsn,
            record: record.clone(),
        });
        Ok(lsn)
    }

    fn wait_durable(&self, _lsn: Lsn) -> Result<(), EngineError> {
        Ok(())
    }

    fn last_lsn(&self) -> Lsn {
        Lsn(self.records.lock().len() as u64)
    }
}
