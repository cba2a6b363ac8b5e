//! Write-ahead log: durable, ordered, payload-agnostic records with group commit,
//! snapshots, and crash recovery.
//!
//! The engine encodes its own commands and events; the WAL carries opaque records
//! `(lsn, kind, payload)`. The byte layout, the recovery modes and the group-commit argument
//! are in `LAYOUT.md` next to this file (included below), written so it can be copied into
//! `ARCHITECTURE.md`.
//!
//! Code map:
//! - [`format`](mod@format): byte layout of records, segments and snapshots (encoders carry the layout
//!   in their doc comments); pure, panic-free decoders.
//! - [`storage`]: the narrow [`Storage`] trait and [`FileStorage`], [`MemStorage`] (live vs.
//!   durable image, simulated power cuts) and [`FaultyStorage`] (seeded fault injection).
//! - `writer`: [`Wal`], the append path, the committer, snapshots, metrics.
//! - `recovery`: [`Wal::open`]'s recovery, [`verify`] and [`dump`] for the operator CLI.
//!
//! Architecture invariant: the WAL knows nothing about the engine's commands; it never
//! interprets a payload or a kind.
//!
//! Architecture invariant: an LSN is acknowledged durable (by [`Wal::wait_durable`]) only
//! after every record up to it has been written and `fdatasync`ed, and after a failed write
//! or fsync nothing is ever acknowledged again (fail-stop).
#![doc = include_str!("LAYOUT.md")]
#![deny(missing_docs)]

pub mod error;
pub mod format;
mod recovery;
pub mod storage;
mod writer;

pub use error::WalError;
pub use format::{
    DecodeError, LSN_MAX, RECORD_HEADER_LEN, RECORD_LEN_MAX, RECORD_PAYLOAD_LEN_MAX, Record,
    SEGMENT_FILE_LEN_MAX, SEGMENT_HEADER_LEN, SEGMENT_LEN_MAX, SEGMENT_LEN_MIN,
    SNAPSHOT_HEADER_LEN, SNAPSHOT_PAYLOAD_LEN_MAX,
};
pub use recovery::{
    Dump, DumpEntry, RecoveredRecords, Recovery, RecoveryMode, RecoveryReport, RejectedSnapshot,
    SegmentSummary, Snapshot, SnapshotSummary, TailTruncation, VerifyReport, dump, verify,
};
pub use storage::{
    CrashEffect, FaultKind, FaultPlan, FaultyStorage, FileStorage, FiredFault, MemStorage, SimRng,
    Storage, StorageFile,
};
pub use writer::{DurableWait, FSYNC_HISTOGRAM_BUCKETS, ProgressHook, Retention, Wal, WalMetrics};

pub use crate::types::Lsn;

/// When appended records reach the disk, and what callers wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Group commit: the committer writes and `fdatasync`s whatever is pending as soon as
    /// the previous batch is done; callers acknowledge a mutation only after
    /// [`Wal::wait_durable`] returns. Nothing acknowledged is ever lost.
    #[default]
    Sync,
    /// The committer writes and syncs every `flush_interval_ms` (sooner when the pending
    /// buffer is half full). Callers do not wait. Loss window: a power cut or crash loses
    /// the mutations of at most the last `flush_interval_ms` plus one batch's write+fsync
    /// time; what survives is still a contiguous prefix of the log.
    Async {
        /// Time between flushes, in milliseconds (1..=60_000).
        flush_interval_ms: u64,
    },
    /// Nothing is written (no records, no snapshots); LSNs are still assigned and
    /// [`Wal::wait_durable`] returns at once. For benchmarks and tests only.
    Off,
}

/// Who runs the commits (write + `fdatasync` of pending records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Committer {
    /// A dedicated committer thread (the normal mode).
    #[default]
    Thread,
    /// No thread: commits happen on the caller's thread, in [`Wal::flush`], in
    /// [`Wal::wait_durable`], and in [`Wal::append`] when the pending buffer is full.
    /// Makes every I/O operation happen at a deterministic point, for seeded simulation.
    Manual,
}

