//! A store's pickup orders as its state keeps them ([`OrderState`]): the records by id,
//! the channel-reference and key indexes, and the finished queue bounded by
//! [`TERMINAL_ORDERS_MAX`]. The state layer (see ARCHITECTURE.md): below the operations
//! in `order`, kept in a store's `StoreState`; how one event changes one record is
//! `OrderRec::apply` (in `order`, which this calls as a method).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::codec::{Dec, DecodeError, Enc};
use crate::error::ApplyError;
use crate::event::Event;
use crate::order_facts::{OrderRec, RecLayout};
use crate::types::{OrderId, StoreId, Timestamp};

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
