//! Pickup orders: from an active hold to hand-off (SPEC section 4, "Pickup lifecycle").
//!
//! ```text
//! placed -> confirmed -> picking -> ready -> collected
//!    \          \           \         \
//!     +----------+-----------+---------+--> cancelled (customer or store)
//! placed --hold expired--> expired        confirmed.. ready --hold expired--> no_show
//! ready --staff, pickup window passed--> no_show
//! picking --short pick--> picking (line reduced; missing units re-allocated or cancelled)
//! picking --short pick leaving no unit--> cancelled (by the store, hold released)
//! ```
//!
//! - **The order is its hold.** An order is created from an active hold and its id is the
//!   hold's id ([`OrderId::from_hold`]), so every order operation finds its store, cells and
//!   hold without a lookup, and creating the order twice from one hold cannot make two.
//! - **Same locks, same log discipline as holds.** Every operation locks the hold's cells in
//!   ascending SKU order, then the store's state, decides, appends one record, applies it
//!   through [`apply_locked`] (which replay calls too), unlocks, and waits for durability.
//! - **Outcomes are values.** An illegal transition is [`OrderRejection`], a wrong pickup
//!   code is [`VerifyOutcome`]; `Err` is misuse or a log failure.
//! - **Codes come from the caller's entropy** and the code value is logged, so replay issues
//!   the same code. Wrong codes are logged too: the lockout survives a restart.
//! - **Hand-off and the POS sale of the same order are counted once**, in either order of
//!   arrival: a sale naming an order whose hold is active consumes from the hold
//!   (`on_hand` and `held` fall together) and the hand-off then takes only what is left; a
//!   sale naming a collected order is recognized up to the units handed off and not applied
//!   again ([`Event::PosOrderSale`]).
//! - **Bounded memory.** Finished orders are kept (for POS recognition, receipts and
//!   queries) up to [`TERMINAL_ORDERS_MAX`] per store, oldest forgotten first. A POS sale
//!   naming a forgotten order is applied as a plain sale.

use crate::engine::commit::Decision;
use crate::engine::{
    CellGuard, Engine, HoldNotActive, PosDelta, apply_release, check_id, clamp_qty, lock_cells,
    not_active, remember_pos_event,
};
use crate::error::{ApplyError, EngineError, HoldChange};
use crate::event::{Event, Record, ReleaseReason};
pub use crate::order_facts::{
    CancelledBy, Customer, OrderFacts, OrderLine, OrderView, ShortPickResolution,
};
use crate::order_facts::{OrderRec, order_view};
use crate::pickup_code::{
    ENTROPY_BYTES, MAX_WRONG_ATTEMPTS, PickupCode, QrPayload, QrPayloadError, StaffId,
    VerifyOutcome,
};
use crate::receipt::{
    Currency, RECEIPT_TEXT_LEN_MAX, Receipt, ReceiptError, ReceiptInput, ReceiptLine, ReceiptNumber,
};
use crate::stock::{Cell, HoldRec, RecentDelta, StoreShard, StoreState};
use crate::types::{CellView, HoldId, Line, Lsn, Qty, SkuId, StoreId, Timestamp};
pub use crate::types::{OrderId, OrderStatus};

pub use crate::order_state::TERMINAL_ORDERS_MAX;

/// Longest customer email or phone number, in bytes (RFC 5321 path limit).
pub const CONTACT_LEN_MAX: usize = 254;
/// Longest BCP 47 locale tag accepted (RFC 5646 recommends supporting at least 35).
pub const LOCALE_LEN_MAX: usize = 35;

/// Longest channel name, in bytes.
pub const CHANNEL_LEN_MAX: usize = 64;

/// A priced line of a [`CreateOrder`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLineRequest {
    /// SKU external id; must be a line of the hold.
    pub sku: String,
    /// Units; must equal the hold's line.
    pub qty: Qty,
    /// Price of one unit in minor units.
    pub unit_price_minor: i64,
    /// Receipt text, up to [`RECEIPT_TEXT_LEN_MAX`] bytes.
    pub description: String,
}

/// A request to create a pickup order from an active hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOrder {
    /// The hold; the order takes over its units.
    pub hold: HoldId,
    /// Sales channel, e.g. `shopify`.
    pub channel: String,
    /// The channel's order id (what the customer and the POS know).
    pub channel_order_id: String,
    /// Contact and consent.
    pub customer: Customer,
    /// Priced lines: exactly the hold's lines (SKU and quantity).
    pub lines: Vec<OrderLineRequest>,
    /// ISO 4217 currency code.
    pub currency: String,
    /// A retry with the same key, hold and channel order id returns the same order; the
    /// same key for any other request is [`CreateOrderRejection::KeyReused`]. The engine
    /// remembers a key as long as it remembers the order it created.
    pub idempotency_key: Option<String>,
}

/// Why [`Engine::create_order`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderRejection {
    /// The hold is not active.
    HoldNotActive(HoldNotActive),
    /// The hold already has an order, created with another idempotency key (or none).
    OrderExists {
        /// That order.
        order: OrderId,
    },
    /// The idempotency key already created an order for a different request (another
    /// hold, or another channel order id).
    KeyReused {
        /// The order the key created.
        order: OrderId,
    },
    /// The lines are not exactly the hold's lines.
    LinesMismatch,
    /// The store already has an order for this `(channel, channel_order_id)`, created by
    /// another request (another hold, another key), that is open or was collected. A
    /// reference is free again once its order was cancelled, expired or a no-show (the
    /// channel may place it again), and once the engine no longer remembers that order
    /// (finished orders are kept up to [`TERMINAL_ORDERS_MAX`] per store).
    ChannelOrderExists {
        /// That order.
        order: OrderId,
    },
}

/// Outcome of [`Engine::create_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderOutcome {
    /// The order exists (now, or from an earlier request with the same key).
    Created {
        /// The order.
        order: OrderId,
    },
    /// Nothing was created.
    Rejected(CreateOrderRejection),
    /// Another request for another hold, with the same `(channel, channel_order_id)` or
    /// the same idempotency key, is being decided right now. Nothing was created; retry
    /// shortly, and the answer is definite.
    InFlight,
}

/// What a [`Engine::create_order`] in progress has claimed across stores: its channel
/// reference and its key, each unique over all stores. A claim lasts from before the
/// other stores are checked until the order is in its own store's indexes, so two
/// requests racing for one name at different stores cannot both miss each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum OrderName {
    /// `(channel, channel_order_id)`.
    Channel(Box<str>, Box<str>),
    /// An idempotency key.
    Key(Box<str>),
}

/// The names claimed by create_order calls in progress, with the order they would create
/// and how many calls for that order hold the claim.
pub(crate) type OrderClaims = dashmap::DashMap<OrderName, (OrderId, u32)>;

/// The names one create_order call claimed; ends the claims when dropped.
struct ClaimedNames<'a> {
    claims: &'a OrderClaims,
    order: OrderId,
    names: Vec<OrderName>,
}

impl ClaimedNames<'_> {
    /// Claims each of `names` for `order`; `None` if another order's request holds one.
    /// Requests for the same order share a claim (they are ordered by that order's store
    /// lock); it ends with the last of them.
    fn claim(
        claims: &OrderClaims,
        order: OrderId,
        names: impl IntoIterator<Item = OrderName>,
    ) -> Option<ClaimedNames<'_>> {
        let mut claimed = ClaimedNames {
            claims,
            order,
            names: Vec::new(),
        };
        for name in names {
            match claims.entry(name) {
                dashmap::Entry::Vacant(v) => {
                    claimed.names.push(v.key().clone());
                    v.insert((order, 1));
                }
                dashmap::Entry::Occupied(mut o) if o.get().0 == order => {
                    claimed.names.push(o.key().clone());
                    o.get_mut().1 += 1;
                }
                // Dropping `claimed` ends the claims taken so far.
                dashmap::Entry::Occupied(_) => return None,
            }
        }
        Some(claimed)
    }
}

