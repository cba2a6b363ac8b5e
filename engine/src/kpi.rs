//! Key performance indicators computed from the event stream (SPEC section 1 targets):
//! fulfillment time (placed to ready), pickup conversion, short picks, shortages and
//! inventory accuracy, per store and overall.
//!
//! [`Kpis`] is a fold over [`Record`]s: feed it every record in LSN order (from the
//! [`crate::stream::EventStream`] or the log) and read the figures at any time. It never
//! looks at the engine's state, so it can run in another process from the log alone.

use std::collections::{BTreeMap, HashMap};

use crate::event::{Event, Record};
use crate::order::{CancelledBy, OrderId};
use crate::types::{StoreId, Timestamp};

/// Fulfillment time samples kept per store for the percentile; older samples are replaced
/// ring-wise beyond it (the average stays exact: it uses a running sum).
pub const FULFILLMENT_SAMPLES_MAX: usize = 100_000;

/// Orders placed but not yet ready that the fold tracks at once; beyond it the oldest
/// placed time is forgotten and that order does not count towards fulfillment time.
pub const OPEN_ORDERS_MAX: usize = 1_000_000;

/// The figures of one store (or of all stores together).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreKpis {
    /// Orders created.
    pub orders_placed: u64,
    /// Orders that reached ready.
    pub orders_ready: u64,
    /// Sum of placed-to-ready times, ms.
    pub fulfillment_ms_sum: i64,
    /// Recent placed-to-ready times, ms (at most [`FULFILLMENT_SAMPLES_MAX`]).
    pub fulfillment_samples_ms: Vec<i64>,
    fulfillment_next: usize,
    /// Orders collected.
    pub collected: u64,
    /// Orders that expired after confirmation.
    pub no_show: u64,
    /// Orders the customer cancelled.
    pub customer_cancelled: u64,
    /// Orders with at least one short pick.
    pub short_picked_orders: u64,
    /// Orders whose picking started.
    pub picking_started: u64,
    /// Shortage events (`on_hand` below `held`).
    pub shortages: u64,
    /// POS counts.
    pub counts: u64,
    /// POS counts that matched the engine's figure.
    pub counts_matched: u64,
}

impl StoreKpis {
    /// Average fulfillment time (placed to ready), ms.
    pub fn avg_fulfillment_ms(&self) -> Option<f64> {
        (self.orders_ready > 0).then(|| self.fulfillment_ms_sum as f64 / self.orders_ready as f64)
    }

    /// 90th percentile of fulfillment time (nearest rank), ms.
    pub fn p90_fulfillment_ms(&self) -> Option<i64> {
        let mut v = self.fulfillment_samples_ms.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = (v.len() * 9).div_ceil(10).max(1);
        v.get(rank - 1).copied()
    }

    /// collected / (collected + no-show + customer cancel).
    pub fn pickup_conversion(&self) -> Option<f64> {
        let d = self.collected + self.no_show + self.customer_cancelled;
        (d > 0).then(|| self.collected as f64 / d as f64)
    }

    /// Orders short-picked / orders whose picking started.
    pub fn short_pick_rate(&self) -> Option<f64> {
        (self.picking_started > 0)
            .then(|| self.short_picked_orders as f64 / self.picking_started as f64)
    }

    /// Share of POS counts that matched.
    pub fn inventory_accuracy(&self) -> Option<f64> {
        (self.counts > 0).then(|| self.counts_matched as f64 / self.counts as f64)
    }

    fn add_fulfillment(&mut self, ms: i64) {
        self.orders_ready += 1;
        self.fulfillment_ms_sum = self.fulfillment_ms_sum.saturating_add(ms);
        if self.fulfillment_samples_ms.len() < FULFILLMENT_SAMPLES_MAX {
            self.fulfillment_samples_ms.push(ms);
        } else if let Some(slot) = self.fulfillment_samples_ms.get_mut(self.fulfillment_next) {
            *slot = ms;
            self.fulfillment_next = (self.fulfillment_next + 1) % FULFILLMENT_SAMPLES_MAX;
        }
    }
}

/// The KPI fold: per store and overall.
#[derive(Debug, Clone, Default)]
pub struct Kpis {
    stores: BTreeMap<StoreId, StoreKpis>,
    overall: StoreKpis,
    placed_at: HashMap<OrderId, Timestamp>,
    short_picked: HashMap<OrderId, ()>,
}

impl Kpis {
    /// An empty fold.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one record (records must come in LSN order).
    pub fn observe(&mut self, rec: &Record) {
        for ev in &rec.events {
            self.event(ev, rec.at);
        }
    }

    /// Figures of one store.
    pub fn store(&self, store: StoreId) -> StoreKpis {
        self.stores.get(&store).cloned().unwrap_or_default()
    }

    /// Figures over all stores.
    pub fn overall(&self) -> &StoreKpis {
        &self.overall
    }

    fn bump(&mut self, store: StoreId, f: impl Fn(&mut StoreKpis)) {
        f(self.stores.entry(store).or_default());
        f(&mut self.overall);
    }

    fn event(&mut self, ev: &Event, at: Timestamp) {
        match ev {
            Event::OrderCreated { order, .. } => {
                if self.placed_at.len() < OPEN_ORDERS_MAX {
                    self.placed_at.insert(*order, at);
                }
                self.bump(order.store(), |k| k.orders_placed += 1);
            }
            Event::OrderReady { order, .. } => {
                if let Some(t) = self.placed_at.remove(order) {
                    let ms = at.as_ms().saturating_sub(t.as_ms());
                    self.bump(order.store(), |k| k.add_fulfillment(ms));
                }
            }
            Event::PickingStarted { order, .. } => {
                self.bump(order.store(), |k| k.picking_started += 1)
            }
            Event::OrderShortPicked { order, .. }
                if self.short_picked.insert(*order, ()).is_none() =>
            {
                self.bump(order.store(), |k| k.short_picked_orders += 1);
            }
            Event::OrderCollected { order, .. } => {
                self.short_picked.remove(order);
                self.bump(order.store(), |k| k.collected += 1)
            }
            Event::OrderExpired { order, no_show } => {
                self.placed_at.remove(order);
                self.short_picked.remove(order);
                if *no_show {
                    self.bump(order.store(), |k| k.no_show += 1);
                }
            }
            Event::OrderNoShow { order, .. } => {
                self.placed_at.remove(order);
                self.short_picked.remove(order);
                self.bump(order.store(), |k| k.no_show += 1);
            }
            Event::OrderCancelled { order, by, .. } => {
                self.placed_at.remove(order);
                self.short_picked.remove(order);
                if *by == CancelledBy::Customer {
                    self.bump(order.store(), |k| k.customer_cancelled += 1);
                }
            }
            Event::Shortage { store, .. } => self.bump(*store, |k| k.shortages += 1),
            Event::PosCount { store, matched, .. } => {
                let m = u64::from(*matched);
                self.bump(*store, |k| {
                    k.counts += 1;
                    k.counts_matched += m;
                })
            }
            _ => {}
        }
    }
}
