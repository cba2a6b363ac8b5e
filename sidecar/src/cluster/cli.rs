//! `pickline cluster ...`: the partition map and who leads, read from and written to the
//! cluster's key-value bucket.
//!
//! - `pickline cluster status [--json]`: per partition the leader (node, address,
//!   epoch) and the stream (messages, last sequence).
//! - `pickline cluster map show [--json]`: store to partition.
//! - `pickline cluster map assign --store S --partition P` / `unassign --store S`.

use clap::{Args, Subcommand};
use futures_util::StreamExt as _;
use serde::Serialize;

use super::{ClusterConfig, ClusterError, config::valid_name, lease, node, wire};

/// Where the cluster is.
#[derive(Debug, Args)]
pub struct Servers {
    /// NATS server URL of the JetStream cluster (repeat for several).
    #[arg(
        long = "server",
        value_name = "URL",
        env = "PICKLINE_CLUSTER_SERVERS",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub servers: Vec<String>,
}

/// `pickline cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Per partition: the leader (node, address, epoch) and the stream's size.
    Status {
        /// Where the cluster is.
        #[command(flatten)]
        servers: Servers,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The partition map: which partition each store belongs to.
    #[command(subcommand)]
    Map(MapCommand),
}

/// `pickline cluster map ...`
#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// Every store with its partition.
    Show {
        /// Where the cluster is.
        #[command(flatten)]
        servers: Servers,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Puts a store in a partition.
    Assign {
        /// Where the cluster is.
        #[command(flatten)]
        servers: Servers,
        /// The store's external id.
        #[arg(long)]
        store: String,
        /// The partition.
        #[arg(long)]
        partition: String,
    },
    /// Removes a store from the map.
    Unassign {
        /// Where the cluster is.
        #[command(flatten)]
        servers: Servers,
        /// The store's external id.
        #[arg(long)]
        store: String,
    },
}

/// One store's entry of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoreEntry {
    /// The store's external id.
    pub store: String,
    /// Its partition.
    pub partition: String,
}

/// One partition as `status` shows it.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: String,
    /// The lease's holder, if any.
    pub leader: Option<lease::LeaseValue>,
    /// Messages in its stream.
    pub messages: u64,
    /// The stream's last sequence.
    pub last_seq: u64,
}

async fn client(servers: &Servers) -> Result<async_nats::jetstream::Context, ClusterError> {
    let config = ClusterConfig {
        servers: servers.servers.clone(),
        node: "cli".to_owned(),
        ..ClusterConfig::default()
    };
    Ok(async_nats::jetstream::new(
        node::connect_client(&config).await?,
    ))
}

async fn bucket(
    js: &async_nats::jetstream::Context,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    js.get_key_value(wire::BUCKET).await.map_err(|e| {
        ClusterError::Nats(format!(
            "bucket {} not found ({e}): no Pickline node has joined this cluster yet",
            wire::BUCKET
        ))
    })
}

/// Every partition with a stream, with its leader.
pub async fn status(servers: &Servers) -> Result<Vec<PartitionStatus>, ClusterError> {
    let js = client(servers).await?;
    let kv = bucket(&js).await?;
    let mut names = js.stream_names();
    let mut out = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| ClusterError::Nats(format!("list streams: {e}")))?;
        let Some(partition) = name.strip_prefix("PICKLINE_LOG_") else {
            continue;
        };
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|e| ClusterError::Nats(format!("stream {name}: {e}")))?;
        let info = stream
            .info()
            .await
            .map_err(|e| ClusterError::Nats(format!("stream {name}: {e}")))?;
        let leader = lease::read(&kv, &wire::lease_key(partition))
            .await?
            .map(|(v, _)| v);
        out.push(PartitionStatus {
            partition: partition.to_owned(),
            leader,
            messages: info.state.messages,
            last_seq: info.state.last_sequence,
        });
    }
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

/// The partition map.
pub async fn map(servers: &Servers) -> Result<Vec<StoreEntry>, ClusterError> {
    let js = client(servers).await?;
    let kv = bucket(&js).await?;
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| ClusterError::Nats(format!("list keys: {e}")))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| ClusterError::Nats(format!("list keys: {e}")))?;
        if !key.starts_with("store.") {
            continue;
        }
        let Some(value) = kv
            .get(&key)
            .await
            .map_err(|e| ClusterError::Nats(format!("read {key}: {e}")))?
        else {
            continue;
        };
        let entry: StoreEntry = serde_json::from_slice(&value)
            .map_err(|e| ClusterError::Corrupt(format!("map entry {key}: {e}")))?;
        out.push(entry);
    }
    out.sort_by(|a, b| a.store.cmp(&b.store));
    Ok(out)
}

/// Puts `store` in `partition` (`None`: removes it from the map).
pub async fn assign(
    servers: &Servers,
    store: &str,
    partition: Option<&str>,
) -> Result<(), ClusterError> {
    if store.is_empty() || store.len() > 256 {
        return Err(ClusterError::Corrupt(
            "--store must be 1..=256 bytes".into(),
        ));
    }
    let js = client(servers).await?;
    let kv = bucket(&js).await?;
    let key = wire::store_key(store);
    match partition {
        Some(partition) => {
            if !valid_name(partition) {
                return Err(ClusterError::Corrupt(
                    "--partition must be 1..=64 of [A-Za-z0-9_-]".into(),
                ));
            }
            let value = serde_json::to_vec(&StoreEntry {
                store: store.to_owned(),
                partition: partition.to_owned(),
            })
            .map_err(|e| ClusterError::Corrupt(e.to_string()))?;
            kv.put(&key, value.into())
                .await
                .map_err(|e| ClusterError::Nats(format!("write {key}: {e}")))?;
        }
        None => kv
            .delete(&key)
            .await
            .map_err(|e| ClusterError::Nats(format!("delete {key}: {e}")))?,
    }
    Ok(())
}

/// Runs a `pickline cluster` command.
pub async fn run(command: ClusterCommand) -> Result<(), ClusterError> {
    match command {
        ClusterCommand::Status {
            servers,
            json: as_json,
        } => {
            let partitions = status(&servers).await?;
            if as_json {
                println!("{}", pretty(&partitions));
            } else if partitions.is_empty() {
                println!("no partitions yet");
            } else {
                for p in &partitions {
                    let leader = match &p.leader {
                        Some(l) => format!("{} at {} (epoch {})", l.node, l.addr, l.epoch),
                        None => "none".to_owned(),
                    };
                    println!(
                        "{}: leader {leader}; stream {} messages, last sequence {}",
                        p.partition, p.messages, p.last_seq
                    );
                }
            }
        }
        ClusterCommand::Map(MapCommand::Show {
            servers,
            json: as_json,
        }) => {
            let entries = map(&servers).await?;
            if as_json {
                println!("{}", pretty(&entries));
            } else {
                for e in &entries {
                    println!("{}\t{}", e.store, e.partition);
                }
            }
        }
        ClusterCommand::Map(MapCommand::Assign {
            servers,
            store,
            partition,
        }) => assign(&servers, &store, Some(&partition)).await?,
        ClusterCommand::Map(MapCommand::Unassign { servers, store }) => {
            assign(&servers, &store, None).await?
        }
    }
    Ok(())
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
}
