//! A store's pickup orders as its state keeps them ([`OrderState`]): the records by id,
//! the channel-reference and key indexes, and the finished queue bounded by
//! [`TERMINAL_ORDERS_MAX`], and the order transitions as far as they change orders: how
//! one event changes one record ([`OrderRec::apply`], the one place an order's status,
//! code, lines and counters change), the events a transition record carries about the
//! orders it changes ([`OrderState::with_facts`]), the order event that ends an order
//! with its hold ([`OrderState::end_event`]) and the transitions that touch no cell and no
//! hold ([`OrderState::apply_transition`]). The state layer (see ARCHITECTURE.md): below
//! the operations in `order`, kept in a store's `StoreState`. What a transition does to
//! cells and holds (hand-off, short pick, POS sale, release) is `order::apply_locked`,
//! which needs the store's cells and holds, a layer above.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::codec::{Dec, DecodeError, Enc};
use crate::error::ApplyError;
use crate::event::{Event, ReleaseReason};
use crate::order_facts::{CancelledBy, OrderFacts, OrderRec, RecLayout};
use crate::types::{HoldId, Line, OrderId, OrderStatus, StoreId, Timestamp};

/// Finished (collected, cancelled, expired, no-show) orders remembered per store. Beyond it
/// the oldest finished order is forgotten: queries no longer find it and a late POS sale
/// naming it is applied as a plain sale.
pub const TERMINAL_ORDERS_MAX: usize = 100_000;

/// The pickup orders of one store. Lives in the store's state, under its lock.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OrderState {
    orders: BTreeMap<OrderId, OrderRec>,
    by_channel_ref: HashMap<Box<str>, OrderId>,
    /// The latest order of each `(channel, channel_order_id)`: what makes a channel
    /// reference unique per channel (see [`CreateOrderRejection::ChannelOrderExists`]).
    /// Rebuilt on decode and by replay.
    by_channel: HashMap<(Box<str>, Box<str>), OrderId>,
    /// The order each idempotency key created: a key names one request for as long as
    /// its order is remembered. Rebuilt on decode.
    by_key: HashMap<Box<str>, OrderId>,
    /// Finished orders, oldest first, for the [`TERMINAL_ORDERS_MAX`] bound.
    finished: VecDeque<OrderId>,
    receipt_seq: u64,
}

impl OrderState {
    /// Whether the store has (still remembers) order `id`.
    pub(crate) fn contains(&self, id: OrderId) -> bool {
        self.orders.contains_key(&id)
    }

    /// Every remembered order, in id order.
    pub(crate) fn records(&self) -> &BTreeMap<OrderId, OrderRec> {
        &self.orders
    }

    /// The order idempotency key `key` created, while it is remembered.
    pub(crate) fn by_key(&self, key: &str) -> Option<OrderId> {
        self.by_key.get(key).copied()
    }

    /// The latest order of `(channel, channel_order_id)`, whether or not it still holds
    /// the reference (see [`OrderState::holder_of`]).
    pub(crate) fn latest_of(&self, channel_ref: &(Box<str>, Box<str>)) -> Option<OrderId> {
        self.by_channel.get(channel_ref).copied()
    }

    /// The number of the last receipt issued.
    pub(crate) fn receipt_seq(&self) -> u64 {
        self.receipt_seq
    }

    /// The order `id`, if remembered.
    pub(crate) fn get(&self, id: OrderId) -> Option<&OrderRec> {
        self.orders.get(&id)
    }

    /// The order a POS reference names: the order id in its displayed form (`O1-7`), a
    /// channel order id, or the order id in decimal (what the gRPC API carries), in that
    /// order: a numeric channel order id (a Shopify order number) wins over the decimal
    /// form, which only names an order of this store that no channel reference claims.
    pub(crate) fn find_ref(&self, store: StoreId, reference: &str) -> Option<OrderId> {
        let ours = |id: OrderId| id.store() == store && self.orders.contains_key(&id);
        if let Some(id) = OrderId::parse(reference).filter(|id| ours(*id)) {
            return Some(id);
        }
        if let Some(id) = self.by_channel_ref.get(reference) {
            return Some(*id);
        }
        OrderId::parse_decimal(reference).filter(|id| ours(*id))
    }

