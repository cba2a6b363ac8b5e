//! The intake journal: a second write-ahead log (the engine's payload-agnostic WAL, in
//! `<data dir>/intake/`) holding every delivery intake has taken responsibility for.
//!
//! A delivery is acknowledged to its sender only once its `Accepted` record (raw body and
//! headers) is durable, so a crash between the acknowledgement and the engine loses
//! nothing: at the next start every accepted entry that was neither settled nor
//! dead-lettered is placed again (the sink is idempotent per delivery). Permanent failures
//! become dead letters, with the raw payload, the reason, the attempts and the first and
//! last failure time, in the same log; operators list, replay (back into the queue) or
//! discard them.
//!
//! # Records (kind byte, then the payload in the engine's varint codec)
//!
//! | kind | record | effect on the state |
//! |---|---|---|
//! | 1 | `Accepted { entry }` | `pending[lsn] = entry` |
//! | 2 | `Settled { id }` | `pending.remove(id)` (placed, or nothing to do) |
//! | 3 | `DeadLettered { id, letter }` | `pending.remove(id)`, `letters[id] = letter` (a new letter's id is its own LSN; a repeat of a known cause updates that letter) |
//! | 4 | `Requeued { id }` | `letters.remove(id)` back into `pending[id]`, its `replays` + 1 |
//! | 5 | `Discarded { id }` | `letters.remove(id)` |
//!
//! Every record's effect is a total function of the state (an unknown id changes nothing),
//! so replaying the log in LSN order rebuilds exactly the state the live process had.
//! Snapshots (format [`SNAPSHOT_FORMAT`]) hold the whole state at one LSN and bound the
//! log; the WAL keeps the previous snapshot and the log since it.
//!
//! Architecture invariant: the state changes only in [`Journal::append`], under the state
//! mutex and after the WAL assigned the record its LSN, so LSN order is the order of the
//! changes and a snapshot (taken under the same mutex) is exactly the state after a log
//! prefix.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use pickline_engine::{
    Lsn,
    codec::{Dec, DecodeError, Enc},
    wal::{FileStorage, RecoveryMode, Wal, WalConfig, WalError},
};
use serde::Serialize;

use super::{Channel, Format};

/// Largest raw body the journal keeps (a WAL record is at most 1 MiB; the rest is room
/// for the headers and the fields).
pub const BODY_BYTES_MAX: usize = (1 << 20) - (64 << 10);
/// Most headers kept with a delivery.
pub const HEADERS_MAX: usize = 32;
/// Longest header name plus value kept, bytes; longer headers are left out.
pub const HEADER_BYTES_MAX: usize = 1024;
/// Longest reason message, bytes (longer ones are cut at a character boundary).
pub const MESSAGE_BYTES_MAX: usize = 4096;
/// Format of the snapshot payload.
pub const SNAPSHOT_FORMAT: u8 = 1;
/// The journal's directory inside the data directory.
pub const DIR_NAME: &str = "intake";

const KIND_ACCEPTED: u8 = 1;
const KIND_SETTLED: u8 = 2;
const KIND_DEAD: u8 = 3;
const KIND_REQUEUED: u8 = 4;
const KIND_DISCARDED: u8 = 5;

/// Where a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /intake/{channel}`.
    Webhook,
    /// gRPC `IntakeService.Submit`.
    Grpc,
    /// NATS JetStream `pickline.intake.<channel>`.
    Nats,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 3] = [Source::Webhook, Source::Grpc, Source::Nats];

    /// Lower-case name (metrics labels, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Grpc => "grpc",
            Source::Nats => "nats",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Source::Webhook => 1,
            Source::Grpc => 2,
            Source::Nats => 3,
        }
    }

    fn from_tag(tag: u8, at: usize) -> Result<Source, DecodeError> {
        Source::ALL
            .into_iter()
            .find(|s| s.tag() == tag)
            .ok_or(DecodeError::Tag {
                what: "source",
                tag,
                at,
            })
    }
}

