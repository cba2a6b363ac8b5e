//! `pickline bench notify`: the whole pipeline, from the engine's event to an SMTP
//! server's acceptance, in one process.
//!
//! An engine (in-memory log) takes pickup orders through confirmed and ready; the
//! notifier (real journal with fsync under `--dir`, real templates, lettre over TCP)
//! sends each order's confirmation and ready emails to a local SMTP sink (a minimal
//! server in this file that accepts everything; it stands for the relay, so the figure is
//! Pickline's side of the pipeline).
//!
//! - `messages_per_s`: a backlog of orders is made first; the notifier starts and the
//!   clock runs until the sink has accepted every message (plan, journal, acknowledge,
//!   render, MIME, SMTP).
//! - `event_to_send_p99_ms`: orders arrive at a steady rate while the notifier runs; per
//!   message, the time from its event (the record's time) to the sink's acceptance.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use pickline_engine::{
    CreateOrder, Customer, HoldRequest, LineRequest, OrderId, OrderLineRequest, PosDelta,
    PosDeltaKind, StoreDef, Timestamp,
    durable::{DurableEngine, OpenOptions},
    pickup_code::StaffId,
    wal::MemStorage,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
};

use pickline_sidecar::notify::{
    Kind, NotifyConfig, SystemClock,
    config::SmtpTls,
    runner::{Notifier, NotifyHandle},
};

/// `[notify] concurrency` of the run.
pub const BENCH_CONCURRENCY: usize = 256;

/// Sizes of a run.
#[derive(Clone, Copy, Debug)]
pub struct NotifyBenchConfig {
    /// Orders in the throughput backlog (two emails each).
    pub backlog_orders: usize,
    /// Orders per second in the latency phase.
    pub paced_orders_per_s: u32,
    /// Length of the latency phase.
    pub paced: Duration,
}

impl NotifyBenchConfig {
    /// The full run.
    pub fn full() -> Self {
        NotifyBenchConfig {
            backlog_orders: 10_000,
            paced_orders_per_s: 250,
            paced: Duration::from_secs(5),
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        NotifyBenchConfig {
            backlog_orders: 300,
            paced_orders_per_s: 100,
            paced: Duration::from_millis(500),
        }
    }
}

/// The figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NotifyBenchReport {
    /// Messages rendered and accepted by the SMTP sink per second (backlog phase).
    pub messages_per_s: f64,
    /// Messages of the backlog phase.
    pub backlog_messages: usize,
    /// 99th percentile, event to the sink's acceptance, paced phase, ms.
    pub event_to_send_p99_ms: f64,
    /// Median of the same, ms.
    pub event_to_send_p50_ms: f64,
    /// Messages of the paced phase.
    pub paced_messages: usize,
}

impl NotifyBenchReport {
    /// A human-readable table.
    pub fn to_table(&self) -> String {
        format!(
            "messages_per_s        {:.0} ({} emails: event -> journal -> render -> SMTP sink)\n\
             event_to_send_p99_ms  {:.1} (p50 {:.1}; {} emails at a steady rate)\n",
            self.messages_per_s,
            self.backlog_messages,
            self.event_to_send_p99_ms,
            self.event_to_send_p50_ms,
            self.paced_messages
        )
    }
}

fn wall_ms() -> i64 {
    use pickline_sidecar::notify::Clock as _;
    SystemClock.now_ms()
}

/// What the sink saw: (order, kind) -> acceptance time (ms since the epoch).
type Accepted = Arc<Mutex<HashMap<(u64, String), i64>>>;

