//! The append path, the committer (group commit), snapshots and metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::format::{
    LSN_MAX, RECORD_HEADER_LEN, RECORD_PAYLOAD_LEN_MAX, SEGMENT_HEADER_LEN,
    SNAPSHOT_PAYLOAD_LEN_MAX, SegmentHeader, decode_snapshot, encode_segment_header,
    encode_snapshot, frame_len_at, parse_segment_file_name, parse_snapshot_file_name, seal_record,
    segment_file_name, snapshot_file_name, stamp_record,
};
use super::recovery::{self, RecoveredRecords, Recovery, RecoveryMode};
use super::storage::{Storage, StorageFile};
use super::{Committer, Durability, Lsn, WalConfig, WalError};

/// Buckets of the fsync latency histogram: bucket `i` counts batches whose sync time in
/// microseconds was in `[2^i, 2^(i+1))` (bucket 0 also takes 0 us; the last takes the rest).
pub const FSYNC_HISTOGRAM_BUCKETS: usize = 24;

/// Point-in-time copy of the WAL's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalMetrics {
    /// Batches written and synced.
    pub batches_written: u64,
    /// Records written and synced.
    pub records_written: u64,
    /// Record bytes written (excluding segment headers).
    pub bytes_written: u64,
    /// Records in the last batch.
    pub last_batch_records: u64,
    /// Largest batch so far, in records.
    pub batch_records_max: u64,
    /// Time spent in `fdatasync` (and directory fsync on a roll) for the last batch, in us.
    pub last_fsync_latency_us: u64,
    /// Log2 histogram of per-batch fsync time in microseconds; see [`FSYNC_HISTOGRAM_BUCKETS`].
    pub fsync_latency_us_histogram: [u64; FSYNC_HISTOGRAM_BUCKETS],
    /// Segments created by rolling.
    pub segments_rolled: u64,
    /// Highest durable LSN.
    pub durable_lsn: u64,
}

#[derive(Default)]
struct MetricCells {
    batches_written: AtomicU64,
    records_written: AtomicU64,
    bytes_written: AtomicU64,
    last_batch_records: AtomicU64,
    batch_records_max: AtomicU64,
    last_fsync_latency_us: AtomicU64,
    fsync_latency_us_histogram: [AtomicU64; FSYNC_HISTOGRAM_BUCKETS],
    segments_rolled: AtomicU64,
}

/// State under the append mutex. Everything `append` touches is here, so the hot path takes
/// exactly one lock.
struct Pending {
    /// Encoded records not yet taken by the committer, back to back.
    buf: Vec<u8>,
    /// Records in `buf`.
    buf_records: u64,
    /// LSN the next `append` assigns. Records `..next_lsn` are either durable or in `buf`
    /// or in the batch being committed.
    next_lsn: u64,
    /// A waiter in `Async` mode asked for an early flush.
    flush_requested: bool,
    /// `close`/`drop` began: flush what is pending, then stop.
    shutdown: bool,
    /// Records appended since the last commit was acknowledged (see
    /// `WalConfig::commit_delay_us`).
    appended_since_ack: u64,
    /// While the committer gathers: wake it when `appended_since_ack` reaches this
    /// (0: nobody is gathering).
    gather_target: u64,
}

struct OpenSegment {
    name: String,
    file: Box<dyn StorageFile>,
    len: u64,
}

/// State of the (single) committer; the mutex serializes commits.
struct CommitState {
    segment: Option<OpenSegment>,
    /// Second buffer: swapped with `Pending::buf` per batch so that no batch allocates.
    spare: Vec<u8>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    config: WalConfig,
    pending: Mutex<Pending>,
    /// Wakes the committer thread.
    work_cv: Condvar,
    /// Wakes appenders blocked by backpressure.
    space_cv: Condvar,
    durable_lsn: AtomicU64,
    /// The last LSN of the newest batch taken for a commit, shifted left by one, with the
    /// parity of that batch's number in the low bit. Changed only under `pending`'s lock
    /// (where batches are taken), so a waiter reading it there knows which batch will
    /// make its record durable: the one taken if its LSN is at or below, else the next.
    taken: AtomicU64,
    /// One word per batch parity: a commit bumps the word of its batch's parity after
    /// advancing `durable_lsn`, and threads in [`Wal::wait_durable`] wait on the word of
    /// the batch that covers their record, so a commit wakes only the threads it made
    /// durable (a fail-stop and the close bump both).
    durable_words: [AtomicU32; 2],
    /// Set once by the first write/fsync failure; never cleared.
    failed: OnceLock<Arc<str>>,
    /// Called after every change a waiter may care about (see [`Wal::set_progress_hook`]).
    progress_hook: OnceLock<ProgressHook>,
    /// Tasks waiting in [`Wal::durable`], with the LSN each waits for. A commit wakes only
    /// the tasks it covered (not every waiter, which would wake and re-park the tasks of
    /// the next batch on every commit); fail-stop and close wake all.
    waiters: Mutex<Vec<(u64, Waker)>>,
    commit: Mutex<CommitState>,
    /// Newest snapshot LSN written or recovered; serializes snapshot writes.
    snapshot: Mutex<Option<Lsn>>,
    metrics: MetricCells,
}

/// What [`Wal::write_snapshot_retaining`] left readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Every record with a larger LSN is still in the segment files (records at or below it
    /// may be gone). At most the consumers' cursor unless the cap was hit.
    pub readable_after: Lsn,
    /// Segments a consumer still needed were removed because they exceeded
    /// `WalConfig::consumer_retention_len_max`.
    pub consumer_cap_hit: bool,
}

