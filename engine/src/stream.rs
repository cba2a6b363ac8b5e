//! The event stream: every record the engine logs, in LSN order, kept in memory for
//! consumers (notifications, webhooks, broker publishing, KPIs), each with its own cursor.
//!
//! [`EventStream`] is an [`EventLog`] decorator: the engine writes to it, it forwards to the
//! real log and keeps a copy. One mutex is held across the inner append and the buffer push,
//! so the buffer is in LSN order whatever the threads do.
//!
//! - **Cursors are durable through the log.** [`Engine::ack_consumer`] appends
//!   [`Event::ConsumerAcked`]; the stream moves the cursor when it sees that event, live or
//!   during recovery ([`EventStream::replayed`]), so a restart restores every cursor.
//! - **So is registration.** A consumer's durable cursor is the durable record that it
//!   was registered (there is no unregistering): after recovery
//!   [`crate::durable::DurableEngine::open`] registers every consumer that has one
//!   ([`EventStream::register_known`]), so it reads on without registering again. A
//!   caller that registers a consumer and needs it to survive a restart before its first
//!   acknowledgement acknowledges its start position (the sidecar's RegisterConsumer
//!   does).
//! - **Retention.** A record is kept until every registered consumer has acknowledged it,
//!   but never more than `retained_max` events in all (a record of many events, such as a
//!   batch of holds, counts each; the newest record is always kept). Beyond that the
//!   oldest records are dropped
//!   even if a slow consumer has not read them: that consumer's next [`EventStream::read`]
//!   is [`StreamError::Truncated`] and it must resynchronize. Memory stays bounded.
//! - **Restarts.** Checkpoints keep the log segments back to the slowest durable cursor
//!   (up to `WalConfig::consumer_retention_len_max` bytes), and
//!   [`crate::durable::DurableEngine::open`] reads those records back into the stream
//!   ([`EventStream::backfill`]), so a consumer that lagged behind the snapshot continues
//!   where it acknowledged. One lagging beyond that cap gets `Truncated`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;

use crate::engine::commit::Decision;
use crate::engine::{Engine, check_id};
use crate::error::EngineError;
use crate::event::{Event, LoggedRecord, Record};
use crate::log::EventLog;
use crate::types::{Lsn, Timestamp};

/// Default bound on events kept in memory.
pub const STREAM_RETAINED_MAX: usize = 1 << 20;

/// Records the buffer reserves room for up front, at most (a larger bound grows beyond it).
const STREAM_PREALLOC_MAX: usize = (1 << 20) + 1;

/// Registered consumers at most.
pub const STREAM_CONSUMERS_MAX: usize = 64;

/// Longest consumer name, in bytes.
pub const CONSUMER_NAME_LEN_MAX: usize = 64;

/// Why a stream read or registration failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    /// The consumer is not registered.
    #[error("unknown consumer `{0}`")]
    UnknownConsumer(String),
    /// Records after the requested LSN were dropped by the retention bound; read the
    /// write-ahead log from `after` up to `oldest` first.
    #[error("records after {after} were dropped; the oldest kept is {oldest}")]
    Truncated {
        /// The LSN asked for.
        after: u64,
        /// The oldest LSN still in memory.
        oldest: u64,
    },
    /// [`STREAM_CONSUMERS_MAX`] consumers are registered already.
    #[error("too many consumers (at most {STREAM_CONSUMERS_MAX})")]
    TooManyConsumers,
}

#[derive(Debug, Default)]
struct Inner {
    buf: VecDeque<LoggedRecord>,
    /// Events of the records in `buf`: what `retained_max` bounds.
    events: usize,
    /// Acknowledged LSN per consumer. Cursors of consumers seen in the log but not (yet)
    /// registered are kept too, so a registration after recovery starts where it left off.
    cursors: BTreeMap<String, Lsn>,
    registered: BTreeMap<String, ()>,
    /// Last LSN dropped from the buffer (0: nothing dropped).
    dropped_through: Lsn,
    last: Lsn,
}

/// An [`EventLog`] decorator that keeps the records for consumers.
pub struct EventStream {
    inner_log: Arc<dyn EventLog>,
    retained_max: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.inner.lock();
        f.debug_struct("EventStream")
            .field("records", &i.buf.len())
            .field("consumers", &i.registered.len())
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// A stream in front of `inner`, keeping at most `retained_max` events (at least one
    /// record).
    pub fn new(inner: Arc<dyn EventLog>, retained_max: usize) -> Self {
        let last = inner.last_lsn();
        Self::starting_after(inner, retained_max, last)
    }