    /// The order that holds `(channel, channel_order_id)`
    /// ([`OrderStatus::holds_channel_ref`]), if any.
    pub(crate) fn holder_of(&self, channel_ref: &(Box<str>, Box<str>)) -> Option<OrderId> {
        self.by_channel
            .get(channel_ref)
            .copied()
            .filter(|id| self.get(*id).is_some_and(|r| r.status.holds_channel_ref()))
    }

    /// Adds a created order and indexes its channel reference and key.
    pub(crate) fn insert_created(
        &mut self,
        order: OrderId,
        rec: OrderRec,
        channel: &str,
        channel_order_id: &str,
        key: Option<&str>,
    ) {
        self.by_channel_ref.insert(channel_order_id.into(), order);
        self.by_channel
            .insert((channel.into(), channel_order_id.into()), order);
        if let Some(k) = key {
            self.by_key.insert(k.into(), order);
        }
        self.orders.insert(order, rec);
    }

    /// A receipt numbered `receipt_seq` was issued: the next one is numbered after it.
    pub(crate) fn note_receipt_seq(&mut self, receipt_seq: u64) {
        self.receipt_seq = self.receipt_seq.max(receipt_seq);
    }

    /// `events` with an [`Event::OrderChanged`] after each transition of an order: the
    /// order as that transition leaves it, found by applying the record's events in order
    /// to a copy of the order's record with [`OrderRec::apply`], the code the state itself
    /// runs; `slot_of`: the slot the order's hold booked. Called under the store's lock,
    /// before the record is logged.
    pub(crate) fn with_facts(
        &self,
        events: Vec<Event>,
        at: Timestamp,
        slot_of: impl Fn(OrderId) -> Option<i64>,
    ) -> Result<Vec<Event>, ApplyError> {
        if !events.iter().any(|ev| transition_staff(ev).is_some()) {
            return Ok(events);
        }
        let mut recs: HashMap<OrderId, OrderRec> = HashMap::new();
        let mut out = Vec::with_capacity(events.len() + 1);
        for ev in events {
            let Some(order) = ev.changed_order() else {
                out.push(ev);
                continue;
            };
            let rec = match recs.entry(order) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let rec = o.into_mut();
                    rec.apply(&ev, at)?;
                    rec
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    if matches!(ev, Event::OrderCreated { .. }) {
                        v.insert(OrderRec::created(&ev, at)?)
                    } else if let Some(r) = self.get(order) {
                        let rec = v.insert(r.clone());
                        rec.apply(&ev, at)?;
                        rec
                    } else {
                        out.push(ev);
                        continue;
                    }
                }
            };
            let changed = transition_staff(&ev).map(|staff| Event::OrderChanged {
                order,
                staff,
                slot: slot_of(order),
                facts: Box::new(OrderFacts(rec.clone())),
            });
            out.push(ev);
            out.extend(changed);
        }
        Ok(out)
    }

    /// Applies an order event that touches no cell and no hold: transitions, codes,
    /// re-allocation requests.
    pub(crate) fn apply_transition(&mut self, ev: &Event, at: Timestamp) -> Result<(), ApplyError> {
        match ev {
            Event::OrderConfirmed { order, .. }
            | Event::PickingStarted { order, .. }
            | Event::ReallocationRequested { order, .. }
            | Event::PickupCodeRejected { order, .. }
            | Event::PickupCodeOverride { order, .. }
            | Event::OrderCancelled { order, .. }
            | Event::OrderExpired { order, .. }
            | Event::OrderNoShow { order, .. } => self.apply_rec(*order, ev, at),
            // A fact for readers: the order must be as the event says (checked in debug
            // builds).
            Event::OrderChanged { order, facts, .. } => {
                debug_assert!(
                    self.get(*order).is_none_or(|r| *r == facts.0),
                    "order {order} differs from its logged facts"
                );
                Ok(())
            }
            other => Err(ApplyError::UnexpectedEvent {
                kind: other.kind(),
                expected: "an order event without cells",
            }),
        }
    }

    /// The order event that ends the order of `hold` when the engine ends the hold
    /// directly (expiry, or a release through `Engine::release`): none when the hold is
    /// no order's or its order is already final.
    pub(crate) fn end_event(&self, hold: HoldId, reason: ReleaseReason) -> Option<Event> {
        let order = OrderId::from_hold(hold);
        let rec = self.get(order)?;
        if rec.status.is_final() {
            return None;
        }
        Some(match reason {
            ReleaseReason::Expired => Event::OrderExpired {
                order,
                no_show: rec.status != OrderStatus::Placed,
            },
            ReleaseReason::Released => Event::OrderCancelled {
                order,
                by: CancelledBy::System,
                staff: None,
            },
        })
    }

    fn rec_mut(&mut self, id: OrderId) -> Result<&mut OrderRec, ApplyError> {
        self.orders.get_mut(&id).ok_or(ApplyError::UnknownOrder(id))
    }

    /// Applies an order event to the record of `id` ([`OrderRec::apply`]); an order that
    /// ends joins the finished queue, whose oldest orders are forgotten.
    pub(crate) fn apply_rec(
        &mut self,
        id: OrderId,
        ev: &Event,
        at: Timestamp,
    ) -> Result<(), ApplyError> {
        let rec = self.rec_mut(id)?;
        let was_final = rec.status.is_final();
        rec.apply(ev, at).map_err(|e| ApplyError::Order {
            order: id,
            source: Box::new(e),
        })?;
        if !was_final && rec.status.is_final() {
            self.finished.push_back(id);
            while self.finished.len() > TERMINAL_ORDERS_MAX {
                let Some(old) = self.finished.pop_front() else {
                    break;
                };
                let Some(rec) = self.orders.remove(&old) else {
                    continue;
                };
                if self.by_channel_ref.get(&rec.channel_order_id) == Some(&old) {
                    self.by_channel_ref.remove(&rec.channel_order_id);
                }
                let channel_ref = (rec.channel, rec.channel_order_id);
                if self.by_channel.get(&channel_ref) == Some(&old) {
                    self.by_channel.remove(&channel_ref);
                }
                if let Some(key) = &rec.key
                    && self.by_key.get(key) == Some(&old)
                {
                    self.by_key.remove(key);
                }
            }
        }
        Ok(())
    }

    /// Appends the state's encoding for a snapshot: receipt sequence, then the orders in id
    /// order (each with every field), then the finished queue. The channel reference and
    /// key indexes are rebuilt on decode.
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        e.u64(self.receipt_seq);
        e.seq_len(self.orders.len());
        for (id, r) in &self.orders {
            e.u64(id.0);
            r.encode(e);
        }
        e.seq_len(self.finished.len());
        for id in &self.finished {
            e.u64(id.0);
        }
    }

    /// Decodes what [`OrderState::encode`] wrote, its records in `layout`.
    pub(crate) fn decode(d: &mut Dec<'_>, layout: RecLayout) -> Result<OrderState, DecodeError> {
        let mut st = OrderState {
            receipt_seq: d.u64()?,
            ..OrderState::default()
        };
        let n = d.seq_len()?;
        for _ in 0..n {
            let id = OrderId(d.u64()?);
            let rec = OrderRec::decode(d, layout)?;
            // Orders come in id order, not creation order: an order that still holds
            // its channel reference wins over one that has let it go, whichever id is
            // larger, as it did when it was created.
            let holds_ref = |st: &OrderState, occupant: Option<&OrderId>| {
                occupant
                    .and_then(|o| st.orders.get(o))
                    .is_some_and(|r| r.status.holds_channel_ref())
            };
            if !holds_ref(&st, st.by_channel_ref.get(&rec.channel_order_id)) {
                st.by_channel_ref.insert(rec.channel_order_id.clone(), id);
            }
            let channel_ref = (rec.channel.clone(), rec.channel_order_id.clone());
            if !holds_ref(&st, st.by_channel.get(&channel_ref)) {
                st.by_channel.insert(channel_ref, id);
            }
            if let Some(k) = &rec.key {
                st.by_key.insert(Box::<str>::clone(k), id);
            }
            st.orders.insert(id, rec);
        }
        let n = d.seq_len()?;
        for _ in 0..n {
            st.finished.push_back(OrderId(d.u64()?));
        }
        Ok(st)
    }
}

