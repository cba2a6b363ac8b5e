//! `pickline bench grpc`: the gRPC server in this process on loopback, and a tonic client
//! load generator against it, both on one runtime (the 2-core budget is shared, as it
//! would be on a small store server).
//!
//! Measured in one run, on the same server:
//!
//! - `ping_rps`: closed loop, `concurrency` calls in flight, `AdminService.Ping` (the
//!   transport ceiling: auth, admission, metrics, no engine work).
//! - `hold_rps`: closed loop, the same concurrency, each in-flight slot alternating
//!   `Hold` (one line, keyed) and `Release` of that hold; the figure is unary mutation
//!   RPCs per second, so it compares one-for-one with Ping (`hold_vs_ping`).
//! - `batch_lines_per_s`: closed loop, `BatchHold` of `batch_len` single-line holds under
//!   one idempotency key per request (the contract's batched form);
//!   `batch_lines_per_s_hold_keys` the same with a key on every hold instead.
//! - `p99_ms_at_half_load`: open loop at half of `hold_rps`, same hold/release mix; each
//!   Hold's latency is measured from its *intended* send time (paced by a thread, not by
//!   tokio's 1 ms timer), so a stalled server cannot hide its queueing (coordinated
//!   omission corrected); each Release follows its Hold at once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::authed;
use pickline_sidecar::{
    config::{Config, DurabilityMode},
    pb::{
        self, admin_service_client::AdminServiceClient, hold_service_client::HoldServiceClient,
        inventory_service_client::InventoryServiceClient, store_service_client::StoreServiceClient,
    },
};

/// The bench's only token (admin scope: it may call everything).
/// SKUs the holds spread over (uniform).
const SKUS: u32 = 1_000;
/// Units received per SKU: enough that batch holds never run out.
const STOCK_PER_SKU: u32 = 1_000_000_000;
/// Client connections (HTTP/2), requests spread round robin.
const CONNECTIONS: usize = 4;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct GrpcBenchConfig {
    /// Data directory (wiped first).
    pub dir: std::path::PathBuf,
    /// WAL durability of the server.
    pub durability: DurabilityMode,
    /// Calls in flight in the closed loops.
    pub concurrency: usize,
    /// BatchHold requests in flight.
    pub batch_concurrency: usize,
    /// Holds per BatchHold request.
    pub batch_len: usize,
    /// Warm-up before each measured phase.
    pub warmup: Duration,
    /// Length of each measured phase.
    pub phase: Duration,
}

impl GrpcBenchConfig {
    /// The full configuration.
    pub fn full(dir: std::path::PathBuf, durability: DurabilityMode) -> Self {
        GrpcBenchConfig {
            dir,
            durability,
            concurrency: 64,
            batch_concurrency: 2,
            batch_len: 1_000,
            warmup: Duration::from_millis(500),
            phase: Duration::from_secs(3),
        }
    }

