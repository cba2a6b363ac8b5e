//! Identifiers, time and the small value types shared by every part of the engine.

use std::fmt;

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// The engine never reads a clock: every operation takes `now` from its caller, so that a
/// replay of the log rebuilds exactly the same state (SPEC invariant 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds since the Unix epoch.
    pub const fn from_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_ms(self) -> i64 {
        self.0
    }

    /// `self + ms`, saturating at the ends of the range instead of overflowing.
    pub const fn add_ms(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// Compact engine-internal store id: a dense index assigned at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub u32);

/// Compact engine-internal SKU id: a dense index assigned at first use (interning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkuId(pub u32);

/// A hold (reservation) id. The store's id sits in the high bits, so that any operation on
/// a hold finds its store without a global lookup; the low bits are a per-store sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HoldId(pub u64);

impl HoldId {
    /// Bits of the per-store sequence.
    pub const SEQ_BITS: u32 = 40;

    /// The hold id for `seq` at `store`.
    pub const fn new(store: StoreId, seq: u64) -> Self {
        HoldId(((store.0 as u64) << Self::SEQ_BITS) | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The store that owns this hold.
    pub const fn store(self) -> StoreId {
        StoreId((self.0 >> Self::SEQ_BITS) as u32)
    }

    /// The per-store sequence number of this hold.
    pub const fn seq(self) -> u64 {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "H{}-{}", self.store().0, self.seq())
    }
}

/// Log sequence number: the position of a record in the log, starting at 1, and the
/// stable, ordered id of the record's events. LSN 0 means "before the first record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN before the first record.
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A unit quantity. Counters are `u32`: 4 billion units of one SKU in one store is far
/// beyond any shelf, and it keeps a stock cell small.
pub type Qty = u32;

/// One requested line of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    /// The SKU's external id (as the retailer's catalog spells it).
    pub sku: String,
    /// Units wanted; must be at least 1 and at most [`crate::Limits::line_qty_max`].
    pub qty: Qty,
}

impl LineRequest {
    /// A line of `qty` units of `sku`.
    pub fn new(sku: impl Into<String>, qty: Qty) -> Self {
        LineRequest {
            sku: sku.into(),
            qty,
        }
    }
}

/// A line as the engine stores it: interned SKU and quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line {
    /// Interned SKU.
    pub sku: SkuId,
    /// Units.
    pub qty: Qty,
}

/// Store status as it affects pickups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreStatus {
    /// Takes new holds and pickups.
    #[default]
    Open,
    /// Existing holds and orders proceed; new holds are refused.
    PickupsPaused,
    /// Closed: new holds are refused.
    Closed,
}

impl StoreStatus {
    /// Whether new holds may be placed.
    pub fn accepts_holds(self) -> bool {
        matches!(self, StoreStatus::Open)
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            StoreStatus::Open => 0,
            StoreStatus::PickupsPaused => 1,
            StoreStatus::Closed => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => StoreStatus::Open,
            1 => StoreStatus::PickupsPaused,
            2 => StoreStatus::Closed,
            _ => return None,
        })
    }
}

/// Availability of one stock cell (store, SKU) as read at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CellView {
    /// Units physically in the store, as the POS and the engine know them.
    pub on_hand: Qty,
    /// Units under active holds.
    pub held: Qty,
    /// Units never promised online.
    pub safety_stock: Qty,
}

impl CellView {
    /// Available to promise: `max(0, on_hand - held - safety_stock)`.
    pub fn atp(&self) -> Qty {
        self.on_hand
            .saturating_sub(self.held)
            .saturating_sub(self.safety_stock)
    }
}

/// A pickup order id: the value of the hold it was created from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub u64);

impl OrderId {
    /// The order created from `hold`.
    pub const fn from_hold(hold: HoldId) -> Self {
        OrderId(hold.0)
    }

    /// Its hold.
    pub const fn hold(self) -> HoldId {
        HoldId(self.0)
    }

    /// Its store.
    pub const fn store(self) -> StoreId {
        self.hold().store()
    }

    /// Parses the displayed form `O<store>-<seq>` (what a POS may carry as order reference).
    pub fn parse(s: &str) -> Option<OrderId> {
        let (store, seq) = s.strip_prefix('O')?.split_once('-')?;
        let store: u32 = store.parse().ok()?;
        let seq: u64 = seq.parse().ok()?;
        if seq >= 1 << HoldId::SEQ_BITS || store.to_string().len() > 10 {
            return None;
        }
        let id = OrderId::from_hold(HoldId::new(StoreId(store), seq));
        (id.to_string() == s).then_some(id)
    }

    /// Parses the decimal form of the id (its 64-bit value, as the gRPC API carries it):
    /// digits only, no sign, no leading zero.
    pub fn parse_decimal(s: &str) -> Option<OrderId> {
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return None;
        }
        s.parse::<u64>().ok().map(|v| OrderId::from_hold(HoldId(v)))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "O{}-{}", self.store().0, self.hold().seq())
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderStatus {
    /// Created from a hold; checkout not yet confirmed.
    Placed,
    /// Checkout confirmed; waiting for staff.
    Confirmed,
    /// Staff are picking.
    Picking,
    /// Picked; a pickup code is issued.
    Ready,
    /// Handed off to the customer. Final.
    Collected,
    /// Cancelled by the customer, the store or a direct hold release. Final.
    Cancelled,
    /// The hold expired before checkout confirmed it. Final.
    Expired,
    /// The hold expired after confirmation: the customer did not come. Final.
    NoShow,
}

impl OrderStatus {
    /// Whether the order is finished.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Collected
                | OrderStatus::Cancelled
                | OrderStatus::Expired
                | OrderStatus::NoShow
        )
    }

    /// Whether an order in this status keeps its `(channel, channel_order_id)` from
    /// another order: while open, and once collected (its goods were handed over; a
    /// second order for the same channel order would hand them over twice). Cancelled,
    /// expired and no-show orders let it go: the channel may place that order again.
    pub fn holds_channel_ref(self) -> bool {
        !self.is_final() || self == OrderStatus::Collected
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        use OrderStatus::*;
        [
            Placed, Confirmed, Picking, Ready, Collected, Cancelled, Expired, NoShow,
        ]
        .get(usize::from(v))
        .copied()
    }
}
