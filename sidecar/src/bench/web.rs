//! `pickline bench pages`: server-side render time of the staff queue with 500 open
//! orders in one store (reading the orders from the engine and rendering the HTML, what a
//! `GET /staff/queue` does after the session check), and of the order and customer
//! status pages.
//!
//! The engine is in memory (no log: page reads never touch the log), with one store that
//! has a pickup calendar, so the queue is grouped by slot as in a real store: a third of
//! the orders confirmed, a third picking, a third ready.

use std::time::Instant;

use pickline_engine::{
    Customer, Engine, EngineConfig, HoldOutcome, HoldRequest, LineRequest, OrderId,
    OrderLineRequest, PosDelta, PosDeltaKind, StoreDef, Timestamp,
    calendar::{
        CalendarConfig, LocalInterval, PickupConfig, StaffShift, WeeklyHours, WeeklyStaffing,
    },
    pickup_code::StaffId,
};

use pickline_sidecar::order_link::{self, OrderLinks};
use pickline_sidecar::web::{
    WebConfig,
    auth::Session,
    live::Live,
    views::{self, OrderModel, QueueModel, StatusModel},
};

/// 2026-11-26T08:00:00Z, a Thursday (09:00 in Berlin).
const T0: Timestamp = Timestamp(1_795_680_000_000);

/// What to run.
#[derive(Debug, Clone)]
pub struct PagesBenchConfig {
    /// Open orders in the store's queue.
    pub orders: usize,
    /// Timed renders of each page.
    pub rounds: usize,
}

impl PagesBenchConfig {
    /// The recorded configuration: 500 orders, 300 renders.
    pub fn full() -> Self {
        PagesBenchConfig {
            orders: 500,
            rounds: 300,
        }
    }

    /// A smoke run.
    pub fn quick() -> Self {
        PagesBenchConfig {
            orders: 50,
            rounds: 20,
        }
    }
}

/// The figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PagesReport {
    /// Open orders in the queue.
    pub orders: usize,
    /// Renders timed per page.
    pub rounds: usize,
    /// Bytes of one queue page.
    pub queue_html_bytes: usize,
    /// Queue page: median, ms.
    pub queue_render_p50_ms: f64,
    /// Queue page: 99th percentile, ms.
    pub queue_render_p99_ms: f64,
    /// Order page: 99th percentile, ms.
    pub order_render_p99_ms: f64,
    /// Customer status page (with its QR code): 99th percentile, ms.
    pub status_render_p99_ms: f64,
}

impl PagesReport {
    /// A table for people.
    pub fn to_table(&self) -> String {
        format!(
            "orders in queue        {}\nqueue_html_bytes       {}\nqueue_render_p50_ms    {:.2}\nqueue_render_p99_ms    {:.2}   (target < 50)\norder_render_p99_ms    {:.2}\nstatus_render_p99_ms   {:.2}\n",
            self.orders,
            self.queue_html_bytes,
            self.queue_render_p50_ms,
            self.queue_render_p99_ms,
            self.order_render_p99_ms,
            self.status_render_p99_ms
        )
    }
}

fn calendar() -> Option<CalendarConfig> {
    Some(CalendarConfig {
        time_zone: "Europe/Berlin".into(),
        weekly_hours: WeeklyHours::every_day(&[LocalInterval::hm((7, 0), (22, 0)).ok()?]),
        exceptions: Vec::new(),
        pickup: PickupConfig {
            slot_len_min: 30,
            lead_time_min: 30,
            hold_grace_min: 30,
            pickups_per_staff_per_slot: 10,
        },
        staffing: WeeklyStaffing::every_day(&[StaffShift::hm((7, 0), (22, 0), 4).ok()?]),
    })
}

