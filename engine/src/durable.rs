//! A durable engine: the [`Engine`] writing its records to the write-ahead log, recovered
//! from the newest snapshot plus the log after it.
//!
//! ```
//! use std::sync::Arc;
//! use pickline_engine::durable::{DurableEngine, OpenOptions};
//! use pickline_engine::wal::MemStorage;
//! use pickline_engine::{StoreDef, Timestamp};
//!
//! let storage = Arc::new(MemStorage::new());
//! let now = Timestamp::from_ms(1_780_000_000_000);
//! let db = DurableEngine::open(storage.clone(), OpenOptions::default())?;
//! db.engine().define_store(StoreDef::new("s1", 48.1, 11.6, "Europe/Berlin"), now)?;
//! db.checkpoint()?;
//! db.close()?;
//!
//! // After a power cut, only what was durable survives; here everything was.
//! let db = DurableEngine::open(Arc::new(storage.crash(7).0), OpenOptions::default())?;
//! assert!(db.engine().store_id("s1").is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use thiserror::Error;

use crate::codec::DecodeError;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::event::LoggedRecord;
use crate::event::{RECORD_KIND_EVENTS, Record};
use crate::log::{EventLog, NoLog};
use crate::snapshot::ConsumerCursors;
use crate::stream::{EventStream, STREAM_RETAINED_MAX};
use crate::types::{Lsn, Timestamp};
use crate::wal::{
    Durability, RecoveredRecords, RecoveryMode, RecoveryReport, Storage, Wal, WalConfig, WalError,
};

/// Records the decoding thread hands to the applying one at a time: enough that a
/// channel operation is rare next to decoding (about 0.1 us per record) and applying
/// (about 0.4 us), few enough that applying starts almost at once.
const REPLAY_BATCH_LEN: usize = 1024;

/// Decoded batches waiting to be applied: bounds the decoded records held in memory to
/// `REPLAY_BATCH_LEN * REPLAY_BATCHES_QUEUED_MAX` and makes the decoder wait when applying
/// falls behind.
const REPLAY_BATCHES_QUEUED_MAX: usize = 8;

/// Records between two [`RecoveryStep::Replaying`] reports (about a tenth of a second).
const REPLAY_PROGRESS_EVERY: u64 = 1 << 18;

/// Where [`DurableEngine::open_with_progress`] is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    /// The log files were read and checked; the snapshot at `lsn` (if any) is being
    /// loaded, then `records` records after it are replayed.
    Loading {
        /// The snapshot's LSN (`None`: recovery starts from the empty state).
        snapshot: Option<Lsn>,
        /// Its payload size.
        snapshot_len_bytes: u64,
        /// Records to replay after it.
        records: u64,
    },
    /// `done` of `total` records replayed (reported every few hundred thousand records
    /// and at the end).
    Replaying {
        /// Records applied so far.
        done: u64,
        /// Records to apply.
        total: u64,
    },
}

/// What the decoding thread hands over: records in LSN order, then, if decoding stopped
/// at a record, that record's error (it comes after every record before it, so the
/// applying thread reports the first failing LSN, whether it failed to decode or to apply).
struct DecodedBatch {
    records: Vec<LoggedRecord>,
    error: Option<OpenError>,
}