/// The future of [`Wal::durable`].
#[must_use = "a future does nothing unless polled"]
pub struct DurableWait<'a> {
    wal: &'a Wal,
    lsn: Lsn,
    /// The waker on the WAL's list, once registered.
    registered: Option<Waker>,
}

impl std::fmt::Debug for DurableWait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableWait")
            .field("lsn", &self.lsn)
            .field("registered", &self.registered.is_some())
            .finish()
    }
}

impl Future for DurableWait<'_> {
    type Output = Result<(), WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.wal.poll_durable(self.lsn)? {
            return Poll::Ready(Ok(()));
        }
        // A waiter is woken (and removed) only once it is due, so while still pending it
        // is on the list; register again only if the task's waker changed.
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let waker = cx.waker().clone();
        self.wal
            .shared
            .waiters
            .lock()
            .push((self.lsn.0, waker.clone()));
        self.registered = Some(waker);
        // Check again: a commit between the first check and the registration woke the
        // list before this waiter was on it.
        match self.wal.poll_durable(self.lsn)? {
            true => Poll::Ready(Ok(())),
            false => Poll::Pending,
        }
    }
}

/// See [`Wal::set_progress_hook`].
pub type ProgressHook = Box<dyn Fn() + Send + Sync>;

/// The write-ahead log. `Send + Sync`: share it by reference or `Arc`.
///
/// Created by [`Wal::open`], which also recovers. Dropping it flushes what is pending and
/// stops the committer; use [`Wal::close`] to see errors of that last flush.
pub struct Wal {
    shared: Arc<Shared>,
    committer_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("config", &self.shared.config)
            .field("durable_lsn", &self.durable_lsn())
            .field("failed", &self.shared.failed.get())
            .finish()
    }
}

