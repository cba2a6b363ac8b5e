//! The canonical order: what every channel adapter produces, whatever the platform.

use serde::Serialize;

use super::Channel;

/// One order from a sales channel in Pickline's own shape.
///
/// Built only by the channel adapters ([`super::normalize`]), which keep its invariants:
/// every line has a non-empty SKU and a quantity of at least 1; every amount is in minor
/// units of `currency` (ISO 4217) with `currency_exponent` decimals; a pickup group is
/// never empty and no two groups share a location. Hence the private fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CanonicalOrder {
    pub(super) channel: Channel,
    pub(super) account: String,
    /// The platform's immutable order id, always a string (Shopify ids exceed 2^53).
    pub(super) order_id: String,
    /// The number shown to the customer ("#1001", "000000003"), when there is one.
    pub(super) order_number: Option<String>,
    /// Orders later versions of the same order: the platform's modification time in ms
    /// since the epoch, or its version counter (commercetools).
    pub(super) version: u64,
    /// Creation time, RFC 3339 in UTC.
    pub(super) created_at: String,
    /// ISO 4217 code.
    pub(super) currency: String,
    /// Decimals of `currency`: an amount of 1999 with exponent 2 is 19.99.
    pub(super) currency_exponent: u8,
    /// Whether the unit prices include tax (the platform's own setting; the prices are
    /// passed through, never recomputed).
    pub(super) prices_include_tax: bool,
    /// The order's grand total in minor units, as the platform states it.
    pub(super) total_minor: Option<i64>,
    /// Paid (captured or authorized, per platform; see each adapter).
    pub(super) paid: bool,
    /// A test order (only Shopify marks them).
    pub(super) test: bool,
    /// Cancelled on the platform.
    pub(super) cancelled: bool,
    pub(super) customer: Customer,
    /// A hold made at checkout, from the order's attributes or metadata under the
    /// channel's configured key.
    pub(super) hold_ref: Option<String>,
    /// The lines to pick up, one group per pickup location; empty when the order is not
    /// a pickup order.
    pub(super) pickups: Vec<PickupGroup>,
    /// Lines that do not go to a store: shipped, digital, or not a catalog item.
    pub(super) other_lines: Vec<Line>,
    /// Why the order (or its remaining lines) is not pickup, in the platform's terms.
    pub(super) not_pickup: Option<String>,
}

/// Customer contact, as the platform gives it (never reformatted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Customer {
    /// Full name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Phone number, in whatever format the customer typed.
    pub phone: Option<String>,
    /// Locale (BCP 47-ish, e.g. "en").
    pub locale: Option<String>,
}

/// The lines to pick up at one location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PickupGroup {
    /// The platform's location reference (id, code or name).
    pub location: String,
    /// The Pickline store it maps to (the channel's `store_map`; the location itself
    /// when the map is empty).
    pub store: String,
    /// The pickup time the customer chose, when the platform states one in UTC.
    pub window: Option<PickupWindow>,
    /// The lines, in the order of the payload.
    pub lines: Vec<Line>,
}

/// A requested pickup time range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PickupWindow {
    /// Earliest, RFC 3339 UTC.
    pub start: String,
    /// Latest, RFC 3339 UTC, when the platform gives an end.
    pub end: Option<String>,
}

/// One order line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Stock-keeping unit; never empty.
    pub sku: String,
    /// Where `sku` came from.
    pub sku_source: SkuSource,
    /// Units, at least 1.
    pub qty: u32,
    /// Price of one unit in minor units, before order-level discounts.
    pub unit_price_minor: i64,
}

/// Where a line's SKU came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkuSource {
    /// The platform's SKU field.
    Sku,
    /// The SKU was empty; the platform's variant (or product) id stands in for it.
    VariantId,
}

impl CanonicalOrder {
    /// The sales channel.
    pub fn channel(&self) -> Channel {
        self.channel
    }
    /// The channel account (shop, site, store hash) it came from.
    pub fn account(&self) -> &str {
        &self.account
    }
    /// The platform's order id.
    pub fn order_id(&self) -> &str {
        &self.order_id
    }
    /// The customer-facing order number.
    pub fn order_number(&self) -> Option<&str> {
        self.order_number.as_deref()
    }
    /// The version (modification time in ms, or a counter).
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Creation time, RFC 3339 UTC.
    pub fn created_at(&self) -> &str {
        &self.created_at
    }
    /// ISO 4217 currency code.
    pub fn currency(&self) -> &str {
        &self.currency
    }
    /// Decimals of the currency.
    pub fn currency_exponent(&self) -> u8 {
        self.currency_exponent
    }
    /// Whether unit prices include tax.
    pub fn prices_include_tax(&self) -> bool {
        self.prices_include_tax
    }
    /// Grand total in minor units.
    pub fn total_minor(&self) -> Option<i64> {
        self.total_minor
    }
    /// Paid.
    pub fn paid(&self) -> bool {
        self.paid
    }
    /// A test order.
    pub fn test(&self) -> bool {
        self.test
    }
    /// Cancelled on the platform.
    pub fn cancelled(&self) -> bool {
        self.cancelled
    }
    /// Customer contact.
    pub fn customer(&self) -> &Customer {
        &self.customer
    }
    /// The checkout hold reference.
    pub fn hold_ref(&self) -> Option<&str> {
        self.hold_ref.as_deref()
    }
    /// Pickup groups (one per location).
    pub fn pickups(&self) -> &[PickupGroup] {
        &self.pickups
    }
    /// Lines that are not picked up.
    pub fn other_lines(&self) -> &[Line] {
        &self.other_lines
    }
    /// Why the order is not (entirely) a pickup order.
    pub fn not_pickup(&self) -> Option<&str> {
        self.not_pickup.as_deref()
    }
    /// Every line, pickup ones first.
    pub fn all_lines(&self) -> impl Iterator<Item = &Line> {
        self.pickups
            .iter()
            .flat_map(|g| g.lines.iter())
            .chain(self.other_lines.iter())
    }
}
