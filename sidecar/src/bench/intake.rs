//! `pickline bench intake`: normalize + validate throughput of the Shopify fixture on one
//! thread (SPEC target: 50,000 orders per second per core).

use std::time::{Duration, Instant};

use pickline_sidecar::intake::{self, Channel, IntakeConfig, Payload, Verdict};

/// The Shopify orders/create sample (`tests/fixtures/channels/shopify_order.json`, 14,894
/// bytes), embedded so the benchmark runs from any directory.
pub const SHOPIFY_ORDER: &[u8] = include_bytes!("../../tests/fixtures/channels/shopify_order.json");

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct IntakeBenchConfig {
    /// Untimed iterations first (caches, allocator).
    pub warmup: Duration,
    /// Timed run length.
    pub measure: Duration,
}

impl IntakeBenchConfig {
    /// The full run.
    pub fn full() -> Self {
        IntakeBenchConfig {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        IntakeBenchConfig {
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(200),
        }
    }
}

/// The figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IntakeBenchReport {
    /// Orders normalized and validated per second, one thread.
    pub shopify_orders_per_s: f64,
    /// Orders processed in the timed run.
    pub orders: u64,
    /// Size of one payload.
    pub payload_bytes: usize,
}

impl IntakeBenchReport {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        format!(
            "shopify_orders_per_s {:.0} ({} orders of {} bytes, normalize + validate, 1 thread)\n",
            self.shopify_orders_per_s, self.orders, self.payload_bytes
        )
    }
}

/// Normalizes and validates the Shopify fixture in a loop on this thread.
pub fn run(cfg: &IntakeBenchConfig) -> IntakeBenchReport {
    let config = IntakeConfig::default();
    let once = || {
        let payload = Payload {
            body: std::hint::black_box(SHOPIFY_ORDER),
            related: &[],
        };
        let verdict = intake::evaluate(Channel::Shopify, "bench", payload, &config);
        // The sample is a test order without pickup: refused by the default rules, after
        // the full normalization and every rule.
        debug_assert!(matches!(verdict, Verdict::Rejected { .. }));
        std::hint::black_box(verdict);
    };
    let start = Instant::now();
    while start.elapsed() < cfg.warmup {
        once();
    }
    let mut orders = 0u64;
    let start = Instant::now();
    let elapsed = loop {
        for _ in 0..256 {
            once();
        }
        orders += 256;
        let elapsed = start.elapsed();
        if elapsed >= cfg.measure {
            break elapsed;
        }
    };
    IntakeBenchReport {
        shopify_orders_per_s: orders as f64 / elapsed.as_secs_f64(),
        orders,
        payload_bytes: SHOPIFY_ORDER.len(),
    }
}

/// The Zapiet pickup order (location 67890, four lines), the webhook benchmark's payload;
/// its order id is replaced per request.
pub const SHOPIFY_PICKUP_ORDER: &[u8] =
    include_bytes!("../../tests/fixtures/channels/shopify_order_zapiet_pickup.json");
const PICKUP_ORDER_ID: &str = "820982911946154508";
const PICKUP_SKUS: [&str; 4] = [
    "49148385",
    "LENS-PROTECT-2YR",
    "CASE-LEATHER-PREM",
    "SKU2006-035",
];
const WEBHOOK_SECRET: &str = "bench-webhook-secret";

/// How the webhook benchmark runs.
#[derive(Clone, Debug)]
pub struct WebhookBenchConfig {
    /// Data directory (removed before and after).
    pub dir: std::path::PathBuf,
    /// Connections in the closed loop (and in the open loop's pool).
    pub connections: usize,
    /// Untimed run first.
    pub warmup: Duration,
    /// Each timed loop's length.
    pub measure: Duration,
}

