//! `pickline simulate`: a Black Friday on a store network, driven through the engine (or a
//! sidecar over gRPC), with the business KPIs.
//!
//! The model (all of it seeded, one discrete-event queue ordered by simulated time, ties
//! broken by insertion order, so the same seed gives the same report):
//!
//! - **Network**: stores in four US time zones (November offsets), each with a size
//!   factor and a place; every store carries every SKU; SKU popularity is Zipf with one
//!   ranking for the whole network (doorbusters are hot everywhere and stocked short).
//! - **Hours and staff**: stores open at `open_hour` (`campaign_open_hour` on the campaign
//!   day) until `close_hour`, local time; pickers per day part, more on the campaign day.
//! - **Walk-ins**: Poisson sales per store and minute on a daily curve; a sale takes units
//!   off the shelf at once (ignoring holds, as shoppers do); its POS event reaches the
//!   backend after an exponential delay, is sometimes sent twice and sometimes lost.
//!   Shrink takes units without any event. Nightly counts (03:00) and deliveries (04:00).
//! - **Online orders**: Poisson per store on a daily curve, times `campaign_factor` on the
//!   campaign day and `spike.factor` for one hour; 1-4 Zipf lines; the hold is tried at
//!   the store, then at its two nearest neighbours. The shopper books a slot (soon, later
//!   today, or tomorrow) and arrives early, in the slot, late, or never.
//! - **Picking**: a free picker takes the oldest confirmed order; picking takes
//!   `pick_base_s + pick_per_unit_s * units` (exponential noise); a line the shelf cannot
//!   fill is reported short. Ready orders wait for their shopper until the slot end plus
//!   the grace period, then staff record a no-show and put the units back.

pub mod backend;
pub mod html;
pub mod kpi;
pub mod scenario;

use std::collections::{BTreeMap, HashMap, VecDeque};

use pickline_engine::{PosCount, PosDelta, PosDeltaKind, StoreDef, Timestamp};
use serde::Serialize;

pub use backend::{Backend, EngineBackend, HoldResult, PosResult, SimError};
pub use kpi::{DEFINITIONS, Kpis};
pub use scenario::{Scenario, ZONES};

use crate::zipf::{Rng, Zipf};
use kpi::{KpiAcc, oversold_units, ratio};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Hottest SKUs charted (ATP summed over stores).
pub const HOT_CHARTED: usize = 3;
/// Doorbusters: the hottest SKUs, stocked below their campaign demand.
const DOORBUSTERS: u32 = 5;

/// One chart point (every `sample_every_min` minutes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Hours since the simulated start.
    pub hour: f64,
    /// Online orders placed per minute over the interval.
    pub orders_per_min: f64,
    /// Walk-in units sold per minute over the interval.
    pub walkins_per_min: f64,
    /// ATP of each of the hottest SKUs, summed over stores.
    pub hot_atp: Vec<u64>,
    /// Orders waiting to be picked: the longest store queue.
    pub queue_max: u32,
    /// Orders waiting to be picked: mean over stores.
    pub queue_mean: f64,
    /// Orders waiting per zone (summed over the zone's stores).
    pub queue_by_zone: Vec<u32>,
    /// Accuracy of this sample's cells.
    pub accuracy: f64,
    /// Average fulfillment time of the orders that became ready in the interval (minutes;
    /// absent when none did).
    pub fulfillment_avg_min: Option<f64>,
    /// Pickup conversion so far.
    pub conversion_so_far: f64,
}

/// The report of one run: what `--json` prints and the HTML report draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The scenario.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// `engine` (in-process) or `grpc`.
    pub backend: String,
    /// Stores.
    pub stores: u32,
    /// SKUs.
    pub skus: u32,
    /// Simulated hours.
    pub simulated_hours: f64,
    /// Online orders placed.
    pub orders: u64,
    /// Units promised beyond the shelf.
    pub oversells: u64,
    /// Inventory record accuracy.
    pub inventory_accuracy: f64,
    /// Average fulfillment time, minutes.
    pub fulfillment_avg_min: f64,
    /// p90 fulfillment time, minutes.
    pub fulfillment_p90_min: f64,
    /// Pickup conversion.
    pub pickup_conversion: f64,
    /// Every figure.
    pub kpis: Kpis,
    /// Whether each target of the issue is met.
    pub targets: BTreeMap<String, bool>,
    /// Chart points.
    pub timeline: Vec<Sample>,
    /// Names of the charted hot SKUs.
    pub hot_skus: Vec<String>,
    /// Zone names, in `queue_by_zone` order.
    pub zones: Vec<String>,
}