/// A minimal SMTP server that accepts every message and notes its `Message-ID`.
async fn sink(listener: TcpListener, accepted: Accepted) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            if w.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            let mut in_data = false;
            let mut id: Option<(u64, String)> = None;
            loop {
                line.clear();
                match r.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        if let Some(k) = id.take() {
                            accepted.lock().insert(k, wall_ms());
                        }
                        let _ = w.write_all(b"250 2.0.0 accepted\r\n").await;
                    } else if line.len() > 11 && line[..11].eq_ignore_ascii_case("message-id:") {
                        // <order.kind.channel@pickline.invalid>
                        let v = line[11..].trim().trim_start_matches('<');
                        let mut parts = v.split('.');
                        if let (Some(o), Some(k)) = (parts.next(), parts.next()) {
                            id = o.parse().ok().map(|o| (o, k.to_owned()));
                        }
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 ok\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Makes `n` orders ready; returns (order, kind) -> event time.
fn make_orders(
    db: &DurableEngine,
    first: usize,
    n: usize,
    pace: Option<Duration>,
) -> anyhow::Result<HashMap<(u64, String), i64>> {
    let e = db.engine();
    let staff = StaffId::new("bench").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut events = HashMap::new();
    let start = Instant::now();
    for i in first..first + n {
        if let Some(p) = pace {
            let at = start + p * (i - first) as u32;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let now = Timestamp(wall_ms());
        let hold = e
            .hold(
                &HoldRequest::new("S1", vec![LineRequest::new("MUG", 1)]).with_ttl_ms(7_200_000),
                now,
            )?
            .granted()
            .ok_or_else(|| anyhow::anyhow!("bench hold refused"))?
            .hold;
        let order = OrderId::from_hold(hold);
        e.create_order(
            &CreateOrder {
                hold,
                channel: "bench".into(),
                channel_order_id: format!("B{i}"),
                customer: Customer {
                    name: Some("Bench".into()),
                    locale: Some("de-DE".into()),
                    email: Some(format!("customer{i}@example.com")),
                    phone: None,
                    sms_consent: false,
                    email_consent: true,
                },
                lines: vec![OrderLineRequest {
                    sku: "MUG".into(),
                    qty: 1,
                    unit_price_minor: 990,
                    description: "Coffee mug".into(),
                }],
                currency: "EUR".into(),
                idempotency_key: None,
            },
            now,
        )?;
        let t = Timestamp(wall_ms());
        e.confirm_order(order, t)?;
        events.insert((order.0, Kind::Confirmation.as_str().to_owned()), t.as_ms());
        e.start_picking(order, &staff, t)?;
        let t = Timestamp(wall_ms());
        let mut entropy = [0u8; 8];
        entropy.copy_from_slice(&(i as u64 ^ 0x5DEE_CE66_D1CE_4E5B).to_le_bytes());
        e.mark_ready(order, &staff, entropy, t)?;
        events.insert((order.0, Kind::Ready.as_str().to_owned()), t.as_ms());
    }
    Ok(events)
}

async fn wait_for(accepted: &Accepted, n: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while accepted.lock().len() < n {
        if Instant::now() > deadline {
            anyhow::bail!(
                "the sink accepted {} of {n} messages in {limit:?}",
                accepted.lock().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs the benchmark with its journal under `dir`.
pub fn run(cfg: &NotifyBenchConfig, dir: &Path) -> anyhow::Result<NotifyBenchReport> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = dir.join(format!("notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = rt.block_on(run_in(cfg, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(cfg: &NotifyBenchConfig, dir: &Path) -> anyhow::Result<NotifyBenchReport> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let accepted: Accepted = Arc::default();
    tokio::spawn(sink(listener, accepted.clone()));

    let db = Arc::new(
        DurableEngine::open(Arc::new(MemStorage::new()), OpenOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let now = Timestamp(wall_ms());
    let mut store = StoreDef::new("S1", 52.52, 13.40, "Europe/Berlin");
    store.name = "Pickline Mitte".into();
    store.pickup_instructions = "Pickup desk by entrance B".into();
    db.engine().define_store(store, now)?;
    let total = cfg.backlog_orders
        + cfg.paced_orders_per_s as usize * cfg.paced.as_secs() as usize
        + 10_000;
    db.engine().apply_delta(
        &PosDelta {
            store: "S1".into(),
            sku: "MUG".into(),
            pos_event_id: "stock".into(),
            kind: PosDeltaKind::Receive,
            qty: total as i64 * 2,
            order_ref: None,
            pos_time: now,
        },
        now,
    )?;

    let mut config = NotifyConfig {
        enabled: true,
        ..NotifyConfig::default()
    };
    config.email.host = "127.0.0.1".into();
    config.email.port = port;
    config.email.tls = SmtpTls::Plain;
    config.email.rate_per_s = 1_000_000;
    config.sms.enabled = false;
    // Sends in flight: their outcomes share one journal fsync, which on a busy disk
    // costs milliseconds (the figure is recorded with this setting).
    config.concurrency = BENCH_CONCURRENCY;

    // Backlog: every order first, then the notifier.
    let db2 = db.clone();
    let n = cfg.backlog_orders;
    tokio::task::spawn_blocking(move || make_orders(&db2, 0, n, None)).await??;
    let handle = NotifyHandle::default();
    let notifier = Notifier::open(config, db.clone(), dir, Arc::new(SystemClock), &handle)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(notifier.run(async {
        let _ = stop_rx.await;
    }));
    let backlog_messages = 2 * n;
    wait_for(&accepted, backlog_messages, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();

    // Paced: orders at a steady rate while the notifier runs.
    let paced_n = (cfg.paced_orders_per_s as f64 * cfg.paced.as_secs_f64()) as usize;
    let db2 = db.clone();
    let pace = Duration::from_secs(1) / cfg.paced_orders_per_s.max(1);
    let events =
        tokio::task::spawn_blocking(move || make_orders(&db2, n, paced_n, Some(pace))).await??;
    wait_for(
        &accepted,
        backlog_messages + 2 * paced_n,
        Duration::from_secs(120),
    )
    .await?;
    let _ = stop_tx.send(());
    let _ = task.await;

    let acc = accepted.lock();
    let mut lat: Vec<f64> = events
        .iter()
        .filter_map(|(k, ev)| acc.get(k).map(|a| (a - ev).max(0) as f64))
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok(NotifyBenchReport {
        messages_per_s: backlog_messages as f64 / elapsed.as_secs_f64(),
        backlog_messages,
        event_to_send_p99_ms: percentile(&lat, 0.99),
        event_to_send_p50_ms: percentile(&lat, 0.50),
        paced_messages: lat.len(),
    })
}
