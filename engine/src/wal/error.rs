//! Errors of the WAL layer.

use std::io;
use std::sync::Arc;

use super::format::DecodeError;

/// Everything that can go wrong in the WAL. I/O, corruption and misuse only: the WAL has no
/// business outcomes.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A storage operation failed.
    #[error("I/O error during {op} on {file:?}: {source}")]
    Io {
        /// The operation (`"append"`, `"sync_data"`, ...).
        op: &'static str,
        /// The file, or `""` for directory operations.
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed; the WAL accepts nothing more, ever (fail-stop:
    /// after a failed fsync the kernel may have dropped dirty pages, so retrying could
    /// acknowledge data that is not on disk). Restart and recover.
    #[error("WAL is fail-stopped and accepts no more work: {reason}")]
    FailStopped {
        /// The first failure, as text (shared by every later error).
        reason: Arc<str>,
    },
    /// Bytes that do not decode, at a place where that is not a tolerable torn tail.
    #[error("corruption in {file} at byte offset {offset}: {detail}")]
    Corruption {
        /// Segment or snapshot file name.
        file: String,
        /// Byte offset from the start of the file.
        offset: u64,
        /// What is wrong.
        detail: DecodeError,
    },
    /// A record with a valid checksum but an unexpected LSN: the log is not contiguous.
    #[error(
        "LSN discontinuity in {file} at byte offset {offset}: expected LSN {expected_lsn}, found {found_lsn}"
    )]
    LsnDiscontinuity {
        /// Segment file name.
        file: String,
        /// Byte offset of the record (0 for a segment whose header LSN is unexpected).
        offset: u64,
        /// The LSN that should have come next.
        expected_lsn: u64,
        /// The LSN found.
        found_lsn: u64,
    },
    /// The log does not reach back to the snapshot it must continue from.
    #[error("log gap: replay must start at LSN {needed_lsn} but {detail}")]
    LogGap {
        /// First LSN replay needs.
        needed_lsn: u64,
        /// What the log has instead.
        detail: String,
    },
    /// The newest snapshot is unusable and no older state is covered by the log.
    #[error("snapshot {file} is unusable ({detail}) and there is no fallback: {fallback_problem}")]
    SnapshotUnrecoverable {
        /// The newest snapshot file.
        file: String,
        /// Why it is unusable.
        detail: String,
        /// Why the previous snapshot (or the log from LSN 1) cannot replace it.
        fallback_problem: String,
    },
    /// A segment file larger than any this code writes.
    #[error("segment {file} is {len_bytes} bytes, more than SEGMENT_FILE_LEN_MAX")]
    SegmentTooLong {
        /// Segment file name.
        file: String,
        /// Its length.
        len_bytes: u64,
    },
    /// The encoded payload is larger than `RECORD_PAYLOAD_LEN_MAX`. Nothing was appended.
    #[error("record payload of {payload_len} bytes exceeds the maximum {payload_len_max}")]
    PayloadTooLarge {
        /// Encoded payload length.
        payload_len: usize,
        /// The limit.
        payload_len_max: usize,
    },
    /// A snapshot payload larger than `SNAPSHOT_PAYLOAD_LEN_MAX`.
    #[error("snapshot payload of {payload_len} bytes exceeds the maximum {payload_len_max}")]
    SnapshotTooLarge {
        /// Payload length.
        payload_len: u64,
        /// The limit.
        payload_len_max: u64,
    },
    /// `write_snapshot` at an LSN it cannot take.
    #[error("cannot snapshot at LSN {lsn}: {reason}")]
    InvalidSnapshotLsn {
        /// The LSN asked for.
        lsn: u64,
        /// Why not.
        reason: String,
    },
    /// `wait_durable` for an LSN that was never handed out.
    #[error("LSN {lsn} was never assigned (next LSN is {next_lsn})")]
    LsnNotAssigned {
        /// The LSN asked for.
        lsn: u64,
        /// The next LSN `append` would assign.
        next_lsn: u64,
    },
    /// A `WalConfig` value outside its limits.
    #[error("invalid WAL config: {reason}")]
    InvalidConfig {
        /// Which field and why.
        reason: String,
    },
    /// The log reached `LSN_MAX`; nothing was appended.
    #[error("LSN space exhausted")]
    LsnExhausted,
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, file: &str, source: io::Error) -> Self {
        WalError::Io {
            op,
            file: file.to_string(),
            source,
        }
    }
}
