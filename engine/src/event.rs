//! Domain events: the one ordered record of every state change.
//!
//! Every mutation produces one [`Record`]: the time it was applied and its events, in order.
//! The record is what the write-ahead log stores and what replay applies, so that replaying
//! the log rebuilds exactly the state the live engine had. Events carry outcomes, not
//! requests: a replay never decides anything again (ids, expiry times and matched holds are
//! recorded), which makes it independent of the thread interleaving of the live run.
//!
//! The record's log sequence number is the stable id of its events.

use crate::codec::{Dec, DecodeError, Enc};
use crate::order_facts::{
    CancelledBy, Customer, OrderLine, OrderRec, RecLayout, ShortPickResolution,
};
use crate::types::{
    CellView, HoldId, Line, Lsn, OrderId, Qty, SkuId, StoreId, StoreStatus, Timestamp,
};
use crate::wire::{Wire, decode_lines, encode_lines};

/// A store's definition as registered or updated.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreDef {
    /// External id (as the retailer names the store).
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Pickup status.
    pub status: StoreStatus,
    /// Safety stock of cells that have none set explicitly.
    pub default_safety_stock: Qty,
    /// Hold time when a request names none.
    pub default_hold_ms: i64,
    /// Longest hold time a request may ask for at this store.
    pub max_hold_ms: i64,
    /// Text shown to customers, e.g. "desk by entrance B".
    pub pickup_instructions: String,
}

impl StoreDef {
    /// A store with the defaults of SPEC section 4: open, 2 hour holds, at most 24 hours.
    pub fn new(external_id: impl Into<String>, lat: f64, lon: f64, time_zone: &str) -> Self {
        let external_id = external_id.into();
        StoreDef {
            name: external_id.clone(),
            external_id,
            lat,
            lon,
            time_zone: time_zone.to_owned(),
            status: StoreStatus::Open,
            default_safety_stock: 0,
            default_hold_ms: 2 * 3_600_000,
            max_hold_ms: 24 * 3_600_000,
            pickup_instructions: String::new(),
        }
    }
}

/// Why a hold ended without being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseReason {
    /// The caller released it (cancelled checkout, cancelled order).
    Released,
    /// Its time ran out.
    Expired,
}

/// The kind of a POS stock delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PosDeltaKind {
    /// Units sold at the till: `on_hand` falls.
    Sale,
    /// Units returned by a customer: `on_hand` rises.
    Return,
    /// Units received from a delivery: `on_hand` rises.
    Receive,
    /// A signed correction (damage, theft, found stock).
    Adjust,
}

impl PosDeltaKind {
    fn to_u8(self) -> u8 {
        match self {
            PosDeltaKind::Sale => 0,
            PosDeltaKind::Return => 1,
            PosDeltaKind::Receive => 2,
            PosDeltaKind::Adjust => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => PosDeltaKind::Sale,
            1 => PosDeltaKind::Return,
            2 => PosDeltaKind::Receive,
            3 => PosDeltaKind::Adjust,
            _ => return None,
        })
    }
}

/// A hold as it stood at the moment of an event: an event carries the facts a reader
/// needs, so that reading it later (from the log, after a restart) tells the same story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldFacts {
    /// Lines held, sorted by SKU.
    pub lines: Vec<Line>,
    /// When it was granted.
    pub created: Timestamp,
    /// When it expires (or expired).
    pub expires_at: Timestamp,
    /// The pickup slot (`start_ms`) it booked, if any.
    pub slot: Option<i64>,
    /// Checkout had confirmed it.
    pub confirmed: bool,
}

impl HoldFacts {
    pub(crate) fn encode(&self, e: &mut Enc<'_>) {
        encode_lines(e, &self.lines);
        e.i64(self.created.0);
        e.i64(self.expires_at.0);
        match self.slot {
            Some(s) => {
                e.u8(1);
                e.i64(s);
            }
            None => e.u8(0),
        }
        e.bool(self.confirmed);
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<HoldFacts, DecodeError> {
        let lines = decode_lines(d)?;
        let created = Timestamp(d.i64()?);
        let expires_at = Timestamp(d.i64()?);
        let at = d.pos();
        let slot = match d.u8()? {
            0 => None,
            1 => Some(d.i64()?),
            tag => {
                return Err(DecodeError::Tag {
                    what: "hold slot",
                    tag,
                    at,
                });
            }
        };
        Ok(HoldFacts {
            lines,
            created,
            expires_at,
            slot,
            confirmed: d.bool()?,
        })
    }
}

pub(crate) fn encode_cell(e: &mut Enc<'_>, c: &CellView) {
    e.u32(c.on_hand);
    e.u32(c.held);
    e.u32(c.safety_stock);
}

pub(crate) fn decode_cell(d: &mut Dec<'_>) -> Result<CellView, DecodeError> {
    Ok(CellView {
        on_hand: d.u32()?,
        held: d.u32()?,
        safety_stock: d.u32()?,
    })
}

/// One line of a hold rejection: which SKU, how many were asked, how many were available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineShortage {
    /// The SKU's external id.
    pub sku: String,
    /// Units asked for.
    pub requested: Qty,
    /// Units available to promise when the hold was refused.
    pub available: Qty,
}

/// Why a hold was refused. A business outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldRejection {
    /// At least one line has less available to promise than asked; every short line is
    /// listed.
    InsufficientStock {
        /// The short lines.
        shortages: Vec<LineShortage>,
    },
    /// The store does not take new holds (pickups paused or closed).
    StoreNotAccepting {
        /// Its status.
        status: StoreStatus,
    },
    /// The requested pickup slot cannot be booked; nothing is reserved.
    SlotUnavailable {
        /// The slot asked for (its `start_ms`).
        slot_start_ms: i64,
        /// Why.
        problem: crate::slot::SlotProblem,
    },
}