impl SimReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A table for people, with the definitions.
    pub fn to_table(&self) -> String {
        let k = &self.kpis;
        let t = |name: &str| match self.targets.get(name) {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let mut out = format!(
            "simulate {} (seed {}, backend {}): {} stores x {} SKUs, {:.0} simulated hours\n\n",
            self.scenario, self.seed, self.backend, self.stores, self.skus, self.simulated_hours
        );
        let refused: u64 = k.orders_refused.values().sum();
        let rows: Vec<(&str, String, &str, &str)> = vec![
            ("orders", self.orders.to_string(), "", ""),
            (
                "orders_refused",
                format!("{refused} {:?}", k.orders_refused),
                "",
                "",
            ),
            (
                "fulfillment_avg_min",
                format!("{:.2}", self.fulfillment_avg_min),
                "< 15",
                t("fulfillment_avg_min"),
            ),
            (
                "fulfillment_p90_min",
                format!("{:.2}", self.fulfillment_p90_min),
                "",
                "",
            ),
            (
                "inventory_accuracy",
                format!("{:.5}", self.inventory_accuracy),
                ">= 0.998",
                t("inventory_accuracy"),
            ),
            (
                "pickup_conversion",
                format!("{:.4}", self.pickup_conversion),
                "> 0.95",
                t("pickup_conversion"),
            ),
            (
                "oversells",
                self.oversells.to_string(),
                "== 0",
                t("oversells"),
            ),
            (
                "short_pick_units",
                format!("{} ({} picks)", k.short_pick_units, k.short_picks),
                "",
                "",
            ),
            ("shortage_events", k.shortage_events.to_string(), "", ""),
            (
                "ready / collected / no-show",
                format!(
                    "{} / {} / {}",
                    k.orders_ready, k.orders_collected, k.no_shows
                ),
                "",
                "",
            ),
            (
                "walk-in units sold / lost",
                format!("{} / {}", k.walkin_units, k.lost_walkin_units),
                "",
                "",
            ),
            (
                "POS sent / dup sent / dup dropped / lost",
                format!(
                    "{} / {} / {} / {}",
                    k.pos_events_sent,
                    k.pos_duplicates_sent,
                    k.pos_duplicates_dropped,
                    k.pos_events_lost
                ),
                "",
                "",
            ),
            ("shrink_units", k.shrink_units.to_string(), "", ""),
            (
                "empty_shelf_counts",
                k.empty_shelf_counts.to_string(),
                "",
                "",
            ),
            (
                "conservation",
                match k.conservation_ok {
                    Some(true) => "ok".into(),
                    Some(false) => "FAILED".into(),
                    None => "not checkable over gRPC".into(),
                },
                "",
                "",
            ),
        ];
        out.push_str(&format!(
            "{:<42} {:>26} {:>9} {:>7}\n",
            "KPI", "value", "target", ""
        ));
        for (name, v, target, ok) in rows {
            out.push_str(&format!("{name:<42} {v:>26} {target:>9} {ok:>7}\n"));
        }
        out.push_str("\nDefinitions:\n");
        for (name, def) in DEFINITIONS {
            out.push_str(&format!("- {name}: {def}\n"));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Picking,
    Ready,
    Collected,
    NoShow,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shopper {
    Early,
    OnTime,
    Late,
    NoShow,
}

struct Order {
    store: usize,
    id: u64,
    lines: Vec<(u32, u32)>,
    picked: Vec<u32>,
    placed: i64,
    status: Status,
    waiting: bool,
    code: String,
}

struct StoreSim {
    name: String,
    zone: usize,
    weight: f64,
    neighbours: Vec<usize>,
    queue: VecDeque<usize>,
    busy: u32,
    lat: f64,
    lon: f64,
}

#[derive(Debug, Clone)]
enum Ev {
    Walkin {
        store: usize,
    },
    Online {
        store: usize,
    },
    Shrink {
        store: usize,
    },
    PosArrive {
        store: usize,
        sku: u32,
        id: u64,
        qty: u32,
        pos_time: i64,
    },
    PickDone {
        order: usize,
        picker: u32,
    },
    Arrive {
        order: usize,
    },
    Deadline {
        order: usize,
    },
}

/// Relative walk-in traffic per local hour (0 before 6 and after 22 is irrelevant: closed).
const WALKIN_CURVE: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.7, 0.6, 0.7, 0.8, 0.9, 1.0, 0.95, 0.9, 0.9, 0.95, 1.0,
    1.0, 0.9, 0.8, 0.6, 0.4, 0.0,
];
/// Relative online ordering per local hour of the store.
const ONLINE_CURVE: [f64; 24] = [
    0.15, 0.08, 0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0, 0.95, 0.9, 0.9, 0.9,
    0.95, 1.0, 1.0, 0.9, 0.7, 0.45, 0.25,
];

struct Sim<'a, B: Backend + ?Sized> {
    sc: &'a Scenario,
    be: &'a mut B,
    rng: Rng,
    zipf: Zipf,
    /// SKU rank -> SKU index (ranks scattered over the catalog).
    rank_to_sku: Vec<u32>,
    sku_names: Vec<String>,
    stores: Vec<StoreSim>,
    shelf: Vec<u32>,
    staged: Vec<u32>,
    promised: Vec<u32>,
    target: Vec<u32>,
    orders: Vec<Order>,
    by_hold: HashMap<u64, usize>,
    queue: BTreeMap<(i64, u64), Ev>,
    seq: u64,
    pos_seq: u64,
    k: Kpis,
    acc: KpiAcc,
    // Interval counters for the timeline.
    iv_orders: u64,
    iv_walkins: u64,
    iv_ready_ms: Vec<i64>,
    timeline: Vec<Sample>,
}

fn tstamp(ms: i64) -> Timestamp {
    Timestamp(ms)
}

/// Runs a scenario against a backend. `progress(simulated_minutes_done, total)` is called
/// about every simulated hour.
pub fn run<B: Backend + ?Sized>(
    sc: &Scenario,
    backend: &mut B,
    backend_name: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<SimReport, SimError> {
    if sc.stores == 0 || sc.skus == 0 || sc.days <= 0 || sc.sample_every_min <= 0 {
        return Err(SimError::new(
            "scenario needs at least one store, one SKU, one day and a sample interval",
        ));
    }
    let mut sim = Sim::new(sc, backend);
    sim.setup()?;
    let total = (sc.days * 1440) as u64;
    for m in 0..total {
        let t = sc.start_ms + m as i64 * MINUTE;
        sim.minute(t)?;
        if m % 60 == 59 {
            progress(m + 1, total);
        }
    }
    sim.finish(backend_name)
}

impl<'a, B: Backend + ?Sized> Sim<'a, B> {
    fn new(sc: &'a Scenario, be: &'a mut B) -> Self {
        let mut rng = Rng::new(sc.seed);
        let n_cells = (sc.stores * sc.skus) as usize;
        let mut rank_to_sku: Vec<u32> = (0..sc.skus).collect();
        for i in (1..rank_to_sku.len()).rev() {
            rank_to_sku.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Sim {
            sc,
            be,
            zipf: Zipf::new(sc.skus as usize, sc.zipf_s),
            rng,
            rank_to_sku,
            sku_names: (0..sc.skus).map(|k| format!("SKU-{k:05}")).collect(),
            stores: Vec::new(),
            shelf: vec![0; n_cells],
            staged: vec![0; n_cells],
            promised: vec![0; n_cells],
            target: vec![0; n_cells],
            orders: Vec::new(),
            by_hold: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            pos_seq: 0,
            k: Kpis::default(),
            acc: KpiAcc::default(),
            iv_orders: 0,
            iv_walkins: 0,
            iv_ready_ms: Vec::new(),
            timeline: Vec::new(),
        }
    }

    fn cell(&self, store: usize, sku: u32) -> usize {
        store * self.sc.skus as usize + sku as usize
    }

    fn push(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn local(&self, store: usize, t: i64) -> (i64, i64) {
        // (day index since the start's New York midnight, local minute of the day)
        let off = ZONES[self.stores[store].zone].utc_offset_h * HOUR;
        // start_ms is midnight in New York (UTC-5), so the local clock reads midnight of
        // day 0 at `start_ms - 5h` read as UTC; day 0 begins at local midnight everywhere.
        let local = t + off - (self.sc.start_ms - 5 * HOUR);
        (local.div_euclid(DAY), local.rem_euclid(DAY) / MINUTE)
    }

    fn hours(&self, day: i64) -> (i64, i64) {
        let open = if Some(day) == self.sc.campaign_day {
            self.sc.campaign_open_hour
        } else {
            self.sc.open_hour
        };
        (open * 60, self.sc.close_hour * 60)
    }

    fn is_open(&self, store: usize, t: i64) -> bool {
        let (day, min) = self.local(store, t);
        let (o, c) = self.hours(day);
        min >= o && min < c
    }

    /// Milliseconds the store is open between `from` and `to`.
    fn open_ms_between(&self, store: usize, from: i64, to: i64) -> i64 {
        if to <= from {
            return 0;
        }
        let (day0, min0) = self.local(store, from);
        let day_start = from - min0 * MINUTE - (from.rem_euclid(MINUTE));
        let mut total = 0;
        let mut d = 0;
        loop {
            let base = day_start + d * DAY;
            if base >= to {
                break;
            }
            let (o, c) = self.hours(day0 + d);
            let (a, b) = (base + o * MINUTE, base + c * MINUTE);
            let (lo, hi) = (a.max(from), b.min(to));
            if hi > lo {
                total += hi - lo;
            }
            d += 1;
        }
        total
    }

    fn factor(&self, store: usize, t: i64, online: bool) -> f64 {
        let (day, min) = self.local(store, t);
        let hour = (min / 60) as usize;
        let mut f = if online {
            ONLINE_CURVE[hour]
        } else if self.is_open(store, t) {
            WALKIN_CURVE[hour].max(0.3)
        } else {
            0.0
        };
        if Some(day) == self.sc.campaign_day {
            f *= self.sc.campaign_factor;
        }
        if online
            && let Some(s) = self.sc.spike
            && s.day == day
            && s.local_hour == hour as i64
        {
            f *= s.factor;
        }
        f * self.stores[store].weight
    }

    fn pickers(&self, store: usize, t: i64) -> u32 {
        if !self.is_open(store, t) {
            return 0;
        }
        let (day, min) = self.local(store, t);
        let st = &self.sc.staffing;
        let n = if min < 12 * 60 {
            st.morning
        } else if min < 17 * 60 {
            st.midday
        } else {
            st.evening
        };
        if Some(day) == self.sc.campaign_day {
            n + self.sc.campaign_extra_pickers
        } else {
            n
        }
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.rng.unit()).ln()
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        let l = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.rng.unit();
            if p <= l || k > 10_000 {
                return k;
            }
            k += 1;
        }
    }

    fn sku(&mut self) -> u32 {
        let r = self.zipf.sample(&mut self.rng);
        self.rank_to_sku[r]
    }

    fn setup(&mut self) -> Result<(), SimError> {
        let sc = self.sc;
        let t0 = sc.start_ms - 2 * HOUR;
        for s in 0..sc.stores as usize {
            let u = self.rng.unit();
            let mut acc = 0.0;
            let zone = ZONES
                .iter()
                .position(|z| {
                    acc += z.weight;
                    u < acc
                })
                .unwrap_or(ZONES.len() - 1);
            let z = ZONES[zone];
            let lat = z.lat.0 + self.rng.unit() * (z.lat.1 - z.lat.0);
            let lon = z.lon.0 + self.rng.unit() * (z.lon.1 - z.lon.0);
            let weight = 0.5 + self.rng.unit();
            let name = format!("S{s:03}");
            let mut def = StoreDef::new(name.clone(), lat, lon, z.name);
            def.default_safety_stock = sc.safety_stock;
            def.max_hold_ms = 2 * DAY;
            self.be.define_store(&def, tstamp(t0))?;
            self.stores.push(StoreSim {
                name,
                zone,
                weight,
                neighbours: Vec::new(),
                queue: VecDeque::new(),
                busy: 0,
                lat,
                lon,
            });
        }
        for s in 0..self.stores.len() {
            let (la, lo) = (self.stores[s].lat, self.stores[s].lon);
            let mut d: Vec<(f64, usize)> = (0..self.stores.len())
                .filter(|o| *o != s)
                .map(|o| {
                    let dl = self.stores[o].lat - la;
                    let dn = (self.stores[o].lon - lo) * la.to_radians().cos();
                    (dl * dl + dn * dn, o)
                })
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            self.stores[s].neighbours = d.iter().take(2).map(|x| x.1).collect();
        }
        // Stock: each cell's campaign-day demand share times 1.3, plus safety stock and
        // two units; doorbusters at 60% of their campaign demand.
        let open_hours: f64 = (sc.open_hour..sc.close_hour)
            .map(|h| WALKIN_CURVE[h as usize].max(0.3))
            .sum();
        let online_hours: f64 = ONLINE_CURVE.iter().sum();
        let units_per_day = (sc.walkins_per_hour * open_hours * 1.1
            + sc.online_per_hour * online_hours * 2.0)
            * sc.campaign_factor;
        let p = zipf_pmf(sc.skus as usize, sc.zipf_s);
        for s in 0..self.stores.len() {
            for (rank, pk) in p.iter().enumerate() {
                let sku = self.rank_to_sku[rank];
                let demand = units_per_day * pk * self.stores[s].weight;
                let mut target = (demand * 1.3).ceil() as u32 + sc.safety_stock + 2;
                if (rank as u32) < DOORBUSTERS {
                    target = ((demand * 0.6).ceil() as u32).max(sc.safety_stock + 1);
                }
                let c = self.cell(s, sku);
                self.target[c] = target;
            }
            self.replenish(s, t0)?;
        }
        Ok(())
    }

    fn next_pos_id(&mut self) -> u64 {
        self.pos_seq += 1;
        self.pos_seq
    }

    fn replenish(&mut self, store: usize, t: i64) -> Result<(), SimError> {
        for sku in 0..self.sc.skus {
            let c = self.cell(store, sku);
            let have = self.shelf[c];
            if have >= self.target[c] {
                continue;
            }
            let q = self.target[c] - have;
            let id = self.next_pos_id();
            let d = PosDelta {
                store: self.stores[store].name.clone(),
                sku: self.sku_names[sku as usize].clone(),
                pos_event_id: format!("rcv-{id}"),
                kind: PosDeltaKind::Receive,
                qty: i64::from(q),
                order_ref: None,
                pos_time: tstamp(t),
            };
            self.be.pos_delta(&d, tstamp(t))?;
            self.shelf[c] += q;
        }
        Ok(())
    }

    /// A picker who leaves a shelf empty (took its last unit, or found it short) confirms
    /// it: a spot count of the cell (shelf plus the units staged for pickup) goes to the
    /// POS feed at once. This is what store-pick apps do ("location now empty?"): without
    /// it, units lost without a POS event (shrink: theft, damage) stay in the engine's
    /// `on_hand` until the nightly count, and once they exceed the safety stock the
    /// engine promises units that are not there (the black-friday preset at seed 1 had
    /// three shrinks in one cell in one day: one oversell).
    fn empty_shelf_count(&mut self, store: usize, sku: u32, at: i64) -> Result<(), SimError> {
        let c = self.cell(store, sku);
        let id = self.next_pos_id();
        let pc = PosCount {
            store: self.stores[store].name.clone(),
            sku: self.sku_names[sku as usize].clone(),
            pos_event_id: format!("spot-{id}"),
            counted: self.shelf[c] + self.staged[c],
            as_of: tstamp(at),
        };
        if let PosResult::Applied { .. } = self.be.pos_count(&pc, tstamp(at))? {
            self.k.empty_shelf_counts += 1;
        }
        Ok(())
    }

    fn count(&mut self, store: usize, t: i64) -> Result<(), SimError> {
        for sku in 0..self.sc.skus {
            let c = self.cell(store, sku);
            let id = self.next_pos_id();
            let pc = PosCount {
                store: self.stores[store].name.clone(),
                sku: self.sku_names[sku as usize].clone(),
                pos_event_id: format!("cnt-{id}"),
                counted: self.shelf[c] + self.staged[c],
                as_of: tstamp(t),
            };
            if let PosResult::Applied { .. } = self.be.pos_count(&pc, tstamp(t))? {
                self.k.counts_applied += 1;
            }
        }
        Ok(())
    }

    fn minute(&mut self, t: i64) -> Result<(), SimError> {
        let sc = self.sc;
        // Holds the backend expires (the engine on the simulated clock).
        if self.be.injects_time() {
            for hold in self.be.expire(tstamp(t))? {
                self.k.holds_expired += 1;
                if let Some(&o) = self.by_hold.get(&hold) {
                    self.end_order(o, Status::NoShow);
                }
            }
        }
        for s in 0..self.stores.len() {
            let (_, min) = self.local(s, t);
            if min == 3 * 60 {
                self.count(s, t)?;
            } else if min == 4 * 60 {
                self.replenish(s, t)?;
            }
            let walk = sc.walkins_per_hour / 60.0 * self.factor(s, t, false);
            let online = sc.online_per_hour / 60.0 * self.factor(s, t, true);
            let shrink = if self.is_open(s, t) {
                sc.shrink_per_store_day / ((sc.close_hour - sc.open_hour) as f64 * 60.0)
            } else {
                0.0
            };
            for (lambda, kind) in [(walk, 0), (online, 1), (shrink, 2)] {
                for _ in 0..self.poisson(lambda) {
                    let at = t + self.rng.below(MINUTE as u64) as i64;
                    let ev = match kind {
                        0 => Ev::Walkin { store: s },
                        1 => Ev::Online { store: s },
                        _ => Ev::Shrink { store: s },
                    };
                    self.push(at, ev);
                }
            }
            self.assign(s, t)?;
        }
        let end = t + MINUTE;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 >= end {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.event(at, ev)?;
        }
        let m = (t - sc.start_ms) / MINUTE;
        if (m + 1) % sc.sample_every_min == 0 {
            self.sample(end)?;
        }
        Ok(())
    }

    fn event(&mut self, at: i64, ev: Ev) -> Result<(), SimError> {
        match ev {
            Ev::Walkin { store } => self.walkin(store, at),
            Ev::Online { store } => self.online(store, at),
            Ev::Shrink { store } => {
                let sku = self.sku();
                let c = self.cell(store, sku);
                if self.shelf[c] > 0 {
                    self.shelf[c] -= 1;
                    self.k.shrink_units += 1;
                }
                Ok(())
            }
            Ev::PosArrive {
                store,
                sku,
                id,
                qty,
                pos_time,
            } => {
                let d = PosDelta {
                    store: self.stores[store].name.clone(),
                    sku: self.sku_names[sku as usize].clone(),
                    pos_event_id: format!("pos-{id}"),
                    kind: PosDeltaKind::Sale,
                    qty: i64::from(qty),
                    order_ref: None,
                    pos_time: tstamp(pos_time),
                };
                self.k.pos_events_sent += 1;
                match self.be.pos_delta(&d, tstamp(at))? {
                    PosResult::Applied { shortage } => {
                        if shortage {
                            self.k.shortage_events += 1;
                        }
                    }
                    PosResult::Duplicate => self.k.pos_duplicates_dropped += 1,
                }
                Ok(())
            }
            Ev::PickDone { order, picker } => self.pick_done(order, picker, at),
            Ev::Arrive { order } => {
                match self.orders[order].status {
                    Status::Ready => self.collect(order, at)?,
                    Status::Queued | Status::Picking => self.orders[order].waiting = true,
                    _ => {}
                }
                Ok(())
            }
            Ev::Deadline { order } => {
                let id = self.orders[order].id;
                match self.orders[order].status {
                    Status::Ready => {
                        self.be.no_show(id, "desk", tstamp(at))?;
                        self.end_order(order, Status::NoShow);
                    }
                    Status::Queued | Status::Picking => {
                        // The store is behind: keep the order another two hours.
                        self.be.extend(id, 2 * HOUR, tstamp(at))?;
                        self.push(at + 2 * HOUR, Ev::Deadline { order });
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    fn walkin(&mut self, store: usize, at: i64) -> Result<(), SimError> {
        let sku = self.sku();
        let want = if self.rng.unit() < 0.1 { 2 } else { 1 };
        let c = self.cell(store, sku);
        let q = want.min(self.shelf[c]);
        self.k.lost_walkin_units += u64::from(want - q);
        if q == 0 {
            return Ok(());
        }
        self.shelf[c] -= q;
        self.k.walkin_units += u64::from(q);
        self.iv_walkins += u64::from(q);
        let id = self.next_pos_id();
        if self.rng.unit() < self.sc.pos_drop_p {
            self.k.pos_events_lost += 1;
            return Ok(());
        }
        let delay = self.exp(self.sc.pos_delay_mean_ms) as i64;
        let ev = Ev::PosArrive {
            store,
            sku,
            id,
            qty: q,
            pos_time: at,
        };
        self.push(at + delay, ev.clone());
        if self.rng.unit() < self.sc.pos_dup_p {
            self.k.pos_duplicates_sent += 1;
            let again = self.exp(self.sc.pos_delay_mean_ms * 3.0) as i64;
            self.push(at + delay + again, ev);
        }
        Ok(())
    }

    fn online(&mut self, store: usize, at: i64) -> Result<(), SimError> {
        let n_lines = match self.rng.unit() {
            u if u < 0.5 => 1,
            u if u < 0.8 => 2,
            u if u < 0.95 => 3,
            _ => 4,
        };
        let mut lines: Vec<(u32, u32)> = Vec::with_capacity(n_lines);
        let mut tries = 0;
        while lines.len() < n_lines && tries < 50 {
            tries += 1;
            let sku = self.sku();
            if lines.iter().all(|l| l.0 != sku) {
                let q = if self.rng.unit() < 0.15 { 2 } else { 1 };
                lines.push((sku, q));
            }
        }
        let named: Vec<(String, u32)> = lines
            .iter()
            .map(|(s, q)| (self.sku_names[*s as usize].clone(), *q))
            .collect();
        let mut candidates = vec![store];
        candidates.extend(self.stores[store].neighbours.iter().copied());
        let mut last = "no_store";
        for s in candidates {
            let (slot_start, slot_end) = self.slot(s, at);
            let deadline = slot_end + self.sc.grace_min * MINUTE;
            let name = self.stores[s].name.clone();
            match self.be.hold(&name, &named, deadline - at, tstamp(at))? {
                HoldResult::Refused(why) => last = why,
                HoldResult::Granted(hold) => {
                    for (sku, q) in &lines {
                        let c = self.cell(s, *sku);
                        self.k.oversells +=
                            u64::from(oversold_units(self.shelf[c], self.promised[c], *q));
                        self.promised[c] += q;
                    }
                    let n = self.orders.len();
                    let id = self
                        .be
                        .place_order(hold, &format!("BF-{n}"), &named, tstamp(at))?;
                    let shopper = match self.rng.unit() {
                        u if u < self.sc.no_show_p => Shopper::NoShow,
                        u if u < self.sc.no_show_p + self.sc.early_p => Shopper::Early,
                        u if u < self.sc.no_show_p + self.sc.early_p + self.sc.late_p => {
                            Shopper::Late
                        }
                        _ => Shopper::OnTime,
                    };
                    let arrive = match shopper {
                        Shopper::Early => Some(
                            (slot_start - self.rng.below(30) as i64 * MINUTE).max(at + 5 * MINUTE),
                        ),
                        Shopper::OnTime => {
                            Some(slot_start + self.rng.below((slot_end - slot_start) as u64) as i64)
                        }
                        Shopper::Late => Some(
                            slot_end
                                + self
                                    .rng
                                    .below(((self.sc.grace_min - 5).max(1) * MINUTE) as u64)
                                    as i64,
                        ),
                        Shopper::NoShow => None,
                    };
                    self.orders.push(Order {
                        store: s,
                        id,
                        picked: vec![0; lines.len()],
                        lines,
                        placed: at,
                        status: Status::Queued,
                        waiting: false,
                        code: String::new(),
                    });
                    self.by_hold.insert(id, n);
                    if let Some(a) = arrive {
                        self.push(a, Ev::Arrive { order: n });
                    }
                    self.push(deadline, Ev::Deadline { order: n });
                    self.k.orders += 1;
                    self.iv_orders += 1;
                    self.stores[s].queue.push_back(n);
                    return self.assign(s, at);
                }
            }
        }
        *self.k.orders_refused.entry(last.to_owned()).or_default() += 1;
        Ok(())
    }

    /// The slot a shopper books at `store` when ordering at `at`: soon (45 minutes on),
    /// later today, or tomorrow; always inside opening hours, ending an hour before close.
    fn slot(&mut self, store: usize, at: i64) -> (i64, i64) {
        let half = 30 * MINUTE;
        let lead = match self.rng.unit() {
            u if u < 0.5 => 45 * MINUTE,
            u if u < 0.85 => HOUR + self.rng.below(3 * HOUR as u64) as i64,
            _ => DAY,
        };
        let mut start = (at + lead + half - 1).div_euclid(half) * half;
        let (day, min) = self.local(store, start);
        let (o, c) = self.hours(day);
        let latest = c - 120;
        if min < o || min > latest {
            // Next opening (today's if before it, else tomorrow's) plus up to 3 hours.
            let day_start = start - min * MINUTE;
            let (open_day, base) = if min < o {
                (day, day_start)
            } else {
                (day + 1, day_start + DAY)
            };
            let (o2, _) = self.hours(open_day);
            start = base + o2 * MINUTE + self.rng.below(7) as i64 * half;
        }
        (start, start + HOUR)
    }

    fn assign(&mut self, store: usize, t: i64) -> Result<(), SimError> {
        let on_duty = self.pickers(store, t);
        while self.stores[store].busy < on_duty {
            let Some(o) = self.stores[store].queue.pop_front() else {
                break;
            };
            if self.orders[o].status != Status::Queued {
                continue;
            }
            let picker = self.stores[store].busy;
            self.stores[store].busy += 1;
            let staff = format!("picker-{store}-{picker}");
            self.be
                .start_picking(self.orders[o].id, &staff, tstamp(t))?;
            self.orders[o].status = Status::Picking;
            let units: u32 = self.orders[o].lines.iter().map(|l| l.1).sum();
            let mean = self.sc.pick_base_s + self.sc.pick_per_unit_s * f64::from(units);
            let secs = 0.5 * mean + self.exp(0.5 * mean);
            self.push(
                t + (secs * 1000.0) as i64,
                Ev::PickDone { order: o, picker },
            );
        }
        Ok(())
    }

    fn pick_done(&mut self, o: usize, picker: u32, at: i64) -> Result<(), SimError> {
        let store = self.orders[o].store;
        self.stores[store].busy = self.stores[store].busy.saturating_sub(1);
        let staff = format!("picker-{store}-{picker}");
        let mut open = true;
        if self.orders[o].status == Status::Picking {
            for i in 0..self.orders[o].lines.len() {
                let (sku, qty) = self.orders[o].lines[i];
                let c = self.cell(store, sku);
                let found = qty.min(self.shelf[c]);
                self.shelf[c] -= found;
                self.staged[c] += found;
                self.promised[c] = self.promised[c].saturating_sub(qty);
                self.orders[o].picked[i] = found;
                if found < qty && open {
                    self.k.short_picks += 1;
                    self.k.short_pick_units += u64::from(qty - found);
                    let sku_name = self.sku_names[sku as usize].clone();
                    open = self.be.short_pick(
                        self.orders[o].id,
                        &sku_name,
                        found,
                        &staff,
                        tstamp(at),
                    )?;
                }
                if self.shelf[c] == 0 {
                    self.empty_shelf_count(store, sku, at)?;
                }
            }
            if open {
                let mut entropy = [0u8; 32];
                for chunk in entropy.chunks_mut(8) {
                    chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
                }
                let code = self
                    .be
                    .mark_ready(self.orders[o].id, &staff, entropy, tstamp(at))?;
                let ord = &mut self.orders[o];
                ord.code = code;
                ord.status = Status::Ready;
                let placed = ord.placed;
                let waiting = ord.waiting;
                let f = self.open_ms_between(store, placed, at);
                self.acc.fulfillment_ms.push(f);
                self.iv_ready_ms.push(f);
                self.k.orders_ready += 1;
                if waiting {
                    self.collect(o, at)?;
                }
            } else {
                // Nothing was found on any line: nothing is staged, nothing promised.
                self.k.orders_cancelled_short += 1;
                self.orders[o].status = Status::Cancelled;
            }
        }
        self.assign(store, at)
    }

    fn collect(&mut self, o: usize, at: i64) -> Result<(), SimError> {
        let store = self.orders[o].store;
        let code = self.orders[o].code.clone();
        self.be
            .collect(self.orders[o].id, &code, "desk", tstamp(at))?;
        for i in 0..self.orders[o].lines.len() {
            let c = self.cell(store, self.orders[o].lines[i].0);
            self.staged[c] -= self.orders[o].picked[i];
        }
        self.orders[o].status = Status::Collected;
        self.k.orders_collected += 1;
        Ok(())
    }

    /// An order ends without hand-off: picked units go back to the shelf, promised units
    /// are no longer promised.
    fn end_order(&mut self, o: usize, status: Status) {
        let before = self.orders[o].status;
        if matches!(
            before,
            Status::Collected | Status::NoShow | Status::Cancelled
        ) {
            return;
        }
        let store = self.orders[o].store;
        for i in 0..self.orders[o].lines.len() {
            let (sku, qty) = self.orders[o].lines[i];
            let c = self.cell(store, sku);
            if before == Status::Ready {
                let p = self.orders[o].picked[i];
                self.staged[c] -= p;
                self.shelf[c] += p;
            } else {
                // Queued or picking: still promised (a pick in progress is abandoned).
                self.promised[c] = self.promised[c].saturating_sub(qty);
            }
        }
        if status == Status::NoShow && before == Status::Ready {
            self.k.no_shows += 1;
        }
        self.orders[o].status = status;
    }

    fn sample(&mut self, t: i64) -> Result<(), SimError> {
        let cells = (self.sc.stores * self.sc.skus) as u64;
        let mut matched = 0;
        let n = self.sc.accuracy_cells;
        for _ in 0..n {
            let c = self.rng.below(cells) as usize;
            let (s, k) = (c / self.sc.skus as usize, c % self.sc.skus as usize);
            let name = self.stores[s].name.clone();
            let v = self.be.cell(&name, &self.sku_names[k])?;
            if v.on_hand == self.shelf[c] + self.staged[c] {
                matched += 1;
            }
        }
        self.acc.acc_match += matched;
        self.acc.acc_total += u64::from(n);
        let mut hot_atp = Vec::with_capacity(HOT_CHARTED);
        for rank in 0..HOT_CHARTED.min(self.sc.skus as usize) {
            let sku = self.rank_to_sku[rank] as usize;
            let mut sum = 0u64;
            for s in 0..self.stores.len() {
                let name = self.stores[s].name.clone();
                sum += u64::from(self.be.cell(&name, &self.sku_names[sku])?.atp);
            }
            hot_atp.push(sum);
        }
        let lens: Vec<u32> = self.stores.iter().map(|s| s.queue.len() as u32).collect();
        let mut by_zone = vec![0u32; ZONES.len()];
        for (s, l) in self.stores.iter().zip(&lens) {
            by_zone[s.zone] += l;
        }
        let every = self.sc.sample_every_min as f64;
        let ready = std::mem::take(&mut self.iv_ready_ms);
        self.timeline.push(Sample {
            hour: (t - self.sc.start_ms) as f64 / HOUR as f64,
            orders_per_min: self.iv_orders as f64 / every,
            walkins_per_min: self.iv_walkins as f64 / every,
            hot_atp,
            queue_max: lens.iter().copied().max().unwrap_or(0),
            queue_mean: lens.iter().map(|l| f64::from(*l)).sum::<f64>() / lens.len() as f64,
            queue_by_zone: by_zone,
            accuracy: ratio(matched, u64::from(n)),
            fulfillment_avg_min: (!ready.is_empty()).then(|| {
                ready.iter().map(|v| *v as f64).sum::<f64>() / ready.len() as f64 / 60_000.0
            }),
            conversion_so_far: ratio(self.k.orders_collected, self.k.orders_ready),
        });
        self.iv_orders = 0;
        self.iv_walkins = 0;
        Ok(())
    }

    fn finish(mut self, backend_name: &str) -> Result<SimReport, SimError> {
        let sc = self.sc;
        self.k.fulfillment_avg_min = self.acc.fulfillment_avg_min();
        self.k.fulfillment_p90_min = self.acc.fulfillment_p90_min();
        self.k.inventory_accuracy = self.acc.accuracy();
        self.k.accuracy_cells_sampled = self.acc.acc_total;
        // Conversion over orders whose outcome is known: ready orders still waiting for
        // their shopper at the end of the run are left out.
        let decided = self.k.orders_collected + self.k.no_shows;
        self.k.pickup_conversion = ratio(self.k.orders_collected, decided);
        self.k.conservation_ok = self.be.conservation().map(|r| r.is_ok());
        let k = self.k.clone();
        let mut targets = BTreeMap::new();
        targets.insert("oversells".to_owned(), k.oversells == 0);
        targets.insert(
            "inventory_accuracy".to_owned(),
            k.inventory_accuracy >= 0.998,
        );
        targets.insert(
            "fulfillment_avg_min".to_owned(),
            k.fulfillment_avg_min < 15.0,
        );
        targets.insert("pickup_conversion".to_owned(), k.pickup_conversion > 0.95);
        Ok(SimReport {
            scenario: sc.name.clone(),
            seed: sc.seed,
            backend: backend_name.to_owned(),
            stores: sc.stores,
            skus: sc.skus,
            simulated_hours: (sc.days * 24) as f64,
            orders: k.orders,
            oversells: k.oversells,
            inventory_accuracy: k.inventory_accuracy,
            fulfillment_avg_min: k.fulfillment_avg_min,
            fulfillment_p90_min: k.fulfillment_p90_min,
            pickup_conversion: k.pickup_conversion,
            kpis: k,
            targets,
            timeline: self.timeline,
            hot_skus: (0..HOT_CHARTED.min(sc.skus as usize))
                .map(|r| self.sku_names[self.rank_to_sku[r] as usize].clone())
                .collect(),
            zones: ZONES.iter().map(|z| z.name.to_owned()).collect(),
        })
    }
}

/// Zipf probabilities of ranks `0..n` with exponent `s`.
fn zipf_pmf(n: usize, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = w.iter().sum();
    w.into_iter().map(|x| x / total).collect()
}

#[cfg(test)]
mod tests;