impl Drop for ClaimedNames<'_> {
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            if let dashmap::Entry::Occupied(mut o) = self.claims.entry(name)
                && o.get().0 == self.order
            {
                match o.get().1 {
                    1 => {
                        o.remove();
                    }
                    _ => o.get_mut().1 -= 1,
                }
            }
        }
    }
}

/// Why an order operation was refused. A business outcome: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRejection {
    /// No such order (never created, or forgotten after [`TERMINAL_ORDERS_MAX`]).
    UnknownOrder,
    /// The operation is not allowed in the order's status.
    IllegalTransition {
        /// The status it is in.
        from: OrderStatus,
    },
    /// The order has no line of that SKU.
    NoSuchLine,
    /// The units found are not fewer than the line's units.
    NotShort {
        /// Units the line still expects.
        line_qty: Qty,
    },
    /// A staff override of an order that is not locked.
    NotLocked,
    /// Every line of the order was short-picked to zero: there is nothing to make ready
    /// or hand off. (Such an order is cancelled by the short pick that empties it; this
    /// guards orders logged before that rule.)
    NothingLeft,
    /// A no-show recorded before the order's pickup window ended.
    PickupWindowOpen {
        /// When the window ends: the end of the booked slot, or the hold's expiry for an
        /// order without a slot.
        ends_at: Timestamp,
    },
}

/// Outcome of a simple order transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// Done; the order's status now.
    Done {
        /// Status after.
        status: OrderStatus,
    },
    /// Refused; nothing changed.
    Rejected(OrderRejection),
}

/// A short pick: staff found fewer units of a line than the order needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortPick {
    /// The order.
    pub order: OrderId,
    /// SKU external id of the line.
    pub sku: String,
    /// Units found on the shelf.
    pub found: Qty,
    /// What to do with the missing units.
    pub resolution: ShortPickResolution,
    /// Who picked.
    pub staff: StaffId,
}

/// One line of a [`ShortReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortLine {
    /// SKU external id of the line.
    pub sku: String,
    /// Units found on the shelf.
    pub found: Qty,
    /// What to do with the missing units.
    pub resolution: ShortPickResolution,
}

/// A short-pick report: some lines of one order were found short. Applied all or
/// nothing, as one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortReport {
    /// The order.
    pub order: OrderId,
    /// The short lines, each SKU at most once, 1..=`hold_lines_max` of them.
    pub lines: Vec<ShortLine>,
    /// Who picked.
    pub staff: StaffId,
}

/// Outcome of [`Engine::report_short`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShortReportOutcome {
    /// Every line was applied.
    Done {
        /// The order's status after: `Picking`, or `Cancelled` when nothing is left.
        status: OrderStatus,
        /// Per request line, the units found missing (what left the order and `on_hand`).
        missing: Vec<Qty>,
    },
    /// Refused; nothing changed.
    Rejected {
        /// The request line refused (`None`: the order as a whole, e.g. its status).
        line: Option<usize>,
        /// Why.
        rejection: OrderRejection,
    },
}

/// Outcome of [`Engine::mark_ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyOutcome {
    /// Ready; the code to send to the customer.
    Ready {
        /// The pickup code.
        code: PickupCode,
        /// The QR payload (fails only for store ids longer than the QR format allows).
        qr: Result<QrPayload, QrPayloadError>,
    },
    /// Refused; nothing changed.
    Rejected(OrderRejection),
}

/// Outcome of [`Engine::collect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectOutcome {
    /// Handed off: stock consumed, hold ended, e-receipt produced.
    Collected {
        /// The e-receipt (an error only if the order's data cannot make one, e.g. a store
        /// id unfit for a receipt number; the hand-off stands either way).
        receipt: Box<Result<Receipt, ReceiptError>>,
        /// The record of the hand-off.
        lsn: Lsn,
    },
    /// The code was not accepted ([`VerifyOutcome::Wrong`], `WrongNowLocked`, `Locked` or
    /// `Malformed`); wrong codes were recorded.
    Code(VerifyOutcome),
    /// Refused; nothing changed.
    Rejected(OrderRejection),
}

/// Outcome of [`Engine::verify_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyCodeOutcome {
    /// The code was checked (or not, when locked or malformed): `Accepted` when right.
    Code(VerifyOutcome),
    /// Refused; nothing changed.
    Rejected(OrderRejection),
}

/// Who cancels an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canceller {
    /// The customer (counts against pickup conversion).
    Customer,
    /// Store staff.
    Store(StaffId),
}

// ---------------------------------------------------------------- locked cells

/// The cells an order operation holds, in lock order, with their SKUs.
pub(crate) struct Cells<'a> {
    lines: Vec<Line>,
    guards: Vec<CellGuard<'a>>,
}

impl<'a> Cells<'a> {
    fn lock(shard: &'a StoreShard, lines: Vec<Line>) -> Result<Self, EngineError> {
        let guards = lock_cells(shard, &lines)?;
        Ok(Cells { lines, guards })
    }

    fn cell(&mut self, sku: SkuId) -> Result<&mut Cell, ApplyError> {
        let i = self
            .lines
            .iter()
            .position(|l| l.sku == sku)
            .ok_or(ApplyError::CellNotLocked(sku.0))?;
        self.guards
            .get_mut(i)
            .map(|g| &mut **g)
            .ok_or(ApplyError::CellNotLocked(sku.0))
    }

    fn view(&self, sku: SkuId) -> Option<Cell> {
        let i = self.lines.iter().position(|l| l.sku == sku)?;
        self.guards.get(i).map(|g| **g)
    }
}

fn hold_line_qty(st: &StoreState, hold: HoldId, sku: SkuId) -> Option<Qty> {
    st.hold(hold)?
        .lines
        .iter()
        .find(|l| l.sku == sku)
        .map(|l| l.qty)
}

// ---------------------------------------------------------------- state transitions
//
// The only functions that change orders. Live operations and replay both call them with the
// same locks held, so the live and the replayed state cannot diverge.