/// One domain event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A store was registered or its definition replaced.
    StoreDefined {
        /// Its compact id.
        store: StoreId,
        /// Its definition.
        def: StoreDef,
    },
    /// A SKU external id was interned.
    SkuRegistered {
        /// Its compact id.
        sku: SkuId,
        /// Its external id.
        external_id: String,
    },
    /// A cell's safety stock was set.
    SafetyStockSet {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// New safety stock.
        safety_stock: Qty,
    },
    /// A hold was granted: every line reserved.
    HoldGranted {
        /// The hold.
        hold: HoldId,
        /// Its idempotency key, if any.
        key: Option<String>,
        /// Reserved lines, sorted by SKU.
        lines: Vec<Line>,
        /// When it expires (confirmed or not) unless extended or released first.
        expires_at: Timestamp,
        /// The pickup slot (its `start_ms`) the hold booked one unit of capacity of.
        slot: Option<i64>,
    },
    /// A hold with an idempotency key was refused; recorded so that a retry returns the
    /// same outcome.
    HoldRejected {
        /// Store asked.
        store: StoreId,
        /// The idempotency key.
        key: String,
        /// Why.
        rejection: HoldRejection,
    },
    /// A hold's expiry moved.
    HoldExtended {
        /// The hold.
        hold: HoldId,
        /// The hold after the event; `facts.expires_at` is the new expiry.
        facts: Box<HoldFacts>,
    },
    /// Checkout completed: the hold is now an order's allocation.
    HoldConfirmed {
        /// The hold.
        hold: HoldId,
        /// The hold as it was confirmed.
        facts: Box<HoldFacts>,
    },
    /// A hold ended and its units returned to availability.
    HoldReleased {
        /// The hold.
        hold: HoldId,
        /// Why.
        reason: ReleaseReason,
        /// The hold as it ended.
        facts: Box<HoldFacts>,
    },
    /// A POS delta changed `on_hand` (or was recognized as already applied).
    PosDelta {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// The POS event id (deduplication).
        pos_event_id: String,
        /// Kind.
        kind: PosDeltaKind,
        /// Signed change the POS reported.
        qty: i64,
        /// Order reference, when the POS knows the order.
        order_ref: Option<String>,
        /// POS time of the event.
        pos_time: Timestamp,
        /// The cell after the event.
        after: CellView,
    },
    /// A POS count set `on_hand`.
    PosCount {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// The POS event id (deduplication).
        pos_event_id: String,
        /// Units counted.
        counted: Qty,
        /// POS time the count is as of.
        as_of: Timestamp,
        /// `on_hand` the engine had.
        on_hand_before: Qty,
        /// The cell after reconciliation.
        after: CellView,
        /// Whether the engine's figure, brought to the count's time, matched the count.
        matched: bool,
    },
    /// `on_hand` fell below `held`: the named holds (newest first) are not covered.
    Shortage {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// `on_hand` now.
        on_hand: Qty,
        /// `held` now.
        held: Qty,
        /// The cell's safety stock now.
        safety_stock: Qty,
        /// The newest holds whose units together cover the missing units, newest first.
        holds: Vec<HoldId>,
    },
    /// A pickup order was created from an active hold (state `placed`).
    OrderCreated {
        /// The order (derived from its hold).
        order: OrderId,
        /// Sales channel, e.g. `shopify`.
        channel: String,
        /// The channel's order id.
        channel_order_id: String,
        /// Customer contact and consent (boxed: the largest field of the largest event,
        /// and every retained event is as large as the largest).
        customer: Box<Customer>,
        /// Priced lines, sorted by SKU.
        lines: Vec<OrderLine>,
        /// ISO 4217 currency code.
        currency: String,
        /// Decimal places of the currency's minor unit.
        currency_exponent: u8,
        /// Idempotency key of the create request.
        key: Option<String>,
    },
    /// Checkout confirmed the order (`placed -> confirmed`).
    OrderConfirmed {
        /// The order.
        order: OrderId,
        /// The pickup time promised to the customer at that moment: the start of the
        /// hold's booked slot, else the store's ready estimate rounded up to its first
        /// slot with capacity (`SlotState::estimate`); `None` for a store without a
        /// pickup calendar (and for orders logged before estimates were recorded).
        ready_estimate: Option<Timestamp>,
    },
    /// Staff started picking (`confirmed -> picking`).
    PickingStarted {
        /// The order.
        order: OrderId,
        /// Who.
        staff: String,
    },
    /// `on_hand` of a cell was corrected outside the POS feed: units found missing while
    /// picking an order (conservation: explains the change of `on_hand`).
    StockAdjusted {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// Signed change of `on_hand` (negative for missing units).
        qty: i64,
        /// The cell after the event.
        after: CellView,
        /// The order whose pick found it.
        order: OrderId,
    },
    /// A line was found short while picking; the line and its hold shrink by `missing`.
    OrderShortPicked {
        /// The order.
        order: OrderId,
        /// SKU of the short line.
        sku: SkuId,
        /// Units missing.
        missing: Qty,
        /// Re-allocate elsewhere or cancel the missing units.
        resolution: ShortPickResolution,
        /// Who.
        staff: String,
    },
    /// Missing units of an order should be allocated at another store (the allocation
    /// module acts on it).
    ReallocationRequested {
        /// The order.
        order: OrderId,
        /// SKU.
        sku: SkuId,
        /// Units to re-allocate.
        missing: Qty,
    },
    /// The order is ready for pickup (`picking -> ready`) with this pickup code.
    OrderReady {
        /// The order.
        order: OrderId,
        /// Who.
        staff: String,
        /// The pickup code's value (logged so replay issues the same code).
        code: u64,
    },
    /// A wrong pickup code was presented at hand-off.
    PickupCodeRejected {
        /// The order.
        order: OrderId,
        /// The staff member at the desk.
        staff: String,
        /// Whether this wrong code locked the order.
        now_locked: bool,
    },
    /// A staff member unlocked an order locked by wrong codes.
    PickupCodeOverride {
        /// The order.
        order: OrderId,
        /// Who.
        staff: String,
        /// 1 for the order's first override, and so on.
        sequence: u32,
    },
    /// Hand-off (`ready -> collected`): the hold ends and `on_hand` falls by `consumed`.
    OrderCollected {
        /// The order.
        order: OrderId,
        /// Who handed it off.
        staff: String,
        /// The store's receipt sequence number of this order's e-receipt.
        receipt_seq: u64,
        /// Units taken off `on_hand` now (those the POS had not already reported).
        consumed: Vec<Line>,
        /// The order's hold as the hand-off consumed it.
        hold: Box<HoldFacts>,
    },
    /// The order as it stood right after the transition logged before it in the same
    /// record (created, confirmed, picking, ready, collected, cancelled, expired,
    /// no-show). Changes nothing: it is the fact a reader of the stream needs, kept so that
    /// the stream tells every state an order went through, also when read long after.
    OrderChanged {
        /// The order.
        order: OrderId,
        /// The staff member who made the transition, if one did.
        staff: Option<String>,
        /// The pickup slot (`start_ms`) the order's hold had booked, if any.
        slot: Option<i64>,
        /// The order then.
        facts: Box<crate::order_facts::OrderFacts>,
    },
    /// The order was cancelled; its hold (if still active) was released in the same record.
    OrderCancelled {
        /// The order.
        order: OrderId,
        /// Who cancelled.
        by: CancelledBy,
        /// The staff member, for a store cancel.
        staff: Option<String>,
    },
    /// The order's hold expired: `expired` if it was only placed, `no_show` otherwise.
    OrderExpired {
        /// The order.
        order: OrderId,
        /// Whether it counts as a no-show (confirmed or later).
        no_show: bool,
    },
    /// Staff recorded that the customer did not come for a `ready` order whose pickup
    /// window had passed (`ready -> no_show`); its hold was released in the same record.
    OrderNoShow {
        /// The order.
        order: OrderId,
        /// Who recorded it.
        staff: String,
    },
    /// A POS sale that names a pickup order: recognized against the order instead of
    /// being counted twice.
    PosOrderSale {
        /// Store.
        store: StoreId,
        /// SKU.
        sku: SkuId,
        /// The POS event id (deduplication).
        pos_event_id: String,
        /// The order it names.
        order: OrderId,
        /// Units the POS reported sold.
        reported: Qty,
        /// Units already taken off `on_hand` by the hand-off: not applied again.
        recognized: Qty,
        /// Units consumed from the order's active hold (`on_hand` and `held` both fall).
        from_hold: Qty,
        /// POS time of the sale.
        pos_time: Timestamp,
        /// The cell after the sale.
        after: CellView,
    },
    /// An event stream consumer acknowledged every record up to `lsn` (durable cursor).
    ConsumerAcked {
        /// Consumer name.
        consumer: String,
        /// Last acknowledged LSN.
        lsn: Lsn,
    },
    /// A store's pickup calendar was set or replaced.
    CalendarSet {
        /// Store.
        store: StoreId,
        /// The configuration (validated before it was logged). Boxed: it is large and
        /// rare, and would otherwise size every event.
        config: Box<crate::calendar::CalendarConfig>,
    },
    /// A store's average pick time per order was set.
    PickTimeSet {
        /// Store.
        store: StoreId,
        /// Milliseconds one staff member needs to pick one order.
        pick_time_per_order_ms: u32,
    },
    /// An allocation made under an idempotency key, and the holds it answered with: a
    /// retry with the key gets this answer back, also after a restart. Changes no stock
    /// (its holds were granted by their own records, before this one).
    AllocationKept {
        /// The allocation's idempotency key.
        key: String,
        /// What identifies the request under the key (a retry must repeat it).
        request: u32,
        /// One per held store, as the answer listed them.
        parts: Vec<KeptPart>,
    },
    /// A batch of holds made under one idempotency key for the whole batch, and its answer
    /// per hold: a retry with the key gets the same answers back, also after a restart.
    /// Changes no stock (the grants were logged by their own records, before this one).
    BatchKept {
        /// The batch's idempotency key.
        key: String,
        /// What identifies the batch under the key (a retry must repeat it).
        request: u32,
        /// One per hold of the batch, in request order.
        answers: Vec<KeptAnswer>,
    },
    /// The first event of a record whose holds belong to an operation that is answered
    /// under an idempotency key by a later record ([`Event::BatchKept`],
    /// [`Event::AllocationKept`]). Changes nothing by itself. If a crash comes between the
    /// two, nobody was ever told about these holds (the answer is given only once its
    /// record is durable): recovery releases those still active, so that the caller's
    /// retry holds afresh instead of holding twice.
    KeyedPart {
        /// The operation's idempotency key.
        key: String,
        /// Which kind of operation: batch and allocation keys are separate.
        of: KeptOf,
    },
    /// The first answer to a caller's keyed request, kept for its retries
    /// ([`crate::Engine::keep_reply`]). Changes no stock.
    ReplyKept {
        /// Who asked.
        principal: String,
        /// The request's idempotency key.
        key: String,
        /// What identifies the request under the key.
        fingerprint: u64,
        /// The answer, as the caller encoded it.
        response: Vec<u8>,
    },
}

