//! Orders submitted in the canonical shape (`IntakeService.Submit` with `order` set): the
//! "adapter" of a sender that did its own conversion (an OMS, the retailer's own
//! storefront).
//!
//! The order travels through the flow as its protobuf encoding ([`Format::Canonical`]), so
//! the journal keeps it byte for byte like any raw payload and a restart or a dead-letter
//! replay evaluates it again with [`adapt`]. The checks are the invariants of
//! [`CanonicalOrder`] (an id, a creation time, an ISO 4217 currency, every line with a SKU
//! and at least one unit, no empty group, no store twice); there is no store map: the
//! groups name Pickline stores. Then the channel's rules run as for any payload.
//!
//! Architecture invariant: like the adapters, a pure function of (bytes, config): no
//! clock, no I/O, no panic on any input (fuzzed through `intake_grpc_submit`).

use prost::Message as _;
use serde::Serialize;

use super::{
    CanonicalOrder, Channel, Customer, Line, PickupGroup, PickupWindow, Reason, ReasonCode,
    SkuSource, fields::Currency,
};
use crate::pb;

/// How a delivery's body is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The platform's own document, read by the channel's adapter.
    #[default]
    Channel,
    /// A `pickline.v1.IntakeOrder`, protobuf-encoded (gRPC Submit with `order`).
    Canonical,
}

/// Most lines (pickup and other) one canonical order may carry.
pub const LINES_MAX: usize = 1_000;

fn invalid(field: &str, what: impl std::fmt::Display) -> Reason {
    Reason::new(ReasonCode::InvalidField, format!("{field}: {what}"))
}

fn time(field: &str, ms: i64) -> Result<String, Reason> {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .map_err(|_| invalid(field, format!("{ms} is not a time in unix ms")))
}

fn some(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn lines(field: &str, pb: Vec<pb::IntakeLine>, problems: &mut Vec<Reason>) -> Vec<Line> {
    let mut out = Vec::with_capacity(pb.len());
    for (i, l) in pb.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        if l.sku.trim().is_empty() {
            problems.push(Reason::new(ReasonCode::MissingSku, format!("{at}: no SKU")));
            continue;
        }
        if l.qty == 0 {
            problems.push(invalid(&at, "quantity 0"));
            continue;
        }
        out.push(Line {
            sku: l.sku,
            sku_source: SkuSource::Sku,
            qty: l.qty,
            unit_price_minor: l.unit_price_minor,
        });
    }
    out
}

/// The canonical order `order` stands for, submitted for `channel` and `account`, or every
/// reason it is not one.
pub fn from_pb(
    channel: Channel,
    account: &str,
    order: pb::IntakeOrder,
) -> Result<CanonicalOrder, Vec<Reason>> {
    let mut problems = Vec::new();
    let order_id = order.order_id.trim().to_owned();
    if order_id.is_empty() {
        problems.push(Reason::new(
            ReasonCode::MissingField,
            "order.order_id: missing",
        ));
    }
    let created_at = if order.created_at_ms == 0 {
        problems.push(Reason::new(
            ReasonCode::MissingField,
            "order.created_at_ms: missing",
        ));
        None
    } else {
        time("order.created_at_ms", order.created_at_ms)
            .map_err(|r| problems.push(r))
            .ok()
    };
    let currency = Currency::parse("order.currency", Some(&order.currency))
        .map_err(|r| problems.push(r))
        .ok();
    let line_count =
        order.other_lines.len() + order.pickups.iter().map(|g| g.lines.len()).sum::<usize>();
    if line_count > LINES_MAX {
        problems.push(invalid(
            "order",
            format!("{line_count} lines, at most {LINES_MAX}"),
        ));
        return Err(problems);
    }
    if line_count == 0 {
        problems.push(Reason::new(
            ReasonCode::MissingField,
            "the order has no lines",
        ));
    }
    let mut pickups: Vec<PickupGroup> = Vec::with_capacity(order.pickups.len());
    for (i, g) in order.pickups.into_iter().enumerate() {
        let at = format!("order.pickups[{i}]");
        let store = g.store_id.trim().to_owned();
        if store.is_empty() {
            problems.push(Reason::new(
                ReasonCode::PickupLocationMissing,
                format!("{at}.store_id: missing"),
            ));
            continue;
        }
        if pickups.iter().any(|p| p.store == store) {
            problems.push(invalid(
                &at,
                format!("store {store:?} has a group already (one group per store)"),
            ));
            continue;
        }
        let window = match (g.window_start_ms, g.window_end_ms) {
            (0, 0) => None,
            (0, _) => {
                problems.push(invalid(&at, "a window end without a start"));
                None
            }
            (start, end) => {
                let start_s = time(&format!("{at}.window_start_ms"), start);
                let end_s = if end == 0 {
                    Ok(None)
                } else if end < start {
                    Err(invalid(&at, "the window ends before it starts"))
                } else {
                    time(&format!("{at}.window_end_ms"), end).map(Some)
                };
                match (start_s, end_s) {
                    (Ok(start), Ok(end)) => Some(PickupWindow { start, end }),
                    (a, b) => {
                        problems.extend(a.err());
                        problems.extend(b.err());
                        None
                    }
                }
            }
        };
        if g.lines.is_empty() {
            problems.push(Reason::new(
                ReasonCode::MissingField,
                format!("{at}.lines: a pickup group without lines"),
            ));
            continue;
        }
        let lines = lines(&format!("{at}.lines"), g.lines, &mut problems);
        pickups.push(PickupGroup {
            location: store.clone(),
            store,
            window,
            lines,
        });
    }
    let other_lines = lines("order.other_lines", order.other_lines, &mut problems);
    let (Some(created_at), Some(currency)) = (created_at, currency) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let customer = order.customer.unwrap_or_default();
    let not_pickup = (!other_lines.is_empty()).then(|| "submitted as not for pickup".to_owned());
    Ok(CanonicalOrder {
        channel,
        account: account.to_owned(),
        order_id,
        order_number: some(order.order_number),
        version: order.version,
        created_at,
        currency: currency.code_str(),
        currency_exponent: currency.exponent,
        prices_include_tax: order.tax_included,
        total_minor: (order.total_minor != 0).then_some(order.total_minor),
        paid: order.paid,
        test: order.test,
        cancelled: order.cancelled,
        customer: Customer {
            name: some(customer.name),
            email: some(customer.email),
            phone: some(customer.phone),
            locale: some(customer.locale),
        },
        hold_ref: some(order.hold_ref),
        pickups,
        other_lines,
        not_pickup,
    })
}

/// The canonical order encoded in `body` (a `pickline.v1.IntakeOrder`), or why not.
pub fn adapt(channel: Channel, account: &str, body: &[u8]) -> Result<CanonicalOrder, Vec<Reason>> {
    let order = pb::IntakeOrder::decode(body).map_err(|e| {
        vec![Reason::new(
            ReasonCode::Malformed,
            format!("not a pickline.v1.IntakeOrder: {e}"),
        )]
    })?;
    from_pb(channel, account, order)
}
