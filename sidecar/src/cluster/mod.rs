//! Cluster mode: a partition's log is a NATS JetStream stream, its leadership a lease in a
//! JetStream key-value bucket, its snapshots objects in a JetStream object store.
//!
//! Pickline does not run a consensus protocol of its own: JetStream (Raft-replicated
//! streams, buckets and object stores, which the retailer may already run) replicates,
//! and the engine's determinism (its state is a function of its log) does the rest.
//!
//! - [`config`]: the `[cluster]` section.
//! - [`wire`]: names (stream, subject, keys, objects) and the byte layout of a log message.
//! - [`lease`]: leadership as a compare-and-set lease.
//! - [`replicator`]: the leader's shipper (group commit into the stream, fencing by
//!   expected last sequence) and the gate every acknowledgement waits at.
//! - [`follower`]: a standby applying the stream with the replay code; snapshots in the
//!   object store.
//! - [`node`]: one node's life: standby, takeover (catch up, fence, serve), leading
//!   (renew, ship, snapshot), stepping down; [`node::Routing`] tells the admission layer
//!   who leads, what a standby answers reads from and where stores are served.
//! - [`map`]: the partition map (store to partition, partition to leader, where each
//!   partition's stores are) cached from a watch of the cluster bucket; every
//!   store-scoped request is checked against it, and a rejected allocation names the
//!   next-nearest partitions from it.
//! - [`saved`]: a node's own copy of the latest state it applied or uploaded, so a
//!   restart starts from it plus the stream's tail.
//! - [`span`]: an allocation its own partition cannot serve, asked of the other
//!   partitions' leaders for the caller, nearest first (gRPC calls with the caller's
//!   token; at most one partition holds).
//! - [`local`]: a JetStream cluster of `nats-server` processes on loopback (bench, tests).
//! - [`cli`]: `pickline cluster status|map`. (`pickline bench cluster` is a module of the
//!   binary, `src/bench/cluster.rs`, over [`node::lead`] and [`local`].)
//!
//! Architecture invariant: a mutation is acknowledged only after JetStream acknowledged
//! the stream message holding its record; a node that is not the leader, or stopped
//! being it, acknowledges nothing.
//! Architecture invariant: this module depends on the engine (and [`span`] on the
//! contract's generated client, `crate::pb`), not on `grpc/`, `intake/`, `notify/` or
//! `web/`; `server.rs` and the Allocate handler wire it in.

pub mod cli;
pub mod config;
pub mod follower;
pub mod lease;
pub mod local;
pub mod map;
pub mod node;
pub mod replicator;
pub mod saved;
pub mod span;
pub mod wire;

pub use config::ClusterConfig;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS or JetStream refused or did not answer.
    #[error("NATS: {0}")]
    Nats(String),
    /// Something read from NATS does not decode or breaks an invariant.
    #[error("corrupt cluster data: {0}")]
    Corrupt(String),
    /// The engine refused a record or snapshot.
    #[error("engine: {0}")]
    Engine(String),
    /// Local files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl ClusterError {
    fn nats(what: &str, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Nats(format!("{what}: {e}"))
    }
}