/// Replays the recovered records in LSN order onto `engine` and feeds them to `stream`.
///
/// Two stages on two threads: a scoped thread checks each record's kind and decodes it
/// (with the checksum check of [`RecoveredRecords::iter`]), this thread applies them and
/// feeds the stream, in the order sent (a channel keeps it). Records the stream does not
/// keep go back to the decoder to be dropped there, where they were allocated. An error
/// stops both stages: the decoder's send fails once this side has returned.
fn replay(
    engine: &mut Engine,
    stream: &EventStream,
    records: &RecoveredRecords,
    progress: &mut dyn FnMut(RecoveryStep),
) -> Result<Option<Timestamp>, OpenError> {
    let total = records.len();
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = crossbeam::channel::bounded(REPLAY_BATCHES_QUEUED_MAX);
        // Room for every batch that can be out at once (queued, being applied, being
        // decoded), so returning one never blocks; if it ever were full, the records are
        // dropped here instead.
        let (spent_tx, spent_rx) = crossbeam::channel::bounded(REPLAY_BATCHES_QUEUED_MAX + 2);
        std::thread::Builder::new()
            .name("pickline-replay-decoder".into())
            .spawn_scoped(scope, move || decode_records(records, batch_tx, spent_rx))
            .map_err(|e| WalError::io("spawn replay decoder thread", "", e))?;
        let mut n: u64 = 0;
        let mut newest_at: Option<Timestamp> = None;
        for batch in batch_rx {
            for rec in &batch.records {
                newest_at = newest_at.max(Some(rec.record.at));
                engine
                    .replay_exclusive(&rec.record)
                    .map_err(|error| OpenError::Apply {
                        lsn: rec.lsn,
                        error,
                    })?;
            }
            // The stream after the engine, batch by batch: if a record fails to apply,
            // open fails and the stream goes with it.
            let mut spent = Vec::with_capacity(batch.records.len());
            for rec in batch.records {
                n += 1;
                spent.extend(stream.replayed_owned(rec, total.saturating_sub(n)));
            }
            let _ = spent_tx.try_send(spent);
            if let Some(error) = batch.error {
                return Err(error);
            }
            if n % REPLAY_PROGRESS_EVERY < REPLAY_BATCH_LEN as u64 || n == total {
                progress(RecoveryStep::Replaying { done: n, total });
            }
        }
        Ok(newest_at)
    })
}

/// The decoding stage of [`replay`]: sends the records in batches, in LSN order, stopping
/// at the first record that has an unknown kind or does not decode, or when the applying
/// side has hung up (it stopped at an error). Drops the records handed back.
fn decode_records(
    records: &RecoveredRecords,
    batches: crossbeam::channel::Sender<DecodedBatch>,
    spent: crossbeam::channel::Receiver<Vec<LoggedRecord>>,
) {
    let mut batch = DecodedBatch {
        records: Vec::with_capacity(REPLAY_BATCH_LEN),
        error: None,
    };
    for rec in records.iter() {
        let decoded = if rec.kind == RECORD_KIND_EVENTS {
            Record::decode(rec.payload).map_err(|error| OpenError::Decode {
                lsn: rec.lsn,
                error,
            })
        } else if crate::event::RECORD_KIND_EVENTS_RETIRED.contains(&rec.kind) {
            Err(OpenError::OldFormat {
                lsn: rec.lsn,
                kind: rec.kind,
            })
        } else {
            Err(OpenError::Kind {
                lsn: rec.lsn,
                kind: rec.kind,
            })
        };
        match decoded {
            Ok(record) => batch.records.push(LoggedRecord {
                lsn: rec.lsn,
                record: record.into(),
            }),
            Err(error) => {
                batch.error = Some(error);
                break;
            }
        }
        if batch.records.len() == REPLAY_BATCH_LEN {
            while let Ok(done) = spent.try_recv() {
                drop(done);
            }
            let full = std::mem::replace(&mut batch.records, Vec::with_capacity(REPLAY_BATCH_LEN));
            let sent = batches.send(DecodedBatch {
                records: full,
                error: None,
            });
            if sent.is_err() {
                return;
            }
        }
    }
    if batches.send(batch).is_err() {
        return;
    }
    // Hanging up ends the applying side's loop; then wait for it to finish, dropping
    // what it hands back.
    drop(batches);
    for done in spent {
        drop(done);
    }
}

/// The engine's [`EventLog`] over the WAL: records are encoded straight into the WAL's
/// pending buffer under its append mutex (no per-record allocation).
#[derive(Debug)]
pub struct WalLog {
    wal: Wal,
}

impl WalLog {
    /// The WAL underneath.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

fn log_failed(e: WalError) -> EngineError {
    EngineError::LogFailed(e.to_string())
}

impl EventLog for WalLog {
    fn append(&self, record: &Record) -> Result<Lsn, EngineError> {
        self.wal
            .append(RECORD_KIND_EVENTS, |buf| record.encode(buf))
            .map_err(log_failed)
    }