fn channel_tag(c: Channel) -> u8 {
    match c {
        Channel::Shopify => 1,
        Channel::Woocommerce => 2,
        Channel::Bigcommerce => 3,
        Channel::Magento => 4,
        Channel::Commercetools => 5,
    }
}

fn channel_from_tag(tag: u8, at: usize) -> Result<Channel, DecodeError> {
    Channel::ALL
        .into_iter()
        .find(|c| channel_tag(*c) == tag)
        .ok_or(DecodeError::Tag {
            what: "channel",
            tag,
            at,
        })
}

/// What decides an entry's place in the queue and a dead letter's place in the list:
/// paid orders first, then the nearest pickup, then the largest amount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    /// Paid (captured or authorized).
    pub paid: bool,
    /// Grand total in minor units, when known.
    pub total_minor: Option<i64>,
    /// Start of the requested pickup window, unix ms, when the order states one.
    pub pickup_at_ms: Option<i64>,
    /// `<order id>@<version>` when the payload became an order, else empty.
    pub order_ref: String,
}

/// One delivery as received: enough to evaluate and place it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Where it came from.
    pub source: Source,
    /// The channel.
    pub channel: Channel,
    /// The channel account.
    pub account: String,
    /// The headers kept (see [`keep_headers`]), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The raw body, exactly as received. Not serialized: callers decide how to show it.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// How `body` is read (a platform document, or a canonical order).
    pub format: Format,
    /// When it arrived, unix ms.
    pub received_at_ms: i64,
    /// Its priority.
    pub impact: Impact,
    /// Times an operator replayed it from the dead-letter queue (the sink's keys differ
    /// per replay, see [`super::sink::place`]).
    pub replays: u32,
}

/// A dead letter: a delivery intake could not turn into an engine order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Letter {
    /// The delivery.
    pub entry: Entry,
    /// Why, as a stable code (`insufficient_stock`, `unknown_sku`, a [`super::ReasonCode`],
    /// `retries_exhausted`, ...).
    pub reason: String,
    /// What exactly, for a person (never a customer's email or phone).
    pub message: String,
    /// Deliveries and placement attempts that failed for this letter.
    pub attempts: u32,
    /// First failure, unix ms.
    pub first_failure_ms: i64,
    /// Latest failure, unix ms.
    pub last_failure_ms: i64,
}

impl Letter {
    /// The incident this letter belongs to: letters with the same cause.
    pub fn cause(&self) -> (&str, &str) {
        (&self.reason, &self.message)
    }
}

/// A change to the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalRecord {
    /// Taken: durable before the sender is acknowledged.
    Accepted(Entry),
    /// Done with (placed, or nothing to do).
    Settled {
        /// The entry.
        id: u64,
    },
    /// Dead-lettered (a pending entry, a new letter, or a repeat of a known one).
    DeadLettered {
        /// The entry or letter; 0 for a new letter (it takes its record's LSN).
        id: u64,
        /// The letter as it now stands.
        letter: Letter,
    },
    /// Back into the queue.
    Requeued {
        /// The letter.
        id: u64,
    },
    /// Dropped by an operator.
    Discarded {
        /// The letter.
        id: u64,
    },
}

/// Set in an entry's source byte when its body is a canonical order ([`Format`]); entries
/// written before there were canonical orders lack it and read as platform documents.
const FORMAT_CANONICAL_BIT: u8 = 0x80;

fn encode_entry(e: &mut Enc<'_>, entry: &Entry) {
    e.u8(match entry.format {
        Format::Channel => entry.source.tag(),
        Format::Canonical => entry.source.tag() | FORMAT_CANONICAL_BIT,
    });
    e.u8(channel_tag(entry.channel));
    e.str(&entry.account);
    e.seq_len(entry.headers.len());
    for (k, v) in &entry.headers {
        e.str(k);
        e.str(v);
    }
    e.bytes(&entry.body);
    e.i64(entry.received_at_ms);
    e.bool(entry.impact.paid);
    e.opt_i64(entry.impact.total_minor);
    e.opt_i64(entry.impact.pickup_at_ms);
    e.str(&entry.impact.order_ref);
    e.u32(entry.replays);
}

