//! One node's life in a partition: standby, takeover, leading, stepping down.
//!
//! 1. **Standby.** Connect, make sure the stream, bucket and object store exist, start a
//!    [`Follower`] from the latest snapshot and apply the stream as it grows. Every
//!    quarter of the lease time look at the lease ([`Lease::try_take`]) and tell the
//!    admission layer who leads ([`Routing`]).
//! 2. **Takeover.** Holding the lease: read the stream's last sequence, apply up to it,
//!    then append a fence (an empty message of the new epoch) with that sequence as the
//!    expected last one. If another message got there first (the old leader was still
//!    writing), apply it and try again. Once the fence is stored, nobody else can
//!    append after it: the old leader's next batch fails its expected-sequence check.
//! 3. **Leading.** The follower's engine becomes the served engine (a snapshot of it
//!    opened as a [`DurableEngine`] whose LSNs continue the stream's), the
//!    [`Shipper`] replicates its records, a task renews the lease every third of the
//!    lease time, another uploads snapshots and trims the stream behind the previous one.
//! 4. **Stepping down.** Deposed (a fenced append, or the lease revision moved under a
//!    renewal): the gate fails at once, so nothing more is acknowledged, and the server
//!    stops with an error ([`crate::server::ServerError::Deposed`]); its supervisor
//!    restarts it, as a standby. The in-memory state of a deposed leader may hold records
//!    that never reached the stream, so it is never reused. Graceful shutdown
//!    ([`Leadership::step_down`]) replicates what is pending, uploads a snapshot and
//!    deletes the lease, so a standby takes over at its next look.
//!
//! In cluster mode the local write-ahead log is not written (`Durability::Off`): the
//! stream is the log. Each node keeps its own copy of the latest state it applied or
//! uploaded ([`super::saved`]); a restarted node starts from that copy plus the stream's
//! tail, or from the object store's snapshot when its copy does not fit the stream.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    kv,
    message::PublishMessage,
    object_store::{self, ObjectStore},
    stream::{self, Stream},
};
use futures_util::StreamExt as _;
use parking_lot::RwLock;
use pickline_engine::{
    Engine, EngineConfig, Lsn,
    durable::{DurableEngine, OpenOptions},
    wal::{Durability, FileStorage, WalConfig, format},
};
use tokio::task::JoinHandle;

use super::{
    ClusterConfig, ClusterError,
    follower::{self, Follower, StandbyView},
    lease::{Held, Lease, LeaseValue, Look},
    map::PartitionMap,
    replicator::{Gate, Shipper},
    saved, wire,
};

/// Longest a JetStream request (publish, key update, info) may take before it is
/// retried: a stream leader election in the NATS cluster takes a few seconds at most.
const JS_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a takeover waits for the stream's tail before it starts over (the lease
/// stays with this node meanwhile; the next look takes it again).
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

/// A connection to the JetStream cluster with the partition's resources.
#[derive(Clone)]
pub struct Connection {
    /// The JetStream context.
    pub js: jetstream::Context,
    /// The cluster's key-value bucket (leases, partition map).
    pub kv: kv::Store,
    /// The snapshot store.
    pub objects: ObjectStore,
    /// The partition's stream.
    pub stream: Stream,
    /// The servers' `max_payload`.
    pub max_payload: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

/// Connects to `config.servers` (reconnecting by itself afterwards).
pub async fn connect_client(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let addrs = config
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClusterError::nats("cluster.servers", e))?;
    async_nats::ConnectOptions::new()
        .name(format!("pickline-{}", config.node))
        .connection_timeout(JS_TIMEOUT)
        // Come back quickly when a server returns: writes wait for it.
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
        .connect(addrs)
        .await
        .map_err(|e| ClusterError::nats("connect", e))
}