/// The kind of keyed operation an [`Event::KeyedPart`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeptOf {
    /// A batch of holds under one key ([`Event::BatchKept`]).
    Batch,
    /// An allocation under a key ([`Event::AllocationKept`]).
    Allocation,
}

/// What a keyed batch answered for one of its holds ([`Event::BatchKept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptAnswer {
    /// Granted: the hold and its expiry as granted.
    Granted {
        /// The hold.
        hold: HoldId,
        /// When it expired as granted.
        expires_at: Timestamp,
    },
    /// Rejected; nothing was held.
    Rejected(HoldRejection),
    /// Refused because a table was full (`EngineError::LimitReached`); nothing was held.
    LimitReached {
        /// The limit's name.
        limit: String,
        /// Its value.
        value: u64,
    },
}

/// One store's part of an [`Event::AllocationKept`]: what the allocation's answer said
/// of that store's hold (its ready estimate is not kept: a retry reads a fresh one).
#[derive(Debug, Clone, PartialEq)]
pub struct KeptPart {
    /// The hold (its store is `hold.store()`).
    pub hold: HoldId,
    /// When the hold expired as granted.
    pub expires_at: Timestamp,
    /// Distance from the customer (or preferred store), km.
    pub distance_km: f64,
    /// The lines held there (merged), by SKU external id.
    pub lines: Vec<crate::types::LineRequest>,
    /// The pickup slot booked with the hold, if any.
    pub slot: Option<crate::calendar::Slot>,
}