    /// Waits as the durability mode promises acknowledgements: `Sync` waits for the group
    /// commit; `Async` acknowledges at once (its loss window is documented on
    /// [`Durability::Async`]) but still reports a fail-stopped log; `Off` never waits.
    fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        match self.wal.config().durability {
            Durability::Sync => self.wal.wait_durable(lsn).map_err(log_failed),
            Durability::Async { .. } => match self.wal.failure() {
                Some(reason) => Err(log_failed(WalError::FailStopped { reason })),
                None => Ok(()),
            },
            Durability::Off => Ok(()),
        }
    }

    fn last_lsn(&self) -> Lsn {
        Lsn(self.wal.next_lsn().0.saturating_sub(1))
    }
}

/// Reads the records `after + 1 ..= through` back from the log files into the stream.
fn backfill_stream(wal: &Wal, stream: &EventStream, after: Lsn, through: Lsn) -> StreamBackfill {
    let mut out = StreamBackfill {
        wanted_after: after,
        records: 0,
        first_lsn: None,
        problem: None,
    };
    let read = || -> Result<Vec<LoggedRecord>, String> {
        let records = wal
            .read_records(after, through)
            .map_err(|e| e.to_string())?;
        records
            .iter()
            .map(|rec| {
                if rec.kind != RECORD_KIND_EVENTS {
                    return Err(format!(
                        "log record {} has unknown kind {}",
                        rec.lsn, rec.kind
                    ));
                }
                let record = Record::decode(rec.payload)
                    .map_err(|e| format!("log record {} does not decode: {e}", rec.lsn))?;
                Ok(LoggedRecord {
                    lsn: rec.lsn,
                    record: record.into(),
                })
            })
            .collect()
    };
    match read() {
        Ok(records) => {
            let first_lsn = records.first().map(|r| r.lsn);
            let count = records.len() as u64;
            if stream.backfill(records) {
                out.records = count;
                out.first_lsn = first_lsn;
            } else {
                out.problem = Some(format!(
                    "records {first_lsn:?}..={through} do not end where the stream begins"
                ));
            }
        }
        Err(problem) => out.problem = Some(problem),
    }
    out
}

/// How to open a durable engine.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Engine limits.
    pub engine: EngineConfig,
    /// WAL durability mode, segment size, backpressure.
    pub wal: WalConfig,
    /// What recovery tolerates.
    pub recovery: RecoveryMode,
}

/// The engine could not be opened: the message names the file and offset of any corruption.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The WAL refused to recover (I/O error, corruption before the tail, bad config).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A record in the log does not decode as an engine record.
    #[error("log record {lsn} does not decode: {error}")]
    Decode {
        /// Its LSN.
        lsn: Lsn,
        /// Why.
        error: DecodeError,
    },
    /// A record was written in an event format this version no longer reads.
    #[error(
        "log record {lsn} is in the retired event format {kind} (current {current}): this \
         data directory was written by an older pickline; drain it with that version, or \
         start from an empty data directory",
        current = crate::event::RECORD_KIND_EVENTS
    )]
    OldFormat {
        /// Its LSN.
        lsn: Lsn,
        /// The record's kind byte.
        kind: u8,
    },
    /// A record has an unknown kind.
    #[error("log record {lsn} has unknown kind {kind}")]
    Kind {
        /// Its LSN.
        lsn: Lsn,
        /// The kind.
        kind: u8,
    },
    /// A record or the snapshot does not apply to the state (or breaks an invariant).
    #[error("recovery at {lsn}: {error}")]
    Apply {
        /// The LSN (0 for the snapshot).
        lsn: Lsn,
        /// Why.
        error: EngineError,
    },
}

/// A recovered engine with its WAL.
#[derive(Debug)]
pub struct DurableEngine {
    engine: Arc<Engine>,
    log: Arc<WalLog>,
    stream: Arc<EventStream>,
    report: RecoveryReport,
    backfill: Option<StreamBackfill>,
    /// The engine's configuration, for the shadow a checkpoint rebuilds.
    config: EngineConfig,
    /// One checkpoint at a time (snapshots are written in LSN order).
    checkpointing: parking_lot::Mutex<()>,
}

