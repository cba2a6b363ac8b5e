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
use crate::log::EventLog;
use crate::stream::{EventStream, STREAM_RETAINED_MAX};
use crate::types::Lsn;
use crate::wal::{Durability, RecoveryMode, RecoveryReport, Storage, Wal, WalConfig, WalError};

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
                    record,
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
        let (wal, recovery) = Wal::open(storage, opts.wal, opts.recovery)?;
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
            Some(s) => Engine::from_snapshot(opts.engine.clone(), stream.clone(), &s.bytes)
                .map_err(|error| OpenError::Apply { lsn: s.lsn, error })?,
            None => Engine::with_log(opts.engine.clone(), stream.clone()).map_err(|error| {
                OpenError::Apply {
                    lsn: Lsn::ZERO,
                    error,
                }
            })?,
        };
        let total = recovery.records.len();
        for (n, rec) in recovery.records.iter().enumerate() {
            if rec.kind != RECORD_KIND_EVENTS {
                return Err(OpenError::Kind {
                    lsn: rec.lsn,
                    kind: rec.kind,
                });
            }
            let record = Record::decode(rec.payload).map_err(|error| OpenError::Decode {
                lsn: rec.lsn,
                error,
            })?;
            engine
                .replay_exclusive(&record)
                .map_err(|error| OpenError::Apply {
                    lsn: rec.lsn,
                    error,
                })?;
            stream.replayed_owned(
                LoggedRecord {
                    lsn: rec.lsn,
                    record,
                },
                total - 1 - n as u64,
            );
        }
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
        // Assert after reading back.
        engine
            .check_conservation()
            .map_err(|why| OpenError::Apply {
                lsn: recovery.report.last_lsn,
                error: EngineError::invalid("recovered state", why),
            })?;
        Ok(DurableEngine {
            engine: Arc::new(engine),
            log,
            stream,
            report: recovery.report,
            backfill,
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

    /// Writes a snapshot of the current state and prunes the log behind it. Writers pause
    /// only while the state is encoded (not while it is written).
    ///
    /// Segments behind the snapshot are kept back to the slowest durable consumer cursor in
    /// the snapshot (so a restart can serve that consumer from the files), within
    /// `WalConfig::consumer_retention_len_max`; consumers beyond it are named in the result.
    pub fn checkpoint(&self) -> Result<Checkpoint, EngineError> {
        let (lsn, bytes, cursors) = self.engine.snapshot_with_cursors()?;
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