impl Event {
    /// A short stable name of the event's kind (for consumers, logs and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StoreDefined { .. } => "store_defined",
            Event::SkuRegistered { .. } => "sku_registered",
            Event::SafetyStockSet { .. } => "safety_stock_set",
            Event::HoldGranted { .. } => "hold_granted",
            Event::HoldRejected { .. } => "hold_rejected",
            Event::HoldExtended { .. } => "hold_extended",
            Event::HoldConfirmed { .. } => "hold_confirmed",
            Event::HoldReleased { .. } => "hold_released",
            Event::PosDelta { .. } => "pos_delta",
            Event::PosCount { .. } => "pos_count",
            Event::Shortage { .. } => "shortage",
            Event::OrderCreated { .. } => "order_created",
            Event::OrderConfirmed { .. } => "order_confirmed",
            Event::PickingStarted { .. } => "picking_started",
            Event::StockAdjusted { .. } => "stock_adjusted",
            Event::OrderShortPicked { .. } => "order_short_picked",
            Event::ReallocationRequested { .. } => "reallocation_requested",
            Event::OrderReady { .. } => "order_ready",
            Event::PickupCodeRejected { .. } => "pickup_code_rejected",
            Event::PickupCodeOverride { .. } => "pickup_code_override",
            Event::OrderCollected { .. } => "order_collected",
            Event::OrderCancelled { .. } => "order_cancelled",
            Event::OrderExpired { .. } => "order_expired",
            Event::OrderNoShow { .. } => "order_no_show",
            Event::OrderChanged { .. } => "order_changed",
            Event::PosOrderSale { .. } => "pos_order_sale",
            Event::ConsumerAcked { .. } => "consumer_acked",
            Event::CalendarSet { .. } => "calendar_set",
            Event::PickTimeSet { .. } => "pick_time_set",
            Event::AllocationKept { .. } => "allocation_kept",
            Event::BatchKept { .. } => "batch_kept",
            Event::KeyedPart { .. } => "keyed_part",
            Event::ReplyKept { .. } => "reply_kept",
        }
    }

    /// The store the event concerns, if any.
    pub fn store(&self) -> Option<StoreId> {
        match self {
            Event::StoreDefined { store, .. }
            | Event::SafetyStockSet { store, .. }
            | Event::HoldRejected { store, .. }
            | Event::PosDelta { store, .. }
            | Event::PosCount { store, .. }
            | Event::Shortage { store, .. }
            | Event::CalendarSet { store, .. }
            | Event::PickTimeSet { store, .. }
            | Event::StockAdjusted { store, .. } => Some(*store),
            Event::HoldGranted { hold, .. }
            | Event::HoldExtended { hold, .. }
            | Event::HoldConfirmed { hold, .. }
            | Event::HoldReleased { hold, .. } => Some(hold.store()),
            Event::OrderChanged { order, .. } => Some(order.store()),
            Event::SkuRegistered { .. }
            | Event::ConsumerAcked { .. }
            | Event::AllocationKept { .. }
            | Event::BatchKept { .. }
            | Event::KeyedPart { .. }
            | Event::ReplyKept { .. } => None,
            // Every other event changes an order's record (`changed_order`, exhaustive),
            // which lives at the order's store (a POS sale's `store` is the order's too).
            transition => transition.changed_order().map(OrderId::store),
        }
    }

    /// The order whose record the event changes, if any. Not [`Event::OrderChanged`], which
    /// tells how an order stood after the event before it and changes nothing.
    pub fn changed_order(&self) -> Option<OrderId> {
        match self {
            Event::OrderCreated { order, .. }
            | Event::OrderConfirmed { order, .. }
            | Event::PickingStarted { order, .. }
            | Event::OrderShortPicked { order, .. }
            | Event::ReallocationRequested { order, .. }
            | Event::OrderReady { order, .. }
            | Event::PickupCodeRejected { order, .. }
            | Event::PickupCodeOverride { order, .. }
            | Event::OrderCollected { order, .. }
            | Event::OrderCancelled { order, .. }
            | Event::OrderExpired { order, .. }
            | Event::OrderNoShow { order, .. }
            | Event::PosOrderSale { order, .. } => Some(*order),
            Event::StoreDefined { .. }
            | Event::SkuRegistered { .. }
            | Event::SafetyStockSet { .. }
            | Event::HoldGranted { .. }
            | Event::HoldRejected { .. }
            | Event::HoldExtended { .. }
            | Event::HoldConfirmed { .. }
            | Event::HoldReleased { .. }
            | Event::PosDelta { .. }
            | Event::PosCount { .. }
            | Event::Shortage { .. }
            | Event::StockAdjusted { .. }
            | Event::OrderChanged { .. }
            | Event::ConsumerAcked { .. }
            | Event::CalendarSet { .. }
            | Event::PickTimeSet { .. }
            | Event::AllocationKept { .. }
            | Event::BatchKept { .. }
            | Event::KeyedPart { .. }
            | Event::ReplyKept { .. } => None,
        }
    }
}

/// The events of one mutation, applied at one time. The unit of logging and replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the mutation was applied (the caller's `now`).
    pub at: Timestamp,
    /// Its events, in order.
    pub events: Vec<Event>,
}

/// A record with its log sequence number, as consumers of the event stream see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRecord {
    /// Stable id of the record's events.
    pub lsn: Lsn,
    /// The record, shared: the event stream keeps the very record the engine appended.
    pub record: std::sync::Arc<Record>,
}

/// Log record kind byte of an engine [`Record`] in the current event format. Each change
/// of the event encoding takes a new kind, so that an older log is refused by name
/// ([`RECORD_KIND_EVENTS_RETIRED`]) instead of decoding into wrong facts.
pub const RECORD_KIND_EVENTS: u8 = 2;

/// Record kinds of earlier event formats that this version no longer reads: version 1
/// (before 2026-12) had events without the facts of their moment and customers without a
/// name or locale.
pub const RECORD_KIND_EVENTS_RETIRED: &[u8] = &[1];

mod tag {
    /// Sub-tag of `HoldRejection::SlotUnavailable` inside a hold rejection.
    pub const REJECTION_SLOT_UNAVAILABLE: u8 = 60;
}

impl Record {
    /// Appends the record's encoding to `buf`: `at` (zig-zag varint), the event count, then
    /// each event as a tag byte followed by its fields in declaration order.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut e = Enc::new(buf);
        e.i64(self.at.0);
        e.seq_len(self.events.len());
        for ev in &self.events {
            encode_event(&mut e, ev);
        }
    }

    /// Decodes a record; fails on any malformed or trailing byte.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut d = Dec::new(bytes);
        let at = Timestamp(d.i64()?);
        let n = d.seq_len()?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(decode_event(&mut d)?);
        }
        d.finish()?;
        Ok(Record { at, events })
    }
}