/// What a checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The snapshot contains every record up to this LSN.
    pub lsn: Lsn,
    /// Snapshot payload size.
    pub len_bytes: usize,
    /// Every record after this LSN is still in the log files (kept back to the slowest
    /// durable consumer cursor, within `WalConfig::consumer_retention_len_max`).
    pub log_readable_after: Lsn,
    /// Consumers whose durable cursor is behind `log_readable_after`: after a restart their
    /// next read is `Truncated` (the retention cap let their records go). Log it.
    pub consumers_beyond_retention: Vec<(String, Lsn)>,
    /// True when writers waited while the state was encoded
    /// ([`DurableEngine::checkpoint_paused`], or `checkpoint`'s fallback); false when the
    /// snapshot was rebuilt from the log beside them.
    pub writers_paused: bool,
}

/// Records read back from the log files into the event stream at open, for consumers whose
/// durable cursor is behind the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBackfill {
    /// The slowest durable cursor: records after it were wanted.
    pub wanted_after: Lsn,
    /// Records put into the stream (ending at the snapshot LSN).
    pub records: u64,
    /// The first of them (`None` if the log files held none of them).
    pub first_lsn: Option<Lsn>,
    /// Why the backfill was not done, if it was not (the engine still starts: the state
    /// does not depend on these records; lagging consumers get `Truncated`).
    pub problem: Option<String>,
}

impl DurableEngine {
    /// Recovers: the newest valid snapshot, then every record after it, in LSN order. The
    /// engine is ready for writes when this returns.
    pub fn open(storage: Arc<dyn Storage>, opts: OpenOptions) -> Result<Self, OpenError> {
        Self::open_with_progress(storage, opts, &mut |_| {})
    }

    /// [`DurableEngine::open`], telling `progress` where it is: once the log files are
    /// read ([`RecoveryStep::Loading`]), then as records are replayed (on the opening
    /// thread, between batches: keep it quick).
    pub fn open_with_progress(
        storage: Arc<dyn Storage>,
        opts: OpenOptions,
        progress: &mut dyn FnMut(RecoveryStep),
    ) -> Result<Self, OpenError> {
        let (wal, recovery) = Wal::open(storage, opts.wal, opts.recovery)?;
        progress(RecoveryStep::Loading {
            snapshot: recovery.snapshot.as_ref().map(|s| s.lsn),
            snapshot_len_bytes: recovery
                .snapshot
                .as_ref()
                .map_or(0, |s| s.bytes.len() as u64),
            records: recovery.records.len(),
        });
        let log = Arc::new(WalLog { wal });
        // The event stream sits in front of the WAL, so consumers see every record in LSN
        // order; recovery feeds it the records after the snapshot.
        let snapshot_lsn = recovery.snapshot.as_ref().map_or(Lsn::ZERO, |s| s.lsn);
        let stream = Arc::new(EventStream::starting_after(
            log.clone(),
            STREAM_RETAINED_MAX,
            snapshot_lsn,
        ));
        let mut engine = match &recovery.snapshot {
            // Conservation is checked once, after the records are replayed too.
            Some(s) => {
                Engine::from_snapshot_unchecked(opts.engine.clone(), stream.clone(), &s.bytes)
                    .map_err(|error| OpenError::Apply { lsn: s.lsn, error })?
            }
            None => Engine::with_log(opts.engine.clone(), stream.clone()).map_err(|error| {
                OpenError::Apply {
                    lsn: Lsn::ZERO,
                    error,
                }
            })?,
        };
        let newest_at = replay(&mut engine, &stream, &recovery.records, progress)?;
        // Cursors acknowledged before the snapshot come from the snapshot's state.
        let cursors = engine.consumer_cursors();
        for (consumer, lsn) in &cursors {
            stream.ack(consumer, *lsn);
        }
        let slowest = cursors.iter().map(|(_, lsn)| *lsn).min();
        let backfill = match (slowest, &recovery.snapshot) {
            (Some(after), Some(s)) if after < s.lsn => {
                Some(backfill_stream(&log.wal, &stream, after, s.lsn))
            }
            _ => None,
        };
        // A durable cursor is a durable registration: consumers registered before the
        // restart read on from their cursors without registering again. After the
        // backfill, which needs the records before the slowest cursor still in place.
        stream.register_known();
        // Holds of keyed batches and allocations whose answer the crash cut off. As of the
        // newest replayed record: the engine takes its time from callers, and this is the
        // last time the log shows.
        if let Some(at) = newest_at {
            let released = engine
                .release_unanswered(at)
                .map_err(|error| OpenError::Apply {
                    lsn: recovery.report.last_lsn,
                    error,
                })?;
            if released > 0 {
                tracing::warn!(
                    released,
                    "released the holds of keyed requests whose answer was never logged"
                );
            }
        }
        // Assert after reading back.
        engine
            .check_conservation()
            .map_err(|why| OpenError::Apply {
                lsn: recovery.report.last_lsn,
                error: EngineError::corrupt("recovered state", why),
            })?;
        Ok(DurableEngine {
            engine: Arc::new(engine),
            log,
            stream,
            report: recovery.report,
            backfill,
            config: opts.engine,
            checkpointing: parking_lot::Mutex::new(()),
        })
    }