/// Applies one event of an order record. `cells` holds the cells the event touches;
/// `horizon` is `at - dedupe_window_ms`. What an event does to the order itself is
/// [`OrderRec::apply`]; this adds the cells, the hold and the store's indexes.
pub(crate) fn apply_locked(
    ev: &Event,
    cells: &mut Cells<'_>,
    st: &mut StoreState,
    at: Timestamp,
    horizon: Timestamp,
) -> Result<(), ApplyError> {
    match ev {
        Event::OrderCreated {
            order,
            channel,
            channel_order_id,
            key,
            ..
        } => {
            if st.orders().contains(*order) {
                return Err(ApplyError::OrderCreatedTwice(*order));
            }
            let rec = OrderRec::created(ev, at)?;
            st.orders_mut()
                .insert_created(*order, rec, channel, channel_order_id, key.as_deref());
        }
        Event::HoldConfirmed { hold, .. } => {
            if !st.is_active(*hold) {
                return Err(ApplyError::InactiveHold {
                    change: HoldChange::Confirm,
                    hold: *hold,
                });
            }
            crate::engine::apply_confirm(st, *hold);
        }
        Event::HoldReleased { hold, reason, .. } => {
            apply_release(&mut cells.guards, st, *hold, *reason).ok_or(
                ApplyError::InactiveHold {
                    change: HoldChange::Release,
                    hold: *hold,
                },
            )?;
        }
        Event::StockAdjusted { sku, after, .. } => cells.cell(*sku)?.on_hand = after.on_hand,
        Event::OrderShortPicked {
            order,
            sku,
            missing,
            ..
        } => {
            st.take_from_hold(order.hold(), *sku, *missing)
                .map_err(|e| e.in_change(HoldChange::ShortPick, *order))?;
            let cell = cells.cell(*sku)?;
            cell.held = cell
                .held
                .checked_sub(*missing)
                .ok_or(ApplyError::BeyondCell {
                    change: HoldChange::ShortPick,
                })?;
            st.orders_mut().apply_rec(*order, ev, at)?;
        }
        Event::OrderReady { order, .. } => {
            st.orders_mut().apply_rec(*order, ev, at)?;
            st.hold_ready(order.hold());
        }
        Event::OrderCollected {
            order,
            receipt_seq,
            consumed,
            ..
        } => {
            let h = st
                .end_hold(order.hold(), crate::stock::HoldEnd::Consumed)
                .ok_or(ApplyError::NoHold {
                    change: HoldChange::Collect,
                    order: *order,
                })?;
            for l in h.lines.iter() {
                let cell = cells.cell(l.sku)?;
                cell.held = cell.held.checked_sub(l.qty).ok_or(ApplyError::BeyondCell {
                    change: HoldChange::Collect,
                })?;
            }
            for l in consumed {
                let cell = cells.cell(l.sku)?;
                // A clamp, not conservation: the units left with the customer whatever
                // the count says, and a store in shortage may count fewer than it held.
                cell.on_hand = cell.on_hand.saturating_sub(l.qty);
                // A later POS count as of a time before the hand-off must not resurrect the
                // units: the count reconciliation sees the hand-off as a delta at `at`.
                push_recent(st, l.sku, at, at, -i64::from(l.qty), horizon);
            }
            st.orders_mut().apply_rec(*order, ev, at)?;
            st.orders_mut().note_receipt_seq(*receipt_seq);
        }
        Event::PosOrderSale { sku, .. } => {
            let cell = cells.cell(*sku)?;
            apply_pos_sale(ev, cell, st, at, horizon)?
        }
        other => apply_state_event(other, st, at)?,
    }
    Ok(())
}

/// `events` with an [`Event::OrderChanged`] after each transition of an order
/// ([`OrderState::with_facts`]), each with the slot the order's hold booked. Called under
/// the store's lock, before the record is logged.
pub(crate) fn with_order_facts(
    st: &StoreState,
    events: Vec<Event>,
    at: Timestamp,
) -> Result<Vec<Event>, EngineError> {
    st.orders()
        .with_facts(events, at, |order| {
            st.hold(order.hold()).and_then(HoldRec::slot)
        })
        .map_err(|e| EngineError::internal("order", e.to_string()))
}

/// Applies an order event that touches no cell and no hold: transitions, codes,
/// re-allocation requests ([`OrderState::apply_transition`]).
pub(crate) fn apply_state_event(
    ev: &Event,
    st: &mut StoreState,
    at: Timestamp,
) -> Result<(), ApplyError> {
    st.orders_mut().apply_transition(ev, at)
}

fn push_recent(
    st: &mut StoreState,
    sku: SkuId,
    pos_time: Timestamp,
    at: Timestamp,
    qty: i64,
    horizon: Timestamp,
) {
    st.push_recent_delta(
        sku,
        RecentDelta {
            pos_time,
            applied_at: at,
            qty,
        },
        horizon,
    );
}

/// The order event that ends an order whose hold the engine ends directly
/// ([`OrderState::end_event`]).
pub(crate) fn hold_end_event(
    st: &StoreState,
    hold: HoldId,
    reason: ReleaseReason,
) -> Option<Event> {
    st.orders().end_event(hold, reason)
}

/// For a POS sale naming a known order with a line of `sku`: the event that records it
/// against the order. `None` for any other delta (applied as a plain delta).
pub(crate) fn pos_sale_event(
    st: &StoreState,
    cell: &Cell,
    default_safety: Qty,
    store: StoreId,
    sku: SkuId,
    d: &PosDelta,
) -> Option<Event> {
    if d.kind != crate::event::PosDeltaKind::Sale {
        return None;
    }
    let order = st.orders().find_ref(store, d.order_ref.as_deref()?)?;
    let rec = st.orders().get(order)?;
    let i = rec.lines.iter().position(|l| l.sku == sku)?;
    let reported = clamp_qty(d.qty);
    let (recognized, from_hold) = match rec.status {
        OrderStatus::Collected => {
            // A clamp: the till may report more units of the order than were handed off.
            let unreported = rec.lines[i].qty.saturating_sub(rec.pos_seen[i]);
            (reported.min(unreported), 0)
        }
        s if !s.is_final() => {
            let held = hold_line_qty(st, order.hold(), sku).unwrap_or(0);
            (0, reported.min(held))
        }
        _ => return None,
    };
    let applied = reported - recognized;
    Some(Event::PosOrderSale {
        store,
        sku,
        pos_event_id: d.pos_event_id.clone(),
        order,
        reported,
        recognized,
        from_hold,
        pos_time: d.pos_time,
        after: CellView {
            // A clamp, as for any POS sale: a till may sell more than the count says.
            on_hand: cell.on_hand.saturating_sub(applied),
            // `from_hold` is at most the hold's line, which the cell holds.
            held: cell
                .held
                .checked_sub(from_hold)
                .expect("a cell holds less than its active holds"),
            safety_stock: cell.view(default_safety).safety_stock,
        },
    })
}

/// Applies a [`Event::PosOrderSale`] to its cell and store.
pub(crate) fn apply_pos_sale(
    ev: &Event,
    cell: &mut Cell,
    st: &mut StoreState,
    at: Timestamp,
    horizon: Timestamp,
) -> Result<(), ApplyError> {
    let Event::PosOrderSale {
        sku,
        pos_event_id,
        order,
        reported,
        recognized,
        from_hold,
        pos_time,
        after,
        ..
    } = ev
    else {
        return Err(ApplyError::UnexpectedEvent {
            kind: ev.kind(),
            expected: "a pos order sale",
        });
    };
    if *from_hold > 0 {
        st.take_from_hold(order.hold(), *sku, *from_hold)
            .map_err(|e| e.in_change(HoldChange::PosSale, *order))?;
        cell.held = cell
            .held
            .checked_sub(*from_hold)
            .ok_or(ApplyError::BeyondCell {
                change: HoldChange::PosSale,
            })?;
    }
    cell.on_hand = after.on_hand;
    // An order forgotten since (long finished) has no record to count the sale on.
    if st.orders().get(*order).is_some() {
        st.orders_mut().apply_rec(*order, ev, at)?;
    }
    remember_pos_event(st, pos_event_id, at);
    let applied = i64::from(
        reported
            .checked_sub(*recognized)
            .ok_or(ApplyError::RecognizedBeyondReported)?,
    );
    push_recent(st, *sku, *pos_time, at, -applied, horizon);
    Ok(())
}

// ---------------------------------------------------------------- engine operations

type Decided<R> = Result<(Vec<Event>, R), EngineError>;