/// WAL configuration. Every limit is validated by [`Wal::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalConfig {
    /// When records become durable. Default [`Durability::Sync`].
    pub durability: Durability,
    /// Who commits. Default [`Committer::Thread`].
    pub committer: Committer,
    /// Roll to a new segment before a record would make the current one longer than this,
    /// in bytes (`SEGMENT_LEN_MIN..=SEGMENT_LEN_MAX`; default 64 MiB). A segment exceeds it
    /// only when it holds a single record larger than the limit.
    pub segment_len_max: u64,
    /// Backpressure bound on appended-but-not-yet-taken bytes
    /// (`RECORD_LEN_MAX..=1 GiB`; default 8 MiB). When the pending buffer holds this much,
    /// `append` blocks until the committer has taken it (with [`Committer::Manual`], it
    /// commits inline instead). The buffer therefore never exceeds
    /// `pending_len_max + RECORD_LEN_MAX` bytes.
    pub pending_len_max: usize,
    /// Most bytes of segments kept *only* for lagging event-stream consumers
    /// (`0..=CONSUMER_RETENTION_LEN_MAX_LIMIT`; default 1 GiB). A snapshot normally lets
    /// the log behind the previous snapshot go; [`Wal::write_snapshot_retaining`] keeps it
    /// back to the slowest durable consumer cursor instead, but never more than this many
    /// bytes of such extra segments (oldest go first). A consumer whose cursor falls behind
    /// what is kept is reported in [`Retention`] and gets `Truncated` after a restart.
    pub consumer_retention_len_max: u64,
    /// Group-commit gathering window in microseconds (`0..=COMMIT_DELAY_US_MAX`; default
    /// 0: off). Only with [`Durability::Sync`] and [`Committer::Thread`]: when a commit has
    /// acknowledged `R` records, the committer waits until `R` records have been appended
    /// since that acknowledgement, or until this much time has passed, before it starts
    /// the next commit, so that writers woken by one commit ride the next one together
    /// instead of splitting into two half-size cohorts that alternate (PostgreSQL's
    /// `commit_delay`, MySQL's `binlog_group_commit_sync_delay`). It never adds more than
    /// this to a commit and costs nothing at low load. Off by default because on this
    /// project's reference machine (fast `fdatasync` after preallocation, 2 cores) the
    /// two alternating cohorts overlap CPU with the sync and win; it helps where the sync
    /// is slow relative to the writers' work (see `docs/BENCHMARKS.md`).
    pub commit_delay_us: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            durability: Durability::Sync,
            committer: Committer::Thread,
            segment_len_max: 64 << 20,
            pending_len_max: 8 << 20,
            consumer_retention_len_max: 1 << 30,
            commit_delay_us: 0,
        }
    }
}

/// Upper bound for `WalConfig::pending_len_max`.
pub const PENDING_LEN_MAX_LIMIT: usize = 1 << 30;

/// Upper bound for `WalConfig::consumer_retention_len_max` (1 TiB).
pub const CONSUMER_RETENTION_LEN_MAX_LIMIT: u64 = 1 << 40;

/// Upper bound for `WalConfig::commit_delay_us` (10 ms).
pub const COMMIT_DELAY_US_MAX: u64 = 10_000;

/// Upper bound for `Durability::Async { flush_interval_ms }`.
pub const FLUSH_INTERVAL_MS_MAX: u64 = 60_000;

impl WalConfig {
    /// Checks every field against its limit, with a message naming the field.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |reason: String| Err(WalError::InvalidConfig { reason });
        if !(SEGMENT_LEN_MIN..=SEGMENT_LEN_MAX).contains(&self.segment_len_max) {
            return bad(format!(
                "segment_len_max = {} is outside {SEGMENT_LEN_MIN}..={SEGMENT_LEN_MAX}",
                self.segment_len_max
            ));
        }
        if !(RECORD_LEN_MAX..=PENDING_LEN_MAX_LIMIT).contains(&self.pending_len_max) {
            return bad(format!(
                "pending_len_max = {} is outside {RECORD_LEN_MAX}..={PENDING_LEN_MAX_LIMIT}",
                self.pending_len_max
            ));
        }
        if self.consumer_retention_len_max > CONSUMER_RETENTION_LEN_MAX_LIMIT {
            return bad(format!(
                "consumer_retention_len_max = {} is above {CONSUMER_RETENTION_LEN_MAX_LIMIT}",
                self.consumer_retention_len_max
            ));
        }
        if self.commit_delay_us > COMMIT_DELAY_US_MAX {
            return bad(format!(
                "commit_delay_us = {} is above {COMMIT_DELAY_US_MAX}",
                self.commit_delay_us
            ));
        }
        if let Durability::Async { flush_interval_ms } = self.durability
            && !(1..=FLUSH_INTERVAL_MS_MAX).contains(&flush_interval_ms)
        {
            return bad(format!(
                "flush_interval_ms = {flush_interval_ms} is outside 1..={FLUSH_INTERVAL_MS_MAX}"
            ));
        }
        Ok(())
    }
}