    /// What open read back from the log files for lagging consumers, if anything was
    /// wanted.
    pub fn stream_backfill(&self) -> Option<&StreamBackfill> {
        self.backfill.as_ref()
    }

    /// The engine. Clone the `Arc` to share it between threads.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The event stream: consumers register, read records after their cursor, and
    /// acknowledge through [`Engine::ack_consumer`] (durable).
    pub fn stream(&self) -> &Arc<EventStream> {
        &self.stream
    }

    /// The WAL.
    pub fn wal(&self) -> &Wal {
        self.log.wal()
    }

    /// What recovery found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Writes a snapshot of the current state and prunes the log behind it, without
    /// stopping writers.
    ///
    /// The state is a pure function of the log, so the snapshot at the last appended LSN is
    /// rebuilt off to the side: a shadow engine loads the newest snapshot file, replays the
    /// log files from there through that LSN, and is encoded; writers go on meanwhile (the
    /// snapshot gate is never taken). The bytes are the ones [`Engine::snapshot`] would
    /// give with writers stopped at that LSN (`engine/tests/checkpoint_shadow.rs`). Costs:
    /// one core for the load, replay and encoding, and a second copy of the state while it
    /// lasts. If the shadow cannot be rebuilt (in `Off` mode the log files are not written;
    /// a log file that does not read back), the snapshot is taken with writers paused
    /// instead ([`DurableEngine::checkpoint_paused`]) and the reason is logged.
    ///
    /// Segments behind the snapshot are kept back to the slowest durable consumer cursor in
    /// the snapshot (so a restart can serve that consumer from the files), within
    /// `WalConfig::consumer_retention_len_max`; consumers beyond it are named in the result.
    ///
    /// The rebuild runs on a thread of its own at the lowest CPU priority
    /// ([`at_low_priority`]): on a machine with fewer free cores than the rebuild's threads,
    /// at normal priority it took turns with the writers, which then waited up to 43 ms for
    /// a core (`perf sched timehist` of `pickline bench wal`, 2026-12-07).
    pub fn checkpoint(&self) -> Result<Checkpoint, EngineError> {
        let _one = self.checkpointing.lock();
        let snapshot = match at_low_priority(|| self.rebuild_snapshot()) {
            Ok(Some(snapshot)) => return self.write_checkpoint(snapshot, false),
            Ok(None) => self.engine.snapshot_with_cursors()?,
            Err(why) => {
                tracing::warn!(
                    error = %why,
                    "checkpoint: the shadow state could not be rebuilt from the log; \
                     taking the snapshot with writers paused"
                );
                self.engine.snapshot_with_cursors()?
            }
        };
        self.write_checkpoint(snapshot, true)
    }

    /// [`DurableEngine::checkpoint`] the old way: writers wait on the snapshot gate while
    /// the whole state is encoded. For comparison in `pickline bench wal`, and the fallback.
    pub fn checkpoint_paused(&self) -> Result<Checkpoint, EngineError> {
        let _one = self.checkpointing.lock();
        let snapshot = self.engine.snapshot_with_cursors()?;
        self.write_checkpoint(snapshot, true)
    }