/// Truncates the shared buffer back to `start` unless disarmed, so that a panicking or
/// failing encoder leaves no half record behind.
struct Rollback<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.buf.truncate(self.start);
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Wal {
    /// Recovers the log in `storage` (see [`RecoveryMode`]) and returns the WAL, positioned
    /// to append the LSN after the last recovered record, plus what the engine must replay:
    /// the newest usable snapshot and every record after it, in LSN order.
    ///
    /// Errors if the config is invalid, on I/O errors, and on any corruption that the mode
    /// does not tolerate; the engine must then refuse to start (the error names file and
    /// byte offset).
    pub fn open(
        storage: Arc<dyn Storage>,
        config: WalConfig,
        mode: RecoveryMode,
    ) -> Result<(Wal, Recovery), WalError> {
        config.validate()?;
        let (recovery, current) = recovery::recover(&*storage, mode)?;
        let last_lsn = recovery.report.last_lsn.0;
        // Re-sync the segment we continue: records recovered from the page cache after a
        // process crash are not necessarily on disk yet, and the engine is about to build on
        // them.
        let segment = match current {
            Some((name, len)) => {
                let mut file = storage
                    .open_append(&name)
                    .map_err(|e| WalError::io("open_append", &name, e))?;
                file.sync_data()
                    .map_err(|e| WalError::io("sync_data", &name, e))?;
                Some(OpenSegment { name, file, len })
            }
            None => None,
        };
        storage
            .sync_dir()
            .map_err(|e| WalError::io("sync_dir", "", e))?;
        let newest_snapshot = recovery::newest_snapshot_name_lsn(&*storage)?;
        let shared = Arc::new(Shared {
            storage,
            config,
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                buf_records: 0,
                next_lsn: last_lsn + 1,
                flush_requested: false,
                shutdown: false,
                appended_since_ack: 0,
                gather_target: 0,
            }),
            work_cv: Condvar::new(),
            space_cv: Condvar::new(),
            durable_lsn: AtomicU64::new(last_lsn),
            taken: AtomicU64::new(last_lsn << 1),
            durable_words: [AtomicU32::new(0), AtomicU32::new(0)],
            failed: OnceLock::new(),
            progress_hook: OnceLock::new(),
            waiters: Mutex::new(Vec::new()),
            commit: Mutex::new(CommitState {
                segment,
                spare: Vec::new(),
            }),
            snapshot: Mutex::new(newest_snapshot),
            metrics: MetricCells::default(),
        });
        let committer_thread =
            if config.committer == Committer::Thread && config.durability != Durability::Off {
                let shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name("pickline-wal-committer".into())
                    .spawn(move || shared.committer_loop())
                    .map_err(|e| WalError::io("spawn committer thread", "", e))?;
                Some(handle)
            } else {
                None
            };
        Ok((
            Wal {
                shared,
                committer_thread,
            },
            recovery,
        ))
    }

    /// Appends one record and returns its LSN. Does not wait for durability.
    ///
    /// `encode` appends the payload to the buffer it is given (it must only append; it runs
    /// under the WAL's append mutex, directly into the shared pending buffer, so it should be
    /// short). LSNs are assigned under the same mutex, so if the caller holds its own locks
    /// across `append`, LSN order equals the caller's serialization order.
    ///
    /// Errors: [`WalError::PayloadTooLarge`] (nothing appended, no LSN used),
    /// [`WalError::FailStopped`], [`WalError::Closed`]. Blocks while the pending buffer is
    /// at `pending_len_max` (backpressure); with [`Committer::Manual`] it commits inline
    /// instead. If `encode` panics, nothing is appended and the panic propagates.
    pub fn append(&self, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) -> Result<Lsn, WalError> {
        let shared = &*self.shared;
        let mut p = shared.pending.lock();
        loop {
            shared.check_open(&p)?;
            if shared.config.durability == Durability::Off {
                let lsn = p.next_lsn;
                p.next_lsn += 1;
                return Ok(Lsn(lsn));
            }
            if p.buf.len() < shared.config.pending_len_max {
                break;
            }
            match shared.config.committer {
                Committer::Thread => {
                    p.flush_requested = true;
                    shared.work_cv.notify_one();
                    shared.space_cv.wait(&mut p);
                }
                Committer::Manual => {
                    drop(p);
                    shared.flush()?;
                    p = shared.pending.lock();
                }
            }
        }
        let start = p.buf.len();
        let was_empty = start == 0;
        {
            let mut guard = Rollback {
                buf: &mut p.buf,
                start,
                armed: true,
            };
            guard.buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
            encode(&mut *guard.buf);
            if guard.buf.len() < start + RECORD_HEADER_LEN {
                // The encoder removed bytes it did not write: earlier records are damaged.
                guard.armed = false;
                drop(guard);
                drop(p);
                let reason = "append: the encode closure shrank the shared WAL buffer (misuse)";
                shared.fail_stop(reason.to_string());
                return Err(shared.failed_error());
            }
            let payload_len = guard.buf.len() - start - RECORD_HEADER_LEN;
            if payload_len > RECORD_PAYLOAD_LEN_MAX {
                return Err(WalError::PayloadTooLarge {
                    payload_len,
                    payload_len_max: RECORD_PAYLOAD_LEN_MAX,
                });
            }
            guard.armed = false;
        }
        if p.next_lsn > LSN_MAX {
            p.buf.truncate(start);
            return Err(WalError::LsnExhausted);
        }
        let lsn = Lsn(p.next_lsn);
        p.next_lsn += 1;
        p.buf_records += 1;
        p.appended_since_ack += 1;
        seal_record(&mut p.buf[start..], lsn, kind);
        if shared.config.committer == Committer::Thread {
            let gathered = p.gather_target != 0 && p.appended_since_ack >= p.gather_target;
            if gathered {
                p.gather_target = 0;
            }
            let wake = match shared.config.durability {
                Durability::Sync => was_empty || gathered,
                _ => p.buf.len() >= shared.config.pending_len_max / 2,
            };
            if wake {
                shared.work_cv.notify_one();
            }
        }
        Ok(lsn)
    }

    /// Blocks until every record up to `lsn` is durable.
    ///
    /// Errors: [`WalError::FailStopped`] if the WAL failed before `lsn` became durable (it
    /// never will), [`WalError::LsnNotAssigned`] for an LSN never handed out,
    /// [`WalError::Closed`]. With [`Committer::Manual`] it commits on this thread.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        let shared = &*self.shared;
        if lsn.0 <= shared.durable_lsn.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut p = shared.pending.lock();
            if lsn.0 >= p.next_lsn {
                return Err(WalError::LsnNotAssigned {
                    lsn: lsn.0,
                    next_lsn: p.next_lsn,
                });
            }
            if shared.config.durability == Durability::Off {
                return Ok(());
            }
            if let Some(reason) = shared.failed.get() {
                return Err(WalError::FailStopped {
                    reason: reason.clone(),
                });
            }
            if matches!(shared.config.durability, Durability::Async { .. }) {
                p.flush_requested = true;
                shared.work_cv.notify_one();
            }
        }
        if shared.config.committer == Committer::Manual {
            while shared.durable_lsn.load(Ordering::Acquire) < lsn.0 {
                shared.flush()?;
            }
            return Ok(());
        }
        // Threads wait on a futex word that the commit making their record durable bumps
        // (and a fail-stop, and the close), and one system call wakes them all. A condition
        // variable woke them one after another through its mutex, each waking the next as
        // it let go; unparking each thread from the committer took one system call per
        // waiter before the next batch could start. With 64 threads waiting either took
        // longer than the fsync (issue 20). One word for every commit woke the threads
        // waiting for the next batch too, only to sleep again: a context switch per wait
        // wasted, on a machine where the switches were the bound. Two words, one per
        // batch parity, wake each thread once.
        loop {
            // Which batch makes `lsn` durable, read where batches are taken: the newest
            // one taken if it holds `lsn`, else the next (it takes every record appended
            // so far). Commits alternate with takes, so the next has the other parity.
            let word = {
                let _pending = shared.pending.lock();
                let taken = shared.taken.load(Ordering::Acquire);
                let parity = (taken & 1) as usize;
                if lsn.0 <= taken >> 1 {
                    &shared.durable_words[parity]
                } else {
                    &shared.durable_words[parity ^ 1]
                }
            };
            // The word before the checks: a change after them ends the wait at once.
            let epoch = word.load(Ordering::Acquire);
            if shared.durable_lsn.load(Ordering::Acquire) >= lsn.0 {
                return Ok(());
            }
            if shared.failed.get().is_some() {
                return Err(shared.failed_error());
            }
            if self
                .committer_thread
                .as_ref()
                .is_none_or(|t| t.is_finished())
            {
                return Err(WalError::Closed);
            }
            atomic_wait::wait(word, epoch);
        }
    }

    /// Non-blocking [`Wal::wait_durable`]: `Ok(true)` once every record up to `lsn` is as
    /// durable as the mode promises (at once in `Off` mode), `Ok(false)` while the caller
    /// must keep waiting, and the errors `wait_durable` would return. For waiters that do
    /// not park a thread (an async task re-polls from [`Wal::set_progress_hook`]). Unlike
    /// `wait_durable` it never commits on the calling thread and never requests an early
    /// flush in `Async` mode.
    pub fn poll_durable(&self, lsn: Lsn) -> Result<bool, WalError> {
        let shared = &*self.shared;
        if lsn.0 <= shared.durable_lsn.load(Ordering::Acquire) {
            return Ok(true);
        }
        if shared.config.durability == Durability::Off {
            let next_lsn = shared.pending.lock().next_lsn;
            return match lsn.0 < next_lsn {
                true => Ok(true),
                false => Err(WalError::LsnNotAssigned {
                    lsn: lsn.0,
                    next_lsn,
                }),
            };
        }
        if shared.failed.get().is_some() {
            return Err(shared.failed_error());
        }
        let p = shared.pending.lock();
        if lsn.0 >= p.next_lsn {
            return Err(WalError::LsnNotAssigned {
                lsn: lsn.0,
                next_lsn: p.next_lsn,
            });
        }
        if p.shutdown
            && self
                .committer_thread
                .as_ref()
                .is_none_or(|t| t.is_finished())
        {
            return Err(WalError::Closed);
        }
        Ok(false)
    }

    /// Resolves once every record up to `lsn` is durable, with the errors of
    /// [`Wal::poll_durable`] (in `Off` mode at once). The async form of
    /// [`Wal::wait_durable`]: no thread is parked; the committer wakes the task when the
    /// commit that covers `lsn` is done (and only then), or when the WAL fails or closes.
    /// It never commits on the calling task and never asks for an early flush in `Async`
    /// mode (where it waits for the next interval's commit).
    pub fn durable(&self, lsn: Lsn) -> DurableWait<'_> {
        DurableWait {
            wal: self,
            lsn,
            registered: None,
        }
    }

    /// Installs `hook`, called (on the committer's thread, with no WAL lock held) every time
    /// the durable LSN advances, when the WAL fail-stops and when it closes: exactly the
    /// moments at which [`Wal::poll_durable`] may change its answer. It must be quick (wake
    /// waiters, nothing more). One hook per WAL: a second call is refused and returns
    /// `hook` back.
    pub fn set_progress_hook(&self, hook: ProgressHook) -> Result<(), ProgressHook> {
        self.shared.progress_hook.set(hook)
    }

    /// Writes and syncs everything appended so far, on the calling thread, as one batch.
    /// Returns when it is durable (or the WAL failed).
    pub fn flush(&self) -> Result<(), WalError> {
        if self.shared.config.durability == Durability::Off {
            return Ok(());
        }
        self.shared.flush()
    }

    /// Highest LSN known durable (0 if none). In `Off` mode, stays at the recovered LSN.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable_lsn.load(Ordering::Acquire))
    }

    /// The LSN the next `append` will assign.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.shared.pending.lock().next_lsn)
    }

    /// Why the WAL fail-stopped, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.shared.failed.get().cloned()
    }

    /// The configuration in force.
    pub fn config(&self) -> &WalConfig {
        &self.shared.config
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> WalMetrics {
        let m = &self.shared.metrics;
        let mut fsync_latency_us_histogram = [0u64; FSYNC_HISTOGRAM_BUCKETS];
        for (out, cell) in fsync_latency_us_histogram
            .iter_mut()
            .zip(&m.fsync_latency_us_histogram)
        {
            *out = cell.load(Ordering::Relaxed);
        }
        WalMetrics {
            batches_written: m.batches_written.load(Ordering::Relaxed),
            records_written: m.records_written.load(Ordering::Relaxed),
            bytes_written: m.bytes_written.load(Ordering::Relaxed),
            last_batch_records: m.last_batch_records.load(Ordering::Relaxed),
            batch_records_max: m.batch_records_max.load(Ordering::Relaxed),
            last_fsync_latency_us: m.last_fsync_latency_us.load(Ordering::Relaxed),
            fsync_latency_us_histogram,
            segments_rolled: m.segments_rolled.load(Ordering::Relaxed),
            durable_lsn: self.shared.durable_lsn.load(Ordering::Acquire),
        }
    }

    /// Writes a snapshot of the engine state that contains the effect of every record with
    /// LSN `<= lsn`, then prunes.
    ///
    /// First waits until `lsn` is durable (a snapshot never runs ahead of the log), then
    /// writes `snapshot-<lsn>.snap` through [`Storage::write_atomic`]. Retention: the new
    /// snapshot and the one before it are kept, and every segment still needed to replay
    /// from the one before it; older snapshots and segments whose records are all `<=` the
    /// previous snapshot's LSN are removed. Why keep two: if the newest snapshot is found
    /// corrupt at recovery, the previous one plus the log still rebuild the same state.
    ///
    /// Snapshot I/O errors are returned but do not fail-stop the log: the log alone is still
    /// complete and correct. In `Off` mode nothing is written.
    pub fn write_snapshot(&self, lsn: Lsn, bytes: &[u8]) -> Result<(), WalError> {
        self.write_snapshot_retaining(lsn, bytes, None).map(|_| ())
    }

    /// [`Wal::write_snapshot`] that also keeps the segments holding every record after
    /// `consumers_acked` (the slowest durable consumer cursor), so a restarted event stream
    /// can serve that consumer from the files. Segments kept only for this purpose are
    /// bounded by `WalConfig::consumer_retention_len_max` bytes; the oldest go first, and
    /// [`Retention`] says where the readable log now starts.
    pub fn write_snapshot_retaining(
        &self,
        lsn: Lsn,
        bytes: &[u8],
        consumers_acked: Option<Lsn>,
    ) -> Result<Retention, WalError> {
        let shared = &*self.shared;
        if shared.config.durability == Durability::Off {
            return Ok(Retention {
                readable_after: lsn,
                consumer_cap_hit: false,
            });
        }
        if bytes.len() as u64 > SNAPSHOT_PAYLOAD_LEN_MAX {
            return Err(WalError::SnapshotTooLarge {
                payload_len: bytes.len() as u64,
                payload_len_max: SNAPSHOT_PAYLOAD_LEN_MAX,
            });
        }
        let mut newest = shared.snapshot.lock();
        if let Some(prev) = *newest
            && lsn < prev
        {
            return Err(WalError::InvalidSnapshotLsn {
                lsn: lsn.0,
                reason: format!("older than the newest snapshot at LSN {prev}"),
            });
        }
        if lsn.0 >= self.next_lsn().0 {
            return Err(WalError::InvalidSnapshotLsn {
                lsn: lsn.0,
                reason: "LSN not assigned yet".into(),
            });
        }
        self.wait_durable(lsn)?;
        let name = snapshot_file_name(lsn);
        let encoded = encode_snapshot(lsn, bytes).map_err(|_| WalError::SnapshotTooLarge {
            payload_len: bytes.len() as u64,
            payload_len_max: SNAPSHOT_PAYLOAD_LEN_MAX,
        })?;
        shared
            .storage
            .write_atomic(&name, &encoded)
            .map_err(|e| WalError::io("write_atomic", &name, e))?;
        *newest = Some(lsn);
        shared.prune(lsn, consumers_acked)
    }

    /// LSN of the newest snapshot file: the one recovery used or the newest written since.
    pub fn snapshot_lsn(&self) -> Option<Lsn> {
        *self.shared.snapshot.lock()
    }

    /// The payload of the snapshot file at `lsn`, read back and checked (magic, length,
    /// checksum, the LSN in its header). A checkpoint rebuilds its state from it.
    pub fn read_snapshot(&self, lsn: Lsn) -> Result<Vec<u8>, WalError> {
        let name = snapshot_file_name(lsn);
        let bytes = self
            .shared
            .storage
            .read(&name)
            .map_err(|e| WalError::io("read", &name, e))?;
        match decode_snapshot(&bytes) {
            Ok((found, payload)) if found == lsn => Ok(payload.to_vec()),
            Ok((found, _)) => Err(WalError::InvalidSnapshotLsn {
                lsn: lsn.0,
                reason: format!("{name} says LSN {found} in its header"),
            }),
            Err(detail) => Err(WalError::Corruption {
                file: name,
                offset: 0,
                detail,
            }),
        }
    }

    /// The records with LSN in `after + 1 ..= through` that are still in the segment files,
    /// read back and checked (checksums, contiguous LSNs). If the log no longer reaches
    /// back to `after + 1`, the result starts at the oldest record kept; the first record's
    /// LSN says where. For serving lagging consumers after a restart; the WAL itself never
    /// needs records behind its snapshot.
    pub fn read_records(&self, after: Lsn, through: Lsn) -> Result<RecoveredRecords, WalError> {
        recovery::read_range(&*self.shared.storage, after, through)
    }

    /// Flushes what is pending, stops the committer, and reports the final state: `Ok` if
    /// everything appended is durable, otherwise the failure.
    pub fn close(mut self) -> Result<(), WalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WalError> {
        let shared = &*self.shared;
        {
            let mut p = shared.pending.lock();
            if p.shutdown {
                return Ok(());
            }
            p.shutdown = true;
        }
        shared.work_cv.notify_all();
        shared.space_cv.notify_all();
        let flushed = match self.committer_thread.take() {
            Some(handle) => {
                // The committer flushes before it exits; a panic there is a bug, report it.
                handle.join().map_err(|_| WalError::FailStopped {
                    reason: "committer thread panicked".into(),
                })
            }
            None => shared.flush_final(),
        };
        flushed?;
        shared.wake_durable_threads();
        shared.wake_waiters(u64::MAX);
        shared.notify_progress();
        if shared.failed.get().is_some() {
            return Err(shared.failed_error());
        }
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Errors of the last flush are visible through `close`; drop cannot report them.
        let _ = self.shutdown();
    }
}