fn decode_entry(d: &mut Dec<'_>) -> Result<Entry, DecodeError> {
    let at = d.pos();
    let tag = d.u8()?;
    let format = if tag & FORMAT_CANONICAL_BIT == 0 {
        Format::Channel
    } else {
        Format::Canonical
    };
    let source = Source::from_tag(tag & !FORMAT_CANONICAL_BIT, at)?;
    let at = d.pos();
    let channel = channel_from_tag(d.u8()?, at)?;
    let account = d.string()?;
    let n = d.seq_len()?;
    let mut headers = Vec::with_capacity(n.min(HEADERS_MAX));
    for _ in 0..n {
        headers.push((d.string()?, d.string()?));
    }
    let body = d.bytes()?.to_vec();
    Ok(Entry {
        source,
        channel,
        account,
        headers,
        body,
        format,
        received_at_ms: d.i64()?,
        impact: Impact {
            paid: d.bool()?,
            total_minor: d.opt_i64()?,
            pickup_at_ms: d.opt_i64()?,
            order_ref: d.string()?,
        },
        replays: d.u32()?,
    })
}

fn encode_letter(e: &mut Enc<'_>, l: &Letter) {
    encode_entry(e, &l.entry);
    e.str(&l.reason);
    e.str(&l.message);
    e.u32(l.attempts);
    e.i64(l.first_failure_ms);
    e.i64(l.last_failure_ms);
}

fn decode_letter(d: &mut Dec<'_>) -> Result<Letter, DecodeError> {
    Ok(Letter {
        entry: decode_entry(d)?,
        reason: d.string()?,
        message: d.string()?,
        attempts: d.u32()?,
        first_failure_ms: d.i64()?,
        last_failure_ms: d.i64()?,
    })
}

impl JournalRecord {
    /// The WAL kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            JournalRecord::Accepted(_) => KIND_ACCEPTED,
            JournalRecord::Settled { .. } => KIND_SETTLED,
            JournalRecord::DeadLettered { .. } => KIND_DEAD,
            JournalRecord::Requeued { .. } => KIND_REQUEUED,
            JournalRecord::Discarded { .. } => KIND_DISCARDED,
        }
    }

    /// Appends the payload (without the kind) to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut e = Enc::new(buf);
        match self {
            JournalRecord::Accepted(entry) => encode_entry(&mut e, entry),
            JournalRecord::Settled { id }
            | JournalRecord::Requeued { id }
            | JournalRecord::Discarded { id } => e.u64(*id),
            JournalRecord::DeadLettered { id, letter } => {
                e.u64(*id);
                encode_letter(&mut e, letter);
            }
        }
    }

    /// Decodes the payload of a record of `kind`. Never panics on any input.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<JournalRecord, DecodeError> {
        let mut d = Dec::new(payload);
        let record = match kind {
            KIND_ACCEPTED => JournalRecord::Accepted(decode_entry(&mut d)?),
            KIND_SETTLED => JournalRecord::Settled { id: d.u64()? },
            KIND_REQUEUED => JournalRecord::Requeued { id: d.u64()? },
            KIND_DISCARDED => JournalRecord::Discarded { id: d.u64()? },
            KIND_DEAD => JournalRecord::DeadLettered {
                id: d.u64()?,
                letter: decode_letter(&mut d)?,
            },
            tag => {
                return Err(DecodeError::Tag {
                    what: "journal record kind",
                    tag,
                    at: 0,
                });
            }
        };
        d.finish()?;
        Ok(record)
    }
}

/// Everything the journal knows: the pending entries and the dead letters, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    pending: BTreeMap<u64, Entry>,
    letters: BTreeMap<u64, Letter>,
}

