//! `pickline bench cluster`: holds made durable through a 3-node JetStream cluster on
//! loopback, and failover after a SIGKILL of the leader process.
//!
//! - `replicated_holds_per_s`, `replicated_commit_p99_ms`: an in-process leader (the
//!   node code `pickline serve` runs: takeover, the engine, the shipper) with `writers`
//!   tasks each making single-line holds in a closed loop; a hold counts once JetStream
//!   acknowledged the stream message holding its record (what a client's answer waits
//!   for); the commit time is from the engine call to that acknowledgement. No gRPC:
//!   `pickline bench grpc` measures that layer.
//! - `failover_s`: two `pickline serve` processes (this binary) in cluster mode with the
//!   default lease (`cluster.lease_ms`); the leader is killed with SIGKILL while a client
//!   holds, and the time runs until the first successful hold at the new leader. The
//!   median of `failover_rounds` (the killed node comes back as a standby between rounds).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use pickline_engine::{
    EngineConfig, HoldOutcome, HoldRequest, LineRequest, PosDelta, PosDeltaKind, StoreDef,
    Timestamp, defer_durability,
};
use serde::Serialize;
use tokio::time::Instant;

use pickline_sidecar::cluster::{
    ClusterConfig,
    local::LocalNats,
    node::{self, Routing},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterBenchConfig {
    /// Holds in flight (closed loop).
    pub writers: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured time.
    pub measure: Duration,
    /// Failovers measured (median reported).
    pub failover_rounds: usize,
    /// The nodes' lease in the failover rounds.
    pub lease_ms: u64,
}

impl ClusterBenchConfig {
    /// The configuration the figures in docs/BENCHMARKS.md come from.
    pub fn full() -> Self {
        ClusterBenchConfig {
            writers: 256,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(8),
            failover_rounds: 3,
            lease_ms: ClusterConfig::default().lease_ms,
        }
    }

    /// A smoke test.
    pub fn quick() -> Self {
        ClusterBenchConfig {
            writers: 32,
            warmup: Duration::from_millis(300),
            measure: Duration::from_secs(1),
            failover_rounds: 1,
            lease_ms: 1_000,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    /// Holds per second acknowledged by the 3-replica stream.
    pub replicated_holds_per_s: f64,
    /// Median engine call to JetStream acknowledgement, ms.
    pub replicated_commit_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub replicated_commit_p99_ms: f64,
    /// Holds per stream message (group commit), average.
    pub records_per_message: f64,
    /// Holds in flight.
    pub writers: usize,
    /// Leader SIGKILL to the first successful hold at the new leader, s (median).
    pub failover_s: f64,
    /// Each failover measured, s.
    pub failover_rounds_s: Vec<f64>,
    /// The nodes' lease in the failover rounds, ms.
    pub lease_ms: u64,
    /// Replicas of the stream.
    pub replicas: usize,
}

impl ClusterBenchReport {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        format!(
            "replicated_holds_per_s   {:.0}  ({} writers, 3-node JetStream on loopback, R{})\n\
             replicated_commit_p99_ms {:.2}  (p50 {:.2}; {:.1} holds per stream message)\n\
             failover_s               {:.2}  (median of {:?}; lease {} ms)\n",
            self.replicated_holds_per_s,
            self.writers,
            self.replicas,
            self.replicated_commit_p99_ms,
            self.replicated_commit_p50_ms,
            self.records_per_message,
            self.failover_s,
            self.failover_rounds_s,
            self.lease_ms,
        )
    }
}

/// Runs the benchmark under `dir` (removed afterwards).
pub fn run(
    cfg: &ClusterBenchConfig,
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<ClusterBenchReport> {
    let dir = dir.join(format!("cluster-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        progress("starting a 3-node JetStream cluster on loopback");
        let nats = LocalNats::start(&dir.join("nats"), 3).await?;
        progress(&format!(
            "throughput: {} writers, {:?} warm-up, {:?} measured",
            cfg.writers, cfg.warmup, cfg.measure
        ));
        let mut report = throughput(cfg, &nats, &dir).await?;
        progress(&format!(
            "failover: {} rounds, lease {} ms",
            cfg.failover_rounds, cfg.lease_ms
        ));
        let mut rounds = failover(cfg, &nats, &dir, &mut progress).await?;
        report.failover_rounds_s = rounds.clone();
        rounds.sort_by(f64::total_cmp);
        report.failover_s = rounds.get(rounds.len() / 2).copied().unwrap_or(f64::NAN);
        anyhow::Ok(report)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

const T0: Timestamp = Timestamp::from_ms(1_780_000_000_000);
const STORES: u32 = 8;
const SKUS: u32 = 1_000;

async fn throughput(
    cfg: &ClusterBenchConfig,
    nats: &LocalNats,
    dir: &Path,
) -> anyhow::Result<ClusterBenchReport> {
    let config = ClusterConfig {
        enabled: true,
        servers: nats.urls(),
        node: "bench".to_owned(),
        partition: "bench".to_owned(),
        replicas: 3,
        replication_timeout_ms: 30_000,
        ..ClusterConfig::default()
    };
    let routing = Routing::new(&config.partition);
    let leadership = tokio::time::timeout(
        Duration::from_secs(60),
        node::lead(
            &config,
            EngineConfig::default(),
            &dir.join("node"),
            "127.0.0.1:0",
            &routing,
        ),
    )
    .await
    .context("the bench node did not take the lease")?;
    let engine = leadership.db().engine().clone();
    let gate = leadership.gate().clone();
    // Stores with stock: ample for every hold of the run.
    let mut newest = None;
    for s in 0..STORES {
        let store = format!("store-{s}");
        let mut def = StoreDef::new(store.clone(), 52.0, 13.0, "Europe/Berlin");
        def.max_hold_ms = 24 * 3_600_000;
        let d = defer_durability(|| -> anyhow::Result<()> {
            engine.define_store(def, T0)?;
            for k in 0..SKUS {
                engine.apply_delta(
                    &PosDelta {
                        store: store.clone(),
                        sku: format!("SKU-{k}"),
                        pos_event_id: format!("init-{k}"),
                        kind: PosDeltaKind::Receive,
                        qty: 1_000_000,
                        order_ref: None,
                        pos_time: T0,
                    },
                    T0,
                )?;
            }
            Ok(())
        });
        d.value?;
        newest = newest.max(d.wait_for);
    }
    if let Some(lsn) = newest {
        gate.replicated(lsn).await?;
    }
    let (batches_before, lsn_before) = (gate.position().1, gate.acked().0);

    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.measure;
    let mut tasks = Vec::with_capacity(cfg.writers);
    for w in 0..cfg.writers {
        let (engine, gate) = (engine.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut count = 0u64;
            let mut i = w as u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let req = HoldRequest::new(
                    format!("store-{}", i % u64::from(STORES)),
                    vec![LineRequest::new(
                        format!("SKU-{}", (i / u64::from(STORES)) % u64::from(SKUS)),
                        1,
                    )],
                )
                .with_ttl_ms(3_600_000);
                i += STRIDE;
                let d = defer_durability(|| engine.hold(&req, T0));
                if !matches!(d.value?, HoldOutcome::Granted(_)) {
                    anyhow::bail!("a bench hold was refused");
                }
                if let Some(lsn) = d.wait_for {
                    gate.replicated(lsn).await?;
                }
                if t >= measure_from {
                    hist.record(t.elapsed().as_micros().max(1) as u64)?;
                    count += 1;
                }
            }
            anyhow::Ok((count, hist))
        }));
    }
    let mut total = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (count, h) = t.await??;
        total += count;
        hist.add(h)?;
    }
    let (batches_after, lsn_after) = (gate.position().1, gate.acked().0);
    leadership.step_down().await;
    let messages = batches_after.saturating_sub(batches_before).max(1);
    Ok(ClusterBenchReport {
        replicated_holds_per_s: total as f64 / cfg.measure.as_secs_f64(),
        replicated_commit_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        replicated_commit_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        records_per_message: lsn_after.saturating_sub(lsn_before) as f64 / messages as f64,
        writers: cfg.writers,
        failover_s: f64::NAN,
        failover_rounds_s: Vec::new(),
        lease_ms: cfg.lease_ms,
        replicas: config.replicas,
    })
}

/// Writers step through the cells with a stride coprime to their count, so that
/// concurrent writers rarely meet on one cell.
const STRIDE: u64 = 7_919;

/// The bench's token for its `pickline serve` children.
const TOKEN: &str = "pickline-bench-cluster-token-0123456789";

struct Serve {
    child: Option<Child>,
    grpc: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn serve(
    dir: &Path,
    name: &str,
    nats: &LocalNats,
    lease_ms: u64,
    generation: usize,
) -> anyhow::Result<Serve> {
    let port = |()| -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let grpc: SocketAddr = format!("127.0.0.1:{}", port(())?).parse()?;
    let http: SocketAddr = format!("127.0.0.1:{}", port(())?).parse()?;
    let servers: Vec<String> = nats.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let config: PathBuf = dir.join(format!("{name}-{generation}.toml"));
    std::fs::write(
        &config,
        format!(
            "[data]\ndir = \"{data}\"\n[grpc]\nlisten = \"{grpc}\"\n[http]\nlisten = \"{http}\"\n\
             [web]\nenabled = false\n[cluster]\nenabled = true\nservers = [{servers}]\n\
             node = \"{name}\"\npartition = \"failover\"\nlease_ms = {lease_ms}\nreplicas = 3\n",
            data = dir.join(format!("{name}-data")).display(),
            servers = servers.join(", "),
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{name}-{generation}.log")))?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--log", "warn"])
        .env("PICKLINE_TOKEN", TOKEN)
        .env_remove("PICKLINE_TOKENS")
        .env_remove("PICKLINE_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Serve {
        child: Some(child),
        grpc,
    })
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {TOKEN}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r.set_timeout(Duration::from_secs(10));
    r
}

/// A connection to the node at `addr`, or `None` if it does not answer within 200 ms.
async fn connect_quickly(addr: SocketAddr) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
        .ok()
}

async fn grpc_hold(addr: SocketAddr, key: &str) -> bool {
    use pickline_sidecar::pb;
    let Some(ch) = connect_quickly(addr).await else {
        return false;
    };
    let answer = pb::hold_service_client::HoldServiceClient::new(ch)
        .hold(authorized(pb::HoldRequest {
            idempotency_key: key.to_owned(),
            store_id: "S1".into(),
            lines: vec![pb::Line {
                sku: "SKU-1".into(),
                qty: 1,
            }],
            expiry: None,
        }))
        .await;
    matches!(
        answer.map(|r| r.into_inner().outcome),
        Ok(Some(pb::hold_response::Outcome::Granted(_)))
    )
}

async fn setup(addr: SocketAddr) -> anyhow::Result<()> {
    use pickline_sidecar::pb;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    pb::store_service_client::StoreServiceClient::new(ch.clone())
        .upsert_store(authorized(pb::UpsertStoreRequest {
            idempotency_key: "store-S1".into(),
            store: Some(pb::StoreIdentity {
                store_id: "S1".into(),
                name: "Store S1".into(),
                location: Some(pb::GeoPoint {
                    latitude_deg: 52.52,
                    longitude_deg: 13.40,
                }),
                time_zone: "Europe/Berlin".into(),
                status: pb::StoreStatus::Open as i32,
                ..Default::default()
            }),
        }))
        .await?;
    pb::inventory_service_client::InventoryServiceClient::new(ch)
        .apply_pos_events(authorized(pb::ApplyPosEventsRequest {
            idempotency_key: "receive-1".into(),
            events: vec![pb::PosEvent {
                pos_event_id: "receive-1".into(),
                store_id: "S1".into(),
                sku: "SKU-1".into(),
                occurred_at_ms: 1,
                change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                    kind: pb::PosDeltaKind::Receive as i32,
                    qty: 1_000_000,
                })),
                order_ref: String::new(),
            }],
        }))
        .await?;
    Ok(())
}