/// What a pickup code presented for an order says, before anything is handed off: the
/// prelude [`Engine::collect`] and [`Engine::verify_code`] share.
enum Presented {
    /// Not an order the code can be checked for: unknown, not `ready`, or (for a
    /// hand-off) with nothing left to hand off.
    Refused(OrderRejection),
    /// Not checked, nothing recorded: the order is locked or the input is malformed.
    Unchecked(VerifyOutcome),
    /// A wrong code ([`VerifyOutcome::Wrong`] or `WrongNowLocked`), recorded by
    /// [`wrong_code_event`].
    Wrong(VerifyOutcome),
    /// The code issued at `ready`.
    Right,
}

/// The release of `order`'s hold in the order's record, if the hold is still active.
fn release_of(st: &StoreState, order: OrderId, reason: ReleaseReason) -> Option<Event> {
    let hold = order.hold();
    st.hold(hold).map(|h| Event::HoldReleased {
        hold,
        reason,
        facts: h.facts(),
    })
}

/// The record of `order` if its status is one `allowed` takes: the prelude of every
/// order transition. Refused: [`OrderRejection::UnknownOrder`], or
/// [`OrderRejection::IllegalTransition`] from the status it has.
fn order_in(
    st: &StoreState,
    order: OrderId,
    allowed: impl Fn(OrderStatus) -> bool,
) -> Result<&OrderRec, OrderRejection> {
    let rec = st.orders().get(order).ok_or(OrderRejection::UnknownOrder)?;
    if !allowed(rec.status) {
        return Err(OrderRejection::IllegalTransition { from: rec.status });
    }
    Ok(rec)
}

/// Checks `code_input` against the code of `order`, which must be `ready` (and, when
/// `handing_off`, still have units to hand off), counting a wrong code towards
/// [`MAX_WRONG_ATTEMPTS`].
fn check_presented_code(
    st: &StoreState,
    order: OrderId,
    code_input: &str,
    handing_off: bool,
) -> Result<Presented, EngineError> {
    let rec = match order_in(st, order, |s| s == OrderStatus::Ready) {
        Ok(rec) => rec,
        Err(r) => return Ok(Presented::Refused(r)),
    };
    if handing_off && rec.lines.iter().all(|l| l.qty == 0) {
        return Ok(Presented::Refused(OrderRejection::NothingLeft));
    }
    if rec.locked {
        return Ok(Presented::Unchecked(VerifyOutcome::Locked));
    }
    let presented = match PickupCode::parse(code_input) {
        Ok(c) => c,
        Err(e) => return Ok(Presented::Unchecked(VerifyOutcome::Malformed(e))),
    };
    let issued = rec
        .code
        .and_then(|v| PickupCode::from_value(v).ok())
        .ok_or_else(|| EngineError::internal("order", "ready without a code"))?;
    if issued.verify(&presented) {
        return Ok(Presented::Right);
    }
    let wrong = rec.wrong.saturating_add(1);
    let now_locked = wrong >= MAX_WRONG_ATTEMPTS;
    Ok(Presented::Wrong(if now_locked {
        VerifyOutcome::WrongNowLocked
    } else {
        VerifyOutcome::Wrong {
            attempts_left: MAX_WRONG_ATTEMPTS - wrong,
        }
    }))
}

/// The event that counts a wrong code ([`Presented::Wrong`]) towards the lockout.
fn wrong_code_event(order: OrderId, staff: &StaffId, wrong: &VerifyOutcome) -> Event {
    Event::PickupCodeRejected {
        order,
        staff: staff.as_str().to_owned(),
        now_locked: matches!(wrong, VerifyOutcome::WrongNowLocked),
    }
}