impl JournalState {
    /// Applies `record`, appended at `lsn`.
    fn apply(&mut self, lsn: Lsn, record: JournalRecord) {
        match record {
            JournalRecord::Accepted(entry) => {
                self.pending.insert(lsn.0, entry);
            }
            JournalRecord::Settled { id } => {
                self.pending.remove(&id);
            }
            JournalRecord::DeadLettered { id, letter } => {
                self.pending.remove(&id);
                let id = if id == 0 { lsn.0 } else { id };
                self.letters.insert(id, letter);
            }
            JournalRecord::Requeued { id } => {
                if let Some(mut letter) = self.letters.remove(&id) {
                    letter.entry.replays = letter.entry.replays.saturating_add(1);
                    self.pending.insert(id, letter.entry);
                }
            }
            JournalRecord::Discarded { id } => {
                self.letters.remove(&id);
            }
        }
    }

    /// The pending entries, by id (oldest first).
    pub fn pending(&self) -> &BTreeMap<u64, Entry> {
        &self.pending
    }

    /// The dead letters, by id.
    pub fn letters(&self) -> &BTreeMap<u64, Letter> {
        &self.letters
    }

    /// The whole state as snapshot bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut e = Enc::new(&mut buf);
        e.u8(SNAPSHOT_FORMAT);
        e.seq_len(self.pending.len());
        for (id, entry) in &self.pending {
            e.u64(*id);
            encode_entry(&mut e, entry);
        }
        e.seq_len(self.letters.len());
        for (id, letter) in &self.letters {
            e.u64(*id);
            encode_letter(&mut e, letter);
        }
        buf
    }

    /// A state from snapshot bytes. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<JournalState, DecodeError> {
        let mut d = Dec::new(bytes);
        let at = d.pos();
        let format = d.u8()?;
        if format != SNAPSHOT_FORMAT {
            return Err(DecodeError::Tag {
                what: "journal snapshot format",
                tag: format,
                at,
            });
        }
        let mut state = JournalState::default();
        for _ in 0..d.seq_len()? {
            let id = d.u64()?;
            state.pending.insert(id, decode_entry(&mut d)?);
        }
        for _ in 0..d.seq_len()? {
            let id = d.u64()?;
            state.letters.insert(id, decode_letter(&mut d)?);
        }
        d.finish()?;
        Ok(state)
    }
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The log failed (I/O, fail-stop, closed).
    #[error("intake journal: {0}")]
    Wal(#[from] WalError),
    /// A file could not be opened or locked.
    #[error("intake journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process (a running `pickline serve`) has the journal open.
    #[error(
        "intake journal {0} is in use by another process (a running server?): use the gRPC IntakeService, or stop the server"
    )]
    Locked(PathBuf),
    /// A checksum-valid record or snapshot does not decode: refuse to start.
    #[error("intake journal: record {lsn} does not decode: {error}")]
    Corrupt {
        /// The record's LSN (0: the snapshot).
        lsn: u64,
        /// Why.
        error: DecodeError,
    },
    /// The record is larger than a WAL record may be.
    #[error("intake journal: a delivery of {0} bytes is too large to keep")]
    TooLarge(usize),
}

/// An exclusive advisory lock on the journal directory, released when dropped (and by the
/// kernel when the process dies, so a SIGKILL never leaves a stale lock).
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, JournalError> {
        use std::os::fd::AsRawFd as _;
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(JournalError::Locked(dir.to_owned()));
            }
            return Err(JournalError::Io { path, source: err });
        }
        Ok(DirLock { _file: file })
    }
}

/// The journal: the WAL plus the state it rebuilds. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Journal {
    wal: Wal,
    state: Mutex<JournalState>,
    /// WAL bytes written when the last snapshot was taken.
    bytes_at_checkpoint: std::sync::atomic::AtomicU64,
    _lock: DirLock,
}