/// Whether the node at `addr` leads.
async fn leads(addr: SocketAddr) -> bool {
    use pickline_sidecar::pb;
    let Some(ch) = connect_quickly(addr).await else {
        return false;
    };
    pb::admin_service_client::AdminServiceClient::new(ch)
        .stats(authorized(pb::StatsRequest {}))
        .await
        .is_ok()
}

async fn failover(
    cfg: &ClusterBenchConfig,
    nats: &LocalNats,
    dir: &Path,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<Vec<f64>> {
    let names = ["a", "b"];
    let mut nodes = [
        serve(dir, names[0], nats, cfg.lease_ms, 0)?,
        serve(dir, names[1], nats, cfg.lease_ms, 0)?,
    ];
    let mut leader = wait_leader(&nodes).await?;
    setup(nodes[leader].grpc).await?;
    let mut rounds = Vec::with_capacity(cfg.failover_rounds);
    let mut key = 0u64;
    for round in 0..cfg.failover_rounds {
        let standby = 1 - leader;
        // Load on the leader up to the kill.
        for _ in 0..50 {
            key += 1;
            if !grpc_hold(nodes[leader].grpc, &format!("k{key}")).await {
                anyhow::bail!("a hold at the leader failed before the kill");
            }
        }
        if let Some(child) = nodes[leader].child.as_mut() {
            child.kill()?;
            child.wait()?;
        }
        let killed = Instant::now();
        let deadline = killed + Duration::from_secs(60);
        loop {
            key += 1;
            if grpc_hold(nodes[standby].grpc, &format!("k{key}")).await {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("no hold succeeded at the standby within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = killed.elapsed().as_secs_f64();
        progress(&format!("failover round {}: {took:.2} s", round + 1));
        rounds.push(took);
        // The killed node comes back as a standby; give it time to catch up.
        nodes[leader] = serve(dir, names[leader], nats, cfg.lease_ms, round + 1)?;
        tokio::time::sleep(Duration::from_millis(cfg.lease_ms * 2)).await;
        leader = standby;
    }
    Ok(rounds)
}

async fn wait_leader(nodes: &[Serve]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if leads(n.grpc).await {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("no node took the lead within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