pub(crate) fn encode_store_def(e: &mut Enc<'_>, def: &StoreDef) {
    e.str(&def.external_id);
    e.str(&def.name);
    e.f64(def.lat);
    e.f64(def.lon);
    e.str(&def.time_zone);
    e.u8(def.status.to_u8());
    e.u32(def.default_safety_stock);
    e.i64(def.default_hold_ms);
    e.i64(def.max_hold_ms);
    e.str(&def.pickup_instructions);
}

pub(crate) fn decode_store_def(d: &mut Dec<'_>) -> Result<StoreDef, DecodeError> {
    let external_id = d.string()?;
    let name = d.string()?;
    let lat = d.f64()?;
    let lon = d.f64()?;
    let time_zone = d.string()?;
    let at = d.pos();
    let status = StoreStatus::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
        what: "store status",
        at,
    })?;
    Ok(StoreDef {
        external_id,
        name,
        lat,
        lon,
        time_zone,
        status,
        default_safety_stock: d.u32()?,
        default_hold_ms: d.i64()?,
        max_hold_ms: d.i64()?,
        pickup_instructions: d.string()?,
    })
}

/// Encodes a hold rejection (inside `HoldRejected` and `BatchKept`).
fn encode_rejection(e: &mut Enc<'_>, rejection: &HoldRejection) {
    match rejection {
        HoldRejection::InsufficientStock { shortages } => {
            e.u8(0);
            e.seq_len(shortages.len());
            for s in shortages {
                e.str(&s.sku);
                e.u32(s.requested);
                e.u32(s.available);
            }
        }
        HoldRejection::StoreNotAccepting { status } => {
            e.u8(1);
            e.u8(status.to_u8());
        }
        HoldRejection::SlotUnavailable {
            slot_start_ms,
            problem,
        } => {
            e.u8(tag::REJECTION_SLOT_UNAVAILABLE);
            e.i64(*slot_start_ms);
            e.u8(problem.to_u8());
        }
    }
}

/// Decodes what [`encode_rejection`] wrote.
fn decode_rejection(d: &mut Dec<'_>) -> Result<HoldRejection, DecodeError> {
    let at = d.pos();
    Ok(match d.u8()? {
        0 => {
            let n = d.seq_len()?;
            let mut shortages = Vec::with_capacity(n);
            for _ in 0..n {
                shortages.push(LineShortage {
                    sku: d.string()?,
                    requested: d.u32()?,
                    available: d.u32()?,
                });
            }
            HoldRejection::InsufficientStock { shortages }
        }
        1 => {
            let at = d.pos();
            let status = StoreStatus::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
                what: "store status",
                at,
            })?;
            HoldRejection::StoreNotAccepting { status }
        }
        tag::REJECTION_SLOT_UNAVAILABLE => {
            let slot_start_ms = d.i64()?;
            let at = d.pos();
            let problem =
                crate::slot::SlotProblem::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
                    what: "slot problem",
                    at,
                })?;
            HoldRejection::SlotUnavailable {
                slot_start_ms,
                problem,
            }
        }
        tag => {
            return Err(DecodeError::Tag {
                what: "hold rejection",
                tag,
                at,
            });
        }
    })
}

/// Encodes the answers of an [`Event::BatchKept`] (also used by snapshots).
pub(crate) fn encode_kept_answers(e: &mut Enc<'_>, answers: &[KeptAnswer]) {
    e.seq_len(answers.len());
    for a in answers {
        match a {
            KeptAnswer::Granted { hold, expires_at } => {
                e.u8(0);
                e.u64(hold.0);
                e.i64(expires_at.0);
            }
            KeptAnswer::Rejected(r) => {
                e.u8(1);
                encode_rejection(e, r);
            }
            KeptAnswer::LimitReached { limit, value } => {
                e.u8(2);
                e.str(limit);
                e.u64(*value);
            }
        }
    }
}

/// Decodes what [`encode_kept_answers`] wrote.
pub(crate) fn decode_kept_answers(d: &mut Dec<'_>) -> Result<Vec<KeptAnswer>, DecodeError> {
    let n = d.seq_len()?;
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n {
        let at = d.pos();
        answers.push(match d.u8()? {
            0 => KeptAnswer::Granted {
                hold: HoldId(d.u64()?),
                expires_at: Timestamp(d.i64()?),
            },
            1 => KeptAnswer::Rejected(decode_rejection(d)?),
            2 => KeptAnswer::LimitReached {
                limit: d.string()?,
                value: d.u64()?,
            },
            tag => {
                return Err(DecodeError::Tag {
                    what: "kept answer",
                    tag,
                    at,
                });
            }
        });
    }
    Ok(answers)
}

/// Encodes the parts of an [`Event::AllocationKept`] (also used by snapshots).
pub(crate) fn encode_kept_parts(e: &mut Enc<'_>, parts: &[KeptPart]) {
    e.seq_len(parts.len());
    for p in parts {
        e.u64(p.hold.0);
        e.i64(p.expires_at.0);
        e.f64(p.distance_km);
        e.seq_len(p.lines.len());
        for l in &p.lines {
            e.str(&l.sku);
            e.u32(l.qty);
        }
        match &p.slot {
            None => e.bool(false),
            Some(s) => {
                e.bool(true);
                e.i64(s.start_ms);
                e.i64(s.end_ms);
                e.u32(s.capacity);
            }
        }
    }
}

/// Decodes what [`encode_kept_parts`] wrote.
pub(crate) fn decode_kept_parts(d: &mut Dec<'_>) -> Result<Vec<KeptPart>, DecodeError> {
    let n = d.seq_len()?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let hold = HoldId(d.u64()?);
        let expires_at = Timestamp(d.i64()?);
        let distance_km = d.f64()?;
        let lines_len = d.seq_len()?;
        let mut lines = Vec::with_capacity(lines_len);
        for _ in 0..lines_len {
            lines.push(crate::types::LineRequest {
                sku: d.string()?,
                qty: d.u32()?,
            });
        }
        let slot = if d.bool()? {
            Some(crate::calendar::Slot {
                start_ms: d.i64()?,
                end_ms: d.i64()?,
                capacity: d.u32()?,
            })
        } else {
            None
        };
        parts.push(KeptPart {
            hold,
            expires_at,
            distance_km,
            lines,
            slot,
        });
    }
    Ok(parts)
}