impl Journal {
    /// Opens (and recovers) the journal in `<data_dir>/intake/`, creating it when absent.
    /// Blocking: call it from a blocking thread.
    pub fn open(data_dir: &Path, config: WalConfig) -> Result<Journal, JournalError> {
        let dir = data_dir.join(DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = DirLock::take(&dir)?;
        let storage = FileStorage::open(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        let (wal, recovery) = Wal::open(
            Arc::new(storage),
            config,
            RecoveryMode::TolerateTailCorruption,
        )?;
        let mut state = match &recovery.snapshot {
            Some(s) => JournalState::decode(&s.bytes)
                .map_err(|error| JournalError::Corrupt { lsn: 0, error })?,
            None => JournalState::default(),
        };
        for r in recovery.records.iter() {
            let record = JournalRecord::decode(r.kind, r.payload).map_err(|error| {
                JournalError::Corrupt {
                    lsn: r.lsn.0,
                    error,
                }
            })?;
            state.apply(r.lsn, record);
        }
        Ok(Journal {
            wal,
            state: Mutex::new(state),
            bytes_at_checkpoint: std::sync::atomic::AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// Appends `record` and applies it; returns its LSN (the new letter's or entry's id for
    /// `Accepted` and a new `DeadLettered`). Not durable yet: see [`Journal::durable`].
    pub fn append(&self, record: JournalRecord) -> Result<Lsn, JournalError> {
        let payload = Self::encoded(&record)?;
        let mut state = self.state.lock();
        self.append_locked(&mut state, record, &payload)
    }

    fn append_locked(
        &self,
        state: &mut JournalState,
        record: JournalRecord,
        payload: &[u8],
    ) -> Result<Lsn, JournalError> {
        let lsn = self
            .wal
            .append(record.kind(), |buf| buf.extend_from_slice(payload))?;
        state.apply(lsn, record);
        Ok(lsn)
    }

    fn encoded(record: &JournalRecord) -> Result<Vec<u8>, JournalError> {
        let mut payload = Vec::new();
        record.encode(&mut payload);
        if payload.len() > pickline_engine::wal::RECORD_PAYLOAD_LEN_MAX {
            return Err(JournalError::TooLarge(payload.len()));
        }
        Ok(payload)
    }

    /// Parks `entry` (pending as `from`, or a delivery never accepted) as a dead letter
    /// failing for `reason` at `now_ms`: a letter for the same delivery (same channel and
    /// account, and the same order and version, or the same bytes when it never became an
    /// order) is updated (attempts + 1, last failure) instead of made twice. The lookup and
    /// the records are one step under the state mutex, so two workers dead-lettering the
    /// same delivery at once make one letter. Returns the letter's id and the LSN to wait
    /// durable.
    pub fn dead_letter(
        &self,
        from: Option<u64>,
        entry: Entry,
        reason: &str,
        message: String,
        now_ms: i64,
    ) -> Result<(u64, Lsn), JournalError> {
        let mut state = self.state.lock();
        let known = state
            .letters()
            .iter()
            .find(|(_, l)| {
                l.entry.channel == entry.channel
                    && l.entry.account == entry.account
                    && if entry.impact.order_ref.is_empty() {
                        l.entry.body == entry.body
                    } else {
                        l.entry.impact.order_ref == entry.impact.order_ref
                    }
            })
            .map(|(id, l)| (*id, l.attempts, l.first_failure_ms, l.entry.replays));
        match known {
            Some((id, attempts, first_failure_ms, replays)) => {
                // A replay's keys must stay fresh: never go back to an earlier generation.
                let mut entry = entry;
                entry.replays = entry.replays.max(replays);
                let letter = JournalRecord::DeadLettered {
                    id,
                    letter: Letter {
                        entry,
                        reason: reason.to_owned(),
                        message,
                        attempts: attempts.saturating_add(1),
                        first_failure_ms,
                        last_failure_ms: now_ms,
                    },
                };
                let payload = Self::encoded(&letter)?;
                if let Some(from) = from.filter(|&f| f != id) {
                    let settled = JournalRecord::Settled { id: from };
                    let p = Self::encoded(&settled)?;
                    self.append_locked(&mut state, settled, &p)?;
                }
                let lsn = self.append_locked(&mut state, letter, &payload)?;
                Ok((id, lsn))
            }
            None => {
                let letter = JournalRecord::DeadLettered {
                    id: from.unwrap_or(0),
                    letter: Letter {
                        entry,
                        reason: reason.to_owned(),
                        message,
                        attempts: 1,
                        first_failure_ms: now_ms,
                        last_failure_ms: now_ms,
                    },
                };
                let payload = Self::encoded(&letter)?;
                let lsn = self.append_locked(&mut state, letter, &payload)?;
                Ok((from.unwrap_or(lsn.0), lsn))
            }
        }
    }

    /// Resolves once `lsn` is durable as the journal's durability mode promises.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), JournalError> {
        use pickline_engine::wal::Durability;
        match self.wal.config().durability {
            Durability::Sync => Ok(self.wal.durable(lsn).await?),
            Durability::Async { .. } | Durability::Off => match self.wal.failure() {
                Some(reason) => Err(WalError::FailStopped { reason }.into()),
                None => Ok(()),
            },
        }
    }

    /// Blocks until `lsn` is durable (for the CLI).
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), JournalError> {
        Ok(self.wal.wait_durable(lsn)?)
    }

    /// Reads the state.
    pub fn with_state<T>(&self, f: impl FnOnce(&JournalState) -> T) -> T {
        f(&self.state.lock())
    }

    /// WAL bytes written since the last snapshot.
    pub fn bytes_since_checkpoint(&self) -> u64 {
        self.wal.metrics().bytes_written.saturating_sub(
            self.bytes_at_checkpoint
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Writes a snapshot of the state (blocking), so the log behind it can go.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        let before = self.wal.metrics().bytes_written;
        let (lsn, bytes) = {
            let state = self.state.lock();
            let next = self.wal.next_lsn().0;
            (Lsn(next.saturating_sub(1)), state.encode())
        };
        if lsn.0 == 0 {
            return Ok(());
        }
        self.wal.write_snapshot(lsn, &bytes)?;
        self.bytes_at_checkpoint
            .store(before, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Flushes what is pending (shutdown).
    pub fn flush(&self) -> Result<(), JournalError> {
        Ok(self.wal.flush()?)
    }
}

/// The headers worth keeping with a delivery: everything but credentials and cookies, at
/// most [`HEADERS_MAX`], each at most [`HEADER_BYTES_MAX`] bytes, names lower-case.
pub fn keep_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (name, value) in headers {
        if kept.len() == HEADERS_MAX {
            break;
        }
        let name = name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "authorization" | "cookie" | "proxy-authorization"
        ) {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if name.len() + value.len() > HEADER_BYTES_MAX {
            continue;
        }
        kept.push((name, value.to_owned()));
    }
    kept
}

/// `message` cut to [`MESSAGE_BYTES_MAX`] at a character boundary.
pub fn bounded_message(message: &str) -> String {
    if message.len() <= MESSAGE_BYTES_MAX {
        return message.to_owned();
    }
    let mut end = MESSAGE_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8]) -> Entry {
        Entry {
            source: Source::Nats,
            channel: Channel::Magento,
            account: "acct".into(),
            headers: vec![("x-a".into(), "1".into())],
            body: body.to_vec(),
            format: Format::Channel,
            received_at_ms: 1_700_000_000_000,
            impact: Impact {
                paid: true,
                total_minor: Some(1999),
                pickup_at_ms: None,
                order_ref: "42@7".into(),
            },
            replays: 0,
        }
    }

    #[test]
    fn records_and_snapshots_round_trip() {
        let letter = Letter {
            entry: entry(b"{}"),
            reason: "unknown_sku".into(),
            message: "unknown SKU \"X\"".into(),
            attempts: 3,
            first_failure_ms: 1,
            last_failure_ms: 2,
        };
        let canonical = Entry {
            format: Format::Canonical,
            source: Source::Grpc,
            ..entry(b"\x0a\x01x")
        };
        let records = [
            JournalRecord::Accepted(entry(b"{\"id\":1}")),
            // A canonical order keeps its format (and its source) through the codec.
            JournalRecord::Accepted(canonical),
            JournalRecord::Settled { id: 9 },
            JournalRecord::DeadLettered {
                id: 0,
                letter: letter.clone(),
            },
            // Unknown ids change nothing.
            JournalRecord::Requeued { id: 30 },
            JournalRecord::Discarded { id: 40 },
        ];
        let mut state = JournalState::default();
        for (i, r) in records.iter().enumerate() {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            assert_eq!(JournalRecord::decode(r.kind(), &buf).as_ref(), Ok(r));
            // A truncated payload is an error, never a panic or a different record.
            if !buf.is_empty() {
                assert!(JournalRecord::decode(r.kind(), &buf[..buf.len() - 1]).is_err());
            }
            state.apply(Lsn(i as u64 + 1), r.clone());
        }
        assert_eq!(state.letters().len(), 1);
        assert!(state.letters().contains_key(&4));
        assert_eq!(state.pending().len(), 2);
        assert_eq!(JournalState::decode(&state.encode()), Ok(state.clone()));
        // Requeue moves the letter back; discard drops it.
        state.apply(Lsn(10), JournalRecord::Requeued { id: 4 });
        assert!(state.letters().is_empty());
        assert_eq!(state.pending().get(&4).map(|e| e.replays), Some(1));
        state.apply(Lsn(11), JournalRecord::Settled { id: 4 });
        state.apply(Lsn(12), JournalRecord::Discarded { id: 4 });
        assert_eq!(state.pending().len(), 2);
        assert_eq!(
            state.pending().get(&2).map(|e| (e.format, e.source)),
            Some((Format::Canonical, Source::Grpc))
        );
    }

    #[test]
    fn workers_dead_lettering_one_order_at_once_make_one_letter() {
        let dir =
            std::env::temp_dir().join(format!("pickline-journal-letters-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Arc::new(Journal::open(&dir, WalConfig::default()).unwrap());
        const ROUNDS: u32 = 200;
        // Each round: two deliveries of order 42@7 accepted, then both workers fail them
        // for good at the same moment (a barrier), plus a never-accepted delivery each.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (j, barrier) = (j.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let id = j.append(JournalRecord::Accepted(entry(b"{}"))).unwrap();
                        barrier.wait();
                        j.dead_letter(Some(id.0), entry(b"{}"), "unknown_sku", "x".into(), 5)
                            .unwrap();
                        let mut garbage = entry(b"not json");
                        garbage.impact = Impact::default();
                        j.dead_letter(None, garbage, "malformed", "y".into(), 6)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        j.with_state(|s| {
            assert_eq!(s.letters().len(), 2, "{:?}", s.letters().keys());
            let mut attempts: Vec<u32> = s.letters().values().map(|l| l.attempts).collect();
            attempts.sort_unstable();
            assert_eq!(attempts, vec![2 * ROUNDS, 2 * ROUNDS]);
            // Every accepted delivery ended as the one letter or settled into it.
            assert!(s.pending().is_empty(), "{:?}", s.pending().keys());
        });
        // Replaying the log gives the same state.
        let before = j.with_state(JournalState::clone);
        drop(j);
        let j = Journal::open(&dir, WalConfig::default()).unwrap();
        j.with_state(|s| assert_eq!(*s, before));
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_survives_reopen_and_locks_its_directory() {
        let dir = std::env::temp_dir().join(format!("pickline-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let j = Journal::open(&dir, WalConfig::default()).unwrap();
        assert!(matches!(
            Journal::open(&dir, WalConfig::default()),
            Err(JournalError::Locked(_))
        ));
        let a = j.append(JournalRecord::Accepted(entry(b"a"))).unwrap();
        let b = j.append(JournalRecord::Accepted(entry(b"b"))).unwrap();
        j.append(JournalRecord::Settled { id: a.0 }).unwrap();
        j.checkpoint().unwrap();
        let c = j.append(JournalRecord::Accepted(entry(b"c"))).unwrap();
        j.wait_durable(c).unwrap();
        let before = j.with_state(JournalState::clone);
        drop(j);
        let j = Journal::open(&dir, WalConfig::default()).unwrap();
        j.with_state(|s| {
            assert_eq!(*s, before);
            assert_eq!(s.pending().keys().copied().collect::<Vec<_>>(), [b.0, c.0]);
        });
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