impl Engine {
    /// Runs one order operation through the mutation skeleton ([`Engine::mutate`]): locks
    /// the order's hold cells (ascending SKU) and its store's state, lets `decide` choose
    /// the events (none: nothing changes), adds the order's facts after each transition
    /// ([`with_order_facts`]), appends them as one record, applies them with
    /// [`apply_locked`], unlocks and waits for durability.
    fn order_txn<R>(
        &self,
        order: OrderId,
        now: Timestamp,
        decide: impl FnOnce(&StoreShard, &Cells<'_>, &StoreState) -> Decided<R>,
    ) -> Result<(R, Option<Lsn>), EngineError> {
        let shard = self.hold_shard(order.hold())?;
        let horizon = now.add_ms(-self.config().limits.dedupe_window_ms);
        self.mutate(
            || {
                // Lines of a hold never change SKUs; only qty. If the hold ended in
                // between, the extra locks are harmless.
                let lines = hold_lines(shard, order.hold());
                Ok((Cells::lock(shard, lines)?, shard.state.lock()))
            },
            |(cells, st)| {
                let (events, r) = decide(shard, cells, st)?;
                if events.is_empty() {
                    return Ok(Decision::Answer(r));
                }
                let events = with_order_facts(st, events, now)?;
                Ok(Decision::Log(
                    std::sync::Arc::new(Record { at: now, events }),
                    r,
                ))
            },
            |(cells, st), record, _, r| {
                for ev in &record.events {
                    apply_locked(ev, cells, st, now, horizon)
                        .map_err(|e| EngineError::internal("order", e.to_string()))?;
                }
                Ok(r)
            },
        )
    }

    /// Creates a pickup order (status `placed`) from an active hold. The order id is the
    /// hold's ([`OrderId::from_hold`]).
    pub fn create_order(
        &self,
        req: &CreateOrder,
        now: Timestamp,
    ) -> Result<CreateOrderOutcome, EngineError> {
        let limits = &self.config().limits;
        check_id("channel", &req.channel, CHANNEL_LEN_MAX)?;
        check_id(
            "channel_order_id",
            &req.channel_order_id,
            limits.external_id_len_max,
        )?;
        if let Some(k) = &req.idempotency_key {
            check_id("idempotency_key", k, limits.key_len_max)?;
        }
        for (field, v, len_max) in [
            ("customer.name", &req.customer.name, CONTACT_LEN_MAX),
            ("customer.email", &req.customer.email, CONTACT_LEN_MAX),
            ("customer.phone", &req.customer.phone, CONTACT_LEN_MAX),
            ("customer.locale", &req.customer.locale, LOCALE_LEN_MAX),
        ] {
            if let Some(v) = v {
                check_id(field, v, len_max)?;
            }
        }
        let currency = Currency::iso(&req.currency)
            .map_err(|e| EngineError::invalid("currency", e.to_string()))?;
        if req.lines.is_empty() || req.lines.len() > limits.hold_lines_max {
            return Err(EngineError::invalid(
                "lines",
                format!("must have 1..={} lines", limits.hold_lines_max),
            ));
        }
        let mut total: i64 = 0;
        let mut lines = Vec::with_capacity(req.lines.len());
        let mut unknown_sku = false;
        for l in &req.lines {
            if l.description.len() > RECEIPT_TEXT_LEN_MAX {
                return Err(EngineError::invalid(
                    "description",
                    format!("longer than {RECEIPT_TEXT_LEN_MAX} bytes"),
                ));
            }
            total = i64::from(l.qty)
                .checked_mul(l.unit_price_minor)
                .and_then(|t| t.checked_add(total))
                .ok_or_else(|| EngineError::invalid("unit_price_minor", "order total overflows"))?;
            match self.sku_id(&l.sku) {
                Some(sku) => lines.push(OrderLine {
                    sku,
                    qty: l.qty,
                    unit_price_minor: l.unit_price_minor,
                    description: l.description.clone(),
                }),
                None => unknown_sku = true,
            }
        }
        lines.sort_by_key(|l| l.sku);
        let order = OrderId::from_hold(req.hold);
        // The channel reference and the key are unique across stores. Claimed first, so
        // that a request for another hold with either of them, at any store, waits for
        // this one's answer (`InFlight`) instead of deciding at the same time.
        let channel_ref: (Box<str>, Box<str>) = (
            req.channel.as_str().into(),
            req.channel_order_id.as_str().into(),
        );
        let names = std::iter::once(OrderName::Channel(
            channel_ref.0.clone(),
            channel_ref.1.clone(),
        ))
        .chain(
            req.idempotency_key
                .as_deref()
                .map(|k| OrderName::Key(k.into())),
        );
        let Some(_claimed) = ClaimedNames::claim(&self.order_claims, order, names) else {
            return Ok(CreateOrderOutcome::InFlight);
        };
        // A key is remembered by the store of the order it created. Another store's use of
        // it is checked here, outside this store's locks (one store's state is never
        // locked while holding another's; the claim above keeps other requests with the
        // key out meanwhile); this store's under its lock, below, so two requests racing
        // with one key on this store's holds cannot both create.
        if let Some(key) = req.idempotency_key.as_deref() {
            for (id, _) in self.stores() {
                if id == order.store() {
                    continue;
                }
                let used = self
                    .shard(id)
                    .and_then(|shard| shard.state.lock().orders().by_key(key));
                if let Some(used) = used {
                    return Ok(CreateOrderOutcome::Rejected(
                        CreateOrderRejection::KeyReused { order: used },
                    ));
                }
            }
        }
        // A channel reference is unique across stores too; another store's orders are
        // checked here, outside this store's locks, like the key above.
        for (id, _) in self.stores() {
            if id == order.store() {
                continue;
            }
            let existing = self
                .shard(id)
                .and_then(|shard| shard.state.lock().orders().holder_of(&channel_ref));
            if let Some(existing) = existing {
                return Ok(CreateOrderOutcome::Rejected(
                    CreateOrderRejection::ChannelOrderExists { order: existing },
                ));
            }
        }
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            let reject = |r| Ok((Vec::new(), CreateOrderOutcome::Rejected(r)));
            if let Some(key) = req.idempotency_key.as_deref()
                && let Some(used) = st.orders().by_key(key)
            {
                // The same request is the same hold for the same channel order.
                let same = used == order
                    && st.orders().get(used).is_some_and(|rec| {
                        *rec.channel == *req.channel
                            && *rec.channel_order_id == *req.channel_order_id
                    });
                return if same {
                    Ok((Vec::new(), CreateOrderOutcome::Created { order }))
                } else {
                    reject(CreateOrderRejection::KeyReused { order: used })
                };
            }
            if st.orders().get(order).is_some() {
                return reject(CreateOrderRejection::OrderExists { order });
            }
            if let Some(existing) = st.orders().holder_of(&channel_ref) {
                return reject(CreateOrderRejection::ChannelOrderExists { order: existing });
            }
            let Some(h) = st.hold(req.hold) else {
                return reject(CreateOrderRejection::HoldNotActive(not_active(
                    st, req.hold,
                )));
            };
            let same = !unknown_sku
                && h.lines.len() == lines.len()
                && h.lines
                    .iter()
                    .zip(&lines)
                    .all(|(a, b)| a.sku == b.sku && a.qty == b.qty);
            if !same {
                return reject(CreateOrderRejection::LinesMismatch);
            }
            Ok((
                vec![Event::OrderCreated {
                    order,
                    channel: req.channel.clone(),
                    channel_order_id: req.channel_order_id.clone(),
                    customer: Box::new(req.customer.clone()),
                    lines: lines.clone(),
                    currency: currency.code().to_owned(),
                    currency_exponent: currency.exponent(),
                    key: req.idempotency_key.clone(),
                }],
                CreateOrderOutcome::Created { order },
            ))
        })?;
        Ok(outcome)
    }

    fn simple_transition(
        &self,
        order: OrderId,
        now: Timestamp,
        from: OrderStatus,
        to: OrderStatus,
        event: impl FnOnce(&StoreState) -> Vec<Event>,
    ) -> Result<TransitionOutcome, EngineError> {
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            let Some(rec) = st.orders().get(order) else {
                return Ok((
                    Vec::new(),
                    TransitionOutcome::Rejected(OrderRejection::UnknownOrder),
                ));
            };
            if rec.status == to {
                return Ok((Vec::new(), TransitionOutcome::Done { status: to }));
            }
            if rec.status != from {
                return Ok((
                    Vec::new(),
                    TransitionOutcome::Rejected(OrderRejection::IllegalTransition {
                        from: rec.status,
                    }),
                ));
            }
            Ok((event(st), TransitionOutcome::Done { status: to }))
        })?;
        Ok(outcome)
    }

    /// Checkout confirmed the order: `placed -> confirmed` (the hold is confirmed too).
    /// Idempotent.
    pub fn confirm_order(
        &self,
        order: OrderId,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        self.simple_transition(
            order,
            now,
            OrderStatus::Placed,
            OrderStatus::Confirmed,
            |st| {
                let hold = order.hold();
                let mut evs = Vec::new();
                if let Some(h) = st.hold(hold).filter(|h| !h.confirmed) {
                    evs.push(Event::HoldConfirmed {
                        hold,
                        facts: h.facts(),
                    });
                }
                // The booked slot is the promise; without one, the store's estimate now
                // (this order not yet in the queue it estimates from).
                let ready_estimate = st
                    .hold(hold)
                    .and_then(HoldRec::slot)
                    .or_else(|| {
                        st.slots()
                            .estimate(now.as_ms(), None)
                            .map(|e| e.slot.start_ms)
                    })
                    .map(Timestamp);
                evs.push(Event::OrderConfirmed {
                    order,
                    ready_estimate,
                });
                evs
            },
        )
    }

    /// Staff start picking: `confirmed -> picking`. Idempotent.
    pub fn start_picking(
        &self,
        order: OrderId,
        staff: &StaffId,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        self.simple_transition(
            order,
            now,
            OrderStatus::Confirmed,
            OrderStatus::Picking,
            |_| {
                vec![Event::PickingStarted {
                    order,
                    staff: staff.as_str().to_owned(),
                }]
            },
        )
    }

    /// A line was found short while picking: [`Engine::report_short`] with one line.
    pub fn short_pick(
        &self,
        req: &ShortPick,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        let report = ShortReport {
            order: req.order,
            lines: vec![ShortLine {
                sku: req.sku.clone(),
                found: req.found,
                resolution: req.resolution,
            }],
            staff: req.staff.clone(),
        };
        Ok(match self.report_short(&report, now)? {
            ShortReportOutcome::Done { status, .. } => TransitionOutcome::Done { status },
            ShortReportOutcome::Rejected { rejection, .. } => {
                TransitionOutcome::Rejected(rejection)
            }
        })
    }

    /// Lines were found short while picking. Per line, the order line and the hold shrink
    /// by the missing units, `on_hand` is corrected ([`Event::StockAdjusted`]), and the
    /// missing units are either sent for re-allocation ([`Event::ReallocationRequested`])
    /// or dropped. When no unit is left to pick, the order is cancelled by the store and
    /// its hold released (pickup.proto: "CANCELLED when nothing is left to pick").
    ///
    /// All or nothing: every line is checked against the state before anything is
    /// logged, and everything goes into one record. A SKU listed twice is misuse
    /// (`Err`, [`EngineError::InvalidArgument`] naming `lines`): the second line could
    /// only be judged against a state the first one already changed.
    pub fn report_short(
        &self,
        req: &ShortReport,
        now: Timestamp,
    ) -> Result<ShortReportOutcome, EngineError> {
        let limits = &self.config().limits;
        if req.lines.is_empty() || req.lines.len() > limits.hold_lines_max {
            return Err(EngineError::invalid(
                "lines",
                format!("must have 1..={} lines", limits.hold_lines_max),
            ));
        }
        for (i, l) in req.lines.iter().enumerate() {
            if req.lines[..i].iter().any(|o| o.sku == l.sku) {
                return Err(EngineError::invalid(
                    "lines",
                    format!("lines[{i}] lists SKU {:?} a second time", l.sku),
                ));
            }
        }
        let order = req.order;
        let skus: Vec<Option<SkuId>> = req.lines.iter().map(|l| self.sku_id(&l.sku)).collect();
        let (outcome, _) = self.order_txn(order, now, |shard, cells, st| {
            let rej = |line, rejection| {
                Ok((Vec::new(), ShortReportOutcome::Rejected { line, rejection }))
            };
            let rec = match order_in(st, order, |s| s == OrderStatus::Picking) {
                Ok(rec) => rec,
                Err(r) => return rej(None, r),
            };
            let staff = req.staff.as_str().to_owned();
            let mut evs = Vec::new();
            let mut missing_per_line = Vec::with_capacity(req.lines.len());
            // Order line units after the report, to see whether anything is left.
            let mut left: Vec<(SkuId, Qty)> = rec.lines.iter().map(|l| (l.sku, l.qty)).collect();
            for (i, (l, sku)) in req.lines.iter().zip(&skus).enumerate() {
                let Some(sku) = *sku else {
                    return rej(Some(i), OrderRejection::NoSuchLine);
                };
                let Some(line) = rec.lines.iter().find(|ol| ol.sku == sku) else {
                    return rej(Some(i), OrderRejection::NoSuchLine);
                };
                let held = hold_line_qty(st, order.hold(), sku).unwrap_or(0);
                // Finding more than ordered is not short (a clamp of the caller's count).
                let missing = line.qty.saturating_sub(l.found).min(held);
                if missing == 0 {
                    return rej(Some(i), OrderRejection::NotShort { line_qty: line.qty });
                }
                let cell = cells
                    .view(sku)
                    .ok_or_else(|| EngineError::internal("sku", "cell not locked"))?;
                // A clamp, as for any POS delta: in a shortage `on_hand` may already be
                // below the units the hold has, and it never goes below zero.
                let on_hand_after = cell.on_hand.saturating_sub(missing);
                evs.push(Event::StockAdjusted {
                    store: shard.id,
                    sku,
                    qty: i64::from(on_hand_after) - i64::from(cell.on_hand),
                    after: CellView {
                        on_hand: on_hand_after,
                        // `missing` is at most the hold's line, which the cell holds.
                        held: cell
                            .held
                            .checked_sub(missing)
                            .expect("a cell holds less than its active holds"),
                        ..cell.view(shard.default_safety())
                    },
                    order,
                });
                evs.push(Event::OrderShortPicked {
                    order,
                    sku,
                    missing,
                    resolution: l.resolution,
                    staff: staff.clone(),
                });
                if l.resolution == ShortPickResolution::Reallocate {
                    evs.push(Event::ReallocationRequested {
                        order,
                        sku,
                        missing,
                    });
                }
                for (s, q) in &mut left {
                    if *s == sku {
                        // A clamp: the request may name the line twice.
                        *q = q.saturating_sub(missing);
                    }
                }
                missing_per_line.push(missing);
            }
            let mut status = OrderStatus::Picking;
            if left.iter().all(|(_, q)| *q == 0) {
                evs.extend(release_of(st, order, ReleaseReason::Released));
                evs.push(Event::OrderCancelled {
                    order,
                    by: CancelledBy::Store,
                    staff: Some(staff),
                });
                status = OrderStatus::Cancelled;
            }
            Ok((
                evs,
                ShortReportOutcome::Done {
                    status,
                    missing: missing_per_line,
                },
            ))
        })?;
        Ok(outcome)
    }

    /// Picking is done: `picking -> ready`. Issues the pickup code from the caller's
    /// CSPRNG bytes (the engine never reads randomness) and its QR payload.
    pub fn mark_ready(
        &self,
        order: OrderId,
        staff: &StaffId,
        entropy: [u8; ENTROPY_BYTES],
        now: Timestamp,
    ) -> Result<ReadyOutcome, EngineError> {
        let code = PickupCode::from_entropy(entropy);
        let (outcome, _) = self.order_txn(order, now, |shard, _, st| {
            let rec = match order_in(st, order, |s| s == OrderStatus::Picking) {
                Ok(rec) => rec,
                Err(r) => return Ok((Vec::new(), ReadyOutcome::Rejected(r))),
            };
            if rec.lines.iter().all(|l| l.qty == 0) {
                return Ok((
                    Vec::new(),
                    ReadyOutcome::Rejected(OrderRejection::NothingLeft),
                ));
            }
            let store = shard.def.read().external_id.clone();
            Ok((
                vec![Event::OrderReady {
                    order,
                    staff: staff.as_str().to_owned(),
                    code: code.value(),
                }],
                ReadyOutcome::Ready {
                    code,
                    qr: QrPayload::new(&store, &order.to_string(), code),
                },
            ))
        })?;
        Ok(outcome)
    }

    /// Hand-off: checks the code the customer presents and, if right, moves the order to
    /// `collected`: `on_hand` and `held` fall by the order's lines (less what the POS
    /// already reported), the hold ends, and the e-receipt is produced. Wrong codes count;
    /// after [`MAX_WRONG_ATTEMPTS`] the order locks until [`Engine::staff_override`].
    pub fn collect(
        &self,
        order: OrderId,
        code_input: &str,
        staff: &StaffId,
        now: Timestamp,
    ) -> Result<CollectOutcome, EngineError> {
        let (outcome, lsn) = self.order_txn(order, now, |_, _, st| {
            let nothing = |o| Ok((Vec::new(), o));
            match check_presented_code(st, order, code_input, true)? {
                Presented::Refused(r) => return nothing(CollectOutcome::Rejected(r)),
                Presented::Unchecked(v) => return nothing(CollectOutcome::Code(v)),
                Presented::Wrong(v) => {
                    return Ok((
                        vec![wrong_code_event(order, staff, &v)],
                        CollectOutcome::Code(v),
                    ));
                }
                Presented::Right => {}
            }
            let h = st
                .hold(order.hold())
                .ok_or_else(|| EngineError::internal("order", "ready without an active hold"))?;
            let consumed = h.lines.iter().filter(|l| l.qty > 0).copied().collect();
            Ok((
                vec![Event::OrderCollected {
                    order,
                    staff: staff.as_str().to_owned(),
                    receipt_seq: st.orders().receipt_seq() + 1,
                    consumed,
                    hold: h.facts(),
                }],
                CollectOutcome::Collected {
                    receipt: Box::new(Err(ReceiptError::InvalidStoreId)),
                    lsn: Lsn(0),
                },
            ))
        })?;
        Ok(match (outcome, lsn) {
            (CollectOutcome::Collected { .. }, Some(lsn)) => CollectOutcome::Collected {
                receipt: Box::new(
                    self.order_receipt(order)
                        .unwrap_or(Err(ReceiptError::InvalidStoreId)),
                ),
                lsn,
            },
            (other, _) => other,
        })
    }

    /// Unlocks an order locked by wrong codes, recording the staff member.
    pub fn staff_override(
        &self,
        order: OrderId,
        staff: &StaffId,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            let rej = |r| Ok((Vec::new(), TransitionOutcome::Rejected(r)));
            let rec = match order_in(st, order, |s| s == OrderStatus::Ready) {
                Ok(rec) => rec,
                Err(r) => return rej(r),
            };
            if !rec.locked {
                return rej(OrderRejection::NotLocked);
            }
            Ok((
                vec![Event::PickupCodeOverride {
                    order,
                    staff: staff.as_str().to_owned(),
                    sequence: rec.overrides.saturating_add(1),
                }],
                TransitionOutcome::Done {
                    status: OrderStatus::Ready,
                },
            ))
        })?;
        Ok(outcome)
    }

    /// Cancels an unfinished order and releases its hold.
    pub fn cancel_order(
        &self,
        order: OrderId,
        by: &Canceller,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            if let Err(r) = order_in(st, order, |s| !s.is_final()) {
                return Ok((Vec::new(), TransitionOutcome::Rejected(r)));
            }
            let mut evs = Vec::new();
            evs.extend(release_of(st, order, ReleaseReason::Released));
            let (by, staff) = match by {
                Canceller::Customer => (CancelledBy::Customer, None),
                Canceller::Store(s) => (CancelledBy::Store, Some(s.as_str().to_owned())),
            };
            evs.push(Event::OrderCancelled { order, by, staff });
            Ok((
                evs,
                TransitionOutcome::Done {
                    status: OrderStatus::Cancelled,
                },
            ))
        })?;
        Ok(outcome)
    }

    /// Staff record that the customer did not come: `ready -> no_show`. Allowed once the
    /// order's pickup window has ended, that is at or after the end of its booked slot
    /// (staff may end the grace period early), or for an order without a slot at or
    /// after its hold's expiry (what the expiry ticker would do, recorded with the staff
    /// member). The hold is released in the same record, so its units are available to
    /// promise again and its slot capacity is freed, exactly as when it expires.
    /// Idempotent: an order already `no_show` (by staff or by expiry) is `Done`.
    pub fn no_show(
        &self,
        order: OrderId,
        staff: &StaffId,
        now: Timestamp,
    ) -> Result<TransitionOutcome, EngineError> {
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            let rej = |r| Ok((Vec::new(), TransitionOutcome::Rejected(r)));
            let Some(rec) = st.orders().get(order) else {
                return rej(OrderRejection::UnknownOrder);
            };
            match rec.status {
                OrderStatus::NoShow => {
                    return Ok((
                        Vec::new(),
                        TransitionOutcome::Done {
                            status: OrderStatus::NoShow,
                        },
                    ));
                }
                OrderStatus::Ready => {}
                from => return rej(OrderRejection::IllegalTransition { from }),
            }
            let hold = order.hold();
            let mut evs = Vec::new();
            if let Some(h) = st.hold(hold) {
                // The slot as the calendar cuts it now; a slot the calendar no longer
                // has (hours changed since) ends with the hold.
                let ends_at = h
                    .slot()
                    .and_then(|start| st.slots().calendar()?.slot_at(start))
                    .map_or(h.expires_at, |slot| Timestamp(slot.end_ms));
                if now < ends_at {
                    return rej(OrderRejection::PickupWindowOpen { ends_at });
                }
                evs.extend(release_of(st, order, ReleaseReason::Expired));
            }
            evs.push(Event::OrderNoShow {
                order,
                staff: staff.as_str().to_owned(),
            });
            Ok((
                evs,
                TransitionOutcome::Done {
                    status: OrderStatus::NoShow,
                },
            ))
        })?;
        Ok(outcome)
    }

    /// Checks the code a customer presents for a `ready` order without handing it off:
    /// a wrong code is recorded and counts towards the lockout exactly as in
    /// [`Engine::collect`]; a right code changes nothing (the hand-off still needs it).
    pub fn verify_code(
        &self,
        order: OrderId,
        code_input: &str,
        staff: &StaffId,
        now: Timestamp,
    ) -> Result<VerifyCodeOutcome, EngineError> {
        let (outcome, _) = self.order_txn(order, now, |_, _, st| {
            Ok(match check_presented_code(st, order, code_input, false)? {
                Presented::Refused(r) => (Vec::new(), VerifyCodeOutcome::Rejected(r)),
                Presented::Unchecked(v) => (Vec::new(), VerifyCodeOutcome::Code(v)),
                Presented::Wrong(v) => (
                    vec![wrong_code_event(order, staff, &v)],
                    VerifyCodeOutcome::Code(v),
                ),
                Presented::Right => (Vec::new(), VerifyCodeOutcome::Code(VerifyOutcome::Accepted)),
            })
        })?;
        Ok(outcome)
    }

    /// A page of one store's orders in order id (creation) order, after `after`
    /// (exclusive), at most `limit`, only those whose status `wanted` accepts.
    pub fn store_orders(
        &self,
        store: &str,
        after: Option<OrderId>,
        limit: usize,
        wanted: impl Fn(OrderStatus) -> bool,
    ) -> Result<Vec<OrderView>, EngineError> {
        let shard = self.shard_by_name(store)?;
        let st = shard.state.lock();
        let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(st
            .orders()
            .records()
            .range((start, std::ops::Bound::Unbounded))
            .filter(|(_, r)| wanted(r.status))
            .take(limit)
            .map(|(id, r)| order_view(*id, r))
            .collect())
    }

    /// Orders not in a final state, in every store.
    pub fn open_orders(&self) -> usize {
        self.stores()
            .iter()
            .filter_map(|(id, _)| self.shard(*id))
            .map(|s| {
                let st = s.state.lock();
                st.orders()
                    .records()
                    .values()
                    .filter(|r| !r.status.is_final())
                    .count()
            })
            .sum()
    }

    /// An order, if the engine knows it.
    pub fn order(&self, order: OrderId) -> Option<OrderView> {
        let shard = self.shard(order.store())?;
        let st = shard.state.lock();
        let r = st.orders().get(order)?;
        Some(order_view(order, r))
    }

    /// The order a POS order reference names at `store`: the engine's order id
    /// (`O<store>-<seq>`) or the channel order id.
    pub fn order_by_ref(&self, store: &str, reference: &str) -> Option<OrderId> {
        let shard = self.shard_by_name(store).ok()?;
        let st = shard.state.lock();
        st.orders().find_ref(shard.id, reference)
    }

    /// The order of `(channel, channel_order_id)` in any store: the one that holds the
    /// reference (open or collected; at most one does), else the latest order that had
    /// it, if the engine still remembers one.
    pub fn order_by_channel(&self, channel: &str, channel_order_id: &str) -> Option<OrderId> {
        let channel_ref: (Box<str>, Box<str>) = (channel.into(), channel_order_id.into());
        let mut ended = None;
        for (id, _) in self.stores() {
            let Some(shard) = self.shard(id) else {
                continue;
            };
            let st = shard.state.lock();
            if let Some(holder) = st.orders().holder_of(&channel_ref) {
                return Some(holder);
            }
            ended = ended.or_else(|| st.orders().latest_of(&channel_ref));
        }
        ended
    }

    /// The e-receipt of a collected order (`None` if unknown or not collected).
    pub fn order_receipt(&self, order: OrderId) -> Option<Result<Receipt, ReceiptError>> {
        let facts = {
            let shard = self.shard(order.store())?;
            let st = shard.state.lock();
            OrderFacts(st.orders().get(order)?.clone())
        };
        self.receipt_of(order, &facts)
    }

    /// The e-receipt of a collected order as an [`Event::OrderChanged`] recorded it (`None`
    /// if it was not collected then or its store is unknown).
    pub fn receipt_of(
        &self,
        order: OrderId,
        facts: &OrderFacts,
    ) -> Option<Result<Receipt, ReceiptError>> {
        let r = &facts.0;
        let seq = r.receipt_seq?;
        let collected_at = r
            .times
            .iter()
            .rev()
            .find(|(s, _)| *s == OrderStatus::Collected)
            .map(|(_, t)| *t)?;
        let def = self.store_def(order.store())?;
        Some((|| {
            Receipt::new(ReceiptInput {
                receipt_number: ReceiptNumber::new(&def.external_id, seq)?,
                order_id: order.to_string(),
                channel_order_id: r.channel_order_id.to_string(),
                store_name: def.name.clone(),
                store_time_zone: def.time_zone.clone(),
                collected_at_ms: collected_at.as_ms(),
                currency: Currency::new(&r.currency, r.currency_exponent)?,
                lines: r
                    .lines
                    .iter()
                    .filter(|l| l.qty > 0)
                    .map(|l| ReceiptLine {
                        sku: self.sku_name(l.sku).unwrap_or_default(),
                        description: l.description.clone(),
                        qty: l.qty,
                        unit_price_minor: l.unit_price_minor,
                    })
                    .collect(),
            })
        })())
    }

    /// Replays one order event of a logged record with the locks the live operation held.
    pub(crate) fn replay_order_event(&self, ev: &Event, at: Timestamp) -> Result<(), ApplyError> {
        let horizon = at.add_ms(-self.config().limits.dedupe_window_ms);
        let (store, lines) = match ev {
            Event::StockAdjusted { store, sku, .. } | Event::PosOrderSale { store, sku, .. } => {
                (*store, vec![Line { sku: *sku, qty: 0 }])
            }
            _ => {
                let store = ev.store().ok_or(ApplyError::NoStore)?;
                let shard = self.shard(store).ok_or(ApplyError::UnknownStore)?;
                let hold = match ev.changed_order() {
                    Some(order) => order.hold(),
                    None => {
                        return Err(ApplyError::UnexpectedEvent {
                            kind: ev.kind(),
                            expected: "an order event",
                        });
                    }
                };
                (store, hold_lines(shard, hold))
            }
        };
        let shard = self.shard(store).ok_or(ApplyError::UnknownStore)?;
        let mut cells = Cells::lock(shard, lines)?;
        let mut st = shard.state.lock();
        apply_locked(ev, &mut cells, &mut st, at, horizon)
    }
}