/// THE table of event encodings: each event's tag byte, then its fields in the order
/// listed, each written by its type's [`Wire`] encoding. The encoder is one exhaustive
/// match (an event added to [`Event`] and not here does not compile), the decoder reads
/// the same list, and `every_event_round_trips` checks both on arbitrary events of every
/// variant. A changed encoding gets a new tag; the old one stays readable in
/// `decode_retired` (41 and 55 today).
macro_rules! event_table {
    ($($tag:literal => $variant:ident { $($field:ident),+ $(,)? }),+ $(,)?) => {
        fn encode_event(e: &mut Enc<'_>, ev: &Event) {
            match ev {
                $(Event::$variant { $($field),+ } => {
                    e.u8($tag);
                    $(Wire::put($field, e);)+
                })+
            }
        }

        /// The event of tag `t` as written now, `None` for a tag not written now.
        fn decode_current(t: u8, d: &mut Dec<'_>) -> Result<Option<Event>, DecodeError> {
            Ok(Some(match t {
                $($tag => Event::$variant { $($field: Wire::take(d)?),+ },)+
                _ => return Ok(None),
            }))
        }

        /// Every tag written now, with its variant's name.
        #[cfg(test)]
        const TAGS: &[(u8, &str)] = &[$(($tag, stringify!($variant))),+];

        /// Arbitrary events, every variant with arbitrary fields.
        #[cfg(test)]
        pub(crate) fn any_event() -> proptest::strategy::BoxedStrategy<Event> {
            use proptest::strategy::Strategy as _;
            proptest::strategy::Union::new(vec![
                $((
                    $({
                        let _ = stringify!($field);
                        crate::event::arb::arb()
                    },)+
                )
                    .prop_map(|($($field,)+)| Event::$variant { $($field),+ })
                    .boxed()),+
            ])
            .boxed()
        }
    };
}

event_table! {
    1 => StoreDefined { store, def },
    2 => SkuRegistered { sku, external_id },
    3 => SafetyStockSet { store, sku, safety_stock },
    4 => HoldGranted { hold, key, lines, expires_at, slot },
    5 => HoldRejected { store, key, rejection },
    6 => HoldExtended { hold, facts },
    7 => HoldConfirmed { hold, facts },
    8 => HoldReleased { hold, reason, facts },
    9 => PosDelta { store, sku, pos_event_id, kind, qty, order_ref, pos_time, after },
    10 => PosCount { store, sku, pos_event_id, counted, as_of, on_hand_before, after, matched },
    11 => Shortage { store, sku, on_hand, held, safety_stock, holds },
    // 40..=59: pickup orders and the event stream.
    40 => OrderCreated {
        order, channel, channel_order_id, customer, lines, currency, currency_exponent, key,
    },
    42 => PickingStarted { order, staff },
    43 => StockAdjusted { store, sku, qty, after, order },
    44 => OrderShortPicked { order, sku, missing, resolution, staff },
    45 => ReallocationRequested { order, sku, missing },
    46 => OrderReady { order, staff, code },
    47 => PickupCodeRejected { order, staff, now_locked },
    48 => PickupCodeOverride { order, staff, sequence },
    49 => OrderCollected { order, staff, receipt_seq, consumed, hold },
    50 => OrderCancelled { order, by, staff },
    51 => OrderExpired { order, no_show },
    52 => PosOrderSale {
        store, sku, pos_event_id, order, reported, recognized, from_hold, pos_time, after,
    },
    53 => ConsumerAcked { consumer, lsn },
    54 => OrderNoShow { order, staff },
    56 => OrderConfirmed { order, ready_estimate },
    57 => OrderChanged { order, staff, slot, facts },
    60 => CalendarSet { store, config },
    61 => PickTimeSet { store, pick_time_per_order_ms },
    62 => AllocationKept { key, request, parts },
    63 => BatchKept { key, request, answers },
    64 => KeyedPart { key, of },
    65 => ReplyKept { principal, key, fingerprint, response },
}

fn decode_event(d: &mut Dec<'_>) -> Result<Event, DecodeError> {
    let at = d.pos();
    let t = d.u8()?;
    if let Some(ev) = decode_current(t, d)? {
        return Ok(ev);
    }
    decode_retired(t, d)?.ok_or(DecodeError::Tag {
        what: "event",
        tag: t,
        at,
    })
}

