//! WooCommerce: the REST v3 order, which is also the `order.*` webhook body.
//!
//! - Pickup: a shipping line whose `method_id` is `local_pickup` or `pickup_location`
//!   (WooCommerce Blocks). Its location is the line's `pickup_location` metadata (a name;
//!   WooCommerce has no location id). A pickup line together with another method is
//!   refused (`mixed_fulfillment`): the order does not say which items go where.
//! - Dates: `*_gmt` fields, UTC without a `Z`. Version: `date_modified_gmt` in ms.
//! - Unit price: line `subtotal` (a string, before discounts, without tax; plus
//!   `subtotal_tax` when the shop enters prices with tax, `prices_include_tax`) divided by
//!   the quantity; the line `price` is a float that WooCommerce rounds.
//! - SKU may be `""`: the `variation_id` (or `product_id` when 0) stands in.
//! - Paid: `date_paid_gmt` is set. Cancelled: status `cancelled`. Drafts
//!   (`checkout-draft`, `draft`) are refused as incomplete. The webhook ping
//!   (`webhook_id=N`, form-encoded) and `order.deleted` (`{"id": N}`) are not orders.

use rust_decimal::Decimal;
use serde::Deserialize;

use super::fields::{
    Currency, Flag, Problems, Text, TimeFormat, flag, full_name, parse_json, quantity,
    required_time, text, timestamp, version_ms,
};
use super::{
    Context, Destination, Draft, Line, Payload, Reason, ReasonCode, done, sku_or_fallback,
};

#[derive(Deserialize)]
struct Order {
    id: Option<Text>,
    number: Option<Text>,
    status: Option<Text>,
    currency: Option<Text>,
    date_created_gmt: Option<Text>,
    date_modified_gmt: Option<Text>,
    date_paid_gmt: Option<Text>,
    total: Option<Text>,
    prices_include_tax: Option<Flag>,
    billing: Option<Billing>,
    #[serde(default)]
    meta_data: Vec<Meta>,
    line_items: Option<Vec<LineItem>>,
    #[serde(default)]
    shipping_lines: Vec<ShippingLine>,
}

#[derive(Deserialize)]
struct Billing {
    first_name: Option<Text>,
    last_name: Option<Text>,
    email: Option<Text>,
    phone: Option<Text>,
}