/// Connects and makes sure the bucket, the object store and the partition's stream exist
/// (each with `config.replicas` replicas).
pub async fn connect(config: &ClusterConfig) -> Result<Connection, ClusterError> {
    let client = connect_client(config).await?;
    let max_payload = client.server_info().max_payload;
    let js = jetstream::ContextBuilder::new()
        .timeout(JS_TIMEOUT)
        .build(client);
    let kv = match js.get_key_value(wire::BUCKET).await {
        Ok(kv) => kv,
        Err(_) => {
            // The bucket's stream as `create_key_value` makes it (history 1), made here
            // because `create_key_value` first asks for account info, whose reply from
            // nats-server 2.9 this client version does not read.
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{}", wire::BUCKET),
                description: Some("Pickline leases and partition map".to_owned()),
                subjects: vec![format!("$KV.{}.>", wire::BUCKET)],
                max_messages_per_subject: 1,
                num_replicas: config.replicas,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..stream::Config::default()
            })
            .await
            .map_err(|e| ClusterError::nats("create the key-value bucket", e))?;
            js.get_key_value(wire::BUCKET)
                .await
                .map_err(|e| ClusterError::nats("open the key-value bucket", e))?
        }
    };
    let objects = match js.get_object_store(wire::SNAPSHOTS).await {
        Ok(o) => o,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: wire::SNAPSHOTS.to_owned(),
                description: Some("Pickline partition snapshots".to_owned()),
                num_replicas: config.replicas,
                ..object_store::Config::default()
            })
            .await
            .map_err(|e| ClusterError::nats("create the snapshot store", e))?,
    };
    let stream = js
        .get_or_create_stream(stream_config(config))
        .await
        .map_err(|e| ClusterError::nats("create the partition's stream", e))?;
    Ok(Connection {
        js,
        kv,
        objects,
        stream,
        max_payload,
    })
}

/// The partition's stream as this node creates it when absent.
pub fn stream_config(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: wire::stream_name(&config.partition),
        description: Some(format!("Pickline log of partition {}", config.partition)),
        subjects: vec![wire::subject(&config.partition)],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        // Retries of a timed-out publish carry the same id within this window.
        duplicate_window: Duration::from_secs(120),
        ..stream::Config::default()
    }
}

/// Who leads the partition, and where every store is served ([`PartitionMap`]), as the
/// admission layer needs it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Routing(Arc<RwLock<RoutingState>>, PartitionMap);

#[derive(Debug, Default)]
struct RoutingState {
    partition: String,
    /// The leader as the lease names it (this node once it leads).
    leader: Option<LeaseValue>,
    /// Set while this node leads.
    gate: Option<Arc<Gate>>,
    /// Set while this node stands by with a follower: what its reads are answered from.
    standby: Option<StandbyView>,
}

/// Why a node does not take an engine request now.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Another node leads (or nobody yet): call it.
    NotLeader {
        /// The partition.
        partition: String,
        /// The leader, if known.
        leader: Option<LeaseValue>,
    },
    /// This node leads but the stream does not acknowledge now.
    Stalled(Arc<str>),
    /// This node stopped leading.
    Deposed(Arc<str>),
}

impl Routing {
    /// Routing for `partition`, nobody leading yet, the partition map not read yet (kept
    /// by [`super::map::follow`]).
    pub fn new(partition: &str) -> Routing {
        Routing(
            Arc::new(RwLock::new(RoutingState {
                partition: partition.to_owned(),
                ..RoutingState::default()
            })),
            PartitionMap::new(partition),
        )
    }

    /// The partition map every store-scoped request is checked against.
    pub fn partitions(&self) -> &PartitionMap {
        &self.1
    }

    /// `None` when this node leads and its log acknowledges.
    pub fn refusal(&self) -> Option<Refusal> {
        let s = self.0.read();
        match &s.gate {
            Some(gate) => {
                if let Some(why) = gate.failure() {
                    Some(Refusal::Deposed(why))
                } else {
                    gate.trouble().map(Refusal::Stalled)
                }
            }
            None => Some(Refusal::NotLeader {
                partition: s.partition.clone(),
                leader: s.leader.clone(),
            }),
        }
    }

    /// The standby's state for reads (`None` while leading or without a follower).
    pub fn standby(&self) -> Option<StandbyView> {
        let s = self.0.read();
        match s.gate {
            Some(_) => None,
            None => s.standby.clone(),
        }
    }

    fn set_leader(&self, leader: Option<LeaseValue>) {
        self.0.write().leader = leader;
    }

    fn set_standby(&self, view: Option<StandbyView>) {
        self.0.write().standby = view;
    }

    fn set_leading(&self, me: LeaseValue, gate: Arc<Gate>) {
        let mut s = self.0.write();
        s.leader = Some(me);
        s.gate = Some(gate);
        s.standby = None;
    }
}