impl Shared {
    fn check_open(&self, p: &Pending) -> Result<(), WalError> {
        if self.failed.get().is_some() {
            return Err(self.failed_error());
        }
        if p.shutdown {
            return Err(WalError::Closed);
        }
        Ok(())
    }

    fn failed_error(&self) -> WalError {
        let reason = self
            .failed
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"));
        WalError::FailStopped { reason }
    }

    /// Enters fail-stop (first reason wins) and wakes everyone who might be waiting.
    fn fail_stop(&self, reason: String) {
        let _ = self.failed.set(Arc::from(reason));
        {
            let _p = self.pending.lock();
            self.space_cv.notify_all();
            self.work_cv.notify_all();
        }
        self.wake_durable_threads();
        self.wake_waiters(u64::MAX);
        self.notify_progress();
    }

    /// Wakes every thread waiting in [`Wal::wait_durable`] (a fail-stop, the close): each
    /// checks again whether what it waits for happened.
    fn wake_durable_threads(&self) {
        for word in &self.durable_words {
            word.fetch_add(1, Ordering::Release);
            atomic_wait::wake_all(word);
        }
    }

    /// Wakes the threads waiting for the batch of `parity` (just made durable), with one
    /// system call.
    fn wake_batch_threads(&self, parity: usize) {
        let word = &self.durable_words[parity];
        word.fetch_add(1, Ordering::Release);
        atomic_wait::wake_all(word);
    }

