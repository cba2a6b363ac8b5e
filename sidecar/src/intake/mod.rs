//! Order intake: channel payloads into one canonical order, then validation rules.
//!
//! # Layout
//!
//! - [`Channel`], [`Payload`], [`normalize`] (adapter only) and [`evaluate`] (adapter, then
//!   rules): the one entry every source uses (CLI today; webhooks, gRPC and NATS call the
//!   same functions).
//! - [`model`]: [`CanonicalOrder`] and its lines, pickup groups and contact.
//! - One adapter per platform: [`shopify`], [`woocommerce`], [`bigcommerce`], [`magento`],
//!   [`commercetools`]. Each parses the raw bytes into its own typed view of the payload
//!   (lenient scalars from [`fields`]) and fills a [`Draft`]; pickup is taken only from
//!   what the platform states, never guessed (see each adapter's doc).
//! - [`signature`]: webhook signatures over the raw body, constant time.
//! - [`config`]: `[intake]` (store maps, hold-reference keys, rules per channel and
//!   account); [`rules`]: the rules themselves.
//! - [`reason`]: [`ReasonCode`], the typed reasons of refusals and rule hits.
//! - [`cli`]: `pickline intake normalize|rules`. (`pickline bench intake` is a module of
//!   the binary, `src/bench/intake.rs`, over [`evaluate`] and the webhook source.)
//! - [`flow`]: the one flow every source goes through: evaluate, admission (bounded
//!   queue, priority classes), the durable [`journal`] (acceptance and dead letters),
//!   workers placing entries in the engine with retries, dead-letter operations, health.
//! - Sources: [`webhook`] (`POST /intake/{channel}`: signature on the raw body, then the
//!   flow; status codes for the platforms' retries), [`nats`] (JetStream pull consumer),
//!   and the gRPC `IntakeService` ([`grpc_svc`]).
//! - [`canonical`]: orders submitted over gRPC already in the canonical shape (the
//!   "adapter" of a sender that converted them itself); [`evaluate_as`] picks it or the
//!   channel's adapter by the delivery's [`Format`].
//! - [`enrich`]: related documents fetched from the platform's API when the payload
//!   lacks them (Shopify FulfillmentOrders; BigCommerce's order, products and
//!   consignments behind a thin webhook), through one configurable HTTP client.
//! - [`sink`]: a canonical order into the engine (hold, order, confirm; idempotent per
//!   delivery, all or nothing per order).
//!
//! Architecture invariant: adapters and rules are pure functions of (bytes, config); no
//! clock, no I/O, no panic on any input (fuzzed: `fuzz/fuzz_targets/intake_*.rs`).

pub mod bigcommerce;
pub mod canonical;
pub mod cli;
pub mod commercetools;
pub mod config;
pub mod enrich;
pub mod fields;
pub mod flow;
pub mod grpc_svc;
pub mod journal;
pub mod magento;
pub mod model;
pub mod nats;
pub mod reason;
pub mod rules;
pub mod shopify;
pub mod signature;
pub mod sink;
pub mod webhook;
pub mod woocommerce;

use serde::Serialize;

pub use config::IntakeConfig;
pub use model::{CanonicalOrder, Customer, Line, PickupGroup, PickupWindow, SkuSource};
pub use reason::{Reason, ReasonCode};
pub use rules::RuleHit;

pub use canonical::Format;

use config::{Action, ChannelConfig};

/// A sales channel (platform).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Shopify `orders/*` webhooks (REST Admin API order).
    Shopify,
    /// WooCommerce REST v3 order (= `order.*` webhook body).
    Woocommerce,
    /// BigCommerce v2 order with its products and consignments.
    Bigcommerce,
    /// Magento 2 / Adobe Commerce `GET /V1/orders/{id}`.
    Magento,
    /// commercetools Order.
    Commercetools,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 5] = [
        Channel::Shopify,
        Channel::Woocommerce,
        Channel::Bigcommerce,
        Channel::Magento,
        Channel::Commercetools,
    ];

    /// The lower-case name used in config keys, routes and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Shopify => "shopify",
            Channel::Woocommerce => "woocommerce",
            Channel::Bigcommerce => "bigcommerce",
            Channel::Magento => "magento",
            Channel::Commercetools => "commercetools",
        }
    }
}

