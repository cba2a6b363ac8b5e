//! commercetools: the Order resource (as an OrderCreated message's `order`, or fetched).
//!
//! - Pickup has no native flag; the convention is a line's `supplyChannel` (a store
//!   channel with the InventorySupply role): each line with one is picked up there (its
//!   expanded `obj.key`, else its id), so one order can become several pickup groups.
//!   Lines without one, and custom line items, are not picked up.
//! - Money: `centAmount` with `fractionDigits`, converted to the currency's ISO exponent.
//!   Currency: `totalPrice.currencyCode`. Unit price: `price.value`; whether it includes
//!   tax: `taxRate.includedInPrice` of the lines.
//! - `variant.sku` is optional: `productId/variantId` stands in. `orderNumber` is optional.
//! - Version: `version`. Paid: `paymentState` `Paid`. Cancelled: `orderState` `Cancelled`.
//!   Hold reference: `custom.fields.<hold_ref_key>`. No test flag.

use rust_decimal::Decimal;
use serde::Deserialize;

use super::fields::{
    Currency, Flag, Problems, Text, TimeFormat, flag, full_name, parse_json, quantity,
    required_time, text,
};
use super::{
    Context, Destination, Draft, Line, Payload, Reason, ReasonCode, done, sku_or_fallback,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    id: Option<Text>,
    order_number: Option<Text>,
    version: Option<Text>,
    created_at: Option<Text>,
    total_price: Option<Money>,
    order_state: Option<Text>,
    payment_state: Option<Text>,
    customer_email: Option<Text>,
    locale: Option<Text>,
    shipping_address: Option<Address>,
    billing_address: Option<Address>,
    line_items: Option<Vec<LineItem>>,
    #[serde(default)]
    custom_line_items: Vec<CustomLineItem>,
    custom: Option<Custom>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Money {
    currency_code: Option<Text>,
    cent_amount: Option<Text>,
    fraction_digits: Option<Text>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    first_name: Option<Text>,
    last_name: Option<Text>,
    phone: Option<Text>,
    mobile: Option<Text>,
    email: Option<Text>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineItem {
    product_id: Option<Text>,
    variant: Option<Variant>,
    quantity: Option<Text>,
    price: Option<Price>,
    supply_channel: Option<Reference>,
    tax_rate: Option<TaxRate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomLineItem {
    slug: Option<Text>,
    quantity: Option<Text>,
    money: Option<Money>,
}

#[derive(Deserialize)]
struct Variant {
    id: Option<Text>,
    sku: Option<Text>,
}

#[derive(Deserialize)]
struct Price {
    value: Option<Money>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaxRate {
    included_in_price: Option<Flag>,
}

#[derive(Deserialize)]
struct Reference {
    id: Option<Text>,
    obj: Option<Keyed>,
}

#[derive(Deserialize)]
struct Keyed {
    key: Option<Text>,
}

#[derive(Deserialize)]
struct Custom {
    fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `money` in minor units of `currency` (its `fractionDigits` may differ from the ISO
/// exponent; 2 when absent, commercetools' default for most currencies).
fn minor(currency: Currency, field: &str, money: &Money) -> Result<i64, Reason> {
    let cents = text(&money.cent_amount).ok_or_else(|| {
        Reason::new(
            ReasonCode::MissingField,
            format!("{field}.centAmount: missing"),
        )
    })?;
    let cents: i64 = cents.parse().map_err(|_| {
        Reason::new(
            ReasonCode::InvalidField,
            format!("{field}.centAmount: {cents:?} is not an integer"),
        )
    })?;
    let digits: u32 = match text(&money.fraction_digits) {
        None => 2,
        Some(t) => t.parse().ok().filter(|d| *d <= 10).ok_or_else(|| {
            Reason::new(
                ReasonCode::InvalidField,
                format!("{field}.fractionDigits: {t:?} is not in 0..=10"),
            )
        })?,
    };
    if let Some(code) = text(&money.currency_code)
        && code != currency.code_str()
    {
        return Err(Reason::new(
            ReasonCode::Inconsistent,
            format!(
                "{field}: currency {code} in an order in {}",
                currency.code_str()
            ),
        ));
    }
    currency.minor_of(field, Decimal::new(cents, digits))
}

/// Builds the draft of a commercetools order (see the module doc).
pub(crate) fn adapt(payload: Payload<'_>, ctx: &Context<'_>) -> Result<Draft, Vec<Reason>> {
    let order: Order = parse_json("commercetools order", payload.body).map_err(|r| vec![r])?;
    let mut p = Problems::default();
    let mut d = Draft {
        order_id: text(&order.id).unwrap_or_default(),
        ..Draft::default()
    };
    d.order_number = text(&order.order_number);
    d.version = match text(&order.version) {
        Some(v) => p
            .take(v.parse::<u64>().map_err(|_| {
                Reason::new(
                    ReasonCode::InvalidField,
                    format!("version: {v:?} is not a version number"),
                )
            }))
            .unwrap_or(0),
        None => {
            p.push(Reason::new(ReasonCode::MissingField, "version: missing"));
            0
        }
    };
    d.created_at = p.take(required_time(
        "createdAt",
        &order.created_at,
        TimeFormat::Rfc3339,
    ));
    let total = order.total_price.as_ref();
    d.currency = p.take(Currency::parse(
        "totalPrice.currencyCode",
        total.and_then(|t| text(&t.currency_code)).as_deref(),
    ));
    if let (Some(c), Some(t)) = (d.currency, total) {
        d.total_minor = p.take(minor(c, "totalPrice", t));
    }
    d.paid = text(&order.payment_state).as_deref() == Some("Paid");
    d.cancelled = text(&order.order_state).as_deref() == Some("Cancelled");
    let addresses = [&order.billing_address, &order.shipping_address];
    let address =
        |f: fn(&Address) -> Option<String>| addresses.iter().find_map(|a| a.as_ref().and_then(f));
    d.customer.name = address(|a| full_name(&a.first_name, &a.last_name));
    d.customer.email = text(&order.customer_email).or_else(|| address(|a| text(&a.email)));
    d.customer.phone = address(|a| text(&a.phone).or_else(|| text(&a.mobile)));
    d.customer.locale = text(&order.locale);
    d.hold_ref = order
        .custom
        .as_ref()
        .and_then(|c| c.fields.as_ref())
        .and_then(|f| f.get(&ctx.config.hold_ref_key))
        .and_then(|v| match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        });

    let Some(items) = &order.line_items else {
        p.push(Reason::new(ReasonCode::MissingField, "lineItems: missing"));
        return done(d, p);
    };
    d.prices_include_tax = items.iter().any(|i| {
        i.tax_rate
            .as_ref()
            .is_some_and(|t| flag(t.included_in_price))
    });
    let mut without_channel = false;
    for (i, item) in items.iter().enumerate() {
        let field = format!("lineItems[{i}]");
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
        let variant = item.variant.as_ref();
        let fallback = match (text(&item.product_id), variant.and_then(|v| text(&v.id))) {
            (Some(product), Some(v)) => Some(format!("{product}/{v}")),
            _ => None,
        };
        let sku = p.take(sku_or_fallback(
            &field,
            variant.and_then(|v| text(&v.sku)),
            fallback,
        ));
        let price = match (
            d.currency,
            item.price.as_ref().and_then(|pr| pr.value.as_ref()),
        ) {
            (Some(c), Some(m)) => p.take(minor(c, &format!("{field}.price.value"), m)),
            (_, None) => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.price.value: missing"),
                ));
                None
            }
            (None, _) => None,
        };
        let channel = item.supply_channel.as_ref().and_then(|c| {
            c.obj
                .as_ref()
                .and_then(|o| text(&o.key))
                .or_else(|| text(&c.id))
        });
        let dest = match channel {
            Some(loc) => Destination::Pickup(loc),
            None => {
                without_channel = true;
                Destination::Other
            }
        };
        if let (Some(qty), Some((sku, sku_source)), Some(unit_price_minor)) = (qty, sku, price) {
            d.lines.push((
                dest,
                Line {
                    sku,
                    sku_source,
                    qty,
                    unit_price_minor,
                },
            ));
        }
    }
    for (i, item) in order.custom_line_items.iter().enumerate() {
        let field = format!("customLineItems[{i}]");
        let qty = item
            .quantity
            .as_ref()
            .and_then(|q| p.take(quantity(&format!("{field}.quantity"), q)));
        let price = match (d.currency, &item.money) {
            (Some(c), Some(m)) => p.take(minor(c, &format!("{field}.money"), m)),
            _ => None,
        };
        if let (Some(qty), Some(sku), Some(unit_price_minor)) = (qty, text(&item.slug), price) {
            d.lines.push((
                Destination::Other,
                Line {
                    sku,
                    sku_source: super::SkuSource::Sku,
                    qty,
                    unit_price_minor,
                },
            ));
        }
    }
    let mut why = Vec::new();
    if without_channel {
        why.push("line items without a supplyChannel");
    }
    if !order.custom_line_items.is_empty() {
        why.push("custom line items");
    }
    d.not_pickup = Some(why.join(" and "));
    done(d, p)
}
