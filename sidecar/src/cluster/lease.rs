//! Leadership of a partition: a lease in the cluster's key-value bucket.
//!
//! The lease is one key (`lease.<partition>`) holding who leads, where to reach it and its
//! epoch. Every change is a compare-and-set on the key's revision (JetStream's
//! expected-last-subject-sequence): `create` when the key is absent, `update(revision)`
//! otherwise. The leader renews (an update with the revision it last wrote) every third
//! of the lease time. A standby watches the revision; when it has not changed for a whole
//! lease time, measured on the standby's own monotonic clock from when it first saw that
//! revision (so clocks of different machines are never compared), it takes the lease with
//! an update at that revision, and the epoch goes up by one. Two standbys racing for it:
//! one update wins, the other gets "wrong last sequence".
//!
//! The lease decides who *should* lead (liveness). Safety does not rest on it: a leader
//! that still believes it leads after losing the lease (a long pause) is stopped by the
//! stream's expected-sequence check, because the new leader appends a fence before it
//! serves (see [`crate::cluster::replicator`]).

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Store, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ClusterError, wire};

/// What the lease key holds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct LeaseValue {
    /// The leading node.
    pub node: String,
    /// Its gRPC address for clients.
    pub addr: String,
    /// Leadership epoch: 1 for the first leader, one more for each takeover.
    pub epoch: u64,
}

/// A lease this node holds.
#[derive(Debug, Clone)]
pub struct Held {
    /// What it says.
    pub value: LeaseValue,
    /// The revision this node last wrote.
    pub revision: u64,
}

/// The lease of one partition as seen from one node.
#[derive(Debug)]
pub struct Lease {
    kv: Store,
    key: String,
    node: String,
    addr: String,
    lease: Duration,
    /// The revision last seen and when it was first seen (monotonic, this machine).
    seen: Option<(u64, Instant)>,
}

/// What a standby's look at the lease found.
#[derive(Debug)]
pub enum Look {
    /// This node now holds it.
    Taken(Held),
    /// Another node holds it (`None`: nobody yet, or unreadable).
    Led(Option<LeaseValue>),
}

impl Lease {
    /// The lease of `partition` for node `node` reachable at `addr`.
    pub fn new(kv: Store, partition: &str, node: &str, addr: &str, lease: Duration) -> Lease {
        Lease {
            kv,
            key: wire::lease_key(partition),
            node: node.to_owned(),
            addr: addr.to_owned(),
            lease,
            seen: None,
        }
    }

    /// The lease time.
    pub fn time(&self) -> Duration {
        self.lease
    }

    /// The current holder, if the key can be read.
    pub async fn holder(&self) -> Result<Option<(LeaseValue, u64)>, ClusterError> {
        read(&self.kv, &self.key).await
    }

    /// A standby's periodic look: takes the lease if it is absent, or if its revision has
    /// not changed for a whole lease time since this node first saw it.
    pub async fn try_take(&mut self) -> Result<Look, ClusterError> {
        let current = read(&self.kv, &self.key).await?;
        let Some((value, revision)) = current else {
            let mine = self.value(1);
            return match self.kv.create(&self.key, encode(&mine)?).await {
                Ok(revision) => Ok(Look::Taken(Held {
                    value: mine,
                    revision,
                })),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Look::Led(None)),
                Err(e) => Err(ClusterError::nats("create the lease", e)),
            };
        };
        let now = Instant::now();
        let first_seen = match self.seen {
            Some((seen, at)) if seen == revision => at,
            _ => {
                self.seen = Some((revision, now));
                now
            }
        };
        // Our own lease from an earlier life of this node counts as stale like any other:
        // whatever that process acknowledged is in the stream, and the fence deposes it.
        if now.duration_since(first_seen) < self.lease {
            return Ok(Look::Led(Some(value)));
        }
        let mine = self.value(value.epoch + 1);
        match self.kv.update(&self.key, encode(&mine)?, revision).await {
            Ok(revision) => Ok(Look::Taken(Held {
                value: mine,
                revision,
            })),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Look::Led(None)),
            Err(e) => Err(ClusterError::nats("take the lease", e)),
        }
    }

    /// The leader's renewal. `Ok(false)`: the lease was taken by another node (the
    /// revision moved): this node is deposed.
    pub async fn renew(&self, held: &mut Held) -> Result<bool, ClusterError> {
        match self
            .kv
            .update(&self.key, encode(&held.value)?, held.revision)
            .await
        {
            Ok(revision) => {
                held.revision = revision;
                Ok(true)
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // An earlier renewal whose acknowledgement was lost (a NATS node died
                // with it) moved the revision too: the lease is still this node's if it
                // says so, at this epoch.
                match read(&self.kv, &self.key).await? {
                    Some((value, revision)) if value == held.value => {
                        held.revision = revision;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(ClusterError::nats("renew the lease", e)),
        }
    }

    /// Gives the lease up (graceful shutdown): deleted at the revision this node holds,
    /// so a standby takes over at its next look instead of after a lease time.
    pub async fn release(&self, held: &Held) -> Result<(), ClusterError> {
        self.kv
            .delete_expect_revision(&self.key, Some(held.revision))
            .await
            .map_err(|e| ClusterError::nats("release the lease", e))
    }

    fn value(&self, epoch: u64) -> LeaseValue {
        LeaseValue {
            node: self.node.clone(),
            addr: self.addr.clone(),
            epoch,
        }
    }
}

fn encode(value: &LeaseValue) -> Result<bytes::Bytes, ClusterError> {
    serde_json::to_vec(value)
        .map(Into::into)
        .map_err(|e| ClusterError::Corrupt(format!("lease value: {e}")))
}

/// The lease key's value and revision; a deleted key (or a deletion marker) is `None`.
/// (The epoch a leader writes with is also above every epoch in the stream, so a lease
/// created afresh after a release never reuses one: see [`crate::cluster::node`].)
pub async fn read(kv: &Store, key: &str) -> Result<Option<(LeaseValue, u64)>, ClusterError> {
    let entry = kv
        .entry(key)
        .await
        .map_err(|e| ClusterError::nats("read the lease", e))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let value: LeaseValue = serde_json::from_slice(&e.value)
                .map_err(|err| ClusterError::Corrupt(format!("lease {key}: {err}")))?;
            Ok(Some((value, e.revision)))
        }
        _ => Ok(None),
    }
}