    /// The snapshot at the last appended LSN, rebuilt from the newest snapshot file and the
    /// log files after it on this thread; `None` in `Off` mode (no files to read).
    fn rebuild_snapshot(&self) -> Result<Option<(Lsn, Vec<u8>, ConsumerCursors)>, String> {
        let wal = self.log.wal();
        if wal.config().durability == Durability::Off {
            return Ok(None);
        }
        let through = self.log.last_lsn();
        if through > Lsn::ZERO {
            wal.wait_durable(through).map_err(|e| e.to_string())?;
        }
        let base = wal.snapshot_lsn().unwrap_or(Lsn::ZERO);
        if base > through {
            return Err(format!(
                "the newest snapshot (LSN {base}) is ahead of the log (LSN {through})"
            ));
        }
        let shadow_log = Arc::new(NoLog::starting_after(base));
        let mut shadow = if base > Lsn::ZERO {
            let bytes = wal.read_snapshot(base).map_err(|e| e.to_string())?;
            Engine::from_snapshot_unchecked(self.config.clone(), shadow_log, &bytes)
                .map_err(|e| format!("snapshot {base} does not load: {e}"))?
        } else {
            Engine::with_log(self.config.clone(), shadow_log).map_err(|e| e.to_string())?
        };
        let records = wal.read_records(base, through).map_err(|e| e.to_string())?;
        let mut next = base.0 + 1;
        for rec in records.iter() {
            if rec.lsn.0 != next {
                return Err(format!(
                    "the log files hold record {} where record {next} was wanted",
                    rec.lsn
                ));
            }
            if rec.kind != RECORD_KIND_EVENTS {
                return Err(format!("log record {} has kind {}", rec.lsn, rec.kind));
            }
            let record = Record::decode(rec.payload)
                .map_err(|e| format!("log record {} does not decode: {e}", rec.lsn))?;
            shadow
                .replay_exclusive(&record)
                .map_err(|e| format!("log record {} does not apply: {e}", rec.lsn))?;
            next += 1;
        }
        if next != through.0 + 1 {
            return Err(format!(
                "the log files end at record {} before record {through}",
                next - 1
            ));
        }
        // Never write a snapshot that breaks conservation.
        shadow
            .check_conservation()
            .map_err(|why| format!("the rebuilt state at {through} breaks conservation: {why}"))?;
        shadow
            .encode_state(through)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn write_checkpoint(
        &self,
        (lsn, bytes, cursors): (Lsn, Vec<u8>, ConsumerCursors),
        writers_paused: bool,
    ) -> Result<Checkpoint, EngineError> {
        let slowest = cursors.iter().map(|(_, acked)| *acked).min();
        let retention = self
            .log
            .wal()
            .write_snapshot_retaining(lsn, &bytes, slowest)
            .map_err(log_failed)?;
        let consumers_beyond_retention = cursors
            .into_iter()
            .filter(|(_, acked)| *acked < retention.readable_after)
            .collect();
        Ok(Checkpoint {
            lsn,
            len_bytes: bytes.len(),
            log_readable_after: retention.readable_after,
            consumers_beyond_retention,
            writers_paused,
        })
    }

    /// Flushes and syncs everything appended, then stops the committer.
    pub fn close(self) -> Result<(), WalError> {
        let DurableEngine {
            engine,
            log,
            stream,
            ..
        } = self;
        drop(engine);
        drop(stream);
        log.wal().flush()
    }
}

/// Runs `work` on a new thread at the lowest CPU priority (nice 19 on Linux; the threads it
/// starts inherit it) and returns its result. A writer that wants a core gets it within a
/// scheduler slice (about a millisecond or two) instead of sharing it with the work; the
/// work still gets a share when every core is busy, so it is slowed, never starved. A
/// thread that cannot be started is an `Err`, as any other reason the rebuild failed (the
/// checkpoint then pauses writers and says why).
fn at_low_priority<T: Send>(work: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pickline-checkpoint".into())
            .spawn_scoped(scope, || {
                lower_this_threads_priority();
                work()
            })
            .map_err(|e| format!("no thread for the rebuild: {e}"))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Gives the calling thread the lowest CPU priority (Linux: nice 19, per thread). A thread
/// that cannot be lowered runs as it is.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
            tracing::debug!(error = %e, "checkpoint thread keeps its priority");
        }
    }
}