#[derive(Deserialize)]
struct Meta {
    key: Option<Text>,
    value: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LineItem {
    product_id: Option<Text>,
    variation_id: Option<Text>,
    quantity: Option<Text>,
    subtotal: Option<Text>,
    subtotal_tax: Option<Text>,
    sku: Option<Text>,
}

#[derive(Deserialize)]
struct ShippingLine {
    method_id: Option<Text>,
    method_title: Option<Text>,
    #[serde(default)]
    meta_data: Vec<Meta>,
}

/// Statuses of checkouts in progress, which WooCommerce can still deliver.
const DRAFT_STATUSES: [&str; 2] = ["checkout-draft", "draft"];

/// The shipping methods that mean "picked up in store".
const PICKUP_METHODS: [&str; 2] = ["local_pickup", "pickup_location"];

fn meta(list: &[Meta], key: &str) -> Option<String> {
    list.iter()
        .find(|m| text(&m.key).as_deref() == Some(key))
        .and_then(|m| match &m.value {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

/// A line's unit price in minor units (see the module doc).
fn unit_price(
    c: Currency,
    field: &str,
    item: &LineItem,
    with_tax: bool,
    qty: u32,
) -> Result<i64, Reason> {
    let amount = |name: &str, raw: &Option<Text>| -> Result<Decimal, Reason> {
        let t = text(raw).ok_or_else(|| {
            Reason::new(ReasonCode::MissingField, format!("{field}.{name}: missing"))
        })?;
        t.parse::<Decimal>().map_err(|_| {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}.{name}: {t:?} is not an amount"),
            )
        })
    };
    let mut total = amount("subtotal", &item.subtotal)?;
    if with_tax {
        total = total
            .checked_add(amount("subtotal_tax", &item.subtotal_tax)?)
            .ok_or_else(|| {
                Reason::new(
                    ReasonCode::InvalidField,
                    format!("{field}.subtotal_tax: out of range"),
                )
            })?;
    }
    let unit = total.checked_div(Decimal::from(qty)).ok_or_else(|| {
        Reason::new(
            ReasonCode::InvalidField,
            format!("{field}.subtotal: out of range"),
        )
    })?;
    c.minor_of(&format!("{field}.subtotal"), unit)
}

/// Builds the draft of a WooCommerce order (see the module doc).
pub(crate) fn adapt(payload: Payload<'_>, ctx: &Context<'_>) -> Result<Draft, Vec<Reason>> {
    if payload.body.starts_with(b"webhook_id=") {
        return Err(vec![Reason::new(
            ReasonCode::NotAnOrder,
            "a WooCommerce webhook ping (sent when a webhook is created)",
        )]);
    }
    let order: Order = parse_json("WooCommerce order", payload.body).map_err(|r| vec![r])?;
    if order.line_items.is_none() && order.date_created_gmt.is_none() && order.id.is_some() {
        return Err(vec![Reason::new(
            ReasonCode::NotAnOrder,
            "an order.deleted notice (only an id)",
        )]);
    }
    if let Some(status) = text(&order.status).filter(|s| DRAFT_STATUSES.contains(&s.as_str())) {
        return Err(vec![Reason::new(
            ReasonCode::IncompleteOrder,
            format!("a {status} order (the checkout is not finished)"),
        )]);
    }
    let mut p = Problems::default();
    let mut d = Draft {
        order_id: text(&order.id).unwrap_or_default(),
        ..Draft::default()
    };
    d.order_number = text(&order.number);
    d.created_at = p.take(required_time(
        "date_created_gmt",
        &order.date_created_gmt,
        TimeFormat::NaiveUtc,
    ));
    d.version = match text(&order.date_modified_gmt) {
        Some(t) => p
            .take(timestamp("date_modified_gmt", &t, TimeFormat::NaiveUtc))
            .map_or(0, version_ms),
        None => d.created_at.map_or(0, version_ms),
    };
    d.currency = p.take(Currency::parse(
        "currency",
        text(&order.currency).as_deref(),
    ));
    d.prices_include_tax = flag(order.prices_include_tax);
    if let (Some(c), Some(t)) = (d.currency, text(&order.total)) {
        d.total_minor = p.take(c.minor("total", &t));
    }
    d.paid = text(&order.date_paid_gmt).is_some();
    d.cancelled = text(&order.status).as_deref() == Some("cancelled");
    if let Some(b) = &order.billing {
        d.customer.name = full_name(&b.first_name, &b.last_name);
        d.customer.email = text(&b.email);
        d.customer.phone = text(&b.phone);
    }
    d.hold_ref = meta(&order.meta_data, &ctx.config.hold_ref_key);

    let (pickup, other): (Vec<&ShippingLine>, Vec<&ShippingLine>) = order
        .shipping_lines
        .iter()
        .partition(|s| text(&s.method_id).is_some_and(|m| PICKUP_METHODS.contains(&m.as_str())));
    let dest = match (pickup.as_slice(), other.is_empty()) {
        ([], _) => {
            let methods: Vec<String> = other
                .iter()
                .filter_map(|s| text(&s.method_title).or_else(|| text(&s.method_id)))
                .collect();
            d.not_pickup = Some(if methods.is_empty() {
                "no shipping line".to_owned()
            } else {
                format!("shipping method {}", methods.join(", "))
            });
            Some(Destination::Other)
        }
        ([one], true) => match meta(&one.meta_data, "pickup_location") {
            Some(loc) => Some(Destination::Pickup(loc)),
            None => {
                p.push(Reason::new(
                    ReasonCode::PickupLocationMissing,
                    "a local pickup shipping line without pickup_location metadata",
                ));
                None
            }
        },
        _ => {
            p.push(Reason::new(
                ReasonCode::MixedFulfillment,
                "pickup and other shipping lines (or several pickups): the order does not \
                 say which items go to which",
            ));
            None
        }
    };

    let Some(items) = &order.line_items else {
        p.push(Reason::new(ReasonCode::MissingField, "line_items: missing"));
        return done(d, p);
    };
    for (i, item) in items.iter().enumerate() {
        let field = format!("line_items[{i}]");
        let qty = match &item.quantity {
            Some(q) => p.take(quantity(&format!("{field}.quantity"), q)),
            None => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.quantity: missing"),
                ));
                None
            }
        };
        let variant = text(&item.variation_id)
            .filter(|v| v != "0")
            .or_else(|| text(&item.product_id).filter(|v| v != "0"));
        let sku = p.take(sku_or_fallback(&field, text(&item.sku), variant));
        let price = match (d.currency, qty) {
            (Some(c), Some(q)) => p.take(unit_price(c, &field, item, d.prices_include_tax, q)),
            _ => None,
        };
        if let (Some(qty), Some((sku, sku_source)), Some(unit_price_minor), Some(dest)) =
            (qty, sku, price, &dest)
        {
            d.lines.push((
                dest.clone(),
                Line {
                    sku,
                    sku_source,
                    qty,
                    unit_price_minor,
                },
            ));
        }
    }
    done(d, p)
}