    /// A short smoke run; figures are not representative.
    pub fn quick(dir: std::path::PathBuf, durability: DurabilityMode) -> Self {
        GrpcBenchConfig {
            concurrency: 8,
            batch_len: 100,
            warmup: Duration::from_millis(50),
            phase: Duration::from_millis(300),
            ..Self::full(dir, durability)
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrpcBenchReport {
    /// Durability of the server's WAL.
    pub durability: String,
    /// Calls in flight in the closed loops.
    pub concurrency: usize,
    /// Empty RPCs per second.
    pub ping_rps: f64,
    /// Hold/Release RPCs per second.
    pub hold_rps: f64,
    /// `hold_rps / ping_rps` (target >= 0.8).
    pub hold_vs_ping: f64,
    /// Held lines per second through BatchHold with one idempotency key per request, the
    /// contract's batched form (target >= 1,000,000).
    pub batch_lines_per_s: f64,
    /// The same with an idempotency key on every hold instead.
    pub batch_lines_per_s_hold_keys: f64,
    /// Holds per BatchHold request.
    pub batch_len: usize,
    /// BatchHold requests in flight.
    pub batch_concurrency: usize,
    /// Offered rate of the open loop, RPCs per second.
    pub open_loop_rps: f64,
    /// p50 latency of the open loop, ms.
    pub p50_ms_at_half_load: f64,
    /// p99 latency of the open loop, ms (target <= 2).
    pub p99_ms_at_half_load: f64,
    /// p99.9 latency of the open loop, ms.
    pub p999_ms_at_half_load: f64,
    /// Requests of the open loop that failed (shed requests not counted).
    pub open_loop_errors: u64,
    /// Requests of the open loop the server shed with RESOURCE_EXHAUSTED (its in-flight
    /// limit reached, as admission control answers an overload; a stall of the disk can
    /// cause it at half load).
    pub open_loop_shed: u64,
}

impl GrpcBenchReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    /// A human-readable table.
    pub fn to_table(&self) -> String {
        format!(
            "gRPC bench (durability {}, {} in flight)\n\
             ping_rps             {:>12.0}\n\
             hold_rps             {:>12.0}   (Hold+Release RPCs)\n\
             hold_vs_ping         {:>12.3}   target >= 0.8\n\
             batch_lines_per_s    {:>12.0}   target >= 1000000 ({} holds/request, {} in flight)\n\
             ... a key per hold   {:>12.0}\n\
             open loop at         {:>12.0}   RPC/s (half of hold_rps)\n\
             p50_ms_at_half_load  {:>12.3}\n\
             p99_ms_at_half_load  {:>12.3}   target <= 2\n\
             p999_ms_at_half_load {:>12.3}\n\
             open loop errors     {:>12}\n\
             open loop shed       {:>12}\n",
            self.durability,
            self.concurrency,
            self.ping_rps,
            self.hold_rps,
            self.hold_vs_ping,
            self.batch_lines_per_s,
            self.batch_len,
            self.batch_concurrency,
            self.batch_lines_per_s_hold_keys,
            self.open_loop_rps,
            self.p50_ms_at_half_load,
            self.p99_ms_at_half_load,
            self.p999_ms_at_half_load,
            self.open_loop_errors,
            self.open_loop_shed,
        )
    }
}

/// Runs the benchmark; `progress` gets one line per step.
pub fn run(cfg: &GrpcBenchConfig, progress: impl Fn(&str)) -> anyhow::Result<GrpcBenchReport> {
    super::block_on(run_async(cfg, &progress))?
}

async fn run_async(
    cfg: &GrpcBenchConfig,
    progress: &dyn Fn(&str),
) -> anyhow::Result<GrpcBenchReport> {
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let mut config = Config::default();
    config.data.dir = cfg.dir.clone();
    config.data.durability = cfg.durability;
    // The batch phase leaves every hold active: millions at a million lines per second.
    config.data.store_active_holds_max = 20_000_000;
    config.grpc.concurrency_limit = 4 * cfg.concurrency.max(cfg.batch_concurrency) + 64;
    config.grpc.max_message_bytes = 64 << 20;
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
    progress("waiting for the engine to recover");
    setup(&channels[0]).await?;

    progress("closed loop: Ping");
    let ping_rps = closed_loop(cfg, &channels, |ch, _, _| async move {
        AdminServiceClient::new(ch)
            .ping(authed(pb::PingRequest {}))
            .await
            .map(|_| 1)
    })
    .await?;

    progress("closed loop: Hold + Release");
    let hold_rps = closed_loop(cfg, &channels, |ch, worker, i| async move {
        hold_release(ch, worker, i).await
    })
    .await?;

    // The open loop runs before BatchHold, on the state the unary loop left: the batch
    // phase leaves hundreds of thousands of holds active, which is not the state to
    // measure unary latency on.
    let open_loop_rps = (hold_rps / 2.0).max(1.0);
    progress(&format!(
        "open loop: Hold + Release at {open_loop_rps:.0} RPC/s"
    ));
    let (hist, failures) = open_loop(cfg, &channels, open_loop_rps).await?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1_000.0;

    let batch_cfg = GrpcBenchConfig {
        concurrency: cfg.batch_concurrency,
        ..cfg.clone()
    };
    progress("closed loop: BatchHold, a key per hold");
    let batch_lines_per_s_hold_keys = batch_loop(&batch_cfg, &channels, false).await?;
    progress("closed loop: BatchHold, a key per batch");
    let batch_lines_per_s = batch_loop(&batch_cfg, &channels, true).await?;

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&cfg.dir);
    Ok(GrpcBenchReport {
        durability: format!("{:?}", cfg.durability).to_lowercase(),
        concurrency: cfg.concurrency,
        ping_rps,
        hold_rps,
        hold_vs_ping: hold_rps / ping_rps,
        batch_lines_per_s,
        batch_lines_per_s_hold_keys,
        batch_len: cfg.batch_len,
        batch_concurrency: cfg.batch_concurrency,
        open_loop_rps,
        p50_ms_at_half_load: ms(0.50),
        p99_ms_at_half_load: ms(0.99),
        p999_ms_at_half_load: ms(0.999),
        open_loop_errors: failures.errors.load(Ordering::Relaxed),
        open_loop_shed: failures.shed.load(Ordering::Relaxed),
    })
}

/// Waits until the engine serves, then creates the store and its stock.
async fn setup(channel: &Channel) -> anyhow::Result<()> {
    let mut stores = StoreServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let store = pb::StoreIdentity {
        store_id: "B1".into(),
        name: "Bench".into(),
        location: Some(pb::GeoPoint {
            latitude_deg: 48.14,
            longitude_deg: 11.58,
        }),
        time_zone: "Europe/Berlin".into(),
        status: pb::StoreStatus::Open as i32,
        ..Default::default()
    };
    loop {
        let r = stores
            .upsert_store(authed(pb::UpsertStoreRequest {
                idempotency_key: "bench-store".into(),
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
    let events = (0..SKUS)
        .map(|s| pb::PosEvent {
            pos_event_id: format!("recv-{s}"),
            store_id: "B1".into(),
            sku: format!("SKU-{s}"),
            occurred_at_ms: 1,
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: pb::PosDeltaKind::Receive as i32,
                qty: STOCK_PER_SKU,
            })),
            order_ref: String::new(),
        })
        .collect();
    InventoryServiceClient::new(channel.clone())
        .apply_pos_events(authed(pb::ApplyPosEventsRequest {
            idempotency_key: "bench-stock".into(),
            events,
        }))
        .await?;
    Ok(())
}

/// Closed loop of `BatchHold` requests of `cfg.batch_len` single-line holds, keyed per
/// batch (`batch_key`) or per hold; returns granted lines per second.
async fn batch_loop(
    cfg: &GrpcBenchConfig,
    channels: &[Channel],
    batch_key: bool,
) -> anyhow::Result<f64> {
    let batch_len = cfg.batch_len;
    let sku_names: Arc<[String]> = (0..SKUS).map(|s| format!("SKU-{s}")).collect();
    closed_loop(cfg, channels, move |ch, worker, i| {
        let key = |j: usize| match batch_key {
            true => String::new(),
            false => format!("b{worker}-{i}-{j}"),
        };
        let holds = (0..batch_len)
            .map(|j| pb::HoldRequest {
                idempotency_key: key(j),
                store_id: "B1".into(),
                lines: vec![pb::Line {
                    sku: sku_names[(j + i as usize) % sku_names.len()].clone(),
                    qty: 1,
                }],
                expiry: None,
            })
            .collect();
        let idempotency_key = match batch_key {
            true => format!("k{worker}-{i}"),
            false => String::new(),
        };
        batch_hold_grants(
            ch,
            pb::BatchHoldRequest {
                holds,
                idempotency_key,
            },
        )
    })
    .await
}

/// The part of a `BatchHoldResponse` the load generator checks: which results are grants
/// (field 1 of `HoldResponse`, with their hold ids). The server encodes the whole response
/// as for any client; decoding only this (prost skips the other fields without
/// allocating) keeps the generator, which shares the two cores with the server, from
/// spending a fifth of them on response fields it does not read.
#[derive(Clone, PartialEq, prost::Message)]
struct BatchGrants {
    #[prost(message, repeated, tag = "1")]
    results: Vec<GrantOnly>,
}

/// `HoldResponse` reduced to `granted.hold_id`.
#[derive(Clone, PartialEq, prost::Message)]
struct GrantOnly {
    #[prost(message, optional, tag = "1")]
    granted: Option<HoldIdOnly>,
}

/// `HoldInfo` reduced to `hold_id`.
#[derive(Clone, PartialEq, prost::Message)]
struct HoldIdOnly {
    #[prost(uint64, tag = "1")]
    hold_id: u64,
}

/// `HoldService.BatchHold`, decoding the response as [`BatchGrants`]: the number of holds
/// granted (each with a hold id).
async fn batch_hold_grants(ch: Channel, req: pb::BatchHoldRequest) -> Result<u64, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<pb::BatchHoldRequest, BatchGrants>::default();
    let path = http::uri::PathAndQuery::from_static("/pickline.v1.HoldService/BatchHold");
    let r = grpc.unary(authed(req), path, codec).await?.into_inner();
    Ok(r.results
        .iter()
        .filter(|g| g.granted.as_ref().is_some_and(|h| h.hold_id != 0))
        .count() as u64)
}

/// One Hold followed by the Release of the granted hold: 2 RPCs.
async fn hold_release(ch: Channel, worker: usize, i: u64) -> Result<u64, tonic::Status> {
    let mut holds = HoldServiceClient::new(ch);
    let r = holds
        .hold(authed(pb::HoldRequest {
            idempotency_key: format!("h{worker}-{i}"),
            store_id: "B1".into(),
            lines: vec![pb::Line {
                sku: format!("SKU-{}", (worker as u64 * 7919 + i) % u64::from(SKUS)),
                qty: 1,
            }],
            expiry: None,
        }))
        .await?
        .into_inner();
    let Some(pb::hold_response::Outcome::Granted(h)) = r.outcome else {
        return Err(tonic::Status::internal(format!("hold not granted: {r:?}")));
    };
    holds
        .release(authed(pb::ReleaseRequest {
            idempotency_key: format!("r{worker}-{i}"),
            hold_id: h.hold_id,
            reason: String::new(),
        }))
        .await?;
    Ok(2)
}

/// Runs `call` from `cfg.concurrency` workers, each with one call in flight, for the
/// warm-up and then the measured phase; returns units (the calls' `Ok` values) per
/// second of the measured phase.
async fn closed_loop<F, Fut>(
    cfg: &GrpcBenchConfig,
    channels: &[Channel],
    call: F,
) -> anyhow::Result<f64>
where
    F: Fn(Channel, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, tonic::Status>> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let units = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(cfg.concurrency);
    for worker in 0..cfg.concurrency {
        let (call, measuring, stop, units) =
            (call.clone(), measuring.clone(), stop.clone(), units.clone());
        let ch = channels[worker % channels.len()].clone();
        // Keys must never repeat across phases or runs of the same server.
        let seed = rand_seed();
        workers.push(tokio::spawn(async move {
            let mut i = seed;
            while !stop.load(Ordering::Relaxed) {
                let n = call(ch.clone(), worker, i).await?;
                i += 1;
                if measuring.load(Ordering::Relaxed) {
                    units.fetch_add(n, Ordering::Relaxed);
                }
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    tokio::time::sleep(cfg.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(cfg.phase).await;
    let n = units.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

fn rand_seed() -> u64 {
    use rand::RngExt as _;
    rand::rng().random::<u64>() >> 16
}

/// Open loop at `rate_rps` RPCs per second: pairs of Hold and the Release of that hold,
/// one pair every `2 / rate_rps` seconds. Returns the latency histogram (µs) of both RPCs
/// and the number of failed requests.
///
/// Each Hold's latency counts from its *intended* send time, so a stalled server cannot
/// hide its queue (coordinated omission). The intended times come from a pacing thread,
/// not from tokio's timer, whose 1 ms wheel would add up to a millisecond of the
/// generator's own lag to every sample. The pacer sleeps on the OS timer with a 1 µs
/// timer slack and, each time it wakes, spawns every pair that is due straight onto the
/// runtime: it neither spins nor hands pairs to another thread, so the generator takes
/// no core away from the server it measures (a spinning pacer and a receiving thread
/// took most of one of the two cores and put multi-ms run-queue waits on the workers).
/// The lag between a pair's intended time and the pacer's wake counts in its latency.
/// The Release is sent as soon as its Hold answers and counts from then.
async fn open_loop(
    cfg: &GrpcBenchConfig,
    channels: &[Channel],
    rate_rps: f64,
) -> anyhow::Result<(Histogram<u64>, Arc<OpenLoopFailures>)> {
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(OpenLoopFailures::default());
    // One pair is 2 RPCs: schedule pairs at half the RPC rate.
    let interval = Duration::from_secs_f64(2.0 / rate_rps);
    let total = cfg.warmup + cfg.phase;
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + cfg.warmup;
    let pairs = (total.as_secs_f64() / interval.as_secs_f64()) as u64;
    let seed = rand_seed();
    let channels = channels.to_vec();
    let pacer = {
        let (hist, errors) = (hist.clone(), errors.clone());
        tokio::task::spawn_blocking(move || {
            set_fine_timer_slack();
            let mut tasks = tokio::task::JoinSet::new();
            let mut i = 0;
            while i < pairs {
                let now = Instant::now();
                while i < pairs && start + interval.mul_f64(i as f64) <= now {
                    let intended = start + interval.mul_f64(i as f64);
                    let ch = channels[i as usize % channels.len()].clone();
                    let (hist, errors) = (hist.clone(), errors.clone());
                    let measured = intended >= measure_from;
                    tasks.spawn(hold_release_from(
                        ch, seed, i, intended, measured, hist, errors,
                    ));
                    i += 1;
                }
                // Reap finished pairs as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
                if i < pairs {
                    let next = start + interval.mul_f64(i as f64);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
            tasks
        })
    };
    let mut tasks = pacer.await?;
    while tasks.join_next().await.is_some() {}
    let hist = Arc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("histogram still shared"))?
        .into_inner();
    Ok((hist, errors))
}

/// Failed requests of the open loop: shed by admission control, or anything else.
#[derive(Debug, Default)]
struct OpenLoopFailures {
    errors: AtomicU64,
    shed: AtomicU64,
}

impl OpenLoopFailures {
    fn failed(&self, status: Option<&tonic::Status>) {
        let counter = match status {
            Some(s) if s.code() == tonic::Code::ResourceExhausted => &self.shed,
            _ => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One open-loop pair: the Hold (latency from `intended`) and the Release of its hold
/// (latency from its own send). Records into `hist` when `measured`.
async fn hold_release_from(
    ch: Channel,
    seed: u64,
    i: u64,
    intended: Instant,
    measured: bool,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<OpenLoopFailures>,
) {
    let mut holds = HoldServiceClient::new(ch);
    let record = |from: Instant| {
        if measured {
            let us = from.elapsed().as_micros().max(1) as u64;
            let _ = hist.lock().record(us.min(60_000_000));
        }
    };
    let r = holds
        .hold(authed(pb::HoldRequest {
            idempotency_key: format!("o{seed}-{i}"),
            store_id: "B1".into(),
            lines: vec![pb::Line {
                sku: format!("SKU-{}", i % u64::from(SKUS)),
                qty: 1,
            }],
            expiry: None,
        }))
        .await;
    record(intended);
    let r = match r {
        Ok(r) => r,
        Err(s) => return errors.failed(Some(&s)),
    };
    let Some(pb::hold_response::Outcome::Granted(h)) = r.into_inner().outcome else {
        return errors.failed(None);
    };
    let sent = Instant::now();
    let r = holds
        .release(authed(pb::ReleaseRequest {
            idempotency_key: format!("or{seed}-{i}"),
            hold_id: h.hold_id,
            reason: String::new(),
        }))
        .await;
    record(sent);
    if let Err(s) = r {
        errors.failed(Some(&s));
    }
}

/// Asks the kernel to wake this thread's timed sleeps within 1 µs of their deadline
/// (the default slack is 50 µs). Best effort: outside Linux the default stays.
fn set_fine_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000, 0, 0, 0);
    }
}
