//! Typed reasons: why a payload was refused or a rule tripped.

use serde::Serialize;

/// What is wrong with a payload or an order, as a stable code a sender can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    // --- The adapter could not build a canonical order. ---
    /// Not JSON, or JSON of the wrong shape (the message says where).
    Malformed,
    /// A webhook ping or a payload kind that is not an order (e.g. a FulfillmentOrder on
    /// its own, a deletion notice).
    NotAnOrder,
    /// A thin webhook or an order without its sub-resources: the named documents must be
    /// fetched and passed along before the order can be normalized.
    NeedsEnrichment,
    /// A field the canonical order needs is absent.
    MissingField,
    /// A field is present but unusable (bad money, date, currency, quantity).
    InvalidField,
    /// A line has neither a SKU nor a variant or product id to stand in for it.
    MissingSku,
    /// Pickup is indicated but the payload does not say where.
    PickupLocationMissing,
    /// The pickup location is not in the channel's `store_map`.
    UnknownPickupLocation,
    /// Pickup and other delivery methods in one order in a form that does not say which
    /// lines go where.
    MixedFulfillment,
    /// Documents that contradict each other (e.g. products of another order).
    Inconsistent,
    /// The platform's incomplete/draft order (BigCommerce status 0 fires webhooks too;
    /// WooCommerce checkout drafts).
    IncompleteOrder,
    // --- Validation rules (each can reject or warn; see `[intake.rules]`). ---
    /// No line is for pickup.
    NotPickup,
    /// The platform marks the order as a test.
    TestOrder,
    /// Neither an email nor a phone number.
    ContactMissing,
    /// The currency is not in the allowed list.
    CurrencyNotAllowed,
    /// The pickup store is not in the allowed list.
    StoreNotAllowed,
    /// More pickup lines than allowed.
    TooManyLines,
    /// A line's quantity is above the allowed maximum.
    QuantityTooLarge,
    /// A field listed in `required_fields` is absent.
    RequiredFieldMissing,
    /// A line's SKU is a variant id standing in for an empty SKU.
    SkuFallback,
}

/// A reason with a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The code.
    pub code: ReasonCode,
    /// What exactly, for a person.
    pub message: String,
}

impl Reason {
    /// A reason.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Reason {
        Reason {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{code}: {}", self.message)
    }
}
