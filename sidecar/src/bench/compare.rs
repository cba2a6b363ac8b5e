//! `pickline bench compare`: the comparison workload of `pickline_benches::compare`
//! against the engine (sync and async WAL), PostgreSQL and Redis, plus the sidecar over
//! gRPC on loopback (durable), which lives here, beside the sidecar's server and generated
//! client, because `pickline-benches` does not depend on the sidecar.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pickline_benches::compare::{self, CompareConfig, CompareReport, SystemRun, sku_name};
use pickline_engine::wal::Durability;
use tonic::transport::Endpoint;

use super::authed;
use pickline_sidecar::{
    config::{Config, DurabilityMode},
    pb::{
        self, hold_service_client::HoldServiceClient,
        inventory_service_client::InventoryServiceClient, store_service_client::StoreServiceClient,
    },
};

const STORE: &str = "CMP1";
/// HTTP/2 connections the clients share, round robin.
const CONNECTIONS: usize = 4;

/// Runs every system; `progress` gets one line per step. A database that cannot be
/// reached is an error naming it.
pub fn run(cfg: &CompareConfig, progress: impl Fn(&str)) -> anyhow::Result<CompareReport> {
    let mut rep = CompareReport {
        clients: cfg.clients,
        ..CompareReport::default()
    };
    progress("PostgreSQL");
    let pg = compare::run_postgres(cfg).map_err(anyhow::Error::msg)?;
    progress("Redis");
    let rd = compare::run_redis(cfg).map_err(anyhow::Error::msg)?;
    progress("engine, WAL sync");
    let es = compare::run_engine(cfg, Durability::Sync).map_err(anyhow::Error::msg)?;
    progress("engine, WAL async");
    let ea = compare::run_engine(
        cfg,
        Durability::Async {
            flush_interval_ms: 1000,
        },
    )
    .map_err(anyhow::Error::msg)?;
    progress("sidecar over gRPC, durable");
    let sc = run_sidecar(cfg)?;
    rep.engine_holds_per_s = es.holds_per_s;
    rep.engine_async_holds_per_s = ea.holds_per_s;
    rep.sidecar_holds_per_s = sc.holds_per_s;
    rep.postgres_holds_per_s = pg.holds_per_s;
    rep.redis_holds_per_s = rd.holds_per_s;
    for (k, v) in [
        ("engine_sync", es),
        ("engine_async", ea),
        ("sidecar", sc),
        ("postgres", pg),
        ("redis", rd),
    ] {
        rep.runs.insert(k.to_owned(), v);
    }
    rep.finish();
    Ok(rep)
}

/// The sidecar in this process on loopback (WAL sync), `cfg.clients` tasks each with one
/// Hold (+ Release when granted) in flight.
pub fn run_sidecar(cfg: &CompareConfig) -> anyhow::Result<SystemRun> {
    super::block_on(sidecar_async(cfg))?
}

async fn sidecar_async(cfg: &CompareConfig) -> anyhow::Result<SystemRun> {
    let dir = cfg.dir.join("compare-sidecar");
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::default();
    config.data.dir = dir.clone();
    config.data.durability = DurabilityMode::Sync;
    config.grpc.concurrency_limit = 4 * cfg.clients + 64;
    let server = super::LocalServer::start(config, super::TOKEN).await?;
    let addr = server.grpc;
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(
            Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    // Store and stock (retrying while the engine recovers).
    let store = pb::StoreIdentity {
        store_id: STORE.into(),
        name: "Compare".into(),
        location: Some(pb::GeoPoint {
            latitude_deg: 40.7,
            longitude_deg: -74.0,
        }),
        time_zone: "America/New_York".into(),
        status: pb::StoreStatus::Open as i32,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = StoreServiceClient::new(channels[0].clone())
            .upsert_store(authed(pb::UpsertStoreRequest {
                idempotency_key: "cmp-store".into(),
                store: Some(store.clone()),
            }))
            .await;
        match r {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
    for chunk in (0..cfg.skus).collect::<Vec<_>>().chunks(1000) {
        let events = chunk
            .iter()
            .map(|k| pb::PosEvent {
                pos_event_id: format!("init-{k}"),
                store_id: STORE.into(),
                sku: sku_name(*k),
                occurred_at_ms: 1,
                change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                    kind: pb::PosDeltaKind::Receive as i32,
                    qty: cfg.stock,
                })),
                order_ref: String::new(),
            })
            .collect();
        InventoryServiceClient::new(channels[0].clone())
            .apply_pos_events(authed(pb::ApplyPosEventsRequest {
                idempotency_key: format!("init-{}", chunk[0]),
                events,
            }))
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for c in 0..cfg.clients {
        let holds = compare::client_holds(cfg, c, 4096);
        let mut client = HoldServiceClient::new(channels[c % channels.len()].clone());
        let (stop, granted, refused) = (stop.clone(), granted.clone(), refused.clone());
        tasks.spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let lines = &holds[i % holds.len()];
                let r = client
                    .hold(authed(pb::HoldRequest {
                        idempotency_key: format!("h{c}-{i}"),
                        store_id: STORE.into(),
                        lines: lines
                            .iter()
                            .map(|(k, q)| pb::Line {
                                sku: sku_name(*k),
                                qty: *q,
                            })
                            .collect(),
                        expiry: None,
                    }))
                    .await?
                    .into_inner();
                match r.outcome {
                    Some(pb::hold_response::Outcome::Granted(h)) => {
                        client
                            .release(authed(pb::ReleaseRequest {
                                idempotency_key: format!("r{c}-{i}"),
                                hold_id: h.hold_id,
                                reason: String::new(),
                            }))
                            .await?;
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            Ok::<(), tonic::Status>(())
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(cfg.secs)).await;
    stop.store(true, Ordering::Relaxed);
    for r in tasks.join_all().await {
        r?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Oversell check: every cell back to its stock, nothing held.
    let mut oversold = 0;
    let mut inv = InventoryServiceClient::new(channels[0].clone());
    for k in 0..cfg.skus {
        let a = inv
            .get_availability(authed(pb::GetAvailabilityRequest {
                store_id: STORE.into(),
                sku: sku_name(k),
            }))
            .await?
            .into_inner();
        let cell = a.cell.unwrap_or_default();
        if cell.held > cell.on_hand || cell.held != 0 || cell.on_hand != cfg.stock {
            oversold += 1;
        }
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (g, r) = (
        granted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    Ok(SystemRun {
        holds_per_s: (g + r) as f64 / elapsed,
        granted: g,
        refused: r,
        oversold_cells: oversold,
    })
}