    /// A stream whose first record will be `start + 1`: for recovery, where the records
    /// after the snapshot at `start` are fed in with [`EventStream::replayed`].
    pub fn starting_after(inner: Arc<dyn EventLog>, retained_max: usize, last: Lsn) -> Self {
        let retained_max = retained_max.max(1);
        EventStream {
            inner_log: inner,
            retained_max,
            inner: Mutex::new(Inner {
                // Room for the bound (plus the one record pushed before trimming) up front:
                // growing a full ring copies every record under the lock each engine append
                // takes, a stall of milliseconds for every writer at each doubling. The
                // memory is only reserved: pages are touched as records arrive.
                buf: VecDeque::with_capacity(
                    retained_max.saturating_add(1).min(STREAM_PREALLOC_MAX),
                ),
                dropped_through: last,
                last,
                ..Inner::default()
            }),
        }
    }

    /// Registers a consumer (idempotent). A new consumer starts at its durable cursor if
    /// the log has one, else at the oldest record kept.
    pub fn register_consumer(&self, name: &str) -> Result<Lsn, StreamError> {
        let mut i = self.inner.lock();
        if !i.registered.contains_key(name) {
            if i.registered.len() >= STREAM_CONSUMERS_MAX {
                return Err(StreamError::TooManyConsumers);
            }
            i.registered.insert(name.to_owned(), ());
        }
        let start = i.dropped_through;
        Ok(*i.cursors.entry(name.to_owned()).or_insert(start))
    }

    /// Registers every consumer that has a cursor, at most [`STREAM_CONSUMERS_MAX`] in
    /// all (in name order; the rest stay unregistered, as a registration beyond the bound
    /// would). Recovery calls it once the cursors are restored and the stream is
    /// backfilled. Returns how many consumers are registered.
    pub fn register_known(&self) -> usize {
        let mut i = self.inner.lock();
        let names: Vec<String> = i.cursors.keys().cloned().collect();
        for name in names {
            if i.registered.len() >= STREAM_CONSUMERS_MAX {
                break;
            }
            i.registered.entry(name).or_default();
        }
        self.trim(&mut i);
        i.registered.len()
    }

    /// Up to `max` whole records with LSN greater than `after_lsn`, in LSN order.
    pub fn read(
        &self,
        consumer: &str,
        after_lsn: Lsn,
        max: usize,
    ) -> Result<Vec<LoggedRecord>, StreamError> {
        let i = self.inner.lock();
        if !i.registered.contains_key(consumer) {
            return Err(StreamError::UnknownConsumer(
                consumer.chars().take(64).collect(),
            ));
        }
        if after_lsn < i.dropped_through {
            return Err(StreamError::Truncated {
                after: after_lsn.0,
                oldest: i.dropped_through.0 + 1,
            });
        }
        let start = i.buf.partition_point(|r| r.lsn <= after_lsn);
        Ok(i.buf.iter().skip(start).take(max).cloned().collect())
    }

    /// Moves a consumer's cursor in memory only. Use [`Engine::ack_consumer`] for a
    /// durable acknowledgement (it calls this through the logged event).
    pub fn ack(&self, consumer: &str, lsn: Lsn) {
        let mut i = self.inner.lock();
        let c = i.cursors.entry(consumer.to_owned()).or_default();
        *c = (*c).max(lsn);
        self.trim(&mut i);
    }

    /// A consumer's acknowledged LSN.
    pub fn cursor(&self, consumer: &str) -> Option<Lsn> {
        self.inner.lock().cursors.get(consumer).copied()
    }

    /// Every known cursor (for a snapshot; restore with [`EventStream::ack`]).
    pub fn cursors(&self) -> Vec<(String, Lsn)> {
        self.inner
            .lock()
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Records kept in memory now.
    pub fn retained(&self) -> usize {
        self.inner.lock().buf.len()
    }

    /// Feeds a record read back during recovery (before the engine takes new writes), so
    /// the stream holds it and restores the cursors it acknowledges. Records at or below
    /// the last LSN seen are ignored.
    pub fn replayed(&self, rec: &LoggedRecord) {
        let _ = self.replayed_owned(rec.clone(), 0);
    }

    /// [`EventStream::replayed`] taking the record by value (recovery decodes each record
    /// once and hands it over). `following` is how many records recovery feeds after this
    /// one: when at least `retained_max` follow (each has an event at least), the buffer
    /// would drop this record before recovery ends, so it is not stored at all: a record acknowledging nothing is not
    /// even looked at (no lock), one with acknowledgements moves the cursors. Once the
    /// last record is fed, the stream is exactly as if every record had been pushed and
    /// trimmed.
    ///
    /// A record the stream does not keep is handed back, so that the caller chooses where
    /// it is dropped (recovery drops it on the thread that decoded it).
    pub fn replayed_owned(&self, rec: LoggedRecord, following: u64) -> Option<LoggedRecord> {
        let skipped = following >= self.retained_max as u64;
        if skipped && !has_acks(&rec) {
            return Some(rec);
        }
        let mut i = self.inner.lock();
        if rec.lsn <= i.last {
            return Some(rec);
        }
        if skipped {
            i.last = rec.lsn;
            note_acks(&mut i, &rec);
            // Pushed, then trimmed off the front at once: every record before it is gone.
            i.buf.clear();
            i.events = 0;
            i.dropped_through = rec.lsn;
            return Some(rec);
        }
        if i.buf.is_empty() {
            // Every record from here on is kept (until trimmed): grow the buffer once.
            let kept = (following as usize)
                .saturating_add(1)
                .min(self.retained_max);
            i.buf.reserve(kept);
        }
        self.push(&mut i, rec);
        None
    }

    /// Puts records older than any the stream holds back in front of them: after a
    /// restart, the records between a lagging consumer's durable cursor and the snapshot,
    /// read back from the write-ahead log files. `records` must be contiguous and end
    /// right before the oldest record kept; otherwise nothing changes and `false` is
    /// returned. `retained_max` still bounds what is kept.
    pub fn backfill(&self, records: Vec<LoggedRecord>) -> bool {
        let mut i = self.inner.lock();
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return true;
        };
        let contiguous = records.windows(2).all(|w| w[1].lsn.0 == w[0].lsn.0 + 1);
        if !contiguous || last.lsn != i.dropped_through {
            return false;
        }
        i.dropped_through = Lsn(first.lsn.0 - 1);
        for rec in records.into_iter().rev() {
            for ev in &rec.record.events {
                if let Event::ConsumerAcked { consumer, lsn } = ev {
                    let c = i.cursors.entry(consumer.clone()).or_default();
                    *c = (*c).max(*lsn);
                }
            }
            i.events += rec.record.events.len();
            i.buf.push_front(rec);
        }
        self.trim(&mut i);
        true
    }

