//! The leader's half of the replicated log: records shipped to the partition's JetStream
//! stream in batches, and the gate every acknowledgement waits at.
//!
//! The engine appends its records to its event stream as usual (under its locks, in LSN
//! order). The [`Shipper`] reads them from there (an in-memory consumer), packs whatever
//! has accumulated into one message (group commit: while one batch waits for JetStream's
//! acknowledgement, the next one fills) and publishes it with
//! `Nats-Expected-Last-Sequence` set to the stream sequence of its previous message.
//! JetStream stores a message only if the stream's last sequence is the one expected,
//! so exactly one writer can extend the stream from any given sequence, and the
//! replicated log is exactly the prefix this leader and its predecessors wrote.
//!
//! Architecture invariant: a client is answered only after [`Gate::replicated`] saw
//! JetStream acknowledge a message containing its newest record (and, the stream being
//! a prefix, every record before it). A publish that times out is retried with the same
//! message id and expected sequence: JetStream stores it at most once.
//!
//! **Fencing.** An append refused with "wrong last sequence" means another node wrote
//! after our last message, unless that message is our own batch (an acknowledgement
//! lost on the way back): the shipper reads the message at the expected position and
//! compares its id. Anything else means a newer leader fenced this one: the gate fails
//! for good (every waiting and later request gets an error, never an acknowledgement)
//! and the node steps down ([`crate::cluster::node`]).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{RawMessageErrorKind, Stream},
};
use bytes::Bytes;
use pickline_engine::{EventStream, Lsn};
use tokio::sync::{Notify, watch};

use super::wire;

/// The event-stream consumer name the shipper reads as (in memory only).
pub const SHIPPER_CONSUMER: &str = "cluster-replicator";

/// Records read from the event stream per batch, at most.
const RECORDS_PER_BATCH_MAX: usize = 8_192;

/// How often the shipper looks for records nobody waits for yet (the expiry ticker's,
/// for example); records somebody waits for wake it at once.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// First pause before retrying a failed publish; doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
/// Longest pause between retries of a failed publish.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Default)]
struct GateState {
    /// Every record up to here is in the stream, acknowledged by JetStream.
    acked: Lsn,
    /// The stream sequence of the message that ends at `acked` (or of the fence).
    seq: u64,
    /// Why the shipper is retrying now (a publish failed and has not succeeded since),
    /// and since when.
    trouble: Option<(Arc<str>, std::time::Instant)>,
    /// Why this node stopped leading: nothing after `acked` will ever be acknowledged.
    failure: Option<Arc<str>>,
    /// Set while the lease has not been renewed for a whole lease time (by this node's
    /// clock): another node may lead by now.
    lease_trouble: Option<Arc<str>>,
}

/// Why a record was not (or not yet) acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicationError {
    /// This node no longer leads the partition; the record will never be acknowledged
    /// here (the new leader has everything that was).
    #[error("this node no longer leads the partition: {0}")]
    Deposed(Arc<str>),
    /// JetStream did not acknowledge in time; the outcome is unknown until it does.
    #[error(
        "the replicated log did not acknowledge within {timeout_ms} ms{}; the outcome is \
         unknown: retry with the same idempotency key",
        .trouble.as_ref().map(|t| format!(" ({t})")).unwrap_or_default()
    )]
    TimedOut {
        /// The timeout.
        timeout_ms: u64,
        /// The publish failure being retried, if any.
        trouble: Option<Arc<str>>,
    },
}

/// Where acknowledgements wait for replication. Shared by the shipper and every request.
#[derive(Debug)]
pub struct Gate {
    state: watch::Sender<GateState>,
    wake: Notify,
    timeout: Duration,
}

impl Gate {
    /// A gate whose records up to `acked` are replicated already, the last of them in
    /// stream message `seq` (or before it).
    pub fn new(acked: Lsn, seq: u64, timeout: Duration) -> Arc<Gate> {
        Arc::new(Gate {
            state: watch::Sender::new(GateState {
                acked,
                seq,
                ..GateState::default()
            }),
            wake: Notify::new(),
            timeout,
        })
    }

    /// Waits until the record `lsn` (and so every record before it) is in the stream.
    pub async fn replicated(&self, lsn: Lsn) -> Result<(), ReplicationError> {
        let mut rx = self.state.subscribe();
        if rx.borrow().acked >= lsn {
            return Ok(());
        }
        // A permit is kept if the shipper is busy: it looks again right after.
        self.wake.notify_one();
        // `wait_for` answers with a read guard of the state: it is dropped here, before
        // the state is read again. Holding it across a second read deadlocked the leader
        // under load: the lock is fair, so the second read queues behind a writer
        // (`advance`) that waits for the first to end.
        let waited = tokio::time::timeout(
            self.timeout,
            rx.wait_for(|s| s.acked >= lsn || s.failure.is_some()),
        )
        .await
        .map(|seen| seen.map(drop));
        let s = self.state.borrow().clone();
        if s.acked >= lsn {
            return Ok(());
        }
        match (waited, s.failure) {
            (_, Some(why)) => Err(ReplicationError::Deposed(why)),
            _ => Err(ReplicationError::TimedOut {
                timeout_ms: self.timeout.as_millis() as u64,
                trouble: s.trouble.map(|(why, _)| why),
            }),
        }
    }

