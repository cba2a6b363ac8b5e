//! `[cluster]`: cluster mode on a NATS JetStream cluster (see [`crate::cluster`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest partition or node name, in bytes (it is part of stream, key and object names).
pub const NAME_LEN_MAX: usize = 64;

/// `[cluster]`
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster mode: the partition's log is a JetStream stream, leadership a lease. Off by
    /// default (one node, the local write-ahead log).
    pub enabled: bool,
    /// NATS server URLs of the JetStream cluster; the client fails over between them.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster (`[A-Za-z0-9_-]`).
    pub node: String,
    /// The partition this node leads or stands by for (`[A-Za-z0-9_-]`).
    pub partition: String,
    /// The gRPC address clients should use to reach this node (what a standby names as
    /// the leader). Empty: `grpc.listen`.
    pub advertise: String,
    /// Lease time, ms: a standby takes over after the leader has not renewed its lease
    /// for this long. The leader renews every third of it.
    pub lease_ms: u64,
    /// JetStream replicas of the partition's stream, the key-value bucket and the
    /// snapshot store (3 in production; 1 for a single test server).
    pub replicas: usize,
    /// A mutation whose records JetStream has not acknowledged within this time is
    /// answered UNAVAILABLE (its outcome unknown: retry with the same idempotency key).
    pub replication_timeout_ms: u64,
    /// Upload a snapshot of the leader's state to the object store this often, ms, so a
    /// new standby starts from it plus the stream's tail.
    pub snapshot_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            node: String::new(),
            partition: "default".to_owned(),
            advertise: String::new(),
            lease_ms: 3_000,
            replicas: 3,
            replication_timeout_ms: 2_000,
            snapshot_interval_ms: 60_000,
        }
    }
}

/// Bounds of `lease_ms`: below 300 ms a busy machine's scheduling pauses would depose
/// healthy leaders; above 10 minutes failover is no longer failover.
pub const LEASE_MS_MIN: u64 = 300;
/// See [`LEASE_MS_MIN`].
pub const LEASE_MS_MAX: u64 = 600_000;

/// Whether `name` may name a partition or node: it becomes part of a stream name, a
/// subject, a key and an object name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ClusterConfig {
    /// Checks the section; `Err((key, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.servers.is_empty() {
            return Err(("cluster.servers", "must name at least one server".into()));
        }
        if !valid_name(&self.node) {
            return Err((
                "cluster.node",
                format!("must be 1..={NAME_LEN_MAX} of [A-Za-z0-9_-]"),
            ));
        }
        if !valid_name(&self.partition) {
            return Err((
                "cluster.partition",
                format!("must be 1..={NAME_LEN_MAX} of [A-Za-z0-9_-]"),
            ));
        }
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&self.lease_ms) {
            return Err((
                "cluster.lease_ms",
                format!(
                    "{} is outside {LEASE_MS_MIN}..={LEASE_MS_MAX}",
                    self.lease_ms
                ),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(("cluster.replicas", "must be 1..=5".into()));
        }
        if !(100..=600_000).contains(&self.replication_timeout_ms) {
            return Err((
                "cluster.replication_timeout_ms",
                "must be 100..=600000".into(),
            ));
        }
        if !(1_000..=86_400_000).contains(&self.snapshot_interval_ms) {
            return Err((
                "cluster.snapshot_interval_ms",
                "must be 1000..=86400000".into(),
            ));
        }
        Ok(())
    }

    /// The lease time.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The replication timeout.
    pub fn replication_timeout(&self) -> Duration {
        Duration::from_millis(self.replication_timeout_ms)
    }
}