    fn push(&self, i: &mut Inner, rec: LoggedRecord) {
        i.last = rec.lsn;
        if i.buf.is_empty() {
            i.dropped_through = Lsn(rec.lsn.0.saturating_sub(1)).max(i.dropped_through);
        }
        note_acks(i, &rec);
        i.events += rec.record.events.len();
        i.buf.push_back(rec);
        self.trim(i);
    }

    fn trim(&self, i: &mut Inner) {
        // Keep what the slowest registered consumer has not acknowledged; with no consumer
        // registered, keep up to the bound so a consumer registering soon still sees them.
        let slowest = i
            .registered
            .keys()
            .map(|k| i.cursors.get(k).copied().unwrap_or_default())
            .min();
        while let Some(front) = i.buf.front() {
            let acked = slowest.is_some_and(|s| front.lsn <= s);
            let within = i.events <= self.retained_max || i.buf.len() == 1;
            if !acked && within {
                break;
            }
            let (lsn, events) = (front.lsn, front.record.events.len());
            i.buf.pop_front();
            i.events -= events;
            i.dropped_through = lsn;
        }
    }
}

fn has_acks(rec: &LoggedRecord) -> bool {
    rec.record
        .events
        .iter()
        .any(|ev| matches!(ev, Event::ConsumerAcked { .. }))
}

/// Moves the cursors of the consumers `rec` acknowledges.
fn note_acks(i: &mut Inner, rec: &LoggedRecord) {
    for ev in &rec.record.events {
        if let Event::ConsumerAcked { consumer, lsn } = ev {
            let c = i.cursors.entry(consumer.clone()).or_default();
            *c = (*c).max(*lsn);
        }
    }
}

impl EventLog for EventStream {
    fn append(&self, record: &Record) -> Result<Lsn, EngineError> {
        self.append_shared(&Arc::new(record.clone()))
    }

    fn append_shared(&self, record: &Arc<Record>) -> Result<Lsn, EngineError> {
        let mut i = self.inner.lock();
        let lsn = self.inner_log.append(record)?;
        self.push(
            &mut i,
            LoggedRecord {
                lsn,
                record: record.clone(),
            },
        );
        Ok(lsn)
    }

    fn wait_durable(&self, lsn: Lsn) -> Result<(), EngineError> {
        self.inner_log.wait_durable(lsn)
    }

    fn last_lsn(&self) -> Lsn {
        self.inner_log.last_lsn()
    }
}

impl Engine {
    /// Durably acknowledges that `consumer` has processed every record up to `lsn`: logs
    /// [`Event::ConsumerAcked`], which an [`EventStream`] in the log chain (live or in
    /// recovery) turns into the consumer's cursor.
    pub fn ack_consumer(
        &self,
        consumer: &str,
        lsn: Lsn,
        now: Timestamp,
    ) -> Result<Lsn, EngineError> {
        check_id("consumer", consumer, CONSUMER_NAME_LEN_MAX)?;
        if lsn > self.log().last_lsn() {
            return Err(EngineError::invalid("lsn", "beyond the last logged record"));
        }
        let events = vec![Event::ConsumerAcked {
            consumer: consumer.to_owned(),
            lsn,
        }];
        let (at, _) = self.mutate(
            || Ok(()),
            |_| Ok(Decision::Log(Arc::new(Record { at: now, events }), ())),
            |_, record, at, ()| {
                // The change replay makes for `ConsumerAcked`.
                self.replay(&record)?;
                Ok(at)
            },
        )?;
        Ok(at)
    }
}
