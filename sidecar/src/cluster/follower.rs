//! A standby's half of the replicated log: the partition's stream applied to an engine
//! of its own with the replay code recovery uses ([`Engine::replay`], which takes the
//! same locks as live operations, so readers may read the engine while it applies), so
//! at every stream sequence the standby's state is the state the leader had after the
//! same records. A standby answers reads from it ([`StandbyView`]) with the last applied
//! LSN as their `as_of_seq`.
//!
//! A follower starts from the partition's latest snapshot in the object store (or the
//! empty state) and applies the messages after it. It checks what it reads: LSNs
//! contiguous across messages, and every batch written in the epoch of the fence before
//! it (a batch of another epoch would mean two writers, which fencing rules out).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    object_store::ObjectStore,
    stream::Stream,
};
use futures_util::StreamExt as _;
use pickline_engine::{Engine, EngineConfig, Lsn, NoLog, wal::format};
use tokio::io::AsyncReadExt as _;

use super::{ClusterError, wire};

/// An engine fed from the partition's stream.
pub struct Follower {
    engine: Arc<Engine>,
    /// Every record up to here is applied.
    applied_lsn: Lsn,
    /// `applied_lsn` as readers see it ([`StandbyView::read_point`]): stored after the
    /// record is applied.
    published_lsn: Arc<AtomicU64>,
    /// Every stream message up to here is applied.
    applied_seq: u64,
    /// The epoch of the newest fence applied (0: none yet).
    epoch: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("applied_lsn", &self.applied_lsn)
            .field("applied_seq", &self.applied_seq)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A standby's state as its readers see it: the engine the stream is applied to and the
/// last LSN applied. Cheap to clone.
#[derive(Clone)]
pub struct StandbyView {
    engine: Arc<Engine>,
    published_lsn: Arc<AtomicU64>,
}

impl std::fmt::Debug for StandbyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandbyView")
            .field("read_point", &self.read_point())
            .finish_non_exhaustive()
    }
}

impl StandbyView {
    /// The engine (read it only: its records come from the stream).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The last applied LSN, read before a read: every record up to it is in what is read
    /// after it (the same promise as the leader's log head, in the same LSN numbering).
    pub fn read_point(&self) -> Lsn {
        Lsn(self.published_lsn.load(Ordering::Acquire))
    }
}

/// A snapshot as the object store keeps it: the stream sequence of the message holding
/// its last record (8 bytes, little-endian), then the snapshot in the write-ahead log's
/// snapshot file format (magic, version, LSN, length, CRC, payload), so a damaged
/// object is refused, never loaded.
pub fn encode_snapshot(seq: u64, lsn: Lsn, state: &[u8]) -> Result<Vec<u8>, ClusterError> {
    let file = format::encode_snapshot(lsn, state)
        .map_err(|e| ClusterError::Corrupt(format!("snapshot does not encode: {e}")))?;
    let mut out = Vec::with_capacity(8 + file.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&file);
    Ok(out)
}

/// Reads [`encode_snapshot`]'s bytes: `(seq, lsn, state)`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Lsn, &[u8]), ClusterError> {
    let Some((seq, file)) = bytes.split_first_chunk::<8>() else {
        return Err(ClusterError::Corrupt("snapshot object too short".into()));
    };
    let (lsn, state) = format::decode_snapshot(file)
        .map_err(|e| ClusterError::Corrupt(format!("snapshot object: {e}")))?;
    Ok((u64::from_le_bytes(*seq), lsn, state))
}

impl Follower {
    /// A follower at the empty state.
    pub fn empty(config: EngineConfig) -> Result<Follower, ClusterError> {
        let engine = Engine::with_log(config, Arc::new(NoLog::default()))
            .map_err(|e| ClusterError::Engine(e.to_string()))?;
        Ok(Follower {
            engine: Arc::new(engine),
            applied_lsn: Lsn::ZERO,
            published_lsn: Arc::default(),
            applied_seq: 0,
            epoch: 0,
        })
    }

    /// A follower at a snapshot ([`decode_snapshot`]'s parts).
    pub fn at_snapshot(
        config: EngineConfig,
        seq: u64,
        lsn: Lsn,
        state: &[u8],
    ) -> Result<Follower, ClusterError> {
        let engine = Engine::from_snapshot(config, Arc::new(NoLog::starting_after(lsn)), state)
            .map_err(|e| ClusterError::Engine(format!("snapshot at LSN {lsn}: {e}")))?;
        Ok(Follower {
            engine: Arc::new(engine),
            applied_lsn: lsn,
            published_lsn: Arc::new(AtomicU64::new(lsn.0)),
            applied_seq: seq,
            epoch: 0,
        })
    }

    /// Starts from the partition's snapshot in the object store, else from the empty state.
    pub async fn start(
        store: &ObjectStore,
        partition: &str,
        config: EngineConfig,
    ) -> Result<Follower, ClusterError> {
        match load_snapshot(store, partition).await? {
            Some(bytes) => {
                let (seq, lsn, state) = decode_snapshot(&bytes)?;
                tracing::info!(seq, %lsn, "standby starts from the snapshot in the object store");
                Follower::at_snapshot(config, seq, lsn, state)
            }
            None => Follower::empty(config),
        }
    }