/// What arrived: the raw body, plus the documents fetched or delivered with it (Shopify
/// FulfillmentOrders; BigCommerce products and consignments), each raw too.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    /// The order document (or webhook body) as received.
    pub body: &'a [u8],
    /// Related documents; each adapter says which it reads and tells them apart by shape.
    pub related: &'a [&'a [u8]],
}

/// Most related documents one payload may carry.
pub const RELATED_DOCS_MAX: usize = 16;

/// What an adapter knows besides the bytes.
pub(crate) struct Context<'a> {
    pub account: &'a str,
    pub config: &'a ChannelConfig,
}

/// The adapter (platform-specific conversion) of `channel`: a canonical order, or every
/// reason it could not be built.
pub fn normalize(
    channel: Channel,
    account: &str,
    payload: Payload<'_>,
    config: &IntakeConfig,
) -> Result<CanonicalOrder, Vec<Reason>> {
    if payload.related.len() > RELATED_DOCS_MAX {
        return Err(vec![Reason::new(
            ReasonCode::Malformed,
            format!(
                "{} related documents, at most {RELATED_DOCS_MAX}",
                payload.related.len()
            ),
        )]);
    }
    let ctx = Context {
        account,
        config: config.channel(channel),
    };
    let draft = match channel {
        Channel::Shopify => shopify::adapt(payload, &ctx),
        Channel::Woocommerce => woocommerce::adapt(payload, &ctx),
        Channel::Bigcommerce => bigcommerce::adapt(payload, &ctx),
        Channel::Magento => magento::adapt(payload, &ctx),
        Channel::Commercetools => commercetools::adapt(payload, &ctx),
    }?;
    draft.finish(channel, &ctx)
}

/// What intake decides about one payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Normalized, and no rule rejects it.
    Accepted {
        /// The order.
        order: Box<CanonicalOrder>,
        /// Rules that only warn.
        warnings: Vec<Reason>,
    },
    /// Refused: by the adapter (no order could be built) or by rules.
    Rejected {
        /// Why (adapter reasons, or the rejecting rules' reasons).
        reasons: Vec<Reason>,
        /// Rules that only warn.
        warnings: Vec<Reason>,
    },
}

/// [`normalize`], then the rules in force for the channel and account.
pub fn evaluate(
    channel: Channel,
    account: &str,
    payload: Payload<'_>,
    config: &IntakeConfig,
) -> Verdict {
    judge(normalize(channel, account, payload, config), config)
}

/// [`evaluate`] of a delivery's body read as `format`: the channel's adapter, or a
/// canonical order submitted as such ([`canonical::adapt`]); the same rules either way.
pub fn evaluate_as(
    format: Format,
    channel: Channel,
    account: &str,
    body: &[u8],
    config: &IntakeConfig,
) -> Verdict {
    match format {
        Format::Channel => evaluate(channel, account, Payload { body, related: &[] }, config),
        Format::Canonical => judge(canonical::adapt(channel, account, body), config),
    }
}

/// The rules in force for the order's channel and account, over a normalized order.
fn judge(normalized: Result<CanonicalOrder, Vec<Reason>>, config: &IntakeConfig) -> Verdict {
    match normalized {
        Err(reasons) => Verdict::Rejected {
            reasons,
            warnings: Vec::new(),
        },
        Ok(order) => {
            let hits = rules::check(&order, &config.rules_for(order.channel, &order.account));
            let (rejects, warns): (Vec<RuleHit>, Vec<RuleHit>) =
                hits.into_iter().partition(|h| h.action == Action::Reject);
            let warnings = warns.into_iter().map(|h| h.reason).collect();
            if rejects.is_empty() {
                Verdict::Accepted {
                    order: Box::new(order),
                    warnings,
                }
            } else {
                Verdict::Rejected {
                    reasons: rejects.into_iter().map(|h| h.reason).collect(),
                    warnings,
                }
            }
        }
    }
}

/// Where a draft line goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// Picked up at this platform location.
    Pickup(String),
    /// Not picked up.
    Other,
}