/// What serving as the partition's leader needs, and the tasks that keep it leading.
#[derive(Debug)]
pub struct Leadership {
    db: Arc<DurableEngine>,
    gate: Arc<Gate>,
    conn: Connection,
    partition: String,
    /// Where this node keeps its copy of the state ([`super::saved`]).
    saved: LocalCopy,
    shipper: JoinHandle<String>,
    renewer: JoinHandle<()>,
    snapshotter: JoinHandle<()>,
    /// Publishes the partition's store positions ([`super::map::publish_geo`]).
    geo: JoinHandle<()>,
    release: Option<tokio::sync::oneshot::Sender<tokio::sync::oneshot::Sender<()>>>,
}

impl Leadership {
    /// The engine to serve.
    pub fn db(&self) -> &Arc<DurableEngine> {
        &self.db
    }

    /// The gate acknowledgements wait at.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Graceful step-down: waits (bounded by the replication timeout) until every record
    /// is replicated, uploads a snapshot, stops shipping and deletes the lease.
    pub async fn step_down(mut self) {
        let last = self.db.engine().log().last_lsn();
        if let Err(e) = self.gate.replicated(last).await {
            tracing::warn!(error = %e, "stepping down with records not replicated (never acknowledged)");
        }
        self.snapshotter.abort();
        self.geo.abort();
        if self.gate.failure().is_none() {
            match upload_snapshot(
                &self.db,
                &self.gate,
                &self.conn,
                &self.partition,
                &self.saved,
            )
            .await
            {
                Ok(seq) => tracing::info!(seq, "final snapshot uploaded"),
                Err(e) => tracing::warn!(error = %e, "final snapshot not uploaded"),
            }
        }
        self.gate.fail("stepped down");
        self.shipper.abort();
        if let Some(release) = self.release.take() {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            if release.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(JS_TIMEOUT, done_rx).await;
            }
        }
        self.renewer.abort();
    }
}

/// Where a node keeps the local files of its leadership of one epoch.
fn epoch_dir(data_dir: &Path, partition: &str, epoch: u64) -> PathBuf {
    data_dir
        .join("cluster")
        .join(partition)
        .join(format!("epoch-{epoch:020}"))
}

/// Runs as a standby until this node leads the partition, then returns what serving
/// needs. Errors are logged and retried (NATS unreachable, a damaged snapshot); this
/// returns only as leader.
pub async fn lead(
    config: &ClusterConfig,
    engine: EngineConfig,
    data_dir: &Path,
    advertise: &str,
    routing: &Routing,
) -> Leadership {
    loop {
        match try_lead(config, engine.clone(), data_dir, advertise, routing).await {
            Ok(leadership) => return leadership,
            Err(e) => {
                tracing::warn!(error = %e, "standby: starting over");
                tokio::time::sleep(config.lease() / 4).await;
            }
        }
    }
}

/// Where a node keeps its copy of the partition's state, and which stream it belongs to.
#[derive(Debug, Clone)]
struct LocalCopy {
    path: PathBuf,
    stream: i128,
}

impl LocalCopy {
    /// Writes `object` ([`follower::encode_snapshot`]'s bytes) as the node's copy.
    async fn save(&self, object: Vec<u8>) -> Result<(), ClusterError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || saved::save(&me.path, me.stream, &object))
            .await
            .map_err(|e| ClusterError::Engine(format!("save task: {e}")))?
    }
}

/// A follower from this node's copy of the state when it fits the stream, else from the
/// object store's snapshot, else from the empty state.
async fn start_follower(
    conn: &Connection,
    partition: &str,
    engine: EngineConfig,
    path: &Path,
) -> Result<Follower, ClusterError> {
    match saved::usable(path, &conn.stream).await? {
        Some(copy) => {
            tracing::info!(seq = copy.seq, lsn = %copy.lsn, "starting from this node's saved snapshot");
            tokio::task::spawn_blocking(move || {
                Follower::at_snapshot(engine, copy.seq, copy.lsn, copy.state()?)
            })
            .await
            .map_err(|e| ClusterError::Engine(format!("load task: {e}")))?
        }
        None => Follower::start(&conn.objects, partition, engine).await,
    }
}