impl Wire for StoreDef {
    fn put(&self, e: &mut Enc<'_>) {
        encode_store_def(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_store_def(d)
    }
}

impl Wire for HoldRejection {
    fn put(&self, e: &mut Enc<'_>) {
        encode_rejection(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_rejection(d)
    }
}

impl Wire for HoldFacts {
    fn put(&self, e: &mut Enc<'_>) {
        self.encode(e);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        HoldFacts::decode(d)
    }
}

impl Wire for CellView {
    fn put(&self, e: &mut Enc<'_>) {
        encode_cell(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_cell(d)
    }
}

impl Wire for Vec<Line> {
    fn put(&self, e: &mut Enc<'_>) {
        encode_lines(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_lines(d)
    }
}

impl Wire for Vec<KeptPart> {
    fn put(&self, e: &mut Enc<'_>) {
        encode_kept_parts(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_kept_parts(d)
    }
}

impl Wire for Vec<KeptAnswer> {
    fn put(&self, e: &mut Enc<'_>) {
        encode_kept_answers(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        decode_kept_answers(d)
    }
}

impl Wire for crate::calendar::CalendarConfig {
    fn put(&self, e: &mut Enc<'_>) {
        crate::slot::encode_calendar_config(e, self);
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        crate::slot::decode_calendar_config(d)
    }
}

crate::wire::wire_enum!(ReleaseReason, "release reason" { Released = 0, Expired = 1 });

impl Wire for PosDeltaKind {
    fn put(&self, e: &mut Enc<'_>) {
        e.u8(self.to_u8());
    }
    fn take(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let at = d.pos();
        PosDeltaKind::from_u8(d.u8()?).ok_or(DecodeError::Invalid {
            what: "pos delta kind",
            at,
        })
    }
}

crate::wire::wire_enum!(KeptOf, "keyed part kind" { Batch = 0, Allocation = 1 });

/// Arbitrary values of every event field type, for the codec's property test.
/// Tags of order events this version still reads but no longer writes (the table of
/// current encodings is in this module).
mod retired_tag {
    /// [`super::Event::OrderConfirmed`] without a ready estimate.
    pub const ORDER_CONFIRMED: u8 = 41;
    /// [`super::Event::OrderChanged`] with facts before `ready_estimate`.
    pub const ORDER_CHANGED: u8 = 55;
}

/// The event of a retired tag `t` (see `retired_tag`), `None` for any other tag.
fn decode_retired(t: u8, d: &mut Dec<'_>) -> Result<Option<Event>, DecodeError> {
    Ok(Some(match t {
        retired_tag::ORDER_CONFIRMED => Event::OrderConfirmed {
            order: Wire::take(d)?,
            ready_estimate: None,
        },
        retired_tag::ORDER_CHANGED => Event::OrderChanged {
            order: Wire::take(d)?,
            staff: Wire::take(d)?,
            slot: Wire::take(d)?,
            facts: Box::new(crate::order_facts::OrderFacts(OrderRec::decode(
                d,
                RecLayout::WithoutEstimate,
            )?)),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
pub(crate) mod arb {
    use proptest::prelude::*;

    use super::*;

    /// A field type with a strategy for arbitrary values the codec must round-trip
    /// (floats finite: NaN is never equal to itself).
    pub(crate) trait Arb: Sized + std::fmt::Debug {
        fn arb() -> BoxedStrategy<Self>;
    }

    /// The strategy of `T`, for the event table's generated strategy.
    pub(crate) fn arb<T: Arb>() -> BoxedStrategy<T> {
        T::arb()
    }

    macro_rules! arb_any {
        ($($ty:ty),*) => {
            $(impl Arb for $ty {
                fn arb() -> BoxedStrategy<Self> {
                    any::<$ty>().boxed()
                }
            })*
        };
    }
    arb_any!(u8, u32, u64, i64, bool, String, Vec<u8>);

    macro_rules! arb_via {
        ($($ty:ty => $inner:ty, $wrap:expr;)*) => {
            $(impl Arb for $ty {
                fn arb() -> BoxedStrategy<Self> {
                    any::<$inner>().prop_map($wrap).boxed()
                }
            })*
        };
    }
    arb_via! {
        StoreId => u32, StoreId;
        SkuId => u32, SkuId;
        HoldId => u64, HoldId;
        OrderId => u64, |v| OrderId::from_hold(HoldId(v));
        Lsn => u64, Lsn;
        Timestamp => i64, Timestamp;
    }

    impl<T: Arb + 'static> Arb for Option<T> {
        fn arb() -> BoxedStrategy<Self> {
            proptest::option::of(T::arb()).boxed()
        }
    }

    impl<T: Arb + 'static> Arb for Box<T> {
        fn arb() -> BoxedStrategy<Self> {
            T::arb().prop_map(Box::new).boxed()
        }
    }

    fn vec_of<T: Arb + 'static>() -> BoxedStrategy<Vec<T>> {
        proptest::collection::vec(T::arb(), 0..4).boxed()
    }

    impl Arb for Line {
        fn arb() -> BoxedStrategy<Self> {
            (any::<u32>(), any::<u32>())
                .prop_map(|(sku, qty)| Line {
                    sku: SkuId(sku),
                    qty,
                })
                .boxed()
        }
    }

    impl Arb for Vec<Line> {
        fn arb() -> BoxedStrategy<Self> {
            vec_of()
        }
    }

    impl Arb for Vec<HoldId> {
        fn arb() -> BoxedStrategy<Self> {
            vec_of()
        }
    }

    impl Arb for StoreStatus {
        fn arb() -> BoxedStrategy<Self> {
            prop_oneof![
                Just(StoreStatus::Open),
                Just(StoreStatus::PickupsPaused),
                Just(StoreStatus::Closed)
            ]
            .boxed()
        }
    }

    impl Arb for StoreDef {
        fn arb() -> BoxedStrategy<Self> {
            (
                (
                    any::<String>(),
                    any::<String>(),
                    -90.0..90.0f64,
                    -180.0..180.0f64,
                ),
                ("[A-Za-z_/]{1,20}", StoreStatus::arb(), any::<u32>()),
                (any::<i64>(), any::<i64>(), any::<String>()),
            )
                .prop_map(
                    |(
                        (external_id, name, lat, lon),
                        (time_zone, status, default_safety_stock),
                        (default_hold_ms, max_hold_ms, pickup_instructions),
                    )| StoreDef {
                        external_id,
                        name,
                        lat,
                        lon,
                        time_zone,
                        status,
                        default_safety_stock,
                        default_hold_ms,
                        max_hold_ms,
                        pickup_instructions,
                    },
                )
                .boxed()
        }
    }

    impl Arb for crate::slot::SlotProblem {
        fn arb() -> BoxedStrategy<Self> {
            use crate::slot::SlotProblem::*;
            prop_oneof![
                Just(NoCalendar),
                Just(NoSuchSlot),
                Just(TooSoon),
                Just(Full)
            ]
            .boxed()
        }
    }

    impl Arb for HoldRejection {
        fn arb() -> BoxedStrategy<Self> {
            let shortage = (any::<String>(), any::<u32>(), any::<u32>()).prop_map(
                |(sku, requested, available)| LineShortage {
                    sku,
                    requested,
                    available,
                },
            );
            prop_oneof![
                proptest::collection::vec(shortage, 0..3)
                    .prop_map(|shortages| HoldRejection::InsufficientStock { shortages }),
                StoreStatus::arb().prop_map(|status| HoldRejection::StoreNotAccepting { status }),
                (any::<i64>(), crate::slot::SlotProblem::arb()).prop_map(
                    |(slot_start_ms, problem)| HoldRejection::SlotUnavailable {
                        slot_start_ms,
                        problem
                    }
                ),
            ]
            .boxed()
        }
    }

    impl Arb for HoldFacts {
        fn arb() -> BoxedStrategy<Self> {
            (
                Vec::<Line>::arb(),
                any::<i64>(),
                any::<i64>(),
                proptest::option::of(any::<i64>()),
                any::<bool>(),
            )
                .prop_map(|(lines, created, expires_at, slot, confirmed)| HoldFacts {
                    lines,
                    created: Timestamp(created),
                    expires_at: Timestamp(expires_at),
                    slot,
                    confirmed,
                })
                .boxed()
        }
    }

    impl Arb for ReleaseReason {
        fn arb() -> BoxedStrategy<Self> {
            prop_oneof![Just(ReleaseReason::Released), Just(ReleaseReason::Expired)].boxed()
        }
    }

    impl Arb for PosDeltaKind {
        fn arb() -> BoxedStrategy<Self> {
            (0u8..4)
                .prop_map(|v| PosDeltaKind::from_u8(v).expect("0..4 are kinds"))
                .boxed()
        }
    }

    impl Arb for CellView {
        fn arb() -> BoxedStrategy<Self> {
            (any::<u32>(), any::<u32>(), any::<u32>())
                .prop_map(|(on_hand, held, safety_stock)| CellView {
                    on_hand,
                    held,
                    safety_stock,
                })
                .boxed()
        }
    }

    impl Arb for crate::calendar::CalendarConfig {
        fn arb() -> BoxedStrategy<Self> {
            (
                prop_oneof![Just("Europe/Berlin"), Just("America/New_York"), Just("UTC")],
                any::<(u32, u32, u32, u32)>(),
            )
                .prop_map(|(tz, (slot, lead, grace, per_staff))| {
                    let mut c = crate::calendar::CalendarConfig::to_edit(None, tz);
                    c.pickup = crate::calendar::PickupConfig {
                        slot_len_min: slot,
                        lead_time_min: lead,
                        hold_grace_min: grace,
                        pickups_per_staff_per_slot: per_staff,
                    };
                    c
                })
                .boxed()
        }
    }

    impl Arb for Vec<KeptPart> {
        fn arb() -> BoxedStrategy<Self> {
            let line = (any::<String>(), any::<u32>())
                .prop_map(|(sku, qty)| crate::types::LineRequest { sku, qty });
            let slot = (any::<i64>(), any::<i64>(), any::<u32>()).prop_map(
                |(start_ms, end_ms, capacity)| crate::calendar::Slot {
                    start_ms,
                    end_ms,
                    capacity,
                },
            );
            let part = (
                any::<u64>(),
                any::<i64>(),
                0.0..20_000.0f64,
                proptest::collection::vec(line, 0..3),
                proptest::option::of(slot),
            )
                .prop_map(|(hold, expires_at, distance_km, lines, slot)| KeptPart {
                    hold: HoldId(hold),
                    expires_at: Timestamp(expires_at),
                    distance_km,
                    lines,
                    slot,
                });
            proptest::collection::vec(part, 0..3).boxed()
        }
    }

    impl Arb for Vec<KeptAnswer> {
        fn arb() -> BoxedStrategy<Self> {
            let answer = prop_oneof![
                (any::<u64>(), any::<i64>()).prop_map(|(hold, expires_at)| {
                    KeptAnswer::Granted {
                        hold: HoldId(hold),
                        expires_at: Timestamp(expires_at),
                    }
                }),
                HoldRejection::arb().prop_map(KeptAnswer::Rejected),
                (any::<String>(), any::<u64>())
                    .prop_map(|(limit, value)| KeptAnswer::LimitReached { limit, value }),
            ];
            proptest::collection::vec(answer, 0..4).boxed()
        }
    }

    impl Arb for KeptOf {
        fn arb() -> BoxedStrategy<Self> {
            prop_oneof![Just(KeptOf::Batch), Just(KeptOf::Allocation)].boxed()
        }
    }

    impl Arb for Customer {
        fn arb() -> BoxedStrategy<Self> {
            (
                proptest::option::of(any::<String>()),
                proptest::option::of(any::<String>()),
                proptest::option::of(any::<String>()),
                proptest::option::of(any::<String>()),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(
                    |(name, locale, email, phone, sms_consent, email_consent)| Customer {
                        email,
                        phone,
                        sms_consent,
                        email_consent,
                        name,
                        locale,
                    },
                )
                .boxed()
        }
    }

    impl Arb for Vec<OrderLine> {
        fn arb() -> BoxedStrategy<Self> {
            let line = (any::<u32>(), any::<u32>(), any::<i64>(), any::<String>()).prop_map(
                |(sku, qty, unit_price_minor, description)| OrderLine {
                    sku: SkuId(sku),
                    qty,
                    unit_price_minor,
                    description,
                },
            );
            proptest::collection::vec(line, 0..3).boxed()
        }
    }

    impl Arb for ShortPickResolution {
        fn arb() -> BoxedStrategy<Self> {
            prop_oneof![
                Just(ShortPickResolution::Reallocate),
                Just(ShortPickResolution::CancelLine)
            ]
            .boxed()
        }
    }

    impl Arb for CancelledBy {
        fn arb() -> BoxedStrategy<Self> {
            prop_oneof![
                Just(CancelledBy::Customer),
                Just(CancelledBy::Store),
                Just(CancelledBy::System)
            ]
            .boxed()
        }
    }
}

#[cfg(test)]
mod codec_tests {
    use proptest::prelude::*;

    use super::*;

    /// Every variant in the table, and no tag twice.
    #[test]
    fn the_table_names_every_tag_once() {
        let mut tags: Vec<u8> = TAGS.iter().map(|(t, _)| *t).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), TAGS.len(), "a tag is used twice");
        assert!(
            !tags.contains(&41) && !tags.contains(&55),
            "retired tags are read only"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Arbitrary events of every variant decode to themselves, and their encoding
        /// with any byte cut off is an error, never a panic or another event.
        #[test]
        fn every_event_round_trips(events in proptest::collection::vec(any_event(), 1..4), at in any::<i64>()) {
            let record = Record { at: Timestamp(at), events };
            let mut buf = Vec::new();
            record.encode(&mut buf);
            prop_assert_eq!(Record::decode(&buf).unwrap(), record);
            prop_assert!(Record::decode(&buf[..buf.len() - 1]).is_err());
        }
    }
}