/// A store `S1` with `orders` open orders (confirmed, picking, ready in turn), each of
/// three lines, booked on the day's slots. Returns the engine and the orders.
pub fn store_with_orders(orders: usize) -> anyhow::Result<(Engine, Vec<OrderId>)> {
    let engine = Engine::new(EngineConfig::default())?;
    let mut def = StoreDef::new("S1", 52.52, 13.40, "Europe/Berlin");
    def.name = "Berlin Mitte".into();
    def.pickup_instructions = "Desk by entrance B".into();
    engine.define_store(def, T0)?;
    engine.set_calendar(
        "S1",
        calendar().ok_or_else(|| anyhow::anyhow!("calendar"))?,
        T0,
    )?;
    let skus = ["MUG-350", "TEE-M", "CAP-1"];
    for sku in skus {
        engine.apply_delta(
            &PosDelta {
                store: "S1".into(),
                sku: sku.into(),
                pos_event_id: format!("receive-{sku}"),
                kind: PosDeltaKind::Receive,
                qty: 1_000_000,
                order_ref: None,
                pos_time: T0,
            },
            T0,
        )?;
    }
    let date = jiff::civil::date(2026, 11, 26);
    let slots: Vec<_> = engine
        .slots_on("S1", date)?
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| s.start_ms >= T0.as_ms() + 3_600_000)
        .collect();
    let staff = StaffId::new("bench")?;
    let mut ids = Vec::with_capacity(orders);
    for i in 0..orders {
        let lines: Vec<LineRequest> = skus.iter().map(|s| LineRequest::new(*s, 1)).collect();
        let mut req = HoldRequest::new("S1", lines);
        if let Some(slot) = slots.get(i % slots.len().max(1)) {
            req = req.with_slot(slot.start_ms);
        }
        let HoldOutcome::Granted(grant) = engine.hold(&req, T0)? else {
            anyhow::bail!("bench hold {i} refused");
        };
        let created = engine.create_order(
            &pickline_engine::CreateOrder {
                hold: grant.hold,
                channel: "web".into(),
                channel_order_id: format!("#{}", 10_000 + i),
                customer: Customer {
                    name: Some(format!("Customer {i}")),
                    ..Customer::default()
                },
                lines: skus
                    .iter()
                    .map(|s| OrderLineRequest {
                        sku: (*s).into(),
                        qty: 1,
                        unit_price_minor: 1_299,
                        description: format!("Item {s}"),
                    })
                    .collect(),
                currency: "EUR".into(),
                idempotency_key: None,
            },
            T0,
        )?;
        let pickline_engine::CreateOrderOutcome::Created { order } = created else {
            anyhow::bail!("bench order {i} refused");
        };
        engine.confirm_order(order, T0)?;
        if i % 3 >= 1 {
            engine.start_picking(order, &staff, T0)?;
        }
        if i % 3 == 2 {
            engine.mark_ready(order, &staff, (i as u64).to_le_bytes(), T0)?;
        }
        ids.push(order);
    }
    Ok((engine, ids))
}

/// The nearest-rank percentile `p` of `samples`, in ms to the microsecond.
fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len().max(1));
    let v = samples.get(rank - 1).copied().unwrap_or(0.0);
    (v * 1_000.0).round() / 1_000.0
}

fn time_ms(
    rounds: usize,
    mut f: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut samples = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        bytes = f()?;
        samples.push(start.elapsed().as_secs_f64() * 1_000.0);
    }
    Ok((samples, bytes))
}

/// Runs the benchmark.
pub fn run(cfg: &PagesBenchConfig) -> anyhow::Result<PagesReport> {
    let (engine, orders) = store_with_orders(cfg.orders)?;
    let links = OrderLinks::from_key([7; order_link::LINK_KEY_BYTES]);
    let live = Live::new(links.clone());
    let session = bench_session();
    let now = T0;
    let config = WebConfig::default();
    let (mut queue, queue_bytes) = time_ms(cfg.rounds, || {
        let model =
            QueueModel::read(&engine, "S1", now, &live).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(
            model.len() == cfg.orders,
            "queue shows {} orders",
            model.len()
        );
        Ok(views::queue_page(&model, &session).into_string().len())
    })?;
    let picking = orders.get(1).copied().unwrap_or(orders[0]);
    let (mut order, _) = time_ms(cfg.rounds, || {
        let model = OrderModel::read(&engine, picking, now, &links)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(views::order_page(&model, &session).into_string().len())
    })?;
    let ready = orders.get(2).copied().unwrap_or(orders[0]);
    let token = links.token(ready);
    let (mut status, _) = time_ms(cfg.rounds, || {
        let model = StatusModel::read(&engine, ready, now, &config)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(views::status_page(&model, &token).into_string().len())
    })?;
    Ok(PagesReport {
        orders: cfg.orders,
        rounds: cfg.rounds,
        queue_html_bytes: queue_bytes,
        queue_render_p50_ms: percentile(&mut queue, 0.50),
        queue_render_p99_ms: percentile(&mut queue, 0.99),
        order_render_p99_ms: percentile(&mut order, 0.99),
        status_render_p99_ms: percentile(&mut status, 0.99),
    })
}

fn bench_session() -> Session {
    Session::for_bench("bench", "S1")
}