/// Saves a standby's state as this node's copy: the follower's state after message
/// `applied_seq`, encoded while nothing is applied.
async fn save_standby(follower: &Follower, saved: &LocalCopy) -> Result<(), ClusterError> {
    let (seq, lsn) = (follower.applied_seq(), follower.applied_lsn());
    let engine = follower.shared_engine();
    // The follower applies only in the caller's loop, which waits here: the state is
    // the one after `lsn`.
    let state = tokio::task::spawn_blocking(move || engine.snapshot())
        .await
        .map_err(|e| ClusterError::Engine(format!("snapshot task: {e}")))?
        .map_err(|e| ClusterError::Engine(format!("snapshot: {e}")))?
        .1;
    saved
        .save(follower::encode_snapshot(seq, lsn, &state)?)
        .await
}

async fn try_lead(
    config: &ClusterConfig,
    engine: EngineConfig,
    data_dir: &Path,
    advertise: &str,
    routing: &Routing,
) -> Result<Leadership, ClusterError> {
    let conn = connect(config).await?;
    let partition = config.partition.as_str();
    let saved = LocalCopy {
        path: saved::path(data_dir, partition),
        stream: saved::stream_identity(&conn.stream).await?,
    };
    let mut follower = match start_follower(&conn, partition, engine.clone(), &saved.path).await {
        Ok(follower) => follower,
        Err(e) => {
            // Never start from the same copy twice if it is what failed.
            saved::discard(&saved.path);
            return Err(e);
        }
    };
    let mut messages = follower.subscribe(&conn.stream).await?;
    // Reads are answered from the follower's state from here on, until this node leads.
    routing.set_standby(Some(follower.view()));
    let mut lease = Lease::new(
        conn.kv.clone(),
        partition,
        &config.node,
        advertise,
        config.lease(),
    );
    let mut look = tokio::time::interval(config.lease() / 4);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut save = tokio::time::interval(Duration::from_millis(config.snapshot_interval_ms));
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    save.tick().await;
    let mut saved_seq = follower.applied_seq();
    tracing::info!(partition, node = %config.node, "standby");
    let mut held = loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(Ok(m)) => if let Err(e) = follower.apply_message(&m) {
                    // The copy this follower started from may be what does not fit.
                    saved::discard(&saved.path);
                    return Err(e);
                },
                // The ordered consumer recreates itself after a lost heartbeat or a
                // server change, from the last sequence it delivered.
                Some(Err(e)) => tracing::warn!(error = %e, "standby: reading the stream"),
                None => return Err(ClusterError::Nats("the stream's consumer ended".into())),
            },
            _ = look.tick() => match lease.try_take().await? {
                Look::Taken(held) => break held,
                Look::Led(leader) => routing.set_leader(leader),
            },
            _ = save.tick(), if follower.applied_seq() > saved_seq => {
                match save_standby(&follower, &saved).await {
                    Ok(()) => saved_seq = follower.applied_seq(),
                    Err(e) => tracing::warn!(error = %e, "standby state not saved"),
                }
            }
        }
    };
    tracing::info!(
        partition,
        epoch = held.value.epoch,
        "lease taken; catching up"
    );
    let fence_seq = loop {
        let last = stream_last_seq(&conn.stream).await?;
        tokio::time::timeout(CATCH_UP_PATIENCE, follower.catch_up(&mut messages, last))
            .await
            .map_err(|_| {
                ClusterError::Nats(format!(
                    "the stream's tail up to {last} did not arrive within {CATCH_UP_PATIENCE:?}"
                ))
            })??;
        // Above every epoch in the stream, so message ids are never reused even when the
        // lease key was deleted (a graceful step-down) and created afresh.
        held.value.epoch = held.value.epoch.max(follower.epoch() + 1);
        if !lease.renew(&mut held).await? {
            return Err(ClusterError::Nats(
                "the lease was taken by another node during takeover".into(),
            ));
        }
        let headers = wire::headers(partition, held.value.epoch, None);
        let fence = PublishMessage::build()
            .payload(bytes::Bytes::new())
            .headers(headers.clone())
            .expected_last_sequence(follower.applied_seq());
        let outcome = match conn.js.send_publish(wire::subject(partition), fence).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ack) => {
                follower.apply(ack.sequence, Some(&headers), &bytes::Bytes::new())?;
                break ack.sequence;
            }
            // The old leader appended meanwhile: apply it, fence again.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
            Err(e) => return Err(ClusterError::nats("append the fence", e)),
        }
    };
    drop(messages);
    // Past the fence, the follower's state is no standby's any more: the engine opened
    // from it answers once this node leads.
    routing.set_standby(None);
    let epoch = held.value.epoch;
    let lsn = follower.applied_lsn();
    tracing::info!(partition, epoch, seq = fence_seq, %lsn, "fenced; opening the engine");
    // Renew from here on: opening a large state can take longer than a lease.
    let gate = Gate::new(lsn, fence_seq, config.replication_timeout());
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    let renewer = tokio::spawn(renew(
        lease,
        held.clone(),
        gate.clone(),
        config.lease() / 3,
        release_rx,
    ));
    let dir = epoch_dir(data_dir, partition, epoch);
    let state = follower.into_engine();
    let opened = tokio::task::spawn_blocking(move || open_at(state, engine, lsn, &dir))
        .await
        .map_err(|e| ClusterError::Engine(format!("open task: {e}")))
        .and_then(|opened| opened);
    let db = match opened {
        Ok(db) => Arc::new(db),
        Err(e) => {
            gate.fail("the engine did not open");
            renewer.abort();
            return Err(e);
        }
    };
    let shipper = tokio::spawn(
        Shipper {
            js: conn.js.clone(),
            stream: conn.stream.clone(),
            partition: partition.to_owned(),
            epoch,
            last_seq: fence_seq,
            events: db.stream().clone(),
            cursor: lsn,
            gate: gate.clone(),
            max_payload: conn.max_payload,
        }
        .run(),
    );
    let snapshotter = tokio::spawn(snapshots(
        db.clone(),
        gate.clone(),
        conn.clone(),
        partition.to_owned(),
        saved.clone(),
        Duration::from_millis(config.snapshot_interval_ms),
    ));
    let geo = tokio::spawn(super::map::publish_geo(
        db.engine().clone(),
        conn.kv.clone(),
        partition.to_owned(),
    ));
    routing.set_leading(held.value.clone(), gate.clone());
    tracing::info!(partition, epoch, "leading");
    remove_old_epochs(data_dir, partition, epoch);
    Ok(Leadership {
        db,
        gate,
        conn,
        partition: partition.to_owned(),
        saved,
        shipper,
        renewer,
        snapshotter,
        geo,
        release: Some(release_tx),
    })
}

