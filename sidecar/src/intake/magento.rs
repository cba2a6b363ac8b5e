//! Magento 2 / Adobe Commerce: `GET /V1/orders/{id}` (or a webhook carrying it).
//!
//! - `items[]` lists configurable parents AND their simple children (same SKU, child
//!   price 0), and bundle parents (SKU = the children's SKUs joined) with their children.
//!   Counted once: a configurable parent stands for its child (its SKU and price); a
//!   bundle stands as its children (the stock-keeping units, each with its price).
//!   Virtual and downloadable items (`is_virtual`) are not picked up.
//! - Pickup (Magento MSI in-store pickup): `extension_attributes.pickup_location_code`,
//!   or a shipping assignment with method `instore_pickup` (refused without a code).
//! - Money and quantities are JSON numbers (`qty_ordered` may be `1.0000`; a fractional
//!   quantity is refused). Currency: `order_currency_code`; prices `price` (without tax).
//! - Times: `created_at`/`updated_at`, UTC without a marker. Paid: `total_due` is 0.
//!   Cancelled: state `canceled`. No test flag.

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
    entity_id: Option<Text>,
    increment_id: Option<Text>,
    state: Option<Text>,
    created_at: Option<Text>,
    updated_at: Option<Text>,
    order_currency_code: Option<Text>,
    grand_total: Option<Text>,
    total_due: Option<Text>,
    customer_email: Option<Text>,
    customer_firstname: Option<Text>,
    customer_lastname: Option<Text>,
    billing_address: Option<Address>,
    items: Option<Vec<Item>>,
    extension_attributes: Option<Extension>,
}

#[derive(Deserialize)]
struct Address {
    firstname: Option<Text>,
    lastname: Option<Text>,
    telephone: Option<Text>,
    email: Option<Text>,
}

#[derive(Deserialize)]
struct Item {
    item_id: Option<Text>,
    parent_item_id: Option<Text>,
    sku: Option<Text>,
    product_id: Option<Text>,
    product_type: Option<Text>,
    qty_ordered: Option<Text>,
    price: Option<Text>,
    is_virtual: Option<Flag>,
}

#[derive(Deserialize)]
struct Extension {
    pickup_location_code: Option<Text>,
    #[serde(default)]
    shipping_assignments: Vec<ShippingAssignment>,
}

#[derive(Deserialize)]
struct ShippingAssignment {
    shipping: Option<Shipping>,
}

#[derive(Deserialize)]
struct Shipping {
    method: Option<Text>,
}

/// Builds the draft of a Magento order (see the module doc).
pub(crate) fn adapt(payload: Payload<'_>, _ctx: &Context<'_>) -> Result<Draft, Vec<Reason>> {
    let order: Order = parse_json("Magento order", payload.body).map_err(|r| vec![r])?;
    let mut p = Problems::default();
    let mut d = Draft {
        order_id: text(&order.entity_id).unwrap_or_default(),
        ..Draft::default()
    };
    d.order_number = text(&order.increment_id);
    d.created_at = p.take(required_time(
        "created_at",
        &order.created_at,
        TimeFormat::NaiveUtc,
    ));
    d.version = match text(&order.updated_at) {
        Some(t) => p
            .take(timestamp("updated_at", &t, TimeFormat::NaiveUtc))
            .map_or(0, version_ms),
        None => d.created_at.map_or(0, version_ms),
    };
    d.currency = p.take(Currency::parse(
        "order_currency_code",
        text(&order.order_currency_code).as_deref(),
    ));
    if let (Some(c), Some(t)) = (d.currency, text(&order.grand_total)) {
        d.total_minor = p.take(c.minor("grand_total", &t));
    }
    d.paid = match (d.currency, text(&order.total_due)) {
        (Some(c), Some(t)) => c.minor("total_due", &t).is_ok_and(|due| due == 0),
        _ => false,
    };
    d.cancelled = text(&order.state).as_deref() == Some("canceled");
    d.customer.name =
        full_name(&order.customer_firstname, &order.customer_lastname).or_else(|| {
            order
                .billing_address
                .as_ref()
                .and_then(|a| full_name(&a.firstname, &a.lastname))
        });
    d.customer.email = text(&order.customer_email)
        .or_else(|| order.billing_address.as_ref().and_then(|a| text(&a.email)));
    d.customer.phone = order
        .billing_address
        .as_ref()
        .and_then(|a| text(&a.telephone));

    let ext = order.extension_attributes.as_ref();
    let methods: Vec<String> = ext
        .map(|e| {
            e.shipping_assignments
                .iter()
                .filter_map(|s| s.shipping.as_ref().and_then(|s| text(&s.method)))
                .collect()
        })
        .unwrap_or_default();
    let pickup = match ext.and_then(|e| text(&e.pickup_location_code)) {
        Some(code) => Some(code),
        None if methods.iter().any(|m| m == "instore_pickup") => {
            p.push(Reason::new(
                ReasonCode::PickupLocationMissing,
                "shipping method instore_pickup without extension_attributes.pickup_location_code",
            ));
            None
        }
        None => None,
    };
    d.not_pickup = Some(match &pickup {
        Some(_) => "virtual and downloadable items are not picked up".to_owned(),
        None if methods.is_empty() => "no shipping assignment".to_owned(),
        None => format!("shipping method {}", methods.join(", ")),
    });

    let Some(items) = order.items else {
        p.push(Reason::new(ReasonCode::MissingField, "items: missing"));
        return done(d, p);
    };
    let type_of = |id: &Option<String>| -> Option<String> {
        let id = id.as_deref()?;
        items
            .iter()
            .find(|i| text(&i.item_id).as_deref() == Some(id))
            .and_then(|i| text(&i.product_type))
    };
    for (i, item) in items.iter().enumerate() {
        let field = format!("items[{i}]");
        let kind = text(&item.product_type);
        let parent = text(&item.parent_item_id);
        let parent_kind = type_of(&parent);
        // A bundle is picked as its children; a configurable's child is its parent's row.
        if kind.as_deref() == Some("bundle") || parent_kind.as_deref() == Some("configurable") {
            continue;
        }
        if parent.is_some() && parent_kind.is_none() {
            p.push(Reason::new(
                ReasonCode::Inconsistent,
                format!("{field}: parent item {:?} is not in the order", parent),
            ));
            continue;
        }
        let qty = match &item.qty_ordered {
            Some(q) => p.take(quantity(&format!("{field}.qty_ordered"), q)),
            None => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.qty_ordered: missing"),
                ));
                None
            }
        };
        let sku = p.take(sku_or_fallback(
            &field,
            text(&item.sku),
            text(&item.product_id),
        ));
        let price = match (d.currency, text(&item.price)) {
            (Some(c), Some(t)) => p.take(c.minor(&format!("{field}.price"), &t)),
            (_, None) => {
                p.push(Reason::new(
                    ReasonCode::MissingField,
                    format!("{field}.price: missing"),
                ));
                None
            }
            (None, _) => None,
        };
        let dest = match &pickup {
            Some(code) if !flag(item.is_virtual) => Destination::Pickup(code.clone()),
            _ => Destination::Other,
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
    done(d, p)
}