fn hold_lines(shard: &StoreShard, hold: HoldId) -> Vec<Line> {
    shard
        .state
        .lock()
        .hold(hold)
        .map(|h| h.lines.to_vec())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- codec

/// Arbitrary order facts for the event codec's property test: an order created from
/// arbitrary fields, confirmed with an arbitrary estimate or not, as the state builds it.
#[cfg(test)]
impl crate::event::arb::Arb for OrderFacts {
    fn arb() -> proptest::strategy::BoxedStrategy<Self> {
        use crate::event::arb::arb;
        use proptest::prelude::*;
        (
            (arb::<String>(), arb::<String>(), arb::<Customer>()),
            (arb::<Vec<OrderLine>>(), arb::<String>(), arb::<u8>()),
            (
                arb::<Option<String>>(),
                arb::<i64>(),
                arb::<Option<Option<Timestamp>>>(),
            ),
        )
            .prop_map(
                |(
                    (channel, channel_order_id, customer),
                    (lines, currency, currency_exponent),
                    (key, at, confirmed),
                )| {
                    let at = Timestamp(at);
                    let created = Event::OrderCreated {
                        order: OrderId(1),
                        channel,
                        channel_order_id,
                        customer: Box::new(customer),
                        lines,
                        currency,
                        currency_exponent,
                        key,
                    };
                    let mut rec = OrderRec::created(&created, at).expect("an OrderCreated");
                    if let Some(ready_estimate) = confirmed {
                        let ev = Event::OrderConfirmed {
                            order: OrderId(1),
                            ready_estimate,
                        };
                        rec.apply(&ev, at).expect("a placed order confirms");
                    }
                    OrderFacts(rec)
                },
            )
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Dec, Enc};
    use crate::order_facts::RecLayout;
    use crate::order_state::OrderState;

    /// Requests for one order share a claim until the last of them ends; another order's
    /// request is kept out all that time.
    #[test]
    fn a_shared_claim_ends_with_its_last_holder() {
        let claims = OrderClaims::default();
        let name = || [OrderName::Channel("web".into(), "#1".into())];
        let first = OrderId::from_hold(HoldId::new(StoreId(0), 1));
        let other = OrderId::from_hold(HoldId::new(StoreId(1), 1));
        let a = ClaimedNames::claim(&claims, first, name()).unwrap();
        let again = ClaimedNames::claim(&claims, first, name()).unwrap();
        drop(a);
        assert!(ClaimedNames::claim(&claims, other, name()).is_none());
        drop(again);
        assert!(claims.is_empty());
        assert!(ClaimedNames::claim(&claims, other, name()).is_some());
        assert!(claims.is_empty(), "dropped at once");
    }

    #[test]
    fn order_id_display_parses_back() {
        let id = OrderId::from_hold(HoldId::new(StoreId(3), 42));
        assert_eq!(id.to_string(), "O3-42");
        assert_eq!(OrderId::parse("O3-42"), Some(id));
        assert_eq!(OrderId::parse("O3-042"), None);
        assert_eq!(OrderId::parse("#1001"), None);
        assert_eq!(OrderId::parse("O-1"), None);
    }

    #[test]
    fn order_state_snapshot_round_trips() {
        let mut st = StoreState::default();
        let order = OrderId::from_hold(HoldId::new(StoreId(0), 0));
        let ev = Event::OrderCreated {
            order,
            channel: "shopify".into(),
            channel_order_id: "#1001".into(),
            customer: Box::new(Customer {
                email: Some("a@example.com".into()),
                phone: None,
                sms_consent: false,
                email_consent: true,
                name: Some("Ada".into()),
                locale: Some("en-GB".into()),
            }),
            lines: vec![OrderLine {
                sku: SkuId(1),
                qty: 2,
                unit_price_minor: 999,
                description: "Mug".into(),
            }],
            currency: "EUR".into(),
            currency_exponent: 2,
            key: Some("k".into()),
        };
        let mut cells = Cells {
            lines: Vec::new(),
            guards: Vec::new(),
        };
        apply_locked(&ev, &mut cells, &mut st, Timestamp(5), Timestamp(0)).unwrap();
        let cancel = Event::OrderCancelled {
            order,
            by: CancelledBy::Customer,
            staff: None,
        };
        apply_state_event(&cancel, &mut st, Timestamp(9)).unwrap();
        let mut buf = Vec::new();
        st.orders().encode(&mut Enc::new(&mut buf));
        let mut d = Dec::new(&buf);
        let back = OrderState::decode(&mut d, RecLayout::WithEstimate).unwrap();
        d.finish().unwrap();
        assert_eq!(&back, st.orders());
        // Every truncation fails cleanly instead of panicking.
        for n in 0..buf.len() {
            assert!(OrderState::decode(&mut Dec::new(&buf[..n]), RecLayout::WithEstimate).is_err());
        }
    }
}