/// The stream's last sequence.
async fn stream_last_seq(stream: &Stream) -> Result<u64, ClusterError> {
    let mut stream = stream.clone();
    let info = stream
        .info()
        .await
        .map_err(|e| ClusterError::nats("read the stream's state", e))?;
    Ok(info.state.last_sequence)
}

/// The served engine from the follower's: its state written as a snapshot at `lsn` into a
/// fresh directory, opened there, so new records get LSNs after the stream's.
fn open_at(
    engine: Arc<Engine>,
    config: EngineConfig,
    lsn: Lsn,
    dir: &Path,
) -> Result<DurableEngine, ClusterError> {
    let io = |what: &str| {
        let what = format!("{what} {}", dir.display());
        move |source| ClusterError::Io { what, source }
    };
    let (_, state) = engine
        .snapshot()
        .map_err(|e| ClusterError::Engine(format!("snapshot: {e}")))?;
    drop(engine);
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove"))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create"))?;
    if lsn > Lsn::ZERO {
        let bytes = format::encode_snapshot(lsn, &state)
            .map_err(|e| ClusterError::Corrupt(format!("snapshot does not encode: {e}")))?;
        std::fs::write(dir.join(format::snapshot_file_name(lsn)), bytes)
            .map_err(io("write the snapshot in"))?;
    }
    let storage = FileStorage::open(dir).map_err(io("open"))?;
    let opts = OpenOptions {
        engine: config,
        wal: WalConfig {
            durability: Durability::Off,
            ..WalConfig::default()
        },
        ..OpenOptions::default()
    };
    let db = DurableEngine::open(Arc::new(storage), opts)
        .map_err(|e| ClusterError::Engine(format!("open at LSN {lsn}: {e}")))?;
    let opened = db.engine().log().last_lsn();
    if opened != lsn {
        return Err(ClusterError::Engine(format!(
            "the engine opened at LSN {opened}, the stream is at {lsn}"
        )));
    }
    Ok(db)
}