/// For a transition of an order's status: who made it (`Some(None)` when no staff member
/// did). `None` for every other event.
fn transition_staff(ev: &Event) -> Option<Option<String>> {
    match ev {
        Event::OrderCreated { .. } | Event::OrderConfirmed { .. } | Event::OrderExpired { .. } => {
            Some(None)
        }
        Event::PickingStarted { staff, .. }
        | Event::OrderReady { staff, .. }
        | Event::OrderCollected { staff, .. }
        | Event::OrderNoShow { staff, .. } => Some(Some(staff.clone())),
        Event::OrderCancelled { staff, .. } => Some(staff.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------- one order's record

impl OrderRec {
    /// The record an [`Event::OrderCreated`] creates.
    pub(crate) fn created(ev: &Event, at: Timestamp) -> Result<OrderRec, ApplyError> {
        let Event::OrderCreated {
            channel,
            channel_order_id,
            customer,
            lines,
            currency,
            currency_exponent,
            key,
            ..
        } = ev
        else {
            return Err(ApplyError::UnexpectedEvent {
                kind: ev.kind(),
                expected: "an order creation",
            });
        };
        Ok(OrderRec {
            status: OrderStatus::Placed,
            channel: channel.as_str().into(),
            channel_order_id: channel_order_id.as_str().into(),
            customer: (**customer).clone(),
            pos_seen: vec![0; lines.len()],
            lines: lines.clone(),
            currency: currency.as_str().into(),
            currency_exponent: *currency_exponent,
            key: key.as_deref().map(Into::into),
            times: vec![(OrderStatus::Placed, at)],
            code: None,
            wrong: 0,
            locked: false,
            overrides: 0,
            last_override: None,
            short_picks: 0,
            realloc: Vec::new(),
            receipt_seq: None,
            ready_estimate: None,
        })
    }

    /// What an event does to the order's own record: the one place an order's status,
    /// code, lines and counters change (live, on replay, and when an event's facts are
    /// computed). Events that do not touch the record change nothing.
    pub(crate) fn apply(&mut self, ev: &Event, at: Timestamp) -> Result<(), ApplyError> {
        match ev {
            Event::OrderConfirmed { ready_estimate, .. } => {
                self.transition(OrderStatus::Confirmed, at)?;
                self.ready_estimate = *ready_estimate;
                Ok(())
            }
            Event::PickingStarted { .. } => self.transition(OrderStatus::Picking, at),
            Event::OrderShortPicked { sku, missing, .. } => {
                let line = self
                    .lines
                    .iter_mut()
                    .find(|l| l.sku == *sku)
                    .ok_or(ApplyError::SkuNotOrdered)?;
                // A short pick takes at most what the hold still has of the line, which is
                // at most what was ordered: more is a record that does not apply.
                line.qty = line
                    .qty
                    .checked_sub(*missing)
                    .ok_or(ApplyError::BeyondOrdered)?;
                // A count for display, not a conservation counter: it stops at the top.
                self.short_picks = self.short_picks.saturating_add(1);
                Ok(())
            }
            Event::ReallocationRequested { sku, missing, .. } => {
                self.realloc.push(Line {
                    sku: *sku,
                    qty: *missing,
                });
                Ok(())
            }
            Event::OrderReady { code, .. } => {
                self.transition(OrderStatus::Ready, at)?;
                self.code = Some(*code);
                self.wrong = 0;
                self.locked = false;
                Ok(())
            }
            Event::PickupCodeRejected { now_locked, .. } => {
                // Attempts past the lockout only keep it locked: a clamp, not a balance.
                self.wrong = self.wrong.saturating_add(1);
                self.locked |= *now_locked;
                Ok(())
            }
            Event::PickupCodeOverride {
                staff, sequence, ..
            } => {
                self.locked = false;
                self.wrong = 0;
                self.overrides = *sequence;
                self.last_override = Some((staff.as_str().into(), at));
                Ok(())
            }
            Event::OrderCollected { receipt_seq, .. } => {
                self.transition(OrderStatus::Collected, at)?;
                self.receipt_seq = Some(*receipt_seq);
                Ok(())
            }
            Event::OrderCancelled { .. } => self.transition(OrderStatus::Cancelled, at),
            Event::OrderExpired { no_show, .. } => self.transition(
                if *no_show {
                    OrderStatus::NoShow
                } else {
                    OrderStatus::Expired
                },
                at,
            ),
            Event::OrderNoShow { .. } => self.transition(OrderStatus::NoShow, at),
            Event::PosOrderSale {
                sku,
                from_hold,
                recognized,
                ..
            } => {
                if let Some(i) = self.lines.iter().position(|l| l.sku == *sku) {
                    self.pos_seen[i] = self.pos_seen[i].saturating_add(*from_hold + *recognized);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn transition(&mut self, status: OrderStatus, at: Timestamp) -> Result<(), ApplyError> {
        if self.status.is_final() {
            return Err(ApplyError::OrderFinal(self.status));
        }
        self.status = status;
        self.times.push((status, at));
        Ok(())
    }
}