    /// Wakes (and forgets) the tasks of [`Wal::durable`] waiting for an LSN at or below
    /// `through` (`u64::MAX`: all of them, to see a failure or the close).
    fn wake_waiters(&self, through: u64) {
        let mut due = Vec::new();
        {
            let mut list = self.waiters.lock();
            let mut i = 0;
            while i < list.len() {
                if list[i].0 <= through {
                    due.push(list.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        }
        // Outside the lock: waking schedules tasks.
        for w in due {
            w.wake();
        }
    }

    /// Runs the progress hook, if one is set. Called without any WAL lock held, so the
    /// hook may call back into the WAL.
    fn notify_progress(&self) {
        if let Some(hook) = self.progress_hook.get() {
            hook();
        }
    }

    /// `flush` for shutdown without a committer thread (Manual mode).
    fn flush_final(&self) -> Result<(), WalError> {
        if self.config.durability == Durability::Off {
            return Ok(());
        }
        match self.flush() {
            Err(WalError::FailStopped { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes the whole pending buffer and makes it durable: one write and one `fdatasync`
    /// per batch (plus one fsync of the old segment, and one directory fsync, when rolling).
    fn flush(&self) -> Result<(), WalError> {
        self.commit_pending().map(|_| ())
    }

    /// [`Shared::flush`], returning how many records the commit acknowledged.
    fn commit_pending(&self) -> Result<u64, WalError> {
        let mut commit = self.commit.lock();
        let (batch, batch_last_lsn, batch_records, parity) = {
            let mut p = self.pending.lock();
            if self.failed.get().is_some() {
                return Err(self.failed_error());
            }
            p.flush_requested = false;
            if p.buf.is_empty() {
                return Ok(0);
            }
            let mut batch = std::mem::take(&mut commit.spare);
            std::mem::swap(&mut batch, &mut p.buf);
            let records = std::mem::take(&mut p.buf_records);
            let parity = (self.taken.load(Ordering::Relaxed) & 1) ^ 1;
            self.taken
                .store(((p.next_lsn - 1) << 1) | parity, Ordering::Release);
            (batch, p.next_lsn - 1, records, parity as usize)
        };
        self.space_cv.notify_all();
        // Stamp the batch with the durable LSN now: the previous batch's fdatasync has
        // returned (commits are serialized by `commit`), and nothing of this batch is on
        // disk yet. Recovery relies on exactly this: a record stamped `>= L` proves that
        // record `L` had been synced before it was written.
        let mut batch = batch;
        Self::stamp_batch(&mut batch, Lsn(self.durable_lsn.load(Ordering::Acquire)));
        match self.write_batch(&mut commit, &batch) {
            Ok(sync_us) => {
                debug_assert_eq!(
                    u64_at(&batch, batch.len() - Self::last_record_len(&batch) + 8),
                    batch_last_lsn,
                    "the last record of a batch carries the last assigned LSN"
                );
                self.record_metrics(batch_records, batch.len() as u64, sync_us);
                // Count appends from the moment the waiters can see the acknowledgement
                // (only the gathering window reads the count: no extra lock without it).
                if self.config.commit_delay_us > 0 {
                    self.pending.lock().appended_since_ack = 0;
                }
                self.durable_lsn.store(batch_last_lsn, Ordering::Release);
                self.wake_batch_threads(parity);
                self.wake_waiters(batch_last_lsn);
                self.notify_progress();
                let mut spare = batch;
                spare.clear();
                commit.spare = spare;
                Ok(batch_records)
            }
            Err(e) => {
                self.fail_stop(e.to_string());
                Err(e)
            }
        }
    }

    /// Writes the stamp and the CRC of every frame in `batch` (appenders leave both out).
    fn stamp_batch(batch: &mut [u8], durable_lsn: Lsn) {
        let mut pos = 0;
        while pos < batch.len() {
            let len = frame_len_at(&batch[pos..]);
            stamp_record(&mut batch[pos..pos + len], durable_lsn);
            pos += len;
        }
    }

    fn last_record_len(batch: &[u8]) -> usize {
        let mut pos = 0;
        let mut last = 0;
        while pos < batch.len() {
            last = RECORD_HEADER_LEN + u32_at(batch, pos) as usize;
            pos += last;
        }
        last
    }

    /// Writes `batch` to the current segment, rolling at record boundaries; returns the time
    /// spent syncing, in microseconds.
    fn write_batch(&self, commit: &mut CommitState, batch: &[u8]) -> Result<u64, WalError> {
        let storage = &*self.storage;
        let mut sync_us = 0u64;
        let mut dir_dirty = false;
        let mut chunk_start = 0usize;
        let mut pos = 0usize;
        let mut unsynced = false;
        while pos < batch.len() {
            // The buffer holds only frames written by `append`, so the fields are in bounds.
            let record_len = RECORD_HEADER_LEN + u32_at(batch, pos) as usize;
            let must_roll = match &commit.segment {
                None => true,
                Some(seg) => {
                    let len_with_chunk = seg.len + (pos - chunk_start) as u64;
                    len_with_chunk > SEGMENT_HEADER_LEN as u64
                        && len_with_chunk + record_len as u64 > self.config.segment_len_max
                }
            };
            if must_roll {
                if let Some(seg) = commit.segment.as_mut() {
                    if pos > chunk_start {
                        seg.file
                            .append(&batch[chunk_start..pos])
                            .map_err(|e| WalError::io("append", &seg.name, e))?;
                        seg.len += (pos - chunk_start) as u64;
                        unsynced = true;
                    }
                    if unsynced {
                        let t = Instant::now();
                        seg.file
                            .sync_data()
                            .map_err(|e| WalError::io("sync_data", &seg.name, e))?;
                        sync_us += t.elapsed().as_micros() as u64;
                    }
                    self.metrics.segments_rolled.fetch_add(1, Ordering::Relaxed);
                }
                if dir_dirty {
                    // The segment being closed was created in this batch: make its name
                    // durable before a newer segment can exist, or a power cut could keep
                    // the newer file and lose the older one (a hole in the log).
                    let t = Instant::now();
                    storage
                        .sync_dir()
                        .map_err(|e| WalError::io("sync_dir", "", e))?;
                    sync_us += t.elapsed().as_micros() as u64;
                }
                let first_lsn = Lsn(u64_at(batch, pos + 8));
                let name = segment_file_name(first_lsn);
                let mut file = storage
                    .open_append(&name)
                    .map_err(|e| WalError::io("open_append", &name, e))?;
                file.append(&encode_segment_header(SegmentHeader { first_lsn }))
                    .map_err(|e| WalError::io("append", &name, e))?;
                commit.segment = Some(OpenSegment {
                    name,
                    file,
                    len: SEGMENT_HEADER_LEN as u64,
                });
                unsynced = true;
                dir_dirty = true;
                chunk_start = pos;
            }
            pos += record_len;
        }
        let Some(seg) = commit.segment.as_mut() else {
            return Ok(sync_us);
        };
        if pos > chunk_start {
            seg.file
                .append(&batch[chunk_start..pos])
                .map_err(|e| WalError::io("append", &seg.name, e))?;
            seg.len += (pos - chunk_start) as u64;
            unsynced = true;
        }
        let t = Instant::now();
        if unsynced {
            seg.file
                .sync_data()
                .map_err(|e| WalError::io("sync_data", &seg.name, e))?;
        }
        if dir_dirty {
            // A new segment's name must be durable before any record in it is acknowledged.
            storage
                .sync_dir()
                .map_err(|e| WalError::io("sync_dir", "", e))?;
        }
        sync_us += t.elapsed().as_micros() as u64;
        Ok(sync_us)
    }

    fn record_metrics(&self, records: u64, bytes: u64, sync_us: u64) {
        let m = &self.metrics;
        m.batches_written.fetch_add(1, Ordering::Relaxed);
        m.records_written.fetch_add(records, Ordering::Relaxed);
        m.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        m.last_batch_records.store(records, Ordering::Relaxed);
        m.batch_records_max.fetch_max(records, Ordering::Relaxed);
        m.last_fsync_latency_us.store(sync_us, Ordering::Relaxed);
        let bucket = (u64::BITS - sync_us.leading_zeros()).saturating_sub(1) as usize;
        m.fsync_latency_us_histogram[bucket.min(FSYNC_HISTOGRAM_BUCKETS - 1)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Removes snapshots older than the previous one, and segments whose records are all
    /// covered by the previous snapshot, except those still holding records after
    /// `consumers_acked` (within `consumer_retention_len_max` bytes). Never removes the
    /// newest segment.
    fn prune(&self, newest: Lsn, consumers_acked: Option<Lsn>) -> Result<Retention, WalError> {
        let storage = &*self.storage;
        let names = storage.list().map_err(|e| WalError::io("list", "", e))?;
        let mut snapshots: Vec<(Lsn, String)> = names
            .iter()
            .filter_map(|n| parse_snapshot_file_name(n).map(|l| (l, n.clone())))
            .collect();
        snapshots.sort();
        let mut segments: Vec<(Lsn, String)> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n).map(|l| (l, n.clone())))
            .collect();
        segments.sort();
        // Snapshots newer than `newest` cannot exist (LSNs only grow); keep the two newest.
        let keep_from = snapshots.len().saturating_sub(2);
        let previous = if snapshots.len() >= 2 {
            Some(snapshots[snapshots.len() - 2].0)
        } else {
            None
        };
        debug_assert!(snapshots.last().is_none_or(|s| s.0 == newest));
        let mut removed_any = false;
        for (_, name) in &snapshots[..keep_from] {
            storage
                .remove(name)
                .map_err(|e| WalError::io("remove", name, e))?;
            removed_any = true;
        }
        let mut consumer_cap_hit = false;
        // Index of the oldest segment left (removals take a contiguous run of the oldest).
        let mut oldest_kept = 0;
        if let Some(previous) = previous {
            // Segment i holds LSNs [first_i, first_{i+1}); it holds a record after `floor`
            // iff first_{i+1} > floor + 1. The newest segment is never a candidate.
            let holds_after = |i: usize, floor: Lsn| segments[i + 1].0.0 > floor.0 + 1;
            let consumer_floor = consumers_acked.map_or(previous, |c| c.min(previous));
            // Candidates for removal, newest first: the segments the fallback snapshot does
            // not need. Those a consumer needs are kept while they fit in the cap.
            let mut kept_for_consumers_len = 0u64;
            let mut cap_reached = false;
            for i in (0..segments.len().saturating_sub(1)).rev() {
                if holds_after(i, previous) {
                    continue;
                }
                let name = &segments[i].1;
                if !cap_reached && holds_after(i, consumer_floor) {
                    let len = storage
                        .len(name)
                        .map_err(|e| WalError::io("len", name, e))?;
                    if kept_for_consumers_len + len <= self.config.consumer_retention_len_max {
                        kept_for_consumers_len += len;
                        continue;
                    }
                    cap_reached = true;
                    consumer_cap_hit = true;
                } else {
                    // Older segments than one removed must go too: the kept log stays a
                    // contiguous run of segments.
                    cap_reached = true;
                }
                storage
                    .remove(name)
                    .map_err(|e| WalError::io("remove", name, e))?;
                removed_any = true;
                oldest_kept = oldest_kept.max(i + 1);
            }
        }
        if removed_any {
            storage
                .sync_dir()
                .map_err(|e| WalError::io("sync_dir", "", e))?;
        }
        Ok(Retention {
            readable_after: Lsn(segments
                .get(oldest_kept)
                .map_or(newest.0, |(first, _)| first.0 - 1)),
            consumer_cap_hit,
        })
    }

    fn committer_loop(&self) {
        let interval = match self.config.durability {
            Durability::Async { flush_interval_ms } => {
                Some(Duration::from_millis(flush_interval_ms))
            }
            _ => None,
        };
        let gather_window = match (self.config.durability, self.config.commit_delay_us) {
            (Durability::Sync, us) if us > 0 => Some(Duration::from_micros(us)),
            _ => None,
        };
        let mut deadline = interval.map(|i| Instant::now() + i);
        // While gathering: the records the last commit acknowledged, and until when to wait
        // for as many new appends (see `WalConfig::commit_delay_us`).
        let mut gather: Option<(u64, Instant)> = None;
        loop {
            let shutdown = {
                let mut p = self.pending.lock();
                loop {
                    if self.failed.get().is_some() {
                        return;
                    }
                    if p.shutdown {
                        break true;
                    }
                    if let Some((acked, until)) = gather
                        && (p.appended_since_ack >= acked
                            || p.flush_requested
                            || Instant::now() >= until)
                    {
                        gather = None;
                        p.gather_target = 0;
                    }
                    if !p.buf.is_empty() && gather.is_none() {
                        let due = match deadline {
                            None => true,
                            Some(d) => {
                                p.flush_requested
                                    || p.buf.len() >= self.config.pending_len_max / 2
                                    || Instant::now() >= d
                            }
                        };
                        if due {
                            break false;
                        }
                    }
                    match (gather, deadline, interval) {
                        (Some((acked, until)), _, _) => {
                            p.gather_target = acked;
                            self.work_cv.wait_until(&mut p, until);
                        }
                        (None, Some(d), Some(i)) => {
                            if self.work_cv.wait_until(&mut p, d).timed_out() && p.buf.is_empty() {
                                deadline = Some(Instant::now() + i);
                            }
                        }
                        _ => self.work_cv.wait(&mut p),
                    }
                }
            };
            // Errors are recorded by fail-stop inside `flush`; waiters see them there.
            let acked = self.commit_pending().unwrap_or(0);
            if let Some(i) = interval {
                deadline = Some(Instant::now() + i);
            }
            if let Some(window) = gather_window
                && acked > 0
            {
                gather = Some((acked, Instant::now() + window));
            }
            if shutdown {
                // `append` refuses new records once `shutdown` is set, so one flush is all.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::super::storage::MemStorage;
    use super::super::{Committer, RecoveryMode, WalConfig, WalError};
    use super::Wal;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn manual_wal() -> Wal {
        let config = WalConfig {
            committer: Committer::Manual,
            ..WalConfig::default()
        };
        Wal::open(Arc::new(MemStorage::new()), config, RecoveryMode::default())
            .unwrap()
            .0
    }

    /// A manual-commit WAL with one appended, not yet durable record.
    fn wal_with_one_record() -> (Wal, super::Lsn) {
        let wal = manual_wal();
        let lsn = wal.append(1, |b| b.push(7)).unwrap();
        (wal, lsn)
    }

    #[test]
    fn a_commit_wakes_only_the_waiters_it_covers() {
        let wal = manual_wal();
        let shared = &wal.shared;
        let (low, w_low) = waker();
        let (high, w_high) = waker();
        shared.waiters.lock().push((5, w_low));
        shared.waiters.lock().push((9, w_high));
        shared.wake_waiters(4);
        assert_eq!(low.0.load(Ordering::SeqCst), 0);
        shared.wake_waiters(5);
        assert_eq!(low.0.load(Ordering::SeqCst), 1);
        assert_eq!(high.0.load(Ordering::SeqCst), 0);
        // Woken waiters are forgotten: a later commit does not wake them again.
        shared.wake_waiters(8);
        assert_eq!(low.0.load(Ordering::SeqCst), 1);
        assert_eq!(high.0.load(Ordering::SeqCst), 0);
        // A stopped WAL wakes everyone.
        shared.wake_waiters(u64::MAX);
        assert_eq!(high.0.load(Ordering::SeqCst), 1);
        assert!(shared.waiters.lock().is_empty());
    }

    #[test]
    fn durable_resolves_after_the_commit_that_covers_it() {
        let (wal, lsn) = wal_with_one_record();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut fut = pin!(wal.durable(lsn));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // Polled again by the same task: still one registration.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wal.shared.waiters.lock().len(), 1);
        wal.flush().unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the commit woke the task"
        );
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        // Unassigned LSNs are an error, not a wait.
        let mut beyond = pin!(wal.durable(super::Lsn(lsn.0 + 5)));
        assert!(matches!(
            beyond.as_mut().poll(&mut cx),
            Poll::Ready(Err(WalError::LsnNotAssigned { .. }))
        ));
    }

    #[test]
    fn a_fail_stop_wakes_waiters_with_the_failure() {
        let (wal, lsn) = wal_with_one_record();
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        let mut fut = pin!(wal.durable(lsn));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        wal.shared.fail_stop("injected for the test".into());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            fut.as_mut().poll(&mut cx),
            Poll::Ready(Err(WalError::FailStopped { .. }))
        ));
    }
}