/// Renews the lease every `every` until it is lost (then fails the gate: deposed) or a
/// release is asked for (then deletes it and says so).
async fn renew(
    lease: Lease,
    mut held: Held,
    gate: Arc<Gate>,
    every: Duration,
    mut release: tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            asked = &mut release => {
                if let Err(e) = lease.release(&held).await {
                    tracing::warn!(error = %e, "lease not released; a standby takes it after the lease time");
                }
                if let Ok(done) = asked {
                    let _ = done.send(());
                }
                return;
            }
            _ = tick.tick() => {}
        }
        if gate.failure().is_some() {
            return;
        }
        match lease.renew(&mut held).await {
            Ok(true) => {
                renewed_at = tokio::time::Instant::now();
                gate.set_lease_trouble(None);
            }
            Ok(false) => {
                let now = lease.holder().await.ok().flatten();
                let why = match now {
                    Some((v, _)) => {
                        format!("the lease was taken by node {} (epoch {})", v.node, v.epoch)
                    }
                    None => "the lease was taken over".to_owned(),
                };
                tracing::error!(reason = %why, "deposed");
                gate.fail(&why);
                return;
            }
            // NATS trouble: if it is NATS's, nobody else can take the lease either; if
            // only this node is cut off, another may, and its fence stops this node's
            // appends. Past a lease time without renewal this node refuses requests and
            // reports NOT_SERVING (a load balancer stops sending here) until a renewal
            // succeeds or tells it it was deposed.
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed; retrying");
                if renewed_at.elapsed() >= lease.time() {
                    gate.set_lease_trouble(Some(&format!(
                        "the lease was not renewed for {} ms (this node may be cut off \
                         from NATS; another node may lead): {e}",
                        lease.time().as_millis()
                    )));
                }
            }
        }
    }
}

/// Uploads a snapshot every `every`, then trims the stream before the previous one (a
/// standby that far behind restarts from the newer snapshot).
async fn snapshots(
    db: Arc<DurableEngine>,
    gate: Arc<Gate>,
    conn: Connection,
    partition: String,
    saved: LocalCopy,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut previous: Option<u64> = None;
    loop {
        tick.tick().await;
        match upload_snapshot(&db, &gate, &conn, &partition, &saved).await {
            Ok(seq) => {
                tracing::info!(seq, "snapshot uploaded");
                if let Some(keep_from) = previous
                    && let Err(e) = conn.stream.purge().sequence(keep_from).await
                {
                    tracing::warn!(error = %e, "stream not trimmed");
                }
                previous = Some(seq);
            }
            Err(e) => tracing::warn!(error = %e, "snapshot not uploaded"),
        }
    }
}

/// Snapshots the leader's state and, once every record it holds is replicated, saves it
/// as this node's copy and uploads it; returns the stream sequence it starts after.
async fn upload_snapshot(
    db: &Arc<DurableEngine>,
    gate: &Arc<Gate>,
    conn: &Connection,
    partition: &str,
    saved: &LocalCopy,
) -> Result<u64, ClusterError> {
    // Read before the snapshot: the snapshot's LSN is at or after `acked`, so a standby
    // starting after message `seq` finds every later record in the stream.
    let (_, seq) = gate.position();
    let engine = db.engine().clone();
    let (lsn, state) = tokio::task::spawn_blocking(move || engine.snapshot())
        .await
        .map_err(|e| ClusterError::Engine(format!("snapshot task: {e}")))?
        .map_err(|e| ClusterError::Engine(format!("snapshot: {e}")))?;
    // Never upload state the stream does not hold: it may never be acknowledged.
    gate.replicated(lsn)
        .await
        .map_err(|e| ClusterError::Nats(format!("snapshot at LSN {lsn} not replicated: {e}")))?;
    let bytes = follower::encode_snapshot(seq, lsn, &state)?;
    if let Err(e) = saved.save(bytes.clone()).await {
        tracing::warn!(error = %e, "snapshot not saved on this node");
    }
    follower::save_snapshot(&conn.objects, partition, bytes).await?;
    Ok(seq)
}

/// Removes the local directories of this partition's earlier epochs.
fn remove_old_epochs(data_dir: &Path, partition: &str, epoch: u64) {
    let keep = epoch_dir(data_dir, partition, epoch);
    let Ok(entries) = std::fs::read_dir(data_dir.join("cluster").join(partition)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let an_epoch = entry.file_name().to_string_lossy().starts_with("epoch-");
        if an_epoch
            && path != keep
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(error = %e, path = %path.display(), "old epoch directory not removed");
        }
    }
}