    /// The engine (its state after [`Follower::applied_lsn`]).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, shared (to encode a snapshot of it off the async threads while nothing
    /// is applied).
    pub fn shared_engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Takes the engine out (readers holding a [`StandbyView`] may still read it).
    pub fn into_engine(self) -> Arc<Engine> {
        self.engine
    }

    /// What readers of this standby see.
    pub fn view(&self) -> StandbyView {
        StandbyView {
            engine: self.engine.clone(),
            published_lsn: self.published_lsn.clone(),
        }
    }

    /// The last record applied.
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// The last stream message applied.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// The newest epoch seen in the stream.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Applies the stream message `seq`. Messages must come in sequence order, without
    /// gaps after the first; a message at or below what is applied is skipped (a
    /// snapshot already holds it).
    pub fn apply(
        &mut self,
        seq: u64,
        headers: Option<&async_nats::HeaderMap>,
        payload: &bytes::Bytes,
    ) -> Result<(), ClusterError> {
        if seq <= self.applied_seq {
            return Ok(());
        }
        let entry = wire::decode(headers, payload)
            .map_err(|e| ClusterError::Corrupt(format!("stream message {seq}: {e}")))?;
        match entry {
            wire::Entry::Fence { epoch } => {
                if epoch <= self.epoch {
                    return Err(ClusterError::Corrupt(format!(
                        "stream message {seq}: fence of epoch {epoch} after epoch {}",
                        self.epoch
                    )));
                }
                self.epoch = epoch;
            }
            wire::Entry::Batch {
                epoch,
                first,
                records,
            } => {
                // After a snapshot the first epoch is learnt from the first batch.
                if self.epoch != 0 && epoch != self.epoch {
                    return Err(ClusterError::Corrupt(format!(
                        "stream message {seq}: a batch of epoch {epoch} after the fence of \
                         epoch {}",
                        self.epoch
                    )));
                }
                self.epoch = epoch;
                let last = Lsn(first.0 + records.len() as u64 - 1);
                if last <= self.applied_lsn {
                    // Inside the snapshot this follower started from.
                } else if first.0 > self.applied_lsn.0 + 1 {
                    return Err(ClusterError::Corrupt(format!(
                        "stream message {seq} starts at LSN {first}, after LSN {} applied: \
                         records are missing",
                        self.applied_lsn
                    )));
                } else {
                    let skip = (self.applied_lsn.0 + 1 - first.0) as usize;
                    for (i, record) in records.iter().enumerate().skip(skip) {
                        let lsn = Lsn(first.0 + i as u64);
                        self.engine.replay(record).map_err(|e| {
                            ClusterError::Engine(format!("record {lsn} does not apply: {e}"))
                        })?;
                        self.applied_lsn = lsn;
                        self.published_lsn.store(lsn.0, Ordering::Release);
                    }
                }
            }
        }
        self.applied_seq = seq;
        Ok(())
    }

    /// An ordered consumer of the stream from the message after the last applied one.
    pub async fn subscribe(
        &self,
        stream: &Stream,
    ) -> Result<jetstream::consumer::pull::Ordered, ClusterError> {
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.applied_seq + 1,
                },
                ..OrderedConfig::default()
            })
            .await
            .map_err(|e| ClusterError::nats("create the standby's consumer", e))?;
        consumer
            .messages()
            .await
            .map_err(|e| ClusterError::nats("consume the stream", e))
    }

    /// Applies the stream until message `through` is applied.
    pub async fn catch_up(
        &mut self,
        messages: &mut jetstream::consumer::pull::Ordered,
        through: u64,
    ) -> Result<(), ClusterError> {
        while self.applied_seq < through {
            let Some(message) = messages.next().await else {
                return Err(ClusterError::Nats("the stream's consumer ended".into()));
            };
            match message {
                Ok(message) => self.apply_message(&message)?,
                // The ordered consumer recreates itself from the last sequence it
                // delivered; a standby cut off for good finds its takeover timing out.
                Err(e) => tracing::warn!(error = %e, "reading the stream"),
            }
        }
        Ok(())
    }

    /// [`Follower::apply`] of a consumed message.
    pub fn apply_message(&mut self, message: &jetstream::Message) -> Result<(), ClusterError> {
        let seq = message
            .info()
            .map_err(|e| ClusterError::Nats(format!("message metadata: {e}")))?
            .stream_sequence;
        self.apply(seq, message.headers.as_ref(), &message.payload)
    }
}

/// The partition's latest snapshot object, if any.
pub async fn load_snapshot(
    store: &ObjectStore,
    partition: &str,
) -> Result<Option<Vec<u8>>, ClusterError> {
    use async_nats::jetstream::object_store::GetErrorKind;
    let mut object = match store.get(wire::snapshot_object(partition)).await {
        Ok(object) => object,
        Err(e) if matches!(e.kind(), GetErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(ClusterError::nats("read the snapshot", e)),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ClusterError::Nats(format!("read the snapshot: {e}")))?;
    Ok(Some(bytes))
}

/// Uploads a snapshot as the partition's latest.
pub async fn save_snapshot(
    store: &ObjectStore,
    partition: &str,
    bytes: Vec<u8>,
) -> Result<(), ClusterError> {
    let mut reader = std::io::Cursor::new(bytes);
    store
        .put(wire::snapshot_object(partition).as_str(), &mut reader)
        .await
        .map_err(|e| ClusterError::nats("upload the snapshot", e))?;
    Ok(())
}