    /// The newest LSN in the stream.
    pub fn acked(&self) -> Lsn {
        self.state.borrow().acked
    }

    /// The newest LSN in the stream and the sequence of the message it ends, read
    /// together (a snapshot of the state at or after that LSN may start standbys there).
    pub fn position(&self) -> (Lsn, u64) {
        let s = self.state.borrow();
        (s.acked, s.seq)
    }

    /// Resolves once this node stopped leading, with why.
    pub async fn deposed(&self) -> Arc<str> {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| s.failure.is_some()).await {
            Ok(s) => s.failure.clone().unwrap_or_else(|| "deposed".into()),
            // The sender lives in `self`: never dropped while this borrows it.
            Err(_) => "the replication gate closed".into(),
        }
    }

    /// Why publishing has failed for longer than the replication timeout, if it has: the
    /// admission layer then refuses new requests at once instead of piling them up
    /// (shorter trouble, such as a stream leader election, only delays answers).
    /// Also while the lease could not be renewed for a lease time
    /// ([`Gate::set_lease_trouble`]), even with nothing to publish.
    pub fn trouble(&self) -> Option<Arc<str>> {
        let s = self.state.borrow();
        match (&s.trouble, &s.lease_trouble) {
            (Some((why, since)), _) if since.elapsed() >= self.timeout => Some(why.clone()),
            (_, Some(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// Says whether the lease has gone unrenewed for a lease time (`Some(why)`) or was
    /// renewed again (`None`).
    pub(super) fn set_lease_trouble(&self, why: Option<&str>) {
        self.state.send_if_modified(|s| {
            let new = why.map(Arc::<str>::from);
            if s.lease_trouble == new {
                return false;
            }
            s.lease_trouble = new;
            true
        });
    }

    /// Why this node stopped leading, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.state.borrow().failure.clone()
    }

    /// Stops acknowledging, for good.
    pub fn fail(&self, why: &str) {
        self.state.send_modify(|s| {
            if s.failure.is_none() {
                s.failure = Some(why.into());
            }
        });
    }

    fn advance(&self, acked: Lsn, seq: u64) {
        self.state.send_modify(|s| {
            assert!(
                acked >= s.acked && seq > s.seq,
                "replicated position went back"
            );
            s.acked = acked;
            s.seq = seq;
            s.trouble = None;
        });
    }

    fn set_trouble(&self, why: String) {
        self.state.send_modify(|s| {
            let since = s
                .trouble
                .as_ref()
                .map_or_else(std::time::Instant::now, |(_, since)| *since);
            s.trouble = Some((why.into(), since));
        });
    }
}

/// Ships the leader's records to the partition's stream. See the module documentation.
#[derive(Debug)]
pub struct Shipper {
    /// The JetStream context (its timeout bounds one publish attempt).
    pub js: jetstream::Context,
    /// The partition's stream (to read a message back after "wrong last sequence").
    pub stream: Stream,
    /// The partition.
    pub partition: String,
    /// This leader's epoch.
    pub epoch: u64,
    /// The stream sequence of the last message (this leader's fence at first).
    pub last_seq: u64,
    /// The engine's event stream.
    pub events: Arc<EventStream>,
    /// The last LSN in the stream.
    pub cursor: Lsn,
    /// The gate requests wait at.
    pub gate: Arc<Gate>,
    /// The server's `max_payload`: no message may be larger.
    pub max_payload: usize,
}

impl Shipper {
    /// Ships until this node is deposed (or the log cannot go on); returns why, after
    /// failing the gate with it.
    pub async fn run(mut self) -> String {
        let why = self.ship().await;
        self.gate.fail(&why);
        why
    }

    async fn ship(&mut self) -> String {
        if let Err(e) = self.events.register_consumer(SHIPPER_CONSUMER) {
            return format!("cannot read the engine's records: {e}");
        }
        let subject = wire::subject(&self.partition);
        let limit = wire::BATCH_BYTES_MAX.min(self.max_payload.saturating_sub(4096));
        loop {
            let records =
                match self
                    .events
                    .read(SHIPPER_CONSUMER, self.cursor, RECORDS_PER_BATCH_MAX)
                {
                    Ok(records) => records,
                    Err(e) => return format!("records were lost before they were replicated: {e}"),
                };
            let Some(head) = records.first() else {
                tokio::select! {
                    () = self.gate.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            };
            if head.lsn.0 != self.cursor.0 + 1 {
                return format!(
                    "the engine's records jump from {} to {}",
                    self.cursor, head.lsn
                );
            }
            let first = head.lsn;
            let mut payload = Vec::with_capacity(64 * 1024);
            let mut last = self.cursor;
            for r in &records {
                let before = payload.len();
                wire::push_record(&mut payload, &r.record);
                if payload.len() > limit {
                    if last == self.cursor {
                        return format!(
                            "record {} is {} bytes, above what one NATS message carries \
                             ({} bytes): raise the servers' max_payload",
                            r.lsn,
                            payload.len(),
                            limit
                        );
                    }
                    payload.truncate(before);
                    break;
                }
                last = r.lsn;
            }
            match self
                .publish(
                    &subject,
                    (first, last.0 - first.0 + 1),
                    Bytes::from(payload),
                )
                .await
            {
                Ok(seq) => {
                    self.last_seq = seq;
                    self.cursor = last;
                    self.events.ack(SHIPPER_CONSUMER, last);
                    self.gate.advance(last, seq);
                    metrics::counter!("pickline_cluster_batches_total").increment(1);
                    metrics::gauge!("pickline_cluster_replicated_lsn").set(last.0 as f64);
                }
                Err(why) => return why,
            }
        }
    }

    /// Publishes one batch until JetStream stores it (`Ok(sequence)`) or refuses it for
    /// good (`Err(why)`: deposed).
    async fn publish(
        &self,
        subject: &str,
        (first, records): (Lsn, u64),
        payload: Bytes,
    ) -> Result<u64, String> {
        let headers = wire::headers(&self.partition, self.epoch, Some((first, records)));
        let id = wire::batch_id(&self.partition, self.epoch, first);
        let expected = self.last_seq;
        let mut pause = RETRY_PAUSE_MIN;
        loop {
            if let Some(why) = self.gate.failure() {
                return Err(why.to_string());
            }
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .expected_last_sequence(expected);
            let outcome = match self.js.send_publish(subject.to_owned(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let trouble = match outcome {
                Ok(ack) if ack.sequence == expected + 1 => return Ok(ack.sequence),
                Ok(ack) => {
                    return Err(format!(
                        "JetStream stored batch {id} at sequence {}, expected {}",
                        ack.sequence,
                        expected + 1
                    ));
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    match self.stream.get_raw_message(expected + 1).await {
                        Ok(m) => {
                            let theirs = m
                                .headers
                                .get(wire::MSG_ID_HEADER)
                                .map(|v| v.as_str().to_owned())
                                .unwrap_or_default();
                            if theirs == id {
                                return Ok(expected + 1);
                            }
                            return Err(format!(
                                "deposed: the stream's message {} is {theirs:?}, written by \
                                 another leader",
                                expected + 1
                            ));
                        }
                        Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => {
                            return Err(format!(
                                "the stream has no message {} although it refused that \
                                 position: it was purged or recreated",
                                expected + 1
                            ));
                        }
                        Err(e) => format!("reading back message {}: {e}", expected + 1),
                    }
                }
                Err(e) => format!("publishing batch {id}: {e}"),
            };
            tracing::warn!(trouble = %trouble, "replication retrying");
            self.gate.set_trouble(trouble);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests waiting while the shipper advances back to back, from another thread as
    /// the real shipper does: every wait ends. A request once read the state again while
    /// still holding the guard `wait_for` had answered with; with the shipper's write
    /// queued between the two reads (the lock is fair), each waited for the other and the
    /// leader's workers hung (found by `pickline bench cluster`).
    #[test]
    fn waiters_and_the_shipper_never_deadlock() {
        const RECORDS: u64 = 1_000_000;
        let gate = Gate::new(Lsn(0), 0, Duration::from_secs(30));
        let (tx, rx) = std::sync::mpsc::channel();
        let g = gate.clone();
        // On its own threads: a deadlock hangs them; the test thread only waits for the
        // answer, with a limit.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let shipper = {
                let g = g.clone();
                std::thread::spawn(move || {
                    for lsn in 1..=RECORDS {
                        g.advance(Lsn(lsn), lsn);
                    }
                })
            };
            runtime.block_on(async {
                let waiters: Vec<_> = (0..8)
                    .map(|_| {
                        let gate = g.clone();
                        tokio::spawn(async move {
                            // Always one past what is acknowledged: every call waits.
                            // `acked` is read once per turn: read twice, the shipper's last
                            // advance could fall between the reads and the waiter would
                            // wait for a record past the last (the test hung one run in
                            // five that way, with nothing deadlocked).
                            loop {
                                let acked = gate.acked();
                                if acked >= Lsn(RECORDS) {
                                    break;
                                }
                                gate.replicated(Lsn(acked.0 + 1)).await.expect("replicated");
                            }
                        })
                    })
                    .collect();
                for w in waiters {
                    w.await.expect("waiter");
                }
            });
            shipper.join().expect("shipper");
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "waiters and the shipper deadlocked"
        );
        assert_eq!(gate.acked(), Lsn(RECORDS));
    }
}