/// An order as an adapter fills it; [`Draft::finish`] checks and groups it.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub order_id: String,
    pub order_number: Option<String>,
    pub version: u64,
    pub created_at: Option<jiff::Timestamp>,
    pub currency: Option<fields::Currency>,
    pub prices_include_tax: bool,
    pub total_minor: Option<i64>,
    pub paid: bool,
    pub test: bool,
    pub cancelled: bool,
    pub customer: Customer,
    pub hold_ref: Option<String>,
    pub lines: Vec<(Destination, Line)>,
    /// Requested pickup windows by platform location.
    pub windows: Vec<(String, PickupWindow)>,
    pub not_pickup: Option<String>,
}

impl Draft {
    /// The canonical order: lines grouped by pickup location in first-seen order,
    /// locations mapped to stores.
    fn finish(self, channel: Channel, ctx: &Context<'_>) -> Result<CanonicalOrder, Vec<Reason>> {
        let mut problems = Vec::new();
        if self.order_id.is_empty() {
            problems.push(Reason::new(ReasonCode::MissingField, "order id: missing"));
        }
        if self.lines.is_empty() {
            problems.push(Reason::new(
                ReasonCode::MissingField,
                "the order has no lines",
            ));
        }
        let mut pickups: Vec<PickupGroup> = Vec::new();
        let mut other_lines = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for (dest, line) in self.lines {
            match dest {
                Destination::Other => other_lines.push(line),
                Destination::Pickup(location) => {
                    if let Some(g) = pickups.iter_mut().find(|g| g.location == location) {
                        g.lines.push(line);
                        continue;
                    }
                    if unknown.contains(&location) {
                        continue;
                    }
                    let map = &ctx.config.store_map;
                    let store = if map.is_empty() {
                        Some(location.clone())
                    } else {
                        map.get(&location).cloned()
                    };
                    match store {
                        Some(store) => pickups.push(PickupGroup {
                            window: self
                                .windows
                                .iter()
                                .find(|(l, _)| *l == location)
                                .map(|(_, w)| w.clone()),
                            location,
                            store,
                            lines: vec![line],
                        }),
                        None => {
                            problems.push(Reason::new(
                                ReasonCode::UnknownPickupLocation,
                                format!(
                                    "pickup location {location:?} is not in intake.{}.store_map",
                                    channel.as_str()
                                ),
                            ));
                            unknown.push(location);
                        }
                    }
                }
            }
        }
        let (Some(created_at), Some(currency)) = (self.created_at, self.currency) else {
            // The adapter reported why; this only guards the invariant.
            if problems.is_empty() {
                problems.push(Reason::new(
                    ReasonCode::MissingField,
                    "created time or currency: missing",
                ));
            }
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let not_pickup = if other_lines.is_empty() {
            None
        } else {
            self.not_pickup
        };
        Ok(CanonicalOrder {
            channel,
            account: ctx.account.to_owned(),
            order_id: self.order_id,
            order_number: self.order_number,
            version: self.version,
            created_at: created_at.to_string(),
            currency: currency.code_str(),
            currency_exponent: currency.exponent,
            prices_include_tax: self.prices_include_tax,
            total_minor: self.total_minor,
            paid: self.paid,
            test: self.test,
            cancelled: self.cancelled,
            customer: self.customer,
            hold_ref: self.hold_ref,
            pickups,
            other_lines,
            not_pickup,
        })
    }
}

/// A SKU, or the variant/product id standing in for an empty one, or a
/// [`ReasonCode::MissingSku`] reason naming the line.
pub(crate) fn sku_or_fallback(
    line: &str,
    sku: Option<String>,
    fallback: Option<String>,
) -> Result<(String, SkuSource), Reason> {
    match (sku, fallback) {
        (Some(s), _) => Ok((s, SkuSource::Sku)),
        (None, Some(v)) => Ok((v, SkuSource::VariantId)),
        (None, None) => Err(Reason::new(
            ReasonCode::MissingSku,
            format!("{line}: no SKU and no variant or product id"),
        )),
    }
}

/// Finishes an adapter: the draft if no problem was found, else every problem.
pub(crate) fn done(draft: Draft, problems: fields::Problems) -> Result<Draft, Vec<Reason>> {
    if problems.0.is_empty() {
        Ok(draft)
    } else {
        Err(problems.0)
    }
}