/// The webhook figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WebhookBenchReport {
    /// Signed Shopify webhooks to durable acceptance and a confirmed hold, per second
    /// (closed loop, `connections` in flight, loopback, sync durability).
    pub webhook_orders_per_s: f64,
    /// p50 and p99 latency in an open loop at half of `webhook_orders_per_s`, ms
    /// (measured from each request's scheduled start), in the steady state: connections
    /// opened first, `warmup` for the server to drain the closed loop, then `warmup` of
    /// the schedule unrecorded before `measure` recorded.
    pub webhook_p50_ms_at_half_load: f64,
    /// See `webhook_p50_ms_at_half_load`.
    pub webhook_p99_ms_at_half_load: f64,
    /// Requests not answered 200 `accepted` (must be 0).
    pub webhook_errors: u64,
    /// Connections in flight.
    pub connections: usize,
}

/// A minimal HTTP/1.1 keep-alive client for one connection.
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    addr: std::net::SocketAddr,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: tokio::io::BufReader::new(stream),
            addr,
        })
    }

    /// POSTs a signed order with id `id`; true when it was accepted.
    async fn deliver(&mut self, template: &str, id: u64) -> std::io::Result<bool> {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let body = template.replacen(PICKUP_ORDER_ID, &id.to_string(), 2);
        let signature = intake::signature::sign_b64(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
        let head = format!(
            "POST /intake/shopify HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-Shopify-Hmac-Sha256: {signature}\r\nX-Shopify-Shop-Domain: bench.myshopify.com\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let ok = line.split(' ').nth(1) == Some("200");
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut answer = vec![0u8; len];
        self.stream.read_exact(&mut answer).await?;
        Ok(ok && answer.windows(19).any(|w| w == b"\"outcome\":\"accepted"))
    }
}

/// Runs the webhook benchmark (its own runtime; `progress` gets one line per step).
pub fn run_webhook(
    cfg: &WebhookBenchConfig,
    progress: impl Fn(&str),
) -> anyhow::Result<WebhookBenchReport> {
    super::block_on(webhook_async(cfg, &progress))?
}

async fn webhook_async(
    cfg: &WebhookBenchConfig,
    progress: &dyn Fn(&str),
) -> anyhow::Result<WebhookBenchReport> {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let _ = std::fs::remove_dir_all(&cfg.dir);
    let mut config = pickline_sidecar::config::Config::default();
    config.data.dir = cfg.dir.clone();
    let shopify = &mut config.intake.shopify;
    shopify.webhook_secret = Some(intake::config::WebhookSecret::new(WEBHOOK_SECRET));
    shopify.store_map.insert("67890".into(), "S1".into());
    shopify.hold_ref_key = "no_such_attribute".into();
    config.intake.flow.queue_len_max = cfg.connections * 4;
    let server = super::LocalServer::start(config, super::TOKEN).await?;
    let (grpc_addr, http_addr) = (server.grpc, server.http);
    progress("waiting for the engine to recover; store S1 and its stock");
    setup(grpc_addr).await?;

    let template = Arc::new(String::from_utf8(SHOPIFY_PICKUP_ORDER.to_vec())?);
    let next_id = Arc::new(AtomicU64::new(1));
    let errors = Arc::new(AtomicU64::new(0));

    // Closed loop: every connection sends its next order as soon as the last is answered.
    let closed = |duration: Duration| {
        let (template, next_id, errors) = (template.clone(), next_id.clone(), errors.clone());
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let until = Instant::now() + duration;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..cfg.connections {
                let (template, next_id, errors, done) = (
                    template.clone(),
                    next_id.clone(),
                    errors.clone(),
                    done.clone(),
                );
                tasks.spawn(async move {
                    let mut conn = Conn::open(http_addr).await?;
                    while Instant::now() < until {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        if conn.deliver(&template, id).await? {
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::io::Result::Ok(())
                });
            }
            let start = Instant::now();
            while let Some(t) = tasks.join_next().await {
                t??;
            }
            anyhow::Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
        }
    };
    progress("warm-up");
    closed(cfg.warmup).await?;
    errors.store(0, Ordering::Relaxed);
    progress("closed loop");
    let rate = closed(cfg.measure).await?;

    // Open loop at half that rate: requests start on schedule whatever the answers do;
    // latency counts from the scheduled start (no coordinated omission). The figure is the
    // steady state at that rate: every connection is open before the schedule starts, the
    // server first drains, for `warmup`, what the saturating closed loop left behind (answers already
    // came back, but its group commits, journal settlements and checkpoint may still
    // run), and the first `warmup` of the schedule runs unrecorded, as the closed loop's
    // warm-up does.
    let half = (rate / 2.0).max(1.0);
    progress(&format!("open loop at {half:.0} orders/s"));
    tokio::time::sleep(cfg.warmup).await;
    let interval = Duration::from_secs_f64(1.0 / half);
    let warm = (half * cfg.warmup.as_secs_f64()) as u64;
    let count = warm + (half * cfg.measure.as_secs_f64()) as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Instant, bool)>(count.max(1) as usize);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let hist = Arc::new(parking_lot::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    ));
    let opened = Arc::new(tokio::sync::Barrier::new(cfg.connections + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.connections {
        let (template, next_id, errors, rx, hist, opened) = (
            template.clone(),
            next_id.clone(),
            errors.clone(),
            rx.clone(),
            hist.clone(),
            opened.clone(),
        );
        tasks.spawn(async move {
            let conn = Conn::open(http_addr).await;
            opened.wait().await;
            let mut conn = conn?;
            loop {
                let Some((scheduled, recorded)) = rx.lock().await.recv().await else {
                    return std::io::Result::Ok(());
                };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let accepted = conn.deliver(&template, id).await?;
                if !recorded {
                    continue;
                }
                if !accepted {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let us = scheduled.elapsed().as_micros().max(1) as u64;
                let _ = hist.lock().record(us.min(60_000_000));
            }
        });
    }
    opened.wait().await;
    let start = Instant::now();
    for i in 0..count {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        if tx.send((at, i >= warm)).await.is_err() {
            break;
        }
    }
    drop(tx);
    while let Some(t) = tasks.join_next().await {
        t??;
    }
    let report = {
        let hist = hist.lock();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        WebhookBenchReport {
            webhook_orders_per_s: rate,
            webhook_p50_ms_at_half_load: ms(0.50),
            webhook_p99_ms_at_half_load: ms(0.99),
            webhook_errors: errors.load(Ordering::Relaxed),
            connections: cfg.connections,
        }
    };
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&cfg.dir);
    Ok(report)
}

/// Waits until the engine serves, then registers S1 with plenty of every pickup SKU.
async fn setup(grpc: std::net::SocketAddr) -> anyhow::Result<()> {
    use super::authed;
    use pickline_sidecar::pb;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut stores = pb::store_service_client::StoreServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = stores
            .upsert_store(authed(pb::UpsertStoreRequest {
                idempotency_key: "bench-store".into(),
                store: Some(pb::StoreIdentity {
                    store_id: "S1".into(),
                    name: "Bench".into(),
                    location: Some(pb::GeoPoint {
                        latitude_deg: 48.14,
                        longitude_deg: 11.58,
                    }),
                    time_zone: "Europe/Berlin".into(),
                    status: pb::StoreStatus::Open as i32,
                    ..Default::default()
                }),
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
    let events = PICKUP_SKUS
        .iter()
        .map(|sku| pb::PosEvent {
            pos_event_id: format!("recv-{sku}"),
            store_id: "S1".into(),
            sku: (*sku).into(),
            occurred_at_ms: 1,
            change: Some(pb::pos_event::Change::Delta(pb::PosDelta {
                kind: pb::PosDeltaKind::Receive as i32,
                qty: 100_000_000,
            })),
            order_ref: String::new(),
        })
        .collect();
    pb::inventory_service_client::InventoryServiceClient::new(channel)
        .apply_pos_events(authed(pb::ApplyPosEventsRequest {
            idempotency_key: "bench-stock".into(),
            events,
        }))
        .await?;
    Ok(())
}
